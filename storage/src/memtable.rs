//! The memtable: cells of recent writes per series and tier, in memory until a
//! flush turns them into segment files.
//!
//! Series are indexed by their dense id. Each keeps the newest cell of every tier
//! inline, where live traffic lands, so an increment is an index plus three
//! compares in one cache line or two: no hashing and no allocation in the steady
//! state. Older buckets (late events, past minutes) live in sorted vectors.

use crate::cell::Cell;
use crate::segment::CellRow;
use crate::time::Tier;

/// Approximate bytes of one memtable cell, for the flush threshold and stats.
pub const CELL_BYTES: usize = std::mem::size_of::<(i64, Cell)>();

/// Bucket value marking an empty head slot (no real bucket is this small).
const EMPTY: i64 = i64::MIN;

/// One series' cells: the newest bucket of each tier inline (where live traffic
/// lands), older buckets in sorted vectors (late events and past buckets).
#[derive(Debug, Clone)]
struct SeriesCells {
    head: [(i64, Cell); 3],
    older: [Vec<(i64, Cell)>; 3],
}

impl Default for SeriesCells {
    fn default() -> Self {
        SeriesCells {
            head: [(EMPTY, Cell::of(0)); 3],
            older: Default::default(),
        }
    }
}

/// Cells of recent writes, mutable until frozen for a flush. Series are indexed
/// directly by their dense id.
#[derive(Debug, Default, Clone)]
pub struct Memtable {
    series: Vec<SeriesCells>,
    cells: usize,
    events: u64,
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
        if i >= self.series.len() {
            self.series.resize_with(i + 1, SeriesCells::default);
        }
        let s = &mut self.series[i];
        for tier in Tier::ALL {
            if coverage & tier.bit() == 0 {
                continue;
            }
            let bucket = tier.bucket_of(ts);
            let t = tier.index();
            let head = &mut s.head[t];
            if head.0 == bucket {
                head.1.add(delta);
            } else if head.0 == EMPTY {
                *head = (bucket, Cell::of(delta));
                self.cells += 1;
            } else if bucket > head.0 {
                s.older[t].push(*head);
                *head = (bucket, Cell::of(delta));
                self.cells += 1;
            } else {
                let older = &mut s.older[t];
                match older.binary_search_by_key(&bucket, |e| e.0) {
                    Ok(k) => older[k].1.add(delta),
                    Err(k) => {
                        older.insert(k, (bucket, Cell::of(delta)));
                        self.cells += 1;
                    }
                }
            }
        }
        self.events += 1;
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
        self.cells * CELL_BYTES + self.series.len() * std::mem::size_of::<SeriesCells>()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    /// Calls `f` for each cell of `series` in `tier` with bucket in `from..to`.
    #[inline]
    pub fn scan(&self, series: u32, tier: Tier, from: i64, to: i64, f: &mut dyn FnMut(i64, &Cell)) {
        let Some(s) = self.series.get(series as usize) else {
            return;
        };
        let t = tier.index();
        let older = &s.older[t];
        // A range starting at or before the oldest cell (the common case: recent
        // data) needs no binary search, whose probes miss the cache on every
        // series of a many-series scan; the walk below is prefetch-friendly.
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
        let (b, c) = &s.head[t];
        if *b != EMPTY && *b >= from && *b < to {
            f(*b, c);
        }
    }

    /// Every cell of `tier`, sorted by series then bucket, for a flush.
    pub fn rows(&self, tier: Tier) -> Vec<CellRow> {
        let t = tier.index();
        let mut rows = Vec::new();
        for (id, s) in self.series.iter().enumerate() {
            let head = (s.head[t].0 != EMPTY).then_some(&s.head[t]);
            rows.extend(s.older[t].iter().chain(head).map(|(b, c)| CellRow {
                series: id as u32,
                bucket: *b,
                cell: *c,
            }));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{HOUR_MS, MINUTE_MS};

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
}
