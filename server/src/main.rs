//! `tallyd`: parses flags, sets up tracing, loads the configuration, opens the storage
//! engine and runs the server until SIGINT or SIGTERM. The work is in the library.

use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tallydb_server::config::{self, Config, LogFormat, DEFAULT_CONFIG};
use tallydb_storage::Engine;

const EXAMPLES: &str = "\
Examples:
  tallyd                                   serve on 127.0.0.1:7411 with data in ./tally-data
  tallyd --listen 0.0.0.0:7411 --config /etc/tallyd.toml
  tallyd --http-listen 127.0.0.1:9411      health, /metrics and the Prometheus API there
  tallyd --http-listen ''                  no HTTP side door
  tallyd --data-dir /var/lib/tally --fsync interval:100 --log-format json
  TALLYD_LIMITS_MAX_CONNECTIONS=64 tallyd  any config key as a TALLYD_* variable
  tallyd config default > tallyd.toml      the default configuration, every key documented
  tallyd config check --config tallyd.toml
  echo -n 's3cr3t' | tallyd hash-token     the sha256 to put in [[auth.tokens]]

Precedence: defaults < config file < TALLYD_* environment variables < flags.
SIGINT or SIGTERM stops accepting, finishes in-flight requests, syncs the log and exits 0;
a second signal exits at once with status 130.";

/// TallyDB server: exact per-minute, per-hour and per-day counters over TCP.
#[derive(Debug, Parser)]
#[command(
    name = "tallyd",
    version,
    about,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve clients (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Read a token on stdin and print its SHA-256 (hex) for `[[auth.tokens]] sha256`.
    HashToken,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration file, every key documented.
    Default,
    /// Load and validate the configuration (file, environment, flags), print a summary.
    Check(ServeArgs),
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', value_name = "PATH", env = config::ENV_CONFIG_FILE)]
    config: Option<PathBuf>,
    /// Address and port to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the HTTP side door (health, /metrics, Prometheus API); "" turns it off.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// WAL durability: always, interval:<ms> or never.
    #[arg(long, value_name = "POLICY")]
    fsync: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. `info` or `debug,tallydb_storage=trace` (RUST_LOG wins).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

impl ServeArgs {
    fn load(&self) -> Result<Config, config::ConfigError> {
        let flags: Vec<(&str, String)> = [
            ("listen", &self.listen),
            ("http_listen", &self.http_listen),
            ("data_dir", &self.data_dir),
            ("fsync", &self.fsync),
            ("log.format", &self.log_format),
            ("log.level", &self.log_level),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        Config::load(self.config.as_deref(), std::env::vars(), &flags)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => print_stdout(DEFAULT_CONFIG),
        Some(Command::Config {
            command: ConfigCommand::Check(args),
        }) => check(&args),
        Some(Command::HashToken) => hash_token(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tallyd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_stdout(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn check(args: &ServeArgs) -> anyhow::Result<()> {
    let c = args.load()?;
    print_stdout(&format!(
        "configuration is valid: listen {}, data_dir {}, fsync {}, {} auth token(s)\n",
        c.listen,
        c.data_dir.display(),
        c.fsync,
        c.auth.tokens.len()
    ))
}

fn hash_token() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the token from stdin")?;
    let token = input
        .strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(&input);
    anyhow::ensure!(!token.is_empty(), "the token on stdin is empty");
    anyhow::ensure!(
        token.len() <= tallydb_protocol::MAX_TOKEN_LEN,
        "the token is longer than {} bytes",
        tallydb_protocol::MAX_TOKEN_LEN
    );
    let hex = tallydb_server::auth::to_hex(&tallydb_server::auth::hash_token(token));
    print_stdout(&format!("{hex}\n"))
}

fn init_tracing(log: &config::LogConfig) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).context("invalid RUST_LOG")?,
        _ => EnvFilter::try_new(&log.level).context("invalid log.level")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    // Everything is validated before anything is opened or bound.
    let config = args.load()?;
    init_tracing(&config.log)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.data_dir.display(),
        fsync = %config.fsync,
        "tallyd starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tallyd")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let signal = shutdown_signal().context("installing signal handlers")?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // HTTP first, so /-/ready answers 503 while the WAL is replayed.
        let http_state = tallydb_server::http::HttpState::new(&config);
        let http_task = match bind_http(&config).await? {
            Some(listener) => {
                let state = std::sync::Arc::clone(&http_state);
                let stop = stopped(stop_rx.clone());
                Some(tokio::spawn(async move {
                    if let Err(e) = tallydb_server::http::serve(listener, state, stop).await {
                        tracing::error!(error = %e, "the HTTP listener failed");
                    }
                }))
            }
            None => None,
        };
        let (data_dir, options) = (config.data_dir.clone(), config.engine_options());
        let engine = tokio::task::spawn_blocking(move || Engine::open(&data_dir, options))
            .await
            .context("opening the storage engine")?
            .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
        let rec = engine.recovery();
        tracing::info!(
            wal_files = rec.wal_files,
            records_replayed = rec.records_replayed,
            events_replayed = rec.events_replayed,
            torn_tails = rec.torn_tails.len(),
            replay_ms = u64::try_from(rec.replay_time.as_millis()).unwrap_or(u64::MAX),
            "storage engine opened"
        );
        let shared = tallydb_server::shared(Arc::new(engine), &config);
        http_state.set_ready(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        print_stdout(&format!("listening on {addr}\n"))?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "listening");
        tallydb_server::serve(listener, shared, config, stopped(stop_rx)).await?;
        if let Some(task) = http_task {
            let _ = task.await;
        }
        anyhow::Ok(())
    })?;
    tracing::info!("tallyd stopped");
    Ok(())
}

/// Binds the HTTP side door, if configured, and prints `http listening on ADDR`. The
/// default address already in use (another tallyd on this host) is a warning, not an
/// error: the server runs without HTTP. An address set explicitly must bind.
async fn bind_http(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = config.http_listen else {
        tracing::info!("HTTP side door turned off (http_listen = \"\")");
        return Ok(None);
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrInUse
                && addr.to_string() == config::DEFAULT_HTTP_LISTEN =>
        {
            tracing::warn!(%addr, "the default HTTP address is in use; running without the HTTP side door (set http_listen to choose another)");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("binding the HTTP address {addr}")),
    };
    let bound = listener
        .local_addr()
        .context("reading the bound HTTP address")?;
    print_stdout(&format!("http listening on {bound}\n"))?;
    tracing::info!(addr = %bound, "HTTP listening");
    Ok(Some(listener))
}

/// Completes at the first SIGINT or SIGTERM; a second one exits at once with 130.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested; send the signal again to exit at once"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("tallyd: second signal: exiting at once");
            std::process::exit(130);
        });
    })
}
