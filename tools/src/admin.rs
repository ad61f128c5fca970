//! The `tally-admin` commands. Each takes parsed arguments and a writer for its
//! report, and returns the exit code (or a [`Failure`] carrying one):
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | success; for `verify`, no damage (torn WAL tails and warnings allowed) |
//! | 1 | the command failed (I/O error, target not empty, server unreachable or refusing) |
//! | 2 | bad command line (from clap) |
//! | 3 | damage found (`verify`; `restore` of a damaged backup; `inspect`/`export` of a damaged directory) |
//! | 4 | the data directory is in use by a running server (its lock is held) |

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tallydb_protocol::{Request, Snapshot};
use tallydb_storage::backup::{self, write_backup_manifest, RestoreOptions, RestoreOutcome};
use tallydb_storage::engine::FORMAT_FILE;
use tallydb_storage::fs::OsFs;
use tallydb_storage::inspect::{inspect, Inspection, PLAIN_CELL_BYTES};
use tallydb_storage::offline::{format_utc, lock_for_reading, DataDir};
use tallydb_storage::verify::{verify, Severity, VerifyOptions, VerifyReport};
use tallydb_storage::{Clock, Engine, Error, Options, Retention, SystemClock, Tier};

use crate::progress::Progress;
use crate::selector::Select;
use crate::wire::AdminConnection;

/// Process exit codes (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The command failed.
    Failed = 1,
    /// Bad command line.
    Usage = 2,
    /// Damage found.
    Damage = 3,
    /// The directory is held by a running server.
    InUse = 4,
}

/// A command that could not do its work: the exit code and what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Exit code.
    pub exit: Exit,
    /// Message for standard error.
    pub message: String,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Failed,
            message: message.into(),
        }
    }

    /// Maps a storage error: a held lock is [`Exit::InUse`] with `hint`, damage
    /// is [`Exit::Damage`], anything else [`Exit::Failed`].
    pub fn storage(e: Error, dir: &Path, hint: &str) -> Failure {
        match e {
            Error::Locked { .. } => Failure {
                exit: Exit::InUse,
                message: format!(
                    "data directory {} is in use by a running server; {hint}",
                    dir.display()
                ),
            },
            e @ Error::Corrupt { .. } => Failure {
                exit: Exit::Damage,
                message: format!(
                    "{e}; run `tally-admin verify --data-dir {}` for a full report",
                    dir.display()
                ),
            },
            e => Failure::failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a command returns.
pub type Outcome = Result<Exit, Failure>;

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// One JSON document.
    Json,
}

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// The retention the server runs with.
    pub retention: Retention,
    /// No progress display even on a terminal.
    pub quiet: bool,
    /// Report format.
    pub format: Format,
}

const HINT_READ: &str =
    "use `tally-admin backup --server ADDR --to DIR` for a consistent copy, and check that";
const HINT_BACKUP: &str = "use `tally-admin backup --server ADDR --to DIR` for an online backup";
const HINT_COMPACT: &str = "use `tally-admin compact --server ADDR` to compact it online";
const HINT_RESTORE: &str = "stop the server before restoring into its directory";

fn out_err(e: std::io::Error) -> Failure {
    Failure::failed(format!("writing the report: {e}"))
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn is_data_dir(dir: &Path) -> bool {
    dir.join(FORMAT_FILE).exists()
}

fn require_data_dir(dir: &Path) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::failed(format!(
            "{} does not exist or is not a directory",
            dir.display()
        )));
    }
    if !is_data_dir(dir) {
        return Err(Failure::failed(format!(
            "{} is not a TallyDB data directory (no {FORMAT_FILE} file)",
            dir.display()
        )));
    }
    Ok(())
}

fn engine_options(retention: Retention) -> Options {
    Options {
        retention,
        background: false,
        ..Options::default()
    }
}

/// Runs the integrity check with progress; shared by verify, backup and restore.
fn run_verify(dir: &Path, c: &Common, rollups: bool) -> Result<VerifyReport, Failure> {
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

fn print_verify(r: &VerifyReport, c: &Common, out: &mut dyn Write) -> Result<(), Failure> {
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

fn seal_and_verify(
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

/// `backup --server ADDR --to DIR`: the server writes the snapshot into DIR **on
/// its own machine**. If DIR is visible here too, `BACKUP-MANIFEST` is written
/// and the backup verified; otherwise run `tally-admin seal DIR` there.
pub fn backup_online(
    addr: &str,
    token: &[u8],
    to: &Path,
    timeout: Duration,
    c: &Common,
    out: &mut dyn Write,
) -> Outcome {
    if !to.is_absolute() {
        return Err(Failure::failed(format!(
            "--to {}: give an absolute path (the server writes the snapshot, relative to its own working directory otherwise)",
            to.display()
        )));
    }
    let started = Instant::now();
    let target = to
        .to_str()
        .ok_or_else(|| Failure::failed("--to is not UTF-8"))?;
    let mut conn = AdminConnection::connect(addr, token, timeout)
        .map_err(|e| Failure::failed(e.to_string()))?;
    let msg = conn
        .admin(&Request::Snapshot(Snapshot { target_dir: target }))
        .map_err(|e| Failure::failed(e.to_string()))?;
    if !to.join("MANIFEST").exists() {
        writeln!(
            out,
            "server {addr}: {msg}\n{} is not visible on this machine: run `tally-admin seal {}` on the server's machine to add BACKUP-MANIFEST and verify it",
            to.display(),
            to.display()
        )
        .map_err(out_err)?;
        return Ok(Exit::Ok);
    }
    seal_and_verify(to, &format!("server {addr}"), c, started, out)
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

/// `compact --data-dir D`: runs compaction to completion through the engine.
pub fn compact_offline(dir: &Path, c: &Common, out: &mut dyn Write) -> Outcome {
    require_data_dir(dir)?;
    let started = Instant::now();
    let engine = Engine::open(dir, engine_options(c.retention))
        .map_err(|e| Failure::storage(e, dir, HINT_COMPACT))?;
    let before = engine.stats();
    let res = engine.compact();
    let after = engine.stats();
    let closed = engine.close();
    let o = res.map_err(|e| Failure::failed(format!("compaction: {e}")))?;
    closed.map_err(|e| Failure::failed(format!("closing the engine: {e}")))?;
    let seg = |s: &tallydb_storage::Stats| s.segments.iter().sum::<u64>();
    let bytes = |s: &tallydb_storage::Stats| s.segment_bytes.iter().sum::<u64>();
    match c.format {
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "tasks": o.tasks, "segments_in": o.segments_in, "cells_in": o.cells_in,
                "cells_out": o.cells_out,
                "segments_before": seg(&before), "segments_after": seg(&after),
                "bytes_before": bytes(&before), "bytes_after": bytes(&after),
                "elapsed_ms": started.elapsed().as_millis() as u64,
            })
        ),
        Format::Table => writeln!(
            out,
            "compacted {}: {} tasks merged {} segments ({} cells in, {} cells out); segments {} -> {}, {:.1} MB -> {:.1} MB in {:.2} s",
            dir.display(),
            o.tasks,
            o.segments_in,
            o.cells_in,
            o.cells_out,
            seg(&before),
            seg(&after),
            bytes(&before) as f64 / 1e6,
            bytes(&after) as f64 / 1e6,
            started.elapsed().as_secs_f64()
        ),
    }
    .map_err(out_err)?;
    Ok(Exit::Ok)
}

/// `compact --server ADDR`: asks a running server to compact.
pub fn compact_online(addr: &str, token: &[u8], timeout: Duration, out: &mut dyn Write) -> Outcome {
    let mut conn = AdminConnection::connect(addr, token, timeout)
        .map_err(|e| Failure::failed(e.to_string()))?;
    let msg = conn
        .admin(&Request::Compact)
        .map_err(|e| Failure::failed(e.to_string()))?;
    writeln!(out, "server {addr}: {msg}").map_err(out_err)?;
    Ok(Exit::Ok)
}

fn load_offline(dir: &Path) -> Result<(tallydb_storage::offline::ReadLock, DataDir), Failure> {
    require_data_dir(dir)?;
    let lock = lock_for_reading(dir).map_err(|e| Failure::storage(e, dir, HINT_READ))?;
    let d = DataDir::load(&OsFs, dir).map_err(|e| Failure::storage(e, dir, HINT_READ))?;
    Ok((lock, d))
}

fn ratio(plain: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        (plain as f64 / bytes as f64 * 10.0).round() / 10.0
    }
}

/// The inspection as JSON.
pub fn inspect_json(dir: &Path, i: &Inspection) -> Value {
    json!({
        "dir": dir.display().to_string(),
        "checkpoint_lsn": i.checkpoint_lsn,
        "next_segment_id": i.next_segment_id,
        "series": i.series,
        "series_committed": i.series_committed,
        "dict_bytes": i.dict_bytes,
        "segment_bytes": i.segment_bytes(),
        "segment_cells": i.segment_cells(),
        "tiers": i.tiers.iter().map(|t| json!({
            "tier": t.tier.name(),
            "segments": t.segments,
            "cells": t.cells,
            "bytes": t.bytes,
            "raw_bytes": t.raw_bytes,
            "compression_ratio": ratio(t.cells * PLAIN_CELL_BYTES, t.bytes),
            "unflushed_cells": t.unflushed_cells,
            "from_ms": t.range_ms.map(|r| r.0),
            "to_ms": t.range_ms.map(|r| r.1),
            "retention_ms": t.retention_ms,
        })).collect::<Vec<_>>(),
        "segments": i.segments.iter().map(|s| json!({
            "id": s.id,
            "file": s.file,
            "tier": s.tier.name(),
            "cells": s.cells,
            "series": s.series,
            "blocks": s.blocks,
            "blocks_lz4": s.codecs[1],
            "blocks_zstd": s.codecs[2],
            "bytes": s.bytes,
            "raw_bytes": s.raw_bytes,
            "compression_ratio": ratio(s.cells * PLAIN_CELL_BYTES, s.bytes),
            "from_ms": s.from_ms,
            "to_ms": s.to_ms,
        })).collect::<Vec<_>>(),
        "wal": {
            "files": i.wal.files,
            "bytes": i.wal.bytes,
            "records": i.wal.records,
            "unflushed_records": i.wal.unflushed_records,
            "unflushed_events": i.wal.unflushed_events,
            "last_lsn": i.wal.last_lsn,
            "torn_tails": i.wal.torn_tails.iter().map(|(f, at, n)| json!({"file": f, "offset": at, "bytes": n})).collect::<Vec<_>>(),
        },
        "dedup": i.dedup.as_ref().map(|d| json!({
            "file": d.file, "bytes": d.bytes, "producers": d.producers, "event_ids": d.event_ids,
        })),
    })
}

fn fmt_retention(ms: Option<i64>) -> String {
    match ms {
        None => "forever".into(),
        Some(ms) if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        Some(ms) if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        Some(ms) => format!("{}m", ms / 60_000),
    }
}

/// Writes the inspection as tables.
pub fn write_inspect_text(dir: &Path, i: &Inspection, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "data directory {}", dir.display())?;
    writeln!(
        out,
        "  checkpoint LSN {}, last LSN {}, next segment id {}, {} series ({} committed in series.dict, {} bytes)",
        i.checkpoint_lsn, i.wal.last_lsn, i.next_segment_id, i.series, i.series_committed, i.dict_bytes
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<7} {:>9} {:>12} {:>12} {:>7} {:>10} {:>9}  {:<17}  {:<17}",
        "tier", "segments", "cells", "bytes", "ratio", "unflushed", "retention", "from", "to"
    )?;
    for t in &i.tiers {
        let (from, to) = t.range_ms.map_or(("-".into(), "-".into()), |r| {
            (format_utc(r.0), format_utc(r.1))
        });
        writeln!(
            out,
            "{:<7} {:>9} {:>12} {:>12} {:>6.1}x {:>10} {:>9}  {:<17}  {:<17}",
            t.tier.name(),
            t.segments,
            t.cells,
            t.bytes,
            ratio(t.cells * PLAIN_CELL_BYTES, t.bytes),
            t.unflushed_cells,
            fmt_retention(t.retention_ms),
            from,
            to
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<30} {:<6} {:>10} {:>7} {:>6} {:>11} {:>7}  {:<17}  {:<17}",
        "segment", "tier", "cells", "series", "blocks", "bytes", "ratio", "from", "to"
    )?;
    for s in &i.segments {
        writeln!(
            out,
            "{:<30} {:<6} {:>10} {:>7} {:>6} {:>11} {:>6.1}x  {:<17}  {:<17}",
            s.file,
            s.tier.name(),
            s.cells,
            s.series,
            s.blocks,
            s.bytes,
            ratio(s.cells * PLAIN_CELL_BYTES, s.bytes),
            format_utc(s.from_ms),
            format_utc(s.to_ms)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "WAL: {} files, {} bytes, {} records ({} past the checkpoint, {} events not yet in segments)",
        i.wal.files, i.wal.bytes, i.wal.records, i.wal.unflushed_records, i.wal.unflushed_events
    )?;
    for (f, at, n) in &i.wal.torn_tails {
        writeln!(
            out,
            "  torn tail in {f} at offset {at}: {n} bytes (cut at the next open)"
        )?;
    }
    match &i.dedup {
        Some(d) => writeln!(
            out,
            "dedup checkpoint: {} ({} bytes): {} producers, {} event ids",
            d.file, d.bytes, d.producers, d.event_ids
        )?,
        None => writeln!(out, "dedup checkpoint: none")?,
    }
    writeln!(
        out,
        "ratio = cells x {PLAIN_CELL_BYTES} bytes (plain fixed-width rows) / bytes on disk"
    )
}

/// `inspect --data-dir D`.
pub fn inspect_cmd(dir: &Path, c: &Common, out: &mut dyn Write) -> Outcome {
    let (_lock, d) = load_offline(dir)?;
    let i = inspect(&d, &c.retention);
    match c.format {
        Format::Json => writeln!(out, "{}", inspect_json(dir, &i)),
        Format::Table => write_inspect_text(dir, &i, out),
    }
    .map_err(out_err)?;
    Ok(Exit::Ok)
}

/// Export line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `timestamp_ms,series,delta` with a header line; the series quoted.
    Csv,
    /// One JSON object per line: `{"timestamp_ms":…,"series":"…","delta":…}`.
    Ndjson,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Lines written (cells).
    pub cells: u64,
    /// Distinct series written.
    pub series: u64,
}

/// Writes every retained cell of `tier` whose bucket starts in `from..to` of
/// the selected series, one line per cell: the bucket start, the series, the
/// cell's sum. Count, min and max are not exported.
#[allow(clippy::too_many_arguments)]
pub fn export(
    d: &DataDir,
    select: &Select,
    tier: Tier,
    from: i64,
    to: i64,
    retention: &Retention,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<ExportStats, Failure> {
    let dict = d.dict();
    let first = retention
        .first_kept_bucket(tier, now_ms())
        .max(tier.bucket_of(from));
    let mut wanted = vec![false; dict.len() as usize];
    for (id, w) in wanted.iter_mut().enumerate() {
        *w = dict
            .key(id as u32)
            .is_some_and(|k| select.matches(&k.to_key()));
    }
    if format == ExportFormat::Csv {
        writeln!(out, "timestamp_ms,series,delta").map_err(out_err)?;
    }
    let mut stats = ExportStats::default();
    let mut last_series = None;
    for row in d.cells(tier) {
        let row = row.map_err(|e| Failure::storage(e, &d.dir, HINT_READ))?;
        let ts = tier.start_of(row.bucket);
        if !wanted.get(row.series as usize).copied().unwrap_or(false)
            || row.bucket < first
            || ts >= to
        {
            continue;
        }
        let key = dict.key(row.series).map_or("", |k| k.as_str());
        match format {
            ExportFormat::Csv => writeln!(
                out,
                "{ts},\"{}\",{}",
                key.replace('"', "\"\""),
                row.cell.sum
            ),
            ExportFormat::Ndjson => writeln!(
                out,
                "{}",
                json!({"timestamp_ms": ts, "series": key, "delta": row.cell.sum})
            ),
        }
        .map_err(out_err)?;
        stats.cells += 1;
        if last_series != Some(row.series) {
            stats.series += 1;
            last_series = Some(row.series);
        }
    }
    Ok(stats)
}

/// `export --data-dir D …`: lines to `out`, a one-line summary to `summary`
/// (the binary passes standard error).
#[allow(clippy::too_many_arguments)]
pub fn export_cmd(
    dir: &Path,
    selector: &str,
    tier: Tier,
    from: i64,
    to: i64,
    format: ExportFormat,
    c: &Common,
    out: &mut dyn Write,
    summary: &mut dyn Write,
) -> Outcome {
    let select = Select::parse(selector).map_err(|e| Failure {
        exit: Exit::Usage,
        message: e,
    })?;
    if from >= to {
        return Err(Failure {
            exit: Exit::Usage,
            message: format!("empty time range: --from {from} is not before --to {to}"),
        });
    }
    let (_lock, d) = load_offline(dir)?;
    let started = Instant::now();
    let s = export(&d, &select, tier, from, to, &c.retention, format, out)?;
    out.flush().map_err(out_err)?;
    if !c.quiet {
        writeln!(
            summary,
            "exported {} {} cells of {} series in {:.2} s",
            s.cells,
            tier.name(),
            s.series,
            started.elapsed().as_secs_f64()
        )
        .map_err(out_err)?;
    }
    Ok(Exit::Ok)
}
