//! The result of a run: [`Report`], printed for humans ([`Report::human`]) or as JSON
//! (`serde_json`, same fields).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::procstat::ProcUsage;

/// Latency percentiles of one request kind, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Answers measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    /// The summary of a histogram; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

/// `ERROR` answers of one code.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    /// The wire code.
    pub code: u16,
    /// Its documented name.
    pub name: String,
    /// How many.
    pub count: u64,
    /// The first message received.
    pub first_message: String,
}

/// The exactness check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// `series` or `metric`.
    pub mode: String,
    /// Series whose total was compared one by one.
    pub series_checked: u64,
    /// Increments acknowledged, over all series.
    pub acknowledged: i64,
    /// Increments in requests never answered (may or may not be counted).
    pub unknown: i64,
    /// Sum of the per-series totals the server reported (series mode).
    pub found: i64,
    /// Acknowledged increments missing from the server's totals.
    pub lost: i64,
    /// Increments counted beyond what was sent (acknowledged + unknown).
    pub doubled: i64,
    /// Series with a wrong total.
    pub wrong_series: u64,
    /// The `TOTAL` of the whole metric.
    pub metric_total: i64,
    /// Whether lost and doubled are both 0 and the metric total is in range.
    pub exact: bool,
}

/// The workload as run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSummary {
    /// `open` (rate-driven) or `closed` loop.
    pub mode: String,
    /// Connections.
    pub connections: usize,
    /// Events per `INCR`.
    pub batch: u32,
    /// Target increments/s (0 = closed loop).
    pub rate: f64,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Sending time, seconds.
    pub duration_s: f64,
    /// Warm-up excluded from the figures, seconds.
    pub warmup_s: f64,
    /// Cardinality.
    pub series: u32,
    /// Key distribution.
    pub keys: String,
    /// Timestamp mode.
    pub timestamps: String,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// Query kinds.
    pub queries: Vec<String>,
    /// Whether aliases were used.
    pub aliases: bool,
    /// Metric name of the series written.
    pub metric: String,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Server address.
    pub server: String,
    /// Server version from `HELLO_OK`.
    pub server_version: String,
    /// What was run.
    pub workload: WorkloadSummary,
    /// `/proc/loadavg` when the run started.
    pub loadavg_start: String,
    /// `/proc/loadavg` when it ended.
    pub loadavg_end: String,
    /// Measurement window (after warm-up, until the last answer), seconds.
    pub elapsed_s: f64,
    /// Requests sent (whole run).
    pub requests_sent: u64,
    /// Events sent (whole run).
    pub events_sent: u64,
    /// Average `INCR` bytes per event on the wire, frame header included.
    pub bytes_per_event: f64,
    /// Events that defined (or re-bound) an alias, or were sent by key.
    pub alias_definitions: u64,
    /// Acknowledged increments per second (window).
    pub increments_per_s: f64,
    /// Answered requests per second, writes and reads (window).
    pub requests_per_s: f64,
    /// Acknowledged `INCR`s per second (window).
    pub write_requests_per_s: f64,
    /// Successful queries per second (window).
    pub read_requests_per_s: f64,
    /// `INCR` latency: from the scheduled send time in open loop (this includes up
    /// to about 1 ms of timer slack), from the write in closed loop.
    pub write_latency: Option<Latency>,
    /// Open loop only: `INCR` service time, from the actual write to the answer.
    pub write_service_time: Option<Latency>,
    /// Query latency by kind.
    pub read_latency: BTreeMap<String, Latency>,
    /// Increments acknowledged as applied (whole run).
    pub acknowledged: u64,
    /// Events the server reported as duplicates.
    pub duplicates: u64,
    /// Batches answered as duplicate.
    pub duplicate_batches: u64,
    /// Events refused one by one by the server (per-event validation).
    pub refused: u64,
    /// `ERROR` answers by code.
    pub errors: Vec<ErrorCount>,
    /// Requests never answered.
    pub unanswered: u64,
    /// Open loop: requests due before the deadline that were never sent.
    pub behind_schedule: u64,
    /// Connection failures.
    pub failures: Vec<String>,
    /// Server CPU and memory, when its pid is known.
    pub server_usage: Option<ProcUsage>,
    /// The load generator's own CPU and memory.
    pub client_usage: Option<ProcUsage>,
    /// Server `STATS` that changed during the run (end minus start).
    pub server_stats_delta: BTreeMap<String, i128>,
    /// The exactness check.
    pub verification: Option<Verification>,
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else if v >= 1_000 {
        format!("{:.2} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

fn latency_line(name: &str, l: &Latency) -> String {
    format!(
        "  {name:<6} n={:<9} p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}\n",
        l.count,
        us(l.p50_us),
        us(l.p90_us),
        us(l.p99_us),
        us(l.p999_us),
        us(l.max_us)
    )
}

impl Report {
    /// Whether the run is clean: exact (when verified), no failures, nothing lost.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.verification.as_ref().is_none_or(|v| v.exact)
    }

    /// A multi-line summary for people.
    pub fn human(&self) -> String {
        let w = &self.workload;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tally-bench against {} ({})",
            self.server, self.server_version
        );
        let rate = if w.rate > 0.0 {
            format!("open loop at {} increments/s", w.rate)
        } else {
            "closed loop".to_string()
        };
        let _ = writeln!(
            s,
            "workload: {rate}, {} connection(s) x pipeline {}, batch {}, {} series ({}), timestamps {}, read ratio {}{}, aliases {}, {:.0} s (warm-up {:.0} s)",
            w.connections,
            w.pipeline,
            w.batch,
            w.series,
            w.keys,
            w.timestamps,
            w.read_ratio,
            if w.read_ratio > 0.0 { format!(" ({})", w.queries.join(",")) } else { String::new() },
            if w.aliases { "on" } else { "off" },
            w.duration_s,
            w.warmup_s,
        );
        let _ = writeln!(
            s,
            "load average: {} at start, {} at end",
            self.loadavg_start, self.loadavg_end
        );
        let _ = writeln!(
            s,
            "throughput: {:.0} increments/s, {:.0} requests/s ({:.0} writes/s, {:.0} reads/s) over {:.2} s",
            self.increments_per_s,
            self.requests_per_s,
            self.write_requests_per_s,
            self.read_requests_per_s,
            self.elapsed_s
        );
        let _ = writeln!(
            s,
            "sent: {} requests, {} events, {:.2} bytes/event, {} alias definitions",
            self.requests_sent, self.events_sent, self.bytes_per_event, self.alias_definitions
        );
        let _ = writeln!(
            s,
            "latency ({}):",
            if w.rate > 0.0 {
                "from the scheduled send time; INCR* from the actual write"
            } else {
                "from the write of each request"
            }
        );
        if let Some(l) = &self.write_latency {
            s.push_str(&latency_line("INCR", l));
        }
        if let Some(l) = &self.write_service_time {
            s.push_str(&latency_line("INCR*", l));
        }
        for (k, l) in &self.read_latency {
            s.push_str(&latency_line(&k.to_uppercase(), l));
        }
        let _ = writeln!(
            s,
            "acknowledged: {} increments; duplicates {}, duplicate batches {}, refused {}, unanswered requests {}, behind schedule {}",
            self.acknowledged, self.duplicates, self.duplicate_batches, self.refused, self.unanswered, self.behind_schedule
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            for e in &self.errors {
                let _ = writeln!(
                    s,
                    "errors: {} x {} ({}), first: {}",
                    e.count, e.name, e.code, e.first_message
                );
            }
        }
        for f in &self.failures {
            let _ = writeln!(s, "connection failure: {f}");
        }
        for (who, u) in [
            ("server", &self.server_usage),
            ("client", &self.client_usage),
        ] {
            if let Some(u) = u {
                let _ = writeln!(
                    s,
                    "{who} (pid {}): {:.2} CPU s, {:.2} cores avg, RSS max {:.1} MiB, end {:.1} MiB",
                    u.pid, u.cpu_seconds, u.cpu_cores, u.rss_max_mib, u.rss_end_mib
                );
            }
        }
        if !self.server_stats_delta.is_empty() {
            let parts: Vec<String> = self
                .server_stats_delta
                .iter()
                .map(|(k, v)| format!("{k} {v:+}"))
                .collect();
            let _ = writeln!(s, "server STATS change: {}", parts.join(", "));
        }
        match &self.verification {
            Some(v) => {
                let _ = writeln!(
                    s,
                    "exactness ({}): acknowledged {}, unknown {}, server metric total {}, {} series checked: lost {}, doubled {} -> {}",
                    v.mode,
                    v.acknowledged,
                    v.unknown,
                    v.metric_total,
                    v.series_checked,
                    v.lost,
                    v.doubled,
                    if v.exact { "EXACT" } else { "NOT EXACT" }
                );
            }
            None => {
                let _ = writeln!(s, "exactness: not checked (--verify none)");
            }
        }
        s
    }
}
