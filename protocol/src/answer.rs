//! Owned answers: the server → client messages of [`crate::response`] with their
//! strings copied out of the receive buffer, so a client can keep them, hand them to
//! another task and return them from its API.
//!
//! Decoding stays zero-copy ([`Response`] borrows from the input); a client turns a
//! decoded response into an [`Answer`] once, with [`Answer::from`]. The server never
//! builds these: it encodes the borrowing types straight from its engine's results.
//! `INCR_OK` and `TOTAL_OK` hold no strings and serve as their own owned form
//! ([`IncrOk`], [`TotalOk`]).

use crate::frame::Opcode;
use crate::response::{
    ErrorReply, Group, HelloOk, IncrOk, IncrReport, Limits, RangeGroups, RangeOk, Response, Role,
    SeriesOk, StatsOk, Tiers, TopOk, TotalOk,
};

/// A whole response, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `HELLO_OK`.
    HelloOk(ServerInfo),
    /// `PONG`.
    Pong,
    /// `INCR_OK`.
    IncrOk(IncrOk),
    /// `INCR_REPORT`.
    IncrReport(IncrReport<'static>),
    /// `RANGE_OK`.
    RangeOk(RangeResult),
    /// `TOTAL_OK`.
    TotalOk(TotalOk),
    /// `TOTAL_GROUPS_OK`.
    TotalGroupsOk(crate::total_groups::TotalGroupsResult),
    /// `TOP_OK`.
    TopOk(TopResult),
    /// `SERIES_OK`.
    SeriesOk(SeriesResult),
    /// `STATS_OK`.
    StatsOk(Stats),
    /// `ADMIN_OK`: the server's message.
    AdminOk(String),
    /// `ERROR`.
    Error(ErrorReply<'static>),
}

impl Answer {
    /// The opcode this answer was sent with.
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::HelloOk(_) => Opcode::HelloOk,
            Self::Pong => Opcode::Pong,
            Self::IncrOk(_) => Opcode::IncrOk,
            Self::IncrReport(_) => Opcode::IncrReport,
            Self::RangeOk(_) => Opcode::RangeOk,
            Self::TotalOk(_) => Opcode::TotalOk,
            Self::TotalGroupsOk(_) => Opcode::TotalGroupsOk,
            Self::TopOk(_) => Opcode::TopOk,
            Self::SeriesOk(_) => Opcode::SeriesOk,
            Self::StatsOk(_) => Opcode::StatsOk,
            Self::AdminOk(_) => Opcode::AdminOk,
            Self::Error(_) => Opcode::Error,
        }
    }
}

impl From<Response<'_>> for Answer {
    fn from(r: Response<'_>) -> Self {
        match r {
            Response::HelloOk(ok) => Self::HelloOk(ok.into()),
            Response::Pong => Self::Pong,
            Response::IncrOk(ok) => Self::IncrOk(ok),
            Response::IncrReport(r) => Self::IncrReport(r.into_owned()),
            Response::RangeOk(ok) => Self::RangeOk(ok.into()),
            Response::TotalOk(ok) => Self::TotalOk(ok),
            Response::TotalGroupsOk(ok) => Self::TotalGroupsOk(ok.into()),
            Response::TopOk(ok) => Self::TopOk(ok.into()),
            Response::SeriesOk(ok) => Self::SeriesOk(ok.into()),
            Response::StatsOk(ok) => Self::StatsOk(ok.into()),
            Response::AdminOk(ok) => Self::AdminOk(ok.message.into_owned()),
            Response::Error(e) => Self::Error(e.into_owned()),
        }
    }
}

/// What the server announced in `HELLO_OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's software version, e.g. `tallyd 0.1.0`.
    pub server_version: String,
    /// Limits for the connection.
    pub limits: Limits,
    /// The role the token was granted.
    pub role: Role,
}

impl From<HelloOk<'_>> for ServerInfo {
    fn from(ok: HelloOk<'_>) -> Self {
        Self {
            server_version: ok.server_version.to_owned(),
            limits: ok.limits,
            role: ok.role,
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

/// `RANGE_OK`, owned, its values of either kind as one [`Value`] type.
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

/// One entry of a top-K answer, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopEntry {
    /// A series key, or a label value when the query grouped by a label.
    pub name: String,
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
}

/// `TOP_OK`, owned.
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

/// `SERIES_OK`, owned.
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

/// `STATS_OK`, owned: server figures.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{Label, Point};

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

    #[test]
    fn answers_keep_their_opcode() {
        let e = ErrorReply::new(crate::ErrorCode::Busy, String::from("later"));
        let a = Answer::from(Response::Error(e));
        assert_eq!(a.opcode(), Opcode::Error);
        assert_eq!(a.opcode().name(), "ERROR");
    }
}
