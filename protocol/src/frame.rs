//! Framing: the 9-byte header, opcodes, [`Frame`] and the entry points
//! [`decode_frame`] / [`encode_frame`].
//!
//! ```text
//! offset  size  field
//! 0       4     length      u32 LE: bytes after this field (opcode + request id + payload)
//! 4       1     opcode      u8, see [`Opcode`]
//! 5       4     request id  u32 LE, echoed by the response
//! 9       ..    payload     length - 5 bytes
//! ```
//!
//! Decoding is two-step, like mini-redis' `Frame::check`: [`FrameHeader::peek`] checks
//! the length against the negotiated maximum as soon as 4 bytes are buffered, and the
//! payload is only parsed once the whole frame is in the buffer. After a decode error
//! for which [`DecodeError::keeps_framing`] is true, a server peeks the header again to
//! learn the request id to answer and how many bytes to skip.

use bytes::{BufMut, BytesMut};

use crate::codec::PResult;
use crate::error::DecodeError;
use crate::request::Request;
use crate::response::{Limits, Response};

/// Size of the length field.
pub const LENGTH_FIELD_LEN: usize = 4;
/// Offset of the opcode byte.
const OPCODE_AT: usize = 4;
/// Offset of the request id.
const REQUEST_ID_AT: usize = 5;
/// Size of the whole header: length, opcode, request id.
pub const HEADER_LEN: usize = 9;
/// Smallest legal value of the length field: opcode + request id, empty payload.
pub const MIN_FRAME_LEN: u32 = 5;

/// Message opcodes. Requests (client → server) are below `0x80`; each response opcode is
/// its request's opcode with the high bit set. `ERROR` (`0xFF`) answers any request.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Handshake: protocol version, client name, token.
    Hello = 0x01,
    /// Liveness check.
    Ping = 0x02,
    /// A batch of increments.
    Incr = 0x10,
    /// Points over a time range.
    Range = 0x20,
    /// One total over a time range.
    Total = 0x21,
    /// Heavy hitters over a time range.
    Top = 0x22,
    /// List matching series.
    Series = 0x23,
    /// Server figures.
    Stats = 0x24,
    /// Admin: flush the memtable.
    Flush = 0x30,
    /// Admin: run a compaction.
    Compact = 0x31,
    /// Admin: write an online snapshot.
    Snapshot = 0x32,
    /// Answer to `HELLO`.
    HelloOk = 0x81,
    /// Answer to `PING`.
    Pong = 0x82,
    /// Answer to `INCR`.
    IncrOk = 0x90,
    /// Answer to an `INCR` with per-event validation.
    IncrReport = 0x91,
    /// Answer to `RANGE`.
    RangeOk = 0xA0,
    /// Answer to `TOTAL`.
    TotalOk = 0xA1,
    /// Answer to `TOP`.
    TopOk = 0xA2,
    /// Answer to `SERIES`.
    SeriesOk = 0xA3,
    /// Answer to `STATS`.
    StatsOk = 0xA4,
    /// Answer to a `TOTAL` whose selector groups.
    TotalGroupsOk = 0xA5,
    /// Answer to `FLUSH`, `COMPACT` and `SNAPSHOT`.
    AdminOk = 0xB0,
    /// Answer to any request that failed.
    Error = 0xFF,
}

impl Opcode {
    /// Every opcode of protocol version 1.
    pub const ALL: [Opcode; 23] = [
        Self::Hello,
        Self::Ping,
        Self::Incr,
        Self::Range,
        Self::Total,
        Self::Top,
        Self::Series,
        Self::Stats,
        Self::Flush,
        Self::Compact,
        Self::Snapshot,
        Self::HelloOk,
        Self::Pong,
        Self::IncrOk,
        Self::IncrReport,
        Self::RangeOk,
        Self::TotalOk,
        Self::TopOk,
        Self::SeriesOk,
        Self::StatsOk,
        Self::TotalGroupsOk,
        Self::AdminOk,
        Self::Error,
    ];

    /// The request opcodes, in opcode order: the commands a client may send.
    pub const REQUESTS: [Opcode; 11] = [
        Self::Hello,
        Self::Ping,
        Self::Incr,
        Self::Range,
        Self::Total,
        Self::Top,
        Self::Series,
        Self::Stats,
        Self::Flush,
        Self::Compact,
        Self::Snapshot,
    ];

    /// The opcode for a wire byte, `None` if unknown.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|op| *op as u8 == b)
    }

    /// The message's name as `docs/PROTOCOL.md` writes it (`INCR`, `TOP_OK`, ...): the
    /// one table of names used by server logs and metrics, client errors and tools.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Ping => "PING",
            Self::Incr => "INCR",
            Self::Range => "RANGE",
            Self::Total => "TOTAL",
            Self::Top => "TOP",
            Self::Series => "SERIES",
            Self::Stats => "STATS",
            Self::Flush => "FLUSH",
            Self::Compact => "COMPACT",
            Self::Snapshot => "SNAPSHOT",
            Self::HelloOk => "HELLO_OK",
            Self::Pong => "PONG",
            Self::IncrOk => "INCR_OK",
            Self::IncrReport => "INCR_REPORT",
            Self::RangeOk => "RANGE_OK",
            Self::TotalOk => "TOTAL_OK",
            Self::TotalGroupsOk => "TOTAL_GROUPS_OK",
            Self::TopOk => "TOP_OK",
            Self::SeriesOk => "SERIES_OK",
            Self::StatsOk => "STATS_OK",
            Self::AdminOk => "ADMIN_OK",
            Self::Error => "ERROR",
        }
    }

    /// Whether this opcode is sent by clients.
    pub fn is_request(self) -> bool {
        (self as u8) < 0x80
    }
}

/// The fixed part of a frame, readable before the payload has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The length field: bytes after it (opcode + request id + payload).
    pub len: u32,
    /// The raw opcode byte (it may be unknown; that is reported once the frame is whole).
    pub opcode: u8,
    /// The request id.
    pub request_id: u32,
}

impl FrameHeader {
    /// Reads the header at the start of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. The length is checked against `max_frame`
    /// as soon as its 4 bytes are present, so an oversized frame is refused before
    /// anything is allocated or waited for.
    pub fn peek(buf: &[u8], max_frame: u32) -> Result<Option<FrameHeader>, DecodeError> {
        let Some(len_bytes) = buf.first_chunk::<LENGTH_FIELD_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len_bytes);
        if len > max_frame {
            return Err(DecodeError::FrameTooLarge {
                declared: len,
                max: max_frame,
            });
        }
        if len < MIN_FRAME_LEN {
            return Err(DecodeError::FrameTooSmall { declared: len });
        }
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let [_, _, _, _, opcode, r0, r1, r2, r3] = *header;
        Ok(Some(FrameHeader {
            len,
            opcode,
            request_id: u32::from_le_bytes([r0, r1, r2, r3]),
        }))
    }

    /// The opcode, `None` if the byte names none.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode)
    }

    /// Size of the whole frame on the wire, length field included.
    pub fn frame_len(&self) -> usize {
        LENGTH_FIELD_LEN + self.len as usize
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The raw opcode byte of the frame starting at `buf`, `None` if fewer than its first
/// 5 bytes are there. The byte may name no [`Opcode`]; [`Opcode::from_u8`] says.
pub fn opcode_of(buf: &[u8]) -> Option<u8> {
    buf.get(OPCODE_AT).copied()
}

/// The request id of the frame starting at `buf`, `None` if its header is incomplete.
pub fn request_id_of(buf: &[u8]) -> Option<u32> {
    let id = buf.get(REQUEST_ID_AT..HEADER_LEN)?;
    id.first_chunk::<4>().map(|b| u32::from_le_bytes(*b))
}

/// Overwrites the request id of the encoded frame starting at `buf`, so a request
/// encoded once can be sent under a new id; `false` if the header is incomplete.
pub fn set_request_id(buf: &mut [u8], request_id: u32) -> bool {
    match buf.get_mut(REQUEST_ID_AT..HEADER_LEN) {
        Some(slot) => {
            slot.copy_from_slice(&request_id.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Any message, request or response.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// Client → server.
    Request(Request<'a>),
    /// Server → client.
    Response(Response<'a>),
}

impl Message<'_> {
    /// The opcode this message is sent with.
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::Request(r) => r.opcode(),
            Self::Response(r) => r.opcode(),
        }
    }

    fn encode_payload(&self, out: &mut BytesMut) {
        match self {
            Self::Request(r) => r.encode_payload(out),
            Self::Response(r) => r.encode_payload(out),
        }
    }

    fn decode(opcode: u8, payload: &[u8], max_events: u32) -> Result<Message<'_>, DecodeError> {
        let op = Opcode::from_u8(opcode).ok_or(DecodeError::UnknownOpcode(opcode))?;
        if op.is_request() {
            Request::decode(op, payload, max_events).map(Message::Request)
        } else {
            Response::decode(op, payload).map(Message::Response)
        }
    }
}

/// One decoded or to-be-encoded frame. Strings and byte strings borrow from the input
/// buffer when decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// Chosen by the client, echoed by the server's answer. `0` is reserved for
    /// connection-level errors that answer no particular request.
    pub request_id: u32,
    /// The message.
    pub message: Message<'a>,
}

/// Decodes one frame from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call
/// again), or the frame and the number of bytes it used. Never panics and never
/// allocates more than the frame's own content needs; `max_frame` bounds the length field.
pub fn decode_frame(buf: &[u8], max_frame: u32) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    decode(buf, max_frame, u32::MAX)
}

/// [`decode_frame`] with every limit a server announced in `HELLO_OK`: besides the frame
/// size, an `INCR` declaring more than `limits.max_batch_events` events is refused with
/// [`DecodeError::BatchTooLarge`] before its events are read or allocated (a decoded event
/// takes more memory than its 2-byte minimum encoding).
pub fn decode_frame_with_limits<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Frame<'a>, usize)>, DecodeError> {
    decode(buf, limits.max_frame, limits.max_batch_events)
}

fn decode(
    buf: &[u8],
    max_frame: u32,
    max_events: u32,
) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    let Some(header) = FrameHeader::peek(buf, max_frame)? else {
        return Ok(None);
    };
    let total = header.frame_len();
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    let message = Message::decode(header.opcode, payload, max_events)?;
    Ok(Some((
        Frame {
            request_id: header.request_id,
            message,
        },
        total,
    )))
}

/// Appends the encoding of `frame` to `out`.
///
/// The payload is written in place and the length patched afterwards: no intermediate
/// buffer. The encoder trusts its input; limits are enforced by the receiving decoder.
pub fn encode_frame(frame: &Frame<'_>, out: &mut BytesMut) {
    let start = begin_frame(out, frame.message.opcode(), frame.request_id);
    frame.message.encode_payload(out);
    finish_frame(out, start);
}

/// Appends a request frame to a reusable buffer without building a [`Frame`].
pub fn encode_request(request_id: u32, request: &Request<'_>, out: &mut BytesMut) {
    let start = begin_frame(out, request.opcode(), request_id);
    request.encode_payload(out);
    finish_frame(out, start);
}

/// Appends a response frame to a reusable buffer without building a [`Frame`].
pub fn encode_response(request_id: u32, response: &Response<'_>, out: &mut BytesMut) {
    let start = begin_frame(out, response.opcode(), request_id);
    response.encode_payload(out);
    finish_frame(out, start);
}

/// Writes a header with a zero length; returns the frame's start offset in `out`.
pub(crate) fn begin_frame(out: &mut BytesMut, opcode: Opcode, request_id: u32) -> usize {
    let start = out.len();
    out.reserve(HEADER_LEN);
    out.put_u32_le(0);
    out.put_u8(opcode as u8);
    out.put_u32_le(request_id);
    start
}

/// Patches the length field of the frame starting at `start` to cover the rest of `out`.
pub(crate) fn finish_frame(out: &mut BytesMut, start: usize) {
    let len = out.len().saturating_sub(start + LENGTH_FIELD_LEN);
    // A frame over 4 GiB cannot be expressed; saturating makes the peer reject it.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    patch_u32(out, start, len);
}

/// Overwrites 4 bytes at `at` with `v` (little-endian); a no-op if out of bounds.
pub(crate) fn patch_u32(out: &mut BytesMut, at: usize, v: u32) {
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
}

/// Parses nothing: the payload of `PING`, `PONG`, `STATS`, `FLUSH`, `COMPACT`.
pub(crate) fn empty(i: &[u8]) -> PResult<'_, ()> {
    Ok((i, ()))
}
