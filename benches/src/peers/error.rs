//! [`PeersError`]: why the side-by-side run could not go on.

use crate::load::LoadError;

/// Why a step of the comparison failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeersError {
    /// Talking to tallyd failed (connection, protocol, spawn).
    #[error(transparent)]
    Tally(#[from] LoadError),
    /// An HTTP exchange with VictoriaMetrics failed or was refused.
    #[error("VictoriaMetrics: {0}")]
    Http(String),
    /// An answer could not be read (bad JSON, unexpected shape, error reply).
    #[error("unreadable answer: {0}")]
    Answer(String),
    /// A load did not finish within its time cap.
    #[error("{0}")]
    Timeout(String),
}
