//! `restore`: a verified backup copied into a data directory.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tallydb_storage::backup::{self, RestoreOptions, RestoreOutcome};
use tallydb_storage::fs::OsFs;
use tallydb_storage::offline::lock_for_reading;

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

/// `restore --from B --data-dir D [--force]`: the storage library's restore
/// (verifies B, copies it into a temporary sibling of D with every file and
/// directory fsynced, renames it into place, fsyncs the parent), then verifies
/// the result. A non-empty D is refused without `--force`; with it, D is kept as
/// `D.replaced-<ms>`.
pub fn restore(from: &Path, dir: &Path, force: bool, c: &Common, out: &mut dyn Write) -> Outcome {
    require_data_dir(from)?;
    let started = Instant::now();
    let empty = dir_is_empty(dir)?;
    if !empty && !force {
        return Err(Failure::failed(format!(
            "{} is not empty; restore into an empty or missing directory, or pass --force to replace it (the old directory is kept as {}.replaced-<time>)",
            dir.display(),
            dir.display()
        )));
    }
    let from_lock = lock_for_reading(from).map_err(|e| Failure::storage(e, from, HINT_READ))?;
    let opts = RestoreOptions {
        fs: Arc::new(OsFs),
        retention: c.retention,
        now_ms: now_ms(),
        replace: force,
    };
    let mut p = Progress::new(c.quiet);
    let outcome = backup::restore(from, dir, &opts, &mut |phase, b| p.bytes(phase, b));
    p.finish();
    drop(from_lock);
    let (bytes, replaced) = match outcome.map_err(|e| Failure::storage(e, dir, HINT_RESTORE))? {
        RestoreOutcome::Restored { bytes, replaced } => (bytes, replaced),
        RestoreOutcome::BackupDamaged(report) => {
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
    };
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
