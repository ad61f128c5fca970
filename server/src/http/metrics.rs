//! The server's own figures in the Prometheus text exposition format (`/metrics`).
//!
//! [`Telemetry`] is the lock-free part the protocol handler feeds: one fixed-bucket
//! latency histogram per command (an array of `AtomicU64`, no allocation on the hot
//! path), errors by protocol error code, and the wait for durability of `INCR`s.
//! [`render`] adds the engine's figures ([`tallydb_storage::Stats`]), the connection
//! counters of [`ServerStats`] and the free space of the data directory's file system.
//!
//! Flushes and compactions are exported as counts and total seconds (rate the two
//! for the mean duration). Not exported: the depth of tokio's blocking pool queue.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tallydb_protocol::{ErrorCode, Opcode};

use crate::cmd::{ServerStats, Shared};

/// Upper bounds of the latency buckets, in microseconds (100 µs to 10 s).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The commands timed, in the order of [`Telemetry::commands`]: the request opcodes'
/// names ([`Opcode::name`], in [`Opcode::REQUESTS`] order), then `other` for any other
/// opcode byte (unknown or a response sent by a client).
pub const COMMANDS: [&str; Opcode::REQUESTS.len() + 1] = {
    let mut names = ["other"; Opcode::REQUESTS.len() + 1];
    let mut i = 0;
    while i < Opcode::REQUESTS.len() {
        names[i] = Opcode::REQUESTS[i].name();
        i += 1;
    }
    names
};

fn command_index(opcode: Option<u8>) -> usize {
    opcode
        .and_then(Opcode::from_u8)
        .and_then(|op| Opcode::REQUESTS.iter().position(|r| *r == op))
        .unwrap_or(COMMANDS.len() - 1)
}

/// A cumulative latency histogram with fixed buckets; every field is an atomic, so
/// observing is a few relaxed increments.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
    /// Number of observations.
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        // The count written is the buckets' total, so the series stay consistent even
        // while other threads observe.
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Figures the protocol handler records for `/metrics`.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Latency per command, indexed like [`COMMANDS`].
    pub commands: [Histogram; COMMANDS.len()],
    /// Errors answered, indexed by protocol error code (0: codes this build does not know).
    pub errors: [AtomicU64; 17],
    /// Time an `INCR` answer waited for its WAL record to be durable (group commit).
    pub durable_wait: Histogram,
}

impl Telemetry {
    /// Records one answered request: its opcode byte (frame offset 4) and duration.
    pub fn observe(&self, opcode: Option<u8>, d: Duration) {
        self.commands[command_index(opcode)].observe(d);
    }

    /// Records one `ERROR` answer.
    pub fn error(&self, code: u16) {
        let i = usize::from(code);
        let slot = if ErrorCode::from_code(code).is_some() && i < self.errors.len() {
            i
        } else {
            0
        };
        self.errors[slot].fetch_add(1, Ordering::Relaxed);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Free and total bytes of the file system holding `path` (`statvfs`).
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    let unit = s.f_frsize.max(1);
    Some((
        s.f_bavail.saturating_mul(unit),
        s.f_blocks.saturating_mul(unit),
    ))
}

/// The whole `/metrics` page. Calls [`tallydb_storage::Engine::stats`] (brief locks)
/// and `statvfs`: call it off the async threads.
pub fn render(shared: &Shared, max_connections: usize) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let t = &shared.stats.telemetry;
    let st: &ServerStats = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    header(
        &mut out,
        "tallyd_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "tallyd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    single(
        &mut out,
        "tallyd_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        shared.started.elapsed().as_secs(),
    );

    // Latency and traffic.
    let name = "tallyd_request_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time to answer one protocol request, per command, on the blocking pool (INCR excludes the wait for fsync, see tallyd_incr_durable_wait_seconds).",
    );
    for (i, h) in t.commands.iter().enumerate() {
        if h.count() > 0 {
            h.write(&mut out, name, &format!("command=\"{}\"", COMMANDS[i]));
        }
    }
    let name = "tallyd_incr_durable_wait_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time answered INCRs waited for their WAL record to be durable (group commit).",
    );
    t.durable_wait.write(&mut out, name, "");
    single(
        &mut out,
        "tallyd_requests_total",
        "counter",
        "Protocol requests answered, successfully or not.",
        load(&st.requests),
    );
    let name = "tallyd_request_errors_total";
    header(
        &mut out,
        name,
        "counter",
        "Protocol requests answered with ERROR, by error code.",
    );
    for code in ErrorCode::ALL {
        let i = usize::from(code.code());
        let v = t.errors.get(i).map_or(0, load);
        let _ = writeln!(out, "{name}{{code=\"{}\"}} {v}", code.name());
    }
    let _ = writeln!(out, "{name}{{code=\"UNKNOWN\"}} {}", load(&t.errors[0]));

    let s = shared.engine.stats();
    single(
        &mut out,
        "tallyd_increments_total",
        "counter",
        "Events counted by the engine (duplicates excluded).",
        s.events_applied,
    );
    single(
        &mut out,
        "tallyd_increment_duplicates_total",
        "counter",
        "Events acknowledged but skipped as duplicates (event id or retried batch).",
        s.duplicates_skipped,
    );
    single(
        &mut out,
        "tallyd_batches_total",
        "counter",
        "INCR batches applied by the engine.",
        s.batches_applied,
    );

    // Saturation.
    single(
        &mut out,
        "tallyd_connections_open",
        "gauge",
        "Protocol connections being served.",
        load(&st.connections_open),
    );
    single(
        &mut out,
        "tallyd_connections_max",
        "gauge",
        "limits.max_connections.",
        max_connections,
    );
    single(
        &mut out,
        "tallyd_connections_total",
        "counter",
        "Protocol connections accepted.",
        load(&st.connections_total),
    );
    single(
        &mut out,
        "tallyd_connections_refused_total",
        "counter",
        "Connections refused BUSY because max_connections were open.",
        load(&st.connections_refused),
    );
    single(
        &mut out,
        "tallyd_memtable_bytes",
        "gauge",
        "Bytes held by the memtables (flushed to segments at memtable_size).",
        s.memtable_bytes,
    );
    single(
        &mut out,
        "tallyd_memtable_cells",
        "gauge",
        "Cells held by the memtables.",
        s.memtable_cells,
    );
    single(
        &mut out,
        "tallyd_wal_bytes",
        "gauge",
        "Bytes of live write-ahead-log files.",
        s.wal_bytes,
    );
    single(
        &mut out,
        "tallyd_wal_unsynced_records",
        "gauge",
        "WAL records written but not yet fsynced (the group-commit queue).",
        s.last_lsn.saturating_sub(s.synced_lsn),
    );
    single(
        &mut out,
        "tallyd_wal_fsyncs_total",
        "counter",
        "fsyncs of the write-ahead log.",
        s.wal_syncs,
    );
    let tiers = ["minute", "hour", "day"];
    let name = "tallyd_segments";
    header(
        &mut out,
        name,
        "gauge",
        "Live segment files per tier; compaction merges them, so this is the pending compaction work.",
    );
    for (i, tier) in tiers.iter().enumerate() {
        let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {}", s.segments[i]);
    }
    let name = "tallyd_segment_bytes";
    header(
        &mut out,
        name,
        "gauge",
        "Bytes of live segment files per tier.",
    );
    for (i, tier) in tiers.iter().enumerate() {
        let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {}", s.segment_bytes[i]);
    }
    single(
        &mut out,
        "tallyd_series",
        "gauge",
        "Series known to the dictionary.",
        s.series,
    );
    single(
        &mut out,
        "tallyd_dedup_ids",
        "gauge",
        "Event ids remembered in the dedup window.",
        s.dedup_ids,
    );
    single(
        &mut out,
        "tallyd_dedup_bytes",
        "gauge",
        "Memory of the dedup state.",
        s.dedup_bytes,
    );
    single(
        &mut out,
        "tallyd_flushes_total",
        "counter",
        "Memtable flushes to segment files.",
        s.flushes,
    );
    single(
        &mut out,
        "tallyd_flush_seconds_total",
        "counter",
        "Time spent flushing memtables to segment files.",
        s.flush_micros as f64 / 1e6,
    );
    single(
        &mut out,
        "tallyd_compactions_total",
        "counter",
        "Compaction tasks run.",
        s.compactions,
    );
    single(
        &mut out,
        "tallyd_compaction_seconds_total",
        "counter",
        "Time spent in compaction tasks.",
        s.compaction_micros as f64 / 1e6,
    );
    single(
        &mut out,
        "tallyd_storage_poisoned",
        "gauge",
        "1 when a failed fsync or write stopped the engine from accepting writes.",
        u8::from(s.poisoned),
    );
    single(
        &mut out,
        "tallyd_storage_disk_full",
        "gauge",
        "1 while writes are refused because the disk is full; they resume once space is freed.",
        u8::from(s.disk_full),
    );
    if let Some((free, total)) = disk_space(shared.engine.dir()) {
        single(
            &mut out,
            "tallyd_disk_free_bytes",
            "gauge",
            "Bytes available to tallyd on the data directory's file system.",
            free,
        );
        single(
            &mut out,
            "tallyd_disk_size_bytes",
            "gauge",
            "Size of the data directory's file system.",
            total,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.write(&mut out, "x", "command=\"PING\"");
        assert!(
            out.contains("x_bucket{command=\"PING\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{command=\"PING\",le=\"0.00025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{command=\"PING\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{command=\"PING\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{command=\"PING\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{command=\"PING\"} 60.000201\n"), "{out}");
    }

    #[test]
    fn unknown_opcodes_and_codes_get_their_own_slot() {
        let t = Telemetry::default();
        t.observe(Some(0x7f), Duration::from_micros(5));
        t.observe(None, Duration::from_micros(5));
        t.observe(Some(Opcode::Incr as u8), Duration::from_micros(5));
        assert_eq!(t.commands[COMMANDS.len() - 1].count(), 2);
        assert_eq!(t.commands[2].count(), 1);
        t.error(999);
        t.error(ErrorCode::TooOld.code());
        assert_eq!(t.errors[0].load(Ordering::Relaxed), 1);
        assert_eq!(t.errors[9].load(Ordering::Relaxed), 1);
    }
}
