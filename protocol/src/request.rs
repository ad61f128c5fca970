//! Client → server messages: [`Request`] and the payload types of the handshake, the
//! queries and the admin commands. `INCR` lives in [`crate::incr`].

use bytes::{BufMut, BytesMut};

use crate::codec::{
    count, i64_le, invalid, opt_str, put_count, put_opt_str, put_str, run, str_, u16_le, u32_le,
    u64_le, u8_, PResult,
};
use crate::error::DecodeError;
use crate::frame::{empty, Opcode};
use crate::incr::Incr;
use crate::response::Role;
use crate::{
    MAX_CLIENT_NAME_LEN, MAX_NAME_LEN, MAX_PATH_LEN, MAX_SERIES_KEY_LEN, MAX_TOKEN_LEN,
    PROTOCOL_VERSION,
};

/// A message sent by a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Request<'a> {
    /// Opens the session; must be the first frame.
    Hello(Hello<'a>),
    /// Liveness check, answered by `PONG`.
    Ping,
    /// A batch of increments, answered by `INCR_OK`.
    Incr(Incr<'a>),
    /// Points over a time range, answered by `RANGE_OK`.
    Range(RangeQuery<'a>),
    /// One total over a time range, answered by `TOTAL_OK`, or by `TOTAL_GROUPS_OK`
    /// when its selector groups.
    Total(TotalQuery<'a>),
    /// The largest sums, answered by `TOP_OK`.
    Top(TopQuery<'a>),
    /// Matching series keys, answered by `SERIES_OK`.
    Series(SeriesQuery<'a>),
    /// Server figures, answered by `STATS_OK`.
    Stats,
    /// Admin: flush the memtable to a segment, answered by `ADMIN_OK`.
    Flush,
    /// Admin: run a compaction, answered by `ADMIN_OK`.
    Compact,
    /// Admin: write an online snapshot, answered by `ADMIN_OK`.
    Snapshot(Snapshot<'a>),
}

impl<'a> Request<'a> {
    /// The opcode this request is sent with.
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::Hello(_) => Opcode::Hello,
            Self::Ping => Opcode::Ping,
            Self::Incr(_) => Opcode::Incr,
            Self::Range(_) => Opcode::Range,
            Self::Total(_) => Opcode::Total,
            Self::Top(_) => Opcode::Top,
            Self::Series(_) => Opcode::Series,
            Self::Stats => Opcode::Stats,
            Self::Flush => Opcode::Flush,
            Self::Compact => Opcode::Compact,
            Self::Snapshot(_) => Opcode::Snapshot,
        }
    }

    /// The least role allowed to send this request (`FORBIDDEN` below it).
    pub fn required_role(&self) -> Role {
        match self {
            Self::Hello(_)
            | Self::Ping
            | Self::Range(_)
            | Self::Total(_)
            | Self::Top(_)
            | Self::Series(_)
            | Self::Stats => Role::Read,
            Self::Incr(_) => Role::Write,
            Self::Flush | Self::Compact | Self::Snapshot(_) => Role::Admin,
        }
    }

    pub(crate) fn encode_payload(&self, out: &mut BytesMut) {
        match self {
            Self::Hello(h) => h.encode(out),
            Self::Incr(b) => b.encode(out),
            Self::Range(q) => q.encode(out),
            Self::Total(q) => q.encode(out),
            Self::Top(q) => q.encode(out),
            Self::Series(q) => q.encode(out),
            Self::Snapshot(s) => put_str(out, s.target_dir),
            Self::Ping | Self::Stats | Self::Flush | Self::Compact => {}
        }
    }

    /// Decodes a request payload; `op` must be a request opcode.
    pub(crate) fn decode(op: Opcode, p: &'a [u8], max_events: u32) -> Result<Self, DecodeError> {
        Ok(match op {
            Opcode::Hello => Self::Hello(Hello::decode(p)?),
            Opcode::Ping => run(p, empty).map(|()| Self::Ping)?,
            Opcode::Incr => Self::Incr(Incr::decode(p, max_events)?),
            Opcode::Range => Self::Range(run(p, RangeQuery::parse)?),
            Opcode::Total => Self::Total(run(p, TotalQuery::parse)?),
            Opcode::Top => Self::Top(run(p, TopQuery::parse)?),
            Opcode::Series => Self::Series(run(p, SeriesQuery::parse)?),
            Opcode::Stats => run(p, empty).map(|()| Self::Stats)?,
            Opcode::Flush => run(p, empty).map(|()| Self::Flush)?,
            Opcode::Compact => run(p, empty).map(|()| Self::Compact)?,
            Opcode::Snapshot => Self::Snapshot(run(p, |i| {
                let (i, target_dir) = str_(i, "snapshot target", MAX_PATH_LEN)?;
                Ok((i, Snapshot { target_dir }))
            })?),
            other => return Err(DecodeError::UnknownOpcode(other as u8)),
        })
    }
}

/// `HELLO`: the first frame of every connection.
///
/// The version field comes first and keeps its place in every protocol version, so a
/// server can refuse a version it does not speak without understanding the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The protocol version the client speaks.
    pub protocol_version: u16,
    /// A free-form client name for logs, e.g. `checkout-service/1.4`.
    pub client_name: &'a str,
    /// The credential that selects the connection's role (may be empty).
    pub token: &'a [u8],
}

impl<'a> Hello<'a> {
    /// A `HELLO` for this crate's [`PROTOCOL_VERSION`].
    pub fn new(client_name: &'a str, token: &'a [u8]) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            client_name,
            token,
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.protocol_version);
        put_str(out, self.client_name);
        crate::codec::put_bytes(out, self.token);
    }

    /// Reads the version first and refuses any other version before parsing the rest,
    /// whose layout may differ.
    fn decode(p: &'a [u8]) -> Result<Self, DecodeError> {
        run(p, |i| {
            let (i, protocol_version) = u16_le(i, "protocol version")?;
            if protocol_version != PROTOCOL_VERSION {
                return Err(nom::Err::Error(DecodeError::unsupported_version(
                    protocol_version,
                )));
            }
            let (i, client_name) = str_(i, "client name", MAX_CLIENT_NAME_LEN)?;
            let (i, token) = crate::codec::bytes_(i, "token", MAX_TOKEN_LEN)?;
            Ok((
                i,
                Hello {
                    protocol_version,
                    client_name,
                    token,
                },
            ))
        })
    }
}

/// Which series a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector<'a> {
    /// One series by its canonical key, e.g. `ad_clicks{ad=ad001,country=US}`.
    Exact(&'a str),
    /// A metric name with label matchers and optional grouping.
    Metric(MetricSelector<'a>),
    /// Every series whose metric name starts with this prefix, e.g. `com.amazon.`.
    Prefix(&'a str),
    /// A prefix with group-by labels, among them possibly `__child__` (the next
    /// path segment of the name below the prefix). Sent only when grouping, so an
    /// ungrouped prefix keeps its encoding.
    PrefixBy(PrefixSelector<'a>),
}

/// A name prefix and the labels to group by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixSelector<'a> {
    /// The prefix, as for [`Selector::Prefix`].
    pub prefix: &'a str,
    /// Label names whose values split the answer into groups; `__child__` groups by
    /// the next path segment below the prefix.
    pub group_by: Vec<&'a str>,
}

/// A metric name, label matchers (all must hold) and the labels to group by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSelector<'a> {
    /// The metric name; empty for series of any metric, which the server accepts
    /// only with a matcher `label = non-empty value` (as PromQL requires).
    pub name: &'a str,
    /// Conditions on labels; all must hold.
    pub matchers: Vec<Matcher<'a>>,
    /// Label names whose values split the answer into groups (empty: one group).
    pub group_by: Vec<&'a str>,
}

/// One label condition: `label = value` or `label != value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matcher<'a> {
    /// Label name.
    pub label: &'a str,
    /// Comparison.
    pub op: MatchOp,
    /// Label value.
    pub value: &'a str,
}

/// Label comparison of a [`Matcher`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Eq = 0,
    /// `!=`
    NotEq = 1,
}

const SELECTOR_EXACT: u8 = 0;
const SELECTOR_METRIC: u8 = 1;
const SELECTOR_PREFIX: u8 = 2;
const SELECTOR_PREFIX_BY: u8 = 3;

fn put_labels(out: &mut BytesMut, labels: &[&str]) {
    put_count(out, labels.len());
    for label in labels {
        put_str(out, label);
    }
}

fn parse_labels<'a>(i: &'a [u8]) -> PResult<'a, Vec<&'a str>> {
    let (mut i, n) = count(i, "group-by count", 1)?;
    let mut group_by = Vec::with_capacity(n);
    for _ in 0..n {
        let (rest, label) = str_(i, "group-by label", MAX_NAME_LEN)?;
        group_by.push(label);
        i = rest;
    }
    Ok((i, group_by))
}

impl<'a> Selector<'a> {
    /// The group-by labels (empty when the selector does not group).
    pub fn group_by(&self) -> &[&'a str] {
        match self {
            Self::Metric(m) => &m.group_by,
            Self::PrefixBy(p) => &p.group_by,
            Self::Exact(_) | Self::Prefix(_) => &[],
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Exact(key) => {
                out.put_u8(SELECTOR_EXACT);
                put_str(out, key);
            }
            Self::Metric(m) => {
                out.put_u8(SELECTOR_METRIC);
                put_str(out, m.name);
                put_count(out, m.matchers.len());
                for matcher in &m.matchers {
                    put_str(out, matcher.label);
                    out.put_u8(matcher.op as u8);
                    put_str(out, matcher.value);
                }
                put_labels(out, &m.group_by);
            }
            Self::Prefix(prefix) => {
                out.put_u8(SELECTOR_PREFIX);
                put_str(out, prefix);
            }
            Self::PrefixBy(p) => {
                out.put_u8(SELECTOR_PREFIX_BY);
                put_str(out, p.prefix);
                put_labels(out, &p.group_by);
            }
        }
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, tag) = u8_(i, "selector kind")?;
        match tag {
            SELECTOR_EXACT => {
                let (i, key) = str_(i, "selector series key", MAX_SERIES_KEY_LEN)?;
                Ok((i, Self::Exact(key)))
            }
            SELECTOR_METRIC => {
                let (i, name) = str_(i, "selector metric name", MAX_NAME_LEN)?;
                // A matcher is at least two length bytes and an op byte.
                let (mut i, n) = count(i, "matcher count", 3)?;
                let mut matchers = Vec::with_capacity(n);
                for _ in 0..n {
                    let (rest, label) = str_(i, "matcher label", MAX_NAME_LEN)?;
                    let (rest, op) = u8_(rest, "matcher op")?;
                    let op = match op {
                        0 => MatchOp::Eq,
                        1 => MatchOp::NotEq,
                        _ => return Err(invalid("matcher op", "must be 0 (=) or 1 (!=)")),
                    };
                    let (rest, value) = str_(rest, "matcher value", MAX_NAME_LEN)?;
                    matchers.push(Matcher { label, op, value });
                    i = rest;
                }
                let (i, group_by) = parse_labels(i)?;
                Ok((
                    i,
                    Self::Metric(MetricSelector {
                        name,
                        matchers,
                        group_by,
                    }),
                ))
            }
            SELECTOR_PREFIX => {
                let (i, prefix) = str_(i, "selector prefix", MAX_NAME_LEN)?;
                Ok((i, Self::Prefix(prefix)))
            }
            SELECTOR_PREFIX_BY => {
                let (i, prefix) = str_(i, "selector prefix", MAX_NAME_LEN)?;
                let (i, group_by) = parse_labels(i)?;
                Ok((i, Self::PrefixBy(PrefixSelector { prefix, group_by })))
            }
            _ => Err(invalid("selector kind", "must be 0, 1, 2 or 3")),
        }
    }
}

/// The bucket width of `RANGE` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The server picks the finest tier that retains the range, capping the point count.
    Auto,
    /// A fixed width in milliseconds; the server requires a multiple of 60 000.
    Millis(u64),
}

/// The aggregate each `RANGE` point carries.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// Sum of deltas (integer).
    Sum = 0,
    /// Number of events (integer).
    Count = 1,
    /// Sum / count (float).
    Avg = 2,
    /// Smallest delta (integer).
    Min = 3,
    /// Largest delta (integer).
    Max = 4,
    /// Sum per second over the step (float).
    Rate = 5,
}

impl Function {
    /// Whether this function's points are integers or floats on the wire.
    pub fn value_kind(self) -> crate::ValueKind {
        match self {
            Self::Sum | Self::Count | Self::Min | Self::Max => crate::ValueKind::Int,
            Self::Avg | Self::Rate => crate::ValueKind::Float,
        }
    }

    fn from_u8(b: u8) -> Option<Self> {
        [
            Self::Sum,
            Self::Count,
            Self::Avg,
            Self::Min,
            Self::Max,
            Self::Rate,
        ]
        .into_iter()
        .find(|f| *f as u8 == b)
    }
}

const STEP_AUTO: u8 = 0;
const STEP_MILLIS: u8 = 1;

/// `RANGE`: points of `function` over `[from_ms, to_ms)` at `step`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeQuery<'a> {
    /// Which series.
    pub selector: Selector<'a>,
    /// Start, inclusive, unix milliseconds.
    pub from_ms: i64,
    /// End, exclusive, unix milliseconds.
    pub to_ms: i64,
    /// Point width.
    pub step: Step,
    /// Aggregate per point.
    pub function: Function,
}

impl<'a> RangeQuery<'a> {
    fn encode(&self, out: &mut BytesMut) {
        self.selector.encode(out);
        out.put_i64_le(self.from_ms);
        out.put_i64_le(self.to_ms);
        match self.step {
            Step::Auto => out.put_u8(STEP_AUTO),
            Step::Millis(ms) => {
                out.put_u8(STEP_MILLIS);
                out.put_u64_le(ms);
            }
        }
        out.put_u8(self.function as u8);
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, selector) = Selector::parse(i)?;
        let (i, from_ms) = i64_le(i, "from")?;
        let (i, to_ms) = i64_le(i, "to")?;
        let (i, tag) = u8_(i, "step kind")?;
        let (i, step) = match tag {
            STEP_AUTO => (i, Step::Auto),
            STEP_MILLIS => {
                let (i, ms) = u64_le(i, "step")?;
                (i, Step::Millis(ms))
            }
            _ => return Err(invalid("step kind", "must be 0 (auto) or 1 (millis)")),
        };
        let (i, f) = u8_(i, "function")?;
        let function = Function::from_u8(f).ok_or_else(|| invalid("function", "must be 0..=5"))?;
        Ok((
            i,
            RangeQuery {
                selector,
                from_ms,
                to_ms,
                step,
                function,
            },
        ))
    }
}

/// `TOTAL`: one sum and count over `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalQuery<'a> {
    /// Which series.
    pub selector: Selector<'a>,
    /// Start, inclusive, unix milliseconds.
    pub from_ms: i64,
    /// End, exclusive, unix milliseconds.
    pub to_ms: i64,
}

impl<'a> TotalQuery<'a> {
    fn encode(&self, out: &mut BytesMut) {
        self.selector.encode(out);
        out.put_i64_le(self.from_ms);
        out.put_i64_le(self.to_ms);
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, selector) = Selector::parse(i)?;
        let (i, from_ms) = i64_le(i, "from")?;
        let (i, to_ms) = i64_le(i, "to")?;
        Ok((
            i,
            TotalQuery {
                selector,
                from_ms,
                to_ms,
            },
        ))
    }
}

/// `TOP`: the `n` largest sums over `[from_ms, to_ms)`, per series or per value of a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopQuery<'a> {
    /// Which series.
    pub selector: Selector<'a>,
    /// Start, inclusive, unix milliseconds.
    pub from_ms: i64,
    /// End, exclusive, unix milliseconds.
    pub to_ms: i64,
    /// How many entries at most.
    pub n: u32,
    /// Rank values of this label instead of whole series.
    pub group_by: Option<&'a str>,
}

impl<'a> TopQuery<'a> {
    fn encode(&self, out: &mut BytesMut) {
        self.selector.encode(out);
        out.put_i64_le(self.from_ms);
        out.put_i64_le(self.to_ms);
        out.put_u32_le(self.n);
        put_opt_str(out, self.group_by);
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, selector) = Selector::parse(i)?;
        let (i, from_ms) = i64_le(i, "from")?;
        let (i, to_ms) = i64_le(i, "to")?;
        let (i, n) = u32_le(i, "top n")?;
        let (i, group_by) = opt_str(i, "top group-by label", MAX_NAME_LEN)?;
        Ok((
            i,
            TopQuery {
                selector,
                from_ms,
                to_ms,
                n,
                group_by,
            },
        ))
    }
}

/// `SERIES`: up to `limit` series keys matching a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery<'a> {
    /// Which series.
    pub selector: Selector<'a>,
    /// Most keys to return.
    pub limit: u32,
}

impl<'a> SeriesQuery<'a> {
    fn encode(&self, out: &mut BytesMut) {
        self.selector.encode(out);
        out.put_u32_le(self.limit);
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, selector) = Selector::parse(i)?;
        let (i, limit) = u32_le(i, "series limit")?;
        Ok((i, SeriesQuery { selector, limit }))
    }
}

/// `SNAPSHOT`: write a consistent copy of the live data set into a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot<'a> {
    /// Target directory on the server's file system.
    pub target_dir: &'a str,
}
