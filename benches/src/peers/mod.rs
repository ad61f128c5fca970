//! `tally-peers-vm`: TallyDB and VictoriaMetrics side by side, in one run, on one
//! dataset. Called by `benches/peers/run.sh`, which installs and starts
//! VictoriaMetrics; this module spawns its own `tallyd`.
//!
//! - [`dataset`]: the per-minute counts both systems load, and every expected answer.
//! - [`tally`]: TallyDB's load (timestamped `INCR`s) and queries, over the protocol.
//! - [`vm`]: VictoriaMetrics' load (Prometheus text import) and queries (PromQL).
//! - [`query`]: the query set and the answers both reduce to.
//! - [`run`]: the sequence (load each, flush, settle, query each) and the timings.
//! - [`report`]: the JSON report the script turns into a table.
//!
//! The workload is documented in `docs/BENCHMARKS.md` ("TallyDB side by side with
//! VictoriaMetrics").

pub mod dataset;
pub mod error;
pub mod query;
pub mod report;
pub mod run;
pub mod tally;
pub mod vm;

use std::time::Duration;

pub use error::PeersError;
pub use report::PeersReport;
pub use run::{run, Options};

/// What one load did.
#[derive(Debug, Clone)]
pub struct LoadDone {
    /// Events (TallyDB) or samples (VictoriaMetrics) acknowledged.
    pub items: u64,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Whether every unit was sent before the time cap.
    pub complete: bool,
}
