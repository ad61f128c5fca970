//! `tally-bench`: load generator for `tallyd`. Flags are parsed here; the work is
//! in `tallydb_benches::load`. See `docs/BENCHMARKS.md`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tallydb_benches::load::{self, QueryKind, Spawned, Target, Workload};

const EXAMPLES: &str = "\
Examples:
  tally-bench --spawn target/release/tallyd --fsync always --connections 1 --batch 1 --duration 10
  tally-bench --server 127.0.0.1:7411 --server-pid $(pidof tallyd) --rate 200000 --batch 100
  tally-bench --spawn target/release/tallyd --keys zipf:1.1 --read-ratio 0.1 --query total,top

Exit status: 0 when the run is clean (exact, no connection failure), 1 when it is
not, 2 when it could not run.";

/// Load generator for tallyd: increments (and queries) over the wire protocol,
/// latency percentiles, throughput, server CPU/RSS, and an exactness check.
#[derive(Debug, Parser)]
#[command(name = "tally-bench", version, after_help = EXAMPLES)]
struct Cli {
    /// Address of a running tallyd.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    server: Option<String>,
    /// Pid of that server, to sample its CPU and RSS from /proc.
    #[arg(long, value_name = "PID", requires = "server")]
    server_pid: Option<u32>,
    /// Start a private tallyd (the binary at this path) on a temporary data dir at
    /// 127.0.0.1:0; it is stopped by pid at the end.
    #[arg(long, value_name = "PATH_TO_TALLYD")]
    spawn: Option<PathBuf>,
    /// --fsync passed to the spawned tallyd: always, interval:<ms> or never.
    #[arg(long, default_value = "always", requires = "spawn")]
    fsync: String,
    /// Parent directory of the spawned server's temporary data dir.
    #[arg(long, value_name = "DIR", requires = "spawn")]
    data_parent: Option<PathBuf>,
    /// Keep the spawned server's data dir and log (their path is printed).
    #[arg(long, requires = "spawn")]
    keep_data: bool,
    /// Extra argument for the spawned tallyd (repeat for several).
    #[arg(
        long,
        value_name = "ARG",
        requires = "spawn",
        allow_hyphen_values = true
    )]
    server_arg: Vec<String>,
    /// Connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events per INCR.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Open-loop target in increments/s (0 = closed loop, as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of sending (fractions allowed); answers are then awaited.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Hard cap on requests sent, over all connections.
    #[arg(long, value_name = "N")]
    max_requests: Option<u64>,
    /// Seconds at the start excluded from latency and throughput.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Number of distinct series.
    #[arg(long, default_value_t = 1000)]
    series: u32,
    /// Key distribution: uniform or zipf:<s>.
    #[arg(long, default_value = "uniform")]
    keys: load::KeyDist,
    /// Event timestamps: live (server time), late (1 min-1 h ago), backfill (8-30 days ago).
    #[arg(long, default_value = "live")]
    timestamps: load::TimestampMode,
    /// Fraction of requests that are queries (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Query kinds for reads, comma-separated: total, range, top.
    #[arg(long, default_value = "total")]
    query: String,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// File holding the HELLO token (a trailing newline is dropped).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Metric name of the series written (default: bench_<unique suffix>).
    #[arg(long)]
    metric: Option<String>,
    /// Seed of the key and timestamp generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Name every event by its full key instead of per-connection aliases.
    #[arg(long)]
    no_aliases: bool,
    /// Exactness check: series (every series' TOTAL), metric (one TOTAL), none.
    #[arg(long, default_value = "series")]
    verify: load::VerifyMode,
    /// Seconds to wait for an answer before giving a connection up.
    #[arg(long, default_value_t = 60.0)]
    response_timeout: f64,
    /// Output: human or json.
    #[arg(long, default_value = "human", value_parser = ["human", "json"])]
    format: String,
    /// Runtime worker threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} {v}: not a duration in seconds"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tally-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<bool> {
    let token = match &cli.token_file {
        Some(p) => {
            let mut t = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            while t.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                t.pop();
            }
            t
        }
        None => Vec::new(),
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        ^ u64::from(std::process::id()) << 40;
    let w = Workload {
        connections: cli.connections,
        batch: cli.batch,
        rate: cli.rate,
        duration: secs("duration", cli.duration)?,
        max_requests: cli.max_requests,
        warmup: secs("warmup", cli.warmup)?,
        series: cli.series,
        keys: cli.keys,
        timestamps: cli.timestamps,
        read_ratio: cli.read_ratio,
        queries: QueryKind::parse_list(&cli.query)?,
        pipeline: cli.pipeline,
        token,
        metric: cli
            .metric
            .clone()
            .unwrap_or_else(|| format!("bench_{:012x}", unique & 0xffff_ffff_ffff)),
        seed: cli.seed,
        aliases: !cli.no_aliases,
        verify: cli.verify,
        response_timeout: secs("response-timeout", cli.response_timeout)?,
    };
    w.validate()?;

    let mut spawned = None;
    let target = match (&cli.spawn, &cli.server) {
        (Some(bin), _) => {
            let s = Spawned::start(bin, &cli.fsync, cli.data_parent.as_deref(), &cli.server_arg)?;
            let t = Target {
                addr: s.addr,
                pid: s.pid(),
            };
            eprintln!(
                "tally-bench: started {} (pid {}) on {} with --fsync {}, data in {}",
                bin.display(),
                t.pid.unwrap_or(0),
                t.addr,
                cli.fsync,
                s.data_dir.display()
            );
            spawned = Some(s);
            t
        }
        (None, Some(addr)) => Target {
            addr: resolve(addr)?,
            pid: cli.server_pid,
        },
        (None, None) => anyhow::bail!("give --server ADDR or --spawn PATH_TO_TALLYD"),
    };

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("starting the async runtime")?;
    let result = rt.block_on(load::run(w, target));

    if let Some(mut s) = spawned {
        if cli.keep_data {
            s.keep_files();
            eprintln!(
                "tally-bench: kept {} and the log {}",
                s.data_dir.display(),
                s.log.display()
            );
        }
        if !s.stop() {
            eprintln!("tally-bench: the server did not stop within its timeout and was killed");
        }
    }
    let report = result?;
    if cli.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.is_clean())
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("--server {addr}: not an address"))?
        .next()
        .with_context(|| format!("--server {addr}: resolves to nothing"))
}
