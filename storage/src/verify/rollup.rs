//! The rollup rule: wherever a finer tier still holds a whole coarser bucket, the
//! coarser cell equals the merge of the finer cells.

use std::sync::Arc;

use super::{Checker, MAX_ROLLUP_FINDINGS};
use crate::cell::Cell;
use crate::engine::SEGMENTS_DIR;
use crate::error::Result;
use crate::offline::{format_utc, Replay, TierCells};
use crate::segment::{self, CellRow, Segment};
use crate::time::{Retention, Tier};

/// Rolls a sorted stream of fine cells up into `(series, coarse bucket)` cells
/// for the coarse buckets `keep` accepts.
struct Rollup<'a> {
    fine: Tier,
    coarse: Tier,
    inner: TierCells,
    keep: &'a dyn Fn(i64) -> bool,
    pending: Option<CellRow>,
}

impl Iterator for Rollup<'_> {
    type Item = Result<CellRow>;
    fn next(&mut self) -> Option<Result<CellRow>> {
        loop {
            match self.inner.next() {
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(r)) => {
                    let cb = self.coarse.bucket_of(self.fine.start_of(r.bucket));
                    if !(self.keep)(cb) {
                        continue;
                    }
                    match &mut self.pending {
                        Some(p) if p.series == r.series && p.bucket == cb => p.cell.merge(&r.cell),
                        slot => {
                            let out = slot.replace(CellRow {
                                series: r.series,
                                bucket: cb,
                                cell: r.cell,
                            });
                            if out.is_some() {
                                return out.map(Ok);
                            }
                        }
                    }
                }
                None => return self.pending.take().map(Ok),
            }
        }
    }
}

pub(super) fn check_rollup(
    c: &mut Checker<'_>,
    segments: &[Arc<Segment>],
    replay: &Replay,
    fine: Tier,
    coarse: Tier,
    retention: &Retention,
    now: i64,
) -> Result<()> {
    let of = |t: Tier| -> Vec<Arc<Segment>> {
        segments
            .iter()
            .filter(|s| s.meta().tier == t)
            .cloned()
            .collect()
    };
    let coarse_segs = of(coarse);
    let first_coarse = retention.first_kept_bucket(coarse, now);
    let first_fine = retention.first_kept_bucket(fine, now);
    let keep =
        move |cb: i64| cb >= first_coarse && fine.bucket_of(coarse.start_of(cb)) >= first_fine;
    let mut rolled = Rollup {
        fine,
        coarse,
        inner: TierCells::new(&of(fine), replay.memtable.rows(fine)),
        keep: &keep,
        pending: None,
    };
    let mut stored = TierCells::new(&coarse_segs, replay.memtable.rows(coarse))
        .filter(|r| r.as_ref().map_or(true, |r| keep(r.bucket)));
    let mut a = rolled.next().transpose()?;
    let mut b = stored.next().transpose()?;
    let mut checked = 0u64;
    let mut mismatches = 0usize;
    loop {
        let (key_a, key_b) = (
            a.map(|r| (r.series, r.bucket)),
            b.map(|r| (r.series, r.bucket)),
        );
        let (series, bucket, from_fine, in_coarse) = match (key_a, key_b) {
            (None, None) => break,
            (Some(ka), kb) if kb.is_none_or(|kb| ka < kb) => {
                let r = a.take();
                a = rolled.next().transpose()?;
                (ka.0, ka.1, r.map(|r| r.cell), None)
            }
            (ka, Some(kb)) if ka.is_none_or(|ka| kb < ka) => {
                let r = b.take();
                b = stored.next().transpose()?;
                (kb.0, kb.1, None, r.map(|r| r.cell))
            }
            (Some(ka), Some(_)) => {
                let (ra, rb) = (a.take(), b.take());
                a = rolled.next().transpose()?;
                b = stored.next().transpose()?;
                (ka.0, ka.1, ra.map(|r| r.cell), rb.map(|r| r.cell))
            }
            _ => break,
        };
        checked += 1;
        if from_fine == in_coarse {
            continue;
        }
        mismatches += 1;
        if mismatches > MAX_ROLLUP_FINDINGS {
            continue;
        }
        let key = replay
            .dict
            .key(series)
            .map_or_else(|| format!("#{series}"), |k| k.as_str().to_string());
        let show = |c: Option<Cell>| match c {
            Some(c) => format!(
                "sum {} count {} min {} max {}",
                c.sum, c.count, c.min, c.max
            ),
            None => "nothing".into(),
        };
        // Name the segment(s) holding the coarse cell.
        let mut files = Vec::new();
        let mut cache = segment::BlockScratch::default();
        for s in &coarse_segs {
            let mut hit = false;
            s.scan_series(series, bucket, bucket + 1, &mut cache, &mut |_, _| {
                hit = true
            })?;
            if hit {
                files.push(format!(
                    "{SEGMENTS_DIR}/{}",
                    segment::file_name(s.meta().id)
                ));
            }
        }
        let file = if files.is_empty() {
            format!("{coarse} tier")
        } else {
            files.join(", ")
        };
        c.damage(
            &file,
            None,
            format!(
                "{coarse} cell of {key} at {}: stored {}, but its {fine} cells add up to {}",
                format_utc(coarse.start_of(bucket)),
                show(in_coarse),
                show(from_fine)
            ),
        );
    }
    if mismatches > MAX_ROLLUP_FINDINGS {
        c.damage(
            &format!("{coarse} tier"),
            None,
            format!(
                "{} more {coarse} cells disagree with their {fine} cells",
                mismatches - MAX_ROLLUP_FINDINGS
            ),
        );
    }
    match coarse {
        Tier::Hour => c.report.hours_checked += checked,
        _ => c.report.days_checked += checked,
    }
    Ok(())
}
