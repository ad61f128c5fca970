//! A real full disk: tallyd's data directory on a small tmpfs that a filler file
//! fills up. The `INCR` in flight when the WAL write fails waits for space; new
//! ones get `STORAGE_UNAVAILABLE` ("the disk is full"), reads go on, and once the
//! filler is removed the waiting `INCR` is answered and writes resume. A SIGKILL
//! and restart then finds exactly the acknowledged increments.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); without it the test says so and skips.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tallydb_e2e::{now_ms, Tallyd};
use tallydb_protocol::{ErrorCode, Event, Producer, Request, Response, Selector, SeriesRef};

const BIN: &str = env!("CARGO_BIN_EXE_tallyd");
const EVENTS_PER_BATCH: i64 = 40;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn stat(c: &mut tallydb_e2e::Client, name: &str) -> u64 {
    match c.call(&Request::Stats).response() {
        Response::StatsOk(s) => s
            .entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value)
            .unwrap(),
        other => panic!("{other:?}"),
    }
}

fn total(c: &mut tallydb_e2e::Client) -> i64 {
    let now = now_ms();
    c.total_of(Selector::Prefix("fill"), now - 86_400_000, now + 86_400_000)
        .sum
}

fn batch(seq: i64) -> Vec<Event<'static>> {
    const KEYS: [&str; 4] = ["fill{k=a}", "fill{k=b}", "fill{k=c}", "fill{k=d}"];
    (0..EVENTS_PER_BATCH)
        .map(|i| Event {
            series: SeriesRef::Key(KEYS[((seq + i) % 4) as usize]),
            delta: 1 + (seq + i) % 5,
            timestamp_ms: None,
            event_id: None,
        })
        .collect()
}

fn batch_sum(seq: i64) -> i64 {
    batch(seq).iter().map(|e| e.delta).sum()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_disk_refuses_writes_and_they_resume_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&tmp.path().join("small"), "16m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED a_full_disk_refuses_writes_and_they_resume_when_space_returns: cannot mount a tmpfs ({e}); run as root to include it");
            return;
        }
    };
    let data = fs.0.join("data");
    let args = ["--fsync", "always"];
    let mut server = Tallyd::start(Path::new(BIN), tmp.path(), &data, &args);
    let mut reader = server.client();

    // One writer sends batches one after the other, each with its producer
    // sequence, and counts what is acknowledged.
    let acked = Arc::new(AtomicI64::new(0));
    let last_seq = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut c = server.client();
        let (acked, last_seq, stop) = (acked.clone(), last_seq.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 1;
            while !stop.load(Ordering::Acquire) {
                let producer = Some(Producer {
                    id: 7,
                    sequence: seq as u64,
                });
                match c.try_incr(producer, batch(seq)) {
                    Ok(ok) => {
                        assert_eq!(ok.applied as i64, EVENTS_PER_BATCH);
                        acked.fetch_add(batch_sum(seq), Ordering::AcqRel);
                        last_seq.store(seq, Ordering::Release);
                        seq += 1;
                    }
                    // Refused before it was applied: the same sequence again.
                    Err(e) if e.is(ErrorCode::StorageUnavailable) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("INCR failed: {e:?}"),
                }
                if seq > 200_000 {
                    break;
                }
            }
        })
    };
    wait_for(
        "the first acknowledgements",
        Duration::from_secs(10),
        || last_seq.load(Ordering::Acquire) >= 20,
    );

    // Fill the disk: most of it at once, the rest until the file system refuses.
    let filler = fs.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let bulk = vec![0u8; fs.available().saturating_sub(256 * 1024) as usize];
    let mut rest = &bulk[..];
    while !rest.is_empty() {
        match file.write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    let chunk = [0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    drop(file);
    wait_for("the disk-full state", Duration::from_secs(20), || {
        stat(&mut reader, "storage.disk_full") == 1
    });

    // The writer's batch in flight waits; nothing more is acknowledged.
    let stuck_at = last_seq.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(last_seq.load(Ordering::Acquire), stuck_at);
    // A new batch is refused, clearly.
    let mut other = server.client();
    let refused = other.try_incr(None, batch(0)).unwrap_err();
    assert!(refused.is(ErrorCode::StorageUnavailable), "{refused:?}");
    assert!(refused.message.contains("disk is full"), "{refused:?}");
    // Reads go on.
    let seen = total(&mut reader);
    assert!(seen >= acked.load(Ordering::Acquire), "{seen}");

    // Space returns: the waiting batch is answered and writes resume.
    std::fs::remove_file(&filler).unwrap();
    wait_for("writes to resume", Duration::from_secs(10), || {
        last_seq.load(Ordering::Acquire) >= stuck_at + 20
    });
    assert_eq!(stat(&mut reader, "storage.disk_full"), 0);
    other.incr(None, batch(0));
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let want = acked.load(Ordering::Acquire) + batch_sum(0);
    assert_eq!(total(&mut reader), want);

    // Everything acknowledged survives a SIGKILL, and nothing else was counted.
    server.kill();
    let server = Tallyd::start(Path::new(BIN), tmp.path(), &data, &args);
    let mut c = server.client();
    assert_eq!(total(&mut c), want);
    let log = server.log_text();
    assert!(
        log.contains("torn_tails=0"),
        "a torn WAL record was left behind:\n{log}"
    );
}
