//! The memtable: cells of recent writes per series and tier, in memory until a
//! flush turns them into segment files.
//!
//! Each series keeps one bucket-sorted vector per tier. Live traffic lands in the
//! newest bucket, so an increment is a hash lookup plus a compare with the last
//! element of three small vectors: no allocation in the steady state.

use rustc_hash::FxHashMap;

use crate::cell::Cell;
use crate::segment::CellRow;
use crate::time::Tier;

/// Approximate bytes of one memtable cell, for the flush threshold and stats.
pub const CELL_BYTES: usize = std::mem::size_of::<(i64, Cell)>() + 8;

#[derive(Debug, Default, Clone)]
struct SeriesCells {
    tiers: [Vec<(i64, Cell)>; 3],
}

/// Cells of recent writes, mutable until frozen for a flush.
#[derive(Debug, Default, Clone)]
pub struct Memtable {
    series: FxHashMap<u32, SeriesCells>,
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
        let entry = self.series.entry(series).or_default();
        for tier in Tier::ALL {
            if coverage & tier.bit() == 0 {
                continue;
            }
            let bucket = tier.bucket_of(ts);
            let cells = &mut entry.tiers[tier.index()];
            match cells.last_mut() {
                Some((b, c)) if *b == bucket => c.add(delta),
                Some((b, _)) if *b > bucket => match cells.binary_search_by_key(&bucket, |e| e.0) {
                    Ok(i) => cells[i].1.add(delta),
                    Err(i) => {
                        cells.insert(i, (bucket, Cell::of(delta)));
                        self.cells += 1;
                    }
                },
                _ => {
                    cells.push((bucket, Cell::of(delta)));
                    self.cells += 1;
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
        self.cells * CELL_BYTES + self.series.len() * std::mem::size_of::<(u32, SeriesCells)>()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    /// Calls `f` for each cell of `series` in `tier` with bucket in `from..to`.
    #[inline]
    pub fn scan(&self, series: u32, tier: Tier, from: i64, to: i64, f: &mut dyn FnMut(i64, &Cell)) {
        let Some(s) = self.series.get(&series) else {
            return;
        };
        let cells = &s.tiers[tier.index()];
        let start = cells.partition_point(|(b, _)| *b < from);
        for (b, c) in &cells[start..] {
            if *b >= to {
                break;
            }
            f(*b, c);
        }
    }

    /// Every cell of `tier`, sorted by series then bucket, for a flush.
    pub fn rows(&self, tier: Tier) -> Vec<CellRow> {
        let mut ids: Vec<u32> = self.series.keys().copied().collect();
        ids.sort_unstable();
        let mut rows = Vec::new();
        for id in ids {
            if let Some(s) = self.series.get(&id) {
                rows.extend(s.tiers[tier.index()].iter().map(|(b, c)| CellRow {
                    series: id,
                    bucket: *b,
                    cell: *c,
                }));
            }
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
