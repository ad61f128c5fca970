//! `tally ingest`: events from CSV or NDJSON, sent in exactly-once batches.
//!
//! # Input
//!
//! CSV (RFC 4180, one event per line): a header naming the columns, in any order —
//! `timestamp_ms` (or `ts`), `series`, `delta`, `event_id` (or `id`); only `series` is
//! required. Exactly what `tally-admin export` writes (`timestamp_ms,series,delta`).
//! Without a header line the columns are `timestamp_ms,series,delta[,event_id]`.
//! An empty timestamp means the server's receive time; an empty delta means 1.
//!
//! NDJSON: one object per line with `series` (string), `delta` (integer, default 1),
//! optional `timestamp_ms` or `ts` (integer unix ms, or an RFC 3339 string) and
//! optional `id` or `event_id` (string, at most 64 bytes). Other keys are ignored.
//!
//! Blank lines are skipped. Timestamps in the files are always milliseconds.
//!
//! # Bad lines
//!
//! Each line is checked before it is sent (series key rules, numbers, id length). By
//! default the first bad line stops the run: the events of the lines before it are
//! sent, nothing after it, and the error names the line so the rest can be resumed
//! (`tail -n +LINE`). With `--skip-bad` bad lines are reported and skipped.
//!
//! The server validates each event on its own: a line it refuses (a timestamp
//! before its minimum event time, past its retention or too far ahead) is reported
//! with its line number and reason, the other lines of its batch are applied, and
//! the run goes on; the summary counts the refused lines and the exit code is 1 when
//! there were any.
//!
//! # Stops
//!
//! When a batch fails as a whole (the server down for longer than the retries, an
//! overflow), no new batch is sent, the batches in flight are waited for, and the
//! message says exactly which lines were applied, which were not counted, which
//! may or may not have been (a connection lost with the batch in flight), and
//! gives a command that sends exactly the lines not counted, so a resumed run never
//! counts a line twice.
//!
//! # Sending
//!
//! A reader thread parses lines into batches (default 10 000 events, never more than
//! the server's `max_batch_events`); up to `in_flight` batches (default 8) are
//! pipelined over one connection. Each batch carries the client's producer id and a
//! sequence: a batch resent after a lost connection is applied once
//! (`tallydb_client`'s exactly-once guarantee), so the client's retries are safe.
//! Event ids add a second guard: an id the server saw within its dedup window is
//! acknowledged and counted as a duplicate, not again.

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tallydb_client::{Client, IncrResult, RetryPolicy};
use tallydb_protocol::MAX_EVENT_ID_LEN;
use tallydb_storage::SeriesKey;
use tokio::task::JoinSet;

use super::output::{Cell, Column, Report};
use super::{Conn, Error, Result};
use crate::progress::Progress;
use crate::timefmt::parse_instant;

/// Input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// `timestamp_ms,series,delta[,event_id]` with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

/// One event read from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputEvent {
    /// Canonical series key.
    pub key: String,
    /// Delta.
    pub delta: i64,
    /// Timestamp, unix ms (`None`: the server's receive time).
    pub ts_ms: Option<i64>,
    /// Event id.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Ts,
    Series,
    Delta,
    Id,
    Ignored,
}

/// Turns lines into events; keeps the CSV column order between lines.
#[derive(Debug)]
pub struct LineParser {
    format: InputFormat,
    columns: Option<Vec<Col>>,
}

/// Splits one CSV line into fields (RFC 4180 quoting, no embedded newlines).
pub fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote".into());
                    }
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && field_start {
            quoted = true;
            field_start = false;
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            field_start = true;
        } else {
            cur.push(c);
            field_start = false;
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

fn check_key(key: &str) -> Result<String, String> {
    SeriesKey::parse(key.trim())
        .map(|k| k.as_str().to_string())
        .map_err(|e| format!("series {key:?}: {e}"))
}

fn check_id(id: &str) -> Result<Option<String>, String> {
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_EVENT_ID_LEN {
        return Err(format!(
            "event id of {} bytes; at most {MAX_EVENT_ID_LEN}",
            id.len()
        ));
    }
    Ok(Some(id.to_string()))
}

fn parse_ts_text(t: &str) -> Result<Option<i64>, String> {
    let t = t.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(Some(ms));
    }
    parse_instant(t, 0)
        .map(Some)
        .map_err(|_| format!("timestamp {t:?}: expected unix milliseconds or an RFC 3339 time"))
}

impl LineParser {
    /// True once a CSV header line was read (it names the columns).
    pub fn saw_header(&self) -> bool {
        self.format == InputFormat::Csv
            && self
                .columns
                .as_deref()
                .is_some_and(|c| c != [Col::Ts, Col::Series, Col::Delta, Col::Id])
    }

    /// A parser for `format`.
    pub fn new(format: InputFormat) -> LineParser {
        LineParser {
            format,
            columns: None,
        }
    }

    /// The event on `line`, `None` for a blank or header line.
    pub fn parse(&mut self, line: &str) -> Result<Option<InputEvent>, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(None);
        }
        match self.format {
            InputFormat::Csv => self.parse_csv(line),
            InputFormat::Ndjson => parse_json(line).map(Some),
        }
    }

    fn parse_csv(&mut self, line: &str) -> Result<Option<InputEvent>, String> {
        let fields = split_csv(line)?;
        if self.columns.is_none() {
            let names: Vec<String> = fields
                .iter()
                .map(|f| f.trim().to_ascii_lowercase())
                .collect();
            if names.iter().any(|n| n == "series") {
                let cols: Vec<Col> = names
                    .iter()
                    .map(|n| match n.as_str() {
                        "timestamp_ms" | "ts" | "timestamp" => Col::Ts,
                        "series" => Col::Series,
                        "delta" => Col::Delta,
                        "event_id" | "id" => Col::Id,
                        _ => Col::Ignored,
                    })
                    .collect();
                self.columns = Some(cols);
                return Ok(None);
            }
            self.columns = Some(vec![Col::Ts, Col::Series, Col::Delta, Col::Id]);
        }
        let cols = self.columns.as_deref().unwrap_or_default();
        if fields.len() > cols.len() {
            return Err(format!(
                "{} fields, expected at most {}",
                fields.len(),
                cols.len()
            ));
        }
        let mut ev = InputEvent {
            key: String::new(),
            delta: 1,
            ts_ms: None,
            id: None,
        };
        let mut have_series = false;
        for (col, f) in cols.iter().zip(&fields) {
            match col {
                Col::Ts => ev.ts_ms = parse_ts_text(f)?,
                Col::Series => {
                    ev.key = check_key(f)?;
                    have_series = true;
                }
                Col::Delta => {
                    let f = f.trim();
                    if !f.is_empty() {
                        ev.delta = f
                            .parse()
                            .map_err(|_| format!("delta {f:?} is not an integer"))?;
                    }
                }
                Col::Id => ev.id = check_id(f)?,
                Col::Ignored => {}
            }
        }
        if !have_series {
            return Err("no series field".into());
        }
        Ok(Some(ev))
    }
}

fn parse_json(line: &str) -> Result<InputEvent, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let key = obj
        .get("series")
        .and_then(|s| s.as_str())
        .ok_or("no \"series\" string")?;
    let delta = match obj.get("delta") {
        None | Some(serde_json::Value::Null) => 1,
        Some(d) => d
            .as_i64()
            .ok_or_else(|| format!("delta {d} is not an integer"))?,
    };
    let ts = obj.get("timestamp_ms").or_else(|| obj.get("ts"));
    let ts_ms = match ts {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => parse_ts_text(s)?,
        Some(t) => Some(
            t.as_i64()
                .ok_or_else(|| format!("timestamp {t} is not integer milliseconds"))?,
        ),
    };
    let id = match obj.get("id").or_else(|| obj.get("event_id")) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => check_id(s)?,
        Some(other) => return Err(format!("event id {other} is not a string")),
    };
    Ok(InputEvent {
        key: check_key(key)?,
        delta,
        ts_ms,
        id,
    })
}

/// Settings of an ingest run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Input format.
    pub format: InputFormat,
    /// Events per batch (capped by the server's `max_batch_events`).
    pub batch_size: usize,
    /// Batches in flight at once.
    pub in_flight: usize,
    /// Report and skip bad lines instead of stopping.
    pub skip_bad: bool,
    /// No progress display.
    pub quiet: bool,
    /// Input size in bytes when known (a file), for the progress bar.
    pub total_bytes: Option<u64>,
    /// The input's name for messages (`-` for stdin).
    pub name: String,
}

/// What an ingest run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events read and sent in acknowledged batches.
    pub events: u64,
    /// Events counted by the server.
    pub applied: u64,
    /// Events skipped because their id was already seen.
    pub duplicates: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Bad lines skipped (`--skip-bad`).
    pub skipped_lines: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
    /// Lines (events) the server refused one by one.
    pub refused: u64,
}

impl Summary {
    /// Events per second over the run.
    pub fn rate(&self) -> f64 {
        self.events as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }

    /// The summary as a one-row report.
    pub fn report(&self) -> Report {
        Report {
            rows_name: "summary",
            columns: vec![
                Column::new("events"),
                Column::new("applied"),
                Column::new("duplicates"),
                Column::new("batches"),
                Column::new("skipped_lines"),
                Column::new("elapsed_s"),
                Column::new("events_per_s"),
                Column::new("refused"),
            ],
            rows: vec![vec![
                Cell::Int(self.events as i64),
                Cell::Int(self.applied as i64),
                Cell::Int(self.duplicates as i64),
                Cell::Int(self.batches as i64),
                Cell::Int(self.skipped_lines as i64),
                Cell::Float(self.elapsed_ms as f64 / 1000.0),
                Cell::Float(self.rate().round()),
                Cell::Int(self.refused as i64),
            ]],
            ..Report::default()
        }
    }
}

/// A batch with the input lines it came from.
#[derive(Debug)]
struct LineBatch {
    first_line: u64,
    last_line: u64,
    events: Vec<InputEvent>,
    /// The input line of each event.
    lines: Vec<u64>,
}

impl LineBatch {
    fn empty(first_line: u64, capacity: usize) -> LineBatch {
        LineBatch {
            first_line,
            last_line: first_line.saturating_sub(1),
            events: Vec::with_capacity(capacity),
            lines: Vec::with_capacity(capacity),
        }
    }
}

/// What the reader thread sends.
#[derive(Debug)]
enum Msg {
    Batch(LineBatch),
    Skipped {
        line: u64,
        message: String,
    },
    /// The input's first line is a CSV header.
    Header,
    Stop(Error),
    Progress(u64),
}

/// Most skipped lines reported one by one; the rest are only counted.
const MAX_REPORTED: u64 = 20;

fn read_lines(
    input: Box<dyn BufRead + Send>,
    opts: &Options,
    batch_size: usize,
    tx: &tokio::sync::mpsc::Sender<Msg>,
) {
    let mut parser = LineParser::new(opts.format);
    let mut batch = LineBatch::empty(1, batch_size);
    let mut bytes: u64 = 0;
    let mut line_no: u64 = 0;
    let mut buf = String::new();
    let mut input = input;
    let send = |m: Msg| tx.blocking_send(m).is_ok();
    loop {
        buf.clear();
        match input.read_line(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) => {
                let _ = send(Msg::Batch(std::mem::replace(
                    &mut batch,
                    LineBatch::empty(0, 0),
                )));
                let _ = send(Msg::Stop(Error::Input(format!(
                    "{}: reading line {}: {e}",
                    opts.name,
                    line_no + 1
                ))));
                return;
            }
        }
        line_no += 1;
        match parser.parse(&buf) {
            Ok(Some(ev)) => {
                if batch.events.is_empty() {
                    batch.first_line = line_no;
                }
                batch.last_line = line_no;
                batch.events.push(ev);
                batch.lines.push(line_no);
                if batch.events.len() >= batch_size {
                    let full =
                        std::mem::replace(&mut batch, LineBatch::empty(line_no + 1, batch_size));
                    if !send(Msg::Batch(full)) || !send(Msg::Progress(bytes)) {
                        return;
                    }
                }
            }
            Ok(None) => {
                if line_no == 1 && parser.saw_header() && !send(Msg::Header) {
                    return;
                }
            }
            Err(message) if opts.skip_bad => {
                if !send(Msg::Skipped {
                    line: line_no,
                    message,
                }) {
                    return;
                }
            }
            Err(message) => {
                let _ = send(Msg::Batch(std::mem::replace(
                    &mut batch,
                    LineBatch::empty(0, 0),
                )));
                let resume = if opts.name == "-" {
                    String::new()
                } else {
                    format!(
                        "; after fixing it, resume with `tail -n +{line_no} {}`{}",
                        opts.name,
                        if opts.format == InputFormat::Csv {
                            " (put the header line back first)"
                        } else {
                            ""
                        }
                    )
                };
                let _ = send(Msg::Stop(Error::Input(format!(
                    "{}: line {line_no}: {message}; the events before this line were sent, none after it{resume} (or use --skip-bad)",
                    opts.name
                ))));
                return;
            }
        }
    }
    if !batch.events.is_empty() {
        let _ = send(Msg::Batch(batch));
    }
    let _ = send(Msg::Progress(bytes));
}

/// `e` with `more` appended to its message.
fn with_context(e: Error, more: &str) -> Error {
    match e {
        Error::Server(m) => Error::Server(format!("{m}{more}")),
        Error::Input(m) => Error::Input(format!("{m}{more}")),
        other => Error::Server(format!("{other}{more}")),
    }
}

/// Which lines of a run went where, to say exactly what a stopped run did.
#[derive(Debug, Default)]
struct LineLedger {
    /// Line ranges of acknowledged batches.
    applied: Vec<(u64, u64)>,
    /// Line ranges of batches that failed with nothing counted.
    lost: Vec<(u64, u64)>,
    /// Line ranges of batches that may or may not have been counted.
    unsure: Vec<(u64, u64)>,
    /// Last line handed to a batch.
    sent_through: u64,
    /// The reader reached the end of the input.
    read_all: bool,
    /// The input starts with a CSV header line.
    header: bool,
    refused_reported: u64,
}

fn ranges(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl LineLedger {
    /// What a stopped run applied and how to resume it without counting a line
    /// twice; `None` when nothing was sent out of order (every batch before the
    /// stop was applied).
    fn explain(&mut self, opts: &Options) -> Option<String> {
        if self.lost.is_empty() && self.unsure.is_empty() {
            return None;
        }
        for r in [&mut self.applied, &mut self.lost, &mut self.unsure] {
            r.sort_unstable();
        }
        let mut m = String::from("\nwhat was counted: ");
        if self.applied.is_empty() {
            m.push_str("no line was applied");
        } else {
            m.push_str(&format!(
                "lines {} were applied (less any refused lines reported above)",
                ranges(&self.applied)
            ));
        }
        let mut todo = self.lost.clone();
        if !self.lost.is_empty() {
            m.push_str(&format!("; lines {} were not counted", ranges(&self.lost)));
        }
        let unsent = (!self.read_all).then_some(self.sent_through + 1);
        if let Some(from) = unsent {
            m.push_str(&format!("; lines {from} to the end were not sent"));
        }
        if !self.unsure.is_empty() {
            m.push_str(&format!(
                "; lines {} may or may not have been counted (the connection was lost with them in flight): resend them only if their events carry event ids (the server skips ids it has seen within its dedup window), otherwise compare totals first",
                ranges(&self.unsure)
            ));
        }
        if todo.is_empty() && unsent.is_none() {
            return Some(m);
        }
        let mut script: Vec<String> = Vec::new();
        if self.header {
            script.push("1p".into());
        }
        todo.sort_unstable();
        script.extend(todo.iter().map(|(a, b)| format!("{a},{b}p")));
        if let Some(from) = unsent {
            script.push(format!("{from},$p"));
        }
        let format = match opts.format {
            InputFormat::Csv => "csv",
            InputFormat::Ndjson => "ndjson",
        };
        if opts.name == "-" {
            m.push_str(&format!(
                "\nto resume without counting a line twice, send exactly the lines not counted: sed -n '{}' INPUT | tally ingest - --format {format}",
                script.join(";")
            ));
        } else {
            m.push_str(&format!(
                "\nto resume without counting a line twice, send exactly the lines not counted: sed -n '{}' {} | tally ingest - --format {format}",
                script.join(";"),
                opts.name
            ));
        }
        Some(m)
    }
}

async fn send_batch(
    client: Client,
    b: LineBatch,
) -> (LineBatch, tallydb_client::Result<IncrResult>) {
    let mut batch = client.batch();
    for e in &b.events {
        batch.add_event(&e.key, e.delta, e.ts_ms, e.id.as_deref().map(str::as_bytes));
    }
    let r = batch.send().await;
    (b, r)
}

/// Reads `input` and sends its events to the server of `conn`. Returns the summary
/// and, when the run stopped early, why (bad line, refused batch, lost server).
pub fn run(
    conn: &Conn,
    input: Box<dyn BufRead + Send>,
    opts: &Options,
    err: &mut dyn std::io::Write,
) -> Result<(Summary, Option<Error>)> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Input(format!("starting the runtime: {e}")))?;
    let builder = conn
        .builder()
        .request_timeout(conn.request_timeout.max(Duration::from_secs(30)))
        .retry(
            RetryPolicy::default()
                .max_retries(10)
                .max_backoff(Duration::from_secs(2)),
        );
    let client = runtime
        .block_on(builder.connect())
        .map_err(|e| conn.explain(&e))?;
    let server_max = client
        .server_info()
        .map_or(usize::MAX, |i| i.limits.max_batch_events as usize);
    let batch_size = opts.batch_size.clamp(1, server_max.max(1));
    let in_flight = opts.in_flight.max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(in_flight * 2);
    let reader_opts = Arc::new(opts.clone());
    let reader = std::thread::spawn(move || read_lines(input, &reader_opts, batch_size, &tx));

    let mut progress = Progress::new(opts.quiet);
    let mut summary = Summary::default();
    let mut failure: Option<Error> = None;
    let mut bytes_read = 0;
    let mut ledger = LineLedger::default();
    runtime.block_on(async {
        let mut tasks: JoinSet<(LineBatch, tallydb_client::Result<IncrResult>)> = JoinSet::new();
        let mut reading = true;
        while reading || !tasks.is_empty() {
            let can_read = reading && failure.is_none() && tasks.len() < in_flight;
            tokio::select! {
                msg = rx.recv(), if can_read => match msg {
                    None => {
                        reading = false;
                        ledger.read_all = true;
                    }
                    Some(Msg::Header) => ledger.header = true,
                    Some(Msg::Batch(b)) if b.events.is_empty() => {}
                    Some(Msg::Batch(b)) => {
                        ledger.sent_through = ledger.sent_through.max(b.last_line);
                        tasks.spawn(send_batch(client.clone(), b));
                    }
                    Some(Msg::Progress(b)) => bytes_read = b,
                    Some(Msg::Skipped { line, message }) => {
                        summary.skipped_lines += 1;
                        progress.finish();
                        if summary.skipped_lines <= MAX_REPORTED {
                            let _ = writeln!(err, "{}: line {line}: {message} (skipped)", opts.name);
                        } else if summary.skipped_lines == MAX_REPORTED + 1 {
                            let _ = writeln!(err, "{}: more bad lines; only counting them now", opts.name);
                        }
                    }
                    Some(Msg::Stop(e)) => {
                        failure = Some(e);
                        reading = false;
                    }
                },
                done = tasks.join_next(), if !tasks.is_empty() => {
                    match done {
                        Some(Ok((b, Ok(r)))) => {
                            summary.batches += 1;
                            summary.events += b.events.len() as u64;
                            summary.applied += u64::from(r.applied);
                            summary.duplicates += u64::from(r.duplicates);
                            summary.refused += u64::from(r.refused_count);
                            for f in &r.refused {
                                let line = b.lines.get(f.index as usize).copied().unwrap_or(0);
                                ledger.refused_reported += 1;
                                if ledger.refused_reported <= MAX_REPORTED {
                                    progress.finish();
                                    let _ = writeln!(err, "{}: line {line}: {} (refused)", opts.name, f.message);
                                } else if ledger.refused_reported == MAX_REPORTED + 1 {
                                    let _ = writeln!(err, "{}: more refused lines; only counting them now", opts.name);
                                }
                            }
                            ledger.applied.push((b.first_line, b.last_line));
                        }
                        Some(Ok((b, Err(e)))) => {
                            if e.maybe_applied() {
                                ledger.unsure.push((b.first_line, b.last_line));
                            } else {
                                ledger.lost.push((b.first_line, b.last_line));
                            }
                            if failure.is_none() {
                                let maybe = if e.maybe_applied() {
                                    " (it may or may not have been counted)"
                                } else {
                                    " (none of its events were counted)"
                                };
                                let m = conn.explain(&e);
                                failure = Some(Error::Server(format!(
                                    "{}: the batch of lines {}..={} failed{maybe}: {m}",
                                    opts.name, b.first_line, b.last_line
                                )));
                            }
                            reading = false;
                        }
                        Some(Err(join)) => {
                            failure.get_or_insert(Error::Input(format!("a send task failed: {join}")));
                            reading = false;
                        }
                        None => {}
                    }
                    progress.items("ingest", summary.events, "events", bytes_read, opts.total_bytes);
                }
            }
        }
    });
    if let Some(f) = failure.take() {
        failure = Some(match ledger.explain(opts) {
            Some(more) => with_context(f, &more),
            None => f,
        });
    } else if summary.refused > 0 {
        failure = Some(Error::Server(format!(
            "{}: the server refused {} line(s), reported above with their reasons; every other line was applied (fix the refused lines and send only them)",
            opts.name, summary.refused
        )));
    }
    // Stops the reader if it is still going (its next send fails).
    drop(rx);
    let _ = reader.join();
    progress.finish();
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    drop(client);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok((summary, failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(lines: &[&str]) -> Vec<Result<Option<InputEvent>, String>> {
        let mut p = LineParser::new(InputFormat::Csv);
        lines.iter().map(|l| p.parse(l)).collect()
    }

    fn ev(key: &str, delta: i64, ts: Option<i64>, id: Option<&str>) -> InputEvent {
        InputEvent {
            key: key.into(),
            delta,
            ts_ms: ts,
            id: id.map(str::to_string),
        }
    }

    #[test]
    fn reads_what_export_writes() {
        let r = csv(&[
            "timestamp_ms,series,delta",
            "1795935600000,\"hits{region=r1,page=p1}\",24711",
            "",
            "1795939200000,hits,-3",
        ]);
        assert_eq!(r[0], Ok(None));
        assert_eq!(
            r[1],
            Ok(Some(ev(
                "hits{page=p1,region=r1}",
                24711,
                Some(1_795_935_600_000),
                None
            )))
        );
        assert_eq!(r[2], Ok(None));
        assert_eq!(
            r[3],
            Ok(Some(ev("hits", -3, Some(1_795_939_200_000), None)))
        );
    }

    #[test]
    fn csv_columns_any_order_and_no_header() {
        let r = csv(&["series,id,delta", "a,e1,", "b,,2"]);
        assert_eq!(r[1], Ok(Some(ev("a", 1, None, Some("e1")))));
        assert_eq!(r[2], Ok(Some(ev("b", 2, None, None))));
        let r = csv(&["1000,a,5,x"]);
        assert_eq!(r[0], Ok(Some(ev("a", 5, Some(1000), Some("x")))));
        let r = csv(&[
            "timestamp_ms,series,delta",
            "1,a,x",
            "1,\"a,2",
            "1,a b,1",
            "1,a,1,2",
        ]);
        assert!(r[1].as_ref().is_err_and(|e| e.contains("delta")));
        assert!(r[2].as_ref().is_err_and(|e| e.contains("unterminated")));
        assert!(r[3].as_ref().is_err_and(|e| e.contains("series")));
        assert!(r[4].as_ref().is_err_and(|e| e.contains("fields")));
    }

    #[test]
    fn ndjson_lines() {
        let mut p = LineParser::new(InputFormat::Ndjson);
        assert_eq!(
            p.parse(r#"{"delta":2,"series":"hits{b=1,a=2}","timestamp_ms":60000}"#),
            Ok(Some(ev("hits{a=2,b=1}", 2, Some(60_000), None)))
        );
        assert_eq!(
            p.parse(r#"{"series":"x","ts":"1970-01-01T00:01:00Z","id":"e9"}"#),
            Ok(Some(ev("x", 1, Some(60_000), Some("e9"))))
        );
        assert!(p.parse(r#"{"series":"x","delta":1.5}"#).is_err());
        assert!(p.parse(r#"{"delta":1}"#).is_err());
        assert!(p.parse("[1]").is_err());
        assert!(p
            .parse(&format!(r#"{{"series":"x","id":"{}"}}"#, "i".repeat(65)))
            .is_err());
    }

    #[test]
    fn a_stop_says_which_lines_to_resend() {
        let opts = Options {
            format: InputFormat::Csv,
            batch_size: 10,
            in_flight: 2,
            skip_bad: false,
            quiet: true,
            total_bytes: None,
            name: "ev.csv".into(),
        };
        let mut l = LineLedger {
            applied: vec![(22, 31), (2, 11)],
            lost: vec![(12, 21)],
            sent_through: 31,
            header: true,
            ..LineLedger::default()
        };
        let m = l.explain(&opts).expect("a stop to explain");
        assert!(m.contains("lines 2..=11, 22..=31 were applied"), "{m}");
        assert!(m.contains("lines 12..=21 were not counted"), "{m}");
        assert!(m.contains("lines 32 to the end were not sent"), "{m}");
        assert!(
            m.contains("sed -n '1p;12,21p;32,$p' ev.csv | tally ingest - --format csv"),
            "{m}"
        );
        let mut done = LineLedger {
            applied: vec![(1, 5)],
            sent_through: 5,
            read_all: true,
            ..LineLedger::default()
        };
        assert_eq!(done.explain(&opts), None);
    }
}
