//! Restore under crashes: a restore stopped at every step (every write, fsync,
//! rename and file creation fails in turn, then the power goes) leaves the
//! target either exactly the old data directory or exactly the restored backup,
//! never a mix, and a second restore then completes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tallydb_storage::backup::{
    restore, write_backup_manifest, RestoreOptions, RestoreOutcome, BACKUP_MANIFEST_FILE,
};
use tallydb_storage::engine::LOCK_FILE;
use tallydb_storage::fs::FileSystem;
use tallydb_storage::testing::FaultFs;
use tallydb_storage::time::{DAY_MS, HOUR_MS};
use tallydb_storage::{Batch, Engine, Event, ManualClock, Options, Selector};

const TARGET: &str = "/srv/data";
const BACKUP: &str = "/backups/b1";
const NOW: i64 = 20_000 * DAY_MS + 12 * HOUR_MS;
/// Increments of `old` in the target and of `new` in the backup.
const OLD_COUNT: i64 = 4;
const NEW_COUNT: i64 = 7;

/// Every file under a directory (not `LOCK`): relative path -> bytes.
type Image = BTreeMap<PathBuf, Vec<u8>>;

fn options(fs: &FaultFs) -> Options {
    Options {
        background: false,
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(NOW)),
        ..Options::default()
    }
}

fn restore_options(fs: &FaultFs, now_ms: i64) -> RestoreOptions {
    RestoreOptions {
        fs: Arc::new(fs.clone()),
        retention: Options::default().retention,
        now_ms,
        replace: true,
    }
}

/// A data directory at `dir` holding `count` unit increments of `key`, some in
/// a segment and the last one only in the WAL.
fn populate(fs: &FaultFs, dir: &str, key: &str, count: i64) {
    let engine = Engine::open(dir, options(fs)).unwrap();
    let series = engine.series_id(key).unwrap();
    for i in 0..count {
        let batch = Batch {
            producer: None,
            events: vec![Event {
                series,
                delta: 1,
                ts: None,
                id: None,
            }],
        };
        engine.apply(&batch).unwrap();
        if i == count - 2 {
            engine.flush().unwrap();
        }
    }
    engine.close().unwrap();
}

fn collect(fs: &FaultFs, root: &Path, dir: &Path, out: &mut Image) {
    for name in fs.list(dir).unwrap() {
        let path = dir.join(&name);
        match fs.read(&path) {
            Ok(bytes) => {
                if name != LOCK_FILE {
                    out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
                }
            }
            Err(_) => collect(fs, root, &path, out),
        }
    }
}

fn image(fs: &FaultFs, dir: &str) -> Image {
    let mut out = Image::new();
    if fs.exists(Path::new(dir)) {
        collect(fs, Path::new(dir), Path::new(dir), &mut out);
    }
    out
}

/// A file system with the old data directory and a sealed backup, both durable;
/// with the image of each (the backup's without `BACKUP-MANIFEST`).
fn setup() -> (FaultFs, Image, Image) {
    let fs = FaultFs::new();
    populate(&fs, TARGET, "old", OLD_COUNT);
    populate(&fs, BACKUP, "new", NEW_COUNT);
    // What survives power loss is what the backup holds.
    fs.crash();
    write_backup_manifest(&fs, Path::new(BACKUP), "test", NOW, &mut |_| {}).unwrap();
    fs.crash();
    let old = image(&fs, TARGET);
    let mut new = image(&fs, BACKUP);
    assert!(new.remove(Path::new(BACKUP_MANIFEST_FILE)).is_some());
    assert!(!old.is_empty() && old != new);
    (fs, old, new)
}

/// The counts the engine finds in the target: (old, new).
fn counts(fs: &FaultFs) -> (i64, i64) {
    let engine = Engine::open(TARGET, options(fs)).unwrap();
    let sum = |key: &str| {
        engine
            .total(&Selector::Exact(key.into()), NOW - DAY_MS, NOW + DAY_MS)
            .unwrap()
            .sum
    };
    let out = (sum("old"), sum("new"));
    engine.close().unwrap();
    out
}

fn assert_restored(fs: &FaultFs, new: &Image, what: &str) {
    assert_eq!(&image(fs, TARGET), new, "{what}: target is not the backup");
    assert_eq!(counts(fs), (0, NEW_COUNT), "{what}");
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Write,
    Sync,
    Rename,
    Create,
}

fn arm(fs: &FaultFs, step: Step, n: u64) {
    match step {
        Step::Write => fs.fail_nth_write(n),
        Step::Sync => fs.fail_nth_sync(n),
        Step::Rename => fs.fail_nth_rename(n),
        Step::Create => fs.fail_nth_create(n),
    }
}

#[test]
fn a_restore_crashed_at_any_step_leaves_the_old_or_the_new_directory() {
    for step in [Step::Write, Step::Sync, Step::Rename, Step::Create] {
        let mut n = 1;
        loop {
            let (fs, old, new) = setup();
            let what = format!("{step:?} #{n} failed, then a crash");
            arm(&fs, step, n);
            let first = restore(
                Path::new(BACKUP),
                Path::new(TARGET),
                &restore_options(&fs, NOW),
                &mut |_, _| {},
            );
            if let Ok(outcome) = first {
                // Past the last such step: a clean run, durable at once.
                assert!(n > 1, "{step:?}: a restore takes no such step");
                eprintln!("{step:?}: {} steps, each crashed", n - 1);
                assert!(matches!(outcome, RestoreOutcome::Restored { .. }));
                fs.clear_faults();
                fs.crash();
                assert_restored(&fs, &new, &format!("{step:?}: a clean run"));
                break;
            }
            fs.crash();
            fs.clear_faults();
            let now = image(&fs, TARGET);
            if now == old {
                assert_eq!(counts(&fs), (OLD_COUNT, 0), "{what}");
            } else {
                assert_restored(&fs, &new, &what);
            }
            // A second restore completes.
            let second = restore(
                Path::new(BACKUP),
                Path::new(TARGET),
                &restore_options(&fs, NOW + 1),
                &mut |_, _| {},
            )
            .unwrap_or_else(|e| panic!("{what}: the second restore failed: {e}"));
            assert!(matches!(second, RestoreOutcome::Restored { .. }), "{what}");
            fs.crash();
            assert_restored(&fs, &new, &format!("{what}, restored again"));
            n += 1;
            assert!(n < 1000, "{step:?}: the restore never completes");
        }
    }
}

#[test]
fn a_damaged_backup_is_reported_and_nothing_is_written() {
    let (fs, old, _) = setup();
    let seg_dir = Path::new(BACKUP).join("segments");
    let seg = fs.list(&seg_dir).unwrap().into_iter().next().unwrap();
    fs.corrupt(&seg_dir.join(seg), 40, 0x55).unwrap();
    let writes = fs.writes();
    let outcome = restore(
        Path::new(BACKUP),
        Path::new(TARGET),
        &restore_options(&fs, NOW),
        &mut |_, _| {},
    )
    .unwrap();
    let RestoreOutcome::BackupDamaged(report) = outcome else {
        panic!("a damaged backup was restored");
    };
    assert!(!report.is_intact());
    assert_eq!(fs.writes(), writes);
    assert_eq!(image(&fs, TARGET), old);
}

#[test]
fn a_non_empty_target_is_kept_unless_replacing_is_asked_for() {
    let (fs, old, new) = setup();
    let mut opts = restore_options(&fs, NOW);
    opts.replace = false;
    let refused = restore(Path::new(BACKUP), Path::new(TARGET), &opts, &mut |_, _| {});
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(image(&fs, TARGET), old);
    let outcome = restore(
        Path::new(BACKUP),
        Path::new(TARGET),
        &restore_options(&fs, NOW),
        &mut |_, _| {},
    )
    .unwrap();
    let RestoreOutcome::Restored {
        replaced: Some(aside),
        ..
    } = outcome
    else {
        panic!("the old directory was not kept");
    };
    assert_eq!(image(&fs, aside.to_str().unwrap()), old);
    assert_restored(&fs, &new, "replaced");
}
