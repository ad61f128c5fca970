//! An online backup taken while 8 writers run: restored, every count equals what was
//! acknowledged before the snapshot point, and no batch is half-present.
//!
//! Runs the real `tallyd` (found by `tallydb_e2e::tallyd_bin`; the test fails, saying
//! how to build it, when it is not built) and the real `tally-admin`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tallydb_e2e::{now_ms, tallyd_bin_or_fail, Client, Tallyd};
use tallydb_protocol::{Event, Producer, SeriesRef};
use tallydb_storage::{Engine, Options, Selector};

const WRITERS: usize = 8;
/// Keys every batch of a writer increments together: all equal or the batch is torn.
const KEYS_PER_BATCH: usize = 5;

fn key(w: usize, j: usize) -> String {
    format!("backup.w{w}.k{j}")
}

#[test]
fn online_backup_under_eight_writers_restores_a_consistent_point() {
    let bin = tallyd_bin_or_fail("online_backup_under_eight_writers_restores_a_consistent_point");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Tallyd::start(&bin, dir, &dir.join("data"), &["--fsync", "always"]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let started: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, acked, started) = (stop.clone(), acked.clone(), started.clone());
            let mut c = server.client();
            std::thread::spawn(move || {
                let keys: Vec<String> = (0..KEYS_PER_BATCH).map(|j| key(w, j)).collect();
                let mut seq = 0;
                // Bounded: at most 20,000 batches per writer.
                while !stop.load(Ordering::SeqCst) && seq < 20_000 {
                    seq += 1;
                    started[w].store(seq, Ordering::SeqCst);
                    let events = keys
                        .iter()
                        .map(|k| Event {
                            series: SeriesRef::Key(k),
                            delta: 1,
                            timestamp_ms: None,
                            event_id: None,
                        })
                        .collect();
                    let producer = Some(Producer {
                        id: 500 + w as u64,
                        sequence: seq,
                    });
                    assert!(!c.incr(producer, events).duplicate_batch);
                    acked[w].store(seq, Ordering::SeqCst);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let backup = dir.join("backup");
    let status = Command::new(env!("CARGO_BIN_EXE_tally-admin"))
        .args(["backup", "--server", &server.addr.to_string(), "--to"])
        .arg(&backup)
        .status()
        .unwrap();
    assert!(status.success(), "online backup failed: {status}");
    let after: Vec<u64> = started.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        before.iter().all(|b| *b > 0),
        "every writer had batches acknowledged before the backup: {before:?}"
    );

    let restored = dir.join("restored");
    let status = Command::new(env!("CARGO_BIN_EXE_tally-admin"))
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--data-dir")
        .arg(&restored)
        .status()
        .unwrap();
    assert!(status.success(), "restore failed: {status}");

    let engine = Engine::open(
        Path::new(&restored),
        Options {
            background: false,
            ..Options::default()
        },
    )
    .unwrap();
    let now = now_ms();
    for w in 0..WRITERS {
        let counts: Vec<i64> = (0..KEYS_PER_BATCH)
            .map(|j| {
                engine
                    .total(
                        &Selector::Exact(key(w, j)),
                        now - 86_400_000,
                        now + 86_400_000,
                    )
                    .unwrap()
                    .sum
            })
            .collect();
        assert!(
            counts.iter().all(|c| *c == counts[0]),
            "writer {w}: a batch is half-present in the backup: {counts:?}"
        );
        let c = counts[0] as u64;
        assert!(
            before[w] <= c && c <= after[w],
            "writer {w}: backup holds {c} batches; acknowledged before it {}, started before it returned {}",
            before[w],
            after[w]
        );
    }
    // The live server kept every batch.
    let mut c: Client = server.client();
    for w in 0..WRITERS {
        assert_eq!(c.total(&key(w, 0)) as u64, acked[w].load(Ordering::SeqCst));
    }
}
