//! The overflow ledger: per series and UTC day, an upper bound on the positive
//! and negative mass (sum of positive deltas, sum of magnitudes of negative
//! deltas) counted into that day, so that the write path can refuse a batch that
//! could make any cell overflow — before anything of it is logged.
//!
//! Why a day is enough: every minute and hour cell lies inside one UTC day, so
//! any cell of any tier, in any store (memtable, frozen memtable, segment) and
//! any partial merge of them (flush, compaction, query) sums a subset of that
//! day's events, which lies in `[-neg, pos]`. Keeping `pos <= i64::MAX` and
//! `neg <= 2^63` for every day therefore means no cell sum can leave `i64` in
//! any order of merging. Counts are bounded the same way by the day's event
//! count in `u64`.
//!
//! The bound is exact for series whose deltas of a day share a sign (the common
//! case: counters); a day with mixed signs is bounded by `count × max|delta|`
//! once it is recomputed from stored cells (after a restart, or after the cache
//! dropped it), which may refuse a batch whose true cell sums would fit, never
//! the reverse.
//!
//! The ledger is a cache over the stores, never persisted: a day not in it is
//! recomputed from the day cells of the memtables and segments. The write lock
//! guards it; each series keeps its most recent day in a dense slot (an index
//! and a compare on the hot path), other days in a map that is dropped whole
//! when it grows past a limit.

use rustc_hash::FxHashMap;

use crate::cell::Cell;
use crate::error::{Error, Result};
use crate::time::Tier;

/// Largest positive mass of a day: `i64::MAX`.
const MAX_POS: u64 = i64::MAX as u64;
/// Largest negative mass of a day: `|i64::MIN|`.
const MAX_NEG: u64 = 1 << 63;
/// Days kept besides each series' most recent one before the map is dropped.
const MAX_OTHER_DAYS: usize = 1 << 16;

/// Bound on what one day of one series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DayMass {
    /// Sum of positive deltas (upper bound).
    pub(crate) pos: u64,
    /// Sum of the magnitudes of negative deltas (upper bound).
    pub(crate) neg: u64,
    /// Events.
    pub(crate) count: u64,
}

impl DayMass {
    /// The bound implied by one stored day cell.
    pub(crate) fn of_cell(c: &Cell) -> DayMass {
        let mag = |v: i64| v.unsigned_abs();
        let (pos, neg) = if c.min >= 0 {
            (mag(c.sum), 0)
        } else if c.max <= 0 {
            (0, mag(c.sum))
        } else {
            let n = u128::from(c.count);
            let cap = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
            (
                cap(n * u128::from(mag(c.max))),
                cap(n * u128::from(mag(c.min))),
            )
        };
        DayMass {
            pos,
            neg,
            count: c.count,
        }
    }

    /// The two bounds added, saturating (a saturated bound refuses writes).
    pub(crate) fn plus(self, o: DayMass) -> DayMass {
        DayMass {
            pos: self.pos.saturating_add(o.pos),
            neg: self.neg.saturating_add(o.neg),
            count: self.count.saturating_add(o.count),
        }
    }

    /// This day with one more event of `delta`, or `None` if some cell could
    /// then overflow.
    fn with(self, delta: i64) -> Option<DayMass> {
        let mut m = self;
        if delta >= 0 {
            m.pos = m
                .pos
                .checked_add(delta.unsigned_abs())
                .filter(|&p| p <= MAX_POS)?;
        } else {
            m.neg = m
                .neg
                .checked_add(delta.unsigned_abs())
                .filter(|&n| n <= MAX_NEG)?;
        }
        m.count = m.count.checked_add(1)?;
        Some(m)
    }
}

/// A series' most recent day and its mass.
#[derive(Debug, Clone, Copy)]
struct Head {
    day: i64,
    mass: DayMass,
}

/// One change made while checking a batch, undone if the batch is refused.
#[derive(Debug, Clone, Copy)]
struct Undo {
    series: u32,
    day: i64,
    /// The mass before, `None` if the day was not in the ledger.
    before: Option<DayMass>,
}

/// Where the event that could overflow would land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow {
    /// Position of the event in its batch.
    pub(crate) index: usize,
    /// The series.
    pub(crate) series: u32,
    /// Start of the day (ms) whose cells could overflow.
    pub(crate) day_start: i64,
    /// True if it is the count, not the sum, that could overflow.
    pub(crate) count: bool,
}

/// Per series and day mass bounds; see the module doc.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    heads: Vec<Option<Head>>,
    others: FxHashMap<(u32, i64), DayMass>,
    undo: Vec<Undo>,
}

impl Ledger {
    /// Starts checking a batch.
    pub(crate) fn begin(&mut self) {
        self.undo.clear();
        if self.others.len() > MAX_OTHER_DAYS {
            self.others.clear();
        }
    }

    /// Adds an event of `delta` at `ts` to the bound of its day; `load`
    /// computes a day not in the ledger from the stores. On `Ok(Err(..))` the
    /// event could overflow a cell and the ledger is as before the event; the
    /// caller then calls [`Ledger::rollback`].
    pub(crate) fn add(
        &mut self,
        index: usize,
        series: u32,
        ts: i64,
        delta: i64,
        load: &mut dyn FnMut(u32, i64) -> Result<DayMass>,
    ) -> Result<std::result::Result<(), Overflow>> {
        let day = Tier::Day.bucket_of(ts);
        let i = series as usize;
        if self.heads.len() <= i {
            self.heads.resize(i + 1, None);
        }
        let before = match self.heads[i] {
            Some(h) if h.day == day => Some(h.mass),
            _ => self.others.get(&(series, day)).copied(),
        };
        let current = match before {
            Some(m) => m,
            None => load(series, day)?,
        };
        let Some(next) = current.with(delta) else {
            return Ok(Err(Overflow {
                index,
                series,
                day_start: Tier::Day.start_of(day),
                count: current.count == u64::MAX,
            }));
        };
        self.undo.push(Undo {
            series,
            day,
            before,
        });
        self.put(series, day, next);
        Ok(Ok(()))
    }

    fn put(&mut self, series: u32, day: i64, mass: DayMass) {
        let slot = &mut self.heads[series as usize];
        match slot {
            Some(h) if h.day == day => h.mass = mass,
            Some(h) if h.day > day => {
                self.others.insert((series, day), mass);
            }
            Some(h) => {
                self.others.insert((series, h.day), h.mass);
                self.others.remove(&(series, day));
                *slot = Some(Head { day, mass });
            }
            None => {
                self.others.remove(&(series, day));
                *slot = Some(Head { day, mass });
            }
        }
    }

    /// Undoes every change since [`Ledger::begin`].
    pub(crate) fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u.before {
                Some(m) => self.put(u.series, u.day, m),
                None => {
                    // The day was loaded for this batch: forget it, it is
                    // recomputed from the stores when next needed.
                    if let Some(h) = self.heads[u.series as usize] {
                        if h.day == u.day {
                            self.heads[u.series as usize] = None;
                        }
                    }
                    self.others.remove(&(u.series, u.day));
                }
            }
        }
    }
}

/// Builds the error for an event that could overflow, naming the series.
pub(crate) fn overflow_error(o: Overflow, key: String) -> Error {
    Error::CellOverflow {
        index: o.index,
        series: key,
        tier: Tier::Day.name(),
        bucket_start: o.day_start,
        what: if o.count { "count" } else { "sum" },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::time::DAY_MS;

    fn empty(_: u32, _: i64) -> Result<DayMass> {
        Ok(DayMass::default())
    }

    #[test]
    fn refuses_the_event_past_i64_and_undoes_the_batch() {
        let mut l = Ledger::default();
        l.begin();
        assert_eq!(l.add(0, 3, DAY_MS, i64::MAX, &mut empty).unwrap(), Ok(()));
        let o = l.add(1, 3, DAY_MS + 5, 1, &mut empty).unwrap().unwrap_err();
        assert_eq!((o.index, o.series, o.day_start), (1, 3, DAY_MS));
        l.rollback();
        l.begin();
        // The first event was undone: a fresh i64::MAX fits again.
        assert_eq!(l.add(0, 3, DAY_MS, i64::MAX, &mut empty).unwrap(), Ok(()));
        // Another day is another bound; so are negatives, down to i64::MIN.
        assert_eq!(
            l.add(1, 3, 2 * DAY_MS, i64::MAX, &mut empty).unwrap(),
            Ok(())
        );
        assert_eq!(l.add(2, 3, DAY_MS, i64::MIN, &mut empty).unwrap(), Ok(()));
        assert!(l.add(3, 3, DAY_MS, -1, &mut empty).unwrap().is_err());
    }

    #[test]
    fn stored_cells_bound_their_day() {
        let same_sign = Cell {
            sum: 10,
            count: 3,
            min: 1,
            max: 5,
        };
        assert_eq!(
            DayMass::of_cell(&same_sign),
            DayMass {
                pos: 10,
                neg: 0,
                count: 3
            }
        );
        let mixed = Cell {
            sum: 0,
            count: 2,
            min: -7,
            max: 7,
        };
        assert_eq!(
            DayMass::of_cell(&mixed),
            DayMass {
                pos: 14,
                neg: 14,
                count: 2
            }
        );
        let mut l = Ledger::default();
        l.begin();
        let mut load = |_: u32, _: i64| Ok(DayMass::of_cell(&same_sign));
        assert!(l.add(0, 0, 0, i64::MAX - 10, &mut load).unwrap().is_ok());
        assert!(l.add(1, 0, 0, 1, &mut load).unwrap().is_err());
    }
}
