//! [`PeersReport`]: everything one side-by-side run measured, as JSON.

use serde::Serialize;

use super::dataset::Dataset;
use crate::load::procstat::ProcUsage;
use crate::load::report::Latency;

/// One system's load of the dataset.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    /// Events (TallyDB) or samples (VictoriaMetrics) acknowledged.
    pub items: u64,
    /// Wall seconds from the first request to the last answer.
    pub seconds: f64,
    /// `items / seconds`.
    pub per_second: f64,
    /// Every unit was sent before the time cap.
    pub complete: bool,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// The server process during the load.
    pub server: Option<ProcUsage>,
    /// Seconds after the load until a total over all data matched the dataset.
    pub visible_after_s: Option<f64>,
    /// The total over all data matched the dataset.
    pub exact: bool,
    /// Seconds waited afterwards for the server's CPU to go quiet before queries.
    pub settle_s: f64,
}

/// One system's timings of one query.
#[derive(Debug, Clone, Serialize)]
pub struct QuerySide {
    /// Client-side round trips, microseconds (`None` when every attempt failed).
    pub latency: Option<Latency>,
    /// Answers equal to the dataset's expected answer.
    pub correct: u64,
    /// Answers that differed (or failed).
    pub wrong: u64,
    /// The first difference or failure.
    pub first_problem: Option<String>,
    /// The first answer, summarized.
    pub sample_answer: Option<String>,
}

/// One query of the table.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    /// Short name.
    pub name: String,
    /// The PromQL sent to VictoriaMetrics (S = a series, G = a group).
    pub promql: String,
    /// TallyDB's p99 target, microseconds.
    pub target_p99_us: Option<u64>,
    /// TallyDB.
    pub tally: QuerySide,
    /// VictoriaMetrics.
    pub vm: QuerySide,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct PeersReport {
    /// `nproc`.
    pub cpus: usize,
    /// `/proc/loadavg` (1, 5, 15 min) at the start and at the end.
    pub loadavg_start: String,
    /// See `loadavg_start`.
    pub loadavg_end: String,
    /// The dataset.
    pub dataset: Dataset,
    /// Samples (= events) in it.
    pub samples: u64,
    /// The sum of every sample.
    pub total: i64,
    /// tallyd's version (`HELLO_OK`) and fsync mode.
    pub tally_version: String,
    /// `--fsync` of the spawned tallyd.
    pub tally_fsync: String,
    /// VictoriaMetrics' version, as given on the command line.
    pub vm_version: String,
    /// TallyDB's load.
    pub tally_load: LoadFigures,
    /// VictoriaMetrics' load.
    pub vm_load: LoadFigures,
    /// The queries.
    pub queries: Vec<QueryFigures>,
    /// Wall seconds of the whole run.
    pub wall_seconds: f64,
}
