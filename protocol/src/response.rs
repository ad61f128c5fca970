//! Server → client messages: [`Response`] and its payload types.
//!
//! Every query answer says which tiers served it ([`Tiers`]) and `closed_until_ms`: buckets
//! starting at or after it may still grow.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::codec::{
    bool_, count, f64_le, i64_le, invalid, put_count, put_str, run, str_, u16_le, u32_le, u64_le,
    u8_, PResult,
};
use crate::error::{DecodeError, ErrorCode};
use crate::frame::{empty, Opcode};
use crate::{MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_SERIES_KEY_LEN, PROTOCOL_VERSION};

/// A message sent by the server, answering the request with the same request id.
#[derive(Debug, Clone, PartialEq)]
pub enum Response<'a> {
    /// Answers `HELLO`: the session is open.
    HelloOk(HelloOk<'a>),
    /// Answers `PING`.
    Pong,
    /// Answers `INCR`.
    IncrOk(IncrOk),
    /// Answers an `INCR` that asked for per-event validation.
    IncrReport(IncrReport<'a>),
    /// Answers `RANGE`.
    RangeOk(RangeOk<'a>),
    /// Answers `TOTAL`.
    TotalOk(TotalOk),
    /// Answers a `TOTAL` whose selector groups.
    TotalGroupsOk(crate::total_groups::TotalGroupsOk<'a>),
    /// Answers `TOP`.
    TopOk(TopOk<'a>),
    /// Answers `SERIES`.
    SeriesOk(SeriesOk<'a>),
    /// Answers `STATS`.
    StatsOk(StatsOk<'a>),
    /// Answers `FLUSH`, `COMPACT` and `SNAPSHOT`.
    AdminOk(AdminOk<'a>),
    /// Answers any request that failed.
    Error(ErrorReply<'a>),
}

impl<'a> Response<'a> {
    /// The opcode this response is sent with.
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

    pub(crate) fn encode_payload(&self, out: &mut BytesMut) {
        match self {
            Self::HelloOk(r) => r.encode(out),
            Self::Pong => {}
            Self::IncrOk(r) => r.encode(out),
            Self::IncrReport(r) => r.encode(out),
            Self::RangeOk(r) => r.encode(out),
            Self::TotalOk(r) => r.encode(out),
            Self::TotalGroupsOk(r) => r.encode(out),
            Self::TopOk(r) => r.encode(out),
            Self::SeriesOk(r) => r.encode(out),
            Self::StatsOk(r) => r.encode(out),
            Self::AdminOk(r) => put_str(out, &r.message),
            Self::Error(r) => r.encode(out),
        }
    }

    /// Decodes a response payload; `op` must be a response opcode.
    pub(crate) fn decode(op: Opcode, p: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(match op {
            Opcode::HelloOk => Self::HelloOk(run(p, HelloOk::parse)?),
            Opcode::Pong => run(p, empty).map(|()| Self::Pong)?,
            Opcode::IncrOk => Self::IncrOk(run(p, IncrOk::parse)?),
            Opcode::IncrReport => Self::IncrReport(run(p, IncrReport::parse)?),
            Opcode::RangeOk => Self::RangeOk(run(p, RangeOk::parse)?),
            Opcode::TotalOk => Self::TotalOk(run(p, TotalOk::parse)?),
            Opcode::TotalGroupsOk => {
                Self::TotalGroupsOk(run(p, crate::total_groups::TotalGroupsOk::parse)?)
            }
            Opcode::TopOk => Self::TopOk(run(p, TopOk::parse)?),
            Opcode::SeriesOk => Self::SeriesOk(run(p, SeriesOk::parse)?),
            Opcode::StatsOk => Self::StatsOk(run(p, StatsOk::parse)?),
            Opcode::AdminOk => Self::AdminOk(run(p, |i| {
                let (i, message) = str_(i, "admin message", MAX_MESSAGE_LEN)?;
                Ok((i, AdminOk::new(message)))
            })?),
            Opcode::Error => Self::Error(run(p, ErrorReply::parse)?),
            other => return Err(DecodeError::UnknownOpcode(other as u8)),
        })
    }
}

/// What a connection may do, granted by the server from the `HELLO` token.
/// Roles are ordered: each one allows everything the previous one does.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Queries, `PING`, `STATS`.
    Read = 0,
    /// Read, plus `INCR`.
    Write = 1,
    /// Write, plus `FLUSH`, `COMPACT`, `SNAPSHOT`.
    Admin = 2,
}

/// Limits the server enforces for this connection, announced in `HELLO_OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Largest length field accepted, in both directions.
    pub max_frame: u32,
    /// Most events in one `INCR`.
    pub max_batch_events: u32,
    /// Aliases must be below this value (the server keeps at most this many per connection).
    pub max_aliases: u32,
}

/// `HELLO_OK`: the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk<'a> {
    /// The protocol version in use (equal to the client's).
    pub protocol_version: u16,
    /// The server's software version, e.g. `tallyd 0.1.0`.
    pub server_version: &'a str,
    /// Limits for the rest of the connection.
    pub limits: Limits,
    /// The role granted.
    pub role: Role,
}

impl<'a> HelloOk<'a> {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.protocol_version);
        put_str(out, self.server_version);
        out.put_u32_le(self.limits.max_frame);
        out.put_u32_le(self.limits.max_batch_events);
        out.put_u32_le(self.limits.max_aliases);
        out.put_u8(self.role as u8);
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, protocol_version) = u16_le(i, "protocol version")?;
        let (i, server_version) = str_(i, "server version", MAX_NAME_LEN)?;
        let (i, max_frame) = u32_le(i, "max frame")?;
        let (i, max_batch_events) = u32_le(i, "max batch events")?;
        let (i, max_aliases) = u32_le(i, "max aliases")?;
        let (i, role) = u8_(i, "role")?;
        let role = match role {
            0 => Role::Read,
            1 => Role::Write,
            2 => Role::Admin,
            _ => return Err(invalid("role", "must be 0, 1 or 2")),
        };
        Ok((
            i,
            HelloOk {
                protocol_version,
                server_version,
                limits: Limits {
                    max_frame,
                    max_batch_events,
                    max_aliases,
                },
                role,
            },
        ))
    }
}

/// `INCR_OK`: the batch is durable (per the server's fsync mode) and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IncrOk {
    /// Events counted by this batch.
    pub applied: u32,
    /// Events skipped because their event id was already seen.
    pub duplicates: u32,
    /// The producer sequence was already applied: nothing was counted again.
    pub duplicate_batch: bool,
}

impl IncrOk {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.applied);
        out.put_u32_le(self.duplicates);
        out.put_u8(u8::from(self.duplicate_batch));
    }

    fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, applied) = u32_le(i, "applied")?;
        let (i, duplicates) = u32_le(i, "duplicates")?;
        let (i, duplicate_batch) = bool_(i, "duplicate batch")?;
        Ok((
            i,
            IncrOk {
                applied,
                duplicates,
                duplicate_batch,
            },
        ))
    }
}

/// `INCR_REPORT`: the answer to an `INCR` with per-event validation. The applied
/// events are durable (per the server's fsync mode) and counted; each refused event
/// is listed with its index and reason. `applied + duplicates + refused` is the
/// number of events sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IncrReport<'a> {
    /// Events counted by this batch.
    pub applied: u32,
    /// Events skipped because their event id was already seen.
    pub duplicates: u32,
    /// The producer sequence was already applied: nothing was counted again, and
    /// `refused_count` repeats the number refused the first time, without the list.
    pub duplicate_batch: bool,
    /// Events refused (may exceed `refused.len()` only for a duplicate batch).
    pub refused_count: u32,
    /// The refused events, by increasing index.
    pub refused: Vec<Refusal<'a>>,
}

/// One refused event of an `INCR_REPORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal<'a> {
    /// Position of the event in its batch (0-based).
    pub index: u32,
    /// Why, as an error code ([`ErrorCode`]); unknown codes must be accepted.
    pub code: u16,
    /// Human-readable reason naming the rule or limit.
    pub message: Cow<'a, str>,
}

/// Smallest encoded refusal: `u32` index, `u16` code, empty message.
const MIN_REFUSAL_LEN: usize = 7;

impl<'a> IncrReport<'a> {
    /// The same report, owning its messages.
    pub fn into_owned(self) -> IncrReport<'static> {
        IncrReport {
            applied: self.applied,
            duplicates: self.duplicates,
            duplicate_batch: self.duplicate_batch,
            refused_count: self.refused_count,
            refused: self
                .refused
                .into_iter()
                .map(|r| Refusal {
                    index: r.index,
                    code: r.code,
                    message: Cow::Owned(r.message.into_owned()),
                })
                .collect(),
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.applied);
        out.put_u32_le(self.duplicates);
        out.put_u8(u8::from(self.duplicate_batch));
        out.put_u32_le(self.refused_count);
        put_count(out, self.refused.len());
        for r in &self.refused {
            out.put_u32_le(r.index);
            out.put_u16_le(r.code);
            put_str(out, &r.message);
        }
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, applied) = u32_le(i, "applied")?;
        let (i, duplicates) = u32_le(i, "duplicates")?;
        let (i, duplicate_batch) = bool_(i, "duplicate batch")?;
        let (i, refused_count) = u32_le(i, "refused count")?;
        let (mut i, n) = count(i, "refused events", MIN_REFUSAL_LEN)?;
        let mut refused = Vec::with_capacity(n);
        for _ in 0..n {
            let (rest, index) = u32_le(i, "refused index")?;
            let (rest, code) = u16_le(rest, "refusal code")?;
            let (rest, message) = str_(rest, "refusal message", MAX_MESSAGE_LEN)?;
            refused.push(Refusal {
                index,
                code,
                message: Cow::Borrowed(message),
            });
            i = rest;
        }
        if refused.len() > refused_count as usize {
            return Err(invalid("refused count", "smaller than the refused list"));
        }
        Ok((
            i,
            IncrReport {
                applied,
                duplicates,
                duplicate_batch,
                refused_count,
                refused,
            },
        ))
    }
}

/// Which tiers served an answer: a bitmask of [`Tiers::MINUTE`], [`Tiers::HOUR`],
/// [`Tiers::DAY`]. Unknown bits are kept, not refused, so later tiers do not break
/// older clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tiers(pub u8);

impl Tiers {
    /// The minute tier.
    pub const MINUTE: Tiers = Tiers(1);
    /// The hour tier.
    pub const HOUR: Tiers = Tiers(2);
    /// The day tier.
    pub const DAY: Tiers = Tiers(4);

    /// Whether every tier in `other` is in `self`.
    pub fn contains(self, other: Tiers) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Tiers {
    type Output = Tiers;
    fn bitor(self, rhs: Tiers) -> Tiers {
        Tiers(self.0 | rhs.0)
    }
}

/// Whether `RANGE_OK` points carry integers or floats.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `i64` values: sum, count, min, max.
    Int = 0,
    /// `f64` values: avg, rate.
    Float = 1,
}

/// A label of a group: `name=value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label<'a> {
    /// Label name.
    pub name: &'a str,
    /// Label value.
    pub value: &'a str,
}

/// One bucket of a `RANGE` answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point<V> {
    /// Bucket start, unix milliseconds.
    pub ts_ms: i64,
    /// The function's value in the bucket.
    pub value: V,
}

/// The points of one group (one label combination, or everything when not grouped).
#[derive(Debug, Clone, PartialEq)]
pub struct Group<'a, V> {
    /// The group's labels; empty when the query has no group-by.
    pub labels: Vec<Label<'a>>,
    /// Points in increasing time order.
    pub points: Vec<Point<V>>,
}

/// The groups of a `RANGE` answer, all integers or all floats.
#[derive(Debug, Clone, PartialEq)]
pub enum RangeGroups<'a> {
    /// For sum, count, min, max.
    Int(Vec<Group<'a, i64>>),
    /// For avg, rate.
    Float(Vec<Group<'a, f64>>),
}

impl RangeGroups<'_> {
    /// The value kind byte this answer is sent with.
    pub fn kind(&self) -> ValueKind {
        match self {
            Self::Int(_) => ValueKind::Int,
            Self::Float(_) => ValueKind::Float,
        }
    }
}

/// `RANGE_OK`: points per group.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeOk<'a> {
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets at or after this time may still grow.
    pub closed_until_ms: i64,
    /// The step actually used, in milliseconds.
    pub step_ms: u64,
    /// The groups and their points.
    pub groups: RangeGroups<'a>,
}

/// Encoded size of a point: timestamp and value.
const POINT_LEN: usize = 16;

fn put_groups<V: Copy>(out: &mut BytesMut, groups: &[Group<'_, V>], put: fn(&mut BytesMut, V)) {
    put_count(out, groups.len());
    for g in groups {
        put_count(out, g.labels.len());
        for l in &g.labels {
            put_str(out, l.name);
            put_str(out, l.value);
        }
        put_count(out, g.points.len());
        for p in &g.points {
            out.put_i64_le(p.ts_ms);
            put(out, p.value);
        }
    }
}

fn parse_groups<'a, V>(
    i: &'a [u8],
    value: fn(&'a [u8], &'static str) -> PResult<'a, V>,
) -> PResult<'a, Vec<Group<'a, V>>> {
    // A group is at least a label count and a point count.
    let (mut i, n) = count(i, "group count", 2)?;
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut rest, n_labels) = count(i, "label count", 2)?;
        let mut labels = Vec::with_capacity(n_labels);
        for _ in 0..n_labels {
            let (r, name) = str_(rest, "label name", MAX_NAME_LEN)?;
            let (r, value) = str_(r, "label value", MAX_NAME_LEN)?;
            labels.push(Label { name, value });
            rest = r;
        }
        let (mut rest, n_points) = count(rest, "point count", POINT_LEN)?;
        let mut points = Vec::with_capacity(n_points);
        for _ in 0..n_points {
            let (r, ts_ms) = i64_le(rest, "point time")?;
            let (r, v) = value(r, "point value")?;
            points.push(Point { ts_ms, value: v });
            rest = r;
        }
        groups.push(Group { labels, points });
        i = rest;
    }
    Ok((i, groups))
}

impl<'a> RangeOk<'a> {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.tiers.0);
        out.put_i64_le(self.closed_until_ms);
        out.put_u64_le(self.step_ms);
        out.put_u8(self.groups.kind() as u8);
        match &self.groups {
            RangeGroups::Int(g) => put_groups(out, g, |o, v| o.put_i64_le(v)),
            RangeGroups::Float(g) => put_groups(out, g, |o, v| o.put_f64_le(v)),
        }
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, tiers) = u8_(i, "tiers")?;
        let (i, closed_until_ms) = i64_le(i, "closed until")?;
        let (i, step_ms) = u64_le(i, "step")?;
        let (i, kind) = u8_(i, "value kind")?;
        let (i, groups) = match kind {
            0 => {
                let (i, g) = parse_groups(i, i64_le)?;
                (i, RangeGroups::Int(g))
            }
            1 => {
                let (i, g) = parse_groups(i, f64_le)?;
                (i, RangeGroups::Float(g))
            }
            _ => return Err(invalid("value kind", "must be 0 (int) or 1 (float)")),
        };
        Ok((
            i,
            RangeOk {
                tiers: Tiers(tiers),
                closed_until_ms,
                step_ms,
                groups,
            },
        ))
    }
}

/// `TOTAL_OK`: one sum over the range actually covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotalOk {
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
    /// Start actually covered (bucket-aligned), unix milliseconds.
    pub from_ms: i64,
    /// End actually covered (exclusive), unix milliseconds.
    pub to_ms: i64,
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets at or after this time may still grow.
    pub closed_until_ms: i64,
}

impl TotalOk {
    fn encode(&self, out: &mut BytesMut) {
        out.put_i64_le(self.sum);
        out.put_u64_le(self.count);
        out.put_i64_le(self.from_ms);
        out.put_i64_le(self.to_ms);
        out.put_u8(self.tiers.0);
        out.put_i64_le(self.closed_until_ms);
    }

    fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, sum) = i64_le(i, "sum")?;
        let (i, count) = u64_le(i, "count")?;
        let (i, from_ms) = i64_le(i, "from")?;
        let (i, to_ms) = i64_le(i, "to")?;
        let (i, tiers) = u8_(i, "tiers")?;
        let (i, closed_until_ms) = i64_le(i, "closed until")?;
        Ok((
            i,
            TotalOk {
                sum,
                count,
                from_ms,
                to_ms,
                tiers: Tiers(tiers),
                closed_until_ms,
            },
        ))
    }
}

/// One `TOP_OK` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopEntry<'a> {
    /// A series key, or a label value when the query grouped by a label.
    pub name: &'a str,
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
}

/// `TOP_OK`: entries by decreasing sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopOk<'a> {
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets at or after this time may still grow.
    pub closed_until_ms: i64,
    /// The entries.
    pub entries: Vec<TopEntry<'a>>,
}

impl<'a> TopOk<'a> {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.tiers.0);
        out.put_i64_le(self.closed_until_ms);
        put_count(out, self.entries.len());
        for e in &self.entries {
            put_str(out, e.name);
            out.put_i64_le(e.sum);
            out.put_u64_le(e.count);
        }
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, tiers) = u8_(i, "tiers")?;
        let (i, closed_until_ms) = i64_le(i, "closed until")?;
        let (mut i, n) = count(i, "entry count", 17)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let (r, name) = str_(i, "entry name", MAX_SERIES_KEY_LEN)?;
            let (r, sum) = i64_le(r, "entry sum")?;
            let (r, count) = u64_le(r, "entry count")?;
            entries.push(TopEntry { name, sum, count });
            i = r;
        }
        Ok((
            i,
            TopOk {
                tiers: Tiers(tiers),
                closed_until_ms,
                entries,
            },
        ))
    }
}

/// `SERIES_OK`: matching keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesOk<'a> {
    /// Canonical series keys.
    pub keys: Vec<&'a str>,
    /// More keys matched than the limit allowed.
    pub truncated: bool,
}

impl<'a> SeriesOk<'a> {
    fn encode(&self, out: &mut BytesMut) {
        put_count(out, self.keys.len());
        for k in &self.keys {
            put_str(out, k);
        }
        out.put_u8(u8::from(self.truncated));
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (mut i, n) = count(i, "key count", 1)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let (r, key) = str_(i, "series key", MAX_SERIES_KEY_LEN)?;
            keys.push(key);
            i = r;
        }
        let (i, truncated) = bool_(i, "truncated")?;
        Ok((i, SeriesOk { keys, truncated }))
    }
}

/// One server figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stat<'a> {
    /// Dotted name, e.g. `wal.fsyncs`.
    pub name: &'a str,
    /// Value.
    pub value: u64,
}

/// `STATS_OK`: server figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsOk<'a> {
    /// The figures.
    pub entries: Vec<Stat<'a>>,
}

impl<'a> StatsOk<'a> {
    fn encode(&self, out: &mut BytesMut) {
        put_count(out, self.entries.len());
        for s in &self.entries {
            put_str(out, s.name);
            out.put_u64_le(s.value);
        }
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (mut i, n) = count(i, "stat count", 9)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let (r, name) = str_(i, "stat name", MAX_NAME_LEN)?;
            let (r, value) = u64_le(r, "stat value")?;
            entries.push(Stat { name, value });
            i = r;
        }
        Ok((i, StatsOk { entries }))
    }
}

/// `ADMIN_OK`: an admin command finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminOk<'a> {
    /// Human-readable outcome, e.g. `snapshot written to /backups/x (12 files)`.
    pub message: Cow<'a, str>,
}

impl<'a> AdminOk<'a> {
    /// An `ADMIN_OK` with this message.
    pub fn new(message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// `ERROR`: a request failed. Its layout is frozen across protocol versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply<'a> {
    /// The raw code; see [`ErrorCode`]. Unknown codes must be accepted.
    pub code: u16,
    /// Whether resending the same request later may succeed.
    pub retryable: bool,
    /// Human-readable explanation naming the rule or limit that was broken.
    pub message: Cow<'a, str>,
}

impl<'a> ErrorReply<'a> {
    /// An error with `code`'s default retryability.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            code: code.code(),
            retryable: code.is_retryable(),
            message: message.into(),
        }
    }

    /// The same error, owning its message.
    pub fn into_owned(self) -> ErrorReply<'static> {
        ErrorReply {
            code: self.code,
            retryable: self.retryable,
            message: Cow::Owned(self.message.into_owned()),
        }
    }

    /// The code as an [`ErrorCode`], `None` if this version does not know it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code)
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.code);
        out.put_u8(u8::from(self.retryable));
        put_str(out, &self.message);
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, code) = u16_le(i, "error code")?;
        let (i, retryable) = bool_(i, "retryable")?;
        let (i, message) = str_(i, "error message", MAX_MESSAGE_LEN)?;
        Ok((
            i,
            ErrorReply {
                code,
                retryable,
                message: Cow::Borrowed(message),
            },
        ))
    }
}

impl ErrorReply<'static> {
    /// The answer to a `HELLO` with another protocol version; the message names both.
    pub fn unsupported_version(client_version: u16) -> Self {
        Self::from_decode_error(&DecodeError::UnsupportedVersion {
            client: client_version,
            server: PROTOCOL_VERSION,
        })
    }

    /// The answer to a frame that failed to decode.
    pub fn from_decode_error(err: &DecodeError) -> Self {
        Self::new(err.error_code(), err.to_string())
    }
}

#[cfg(test)]
mod incr_report_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The example payload of docs/PROTOCOL.md §6.4a.
    #[test]
    fn incr_report_layout_matches_the_document() {
        let report = IncrReport {
            applied: 2,
            duplicates: 0,
            duplicate_batch: false,
            refused_count: 1,
            refused: vec![Refusal {
                index: 1,
                code: ErrorCode::TooFarInFuture.code(),
                message: Cow::Borrowed("x"),
            }],
        };
        let mut out = BytesMut::new();
        report.encode(&mut out);
        let want = [
            2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0x0a, 0, 1, b'x',
        ];
        assert_eq!(&out[..], &want[..]);
        let back = Response::decode(Opcode::IncrReport, &want).unwrap();
        assert_eq!(back, Response::IncrReport(report));
        // A list longer than the count is refused.
        let mut bad = want;
        bad[9] = 0;
        assert!(Response::decode(Opcode::IncrReport, &bad).is_err());
    }
}
