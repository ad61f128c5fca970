//! TallyDB wire protocol, version [`PROTOCOL_VERSION`]: frames and messages exchanged
//! between clients and `tallyd` over TCP, with an encoder and a `nom` decoder.
//!
//! The crate is pure: functions over byte slices and [`bytes::BytesMut`], no I/O, no
//! async. The byte-by-byte specification is `docs/PROTOCOL.md`; its hex examples are
//! checked by this crate's tests.
//!
//! # Module tour
//!
//! - [`frame`]: the 9-byte header (length, opcode, request id) with its accessors
//!   ([`FrameHeader::peek`], [`opcode_of`], [`request_id_of`], [`set_request_id`]: no
//!   other crate reads raw frame offsets), [`Opcode`] and its names ([`Opcode::name`]),
//!   [`Frame`], [`Message`], and the entry points [`decode_frame`] (or
//!   [`decode_frame_with_limits`]), [`encode_frame`],
//!   [`encode_request`], [`encode_response`].
//! - [`request`]: client → server messages ([`Request`]): `HELLO`, queries with their
//!   [`Selector`], admin commands.
//! - [`incr`]: the `INCR` batch ([`Incr`], [`Event`], [`SeriesRef`] with per-connection
//!   aliases) and [`IncrBuilder`], which streams events into a buffer.
//! - [`response`]: server → client messages ([`Response`]), including [`ErrorReply`].
//! - [`total_groups`]: `TOTAL_GROUPS_OK`, the per-group answer to a grouping `TOTAL`
//!   ([`total_groups::TotalGroupsOk`] and its owned form).
//! - [`answer`]: the owned forms of the responses ([`Answer`], [`answer::TopResult`],
//!   [`answer::RangeResult`] ...) a client keeps after decoding; used by the client crate.
//! - [`text`]: selectors and times as people type them, one parser for every tool
//!   ([`text::ParsedSelector`], [`text::parse_time`]).
//! - [`error`]: [`DecodeError`] for untrusted bytes and the stable [`ErrorCode`]s.
//! - `codec` (private): varints, zigzag, strings, counts — the wire primitives.
//! - `fuzzing` (hidden, only with the cargo feature `fuzzing`, off by default): the
//!   properties checked by the fuzz targets, kept beside them in
//!   `protocol/fuzz/properties.rs`, and by the corpus replay test `tests/fuzz_corpus.rs`.
//!
//! # Decoding
//!
//! ```
//! use tallydb_protocol::{decode_frame, encode_request, Message, Request};
//! let mut buf = bytes::BytesMut::new();
//! encode_request(7, &Request::Ping, &mut buf);
//! assert_eq!(decode_frame(&buf[..4], 1024), Ok(None)); // not enough bytes yet
//! let (frame, used) = decode_frame(&buf, 1024).unwrap().unwrap();
//! assert_eq!((frame.request_id, frame.message, used), (7, Message::Request(Request::Ping), 9));
//! ```
//!
//! Decoded messages borrow strings and byte strings from the input buffer; decoding an
//! `INCR` allocates one `Vec` for its events, whatever their number.
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod answer;
mod codec;
pub mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "../fuzz/properties.rs"]
pub mod fuzzing;
pub mod incr;
pub mod request;
pub mod response;
pub mod text;
pub mod total_groups;

#[cfg(test)]
mod tests;

pub use answer::Answer;
pub use error::{DecodeError, ErrorCode};
pub use frame::{
    decode_frame, decode_frame_with_limits, encode_frame, encode_request, encode_response,
    opcode_of, request_id_of, set_request_id, Frame, FrameHeader, Message, Opcode, HEADER_LEN,
};
pub use incr::{Event, Incr, IncrBuilder, Producer, SeriesRef, BATCH_PER_EVENT};
pub use request::{
    Function, Hello, MatchOp, Matcher, MetricSelector, PrefixSelector, RangeQuery, Request,
    Selector, SeriesQuery, Snapshot, Step, TopQuery, TotalQuery,
};
pub use response::{
    AdminOk, ErrorReply, Group, HelloOk, IncrOk, IncrReport, Label, Limits, Point, RangeGroups,
    RangeOk, Refusal, Response, Role, SeriesOk, Stat, StatsOk, Tiers, TopEntry, TopOk, TotalOk,
    ValueKind,
};

/// The protocol version this crate speaks. `HELLO` must carry exactly this value.
pub const PROTOCOL_VERSION: u16 = 1;

/// The frame limit both sides apply until `HELLO_OK` announces the negotiated one.
pub const HANDSHAKE_MAX_FRAME: u32 = 4096;

/// Longest series key in bytes.
pub const MAX_SERIES_KEY_LEN: usize = 1024;
/// Longest event id in bytes.
pub const MAX_EVENT_ID_LEN: usize = 64;
/// Longest metric name, prefix, label name or value, stat name or server version, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest `HELLO` client name in bytes.
pub const MAX_CLIENT_NAME_LEN: usize = 256;
/// Longest `HELLO` token in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Longest `SNAPSHOT` target path in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest error or admin message: bounded only by the frame.
pub const MAX_MESSAGE_LEN: usize = u32::MAX as usize;
