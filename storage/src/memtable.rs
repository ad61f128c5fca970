//! The memtable: cells of recent writes per series and tier, in memory until a
//! flush turns them into segment files.
//!
//! Series are indexed by their dense id. Each keeps the newest cell of every tier
//! (its *head*, where live traffic lands) in one 4-byte word, so an active series
//! costs 12 bytes and an increment is an index, a compare and an add: no hashing
//! and no allocation in the steady state.
//!
//! A head word is one of:
//! - `0`: no cell yet;
//! - *compact* (bit 31 clear): a cell of unit increments only, so
//!   `sum = count` and `min = max = 1`; the word holds the count (bits 0..16, 1
//!   to 65,535) and the bucket as an offset from a per-tier base (bits 16..31,
//!   the base at offset 2^14). Unit increments are the common case;
//! - *spilled* (bit 31 set): bits 0..31 index a full `(bucket, Cell)` in a side
//!   slab, for the cells that do not fit the compact form (other deltas, more
//!   than 65,535 events, buckets more than 2^14 buckets from the base).
//!
//! Older buckets (past minutes, late events) of a series are words of the same
//! form, ascending by bucket, in a vector in a sparse per-tier map: series
//! without them pay nothing for it, and a past minute of unit increments costs
//! 4 bytes. When a new bucket starts, the head word moves to the older words as
//! it is (a spilled one keeps its slab slot), so slab slots are never freed
//! until the memtable is dropped.

use rustc_hash::FxHashMap;

use crate::cell::{Cell, CellRow, SeriesSums};
use crate::time::Tier;

/// Approximate bytes of one full memtable cell (bucket and cell), for the flush
/// threshold and stats.
pub const CELL_BYTES: usize = std::mem::size_of::<(i64, Cell)>();

/// Bytes of the head words of one series.
const HEAD_BYTES: usize = std::mem::size_of::<[u32; 3]>();

/// Bits of the count in a compact word.
const COUNT_BITS: u32 = 16;
/// Mask of the count in a compact word; also the largest compact count.
const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
/// Bits of the bucket offset in a compact word.
const OFFSET_BITS: u32 = 15;
/// Offset of the per-tier base bucket, so buckets before it stay compact too.
/// Offset 0 is never used: a compact word's offset (`word >> COUNT_BITS`) is
/// then never 0, which it is for an empty word.
const BIAS: i64 = 1 << (OFFSET_BITS - 1);
/// Set in spilled words.
const SPILLED: u32 = 1 << 31;
/// Series ids added at least when the head array grows.
const MIN_GROWTH: usize = 1024;

/// Cells of recent writes, mutable until frozen for a flush. Series are indexed
/// directly by their dense id.
#[derive(Debug, Default, Clone)]
pub struct Memtable {
    /// Head words of each series: minute, hour, day.
    heads: Vec<[u32; 3]>,
    /// Per tier, the bucket at compact offset [`BIAS`]: the first bucket seen.
    base: [Option<i64>; 3],
    /// Cells (heads and older ones) that do not fit a compact word.
    full: Vec<(i64, Cell)>,
    /// Per tier, the words of the buckets older than the head of each series
    /// that has any, ascending by bucket.
    older: [FxHashMap<u32, Vec<u32>>; 3],
    older_cells: usize,
    cells: usize,
    events: u64,
}

/// The compact offset (`word >> COUNT_BITS`) of `bucket`, if it has one.
#[inline]
fn compact_offset(base: i64, bucket: i64) -> Option<u32> {
    let offset = bucket.checked_sub(base)?.checked_add(BIAS)?;
    if offset <= 0 || offset >= 1 << OFFSET_BITS {
        return None;
    }
    Some(offset as u32)
}

/// The smallest compact offset whose bucket is at or after `bucket`, clamped to
/// the offsets a compact word can hold (`1..2^15`).
fn offset_at_or_after(base: i64, bucket: i64) -> u32 {
    let offset =
        (i128::from(bucket) - i128::from(base) + i128::from(BIAS)).clamp(1, 1 << OFFSET_BITS);
    offset as u32
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event of `series` at `ts` into every tier in `coverage`
    /// (a bitmask of [`Tier::bit`]).
    #[inline]
    pub fn add(&mut self, series: u32, ts: i64, delta: i64, coverage: u8) {
        let i = series as usize;
        if i >= self.heads.len() {
            self.grow(i + 1);
        }
        for tier in Tier::ALL {
            if coverage & tier.bit() == 0 {
                continue;
            }
            let bucket = tier.bucket_of(ts);
            let t = tier.index();
            if let (1, Some(base)) = (delta, self.base[t]) {
                if let Some(offset) = compact_offset(base, bucket) {
                    let w = &mut self.heads[i][t];
                    if *w >> COUNT_BITS == offset && *w & COUNT_MASK != COUNT_MASK {
                        *w += 1;
                        continue;
                    }
                }
            }
            self.add_slow(i, t, bucket, delta);
        }
        self.events += 1;
    }

    /// Makes room for series ids below `len`, growing by an eighth at a time so
    /// the slack stays small for large series counts.
    #[cold]
    fn grow(&mut self, len: usize) {
        // Amortized O(1) still: each growth copies at most nine times the
        // entries added since the last one.
        let more = len - self.heads.len();
        if len > self.heads.capacity() {
            let want = more.max(self.heads.len() / 8).max(MIN_GROWTH);
            self.heads.reserve_exact(want);
        }
        self.heads.resize(len, [0; 3]);
    }

    /// Every case but "unit increment into the same bucket of a compact head".
    #[inline(never)]
    fn add_slow(&mut self, i: usize, t: usize, bucket: i64, delta: i64) {
        let w = self.heads[i][t];
        if w == 0 {
            self.heads[i][t] = self.encode(t, bucket, Cell::of(delta));
            self.cells += 1;
            return;
        }
        if w & SPILLED != 0 {
            let slot = (w & !SPILLED) as usize;
            let (b, c) = &mut self.full[slot];
            if *b == bucket {
                c.add(delta);
                return;
            }
        }
        let (head_bucket, mut head) = self.decode(t, w);
        if head_bucket == bucket {
            // A compact head that must grow out of its form.
            head.add(delta);
            self.heads[i][t] = self.encode(t, bucket, head);
        } else if bucket > head_bucket {
            self.older[t].entry(i as u32).or_default().push(w);
            self.older_cells += 1;
            self.heads[i][t] = self.encode(t, bucket, Cell::of(delta));
            self.cells += 1;
        } else {
            self.add_older(i as u32, t, bucket, delta);
        }
    }

    /// Counts a late event into an older bucket of series `id`.
    fn add_older(&mut self, id: u32, t: usize, bucket: i64, delta: i64) {
        let found = match self.older[t].get(&id) {
            Some(words) => words.binary_search_by_key(&bucket, |w| self.decode(t, *w).0),
            None => Err(0),
        };
        match found {
            Ok(k) => {
                let Some(w) = self.older[t].get(&id).and_then(|v| v.get(k)).copied() else {
                    return;
                };
                if w & SPILLED != 0 {
                    if let Some((_, c)) = self.full.get_mut((w & !SPILLED) as usize) {
                        c.add(delta);
                    }
                    return;
                }
                let (b, mut c) = self.decode(t, w);
                c.add(delta);
                let w = self.encode(t, b, c);
                if let Some(slot) = self.older[t].get_mut(&id).and_then(|v| v.get_mut(k)) {
                    *slot = w;
                }
            }
            Err(k) => {
                let w = self.encode(t, bucket, Cell::of(delta));
                self.older[t].entry(id).or_default().insert(k, w);
                self.older_cells += 1;
                self.cells += 1;
            }
        }
    }

    /// The head word of `cell` in `bucket` of tier `t`: compact when it fits,
    /// else a new slot of the slab.
    fn encode(&mut self, t: usize, bucket: i64, cell: Cell) -> u32 {
        let base = *self.base[t].get_or_insert(bucket);
        if cell.min == 1
            && cell.max == 1
            && cell.count >= 1
            && cell.count <= u64::from(COUNT_MASK)
            && i64::try_from(cell.count) == Ok(cell.sum)
        {
            if let Some(offset) = compact_offset(base, bucket) {
                return (offset << COUNT_BITS) | cell.count as u32;
            }
        }
        self.full.push((bucket, cell));
        SPILLED | (self.full.len() - 1) as u32
    }

    /// The bucket and cell of a non-empty word of tier `t`.
    #[inline]
    fn decode(&self, t: usize, w: u32) -> (i64, Cell) {
        if w & SPILLED != 0 {
            return self.full[(w & !SPILLED) as usize];
        }
        let count = w & COUNT_MASK;
        let bucket = self.base[t].unwrap_or(0) + i64::from(w >> COUNT_BITS) - BIAS;
        let cell = Cell {
            sum: i64::from(count),
            count: u64::from(count),
            min: 1,
            max: 1,
        };
        (bucket, cell)
    }

    /// Cells held, over all tiers.
    pub fn cells(&self) -> usize {
        self.cells
    }

    /// Events counted since creation.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Approximate memory held.
    pub fn approx_bytes(&self) -> usize {
        let older_series: usize = self.older.iter().map(|m| m.capacity()).sum();
        self.heads.capacity() * HEAD_BYTES
            + self.full.capacity() * CELL_BYTES
            + self.older_cells * 4
            + older_series * (4 + std::mem::size_of::<Vec<u32>>() + 1)
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    /// Calls `f` for each cell of `series` in `tier` with bucket in `from..to`.
    #[inline]
    pub fn scan<F: FnMut(i64, &Cell) + ?Sized>(
        &self,
        series: u32,
        tier: Tier,
        from: i64,
        to: i64,
        f: &mut F,
    ) {
        let Some(heads) = self.heads.get(series as usize) else {
            return;
        };
        let t = tier.index();
        if let Some(older) = self.older[t].get(&series) {
            // A range starting at or before the oldest cell (the common case:
            // recent data) needs no binary search.
            let bucket = |w: &u32| self.decode(t, *w).0;
            let start = match older.first() {
                Some(w) if bucket(w) < from => older.partition_point(|w| bucket(w) < from),
                _ => 0,
            };
            for w in &older[start..] {
                let (b, c) = self.decode(t, *w);
                if b >= to {
                    return;
                }
                f(b, &c);
            }
        }
        if heads[t] != 0 {
            let (b, c) = self.decode(t, heads[t]);
            if b >= from && b < to {
                f(b, &c);
            }
        }
    }

    /// About the entries a [`sweep_sums`](Self::sweep_sums) visits whatever
    /// the selection: one head per series and one older-word vector per series
    /// that has one (of every tier, an upper bound).
    pub fn sweep_entries(&self) -> u64 {
        let older: usize = self.older.iter().map(|m| m.len()).sum();
        (self.heads.len() + older) as u64
    }

    /// Adds the sum and count of every selected series' cells of `tier` with
    /// bucket in `from..to` to `sums`: one pass over the map of older words,
    /// then one over the heads in series order, with no per-series lookup.
    /// Visits the same cells as [`scan`](Self::scan).
    pub fn sweep_sums<S: SeriesSums + ?Sized>(&self, tier: Tier, from: i64, to: i64, sums: &mut S) {
        if from >= to {
            return;
        }
        let t = tier.index();
        // Compact words whose offset lies in `lo..hi` are exactly the compact
        // cells with a bucket in `from..to`.
        let (lo, hi) = match self.base[t] {
            Some(base) => (offset_at_or_after(base, from), offset_at_or_after(base, to)),
            None => (0, 0),
        };
        let word_sum = |w: u32| -> (i64, u64) {
            if w & SPILLED == 0 {
                let offset = w >> COUNT_BITS;
                let n = if offset >= lo && offset < hi {
                    w & COUNT_MASK
                } else {
                    0
                };
                (i64::from(n), u64::from(n))
            } else {
                match self.full.get((w & !SPILLED) as usize) {
                    Some((b, c)) if *b >= from && *b < to => (c.sum, c.count),
                    _ => (0, 0),
                }
            }
        };
        // The older words by series id, gathered in one pass over the map
        // (looking each series up would miss the cache once per series), then
        // read in series order, the order their vectors were mostly allocated
        // in.
        let mut older: Vec<&[u32]> = Vec::new();
        if !self.older[t].is_empty() {
            older.resize(self.heads.len(), &[]);
            for (id, words) in &self.older[t] {
                if let Some(slot) = older.get_mut(*id as usize) {
                    *slot = words;
                }
            }
        }
        for (id, heads) in self.heads.iter().enumerate() {
            let w = heads[t];
            if w == 0 || !sums.selects(id as u32) {
                continue;
            }
            let (s, mut count) = word_sum(w);
            let mut sum = i128::from(s);
            for w in older.get(id).copied().unwrap_or(&[]) {
                let (s, n) = word_sum(*w);
                sum += i128::from(s);
                count = count.wrapping_add(n);
            }
            sums.add(id as u32, sum, count);
        }
    }

    /// Every cell of `tier`, sorted by series then bucket, for a flush.
    pub fn rows(&self, tier: Tier) -> Vec<CellRow> {
        let t = tier.index();
        let mut rows = Vec::new();
        for (id, heads) in self.heads.iter().enumerate() {
            if heads[t] == 0 {
                continue;
            }
            let series = id as u32;
            if let Some(older) = self.older[t].get(&series) {
                rows.extend(older.iter().map(|w| {
                    let (bucket, cell) = self.decode(t, *w);
                    CellRow {
                        series,
                        bucket,
                        cell,
                    }
                }));
            }
            let (bucket, cell) = self.decode(t, heads[t]);
            rows.push(CellRow {
                series,
                bucket,
                cell,
            });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::sweep::Sums;
    use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

    #[test]
    fn late_events_insert_in_order_and_tiers_roll_up() {
        let mut m = Memtable::new();
        let all = 0b111;
        m.add(7, 10 * MINUTE_MS, 2, all);
        m.add(7, 12 * MINUTE_MS, 3, all);
        m.add(7, 11 * MINUTE_MS, 5, all);
        m.add(7, 11 * MINUTE_MS + 1, -1, all);
        m.add(7, 2 * HOUR_MS, 4, Tier::Hour.bit() | Tier::Day.bit());
        let minutes = m.rows(Tier::Minute);
        let buckets: Vec<i64> = minutes.iter().map(|r| r.bucket).collect();
        assert_eq!(buckets, vec![10, 11, 12]);
        assert_eq!(
            minutes[1].cell,
            Cell {
                sum: 4,
                count: 2,
                min: -1,
                max: 5
            }
        );
        let hours = m.rows(Tier::Hour);
        assert_eq!(hours.len(), 2);
        assert_eq!(hours[0].cell.sum, 9);
        assert_eq!(hours[1].cell.sum, 4);
        assert_eq!(
            m.rows(Tier::Day)[0].cell,
            Cell {
                sum: 13,
                count: 5,
                min: -1,
                max: 5
            }
        );
        let mut seen = Vec::new();
        m.scan(7, Tier::Minute, 11, 13, &mut |b, c| seen.push((b, c.sum)));
        assert_eq!(seen, vec![(11, 4), (12, 3)]);
    }

    #[test]
    fn unit_increments_stay_compact_and_mixed_ones_spill() {
        let mut m = Memtable::new();
        let t = 1_700_000_000_000;
        for s in 0..10 {
            for _ in 0..5 {
                m.add(s, t, 1, 0b111);
            }
        }
        assert!(m.full.is_empty(), "unit increments need no full cell");
        assert_eq!(m.cells(), 30);
        assert_eq!(
            m.rows(Tier::Minute)[3].cell,
            Cell {
                sum: 5,
                count: 5,
                min: 1,
                max: 1
            }
        );
        m.add(3, t, -7, 0b111);
        assert_eq!(m.full.len(), 3, "one full cell per tier of series 3");
        assert_eq!(
            m.rows(Tier::Day)[3].cell,
            Cell {
                sum: -2,
                count: 6,
                min: -7,
                max: 1
            }
        );
        // A new minute moves the spilled head, slot and all, to the older
        // words and starts compact again.
        m.add(3, t + MINUTE_MS, 1, Tier::Minute.bit());
        assert_eq!(m.full.len(), 3);
        assert_eq!(m.cells(), 31);
        let minutes: Vec<(i64, i64)> = m
            .rows(Tier::Minute)
            .iter()
            .filter(|r| r.series == 3)
            .map(|r| (r.bucket, r.cell.sum))
            .collect();
        let b = Tier::Minute.bucket_of(t);
        assert_eq!(minutes, vec![(b, -2), (b + 1, 1)]);
        // Older unit cells stay compact, and a late non-unit event spills one.
        for s in 0..10 {
            m.add(s, t + MINUTE_MS, 1, Tier::Minute.bit());
        }
        m.add(5, t, 1, Tier::Minute.bit());
        assert_eq!(m.full.len(), 3);
        m.add(6, t, 2, Tier::Minute.bit());
        assert_eq!(m.full.len(), 4);
        let mut got = Vec::new();
        for s in [5, 6] {
            m.scan(s, Tier::Minute, b, b + 1, &mut |_, c| got.push(*c));
        }
        assert_eq!(
            got,
            vec![
                Cell {
                    sum: 6,
                    count: 6,
                    min: 1,
                    max: 1
                },
                Cell {
                    sum: 7,
                    count: 6,
                    min: 1,
                    max: 2
                }
            ]
        );
    }

    #[test]
    fn counts_past_the_compact_limit_stay_exact() {
        let mut m = Memtable::new();
        m.add(0, 0, 1, Tier::Day.bit());
        // Bring the compact count to its limit without 2^27 calls.
        m.heads[0][Tier::Day.index()] |= COUNT_MASK;
        m.add(0, 0, 1, Tier::Day.bit());
        m.add(0, 1, 1, Tier::Day.bit());
        let want = u64::from(COUNT_MASK) + 2;
        assert_eq!(
            m.rows(Tier::Day)[0].cell,
            Cell {
                sum: want as i64,
                count: want,
                min: 1,
                max: 1
            }
        );
    }

    /// One added event: series, timestamp, delta, coverage.
    fn event() -> impl Strategy<Value = (u32, i64, i64, u8)> {
        let ts = prop_oneof![
            // Around one instant: same buckets, new minutes, late events.
            (-3 * HOUR_MS..3 * HOUR_MS).prop_map(|d| 1_700_000_000_000 + d),
            // Far apart: beyond the compact offset range, negative times.
            (-4_000 * DAY_MS..4_000 * DAY_MS),
            Just(i64::MIN),
            Just(i64::MAX),
        ];
        let delta = prop_oneof![
            6 => Just(1i64),
            2 => -3i64..4,
            1 => Just(i64::MAX),
            1 => Just(i64::MIN),
            1 => any::<i64>(),
        ];
        (0u32..6, ts, delta, 1u8..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The memtable equals a plain ordered map of cells after any sequence
        /// of adds, in rows, scans and counters.
        #[test]
        fn equals_a_plain_model(events in prop::collection::vec(event(), 0..300)) {
            let mut m = Memtable::new();
            let mut model: BTreeMap<(usize, u32, i64), Cell> = BTreeMap::new();
            for &(s, ts, delta, coverage) in &events {
                m.add(s, ts, delta, coverage);
                for tier in Tier::ALL {
                    if coverage & tier.bit() != 0 {
                        model
                            .entry((tier.index(), s, tier.bucket_of(ts)))
                            .and_modify(|c| c.add(delta))
                            .or_insert(Cell::of(delta));
                    }
                }
            }
            prop_assert_eq!(m.cells(), model.len());
            prop_assert_eq!(m.events(), events.len() as u64);
            prop_assert_eq!(m.is_empty(), model.is_empty());
            for tier in Tier::ALL {
                let want: Vec<CellRow> = model
                    .iter()
                    .filter(|((t, _, _), _)| *t == tier.index())
                    .map(|(&(_, series, bucket), &cell)| CellRow { series, bucket, cell })
                    .collect();
                prop_assert_eq!(m.rows(tier), want.clone());
                // Every series over everything, and windows of two buckets
                // starting at each stored bucket.
                let windows = std::iter::once((i64::MIN, i64::MAX))
                    .chain(want.iter().map(|r| (r.bucket, r.bucket.saturating_add(2))));
                for (from, to) in windows {
                    // A sweep over series 0..7 sums what the scans visit.
                    let mut sums = Sums::new((0..7).collect());
                    sums.prepare_sweep();
                    m.sweep_sums(tier, from, to, &mut sums);
                    for s in 0..7u32 {
                        let want = want
                            .iter()
                            .filter(|r| r.series == s && r.bucket >= from && r.bucket < to)
                            .fold((0i128, 0u128), |a, r| {
                                (a.0 + i128::from(r.cell.sum), a.1 + u128::from(r.cell.count))
                            });
                        prop_assert_eq!(sums.sums()[s as usize], want);
                    }
                    for s in 0..7u32 {
                        let mut got = Vec::new();
                        m.scan(s, tier, from, to, &mut |b, c| got.push((b, *c)));
                        let want_s: Vec<(i64, Cell)> = want
                            .iter()
                            .filter(|r| r.series == s && r.bucket >= from && r.bucket < to)
                            .map(|r| (r.bucket, r.cell))
                            .collect();
                        prop_assert_eq!(got, want_s);
                    }
                }
            }
        }
    }
}
