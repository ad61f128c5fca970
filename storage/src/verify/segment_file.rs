//! Checking one segment file completely: header, footer, index, every block,
//! key order, the footer's summary and the manifest's entry for it.

use std::sync::Arc;

use super::Checker;
use crate::error::{Error, Result};
use crate::segment::{CellRow, Segment, SegmentMeta, FOOTER_LEN};

/// Checks one segment completely; `Some` if it is intact.
pub(super) fn check_segment(
    c: &mut Checker<'_>,
    rel: &str,
    expected: Option<&SegmentMeta>,
) -> Result<Option<Arc<Segment>>> {
    let path = c.dir.join(rel);
    let seg = match c.fs.map(&path) {
        Ok(map) => {
            let n = (*map).as_ref().len() as u64;
            c.count_bytes(n, "segments");
            Segment::from_bytes(&path, map).map(Arc::new)
        }
        Err(e) => return Err(Error::io("read segment", path, e)),
    };
    c.report.segments += 1;
    let seg = match seg {
        Ok(s) => s,
        Err(e) => {
            c.error(rel, e);
            return Ok(None);
        }
    };
    let meta = *seg.meta();
    let footer_at = meta.bytes - FOOTER_LEN as u64;
    let mut ok = true;
    if let Some(exp) = expected {
        if exp.bytes != meta.bytes {
            c.damage(
                rel,
                None,
                format!(
                    "file is {} bytes, the manifest says {}",
                    meta.bytes, exp.bytes
                ),
            );
            ok = false;
        } else if *exp != meta {
            c.damage(
                rel,
                Some(footer_at),
                format!("segment summary {meta:?} disagrees with the manifest {exp:?}"),
            );
            ok = false;
        }
    }
    let mut rows: Vec<CellRow> = Vec::new();
    let mut prev: Option<(u32, i64)> = None;
    let mut series = 0u32;
    let (mut min_b, mut max_b, mut cells) = (i64::MAX, i64::MIN, 0u64);
    let mut all_read = true;
    for (i, b) in seg.blocks().iter().enumerate() {
        c.report.blocks += 1;
        if let Err(e) = seg.read_block(i, &mut rows) {
            c.error(rel, e);
            ok = false;
            all_read = false;
            prev = None;
            continue;
        }
        let mut bad: Option<String> = None;
        let mut block_max = i64::MIN;
        for r in &rows {
            let key = (r.series, r.bucket);
            if prev.is_some_and(|p| key <= p) {
                bad.get_or_insert(format!(
                    "cell {key:?} is not after {prev:?}: keys out of order"
                ));
            }
            if prev.is_none_or(|p| p.0 != r.series) {
                series += 1;
            }
            prev = Some(key);
            if r.cell.count == 0 || r.cell.min > r.cell.max {
                bad.get_or_insert(format!(
                    "impossible cell for series {} bucket {}: {:?}",
                    r.series, r.bucket, r.cell
                ));
            }
            block_max = block_max.max(r.bucket);
            min_b = min_b.min(r.bucket);
            max_b = max_b.max(r.bucket);
        }
        cells += rows.len() as u64;
        if block_max != b.max_bucket {
            bad.get_or_insert(format!(
                "largest bucket {block_max} differs from the index ({})",
                b.max_bucket
            ));
        }
        if let Some(why) = bad {
            c.damage(rel, Some(b.offset), why);
            ok = false;
        }
    }
    c.report.cells += cells;
    if all_read {
        let (min_b, max_b) = if cells == 0 { (0, 0) } else { (min_b, max_b) };
        if series != seg.series_count()
            || cells != meta.cells
            || min_b != meta.min_bucket
            || max_b != meta.max_bucket
        {
            c.damage(
                rel,
                Some(footer_at),
                format!(
                    "footer says {} cells of {} series in buckets {}..={}, the blocks hold {cells} cells of {series} series in {min_b}..={max_b}",
                    meta.cells,
                    seg.series_count(),
                    meta.min_bucket,
                    meta.max_bucket
                ),
            );
            ok = false;
        }
    }
    Ok(ok.then_some(seg))
}
