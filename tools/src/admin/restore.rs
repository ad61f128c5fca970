//! `restore`: a verified backup copied into a data directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use tallydb_storage::backup::{self, restore_tmp_path};
use tallydb_storage::engine::LOCK_FILE;
use tallydb_storage::fs::{FileSystem, OsFs};
use tallydb_storage::offline::lock_for_reading;
use tallydb_storage::Error;

use crate::progress::Progress;

use super::verify::{print_verify, run_verify};
use super::verify::{verify_json, write_verify_text};
use super::{
    now_ms, out_err, require_data_dir, Common, Exit, Failure, Format, Outcome, HINT_READ,
    HINT_RESTORE,
};

fn dir_is_empty(dir: &Path) -> Result<bool, Failure> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Failure::failed(format!("reading {}: {e}", dir.display()))),
    }
}

/// `restore --from B --data-dir D [--force]`: verifies B, copies it into a
/// temporary sibling of D (every file and directory fsynced), renames it into
/// place, fsyncs the parent, and verifies the result. A non-empty D is refused
/// without `--force`; with it, D is kept as `D.replaced-<ms>`.
pub fn restore(from: &Path, dir: &Path, force: bool, c: &Common, out: &mut dyn Write) -> Outcome {
    require_data_dir(from)?;
    let started = Instant::now();
    let report = {
        let _lock = lock_for_reading(from).map_err(|e| Failure::storage(e, from, HINT_READ))?;
        run_verify(from, c, true)?
    };
    if !report.is_intact() {
        print_verify(&report, c, out)?;
        return Err(Failure {
            exit: Exit::Damage,
            message: format!(
                "the backup {} is damaged ({} problems); nothing was restored",
                from.display(),
                report.damage()
            ),
        });
    }
    let empty = dir_is_empty(dir)?;
    if !empty && !force {
        return Err(Failure::failed(format!(
            "{} is not empty; restore into an empty or missing directory, or pass --force to replace it (the old directory is kept as {}.replaced-<time>)",
            dir.display(),
            dir.display()
        )));
    }
    // Hold the target's lock while it is replaced, so no server opens it meanwhile.
    let _lock = if !empty && dir.join(LOCK_FILE).exists() {
        Some(
            OsFs.lock(&dir.join(LOCK_FILE))
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        Error::Locked {
                            path: dir.join(LOCK_FILE),
                        }
                    } else {
                        Error::io("lock", dir.join(LOCK_FILE), e)
                    }
                })
                .map_err(|e| Failure::storage(e, dir, HINT_RESTORE))?,
        )
    } else {
        None
    };
    let tmp = restore_tmp_path(dir);
    if tmp.exists() {
        // Left by an interrupted restore: it never became live.
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| Failure::failed(format!("removing {}: {e}", tmp.display())))?;
    }
    let parent = tallydb_storage::fs::parent(dir).to_path_buf();
    std::fs::create_dir_all(&parent)
        .map_err(|e| Failure::failed(format!("creating {}: {e}", parent.display())))?;
    let mut p = Progress::new(c.quiet);
    let bytes = backup::copy_data_set(&OsFs, from, &tmp, &mut |b| p.bytes("copy", b))
        .map_err(|e| Failure::failed(format!("copying into {}: {e}", tmp.display())))?;
    p.finish();
    let mut replaced: Option<PathBuf> = None;
    if dir.exists() {
        if empty {
            std::fs::remove_dir(dir)
                .map_err(|e| Failure::failed(format!("removing empty {}: {e}", dir.display())))?;
        } else {
            let mut name = dir.as_os_str().to_owned();
            name.push(format!(".replaced-{}", now_ms()));
            let old = PathBuf::from(name);
            std::fs::rename(dir, &old)
                .map_err(|e| Failure::failed(format!("moving {} aside: {e}", dir.display())))?;
            replaced = Some(old);
        }
    }
    std::fs::rename(&tmp, dir).map_err(|e| {
        Failure::failed(format!(
            "renaming {} to {}: {e}",
            tmp.display(),
            dir.display()
        ))
    })?;
    OsFs.sync_dir(&parent)
        .map_err(|e| Failure::failed(format!("fsync {}: {e}", parent.display())))?;
    let copy_time = started.elapsed();
    let r = run_verify(dir, c, true)?;
    match c.format {
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "restored": dir.display().to_string(),
                "from": from.display().to_string(),
                "bytes": bytes,
                "replaced": replaced.as_ref().map(|p| p.display().to_string()),
                "elapsed_ms": copy_time.as_millis() as u64,
                "verify": verify_json(&r),
            })
        )
        .map_err(out_err)?,
        Format::Table => {
            writeln!(
                out,
                "restored {} into {}: {:.1} MB; verifying the backup and copying took {:.2} s",
                from.display(),
                dir.display(),
                bytes as f64 / 1e6,
                copy_time.as_secs_f64()
            )
            .map_err(out_err)?;
            if let Some(old) = &replaced {
                writeln!(
                    out,
                    "the previous contents were moved to {}; delete it once the restore is confirmed",
                    old.display()
                )
                .map_err(out_err)?;
            }
            write_verify_text(&r, out).map_err(out_err)?;
        }
    }
    Ok(if r.is_intact() {
        Exit::Ok
    } else {
        Exit::Damage
    })
}
