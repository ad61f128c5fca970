//! Compaction: choosing what to merge (a pure function of the live segments) and
//! the k-way merge that sums equal cells and drops cells past retention.
//!
//! Every event was counted once into each tier that covers it, so merging by
//! summing keeps every tier exact whatever the order of flushes and merges; an
//! hour cell stays the sum of its minutes and a day cell the sum of its hours.
//!
//! [`worker`] carries the chosen tasks out against the live engine.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::error::Result;
use crate::segment::{CellRow, Segment, SegmentIter, SegmentMeta};
use crate::time::{Retention, Tier, DAY_MS};

pub mod worker;

/// Tuning of the compaction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOptions {
    /// Merge once this many similar-sized segments of a tier exist.
    pub min_merge: usize,
    /// Merge the smallest segments regardless of size once a tier has this many.
    pub max_segments: usize,
    /// Most segments merged at once.
    pub max_merge: usize,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            min_merge: 4,
            max_segments: 12,
            max_merge: 16,
        }
    }
}

/// What to compact: segments of one tier merged into one, dropping buckets below
/// `keep_from_bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionTask {
    /// The tier.
    pub tier: Tier,
    /// Ids of the input segments.
    pub inputs: Vec<u64>,
    /// Oldest bucket kept.
    pub keep_from_bucket: i64,
    /// Blocks whose newest bucket is older than this are zstd-compressed.
    pub cold_before_bucket: i64,
}

/// Age after which minute and hour data is considered cold and recompressed with zstd.
pub fn cold_before(tier: Tier, now: i64) -> i64 {
    match tier {
        Tier::Minute => tier.bucket_of(now - DAY_MS),
        Tier::Hour => tier.bucket_of(now - 30 * DAY_MS),
        Tier::Day => i64::MAX,
    }
}

/// Chooses the next compaction, if any. Pure: decides from metadata alone.
///
/// Priority: a segment wholly past retention is dropped; a segment with at least
/// an eighth of its time span past retention is rewritten; then size-tiered
/// merging of the smallest segments of a tier.
pub fn choose(
    segments: &[SegmentMeta],
    retention: &Retention,
    opts: &CompactionOptions,
    now: i64,
) -> Option<CompactionTask> {
    for tier in Tier::ALL {
        let keep = retention.first_kept_bucket(tier, now);
        let task = |inputs: Vec<u64>| CompactionTask {
            tier,
            inputs,
            keep_from_bucket: keep,
            cold_before_bucket: cold_before(tier, now),
        };
        let mut of_tier: Vec<&SegmentMeta> = segments.iter().filter(|s| s.tier == tier).collect();
        if let Some(s) = of_tier.iter().find(|s| {
            let span = s.max_bucket - s.min_bucket + 1;
            s.min_bucket < keep && (s.max_bucket < keep || (keep - s.min_bucket) * 8 >= span)
        }) {
            return Some(task(vec![s.id]));
        }
        of_tier.sort_by_key(|s| (s.cells, s.id));
        // Grow a run of small segments while the next is not much larger than
        // everything gathered so far.
        let mut total = 0u64;
        let mut run = 0;
        for s in &of_tier {
            if run >= opts.min_merge && s.cells > total.saturating_mul(2) {
                break;
            }
            if run >= opts.max_merge {
                break;
            }
            total += s.cells;
            run += 1;
        }
        let enough_similar = run >= opts.min_merge
            && of_tier
                .get(run - 1)
                .is_some_and(|last| last.cells <= (total - last.cells).saturating_mul(2).max(1));
        if enough_similar || of_tier.len() >= opts.max_segments {
            let n = if enough_similar {
                run
            } else {
                opts.min_merge.max(2).min(of_tier.len())
            };
            return Some(task(of_tier[..n].iter().map(|s| s.id).collect()));
        }
    }
    None
}

/// Merges several segments' cells in key order, summing equal keys and dropping
/// buckets below `keep_from`.
///
/// The input that produced the last cell stays out of the heap while its next key
/// is still the smallest, so runs of one series' buckets skip the heap entirely.
pub struct MergeIter {
    iters: Vec<SegmentIter>,
    heap: BinaryHeap<Reverse<((u32, i64), usize)>>,
    heads: Vec<Option<CellRow>>,
    cur: Option<usize>,
    keep_from: i64,
    started: bool,
}

impl std::fmt::Debug for MergeIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergeIter")
            .field("inputs", &self.iters.len())
            .finish()
    }
}

fn key(r: &CellRow) -> (u32, i64) {
    (r.series, r.bucket)
}

impl MergeIter {
    /// A merge over `segments`.
    pub fn new(segments: &[Arc<Segment>], keep_from: i64) -> Self {
        MergeIter {
            iters: segments.iter().map(|s| s.iter()).collect(),
            heap: BinaryHeap::new(),
            heads: vec![None; segments.len()],
            cur: None,
            keep_from,
            started: false,
        }
    }

    /// Loads the next cell of input `i` into its head slot (not into the heap).
    fn advance(&mut self, i: usize) -> Result<()> {
        self.heads[i] = self.iters[i].next().transpose()?;
        Ok(())
    }

    fn min_key(&self) -> Option<(u32, i64)> {
        let cur = self.cur.and_then(|i| self.heads[i].as_ref()).map(key);
        let heap = self.heap.peek().map(|Reverse((k, _))| *k);
        match (cur, heap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_min(&mut self) -> Result<Option<CellRow>> {
        let cur = self.cur.and_then(|i| self.heads[i].map(|r| (i, r)));
        let heap = self.heap.peek().map(|Reverse((k, _))| *k);
        let i = match (cur, heap) {
            (Some((i, r)), h) if h.is_none_or(|h| key(&r) <= h) => i,
            (_, Some(_)) => {
                let Some(Reverse((_, j))) = self.heap.pop() else {
                    return Ok(None);
                };
                if let Some((i, r)) = cur {
                    self.heap.push(Reverse((key(&r), i)));
                }
                self.cur = Some(j);
                j
            }
            _ => return Ok(None),
        };
        let row = self.heads[i];
        self.advance(i)?;
        Ok(row)
    }

    fn next_row(&mut self) -> Result<Option<CellRow>> {
        if !self.started {
            self.started = true;
            for i in 0..self.iters.len() {
                self.advance(i)?;
                if let Some(r) = self.heads[i] {
                    self.heap.push(Reverse((key(&r), i)));
                }
            }
        }
        loop {
            let Some(mut row) = self.take_min()? else {
                return Ok(None);
            };
            while self.min_key() == Some(key(&row)) {
                if let Some(other) = self.take_min()? {
                    row.cell.merge(&other.cell);
                }
            }
            if row.bucket >= self.keep_from {
                return Ok(Some(row));
            }
        }
    }
}

impl Iterator for MergeIter {
    type Item = Result<CellRow>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Cell;
    use crate::segment::SegmentWriter;
    use crate::testing::FaultFs;
    use crate::time::MINUTE_MS;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn segment_of(fs: &FaultFs, id: u64, cells: &BTreeMap<(u32, i64), i64>) -> Arc<Segment> {
        let path = format!("{id}.seg");
        let mut w =
            SegmentWriter::create(fs, Path::new(&path), id, Tier::Minute, 0).expect("create");
        for ((series, bucket), d) in cells {
            w.push(CellRow {
                series: *series,
                bucket: *bucket,
                cell: Cell::of(*d),
            })
            .expect("push");
        }
        w.finish().expect("finish");
        Segment::open(fs, Path::new(&path)).expect("open")
    }

    proptest! {
        #[test]
        fn merge_sums_equal_keys_like_a_map(
            inputs in prop::collection::vec(
                prop::collection::btree_map((0u32..20, 0i64..50), -5i64..5, 0..200), 1..6),
            keep_from in 0i64..10,
        ) {
            let fs = FaultFs::new();
            let segs: Vec<Arc<Segment>> = inputs.iter().enumerate().map(|(i, m)| segment_of(&fs, i as u64 + 1, m)).collect();
            let mut model: BTreeMap<(u32, i64), Cell> = BTreeMap::new();
            for m in &inputs {
                for (k, d) in m {
                    if k.1 >= keep_from {
                        model.entry(*k).and_modify(|c| c.merge(&Cell::of(*d))).or_insert(Cell::of(*d));
                    }
                }
            }
            let merged: Vec<((u32, i64), Cell)> = MergeIter::new(&segs, keep_from)
                .map(|r| r.map(|r| ((r.series, r.bucket), r.cell)))
                .collect::<Result<_>>()
                .expect("merge");
            let expected: Vec<((u32, i64), Cell)> = model.into_iter().collect();
            prop_assert_eq!(merged, expected);
        }
    }

    fn meta(id: u64, tier: Tier, cells: u64, min: i64, max: i64) -> SegmentMeta {
        SegmentMeta {
            id,
            tier,
            cells,
            min_bucket: min,
            max_bucket: max,
            bytes: cells * 2,
        }
    }

    #[test]
    fn nothing_to_do_for_few_segments() {
        let r = Retention::default();
        let now = 10 * DAY_MS;
        let m = Tier::Minute.bucket_of(now);
        let segs = vec![
            meta(1, Tier::Minute, 100, m - 10, m),
            meta(2, Tier::Minute, 100, m - 5, m),
        ];
        assert_eq!(choose(&segs, &r, &CompactionOptions::default(), now), None);
    }

    #[test]
    fn similar_segments_merge_and_a_giant_waits() {
        let r = Retention::default();
        let now = 10 * DAY_MS;
        let m = Tier::Minute.bucket_of(now);
        let mut segs = vec![meta(1, Tier::Minute, 1_000_000, m - 100, m)];
        for id in 2..6 {
            segs.push(meta(id, Tier::Minute, 100, m - 5, m));
        }
        let t = choose(&segs, &r, &CompactionOptions::default(), now).expect("a task");
        assert_eq!(t.inputs, vec![2, 3, 4, 5]);
        assert_eq!(t.tier, Tier::Minute);
    }

    #[test]
    fn expired_segments_are_rewritten_or_dropped() {
        let r = Retention::default();
        let now = 10 * DAY_MS;
        let keep = Tier::Minute.bucket_of(now - 7 * DAY_MS);
        let old = meta(1, Tier::Minute, 10, keep - 100, keep - 1);
        let t = choose(&[old], &r, &CompactionOptions::default(), now).expect("a task");
        assert_eq!(t.keep_from_bucket, keep);
        let barely = meta(
            2,
            Tier::Minute,
            10,
            keep - 1,
            keep + 10 * DAY_MS / MINUTE_MS,
        );
        assert_eq!(
            choose(&[barely], &r, &CompactionOptions::default(), now),
            None
        );
    }
}
