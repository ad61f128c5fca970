//! `inspect`: what a data directory holds (tiers, segments, sizes, ratios), as tables
//! or JSON.

use std::io::Write;
use std::path::Path;

use super::{out_err, require_data_dir, Common, Exit, Failure, Format, Outcome, HINT_READ};
use serde_json::{json, Value};
use tallydb_storage::fs::OsFs;
use tallydb_storage::inspect::{inspect, Inspection, PLAIN_CELL_BYTES};
use tallydb_storage::offline::{format_utc, lock_for_reading, DataDir};

pub(super) fn load_offline(
    dir: &Path,
) -> Result<(tallydb_storage::offline::ReadLock, DataDir), Failure> {
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
