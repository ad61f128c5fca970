//! [`LoadError`]: why a load run could not start or finish.

use tallydb_protocol::DecodeError;

/// Why a load run failed. Request-level `ERROR` answers during a run are not
/// failures: they are counted by code in the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A socket, file or process operation failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error (in the message, not repeated as a source).
        error: std::io::Error,
    },
    /// The server sent bytes the protocol crate refused.
    #[error("{context}: undecodable frame from the server: {error}")]
    Decode {
        /// What was being read.
        context: String,
        /// The decoder's error (in the message, not repeated as a source).
        error: DecodeError,
    },
    /// The server answered a setup or verification request with `ERROR`.
    #[error("{context}: the server answered {name} (code {code}): {message}")]
    Server {
        /// The request.
        context: String,
        /// The error code.
        code: u16,
        /// Its documented name.
        name: String,
        /// The server's message.
        message: String,
    },
    /// The server broke the protocol (an unexpected answer, a close mid-frame).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// An option value that cannot be used; the message names the option.
    #[error("invalid option: {0}")]
    Config(String),
    /// The spawned `tallyd` could not be started.
    #[error("tallyd: {0}")]
    Spawn(String),
}

impl LoadError {
    /// An [`LoadError::Io`] with `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
        let context = context.into();
        move |error| LoadError::Io { context, error }
    }
}

/// The documented name of an error code (`BUSY`), or `code N` for an unknown one.
pub fn code_name(code: u16) -> String {
    tallydb_protocol::ErrorCode::from_code(code)
        .map_or_else(|| format!("code {code}"), |c| c.name().to_string())
}
