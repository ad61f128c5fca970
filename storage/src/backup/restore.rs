//! Restore: a verified backup copied beside the data directory and swapped into
//! place, all through [`FileSystem`] so that tests can crash it at every step.
//!
//! The steps, and what a crash after each leaves:
//! 1. [`verify`] the backup (every checksum, every rollup); a damaged backup is
//!    reported and nothing is written.
//! 2. Lock the target (`LOCK`, when it has one), so no engine opens it meanwhile.
//! 3. Empty a temporary sibling left by an interrupted restore (it never became
//!    live), then copy the backup's data set into it, fsyncing every file and
//!    directory ([`copy_data_set`]). A crash so far leaves the target untouched.
//! 4. Rename a non-empty target aside to `<target>.replaced-<ms>`, rename the copy
//!    onto the target (over it, when it is an empty directory), and fsync the
//!    parent directory, which makes both renames durable together.
//!
//! On a file system that keeps the directory's renames all or none until that
//! fsync (the model of the test kit's `FaultFs`), a crash leaves the target
//! either as it was or completely restored. One that persists the first rename
//! alone can leave, between the two renames, no target, the old contents at
//! `<target>.replaced-<ms>` and the complete copy at the temporary sibling; a
//! second restore finishes the job either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{copy_data_set, restore_tmp_path};
use crate::engine::LOCK_FILE;
use crate::error::{Error, Result};
use crate::fs::{parent, DirLock, FileSystem};
use crate::time::Retention;
use crate::verify::{verify, VerifyOptions, VerifyReport};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// File access (the real file system in the tools, a `FaultFs` in tests).
    pub fs: Arc<dyn FileSystem>,
    /// The retention the server runs with, for the backup's rollup check.
    pub retention: Retention,
    /// "Now" (ms): retention cut-offs, and the suffix of a replaced directory.
    pub now_ms: i64,
    /// Replace a target that is not empty (it is kept as `<target>.replaced-<ms>`);
    /// without it such a target is refused.
    pub replace: bool,
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub enum RestoreOutcome {
    /// The target now holds the backup's data set.
    Restored {
        /// Bytes copied.
        bytes: u64,
        /// Where the previous contents of the target went, if it had any.
        replaced: Option<PathBuf>,
    },
    /// The backup failed verification; nothing was written.
    BackupDamaged(VerifyReport),
}

/// True if `dir` is missing or holds no entries.
pub fn is_empty_dir(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    if !fs.exists(dir) {
        return Ok(true);
    }
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    Ok(names.is_empty())
}

/// Restores the backup in `from` into `target`: verify, copy, fsync, swap (see
/// the module documentation). `progress` gets a phase name and the bytes done.
pub fn restore(
    from: &Path,
    target: &Path,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<RestoreOutcome> {
    let fs = opts.fs.as_ref();
    let verify_opts = VerifyOptions {
        fs: Arc::clone(&opts.fs),
        retention: opts.retention,
        now: opts.now_ms,
        rollups: true,
    };
    let report = verify(from, &verify_opts, &mut |p| progress(p.phase, p.bytes))?;
    if !report.is_intact() {
        return Ok(RestoreOutcome::BackupDamaged(report));
    }
    let empty = is_empty_dir(fs, target)?;
    if !empty && !opts.replace {
        return Err(Error::InvalidOption(format!(
            "{} is not empty and replacing it was not asked for",
            target.display()
        )));
    }
    let _lock = lock_target(fs, target, empty)?;
    let tmp = restore_tmp_path(target);
    if fs.exists(&tmp) {
        clear_leftover(fs, &tmp)?;
    }
    let dir = parent(target);
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    let bytes = copy_data_set(fs, from, &tmp, &mut |b| progress("copy", b))?;
    let mut replaced = None;
    if !empty {
        let mut name = target.as_os_str().to_owned();
        name.push(format!(".replaced-{}", opts.now_ms));
        let old = PathBuf::from(name);
        fs.rename(target, &old)
            .map_err(|e| Error::io("move aside", target, e))?;
        replaced = Some(old);
    }
    fs.rename(&tmp, target)
        .map_err(|e| Error::io("rename into place", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(RestoreOutcome::Restored { bytes, replaced })
}

/// Holds the target's lock while it is replaced (a missing or empty target has
/// none to hold).
fn lock_target(
    fs: &dyn FileSystem,
    target: &Path,
    empty: bool,
) -> Result<Option<Box<dyn DirLock>>> {
    let path = target.join(LOCK_FILE);
    if empty || !fs.exists(&path) {
        return Ok(None);
    }
    match fs.lock(&path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::Locked { path }),
        Err(e) => Err(Error::io("lock", &path, e)),
    }
}

/// Removes every file of a temporary copy an interrupted restore left (it never
/// became live), one directory level deep as [`copy_data_set`] writes them, and
/// makes the removals durable. The empty directories stay and are reused.
fn clear_leftover(fs: &dyn FileSystem, tmp: &Path) -> Result<()> {
    let names = fs.list(tmp).map_err(|e| Error::io("list", tmp, e))?;
    for name in names {
        let path = tmp.join(&name);
        match fs.list(&path) {
            Ok(inner) => {
                for f in inner {
                    let p = path.join(f);
                    fs.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
                }
                fs.sync_dir(&path)
                    .map_err(|e| Error::io("sync directory", &path, e))?;
            }
            Err(_) => fs
                .remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?,
        }
    }
    fs.sync_dir(tmp)
        .map_err(|e| Error::io("sync directory", tmp, e))
}
