//! The cell: the aggregate of one series in one bucket of one tier.

/// `sum`, `count`, `min` and `max` of the deltas counted into one bucket.
///
/// Cells merge by summing `sum` and `count` and taking the extremes of `min` and
/// `max`, which is associative and commutative: the order of flushes and
/// compactions never changes a result. Sums wrap on `i64` overflow (documented in
/// docs/STORAGE.md) rather than failing a batch half-way.
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
