//! `compact --data-dir`: compaction to completion through the engine, offline.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::{
    engine_options, out_err, require_data_dir, Common, Exit, Failure, Format, Outcome, HINT_COMPACT,
};
use serde_json::json;
use tallydb_storage::Engine;

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
