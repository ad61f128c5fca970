//! [`Error`]: everything a client call can fail with.

use std::time::Duration;

use tallydb_protocol::{DecodeError, ErrorCode};

/// Result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a client call failed.
///
/// [`Error::is_retryable`] tells whether the same call may succeed later; the client has
/// already retried such failures as its [`RetryPolicy`](crate::RetryPolicy) allows
/// before returning one. [`Error::Indeterminate`] is the only outcome after which an
/// increment may or may not have been counted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection to the server could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (TCP connect and `HELLO` handshake) took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The address tried.
        addr: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The server did not answer a request within the request timeout.
    #[error("no answer within the request timeout of {after:?}")]
    Timeout {
        /// The request timeout.
        after: Duration,
    },
    /// The connection failed while the request was outstanding (reset, closed, I/O error).
    #[error("connection lost: {0}")]
    Io(#[source] std::io::Error),
    /// The server answered with `ERROR`.
    #[error("server error {}: {message}", code_name(*.code, *.raw_code))]
    Server {
        /// The code, `None` when this client version does not know it (see `raw_code`).
        code: Option<ErrorCode>,
        /// The code as sent.
        raw_code: u16,
        /// The server's explanation, naming the rule or limit that was broken.
        message: String,
        /// Whether resending later may succeed (the server's flag).
        retryable: bool,
    },
    /// The server sent bytes this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    /// The server answered with a response of the wrong kind.
    #[error("unexpected response: expected {expected}, got {got}")]
    UnexpectedResponse {
        /// The response kind expected.
        expected: &'static str,
        /// The response kind received.
        got: &'static str,
    },
    /// The request was refused before sending: the batch is larger than the server
    /// accepts in one `INCR` (events or bytes). Split it.
    #[error("batch too large: {events} events / {bytes} bytes, the server accepts {max_events} events / {max_bytes} bytes")]
    BatchTooLarge {
        /// Events in the batch.
        events: usize,
        /// Encoded size of the frame.
        bytes: usize,
        /// The server's `max_batch_events`.
        max_events: u32,
        /// The server's `max_frame`.
        max_bytes: u32,
    },
    /// An argument was refused before sending (e.g. an event id over 64 bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The circuit breaker is open after repeated failures: the call was refused without
    /// trying the server. It will let a probe through after its cool-down.
    #[error("circuit open after repeated failures; next attempt in {retry_in:?}")]
    CircuitOpen {
        /// Time left until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The client's connection task has stopped (the runtime is shutting down).
    #[error("the client is closed")]
    Closed,
    /// A batch was sent, the connection failed before its answer arrived, and every
    /// retry failed too: the server may or may not have counted it. Retrying it with
    /// a new batch may count it twice; the client has already resent it with its
    /// original producer sequence as often as the retry policy allows.
    #[error("the batch may or may not have been applied: {0}")]
    Indeterminate(#[source] Box<Error>),
}

fn code_name(code: Option<ErrorCode>, raw: u16) -> String {
    match code {
        Some(c) => c.to_string(),
        None => format!("UNKNOWN ({raw})"),
    }
}

impl Error {
    /// Whether the same call may succeed if made again later: connection failures,
    /// timeouts, an open circuit, and server errors flagged retryable (`BUSY`,
    /// `STORAGE_UNAVAILABLE`, `SHUTTING_DOWN`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Timeout { .. }
            | Self::Io(_)
            | Self::CircuitOpen { .. } => true,
            Self::Server { retryable, .. } => *retryable,
            Self::Protocol(_)
            | Self::UnexpectedResponse { .. }
            | Self::BatchTooLarge { .. }
            | Self::InvalidArgument(_)
            | Self::Closed
            | Self::Indeterminate(_) => false,
        }
    }

    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => *code,
            Self::Indeterminate(inner) => inner.code(),
            _ => None,
        }
    }

    /// Whether a failed increment may nevertheless have been counted
    /// ([`Error::Indeterminate`]). Every other error means it was not.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, Self::Indeterminate(_))
    }

    /// An `ERROR` reply as an [`Error`].
    pub(crate) fn server(reply: &tallydb_protocol::ErrorReply<'_>) -> Self {
        Self::Server {
            code: reply.error_code(),
            raw_code: reply.code,
            message: reply.message.to_string(),
            retryable: reply.retryable,
        }
    }

    /// A copy for handing the same failure to several waiting callers
    /// (`std::io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Connect { addr, source } => Self::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::ConnectTimeout { addr, after } => Self::ConnectTimeout {
                addr: addr.clone(),
                after: *after,
            },
            Self::Timeout { after } => Self::Timeout { after: *after },
            Self::Io(e) => Self::Io(std::io::Error::new(e.kind(), e.to_string())),
            Self::Server {
                code,
                raw_code,
                message,
                retryable,
            } => Self::Server {
                code: *code,
                raw_code: *raw_code,
                message: message.clone(),
                retryable: *retryable,
            },
            Self::Protocol(e) => Self::Protocol(e.clone()),
            Self::UnexpectedResponse { expected, got } => {
                Self::UnexpectedResponse { expected, got }
            }
            Self::BatchTooLarge {
                events,
                bytes,
                max_events,
                max_bytes,
            } => Self::BatchTooLarge {
                events: *events,
                bytes: *bytes,
                max_events: *max_events,
                max_bytes: *max_bytes,
            },
            Self::InvalidArgument(m) => Self::InvalidArgument(m.clone()),
            Self::CircuitOpen { retry_in } => Self::CircuitOpen {
                retry_in: *retry_in,
            },
            Self::Closed => Self::Closed,
            Self::Indeterminate(e) => Self::Indeterminate(Box::new(e.duplicate())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_display_their_code_name() {
        let e = Error::Server {
            code: Some(ErrorCode::Busy),
            raw_code: 12,
            message: "queue full".into(),
            retryable: true,
        };
        assert_eq!(e.to_string(), "server error BUSY (12): queue full");
        assert!(e.is_retryable());
        let unknown = Error::Server {
            code: None,
            raw_code: 99,
            message: "new".into(),
            retryable: false,
        };
        assert_eq!(unknown.to_string(), "server error UNKNOWN (99): new");
        assert!(!unknown.is_retryable());
    }

    #[test]
    fn only_indeterminate_may_have_been_applied() {
        let e = Error::Indeterminate(Box::new(Error::Timeout {
            after: Duration::from_secs(1),
        }));
        assert!(e.maybe_applied());
        assert!(!e.is_retryable());
        assert!(!Error::Closed.maybe_applied());
        assert!(e.duplicate().maybe_applied());
    }
}
