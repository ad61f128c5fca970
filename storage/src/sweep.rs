//! Sums over many series at once: the dense per-series accumulator that totals
//! and top-k fill, and the cost model that picks, per source, between looking
//! each selected series up and sweeping the source once in order.
//!
//! A lookup costs a search (block index, run index, hash map) per series and
//! source; a sweep costs a pass over the source inside the time range (blocks
//! and runs of unselected series skipped whole, memtable heads of every
//! series visited), but with no search at all. Both add exactly the same
//! cells, and sums wrap the same way in any order, so the choice never changes
//! an answer, only its speed.

use crate::cell::SeriesSums;
use crate::error::{Error, Result};

/// Slot of a series that the query did not select.
const UNSELECTED: u32 = u32::MAX;

/// Cells of the blocks a segment sweep reads that cost as much as looking one
/// selected series up in the segment: a sweep skips the runs of unselected
/// series whole and sums the cells of the others as a lookup would, so it
/// reads many cells per lookup saved. Calibrated on the query figures of
/// docs/BENCHMARKS.md with 100 to 5,000 selected series out of 100,000.
pub const SEGMENT_LOOKUP_CELLS: u64 = 2_000;

/// Entries (series heads, older-word vectors) a memtable sweep visits in the
/// time one series lookup in the memtable takes (a hash probe and a cache
/// miss or two). Calibrated like [`SEGMENT_LOOKUP_CELLS`].
pub const MEMTABLE_LOOKUP_ENTRIES: u64 = 100;

/// How a query reads a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Per source, whichever the cost model expects to be faster.
    Auto,
    /// Look each selected series up.
    Lookup,
    /// Walk the source once, in order.
    Sweep,
}

/// Slot-map entries that cost about as much to set up as sweeping one cell.
const MAP_ENTRIES_PER_CELL: u64 = 8;

impl Access {
    /// Whether to sweep a source for the series of `sums`, when a sweep would
    /// visit `entries()` and a lookup costs as much as visiting `per_lookup`,
    /// counting the slot map the first sweep builds. `entries` is called only
    /// when the answer depends on it.
    pub fn sweeps(self, sums: &Sums, per_lookup: u64, entries: impl FnOnce() -> u64) -> bool {
        match self {
            Access::Auto => {
                let setup = if sums.slot_of.is_empty() {
                    sums.map_len() as u64 / MAP_ENTRIES_PER_CELL
                } else {
                    0
                };
                let lookups = (sums.ids.len() as u64).saturating_mul(per_lookup);
                lookups >= setup && lookups >= entries().saturating_add(setup)
            }
            Access::Lookup => false,
            Access::Sweep => true,
        }
    }
}

/// Per selected series, the sum and count of its cells read so far: slot `i`
/// belongs to `ids[i]`. A sweep finds a series' slot through a dense map indexed
/// by series id, built on the first sweep.
#[derive(Debug)]
pub struct Sums {
    ids: Vec<u32>,
    slot_of: Vec<u32>,
    sums: Vec<(i128, u128)>,
}

impl Sums {
    /// Empty sums for `ids` (ascending, no duplicates).
    pub fn new(ids: Vec<u32>) -> Sums {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not ascending");
        Sums {
            sums: vec![(0, 0); ids.len()],
            ids,
            slot_of: Vec::new(),
        }
    }

    /// The selected series.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds to slot `i`.
    #[inline]
    pub fn add_slot(&mut self, i: usize, sum: i128, count: u64) {
        if let Some(e) = self.sums.get_mut(i) {
            e.0 += sum;
            e.1 += u128::from(count);
        }
    }

    /// Entries of the map from series id to slot: one past the largest id.
    fn map_len(&self) -> usize {
        self.ids.iter().max().map_or(0, |m| *m as usize + 1)
    }

    /// Builds the map from series id to slot, once.
    pub fn prepare_sweep(&mut self) {
        if !self.slot_of.is_empty() || self.ids.is_empty() {
            return;
        }
        self.slot_of = vec![UNSELECTED; self.map_len()];
        for (i, id) in self.ids.iter().enumerate() {
            self.slot_of[*id as usize] = i as u32;
        }
    }

    /// Adds to the slot of `series`, if selected. Call [`prepare_sweep`]
    /// first.
    ///
    /// [`prepare_sweep`]: Self::prepare_sweep
    #[inline]
    pub fn add(&mut self, series: u32, sum: i128, count: u64) {
        if let Some(&slot) = self.slot_of.get(series as usize) {
            if slot != UNSELECTED {
                self.add_slot(slot as usize, sum, count);
            }
        }
    }

    /// The smallest and largest selected id.
    pub fn id_range(&self) -> Option<(u32, u32)> {
        Some((*self.ids.first()?, *self.ids.last()?))
    }

    /// True if any series in `first..=last` is selected.
    pub fn any_in(&self, first: u32, last: u32) -> bool {
        let i = self.ids.partition_point(|id| *id < first);
        self.ids.get(i).is_some_and(|id| *id <= last)
    }

    /// True if `series` is selected (after [`prepare_sweep`](Self::prepare_sweep)).
    #[inline]
    pub fn selects(&self, series: u32) -> bool {
        self.slot_of
            .get(series as usize)
            .is_some_and(|s| *s != UNSELECTED)
    }

    /// Sum and count per slot, exact (wider than any answer).
    pub fn sums(&self) -> &[(i128, u128)] {
        &self.sums
    }

    /// Sum and count over every slot, exact.
    pub fn total(&self) -> (i128, u128) {
        self.sums
            .iter()
            .fold((0i128, 0u128), |a, s| (a.0 + s.0, a.1 + s.1))
    }
}

/// An exact sum and count as the `i64` / `u64` of an answer, or
/// [`Error::TotalOverflow`] naming `what` when they do not fit: a total over
/// many cells never wraps silently.
pub fn narrow(what: &'static str, sum: i128, count: u128) -> Result<(i64, u64)> {
    let s = i64::try_from(sum).map_err(|_| Error::TotalOverflow { what, value: sum })?;
    let c = u64::try_from(count).map_err(|_| Error::TotalOverflow {
        what,
        value: i128::try_from(count).unwrap_or(i128::MAX),
    })?;
    Ok((s, c))
}

/// The stores' sweeps fill the slots through this.
impl SeriesSums for Sums {
    #[inline]
    fn selects(&self, series: u32) -> bool {
        Sums::selects(self, series)
    }
    #[inline]
    fn any_in(&self, first: u32, last: u32) -> bool {
        Sums::any_in(self, first, last)
    }
    #[inline]
    fn id_range(&self) -> Option<(u32, u32)> {
        Sums::id_range(self)
    }
    #[inline]
    fn add(&mut self, series: u32, sum: i128, count: u64) {
        Sums::add(self, series, sum, count)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slots_follow_ids_and_skip_the_rest() {
        let mut s = Sums::new(vec![2, 5, 9]);
        s.prepare_sweep();
        s.add(5, 3, 1);
        s.add(5, -1, 2);
        s.add(4, 100, 1);
        s.add(10, 100, 1);
        s.add(9, i64::MAX.into(), u64::MAX);
        s.add(9, 2, 2);
        s.add_slot(0, 7, 7);
        // Exact past i64 and u64: no wrapping.
        let big = (i128::from(i64::MAX) + 2, u128::from(u64::MAX) + 2);
        assert_eq!(s.sums(), &[(7, 7), (2, 3), big]);
        assert!(s.selects(2) && !s.selects(3) && !s.selects(99));
        assert!(s.any_in(0, 2) && s.any_in(3, 5) && s.any_in(9, 9) && s.any_in(0, u32::MAX));
        assert!(!s.any_in(0, 1) && !s.any_in(3, 4) && !s.any_in(6, 8) && !s.any_in(10, u32::MAX));
        assert_eq!(s.total(), (big.0 + 9, big.1 + 10));
        assert!(matches!(
            narrow("total", big.0, 1),
            Err(Error::TotalOverflow { what: "total", .. })
        ));
        assert!(narrow("total", 5, big.1).is_err());
        assert_eq!(narrow("total", -5, 3).unwrap(), (-5, 3));
    }

    #[test]
    fn the_cost_model_sweeps_when_lookups_cost_more() {
        let all = Sums::new((0..100_000).collect());
        assert!(Access::Auto.sweeps(&all, 100, || 6_000_000));
        let some = Sums::new((0..1_000).map(|i| i * 100).collect());
        assert!(!Access::Auto.sweeps(&some, 100, || 6_000_000));
        assert!(Access::Auto.sweeps(&some, 100, || 10_000));
        assert!(Access::Sweep.sweeps(&some, 1, || u64::MAX));
        assert!(!Access::Lookup.sweeps(&all, u64::MAX, || 0));
        // One series with a large id: building its slot map would cost more
        // than looking it up in a small source, until the map exists.
        let mut one = Sums::new(vec![50_000_000]);
        assert!(!Access::Auto.sweeps(&one, 100, || 10));
        one.prepare_sweep();
        assert!(Access::Auto.sweeps(&one, 100, || 10));
    }
}
