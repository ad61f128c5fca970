//! The cell: the aggregate of one series in one bucket of one tier; a cell
//! with its coordinates ([`CellRow`]); and [`SeriesSums`], through which the
//! stores (memtable, segments) hand per-series sums to the query side without
//! knowing what it does with them.

/// `sum`, `count`, `min` and `max` of the deltas counted into one bucket.
///
/// Cells merge by summing `sum` and `count` and taking the extremes of `min` and
/// `max`, which is associative and commutative: the order of flushes and
/// compactions never changes a result. The write path's overflow ledger
/// (`engine/ledger.rs`, docs/STORAGE.md) refuses any batch that could make a
/// cell leave `i64`, so these adds never overflow on data this version wrote;
/// they wrap (as before) only on cells older versions wrote wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
    /// Smallest delta.
    pub min: i64,
    /// Largest delta.
    pub max: i64,
}

impl Cell {
    /// The cell of a single event.
    #[inline]
    pub const fn of(delta: i64) -> Cell {
        Cell {
            sum: delta,
            count: 1,
            min: delta,
            max: delta,
        }
    }

    /// Folds one event into the cell.
    #[inline]
    pub fn add(&mut self, delta: i64) {
        self.sum = self.sum.wrapping_add(delta);
        self.count = self.count.wrapping_add(1);
        self.min = self.min.min(delta);
        self.max = self.max.max(delta);
    }

    /// Merges another cell of the same series and bucket into this one.
    #[inline]
    pub fn merge(&mut self, other: &Cell) {
        self.sum = self.sum.wrapping_add(other.sum);
        self.count = self.count.wrapping_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// `sum / count`, or `None` for an empty cell.
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }
}

/// One cell with its coordinates: what the memtable hands a flush and a
/// segment yields when iterated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRow {
    /// Series id from the dictionary.
    pub series: u32,
    /// Bucket index within the tier.
    pub bucket: i64,
    /// The aggregate.
    pub cell: Cell,
}

/// Receives the sum and count of selected series from a sweep over a store
/// (a memtable or a segment), and says which series it wants. Implemented by
/// the query side's accumulator (`sweep::Sums`), so the stores import no
/// query code; sweeps are generic over it, so their inner loops have no
/// dynamic call.
pub trait SeriesSums {
    /// True if `series` is wanted.
    fn selects(&self, series: u32) -> bool;
    /// True if any series in `first..=last` is wanted.
    fn any_in(&self, first: u32, last: u32) -> bool;
    /// The smallest and largest wanted series, `None` if none is.
    fn id_range(&self) -> Option<(u32, u32)>;
    /// Adds `sum` and `count` to `series` (called only for wanted series).
    /// Sums are `i128`: a series' cells over many buckets may sum past `i64`.
    fn add(&mut self, series: u32, sum: i128, count: u64);
}
