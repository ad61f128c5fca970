//! `tally-peers-vm`: TallyDB and VictoriaMetrics side by side on one dataset (load
//! speed, query latency, exact answers). Flags are parsed here; the work is in
//! `tallydb_benches::peers`. Normally run by `benches/peers/run.sh`; see
//! `docs/BENCHMARKS.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tallydb_benches::peers::{self, Options};

/// Loads the same per-minute counts into a running VictoriaMetrics and a private
/// tallyd, times the same queries on both, prints a JSON report on stdout.
#[derive(Debug, Parser)]
#[command(name = "tally-peers-vm", version)]
struct Cli {
    /// VictoriaMetrics address (a private instance: the metric is written into it).
    #[arg(long, value_name = "ADDR")]
    vm: String,
    /// VictoriaMetrics pid, for its CPU figures and the quiet wait before queries.
    #[arg(long, value_name = "PID")]
    vm_pid: Option<u32>,
    /// VictoriaMetrics version, copied into the report.
    #[arg(long, default_value = "unknown")]
    vm_version: String,
    /// The tallyd binary; started on 127.0.0.1:0 with a temporary data dir.
    #[arg(long, value_name = "PATH")]
    tallyd: PathBuf,
    /// --fsync of that tallyd.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Parent directory of its temporary data dir.
    #[arg(long, value_name = "DIR")]
    data_parent: Option<PathBuf>,
    /// Metric name of every series.
    #[arg(long, default_value = "peers")]
    metric: String,
    /// Number of series (each has the last hour of minutes).
    #[arg(long, default_value_t = 100_000)]
    series: u32,
    /// Series per value of label g (the first group also has a whole day).
    #[arg(long, default_value_t = 1_000)]
    group: u32,
    /// Series per request (events per INCR, lines per import request).
    #[arg(long, default_value_t = 1_000)]
    batch: u32,
    /// Concurrent connections of each load.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// INCRs in flight per TallyDB connection (HTTP requests are one at a time).
    #[arg(long, default_value_t = 4)]
    pipeline: usize,
    /// Seconds each load may take at most.
    #[arg(long, default_value_t = 120.0)]
    load_secs: f64,
    /// Timed repetitions of a one-series or one-group query.
    #[arg(long, default_value_t = 300)]
    light_reps: u32,
    /// Timed repetitions of a query over all series.
    #[arg(long, default_value_t = 40)]
    heavy_reps: u32,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 3)]
    warmup_reps: u32,
    /// Seconds one query's repetitions may take on one system.
    #[arg(long, default_value_t = 8.0)]
    query_secs: f64,
    /// Seed of the values and of the query parameters.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn secs(name: &str, v: f64, max: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(v > 0.0 && v <= max, "--{name} must be in (0, {max}]");
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v}: not a duration"))
}

fn main() -> ExitCode {
    match real_main(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tally-peers-vm: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<bool> {
    anyhow::ensure!(
        (1..=10_000_000).contains(&cli.series),
        "--series must be 1..=10000000"
    );
    anyhow::ensure!(
        (1..=cli.series).contains(&cli.group),
        "--group must be 1..=--series"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&cli.batch),
        "--batch must be 1..=10000"
    );
    anyhow::ensure!(
        (1..=256).contains(&cli.connections),
        "--connections must be 1..=256"
    );
    anyhow::ensure!(
        (1..=1024).contains(&cli.pipeline),
        "--pipeline must be 1..=1024"
    );
    let o = Options {
        vm_addr: cli.vm,
        vm_pid: cli.vm_pid,
        vm_version: cli.vm_version,
        tallyd: cli.tallyd,
        fsync: cli.fsync,
        data_parent: cli.data_parent,
        metric: cli.metric,
        series: cli.series,
        group: cli.group,
        batch: cli.batch,
        connections: cli.connections,
        pipeline: cli.pipeline,
        load_cap: secs("load-secs", cli.load_secs, 600.0)?,
        light_reps: cli.light_reps,
        heavy_reps: cli.heavy_reps,
        query_cap: secs("query-secs", cli.query_secs, 60.0)?,
        warmup_reps: cli.warmup_reps,
        seed: cli.seed,
    };
    let report = peers::run(&o)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let clean = report.tally_load.exact
        && report.vm_load.exact
        && report.queries.iter().all(|q| q.tally.wrong == 0);
    Ok(clean)
}
