#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `tally-admin` end to end: every test builds a real data directory with the
//! storage engine (real file system, temporary directory), runs the real binary
//! and checks its exit code and report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tallydb_storage::engine::{
    dedup_file_name, DICT_FILE, LOCK_FILE, MANIFEST_FILE, SEGMENTS_DIR, WAL_DIR,
};
use tallydb_storage::fs::OsFs;
use tallydb_storage::manifest::Manifest;
use tallydb_storage::offline::DataDir;
use tallydb_storage::segment::{self, Segment, SegmentWriter, FOOTER_LEN, HEADER_LEN};
use tallydb_storage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::{
    Batch, Clock, Engine, Event, EventId, Options, ProducerSeq, SystemClock, Tier,
};

const BIN: &str = env!("CARGO_BIN_EXE_tally-admin");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn admin(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("runs tally-admin");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn options() -> Options {
    Options {
        background: false,
        ..Options::default()
    }
}

const KEYS: [&str; 5] = [
    "clicks{ad=1,country=US}",
    "clicks{ad=2,country=FR}",
    "clicks{ad=3,country=US}",
    "com.example.music",
    "views",
];

/// A data directory with three flushes (three segments per tier), late events
/// (older than the minute retention: hour and day tiers only), event ids and
/// producer sequences, and three batches left in the WAL past the checkpoint.
fn build(dir: &Path) {
    let now = SystemClock.now_ms();
    let e = Engine::open(dir, options()).unwrap();
    let ids: Vec<u32> = KEYS.iter().map(|k| e.series_id(k).unwrap()).collect();
    let mut seq = 0;
    let mut batch = |round: i64, late: bool| {
        let mut events = Vec::new();
        for k in 0..600i64 {
            let id = ids[(k as usize + round as usize) % ids.len()];
            let ts = if late && k % 10 == 0 {
                now - 8 * DAY_MS - k * 13 * MINUTE_MS
            } else {
                now - (k * 7 + round * 3) * MINUTE_MS - 2 * DAY_MS + k % 3 * 11_000
            };
            events.push(Event {
                series: id,
                delta: if k % 4 == 0 { -(k % 9) } else { 1 + k % 5 },
                ts: Some(ts),
                id: (k % 5 == 0).then(|| EventId::from_bytes(format!("{round}-{k}").as_bytes())),
            });
        }
        seq += 1;
        e.apply(&Batch {
            producer: Some(ProducerSeq { id: 42, seq }),
            events,
        })
        .unwrap();
    };
    for round in 0..3 {
        batch(round, round == 1);
        e.flush().unwrap();
    }
    for round in 3..6 {
        batch(round, round == 4);
    }
    e.close().unwrap();
    drop(e);
    wait_for_unlock(dir);
}

/// Waits until nothing holds the directory's lock. A child process that another
/// test thread forks while the engine's `LOCK` file is open shares that open file,
/// and with it the lock, until it execs; the next opener must wait those
/// microseconds out instead of failing with "in use".
fn wait_for_unlock(dir: &Path) {
    use tallydb_storage::fs::FileSystem;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while OsFs.lock(&dir.join(LOCK_FILE)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} stays locked",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    build(&d);
    (t, d)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn first_file(dir: &Path, ext: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v.into_iter().next().unwrap()
}

/// Every cell of every tier: (tier, series key, bucket) -> (sum, count, min, max).
/// (tier, series key, bucket) -> (sum, count, min, max).
type Cells = BTreeMap<(usize, String, i64), (i64, u64, i64, i64)>;

fn all_cells(dir: &Path) -> Cells {
    let d = DataDir::load(&OsFs, dir).unwrap();
    let mut m = BTreeMap::new();
    for t in Tier::ALL {
        for r in d.cells(t) {
            let r = r.unwrap();
            let key = d.dict().key(r.series).unwrap().as_str().to_string();
            m.insert(
                (t.index(), key, r.bucket),
                (r.cell.sum, r.cell.count, r.cell.min, r.cell.max),
            );
        }
    }
    m
}

fn verify_json(dir: &Path) -> (i32, Value) {
    let r = admin(&["verify", "--data-dir", s(dir), "--format", "json"]);
    (r.code, r.json())
}

fn findings(v: &Value, severity: &str) -> Vec<(String, Option<u64>, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_string(),
                f["offset"].as_u64(),
                f["what"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn verify_passes_on_an_intact_directory() {
    let (_t, d) = fresh();
    let r = admin(&["verify", "--data-dir", s(&d)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("INTACT"), "{}", r.stdout);
    let (code, v) = verify_json(&d);
    assert_eq!(code, 0);
    assert_eq!(v["damage"], 0, "{v}");
    assert_eq!(v["segments"], 9, "{v}");
    assert_eq!(v["wal_records_unflushed"], 3, "{v}");
    assert!(v["hour_cell_recomputed"].is_null());
    assert!(v["hour_cells_recomputed"].as_u64().unwrap() > 100, "{v}");
    assert!(v["day_cells_recomputed"].as_u64().unwrap() > 5, "{v}");
    assert_eq!(v["series"], KEYS.len());
}

#[test]
fn every_kind_of_damage_is_caught_with_file_and_offset() {
    let (t, d) = fresh();
    let case = |name: &str, damage: &dyn Fn(&Path) -> (String, Option<u64>)| {
        let c = t.path().join(name);
        copy_dir(&d, &c);
        let (file, offset) = damage(&c);
        let (code, v) = verify_json(&c);
        assert_eq!(code, 3, "{name}: {v}");
        let found = findings(&v, "damage");
        assert!(
            found.iter().any(|(f, o, _)| *f == file && *o == offset),
            "{name}: expected damage in {file} at {offset:?}, got {found:?}"
        );
        let text = admin(&["verify", "--data-dir", s(&c)]);
        assert_eq!(text.code, 3);
        assert!(text.stdout.contains("DAMAGED"), "{}", text.stdout);
    };
    case("wal", &|c| {
        let w = first_file(&c.join(WAL_DIR), "wal");
        // Inside the first record (a valid record follows): damage, not a torn tail.
        flip(&w, 24 + 20);
        (
            format!("{WAL_DIR}/{}", w.file_name().unwrap().to_str().unwrap()),
            Some(24),
        )
    });
    case("block", &|c| {
        let p = first_file(&c.join(SEGMENTS_DIR), "seg");
        flip(&p, HEADER_LEN as u64 + 17 + 3);
        (
            format!(
                "{SEGMENTS_DIR}/{}",
                p.file_name().unwrap().to_str().unwrap()
            ),
            Some(HEADER_LEN as u64),
        )
    });
    case("footer", &|c| {
        let p = first_file(&c.join(SEGMENTS_DIR), "seg");
        let len = std::fs::metadata(&p).unwrap().len();
        flip(&p, len - FOOTER_LEN as u64 + 30);
        (
            format!(
                "{SEGMENTS_DIR}/{}",
                p.file_name().unwrap().to_str().unwrap()
            ),
            Some(len - FOOTER_LEN as u64),
        )
    });
    case("manifest", &|c| {
        let p = c.join(MANIFEST_FILE);
        let len = std::fs::metadata(&p).unwrap().len();
        flip(&p, 20);
        (MANIFEST_FILE.into(), Some(len - 4))
    });
    case("dict", &|c| {
        flip(&c.join(DICT_FILE), 12 + 12 + 1);
        (DICT_FILE.into(), Some(12))
    });
    case("dedup", &|c| {
        let m = Manifest::load(&OsFs, &c.join(MANIFEST_FILE)).unwrap();
        let name = dedup_file_name(m.dedup_lsn);
        let p = c.join(&name);
        let len = std::fs::metadata(&p).unwrap().len();
        flip(&p, 30);
        (name, Some(len - 4))
    });
}

#[test]
fn a_torn_wal_tail_is_reported_as_such_and_is_not_damage() {
    let (_t, d) = fresh();
    let w = first_file(&d.join(WAL_DIR), "wal");
    let len = std::fs::metadata(&w).unwrap().len();
    let mut b = std::fs::read(&w).unwrap();
    b.extend_from_slice(&[0u8; 37]);
    std::fs::write(&w, b).unwrap();
    let (code, v) = verify_json(&d);
    assert_eq!(code, 0, "{v}");
    let torn = findings(&v, "torn-tail");
    assert_eq!(torn.len(), 1, "{v}");
    assert_eq!(torn[0].1, Some(len));
}

#[test]
fn a_rollup_that_disagrees_with_its_minutes_is_damage() {
    // Rewrite an hour segment with one cell's sum changed: every checksum is
    // valid, only the recomputation from the minute tier can notice.
    let (_t, d) = fresh();
    let m = Manifest::load(&OsFs, &d.join(MANIFEST_FILE)).unwrap();
    let meta = *m.segments.iter().find(|s| s.tier == Tier::Hour).unwrap();
    let path = d.join(SEGMENTS_DIR).join(segment::file_name(meta.id));
    let seg = Segment::open(&OsFs, &path).unwrap();
    let rows: Vec<_> = seg.iter().map(|r| r.unwrap()).collect();
    drop(seg);
    let tmp = d.join("forged.seg");
    let mut w = SegmentWriter::create(&OsFs, &tmp, meta.id, Tier::Hour, i64::MIN).unwrap();
    // A recent hour (covered by the minute tier), not one holding late events only.
    let now_hour = Tier::Hour.bucket_of(SystemClock.now_ms());
    let victim = rows
        .iter()
        .position(|r| r.bucket > now_hour - 5 * 24)
        .unwrap();
    for (i, r) in rows.iter().enumerate() {
        let mut r = *r;
        if i == victim {
            r.cell.sum += 1000;
            r.cell.max = r.cell.max.max(1000);
        }
        w.push(r).unwrap();
    }
    let new_meta = w.finish().unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let mut m2 = m.clone();
    for s in &mut m2.segments {
        if s.id == meta.id {
            *s = new_meta;
        }
    }
    m2.store(&OsFs, &d.join(MANIFEST_FILE)).unwrap();
    let (code, v) = verify_json(&d);
    assert_eq!(code, 3, "{v}");
    let found = findings(&v, "damage");
    let file = format!("{SEGMENTS_DIR}/{}", segment::file_name(meta.id));
    // The hour cell disagrees with its minutes, and its day with its hours.
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].0.contains(&file), "{found:?}");
    assert!(found[0].2.contains("hour cell of"), "{found:?}");
    assert!(found[1].2.contains("day cell of"), "{found:?}");
}

#[test]
fn backup_restore_round_trip_keeps_every_cell() {
    let (t, d) = fresh();
    let before = all_cells(&d);
    let b = t.path().join("backup");
    let r = admin(&["backup", "--data-dir", s(&d), "--to", s(&b)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(b.join("BACKUP-MANIFEST").exists());
    assert!(r.stdout.contains("INTACT"), "{}", r.stdout);
    let (code, v) = verify_json(&b);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backup_manifest"], true);

    let target = t.path().join("restored");
    let r = admin(&["restore", "--from", s(&b), "--data-dir", s(&target)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!target.join("BACKUP-MANIFEST").exists());
    assert_eq!(all_cells(&target), before);
    // And the engine opens it and counts the same.
    let e = Engine::open(&target, options()).unwrap();
    let d_cells = before
        .iter()
        .filter(|((t, k, _), _)| *t == Tier::Day.index() && k == KEYS[0])
        .map(|(_, c)| c.0)
        .sum::<i64>();
    let total = e
        .total(
            &tallydb_storage::Selector::Exact(KEYS[0].into()),
            0,
            SystemClock.now_ms() + HOUR_MS,
        )
        .unwrap();
    assert_eq!(total.sum, d_cells);
    drop(e);
    wait_for_unlock(&target);

    // A non-empty target is refused without --force, replaced with it.
    let r = admin(&["restore", "--from", s(&b), "--data-dir", s(&d)]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    let r = admin(&["restore", "--from", s(&b), "--data-dir", s(&d), "--force"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("replaced-"), "{}", r.stdout);
    assert_eq!(all_cells(&d), before);
}

#[test]
fn damaged_backups_are_caught_and_not_restored() {
    let (t, d) = fresh();
    let b = t.path().join("backup");
    assert_eq!(
        admin(&["backup", "--data-dir", s(&d), "--to", s(&b)]).code,
        0
    );
    let seg = first_file(&b.join(SEGMENTS_DIR), "seg");
    let rel = format!(
        "{SEGMENTS_DIR}/{}",
        seg.file_name().unwrap().to_str().unwrap()
    );
    flip(&seg, HEADER_LEN as u64 + 17 + 1);
    let (code, v) = verify_json(&b);
    assert_eq!(code, 3, "{v}");
    let found = findings(&v, "damage");
    assert!(
        found
            .iter()
            .any(|(f, o, w)| *f == rel && o.is_none() && w.contains("CRC32")),
        "{found:?}"
    );
    assert!(found
        .iter()
        .any(|(f, o, _)| *f == rel && *o == Some(HEADER_LEN as u64)));
    let target = t.path().join("never");
    let r = admin(&["restore", "--from", s(&b), "--data-dir", s(&target)]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(!target.exists());

    // Damage to BACKUP-MANIFEST itself.
    let b2 = t.path().join("backup2");
    assert_eq!(
        admin(&["backup", "--data-dir", s(&d), "--to", s(&b2)]).code,
        0
    );
    flip(&b2.join("BACKUP-MANIFEST"), 40);
    let (code, v) = verify_json(&b2);
    assert_eq!(code, 3, "{v}");
    assert!(findings(&v, "damage")
        .iter()
        .any(|(f, _, _)| f == "BACKUP-MANIFEST"));
}

#[test]
fn export_then_reimport_reproduces_every_cell_sum() {
    let (t, d) = fresh();
    let before = all_cells(&d);
    for (tier, idx) in [("minute", Tier::Minute), ("hour", Tier::Hour)] {
        for lines in ["csv", "ndjson"] {
            let r = admin(&[
                "export",
                "--data-dir",
                s(&d),
                "--tier",
                tier,
                "--lines",
                lines,
                "--quiet",
            ]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            let fresh_dir = t.path().join(format!("import-{tier}-{lines}"));
            let e = Engine::open(&fresh_dir, options()).unwrap();
            let mut events = Vec::new();
            for line in r.stdout.lines() {
                let (ts, key, delta) = if lines == "csv" {
                    if line.starts_with("timestamp_ms") {
                        continue;
                    }
                    let (ts, rest) = line.split_once(',').unwrap();
                    let (key, delta) = rest.rsplit_once(',').unwrap();
                    (
                        ts.parse::<i64>().unwrap(),
                        key.trim_matches('"').replace("\"\"", "\""),
                        delta.parse::<i64>().unwrap(),
                    )
                } else {
                    let v: Value = serde_json::from_str(line).unwrap();
                    (
                        v["timestamp_ms"].as_i64().unwrap(),
                        v["series"].as_str().unwrap().to_string(),
                        v["delta"].as_i64().unwrap(),
                    )
                };
                events.push(Event {
                    series: e.series_id(&key).unwrap(),
                    delta,
                    ts: Some(ts),
                    id: None,
                });
            }
            assert!(events.len() > 100, "{tier}/{lines}: {} lines", events.len());
            e.apply(&Batch {
                producer: None,
                events,
            })
            .unwrap();
            e.close().unwrap();
            drop(e);
            wait_for_unlock(&fresh_dir);
            let sums = |m: &Cells| {
                m.iter()
                    .filter(|((t, _, _), _)| *t == idx.index())
                    .map(|((_, k, b), c)| ((k.clone(), *b), c.0))
                    .collect::<BTreeMap<_, _>>()
            };
            assert_eq!(
                sums(&all_cells(&fresh_dir)),
                sums(&before),
                "{tier}/{lines}"
            );
        }
    }
    // A selector and a time range.
    let now = SystemClock.now_ms();
    let r = admin(&[
        "export",
        "--data-dir",
        s(&d),
        "--selector",
        "clicks{country=US}",
        "--from",
        &(now - 3 * DAY_MS).to_string(),
        "--to",
        "now",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let keys: std::collections::BTreeSet<&str> = r
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        vec!["clicks{ad=1,country=US}", "clicks{ad=3,country=US}"]
    );
}

#[test]
fn inspect_reports_the_right_counts() {
    let (_t, d) = fresh();
    let r = admin(&["inspect", "--data-dir", s(&d), "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let m = Manifest::load(&OsFs, &d.join(MANIFEST_FILE)).unwrap();
    assert_eq!(v["series"], KEYS.len());
    assert_eq!(v["checkpoint_lsn"], m.checkpoint_lsn);
    assert_eq!(v["segments"].as_array().unwrap().len(), m.segments.len());
    let cells: u64 = m.segments.iter().map(|s| s.cells).sum();
    assert_eq!(v["segment_cells"], cells);
    assert_eq!(v["wal"]["unflushed_records"], 3);
    assert_eq!(v["wal"]["unflushed_events"], 1800);
    assert_eq!(v["tiers"][0]["tier"], "minute");
    assert_eq!(v["tiers"][1]["segments"], 3);
    assert!(v["tiers"][0]["compression_ratio"].as_f64().unwrap() > 1.0);
    assert_eq!(v["dedup"]["producers"], 1);
    let t = admin(&["inspect", "--data-dir", s(&d)]);
    assert_eq!(t.code, 0);
    assert!(
        t.stdout.contains("WAL: ") && t.stdout.contains("segments/"),
        "{}",
        t.stdout
    );
}

#[test]
fn a_directory_held_by_a_server_is_refused() {
    let (t, d) = fresh();
    let e = Engine::open(&d, options()).unwrap();
    let to = t.path().join("b");
    for args in [
        vec!["verify", "--data-dir", s(&d)],
        vec!["inspect", "--data-dir", s(&d)],
        vec!["export", "--data-dir", s(&d)],
        vec!["compact", "--data-dir", s(&d)],
        vec!["backup", "--data-dir", s(&d), "--to", s(&to)],
    ] {
        let r = admin(&args);
        assert_eq!(r.code, 4, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("in use by a running server"),
            "{args:?}: {}",
            r.stderr
        );
    }
    drop(e);
    wait_for_unlock(&d);
    assert_eq!(admin(&["verify", "--data-dir", s(&d)]).code, 0);
}

#[test]
fn offline_compaction_keeps_every_cell() {
    let (_t, d) = fresh();
    let before = all_cells(&d);
    // Two more flushed rounds give 5 segments per tier: enough to merge.
    {
        let e = Engine::open(&d, options()).unwrap();
        e.flush().unwrap();
        e.close().unwrap();
    }
    wait_for_unlock(&d);
    let before_flush = all_cells(&d);
    assert_eq!(before, before_flush);
    let r = admin(&["compact", "--data-dir", s(&d)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("compacted"), "{}", r.stdout);
    assert_eq!(all_cells(&d), before);
    assert_eq!(admin(&["verify", "--data-dir", s(&d)]).code, 0);
}

#[test]
fn help_has_examples_and_usage_errors_exit_2() {
    let r = admin(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Examples:") && r.stdout.contains("Exit codes"));
    assert_eq!(admin(&["verify"]).code, 2);
    assert_eq!(admin(&["frobnicate"]).code, 2);
}
