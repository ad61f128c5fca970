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
//! Older buckets (past minutes, late events) of a series live in a sorted vector
//! in a sparse per-tier map, so series without them pay nothing for it.

use rustc_hash::FxHashMap;

use crate::cell::Cell;
use crate::segment::CellRow;
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
    /// Heads that do not fit a compact word.
    full: Vec<(i64, Cell)>,
    /// Free slots of `full`.
    free: Vec<u32>,
    /// Per tier, the buckets older than the head of each series that has any,
    /// ascending.
    older: [FxHashMap<u32, Vec<(i64, Cell)>>; 3],
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
            self.release(w);
            self.older[t]
                .entry(i as u32)
                .or_default()
                .push((head_bucket, head));
            self.older_cells += 1;
            self.heads[i][t] = self.encode(t, bucket, Cell::of(delta));
            self.cells += 1;
        } else {
            let older = self.older[t].entry(i as u32).or_default();
            match older.binary_search_by_key(&bucket, |e| e.0) {
                Ok(k) => older[k].1.add(delta),
                Err(k) => {
                    older.insert(k, (bucket, Cell::of(delta)));
                    self.older_cells += 1;
                    self.cells += 1;
                }
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
        let slot = match self.free.pop() {
            Some(s) => {
                self.full[s as usize] = (bucket, cell);
                s
            }
            None => {
                self.full.push((bucket, cell));
                (self.full.len() - 1) as u32
            }
        };
        SPILLED | slot
    }

    /// Frees the slab slot of a spilled head word.
    fn release(&mut self, w: u32) {
        if w & SPILLED != 0 {
            self.free.push(w & !SPILLED);
        }
    }

    /// The bucket and cell of a non-empty head word of tier `t`.
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
            + self.free.capacity() * 4
            + self.older_cells * CELL_BYTES
            + older_series * (4 + std::mem::size_of::<Vec<(i64, Cell)>>() + 1)
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    /// Calls `f` for each cell of `series` in `tier` with bucket in `from..to`.
    #[inline]
    pub fn scan(&self, series: u32, tier: Tier, from: i64, to: i64, f: &mut dyn FnMut(i64, &Cell)) {
        let Some(heads) = self.heads.get(series as usize) else {
            return;
        };
        let t = tier.index();
        if let Some(older) = self.older[t].get(&series) {
            // A range starting at or before the oldest cell (the common case:
            // recent data) needs no binary search.
            let start = match older.first() {
                Some((b, _)) if *b < from => older.partition_point(|(b, _)| *b < from),
                _ => 0,
            };
            for (b, c) in &older[start..] {
                if *b >= to {
                    return;
                }
                f(*b, c);
            }
        }
        if heads[t] != 0 {
            let (b, c) = self.decode(t, heads[t]);
            if b >= from && b < to {
                f(b, &c);
            }
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
                rows.extend(older.iter().map(|(b, c)| CellRow {
                    series,
                    bucket: *b,
                    cell: *c,
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
        // A new minute frees the slab slot and starts compact again.
        m.add(3, t + MINUTE_MS, 1, Tier::Minute.bit());
        assert_eq!(m.free.len(), 1);
        assert_eq!(m.cells(), 31);
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
