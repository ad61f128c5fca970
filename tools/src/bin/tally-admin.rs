//! `tally-admin`: the TallyDB operator's tool. Parses flags and calls
//! `tallydb_tools::admin`; exit codes are documented there and in
//! docs/OPERATIONS.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tallydb_config::Config;
use tallydb_tools::admin::{self, Common, Exit, ExportFormat, Failure, Format};
use tallydb_tools::timefmt::parse_time;

const EXAMPLES: &str = "\
Examples:
  tally-admin verify --data-dir /var/lib/tally            check every checksum and rollup
  tally-admin verify --data-dir /backups/mon --format json
  tally-admin backup --server 127.0.0.1:7411 --to /backups/mon   online, written by the server
  tally-admin backup --data-dir /var/lib/tally --to /backups/mon  offline (server stopped)
  tally-admin restore --from /backups/mon --data-dir /var/lib/tally
  tally-admin compact --server 127.0.0.1:7411
  tally-admin inspect --data-dir /var/lib/tally --format json
  tally-admin export --data-dir /var/lib/tally --selector 'clicks{country=US}' --from now-1d --to now > clicks.csv

Exit codes: 0 success (verify: intact), 1 failure, 2 bad command line,
3 damage found, 4 data directory in use by a running server.
Use the server's retention (--config tallyd.toml or --retention-*): verify's
rollup check and offline compaction depend on it.";

/// TallyDB operator tool: backup, restore, verify, compact, inspect, export.
#[derive(Debug, Parser)]
#[command(name = "tally-admin", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

#[derive(Debug, Args)]
struct Global {
    /// The tallyd configuration file: its data_dir and retention are used (TALLYD_*
    /// variables apply as for tallyd).
    #[arg(long, global = true, env = "TALLYD_CONFIG")]
    config: Option<PathBuf>,
    /// Minute-tier retention (e.g. 7d), overriding the configuration.
    #[arg(long, global = true, value_name = "DURATION")]
    retention_minute: Option<String>,
    /// Hour-tier retention (e.g. 400d).
    #[arg(long, global = true, value_name = "DURATION")]
    retention_hour: Option<String>,
    /// Day-tier retention (e.g. forever).
    #[arg(long, global = true, value_name = "DURATION")]
    retention_day: Option<String>,
    /// Report format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// No progress display, even on a terminal.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct DirArg {
    /// The data directory (default: data_dir of --config).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServerArg {
    /// Address of a running tallyd (host:port).
    #[arg(long, value_name = "ADDR")]
    server: Option<String>,
    /// Read the admin token from this file (else from the TALLY_TOKEN variable; never
    /// a value on the command line, which every local user can read).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// How long to wait for the server's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Re-read every checksum and recompute every rollup (exit 3 on damage).
    ///
    /// Works on a data directory no server holds, or on a backup.
    #[command(
        after_help = "Examples:\n  tally-admin verify --data-dir /var/lib/tally\n  tally-admin verify --data-dir /backups/mon --format json | jq .damage"
    )]
    Verify {
        #[command(flatten)]
        dir: DirArg,
        /// Skip recomputing hour and day cells.
        #[arg(long)]
        no_rollups: bool,
    },
    /// Write a consistent copy with a BACKUP-MANIFEST, then verify it.
    ///
    /// With --server the server writes the snapshot, so --to is a path on the
    /// server's machine (absolute). With --data-dir the server must be stopped.
    #[command(
        after_help = "Examples:\n  tally-admin backup --server 127.0.0.1:7411 --to /backups/2024-05-01\n  tally-admin backup --data-dir /var/lib/tally --to /backups/2024-05-01"
    )]
    Backup {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        server: ServerArg,
        /// The backup directory (must be missing or empty).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Add BACKUP-MANIFEST to a snapshot written by a server, and verify it.
    Seal {
        /// The snapshot directory.
        dir: PathBuf,
    },
    /// Restore a backup into a data directory (the server must be stopped).
    #[command(
        after_help = "Examples:\n  tally-admin restore --from /backups/2024-05-01 --data-dir /var/lib/tally\n  tally-admin restore --from /backups/2024-05-01 --data-dir /var/lib/tally --force"
    )]
    Restore {
        /// The backup to restore.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[command(flatten)]
        dir: DirArg,
        /// Replace a non-empty data directory (kept as DIR.replaced-<time>).
        #[arg(long)]
        force: bool,
    },
    /// Merge segments and drop data past retention.
    #[command(
        after_help = "Examples:\n  tally-admin compact --server 127.0.0.1:7411\n  tally-admin compact --data-dir /var/lib/tally --config /etc/tallyd.toml"
    )]
    Compact {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show tiers, segments, sizes, compression, series, WAL and checkpoint.
    #[command(
        after_help = "Examples:\n  tally-admin inspect --data-dir /var/lib/tally\n  tally-admin inspect --data-dir /var/lib/tally --format json"
    )]
    Inspect {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write cells as events (`timestamp_ms,series,delta`) for re-ingestion.
    ///
    /// One line per cell: the bucket start, the series, the cell's sum. Count,
    /// min and max are not preserved.
    #[command(
        after_help = "Selectors: the same as tally's: '*', 'clicks', 'clicks{country=US,ad!=7}', 'hits{page=\"/search?q=café\"}', 'exact:clicks{ad=7,country=US}', 'prefix:com.example', 'com.example.*'.\nTimes: the same as tally's: now, now-7d, unix seconds (below 10^11) or milliseconds, 2024-05-01, 2024-05-01T13:45Z, RFC 3339.\n\nExamples:\n  tally-admin export --data-dir /var/lib/tally --from 2024-05-01 --to 2024-05-02 > day.csv\n  tally-admin export --data-dir /var/lib/tally --selector 'prefix:com.example' --tier hour --lines ndjson --from now-30d --to now"
    )]
    Export {
        #[command(flatten)]
        dir: DirArg,
        /// Which series.
        #[arg(long, default_value = "*")]
        selector: String,
        /// Start (inclusive) of the buckets exported.
        #[arg(long, default_value = "0")]
        from: String,
        /// End (exclusive).
        #[arg(long, default_value = "now")]
        to: String,
        /// Tier to read.
        #[arg(long, value_parser = ["minute", "hour", "day"], default_value = "minute")]
        tier: String,
        /// Line format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        lines: ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

fn config(g: &Global) -> Result<Config, Failure> {
    let mut flags: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("retention.minute", &g.retention_minute),
        ("retention.hour", &g.retention_hour),
        ("retention.day", &g.retention_day),
    ] {
        if let Some(v) = v {
            flags.push((k, v.clone()));
        }
    }
    Config::load(g.config.as_deref(), std::env::vars(), &flags).map_err(|e| Failure {
        exit: Exit::Usage,
        message: e.to_string(),
    })
}

fn data_dir(d: &DirArg, cfg: &Config, g: &Global) -> Result<PathBuf, Failure> {
    match (&d.data_dir, &g.config) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(_)) => Ok(cfg.data_dir.clone()),
        (None, None) => Err(Failure {
            exit: Exit::Usage,
            message: "give --data-dir DIR (or --config with a data_dir)".into(),
        }),
    }
}

fn run(cli: Cli) -> Result<Exit, Failure> {
    let cfg = config(&cli.global)?;
    let c = Common {
        retention: cfg.retention,
        quiet: cli.global.quiet,
        format: cli.global.format,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let g = &cli.global;
    match cli.command {
        Command::Verify { dir, no_rollups } => {
            admin::verify_cmd(&data_dir(&dir, &cfg, g)?, &c, !no_rollups, &mut out)
        }
        Command::Backup { dir, server, to } => match (&server.server, &dir.data_dir) {
            (Some(addr), None) => admin::backup_online(
                addr,
                &token(&server)?,
                &to,
                Duration::from_secs(server.timeout),
                &c,
                &mut out,
            ),
            (None, _) => admin::backup_offline(&data_dir(&dir, &cfg, g)?, &to, &c, &mut out),
            (Some(_), Some(_)) => Err(usage("give either --server or --data-dir, not both")),
        },
        Command::Seal { dir } => admin::seal(&dir, &c, &mut out),
        Command::Restore { from, dir, force } => {
            admin::restore(&from, &data_dir(&dir, &cfg, g)?, force, &c, &mut out)
        }
        Command::Compact { dir, server } => match (&server.server, &dir.data_dir) {
            (Some(addr), None) => admin::compact_online(
                addr,
                &token(&server)?,
                Duration::from_secs(server.timeout),
                &mut out,
            ),
            (None, _) => admin::compact_offline(&data_dir(&dir, &cfg, g)?, &c, &mut out),
            (Some(_), Some(_)) => Err(usage("give either --server or --data-dir, not both")),
        },
        Command::Inspect { dir } => admin::inspect_cmd(&data_dir(&dir, &cfg, g)?, &c, &mut out),
        Command::Export {
            dir,
            selector,
            from,
            to,
            tier,
            lines,
            output,
        } => {
            let now = tallydb_storage::Clock::now_ms(&tallydb_storage::SystemClock);
            let from = parse_time(&from, now).map_err(usage)?;
            let to = parse_time(&to, now).map_err(usage)?;
            let tier = match tier.as_str() {
                "hour" => tallydb_storage::Tier::Hour,
                "day" => tallydb_storage::Tier::Day,
                _ => tallydb_storage::Tier::Minute,
            };
            let dir = data_dir(&dir, &cfg, g)?;
            let mut summary = std::io::stderr();
            let sink: Box<dyn std::io::Write> = match output {
                Some(path) => Box::new(create_output(&path)?),
                None => Box::new(out),
            };
            let mut w = std::io::BufWriter::new(sink);
            admin::export_cmd(
                &dir,
                &selector,
                tier,
                from,
                to,
                lines,
                &c,
                &mut w,
                &mut summary,
            )
        }
    }
}

/// The admin token: from `--token-file`, else from `TALLY_TOKEN`, else none.
fn token(server: &ServerArg) -> Result<Vec<u8>, Failure> {
    tallydb_tools::tally::Conn::token_from(
        server.token_file.as_deref(),
        std::env::var("TALLY_TOKEN").ok(),
    )
    .map_err(|e| Failure {
        exit: Exit::Failed,
        message: e.to_string(),
    })
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        exit: Exit::Usage,
        message: message.into(),
    }
}

fn create_output(path: &Path) -> Result<std::fs::File, Failure> {
    std::fs::File::create(path).map_err(|e| Failure {
        exit: Exit::Failed,
        message: format!("creating {}: {e}", path.display()),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(exit) => exit,
        Err(f) => {
            let _ = std::io::stdout().flush();
            let _ = writeln!(std::io::stderr(), "tally-admin: {}", f.message);
            f.exit
        }
    };
    ExitCode::from(code as u8)
}
