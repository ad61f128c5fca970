//! Typed errors: [`DecodeError`] for untrusted bytes and [`ErrorCode`], the stable
//! numeric codes carried by `ERROR` frames.

use nom::error::{ErrorKind, ParseError};

use crate::PROTOCOL_VERSION;

/// Why a byte buffer is not a valid frame.
///
/// Returned by [`decode_frame`](crate::decode_frame) and [`FrameHeader::peek`](crate::FrameHeader::peek).
/// "Not enough bytes yet" is *not* an error: it is `Ok(None)`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length field declares a frame larger than the negotiated maximum. Reported as
    /// soon as the 4-byte length is readable, before anything is allocated.
    #[error("frame too large: declares {declared} bytes, the limit is {max}")]
    FrameTooLarge {
        /// The value of the length field.
        declared: u32,
        /// The limit the decoder was given.
        max: u32,
    },
    /// The length field is below 5, the size of opcode and request id: framing is lost.
    #[error("frame length {declared} is shorter than the 5 bytes of opcode and request id")]
    FrameTooSmall {
        /// The value of the length field.
        declared: u32,
    },
    /// The opcode byte names no message of this protocol version.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// A `HELLO` asked for a protocol version this crate does not speak.
    #[error("unsupported protocol version {client}: this server speaks version {server}")]
    UnsupportedVersion {
        /// The version the client asked for.
        client: u16,
        /// The version this crate speaks ([`PROTOCOL_VERSION`]).
        server: u16,
    },
    /// The frame ended (or a declared count needs more bytes than the frame has left)
    /// while reading `what`.
    #[error("frame truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A field holds a value the protocol does not allow.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The field being read.
        what: &'static str,
        /// The rule it broke.
        reason: &'static str,
    },
    /// An `INCR` declares more events than the connection's `max_batch_events`
    /// (checked by [`decode_frame_with_limits`](crate::decode_frame_with_limits) before
    /// the events are read).
    #[error("batch too large: declares {declared} events, the limit is {max}")]
    BatchTooLarge {
        /// The batch's event count.
        declared: u32,
        /// The limit the decoder was given.
        max: u32,
    },
    /// The payload was fully decoded but bytes remain before the end of the frame.
    #[error("{extra} unexpected trailing bytes after the payload")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

impl DecodeError {
    pub(crate) fn unsupported_version(client: u16) -> Self {
        Self::UnsupportedVersion {
            client,
            server: PROTOCOL_VERSION,
        }
    }

    /// The [`ErrorCode`] a server answers this error with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            Self::FrameTooSmall { .. }
            | Self::Truncated { .. }
            | Self::Invalid { .. }
            | Self::TrailingBytes { .. } => ErrorCode::Malformed,
        }
    }

    /// Whether the stream is still aligned on a frame boundary after this error.
    ///
    /// When `true` the peer may skip the offending frame
    /// ([`FrameHeader::frame_len`](crate::FrameHeader::frame_len) bytes), answer it with
    /// an `ERROR` and keep the connection. When `false` (an oversized or impossible
    /// length field) the framing cannot be trusted and the connection should be closed
    /// after an `ERROR` with request id 0.
    pub fn keeps_framing(&self) -> bool {
        match self {
            Self::FrameTooLarge { .. } | Self::FrameTooSmall { .. } => false,
            Self::UnknownOpcode(_)
            | Self::UnsupportedVersion { .. }
            | Self::BatchTooLarge { .. }
            | Self::Truncated { .. }
            | Self::Invalid { .. }
            | Self::TrailingBytes { .. } => true,
        }
    }
}

/// nom integration: a failing primitive parser reports a truncation; the crate's helpers
/// replace it with the name of the field being read.
impl ParseError<&[u8]> for DecodeError {
    fn from_error_kind(_input: &[u8], _kind: ErrorKind) -> Self {
        Self::Truncated { what: "field" }
    }

    fn append(_input: &[u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

/// Stable numeric error codes carried by `ERROR` frames (see `docs/PROTOCOL.md`).
///
/// Codes are never renumbered or reused; new ones may be added by later protocol
/// versions, so an `ERROR` frame keeps the raw `u16` and clients must accept codes they
/// do not know (treat them like [`ErrorCode::Internal`]).
#[non_exhaustive]
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame could not be decoded (bad field, truncated payload, trailing bytes).
    Malformed = 1,
    /// The frame is larger than the negotiated maximum.
    FrameTooLarge = 2,
    /// The opcode is unknown, or not valid in this direction or state.
    UnknownOpcode = 3,
    /// The client's protocol version is not supported.
    UnsupportedVersion = 4,
    /// No successful `HELLO` yet, or the token was refused.
    Unauthenticated = 5,
    /// The connection's role does not allow this request.
    Forbidden = 6,
    /// A series key, name, label or alias breaks a documented rule.
    InvalidSeries = 7,
    /// Any other bad argument: time range, step, limit, selector.
    InvalidArgument = 8,
    /// An event is older than every tier's retention.
    TooOld = 9,
    /// An event is further in the future than the allowed clock skew.
    TooFarInFuture = 10,
    /// A producer sequence cannot be accepted (older than the remembered window).
    OutOfOrder = 11,
    /// The server is overloaded; retry later with backoff.
    Busy = 12,
    /// Storage cannot accept writes (disk full, fsync failed).
    StorageUnavailable = 13,
    /// An unexpected server-side failure.
    Internal = 14,
    /// A batch holds more events than the negotiated maximum.
    BatchTooLarge = 15,
    /// The server is shutting down; reconnect (possibly elsewhere) and retry.
    ShuttingDown = 16,
    /// Counting the batch could overflow a cell (its sum or count in some tier):
    /// nothing of it was counted. Also a total too large for its answer.
    Overflow = 17,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 17] = [
        Self::Malformed,
        Self::FrameTooLarge,
        Self::UnknownOpcode,
        Self::UnsupportedVersion,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::InvalidSeries,
        Self::InvalidArgument,
        Self::TooOld,
        Self::TooFarInFuture,
        Self::OutOfOrder,
        Self::Busy,
        Self::StorageUnavailable,
        Self::Internal,
        Self::BatchTooLarge,
        Self::ShuttingDown,
        Self::Overflow,
    ];

    /// The wire value.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, `None` for codes this version does not know.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether resending the same request later may succeed. This is the default an
    /// `ERROR` frame carries; the server may override it per frame.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Busy | Self::StorageUnavailable | Self::ShuttingDown
        )
    }

    /// The upper-case name used in the documentation, e.g. `FRAME_TOO_LARGE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "MALFORMED",
            Self::FrameTooLarge => "FRAME_TOO_LARGE",
            Self::UnknownOpcode => "UNKNOWN_OPCODE",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::InvalidSeries => "INVALID_SERIES",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::TooOld => "TOO_OLD",
            Self::TooFarInFuture => "TOO_FAR_IN_FUTURE",
            Self::OutOfOrder => "OUT_OF_ORDER",
            Self::Busy => "BUSY",
            Self::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::BatchTooLarge => "BATCH_TOO_LARGE",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Overflow => "OVERFLOW",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_dense() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(code.code()), i + 1);
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(18), None);
    }

    #[test]
    fn retryable_defaults() {
        assert!(ErrorCode::Busy.is_retryable());
        assert!(ErrorCode::ShuttingDown.is_retryable());
        assert!(!ErrorCode::Malformed.is_retryable());
        assert!(!ErrorCode::InvalidSeries.is_retryable());
    }

    #[test]
    fn decode_errors_map_to_codes() {
        let e = DecodeError::FrameTooLarge {
            declared: 10,
            max: 5,
        };
        assert_eq!(e.error_code(), ErrorCode::FrameTooLarge);
        assert!(!e.keeps_framing());
        assert_eq!(
            DecodeError::UnknownOpcode(0x7e).error_code(),
            ErrorCode::UnknownOpcode
        );
        assert!(DecodeError::UnknownOpcode(0x7e).keeps_framing());
        assert_eq!(
            DecodeError::TrailingBytes { extra: 1 }.error_code(),
            ErrorCode::Malformed
        );
    }
}
