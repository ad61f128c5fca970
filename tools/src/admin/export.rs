//! `export`: retained cells of selected series as lines (CSV or JSON).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use tallydb_storage::offline::DataDir;
use tallydb_storage::{Retention, Tier};

use crate::selector::Select;

use super::inspect::load_offline;
use super::{now_ms, out_err, Common, Exit, Failure, Outcome, HINT_READ};

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
