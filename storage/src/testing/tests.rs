//! Unit tests of the [`FaultFs`] model: durability of bytes and entries, crashes,
//! faults, space limits, locks.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::fs::{tmp_path, write_atomic};
use crate::fs::{FileSystem, WritableFile};

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// A fresh file system with directory `db`.
fn fs_with_db() -> FaultFs {
    let fs = FaultFs::new();
    fs.create_dir_all(p("db")).unwrap();
    fs
}

fn is_eio(e: &io::Error) -> bool {
    e.raw_os_error() == Some(EIO)
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ENOSPC)
}

#[test]
fn unsynced_bytes_are_lost_on_crash() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/wal")).unwrap();
    fs.sync_dir(p("db")).unwrap();
    f.write_all(b"hello ").unwrap();
    f.sync().unwrap();
    f.write_all(b"world").unwrap();
    assert_eq!(fs.unsynced_bytes(), 5);
    assert_eq!(fs.read(p("db/wal")).unwrap(), b"hello world");
    fs.crash();
    assert_eq!(fs.read(p("db/wal")).unwrap(), b"hello ");
    assert_eq!(fs.unsynced_bytes(), 0);
    assert_eq!(fs.total_bytes(), 6);
}

#[test]
fn synced_bytes_survive_crash_and_appends_continue() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/wal")).unwrap();
    f.write_all(b"abc").unwrap();
    f.sync().unwrap();
    fs.sync_dir(p("db")).unwrap();
    drop(f);
    fs.crash();
    assert_eq!(fs.file(p("db/wal")).unwrap(), b"abc");
    let mut f = fs.append(p("db/wal")).unwrap();
    f.write_all(b"def").unwrap();
    f.sync().unwrap();
    fs.crash();
    assert_eq!(fs.read(p("db/wal")).unwrap(), b"abcdef");
    assert_eq!(fs.len(p("db/wal")).unwrap(), 6);
}

#[test]
fn synced_file_vanishes_if_its_directory_was_not_synced() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/seg")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync().unwrap();
    assert_eq!(fs.unsynced_bytes(), 0);
    assert!(fs.durable_file(p("db/seg")).is_none());
    fs.crash();
    assert!(!fs.exists(p("db/seg")));
    assert_eq!(fs.list(p("db")).unwrap(), Vec::<String>::new());
    assert_eq!(fs.total_bytes(), 0);
}

#[test]
fn synced_directory_entry_with_unsynced_data_leaves_an_empty_file() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/seg")).unwrap();
    f.write_all(b"data").unwrap();
    fs.sync_dir(p("db")).unwrap();
    fs.crash();
    assert_eq!(fs.file(p("db/seg")).unwrap(), b"");
}

#[test]
fn rename_is_not_durable_until_sync_dir() {
    let fs = fs_with_db();
    fs.set_file(p("db/cur"), b"old").unwrap();
    fs.set_file(p("db/new"), b"new").unwrap();
    fs.rename(p("db/new"), p("db/cur")).unwrap();
    assert_eq!(fs.file(p("db/cur")).unwrap(), b"new");
    assert!(!fs.exists(p("db/new")));
    assert_eq!(fs.total_bytes(), 3, "the replaced file's space is freed");
    fs.crash();
    assert_eq!(fs.file(p("db/cur")).unwrap(), b"old");
    assert_eq!(fs.file(p("db/new")).unwrap(), b"new");

    fs.rename(p("db/new"), p("db/cur")).unwrap();
    fs.sync_dir(p("db")).unwrap();
    fs.crash();
    assert_eq!(fs.file(p("db/cur")).unwrap(), b"new");
    assert!(!fs.exists(p("db/new")));
    assert_eq!(fs.renames(), 2);
}

#[test]
fn rename_across_directories_needs_both_synced() {
    let fs = FaultFs::new();
    fs.create_dir_all(p("a")).unwrap();
    fs.create_dir_all(p("b")).unwrap();
    fs.set_file(p("a/f"), b"x").unwrap();
    fs.rename(p("a/f"), p("b/g")).unwrap();
    assert_eq!(fs.list(p("a")).unwrap(), Vec::<String>::new());
    assert_eq!(fs.list(p("b")).unwrap(), vec!["g"]);
    fs.sync_dir(p("b")).unwrap();
    fs.crash();
    // Only the target directory was synced: the file now has two names.
    assert_eq!(fs.file(p("a/f")).unwrap(), b"x");
    assert_eq!(fs.file(p("b/g")).unwrap(), b"x");
    assert!(fs.rename(p("a/f"), p("missing/g")).is_err());
}

#[test]
fn removal_is_not_durable_until_sync_dir() {
    let fs = fs_with_db();
    fs.set_file(p("db/f"), b"12345").unwrap();
    fs.remove_file(p("db/f")).unwrap();
    assert!(!fs.exists(p("db/f")));
    assert_eq!(fs.total_bytes(), 0);
    fs.crash();
    assert_eq!(fs.file(p("db/f")).unwrap(), b"12345");
    fs.remove_file(p("db/f")).unwrap();
    fs.sync_dir(p("db")).unwrap();
    fs.crash();
    assert!(!fs.exists(p("db/f")));
    assert_eq!(
        fs.remove_file(p("db/f")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn nth_write_fails_exactly_once() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/f")).unwrap();
    f.write_all(b"0").unwrap();
    fs.fail_nth_write(3);
    f.write_all(b"1").unwrap();
    f.write_all(b"2").unwrap();
    assert!(is_eio(&f.write_all(b"3").unwrap_err()));
    f.write_all(b"4").unwrap();
    f.write_all(b"5").unwrap();
    assert_eq!(fs.file(p("db/f")).unwrap(), b"01245");
    assert_eq!(fs.writes(), 6);
}

#[test]
fn torn_write_applies_half_the_buffer() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/f")).unwrap();
    fs.set_torn_writes(true);
    fs.fail_nth_write(1);
    assert!(f.write_all(b"abcdefgh").is_err());
    assert_eq!(fs.file(p("db/f")).unwrap(), b"abcd");
    f.write_all(b"!").unwrap();
    assert_eq!(fs.file(p("db/f")).unwrap(), b"abcd!");
}

#[test]
fn nth_sync_fails_exactly_once_counting_file_and_dir_syncs() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/f")).unwrap();
    f.write_all(b"a").unwrap();
    fs.fail_nth_sync(3);
    f.sync().unwrap(); // 1
    fs.sync_dir(p("db")).unwrap(); // 2
    f.write_all(b"b").unwrap();
    assert!(is_eio(&f.sync().unwrap_err())); // 3: nothing made durable
    assert_eq!(fs.durable_file(p("db/f")).unwrap(), b"a");
    assert_eq!(fs.unsynced_bytes(), 1);
    f.sync().unwrap(); // 4
    assert_eq!(fs.durable_file(p("db/f")).unwrap(), b"ab");

    fs.fail_nth_sync(1);
    let mut g = fs.create(p("db/g")).unwrap();
    assert!(is_eio(&g.sync().unwrap_err())); // 5
    fs.fail_nth_sync(2);
    g.sync().unwrap(); // 6
    assert!(is_eio(&fs.sync_dir(p("db")).unwrap_err())); // 7
    fs.sync_dir(p("db")).unwrap(); // 8
    assert_eq!(fs.syncs(), 8);
}

#[test]
fn nth_rename_and_nth_create_fail_exactly_once() {
    let fs = fs_with_db();
    fs.fail_nth_create(2);
    fs.create(p("db/a")).unwrap();
    assert!(is_eio(&fs.create(p("db/b")).unwrap_err()));
    assert!(!fs.exists(p("db/b")));
    fs.create(p("db/b")).unwrap();
    assert_eq!(fs.creates(), 3);

    fs.fail_nth_rename(2);
    fs.rename(p("db/a"), p("db/c")).unwrap();
    assert!(is_eio(&fs.rename(p("db/b"), p("db/d")).unwrap_err()));
    assert!(fs.exists(p("db/b")) && !fs.exists(p("db/d")));
    fs.rename(p("db/b"), p("db/d")).unwrap();
    assert_eq!(fs.renames(), 3);
}

#[test]
fn zero_or_clear_faults_disarms() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/f")).unwrap();
    fs.fail_nth_write(1);
    fs.fail_nth_write(0);
    f.write_all(b"x").unwrap();
    fs.fail_nth_write(1);
    fs.fail_nth_sync(1);
    fs.set_space_limit(Some(0));
    fs.clear_faults();
    f.write_all(b"x").unwrap();
    f.sync().unwrap();
}

#[test]
fn enospc_at_the_limit_and_recovery_after_removal() {
    let fs = fs_with_db();
    fs.set_space_limit(Some(10));
    let mut a = fs.create(p("db/a")).unwrap();
    a.write_all(&[1; 6]).unwrap();
    assert!(is_enospc(&a.write_all(&[2; 5]).unwrap_err()));
    assert_eq!(
        fs.len(p("db/a")).unwrap(),
        6,
        "a failed write writes nothing"
    );
    a.write_all(&[3; 4]).unwrap();
    assert_eq!(fs.total_bytes(), 10);
    let mut b = fs.create(p("db/b")).unwrap();
    assert!(is_enospc(&b.write_all(b"z").unwrap_err()));
    b.write_all(b"").unwrap();

    // An open handle keeps a removed file's space, as on POSIX.
    fs.remove_file(p("db/a")).unwrap();
    assert_eq!(fs.total_bytes(), 10);
    assert!(is_enospc(&b.write_all(b"z").unwrap_err()));
    drop(a);
    assert_eq!(fs.total_bytes(), 0);
    b.write_all(&[4; 10]).unwrap();
    assert!(is_enospc(&b.write_all(b"z").unwrap_err()));
    assert!(is_enospc(&fs.truncate(p("db/b"), 11).unwrap_err()));
    fs.set_space_limit(None);
    b.write_all(b"z").unwrap();
    assert_eq!(fs.total_bytes(), 11);
}

#[test]
fn lock_is_exclusive_and_released_on_drop() {
    let fs = fs_with_db();
    let l = fs.lock(p("db/LOCK")).unwrap();
    assert!(fs.exists(p("db/LOCK")));
    assert_eq!(
        fs.lock(p("db/LOCK")).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    let other = fs.lock(p("db/OTHER")).unwrap();
    drop(l);
    let _l2 = fs.lock(p("db/LOCK")).unwrap();
    drop(other);
    assert_eq!(
        fs.lock(p("db/LOCK")).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(
        fs.lock(p("nodir/LOCK")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn crash_releases_locks_and_old_guards_release_nothing() {
    let fs = fs_with_db();
    let old = fs.lock(p("db/LOCK")).unwrap();
    fs.crash();
    let new = fs.lock(p("db/LOCK")).unwrap();
    drop(old);
    assert_eq!(
        fs.lock(p("db/LOCK")).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    drop(new);
    fs.lock(p("db/LOCK")).unwrap();
}

#[test]
fn handles_from_before_a_crash_are_dead() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/f")).unwrap();
    f.write_all(b"kept").unwrap();
    f.sync().unwrap();
    fs.sync_dir(p("db")).unwrap();
    fs.crash();
    let (writes, syncs) = (fs.writes(), fs.syncs());
    let e = f.write_all(b"lost").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Other);
    assert_eq!(e.to_string(), "handle from before crash");
    assert_eq!(f.sync().unwrap_err().kind(), io::ErrorKind::Other);
    assert_eq!(fs.file(p("db/f")).unwrap(), b"kept");
    assert_eq!((fs.writes(), fs.syncs()), (writes, syncs));
    let mut g = fs.append(p("db/f")).unwrap();
    drop(f); // must not disturb the new handle's bookkeeping
    g.write_all(b"!").unwrap();
    fs.remove_file(p("db/f")).unwrap();
    assert_eq!(fs.total_bytes(), 5, "g still holds the inode open");
}

/// Runs `write_atomic` of `new` over a durable `old`, with `arm` injecting
/// one fault, then crashes; the target must hold old or new, whole.
fn atomic_write_then_crash(arm: impl Fn(&FaultFs), torn: bool) -> (bool, Vec<u8>) {
    let (old, new) = (b"old contents".to_vec(), b"brand new contents".to_vec());
    let target = p("db/MANIFEST");
    let fs = fs_with_db();
    fs.set_file(target, &old).unwrap();
    fs.set_torn_writes(torn);
    arm(&fs);
    let ok = write_atomic(&fs, target, &new).is_ok();
    fs.crash();
    let got = fs.file(target).unwrap();
    assert!(got == old || got == new, "torn target: {got:?}");
    // The engine can always publish again after the crash.
    fs.clear_faults();
    write_atomic(&fs, target, &new).unwrap();
    fs.crash();
    assert_eq!(fs.file(target).unwrap(), new);
    assert!(!fs.exists(&tmp_path(target)));
    (ok, got)
}

#[test]
fn write_atomic_survives_a_crash_at_every_step() {
    // A clean run: one create, write, rename; two syncs (file, directory).
    let fs = fs_with_db();
    write_atomic(&fs, p("db/x"), b"v").unwrap();
    assert_eq!(
        (fs.creates(), fs.writes(), fs.renames(), fs.syncs()),
        (1, 1, 1, 2)
    );

    let new = b"brand new contents".to_vec();
    let old = b"old contents".to_vec();
    for torn in [false, true] {
        let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_create(1), torn);
        assert!(!ok && got == old);
        let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_write(1), torn);
        assert!(!ok && got == old);
        let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_sync(1), torn);
        assert!(!ok && got == old);
        let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_rename(1), torn);
        assert!(!ok && got == old);
        // The directory sync failed: the rename is not durable.
        let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_sync(2), torn);
        assert!(!ok && got == old);
        let (ok, got) = atomic_write_then_crash(|_| (), torn);
        assert!(ok && got == new);
        // Out of space while writing the temporary file.
        let (ok, got) = atomic_write_then_crash(|fs| fs.set_space_limit(Some(15)), torn);
        assert!(!ok && got == old);
    }
}

#[test]
fn write_atomic_replaces_a_durable_leftover_tmp() {
    let fs = fs_with_db();
    let target = p("db/MANIFEST");
    fs.set_file(target, b"old").unwrap();
    fs.set_file(&tmp_path(target), b"half-writ").unwrap();
    fs.fail_nth_create(1);
    write_atomic(&fs, target, b"new").unwrap_err();
    fs.crash();
    // The removal of the leftover was not durable: it is back, harmlessly.
    assert_eq!(fs.file(&tmp_path(target)).unwrap(), b"half-writ");
    assert_eq!(fs.file(target).unwrap(), b"old");
    write_atomic(&fs, target, b"new").unwrap();
    fs.crash();
    assert_eq!(fs.file(target).unwrap(), b"new");
    assert!(!fs.exists(&tmp_path(target)));
}

#[test]
fn truncate_shortens_both_copies_but_syncs_nothing_new() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/wal")).unwrap();
    fs.sync_dir(p("db")).unwrap();
    f.write_all(b"0123456789").unwrap();
    f.sync().unwrap();
    f.write_all(b"abc").unwrap();
    fs.truncate(p("db/wal"), 12).unwrap();
    assert_eq!(fs.file(p("db/wal")).unwrap(), b"0123456789ab");
    assert_eq!(fs.durable_file(p("db/wal")).unwrap(), b"0123456789");
    fs.truncate(p("db/wal"), 4).unwrap();
    assert_eq!(fs.durable_file(p("db/wal")).unwrap(), b"0123");
    fs.truncate(p("db/wal"), 6).unwrap();
    assert_eq!(fs.file(p("db/wal")).unwrap(), b"0123\0\0");
    fs.crash();
    assert_eq!(fs.file(p("db/wal")).unwrap(), b"0123");
}

#[test]
fn corrupt_flips_bits_in_both_copies() {
    let fs = fs_with_db();
    fs.set_file(p("db/seg"), &[0u8; 4]).unwrap();
    fs.corrupt(p("db/seg"), 2, 0x81).unwrap();
    assert_eq!(fs.file(p("db/seg")).unwrap(), [0, 0, 0x81, 0]);
    fs.crash();
    assert_eq!(fs.file(p("db/seg")).unwrap(), [0, 0, 0x81, 0]);
    assert_eq!(
        fs.corrupt(p("db/seg"), 4, 1).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        fs.corrupt(p("db/nope"), 0, 1).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn set_file_plants_durably_and_creates_directories() {
    let fs = FaultFs::new();
    fs.set_file(p("/data/db/v1/seg-0"), b"fixture").unwrap();
    fs.crash();
    assert_eq!(fs.file(p("/data/db/v1/seg-0")).unwrap(), b"fixture");
    assert!(fs.exists(p("/data/db/v1")));
    fs.set_file(p("/data/db/v1/seg-0"), b"other").unwrap();
    fs.crash();
    assert_eq!(fs.read(p("/data/db/v1/seg-0")).unwrap(), b"other");
    assert_eq!(fs.total_bytes(), 5);
    assert!(fs.set_file(p("/data/db"), b"x").is_err());
    assert!(fs.file(p("/data/db")).is_none());
}

#[test]
fn namespace_errors_and_listing() {
    let fs = FaultFs::new();
    assert_eq!(
        fs.create(p("db/f")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    fs.create_dir_all(p("db/sub/deeper")).unwrap();
    fs.create(p("db/f")).unwrap();
    fs.create(p("db/g")).unwrap();
    assert_eq!(
        fs.create(p("db/f")).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(
        fs.create(p("db/sub")).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(
        fs.create(p("db/f/x")).unwrap_err().kind(),
        io::ErrorKind::NotADirectory
    );
    assert_eq!(
        fs.create_dir_all(p("db/f")).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(
        fs.read(p("db/h")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        fs.len(p("db/h")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        fs.append(p("db/h")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        fs.list(p("nodir")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        fs.read(p("db/sub")).unwrap_err().kind(),
        io::ErrorKind::IsADirectory
    );
    assert_eq!(fs.list(p("db")).unwrap(), vec!["sub", "g", "f"]);
    assert_eq!(fs.list(p(".")).unwrap(), vec!["db"]);
    assert!(fs.exists(p("db/sub/deeper")) && fs.exists(p("db/f")));
    assert!(fs.exists(p("db//f")), "paths compare as Path does");
    // Directories are durable; unsynced entries are not.
    fs.crash();
    assert_eq!(fs.list(p("db")).unwrap(), vec!["sub"]);
    // A bare name lives in `.`.
    fs.create(p("top")).unwrap();
    assert_eq!(fs.list(p(".")).unwrap(), vec!["top", "db"]);
}

#[test]
fn a_new_directory_shadows_a_removed_durable_file_of_its_name() {
    let fs = fs_with_db();
    fs.set_file(p("db/x"), b"file").unwrap();
    fs.remove_file(p("db/x")).unwrap();
    fs.create_dir_all(p("db/x")).unwrap();
    fs.crash();
    assert!(fs.file(p("db/x")).is_none());
    assert_eq!(fs.list(p("db")).unwrap(), vec!["x"]);
    assert_eq!(fs.list(p("db/x")).unwrap(), Vec::<String>::new());
}

#[test]
fn map_is_a_snapshot() {
    let fs = fs_with_db();
    let mut f = fs.create(p("db/seg")).unwrap();
    f.write_all(b"abc").unwrap();
    let m = fs.map(p("db/seg")).unwrap();
    f.write_all(b"def").unwrap();
    assert_eq!((*m).as_ref(), b"abc");
    assert_eq!(fs.map(p("db/seg")).unwrap().as_ref().as_ref(), b"abcdef");
}

#[test]
fn clones_share_state_through_dyn_file_system() {
    let fs = fs_with_db();
    let engine: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let mut f = engine.create(p("db/f")).unwrap();
    fs.fail_nth_write(1);
    assert!(f.write_all(b"x").is_err());
    f.write_all(b"y").unwrap();
    assert_eq!(fs.file(p("db/f")).unwrap(), b"y");
    fs.crash();
    assert!(!engine.exists(p("db/f")));
    assert!(format!("{fs:?}").starts_with("FaultFs"));
    assert!(format!("{f:?}").contains("db/f"));
}

/// Random operation sequences: whatever `durable_file` reports just before
/// a crash is exactly what the files hold after it.
#[test]
fn durable_view_predicts_crash_outcome() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let paths = ["a/0", "a/1", "a/2", "b/0", "b/1"];
    for _round in 0..200 {
        let fs = FaultFs::new();
        fs.create_dir_all(p("a")).unwrap();
        fs.create_dir_all(p("b")).unwrap();
        let mut handles: Vec<Box<dyn WritableFile>> = Vec::new();
        for _step in 0..60 {
            let path = p(paths[next(paths.len() as u64) as usize]);
            let other = p(paths[next(paths.len() as u64) as usize]);
            // Errors (missing files, dead handles) are part of the game.
            match next(9) {
                0 => {
                    if let Ok(h) = fs.create(path) {
                        handles.push(h);
                    }
                }
                1 => {
                    if let Ok(h) = fs.append(path) {
                        handles.push(h);
                    }
                }
                2 | 3 if !handles.is_empty() => {
                    let i = next(handles.len() as u64) as usize;
                    let _ = handles[i].write_all(&[next(256) as u8; 3]);
                }
                4 if !handles.is_empty() => {
                    let i = next(handles.len() as u64) as usize;
                    let _ = handles[i].sync();
                }
                5 => {
                    let _ = fs.sync_dir(parent(path));
                }
                6 => {
                    let _ = fs.rename(path, other);
                }
                7 => {
                    let _ = fs.remove_file(path);
                }
                _ => {
                    let _ = fs.truncate(path, next(4));
                }
            }
            if next(10) == 0 {
                let before: Vec<_> = paths.iter().map(|q| fs.durable_file(p(q))).collect();
                fs.crash();
                let after: Vec<_> = paths.iter().map(|q| fs.file(p(q))).collect();
                assert_eq!(before, after);
                assert_eq!(fs.unsynced_bytes(), 0);
                // At most: a crash can split a cross-directory rename,
                // leaving one inode with two names.
                let sum: u64 = after.iter().flatten().map(|v| v.len() as u64).sum();
                assert!(fs.total_bytes() <= sum);
            }
        }
    }
}

#[test]
fn a_directory_rename_is_durable_only_after_its_parent_is_synced() {
    let fs = FaultFs::new();
    fs.create_dir_all(p("top/a/sub")).unwrap();
    fs.create_dir_all(p("top/empty")).unwrap();
    write_atomic(&fs, p("top/a/sub/f"), b"x").unwrap();
    fs.sync_dir(p("top/a")).unwrap();
    // Onto an empty directory, carrying the tree and its files.
    fs.rename(p("top/a"), p("top/empty")).unwrap();
    assert!(!fs.exists(p("top/a")));
    assert_eq!(fs.read(p("top/empty/sub/f")).unwrap(), b"x");
    assert_eq!(fs.list(p("top")).unwrap(), vec!["empty".to_string()]);
    fs.crash();
    assert_eq!(fs.read(p("top/a/sub/f")).unwrap(), b"x");
    assert!(fs.exists(p("top/empty")));
    assert!(!fs.exists(p("top/empty/sub")));
    // Synced, it survives.
    fs.rename(p("top/a"), p("top/b")).unwrap();
    fs.sync_dir(p("top")).unwrap();
    fs.crash();
    assert!(!fs.exists(p("top/a")));
    assert_eq!(fs.read(p("top/b/sub/f")).unwrap(), b"x");
    // Never onto a directory that holds something, nor into itself.
    let e = fs.rename(p("top/empty"), p("top/b")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::DirectoryNotEmpty);
    assert!(fs.rename(p("top/b"), p("top/b/sub/c")).is_err());
}
