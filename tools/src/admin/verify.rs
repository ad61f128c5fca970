//! `verify`: the integrity check of a data directory or backup, its JSON and text
//! reports; `run_verify` is shared by backup and restore.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use tallydb_storage::fs::OsFs;
use tallydb_storage::offline::lock_for_reading;
use tallydb_storage::verify::{verify, Severity, VerifyOptions, VerifyReport};

use super::{mb_per_s, now_ms, out_err, Common, Exit, Failure, Format, Outcome, HINT_READ};
use crate::progress::Progress;

/// Runs the integrity check with progress; shared by verify, backup and restore.
pub(super) fn run_verify(dir: &Path, c: &Common, rollups: bool) -> Result<VerifyReport, Failure> {
    let mut p = Progress::new(c.quiet);
    let opts = VerifyOptions {
        fs: Arc::new(OsFs),
        retention: c.retention,
        now: now_ms(),
        rollups,
    };
    let report = verify(dir, &opts, &mut |pr| p.bytes(pr.phase, pr.bytes))
        .map_err(|e| Failure::storage(e, dir, HINT_READ))?;
    p.finish();
    Ok(report)
}

/// The verify report as JSON.
pub fn verify_json(r: &VerifyReport) -> Value {
    json!({
        "dir": r.dir.display().to_string(),
        "intact": r.is_intact(),
        "damage": r.damage(),
        "torn_tails": r.count(Severity::TornTail),
        "warnings": r.count(Severity::Warning),
        "findings": r.findings.iter().map(|f| json!({
            "severity": f.severity.name(),
            "file": f.file,
            "offset": f.offset,
            "what": f.what,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
        "files": r.files,
        "bytes": r.bytes,
        "segments": r.segments,
        "blocks": r.blocks,
        "cells": r.cells,
        "wal_files": r.wal_files,
        "wal_records": r.wal_records,
        "wal_records_unflushed": r.wal_replayed,
        "series": r.series,
        "hour_cells_recomputed": r.hours_checked,
        "day_cells_recomputed": r.days_checked,
        "backup_manifest": r.backup_manifest,
        "now_ms": r.now,
        "elapsed_ms": r.elapsed.as_millis() as u64,
        "mb_per_s": (mb_per_s(r.bytes, r.elapsed) * 10.0).round() / 10.0,
    })
}

/// Writes the verify report as text.
pub fn write_verify_text(r: &VerifyReport, out: &mut dyn Write) -> std::io::Result<()> {
    let status = if r.is_intact() {
        "INTACT".to_string()
    } else {
        format!("DAMAGED ({} problems)", r.damage())
    };
    writeln!(out, "verify {}: {status}", r.dir.display())?;
    let mut sorted: Vec<_> = r.findings.iter().collect();
    sorted.sort_by_key(|f| f.severity);
    for f in sorted {
        writeln!(out, "  {f}")?;
    }
    for n in &r.notes {
        writeln!(out, "  note: {n}")?;
    }
    writeln!(
        out,
        "read {} files, {:.1} MB in {:.2} s ({:.0} MB/s): {} segments ({} blocks, {} cells), {} WAL files ({} records, {} past the checkpoint), {} series, {} hour and {} day cells recomputed{}",
        r.files,
        r.bytes as f64 / 1e6,
        r.elapsed.as_secs_f64(),
        mb_per_s(r.bytes, r.elapsed),
        r.segments,
        r.blocks,
        r.cells,
        r.wal_files,
        r.wal_records,
        r.wal_replayed,
        r.series,
        r.hours_checked,
        r.days_checked,
        if r.backup_manifest {
            ", BACKUP-MANIFEST checked"
        } else {
            ""
        }
    )
}

pub(super) fn print_verify(
    r: &VerifyReport,
    c: &Common,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match c.format {
        Format::Json => writeln!(out, "{}", verify_json(r)).map_err(out_err),
        Format::Table => write_verify_text(r, out).map_err(out_err),
    }
}

/// `verify --data-dir D`: exit 0 when intact, 3 on damage, 4 if a server holds D.
pub fn verify_cmd(dir: &Path, c: &Common, rollups: bool, out: &mut dyn Write) -> Outcome {
    if !dir.is_dir() {
        return Err(Failure::failed(format!(
            "{} does not exist or is not a directory",
            dir.display()
        )));
    }
    let _lock = lock_for_reading(dir).map_err(|e| {
        Failure::storage(
            e,
            dir,
            "use `tally-admin backup --server ADDR --to DIR` for a consistent copy and verify that",
        )
    })?;
    let r = run_verify(dir, c, rollups)?;
    print_verify(&r, c, out)?;
    Ok(if r.is_intact() {
        Exit::Ok
    } else {
        Exit::Damage
    })
}
