//! `backup --data-dir` (offline) and `seal`: a snapshot with its `BACKUP-MANIFEST`,
//! verified; `seal_and_verify` is shared with the online backup.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use tallydb_storage::backup::{self, write_backup_manifest};
use tallydb_storage::fs::OsFs;
use tallydb_storage::Engine;

use crate::progress::Progress;

use super::verify::run_verify;
use super::verify::{verify_json, write_verify_text};
use super::{
    engine_options, mb_per_s, now_ms, out_err, require_data_dir, Common, Exit, Failure, Format,
    Outcome, HINT_BACKUP,
};

pub(super) fn seal_and_verify(
    to: &Path,
    source: &str,
    c: &Common,
    started: Instant,
    out: &mut dyn Write,
) -> Outcome {
    let mut p = Progress::new(c.quiet);
    let m = write_backup_manifest(&OsFs, to, source, now_ms(), &mut |b| {
        p.bytes("backup manifest", b)
    })
    .map_err(|e| Failure::failed(format!("writing BACKUP-MANIFEST: {e}")))?;
    p.finish();
    let bytes: u64 = m.files.iter().map(|f| f.size).sum();
    let copy_time = started.elapsed();
    let r = run_verify(to, c, true)?;
    match c.format {
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "backup": to.display().to_string(),
                "source": source,
                "files": m.files.len(),
                "bytes": bytes,
                "elapsed_ms": copy_time.as_millis() as u64,
                "mb_per_s": (mb_per_s(bytes, copy_time) * 10.0).round() / 10.0,
                "verify": verify_json(&r),
            })
        )
        .map_err(out_err)?,
        Format::Table => {
            writeln!(
                out,
                "backup of {source} written to {}: {} files, {:.1} MB in {:.2} s ({:.0} MB/s), BACKUP-MANIFEST written",
                to.display(),
                m.files.len(),
                bytes as f64 / 1e6,
                copy_time.as_secs_f64(),
                mb_per_s(bytes, copy_time)
            )
            .map_err(out_err)?;
            write_verify_text(&r, out).map_err(out_err)?;
        }
    }
    Ok(if r.is_intact() {
        Exit::Ok
    } else {
        Exit::Damage
    })
}

/// `backup --data-dir D --to DIR`: opens the engine on D (refused while a server
/// holds it), snapshots into DIR, writes `BACKUP-MANIFEST`, verifies the backup.
pub fn backup_offline(dir: &Path, to: &Path, c: &Common, out: &mut dyn Write) -> Outcome {
    require_data_dir(dir)?;
    let started = Instant::now();
    let engine = Engine::open(dir, engine_options(c.retention))
        .map_err(|e| Failure::storage(e, dir, HINT_BACKUP))?;
    let snap = engine
        .snapshot(to)
        .map_err(|e| Failure::failed(format!("snapshot into {}: {e}", to.display())));
    let closed = engine.close();
    drop(engine);
    snap?;
    closed.map_err(|e| Failure::failed(format!("closing the engine: {e}")))?;
    let source = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    seal_and_verify(to, &source.display().to_string(), c, started, out)
}

/// `seal DIR`: writes `BACKUP-MANIFEST` into an existing snapshot and verifies it.
pub fn seal(to: &Path, c: &Common, out: &mut dyn Write) -> Outcome {
    require_data_dir(to)?;
    if to.join(backup::BACKUP_MANIFEST_FILE).exists() {
        return Err(Failure::failed(format!(
            "{} already has a BACKUP-MANIFEST",
            to.display()
        )));
    }
    seal_and_verify(to, "snapshot", c, Instant::now(), out)
}
