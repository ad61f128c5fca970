//! Owned answers: the protocol's decoded messages borrow from the receive buffer; these
//! types own their data so they can outlive it and cross tasks.
//!
//! Every query answer carries the [`Tiers`] that served it and `closed_until_ms`:
//! buckets starting at or after that time (the current minute, hour, day) may still grow.

use tallydb_protocol::{
    Group, IncrOk, Limits, RangeGroups, RangeOk, Role, SeriesOk, StatsOk, Tiers, TopOk, TotalOk,
};

/// The answer to an increment or a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IncrResult {
    /// Events counted by this batch.
    pub applied: u32,
    /// Events skipped because their event id was already seen.
    pub duplicates: u32,
    /// The batch had already been applied (a retry after a lost answer): nothing was
    /// counted again. `applied` and `duplicates` then repeat the original counts when
    /// the server still knows them.
    pub duplicate_batch: bool,
}

impl From<IncrOk> for IncrResult {
    fn from(ok: IncrOk) -> Self {
        Self {
            applied: ok.applied,
            duplicates: ok.duplicates,
            duplicate_batch: ok.duplicate_batch,
        }
    }
}

/// The answer to [`Client::total`](crate::Client::total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotalResult {
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
    /// Start actually covered (bucket-aligned), unix ms.
    pub from_ms: i64,
    /// End actually covered (exclusive), unix ms.
    pub to_ms: i64,
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets starting at or after this time may still grow.
    pub closed_until_ms: i64,
}

impl From<TotalOk> for TotalResult {
    fn from(ok: TotalOk) -> Self {
        Self {
            sum: ok.sum,
            count: ok.count,
            from_ms: ok.from_ms,
            to_ms: ok.to_ms,
            tiers: ok.tiers,
            closed_until_ms: ok.closed_until_ms,
        }
    }
}

/// A point value: integers for sum, count, min, max; floats for avg and rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An integer value.
    Int(i64),
    /// A floating-point value.
    Float(f64),
}

impl Value {
    /// The value as `f64` (integers converted).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Int(v) => v as f64,
            Self::Float(v) => v,
        }
    }

    /// The value if it is an integer.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Self::Int(v) => Some(v),
            Self::Float(_) => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
        }
    }
}

/// One bucket of a range answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangePoint {
    /// Bucket start, unix ms.
    pub ts_ms: i64,
    /// The function's value in the bucket.
    pub value: Value,
}

/// The points of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeGroup {
    /// `(label, value)` pairs of the group; empty when the query has no group-by.
    pub labels: Vec<(String, String)>,
    /// Points in increasing time order.
    pub points: Vec<RangePoint>,
}

/// The answer to [`Client::range`](crate::Client::range).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeResult {
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets starting at or after this time may still grow.
    pub closed_until_ms: i64,
    /// The step actually used, ms.
    pub step_ms: u64,
    /// The groups.
    pub groups: Vec<RangeGroup>,
}

fn own_groups<V: Copy>(groups: Vec<Group<'_, V>>, value: fn(V) -> Value) -> Vec<RangeGroup> {
    groups
        .into_iter()
        .map(|g| RangeGroup {
            labels: g
                .labels
                .iter()
                .map(|l| (l.name.to_owned(), l.value.to_owned()))
                .collect(),
            points: g
                .points
                .iter()
                .map(|p| RangePoint {
                    ts_ms: p.ts_ms,
                    value: value(p.value),
                })
                .collect(),
        })
        .collect()
}

impl From<RangeOk<'_>> for RangeResult {
    fn from(ok: RangeOk<'_>) -> Self {
        let groups = match ok.groups {
            RangeGroups::Int(g) => own_groups(g, Value::Int),
            RangeGroups::Float(g) => own_groups(g, Value::Float),
        };
        Self {
            tiers: ok.tiers,
            closed_until_ms: ok.closed_until_ms,
            step_ms: ok.step_ms,
            groups,
        }
    }
}

/// One entry of a top-K answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopEntry {
    /// A series key, or a label value when the query grouped by a label.
    pub name: String,
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
}

/// The answer to [`Client::top`](crate::Client::top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopResult {
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets starting at or after this time may still grow.
    pub closed_until_ms: i64,
    /// Entries by decreasing sum.
    pub entries: Vec<TopEntry>,
}

impl From<TopOk<'_>> for TopResult {
    fn from(ok: TopOk<'_>) -> Self {
        Self {
            tiers: ok.tiers,
            closed_until_ms: ok.closed_until_ms,
            entries: ok
                .entries
                .iter()
                .map(|e| TopEntry {
                    name: e.name.to_owned(),
                    sum: e.sum,
                    count: e.count,
                })
                .collect(),
        }
    }
}

/// The answer to [`Client::series`](crate::Client::series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesResult {
    /// Canonical series keys.
    pub keys: Vec<String>,
    /// More series matched than the limit allowed.
    pub truncated: bool,
}

impl From<SeriesOk<'_>> for SeriesResult {
    fn from(ok: SeriesOk<'_>) -> Self {
        Self {
            keys: ok.keys.iter().map(|k| (*k).to_owned()).collect(),
            truncated: ok.truncated,
        }
    }
}

/// The answer to [`Client::stats`](crate::Client::stats): server figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// `(dotted name, value)` pairs in the server's order, e.g. `("wal.fsyncs", 12)`.
    pub entries: Vec<(String, u64)>,
}

impl Stats {
    /// The value of the figure `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

impl From<StatsOk<'_>> for Stats {
    fn from(ok: StatsOk<'_>) -> Self {
        Self {
            entries: ok
                .entries
                .iter()
                .map(|s| (s.name.to_owned(), s.value))
                .collect(),
        }
    }
}

/// What the server announced in `HELLO_OK` on the current connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's software version, e.g. `tallyd 0.1.0`.
    pub server_version: String,
    /// Limits for the connection.
    pub limits: Limits,
    /// The role the token was granted.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallydb_protocol::{Label, Point};

    #[test]
    fn range_answers_are_owned() {
        let ok = RangeOk {
            tiers: Tiers::MINUTE,
            closed_until_ms: 60_000,
            step_ms: 60_000,
            groups: RangeGroups::Float(vec![Group {
                labels: vec![Label {
                    name: "ad",
                    value: "a1",
                }],
                points: vec![Point {
                    ts_ms: 0,
                    value: 1.5,
                }],
            }]),
        };
        let r = RangeResult::from(ok);
        assert_eq!(r.groups[0].labels, vec![("ad".into(), "a1".into())]);
        assert_eq!(r.groups[0].points[0].value, Value::Float(1.5));
        assert_eq!(Value::Int(3).as_f64(), 3.0);
        assert_eq!(Value::Float(1.0).as_i64(), None);
    }

    #[test]
    fn stats_lookup() {
        let s = Stats {
            entries: vec![("wal.fsyncs".into(), 3)],
        };
        assert_eq!(s.get("wal.fsyncs"), Some(3));
        assert_eq!(s.get("nope"), None);
    }
}
