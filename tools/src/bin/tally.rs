//! `tally`: count and query with TallyDB from the command line. Parses flags and
//! calls `tallydb_tools::tally`; see its module documentation for exit codes.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tallydb_client::{Function, Step};
use tallydb_tools::selector::{QuerySelector, QUERY_SYNTAX};
use tallydb_tools::tally::ingest::{self, InputFormat};
use tallydb_tools::tally::output::{Format, Report};
use tallydb_tools::tally::{self, chart, Conn, Error, Span, DEFAULT_SERVER};
use tallydb_tools::timefmt::parse_instant;

const ABOUT_TIME: &str = "\
Times (--from, --to, --at):
  now, -1h, now-7d, now+5m        relative to now (units ms, s, m, h, d, w)
  2026-11-29T10:00:00Z            RFC 3339 (fractions and offsets such as +01:00 allowed)
  2026-11-29, 2026-11-29T10:00    UTC dates
  1795935600, 1795935600000       unix seconds below 10^11, milliseconds from 10^11 on
Ranges are [from, to): from inclusive, to exclusive, widened by the server to whole buckets.";

const EXAMPLES: &str = "\
Examples:
  tally incr 'page_hits{page=/}'
  tally ingest events.csv --format csv
  tally range 'page_hits{page=/}' --from -6h --step 5m --chart
  tally total 'video_views{video=v42}' --from now-7d
  tally top ad_clicks --by ad -n 10 --from -1h
  tally series 'com.example.*'
  TALLY_SERVER=db1:7411 TALLY_TOKEN=s3cr3t tally stats

Connection: --server or TALLY_SERVER (default 127.0.0.1:7411); the token from the
TALLY_TOKEN variable or --token-file (never as a plain command-line value).
Output: data on stdout, errors and notes on stderr. --format table (aligned columns, no
colors, the same when piped), json, jsonl or csv. Every answer shows the tiers that
served it and `closed until`: buckets starting at or after it may still grow.
Exit codes: 0 success (also when nothing matched: zero, with a note on stderr),
1 failure (server down, error reply, refused token, bad input line), 2 bad command line
(including an invalid selector, time or step, and --from not before --to).";

/// Count and query with TallyDB: increments, bulk ingest, ranges, totals, top-K.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, after_help = EXAMPLES, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, Args)]
struct ConnArgs {
    /// Address of tallyd (host:port).
    #[arg(long, global = true, env = "TALLY_SERVER", default_value = DEFAULT_SERVER, value_name = "ADDR")]
    server: String,
    /// Read the token from this file (else from the TALLY_TOKEN variable).
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Seconds to wait for the connection and handshake.
    #[arg(long, global = true, default_value_t = 2.0, value_name = "SECONDS")]
    connect_timeout: f64,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
}

#[derive(Debug, Args)]
struct OutArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
struct SpanArgs {
    /// Start (inclusive).
    #[arg(long, default_value = "-1h", value_parser = time_arg, value_name = "TIME", allow_hyphen_values = true)]
    from: i64,
    /// End (exclusive).
    #[arg(long, default_value = "now", value_parser = time_arg, value_name = "TIME", allow_hyphen_values = true)]
    to: i64,
}

/// A selector with its text.
#[derive(Debug, Clone)]
struct Sel {
    text: String,
    sel: QuerySelector,
}

fn sel_arg(s: &str) -> Result<Sel, String> {
    QuerySelector::parse(s).map(|sel| Sel {
        text: s.to_string(),
        sel,
    })
}

fn now() -> i64 {
    static NOW: OnceLock<i64> = OnceLock::new();
    *NOW.get_or_init(tallydb_client::now_ms)
}

fn time_arg(s: &str) -> Result<i64, String> {
    parse_instant(s, now())
}

fn step_arg(s: &str) -> Result<Step, String> {
    tally::parse_step(s)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FnArg {
    Sum,
    Count,
    Avg,
    Min,
    Max,
    Rate,
}

impl From<FnArg> for Function {
    fn from(f: FnArg) -> Function {
        match f {
            FnArg::Sum => Function::Sum,
            FnArg::Count => Function::Count,
            FnArg::Avg => Function::Avg,
            FnArg::Min => Function::Min,
            FnArg::Max => Function::Max,
            FnArg::Rate => Function::Rate,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add DELTA (default 1) to one series.
    #[command(after_help = "\
Examples:
  tally incr 'page_hits{page=/}'
  tally incr 'bytes_sent{host=a}' 1500
  tally incr 'orders{shop=s1}' --id order-8812        counted once per id (dedup window)
  tally incr 'likes{post=p1}' -1                       a negative delta
  tally incr 'clicks{ad=ad001}' 3 --at 2026-11-29T10:00:00Z")]
    Incr {
        /// The series key, e.g. 'ad_clicks{ad=ad001,country=US}'.
        key: String,
        /// The increment (may be negative).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        /// Event time (default: the server's receive time).
        #[arg(long, value_parser = time_arg, value_name = "TIME", allow_hyphen_values = true)]
        at: Option<i64>,
        /// Event id: the server counts an id once within its dedup window.
        #[arg(long, value_name = "EVENT_ID")]
        id: Option<String>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Send events from a CSV or NDJSON file (or stdin) in exactly-once batches.
    #[command(after_help = "\
Input:
  csv     a header naming the columns (any order): timestamp_ms (or ts), series, delta,
          event_id (or id); exactly what `tally-admin export` writes. Without a header:
          timestamp_ms,series,delta[,event_id]. Empty timestamp: the server's time.
  ndjson  {\"series\":\"hits{page=/}\",\"delta\":2,\"timestamp_ms\":1795935600000,\"id\":\"e1\"}
          (delta defaults to 1; ts is accepted for timestamp_ms; timestamps in ms)
A bad line stops the run before anything after it is sent (events of earlier lines are
sent) and is named with its line number; --skip-bad reports and skips bad lines.
Batches carry the client's producer sequence, so retries after a lost connection never
count twice. The summary (events, duplicates by id, batches, rate) goes to stdout;
progress to stderr on a terminal.

Examples:
  tally ingest events.csv --format csv
  tally-admin export --data-dir /var/lib/tally --from now-1d > day.csv && tally --server b:7411 ingest day.csv
  zcat clicks.ndjson.gz | tally ingest - --format ndjson --skip-bad
  tally ingest big.csv --batch-size 20000 --in-flight 16 --summary json")]
    Ingest {
        /// Input file, or - for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Input format.
        #[arg(long, value_enum, default_value_t = InputFormat::Csv)]
        format: InputFormat,
        /// Report and skip bad lines instead of stopping at the first.
        #[arg(long)]
        skip_bad: bool,
        /// Events per batch (capped by the server's max_batch_events).
        #[arg(long, default_value_t = 10_000, value_name = "N")]
        batch_size: usize,
        /// Batches sent concurrently over the connection.
        #[arg(long, default_value_t = 8, value_name = "N")]
        in_flight: usize,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
        /// Format of the summary.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        summary: Format,
    },
    /// Points of a function over time, per group.
    #[command(after_help = format!("\
{QUERY_SYNTAX}

{ABOUT_TIME}

Steps: auto (the finest tier that retains the range, capped point count), or a whole
number of minutes: 1m, 5m, 1h, 1d, 15m. Functions: sum, count (events), avg (sum/count),
min, max (of deltas), rate (sum per second).

Examples:
  tally range 'page_hits{{page=/}}' --from -6h --step 5m
  tally range 'page_hits{{page=/}}' --from -1h --step 1m --chart
  tally range 'ad_clicks{{country=US}} by (ad)' --from now-1d --step 1h --fn count --format csv
  tally range 'com.example.*' --from 2026-11-01 --to 2026-12-01 --step 1d --format json"))]
    Range {
        /// The selector (see below).
        #[arg(value_parser = sel_arg)]
        selector: Sel,
        #[command(flatten)]
        span: SpanArgs,
        /// Bucket width.
        #[arg(long, default_value = "auto", value_parser = step_arg)]
        step: Step,
        /// Aggregate per bucket.
        #[arg(long = "fn", value_enum, default_value_t = FnArg::Sum, value_name = "FN")]
        function: FnArg,
        /// Draw a bar chart instead of the table (`~` marks buckets still open).
        #[arg(long)]
        chart: bool,
        /// Bar width of the chart in characters.
        #[arg(long, default_value_t = 50, value_name = "N")]
        width: usize,
        #[command(flatten)]
        out: OutArgs,
    },
    /// One sum and count over a time range (one per group with `by (…)`).
    #[command(after_help = format!("\
{QUERY_SYNTAX}

{ABOUT_TIME}

Nothing matched: sum 0, count 0, exit 0, and a note on stderr.

Examples:
  tally total 'video_views{{video=v42}}' --from now-7d
  tally total 'prefix:com.amazon' --from 2026-11-01 --to 2026-12-01
  tally total 'metric:ad_clicks{{country=US}}' --format json
  tally total 'ad_clicks by (country)' --from -1d           one total per country
  tally total 'com.example.* by (__child__)' --from -1d     one total per child of com.example"))]
    Total {
        /// The selector (see below).
        #[arg(value_parser = sel_arg)]
        selector: Sel,
        #[command(flatten)]
        span: SpanArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// The N series (or label values) with the largest sums.
    #[command(after_help = format!("\
{QUERY_SYNTAX}

{ABOUT_TIME}

Examples:
  tally top ad_clicks -n 100 --from -1m
  tally top ad_clicks --by ad -n 10 --from -1h
  tally top 'ad_clicks{{country!=US}}' --by country --format csv"))]
    Top {
        /// The selector (see below).
        #[arg(value_parser = sel_arg)]
        selector: Sel,
        /// Rank the values of this label instead of whole series.
        #[arg(long, value_name = "LABEL")]
        by: Option<String>,
        /// How many entries.
        #[arg(short = 'n', long = "limit", default_value_t = 10, value_name = "N")]
        n: u32,
        #[command(flatten)]
        span: SpanArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// List the series a selector matches.
    #[command(after_help = format!("\
{QUERY_SYNTAX}

Examples:
  tally series ad_clicks
  tally series 'ad_clicks{{country=US,ad!=ad007}}' --limit 50
  tally series 'com.example.*' --format jsonl"))]
    Series {
        /// The selector (see below).
        #[arg(value_parser = sel_arg)]
        selector: Sel,
        /// Most series listed.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        limit: u32,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Server figures (WAL, memtable, segments, connections …).
    #[command(after_help = "\
Examples:
  tally stats
  tally stats --format json | jq '.stats[] | select(.name == \"wal.fsyncs\")'")]
    Stats {
        #[command(flatten)]
        out: OutArgs,
    },
    /// Check that the server answers; show its version, the token's role and the round trip.
    #[command(after_help = "\
Examples:
  tally ping
  tally --server db1:7411 --token-file ~/.tally-token ping")]
    Ping {
        #[command(flatten)]
        out: OutArgs,
    },
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  tally completions bash > /etc/bash_completion.d/tally
  tally completions zsh > \"${fpath[1]}/_tally\"
  tally completions fish > ~/.config/fish/completions/tally.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.001)).unwrap_or(Duration::from_secs(30))
}

fn print(report: &Report, format: Format) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut err = std::io::stderr().lock();
    report.write(format, &mut out, &mut err)?;
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "tally", &mut std::io::stdout());
        return Ok(());
    }
    let conn = Conn {
        server: cli.conn.server.clone(),
        token: Conn::token_from(
            cli.conn.token_file.as_deref(),
            std::env::var("TALLY_TOKEN").ok(),
        )?,
        connect_timeout: secs(cli.conn.connect_timeout),
        request_timeout: secs(cli.conn.timeout),
    };
    match cli.command {
        Command::Completions { .. } => Ok(()),
        Command::Ingest {
            file,
            format,
            skip_bad,
            batch_size,
            in_flight,
            quiet,
            summary,
        } => {
            let (input, total_bytes): (Box<dyn BufRead + Send>, Option<u64>) = if file == "-" {
                (Box::new(BufReader::new(std::io::stdin())), None)
            } else {
                let f = std::fs::File::open(&file)
                    .map_err(|e| Error::Input(format!("opening {file}: {e}")))?;
                let len = f.metadata().ok().map(|m| m.len());
                (Box::new(BufReader::with_capacity(1 << 20, f)), len)
            };
            let opts = ingest::Options {
                format,
                batch_size,
                in_flight,
                skip_bad,
                quiet,
                total_bytes,
                name: file,
            };
            let mut err = std::io::stderr();
            let (s, failure) = ingest::run(&conn, input, &opts, &mut err)?;
            print(&s.report(), summary)?;
            match failure {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        Command::Incr {
            key,
            delta,
            at,
            id,
            out,
        } => {
            let c = conn.connect()?;
            let r = tally::incr(&c, &conn, &key, delta, at, id.as_deref())?;
            print(&r, out.format)
        }
        Command::Range {
            selector,
            span,
            step,
            function,
            chart: want_chart,
            width,
            out,
        } => {
            let span = Span::new(span.from, span.to)?;
            let c = conn.connect()?;
            let f = Function::from(function);
            let r = tally::range_result(&c, &conn, &selector.sel, span, step, f)?;
            if want_chart {
                let title = format!(
                    "{}  {} per {}",
                    selector.text,
                    tally::function_name(f),
                    tally::step_name(r.step_ms)
                );
                let text = chart::render(&r, &title, width);
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
                Ok(())
            } else {
                let rep = tally::range_report(&r, &selector.text, &selector.sel, span, f);
                print(&rep, out.format)
            }
        }
        Command::Total {
            selector,
            span,
            out,
        } => {
            let span = Span::new(span.from, span.to)?;
            let c = conn.connect()?;
            let r = tally::total(&c, &conn, &selector.text, &selector.sel, span)?;
            print(&r, out.format)
        }
        Command::Top {
            selector,
            by,
            n,
            span,
            out,
        } => {
            let span = Span::new(span.from, span.to)?;
            let c = conn.connect()?;
            let r = tally::top(
                &c,
                &conn,
                &selector.text,
                &selector.sel,
                by.as_deref(),
                n,
                span,
            )?;
            print(&r, out.format)
        }
        Command::Series {
            selector,
            limit,
            out,
        } => {
            let c = conn.connect()?;
            let r = tally::series(&c, &conn, &selector.sel, limit)?;
            print(&r, out.format)
        }
        Command::Stats { out } => {
            let c = conn.connect()?;
            print(&tally::stats(&c, &conn)?, out.format)
        }
        Command::Ping { out } => {
            let c = conn.connect()?;
            print(&tally::ping(&c, &conn)?, out.format)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "tally: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
