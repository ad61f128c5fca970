//! `tally`, the query and ingest CLI: every command as a function of parsed arguments
//! that returns a [`Report`](output::Report) (or writes a chart / an ingest summary);
//! the binary in `src/bin/tally.rs` only parses flags and prints.
//!
//! - this module: connection settings ([`Conn`]), errors with exit codes ([`Error`]),
//!   the one-shot commands (`incr`, `range`, `total`, `top`, `series`, `stats`,
//!   `ping`) over the blocking client.
//! - [`output`]: table / JSON / JSON lines / CSV rendering.
//! - [`chart`]: the terminal bar chart of `range --chart`.
//! - [`ingest`]: reading CSV / NDJSON events and sending them in exactly-once batches,
//!   several in flight.
//!
//! Selectors and times are parsed by the crate's [`selector`](crate::selector) and
//! [`timefmt`](crate::timefmt) modules, shared with `tally-admin`.
//!
//! Exit codes: 0 success; 1 failure (server down, error reply, refused token, bad
//! input line in `ingest`); 2 bad command line (clap's errors, an invalid selector,
//! time or step, `--from` not before `--to`).

pub mod chart;
pub mod ingest;
pub mod output;

use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;
use tallydb_client::{
    blocking, Client, ClientBuilder, ErrorCode, Function, RangeQuery, RangeResult, RetryPolicy,
    Step, Tiers, TopQuery, Value,
};

use crate::selector::QuerySelector;
use crate::timefmt::{duration_ms, format_utc};
use output::{time_cell, Cell, Column, Report};
use tallydb_protocol::text::ParsedSelector;

/// The default server address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7411";

/// A `tally` failure; [`Error::exit_code`] maps it to the process exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad command line found after parsing (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached or answered with an error (exit 1).
    #[error("{0}")]
    Server(String),
    /// Bad input data or a local file problem (exit 1).
    #[error("{0}")]
    Input(String),
    /// Writing the output failed (exit 1).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Result of a `tally` command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Conn {
    /// `host:port`.
    pub server: String,
    /// The token (from `TALLY_TOKEN` or `--token-file`), empty for none.
    pub token: Vec<u8>,
    /// TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Bound on each answer.
    pub request_timeout: Duration,
}

impl Conn {
    /// Reads the token: `token_file` if given (trailing newline trimmed), else the
    /// `TALLY_TOKEN` value passed in `env_token`.
    pub fn token_from(token_file: Option<&Path>, env_token: Option<String>) -> Result<Vec<u8>> {
        match token_file {
            Some(p) => {
                let mut t = std::fs::read(p).map_err(|e| {
                    Error::Input(format!("reading the token file {}: {e}", p.display()))
                })?;
                while t.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    t.pop();
                }
                Ok(t)
            }
            None => Ok(env_token.unwrap_or_default().into_bytes()),
        }
    }

    /// Builder settings: no retries (one-shot commands fail fast).
    pub fn builder(&self) -> ClientBuilder {
        Client::builder(self.server.clone())
            .connect_timeout(self.connect_timeout)
            .request_timeout(self.request_timeout)
            .token(self.token.clone())
            .client_name(format!("tally/{}", env!("CARGO_PKG_VERSION")))
            .retry(RetryPolicy::none())
    }

    /// Connects the blocking client for a one-shot command.
    pub fn connect(&self) -> Result<blocking::Client> {
        blocking::Client::from_builder(self.builder()).map_err(|e| self.explain(&e))
    }

    /// A client error as a `tally` error with a hint for the usual causes.
    pub fn explain(&self, e: &tallydb_client::Error) -> Error {
        use tallydb_client::Error as E;
        let msg = match e {
            E::Connect { .. } | E::ConnectTimeout { .. } => format!(
                "{e} (is tallyd running there? set the address with --server or TALLY_SERVER)"
            ),
            _ => match e.code() {
                Some(ErrorCode::Unauthenticated) => {
                    format!("{e} (the server refused the token: set TALLY_TOKEN or --token-file)")
                }
                Some(ErrorCode::Forbidden) => {
                    format!("{e} (the token's role does not allow this command)")
                }
                _ => e.to_string(),
            },
        };
        Error::Server(format!("server {}: {msg}", self.server))
    }
}

/// `minute,hour` for a tier bitmask (`none` when empty).
pub fn tier_names(t: Tiers) -> String {
    let mut names = Vec::new();
    for (tier, name) in [
        (Tiers::MINUTE, "minute"),
        (Tiers::HOUR, "hour"),
        (Tiers::DAY, "day"),
    ] {
        if t.contains(tier) {
            names.push(name);
        }
    }
    if t.0 & !7 != 0 {
        names.push("other");
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

fn tiers_json(t: Tiers) -> Json {
    Json::from(
        tier_names(t)
            .split(',')
            .filter(|s| *s != "none")
            .collect::<Vec<_>>(),
    )
}

/// A time range checked for the CLI: `from` before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start, inclusive, ms.
    pub from_ms: i64,
    /// End, exclusive, ms.
    pub to_ms: i64,
}

impl Span {
    /// Refuses an empty or reversed range (a usage error).
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Span> {
        if from_ms >= to_ms {
            return Err(Error::Usage(format!(
                "empty time range: --from {} is not before --to {}",
                format_utc(from_ms),
                format_utc(to_ms)
            )));
        }
        Ok(Span { from_ms, to_ms })
    }
}

/// Parses `--step`: `auto`, or a duration that is a whole number of minutes
/// (`1m`, `5m`, `1h`, `1d`, `15m` …).
pub fn parse_step(s: &str) -> Result<Step, String> {
    if s.trim() == "auto" {
        return Ok(Step::Auto);
    }
    match duration_ms(s.trim()) {
        Some(ms) if ms > 0 && ms % 60_000 == 0 => Ok(Step::Millis(ms as u64)),
        _ => Err(format!(
            "invalid step {s:?}: use auto or a whole number of minutes such as 1m, 5m, 1h, 1d"
        )),
    }
}

/// A step in ms as text: `1m`, `5m`, `1h`, `1d`, `90m`.
pub fn step_name(ms: u64) -> String {
    for (unit, n) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// The name of a range function.
pub fn function_name(f: Function) -> &'static str {
    match f {
        Function::Sum => "sum",
        Function::Count => "count",
        Function::Avg => "avg",
        Function::Min => "min",
        Function::Max => "max",
        Function::Rate => "rate",
    }
}

fn meta_line(tiers: Tiers, closed_until_ms: i64, extra: &str) -> String {
    format!(
        "tiers: {}{extra}  closed until: {}",
        tier_names(tiers),
        format_utc(closed_until_ms)
    )
}

/// `incr`: one event.
pub fn incr(
    c: &blocking::Client,
    conn: &Conn,
    key: &str,
    delta: i64,
    at_ms: Option<i64>,
    id: Option<&str>,
) -> Result<Report> {
    let client = c.as_async();
    let mut batch = client.batch();
    batch.add_event(key, delta, at_ms, id.map(str::as_bytes));
    let r = c.block_on(batch.send()).map_err(|e| conn.explain(&e))?;
    let mut notes = Vec::new();
    if r.duplicates > 0 {
        notes.push(format!(
            "event id {:?} was already seen within the server's dedup window: not counted again",
            id.unwrap_or_default()
        ));
    }
    Ok(Report {
        rows_name: "results",
        columns: vec![
            Column::new("series"),
            Column::new("delta"),
            Column::new("applied"),
            Column::new("duplicates"),
        ],
        rows: vec![vec![
            Cell::Str(key.to_string()),
            Cell::Int(delta),
            Cell::Int(i64::from(r.applied)),
            Cell::Int(i64::from(r.duplicates)),
        ]],
        meta: vec![],
        meta_line: None,
        notes,
    })
}

fn empty_note(sel: &QuerySelector, text: &str, span: Span) -> String {
    let mut n = format!(
        "no events matched {text:?} between {} and {}",
        format_utc(span.from_ms),
        format_utc(span.to_ms)
    );
    match sel.parsed() {
        ParsedSelector::Exact(k) if k.contains('{') => n.push_str(&format!(
            " (it names the exact series {k}; to match every series with these labels drop `exact:`)"
        )),
        ParsedSelector::Metric { matchers, .. }
            if !matchers.is_empty() && !text.trim_start().starts_with("metric:") =>
        {
            n.push_str(&format!(
                " (braces hold matchers, as in PromQL: {text:?} reads as `metric:{}`, every series with these labels; `exact:` names one series)",
                text.trim()
            ))
        }
        _ => {}
    }
    n
}

/// `total`: one sum and count, or one per group when the selector has `by (…)`.
pub fn total(
    c: &blocking::Client,
    conn: &Conn,
    text: &str,
    sel: &QuerySelector,
    span: Span,
) -> Result<Report> {
    if !sel.group_by().is_empty() {
        return total_groups(c, conn, text, sel, span);
    }
    let t = c
        .total(&sel.to_protocol(), span.from_ms, span.to_ms)
        .map_err(|e| conn.explain(&e))?;
    let notes = if t.count == 0 {
        vec![empty_note(sel, text, span)]
    } else {
        vec![]
    };
    Ok(Report {
        rows_name: "totals",
        columns: vec![
            Column::new("sum"),
            Column::new("count"),
            Column::new("from"),
            Column::new("to"),
            Column::machine("from_ms"),
            Column::machine("to_ms"),
        ],
        rows: vec![vec![
            Cell::Int(t.sum),
            Cell::Int(i64::try_from(t.count).unwrap_or(i64::MAX)),
            time_cell(t.from_ms),
            time_cell(t.to_ms),
            Cell::Int(t.from_ms),
            Cell::Int(t.to_ms),
        ]],
        meta: vec![
            ("selector", Json::from(text)),
            ("tiers", tiers_json(t.tiers)),
            ("closed_until_ms", Json::from(t.closed_until_ms)),
        ],
        meta_line: Some(meta_line(t.tiers, t.closed_until_ms, "")),
        notes,
    })
}

/// `total … by (labels)`: one row per group, a column per group-by label.
fn total_groups(
    c: &blocking::Client,
    conn: &Conn,
    text: &str,
    sel: &QuerySelector,
    span: Span,
) -> Result<Report> {
    let t = c
        .total_by(&sel.to_protocol(), span.from_ms, span.to_ms)
        .map_err(|e| conn.explain(&e))?;
    let labels = sel.group_by();
    let mut columns: Vec<Column> = labels.iter().map(Column::new).collect();
    columns.extend([
        Column::new("sum"),
        Column::new("count"),
        Column::new("from"),
        Column::new("to"),
        Column::machine("from_ms"),
        Column::machine("to_ms"),
    ]);
    let rows: Vec<Vec<Cell>> = t
        .groups
        .iter()
        .map(|g| {
            let mut row: Vec<Cell> = labels
                .iter()
                .map(|l| {
                    g.labels
                        .iter()
                        .find(|(k, _)| k == l)
                        .map_or(Cell::Empty, |(_, v)| Cell::Str(v.clone()))
                })
                .collect();
            row.extend([
                Cell::Int(g.sum),
                Cell::Int(i64::try_from(g.count).unwrap_or(i64::MAX)),
                time_cell(t.from_ms),
                time_cell(t.to_ms),
                Cell::Int(t.from_ms),
                Cell::Int(t.to_ms),
            ]);
            row
        })
        .collect();
    let notes = if rows.is_empty() {
        vec![empty_note(sel, text, span)]
    } else {
        vec![]
    };
    Ok(Report {
        rows_name: "totals",
        columns,
        rows,
        meta: vec![
            ("selector", Json::from(text)),
            ("tiers", tiers_json(t.tiers)),
            ("closed_until_ms", Json::from(t.closed_until_ms)),
        ],
        meta_line: Some(meta_line(t.tiers, t.closed_until_ms, "")),
        notes,
    })
}

/// `range`: the raw answer (for `--chart`).
pub fn range_result(
    c: &blocking::Client,
    conn: &Conn,
    sel: &QuerySelector,
    span: Span,
    step: Step,
    function: Function,
) -> Result<RangeResult> {
    c.range(&RangeQuery {
        selector: sel.to_protocol(),
        from_ms: span.from_ms,
        to_ms: span.to_ms,
        step,
        function,
    })
    .map_err(|e| conn.explain(&e))
}

/// `range` as rows: one per group and bucket.
pub fn range_report(
    r: &RangeResult,
    text: &str,
    sel: &QuerySelector,
    span: Span,
    function: Function,
) -> Report {
    // Label columns: the selector's group-by labels, else whatever the groups carry.
    let mut labels: Vec<String> = sel.group_by().to_vec();
    for g in &r.groups {
        for (k, _) in &g.labels {
            if !labels.contains(k) {
                labels.push(k.clone());
            }
        }
    }
    let mut columns: Vec<Column> = labels.iter().map(Column::new).collect();
    columns.extend([
        Column::new("time"),
        Column::machine("timestamp_ms"),
        Column::new(function_name(function)),
        Column::new("open"),
    ]);
    let mut rows = Vec::new();
    for g in &r.groups {
        for p in &g.points {
            let mut row: Vec<Cell> = labels
                .iter()
                .map(|l| {
                    g.labels
                        .iter()
                        .find(|(k, _)| k == l)
                        .map_or(Cell::Empty, |(_, v)| Cell::Str(v.clone()))
                })
                .collect();
            row.push(time_cell(p.ts_ms));
            row.push(Cell::Int(p.ts_ms));
            row.push(match p.value {
                Value::Int(v) => Cell::Int(v),
                Value::Float(v) => Cell::Float(v),
            });
            row.push(Cell::Flag(p.ts_ms >= r.closed_until_ms));
            rows.push(row);
        }
    }
    let notes = if rows.is_empty() {
        vec![empty_note(sel, text, span)]
    } else {
        vec![]
    };
    Report {
        rows_name: "points",
        columns,
        rows,
        meta: vec![
            ("selector", Json::from(text)),
            ("function", Json::from(function_name(function))),
            ("step_ms", Json::from(r.step_ms)),
            ("tiers", tiers_json(r.tiers)),
            ("closed_until_ms", Json::from(r.closed_until_ms)),
        ],
        meta_line: Some(format!(
            "{}  (open * = may still grow)",
            meta_line(
                r.tiers,
                r.closed_until_ms,
                &format!("  step: {}", step_name(r.step_ms)),
            )
        )),
        notes,
    }
}

/// `top`: the `n` largest sums.
#[allow(clippy::too_many_arguments)]
pub fn top(
    c: &blocking::Client,
    conn: &Conn,
    text: &str,
    sel: &QuerySelector,
    by: Option<&str>,
    n: u32,
    span: Span,
) -> Result<Report> {
    let t = c
        .top(&TopQuery {
            selector: sel.to_protocol(),
            from_ms: span.from_ms,
            to_ms: span.to_ms,
            n,
            group_by: by,
        })
        .map_err(|e| conn.explain(&e))?;
    let rows: Vec<Vec<Cell>> = t
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                Cell::Int(i as i64 + 1),
                Cell::Str(e.name.clone()),
                Cell::Int(e.sum),
                Cell::Int(i64::try_from(e.count).unwrap_or(i64::MAX)),
            ]
        })
        .collect();
    let notes = if rows.is_empty() {
        vec![empty_note(sel, text, span)]
    } else {
        vec![]
    };
    Ok(Report {
        rows_name: "entries",
        columns: vec![
            Column::new("rank"),
            Column::new(by.unwrap_or("series")),
            Column::new("sum"),
            Column::new("count"),
        ],
        rows,
        meta: vec![
            ("selector", Json::from(text)),
            ("by", by.map_or(Json::Null, Json::from)),
            ("tiers", tiers_json(t.tiers)),
            ("closed_until_ms", Json::from(t.closed_until_ms)),
        ],
        meta_line: Some(meta_line(t.tiers, t.closed_until_ms, "")),
        notes,
    })
}

/// `series`: matching series keys.
pub fn series(
    c: &blocking::Client,
    conn: &Conn,
    sel: &QuerySelector,
    limit: u32,
) -> Result<Report> {
    let s = c
        .series(&sel.to_protocol(), limit)
        .map_err(|e| conn.explain(&e))?;
    let mut notes = Vec::new();
    if s.truncated {
        notes.push(format!(
            "more series match than the limit of {limit}; raise --limit"
        ));
    }
    Ok(Report {
        rows_name: "series",
        columns: vec![Column::new("series")],
        rows: s.keys.iter().map(|k| vec![Cell::Str(k.clone())]).collect(),
        meta: vec![("truncated", Json::from(s.truncated))],
        meta_line: None,
        notes,
    })
}

/// `stats`: server figures.
pub fn stats(c: &blocking::Client, conn: &Conn) -> Result<Report> {
    let s = c.stats().map_err(|e| conn.explain(&e))?;
    Ok(Report {
        rows_name: "stats",
        columns: vec![Column::new("name"), Column::new("value")],
        rows: s
            .entries
            .iter()
            .map(|(n, v)| {
                vec![
                    Cell::Str(n.clone()),
                    Cell::Int(i64::try_from(*v).unwrap_or(i64::MAX)),
                ]
            })
            .collect(),
        ..Report::default()
    })
}

/// `ping`: round trip, server version and role.
pub fn ping(c: &blocking::Client, conn: &Conn) -> Result<Report> {
    let rtt = c.ping().map_err(|e| conn.explain(&e))?;
    let info = c.server_info();
    let (version, role) = info.map_or((String::new(), String::new()), |i| {
        (i.server_version, format!("{:?}", i.role).to_lowercase())
    });
    Ok(Report {
        rows_name: "ping",
        columns: vec![
            Column::new("server"),
            Column::new("version"),
            Column::new("role"),
            Column::new("rtt_ms"),
        ],
        rows: vec![vec![
            Cell::Str(conn.server.clone()),
            Cell::Str(version),
            Cell::Str(role),
            Cell::Float(rtt.as_secs_f64() * 1000.0),
        ]],
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_names() {
        assert_eq!(parse_step("auto"), Ok(Step::Auto));
        assert_eq!(parse_step("5m"), Ok(Step::Millis(300_000)));
        assert_eq!(parse_step("1d"), Ok(Step::Millis(86_400_000)));
        assert!(parse_step("30s").is_err());
        assert!(parse_step("0m").is_err());
        assert_eq!(step_name(3_600_000), "1h");
        assert_eq!(step_name(5_400_000), "90m");
        assert_eq!(tier_names(Tiers::MINUTE | Tiers::DAY), "minute,day");
        assert_eq!(tier_names(Tiers(0)), "none");
        assert!(Span::new(5, 5).is_err());
    }
}
