//! `INCR`, the hot path: a batch of counter increments, optionally tagged with a producer
//! id and sequence for exactly-once retries.
//!
//! Each event starts with a flags byte that says how the series is named (full key,
//! per-connection alias, or key + alias definition), whether the delta is the implied
//! `1`, and which optional fields follow. A unit increment of an aliased series is two
//! bytes (`04 <alias>`) when the alias is below 128.
//!
//! Decoding borrows keys and event ids from the input and allocates one `Vec` per batch.
//! [`IncrBuilder`] writes events straight into the output buffer, so a client can batch
//! without building an [`Incr`] at all.

use bytes::{BufMut, BytesMut};

use crate::codec::{
    bytes_, bytes_len, checked_count, invalid, put_bytes, put_str, put_varint, put_varint_i64, run,
    str_, u32_le, u64_le, u8_, varint_i64, varint_len, varint_u32, zigzag, PResult,
};
use crate::error::DecodeError;
use crate::frame::{begin_frame, finish_frame, patch_u32, Opcode};
use crate::{MAX_EVENT_ID_LEN, MAX_SERIES_KEY_LEN};

/// Batch flag: a producer id and sequence follow.
pub const BATCH_HAS_PRODUCER: u8 = 0x01;
/// Batch flag: validate each event on its own and answer with `INCR_REPORT`
/// (applied, duplicate and refused counts, each refused event's index and
/// reason). Without it the batch is all or nothing (strict) and answered
/// `INCR_OK` or `ERROR`, as before the flag existed.
pub const BATCH_PER_EVENT: u8 = 0x02;

/// Event flags, bits 0–1: how the series is named.
pub const EVENT_SERIES_MASK: u8 = 0x03;
/// Series form `0`: a previously defined alias (`varint u32`).
pub const EVENT_SERIES_ALIAS: u8 = 0x00;
/// Series form `1`: a full key (string).
pub const EVENT_SERIES_KEY: u8 = 0x01;
/// Series form `2`: a full key, then the alias (`varint u32`) it defines.
pub const EVENT_SERIES_DEFINE: u8 = 0x02;
/// Event flag: the delta is `1` and not on the wire.
pub const EVENT_UNIT_DELTA: u8 = 0x04;
/// Event flag: a timestamp (zigzag varint, unix ms) follows.
pub const EVENT_HAS_TIMESTAMP: u8 = 0x08;
/// Event flag: an event id (byte string, at most 64 bytes) follows.
pub const EVENT_HAS_ID: u8 = 0x10;
/// Event flags that must be zero in protocol version 1.
pub const EVENT_RESERVED: u8 = 0xE0;

/// Smallest encoded event: a flags byte and a one-byte alias or key length.
const MIN_EVENT_LEN: usize = 2;

/// Exactly-once tag of a batch: the server applies each `(id, sequence)` once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Producer {
    /// Identifies the producer (random per producer instance).
    pub id: u64,
    /// Increases by one per new batch; a retry reuses the batch's sequence.
    pub sequence: u64,
}

/// How an event names its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesRef<'a> {
    /// A canonical series key, e.g. `ad_clicks{ad=ad001,country=US}`.
    Key(&'a str),
    /// An alias defined earlier on this connection.
    Alias(u32),
    /// A key, defining `alias` for it for the rest of the connection (replacing any
    /// earlier definition of that alias).
    Define {
        /// The canonical series key.
        key: &'a str,
        /// The alias being defined.
        alias: u32,
    },
}

/// One increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event<'a> {
    /// The series.
    pub series: SeriesRef<'a>,
    /// The increment (may be negative or zero).
    pub delta: i64,
    /// Unix milliseconds; `None` means the server's receive time.
    pub timestamp_ms: Option<i64>,
    /// Deduplication id (at most 64 bytes): an id seen within the window is not counted again.
    pub event_id: Option<&'a [u8]>,
}

impl<'a> Event<'a> {
    /// An increment by one, at receive time, without event id.
    pub fn unit(series: SeriesRef<'a>) -> Self {
        Self {
            series,
            delta: 1,
            timestamp_ms: None,
            event_id: None,
        }
    }

    /// Encoded size in bytes, e.g. to check that a batch stays under the frame limit.
    pub fn encoded_len(&self) -> usize {
        let series = match self.series {
            SeriesRef::Key(key) => bytes_len(key.as_bytes()),
            SeriesRef::Alias(alias) => varint_len(alias.into()),
            SeriesRef::Define { key, alias } => {
                bytes_len(key.as_bytes()) + varint_len(alias.into())
            }
        };
        let delta = if self.delta == 1 {
            0
        } else {
            varint_len(zigzag(self.delta))
        };
        let ts = self.timestamp_ms.map_or(0, |ts| varint_len(zigzag(ts)));
        let id = self.event_id.map_or(0, bytes_len);
        1 + series + delta + ts + id
    }

    fn encode(&self, out: &mut BytesMut) {
        let mut flags = match self.series {
            SeriesRef::Alias(_) => EVENT_SERIES_ALIAS,
            SeriesRef::Key(_) => EVENT_SERIES_KEY,
            SeriesRef::Define { .. } => EVENT_SERIES_DEFINE,
        };
        if self.delta == 1 {
            flags |= EVENT_UNIT_DELTA;
        }
        if self.timestamp_ms.is_some() {
            flags |= EVENT_HAS_TIMESTAMP;
        }
        if self.event_id.is_some() {
            flags |= EVENT_HAS_ID;
        }
        out.put_u8(flags);
        match self.series {
            SeriesRef::Alias(alias) => put_varint(out, alias.into()),
            SeriesRef::Key(key) => put_str(out, key),
            SeriesRef::Define { key, alias } => {
                put_str(out, key);
                put_varint(out, alias.into());
            }
        }
        if self.delta != 1 {
            put_varint_i64(out, self.delta);
        }
        if let Some(ts) = self.timestamp_ms {
            put_varint_i64(out, ts);
        }
        if let Some(id) = self.event_id {
            put_bytes(out, id);
        }
    }

    fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, flags) = u8_(i, "event flags")?;
        if flags & EVENT_RESERVED != 0 {
            return Err(invalid("event flags", "reserved bits 5-7 must be zero"));
        }
        let (i, series) = match flags & EVENT_SERIES_MASK {
            EVENT_SERIES_ALIAS => {
                let (i, alias) = varint_u32(i, "series alias")?;
                (i, SeriesRef::Alias(alias))
            }
            EVENT_SERIES_KEY => {
                let (i, key) = str_(i, "series key", MAX_SERIES_KEY_LEN)?;
                (i, SeriesRef::Key(key))
            }
            EVENT_SERIES_DEFINE => {
                let (i, key) = str_(i, "series key", MAX_SERIES_KEY_LEN)?;
                let (i, alias) = varint_u32(i, "series alias")?;
                (i, SeriesRef::Define { key, alias })
            }
            _ => return Err(invalid("event flags", "series form 3 is reserved")),
        };
        let (i, delta) = if flags & EVENT_UNIT_DELTA != 0 {
            (i, 1)
        } else {
            varint_i64(i, "delta")?
        };
        let (i, timestamp_ms) = if flags & EVENT_HAS_TIMESTAMP != 0 {
            let (i, ts) = varint_i64(i, "timestamp")?;
            (i, Some(ts))
        } else {
            (i, None)
        };
        let (i, event_id) = if flags & EVENT_HAS_ID != 0 {
            let (i, id) = bytes_(i, "event id", MAX_EVENT_ID_LEN)?;
            (i, Some(id))
        } else {
            (i, None)
        };
        Ok((
            i,
            Event {
                series,
                delta,
                timestamp_ms,
                event_id,
            },
        ))
    }
}

/// `INCR`: a batch of events, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incr<'a> {
    /// Exactly-once tag; `None` for at-least-once batches.
    pub producer: Option<Producer>,
    /// The events.
    pub events: Vec<Event<'a>>,
    /// Validate each event on its own and answer `INCR_REPORT`
    /// ([`BATCH_PER_EVENT`]); `false` keeps the batch all or nothing.
    pub per_event: bool,
}

fn put_batch_head(out: &mut BytesMut, producer: Option<Producer>, per_event: bool) {
    let each = if per_event { BATCH_PER_EVENT } else { 0 };
    match producer {
        Some(p) => {
            out.put_u8(BATCH_HAS_PRODUCER | each);
            out.put_u64_le(p.id);
            out.put_u64_le(p.sequence);
        }
        None => out.put_u8(each),
    }
}

impl<'a> Incr<'a> {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        put_batch_head(out, self.producer, self.per_event);
        // More than u32::MAX events cannot be framed anyway (each takes 2+ bytes).
        out.put_u32_le(u32::try_from(self.events.len()).unwrap_or(u32::MAX));
        for event in &self.events {
            event.encode(out);
        }
    }

    /// Decodes a payload; more than `max_events` events is refused before reading them.
    pub(crate) fn decode(p: &'a [u8], max_events: u32) -> Result<Self, DecodeError> {
        run(p, |i| {
            let (i, flags) = u8_(i, "batch flags")?;
            if flags & !(BATCH_HAS_PRODUCER | BATCH_PER_EVENT) != 0 {
                return Err(invalid("batch flags", "reserved bits 2-7 must be zero"));
            }
            let per_event = flags & BATCH_PER_EVENT != 0;
            let (i, producer) = if flags & BATCH_HAS_PRODUCER != 0 {
                let (i, id) = u64_le(i, "producer id")?;
                let (i, sequence) = u64_le(i, "producer sequence")?;
                (i, Some(Producer { id, sequence }))
            } else {
                (i, None)
            };
            let (mut i, n) = u32_le(i, "event count")?;
            if n > max_events {
                return Err(nom::Err::Error(DecodeError::BatchTooLarge {
                    declared: n,
                    max: max_events,
                }));
            }
            let n = checked_count(i, n, "event count", MIN_EVENT_LEN)?;
            let mut events = Vec::with_capacity(n);
            for _ in 0..n {
                let (rest, event) = Event::parse(i)?;
                events.push(event);
                i = rest;
            }
            Ok((
                i,
                Incr {
                    producer,
                    events,
                    per_event,
                },
            ))
        })
    }
}

/// Streams an `INCR` frame into a buffer, one event at a time.
///
/// The frame in `out` is complete and valid after [`new`](Self::new) and after every
/// [`push`](Self::push): the length field and the event count are patched in place, so
/// there is nothing to finish and no intermediate allocation.
#[derive(Debug)]
pub struct IncrBuilder<'b> {
    out: &'b mut BytesMut,
    start: usize,
    count_at: usize,
    events: u32,
}

impl<'b> IncrBuilder<'b> {
    /// Starts an `INCR` frame at the end of `out`.
    pub fn new(out: &'b mut BytesMut, request_id: u32, producer: Option<Producer>) -> Self {
        Self::with_validation(out, request_id, producer, false)
    }

    /// Starts an `INCR` frame that asks for per-event validation when
    /// `per_event` ([`BATCH_PER_EVENT`]).
    pub fn with_validation(
        out: &'b mut BytesMut,
        request_id: u32,
        producer: Option<Producer>,
        per_event: bool,
    ) -> Self {
        let start = begin_frame(out, Opcode::Incr, request_id);
        put_batch_head(out, producer, per_event);
        let count_at = out.len();
        out.put_u32_le(0);
        finish_frame(out, start);
        Self {
            out,
            start,
            count_at,
            events: 0,
        }
    }

    /// Appends one event.
    pub fn push(&mut self, event: &Event<'_>) {
        event.encode(self.out);
        self.events = self.events.saturating_add(1);
        patch_u32(self.out, self.count_at, self.events);
        finish_frame(self.out, self.start);
    }

    /// Events pushed so far.
    pub fn events(&self) -> u32 {
        self.events
    }

    /// Size of the frame so far, header included.
    pub fn frame_len(&self) -> usize {
        self.out.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_state_unit_increment_is_two_bytes() {
        let e = Event::unit(SeriesRef::Alias(5));
        let mut out = BytesMut::new();
        e.encode(&mut out);
        assert_eq!(&out[..], [0x04, 0x05]);
        assert_eq!(e.encoded_len(), 2);
    }

    #[test]
    fn encoded_len_matches_encoding() {
        let events = [
            Event::unit(SeriesRef::Key("a{b=c}")),
            Event {
                series: SeriesRef::Define {
                    key: "x",
                    alias: 300,
                },
                delta: -5,
                timestamp_ms: Some(1_700_000_000_000),
                event_id: Some(b"id-1"),
            },
            Event {
                series: SeriesRef::Alias(u32::MAX),
                delta: i64::MIN,
                timestamp_ms: Some(-1),
                event_id: Some(b""),
            },
        ];
        for e in events {
            let mut out = BytesMut::new();
            e.encode(&mut out);
            assert_eq!(out.len(), e.encoded_len(), "{e:?}");
        }
    }

    fn parse_err(bytes: &[u8]) -> nom::Err<DecodeError> {
        match Event::parse(bytes) {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn event_flags_are_checked() {
        assert_eq!(
            parse_err(&[0x20, 0x01]),
            invalid("event flags", "reserved bits 5-7 must be zero")
        );
        assert_eq!(
            parse_err(&[0x03, 0x01]),
            invalid("event flags", "series form 3 is reserved")
        );
        let mut long_id = vec![
            EVENT_SERIES_ALIAS | EVENT_UNIT_DELTA | EVENT_HAS_ID,
            0x01,
            65,
        ];
        long_id.extend([0u8; 65]);
        assert_eq!(
            parse_err(&long_id),
            invalid("event id", "longer than its limit")
        );
    }

    #[test]
    fn huge_event_count_is_refused_before_allocating() {
        // No producer, u32::MAX events, two bytes of events.
        let p = [0x00, 0xff, 0xff, 0xff, 0xff, 0x04, 0x01];
        assert_eq!(
            Incr::decode(&p, u32::MAX),
            Err(DecodeError::Truncated {
                what: "event count"
            })
        );
    }

    #[test]
    fn builder_matches_encoder() {
        let producer = Some(Producer { id: 7, sequence: 9 });
        let events = vec![
            Event::unit(SeriesRef::Define {
                key: "hits{page=/}",
                alias: 1,
            }),
            Event::unit(SeriesRef::Alias(1)),
            Event {
                delta: 3,
                ..Event::unit(SeriesRef::Key("x"))
            },
        ];
        let mut built = BytesMut::new();
        built.extend_from_slice(b"prefix");
        let mut b = IncrBuilder::new(&mut built, 42, producer);
        for e in &events {
            b.push(e);
        }
        assert_eq!(b.events(), 3);
        let len = b.frame_len();
        let mut encoded = BytesMut::new();
        crate::encode_request(
            42,
            &crate::Request::Incr(Incr {
                producer,
                events,
                per_event: false,
            }),
            &mut encoded,
        );
        assert_eq!(&built[6..], &encoded[..]);
        assert_eq!(len, encoded.len());
    }
}
