//! One benchmark connection: frame I/O over a tokio [`TcpStream`], the handshake,
//! one-shot calls ([`Conn::call`]) for setup and verification, and the pipelined
//! load loop ([`Conn::run_load`]).
//!
//! The load loop runs a *writer* and a *reader* concurrently in one task. The writer
//! takes a pipeline permit, stamps the request with its scheduled send time (open
//! loop) or the time it is written (closed loop), records it as in flight and sends
//! it; the reader matches each answer to its request by id, records the latency from
//! that stamp, adds acknowledged increments to the per-series tallies and returns
//! the permit. In open loop a request that waits for a permit keeps its scheduled
//! time, so server stalls show up in the latencies (no coordinated omission).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tallydb_protocol::{
    decode_frame, encode_request, Event, FrameHeader, Function, Hello, IncrBuilder, Limits,
    Message, MetricSelector, Producer, RangeQuery, Request, Response, Selector, SeriesRef, Step,
    TopQuery, TotalQuery, HANDSHAKE_MAX_FRAME,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use super::error::{code_name, LoadError};
use super::workload::{unit_f64, KeySampler, QueryKind, Workload, HOUR_MS, MINUTE_MS};
use crate::Rng;

/// Read size.
const READ_CHUNK: usize = 64 * 1024;
/// Highest latency a histogram holds, in microseconds (one hour).
pub const HIST_MAX_US: u64 = 3_600_000_000;

/// A new latency histogram (microseconds, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIST_MAX_US, 3)
        .expect("constant bounds 1..1h at 3 digits are valid")
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads one whole frame into its own buffer; `Ok(None)` on a clean close.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max_frame: u32,
) -> Result<Option<BytesMut>, LoadError> {
    loop {
        match FrameHeader::peek(buf, max_frame) {
            Ok(Some(h)) if buf.len() >= h.frame_len() => {
                return Ok(Some(buf.split_to(h.frame_len())));
            }
            Ok(_) => {}
            Err(source) => {
                return Err(LoadError::Decode {
                    context: "reading a frame header".into(),
                    error: source,
                })
            }
        }
        buf.reserve(READ_CHUNK);
        let n = r
            .read_buf(buf)
            .await
            .map_err(LoadError::io("reading from the server"))?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(LoadError::Protocol(
                    "the server closed the connection mid-frame".into(),
                ))
            };
        }
    }
}

/// Decodes a frame cut by [`read_frame`] and hands its response to `f`.
pub fn with_response<T>(
    frame: &[u8],
    max_frame: u32,
    f: impl FnOnce(u32, Response<'_>) -> T,
) -> Result<T, LoadError> {
    match decode_frame(frame, max_frame) {
        Ok(Some((fr, _))) => match fr.message {
            Message::Response(r) => Ok(f(fr.request_id, r)),
            Message::Request(r) => Err(LoadError::Protocol(format!(
                "the server sent a request ({:?})",
                r.opcode()
            ))),
        },
        Ok(None) => Err(LoadError::Protocol("incomplete frame".into())),
        Err(source) => Err(LoadError::Decode {
            context: "decoding a response".into(),
            error: source,
        }),
    }
}

/// What `HELLO_OK` announced.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server's version string.
    pub version: String,
    /// Negotiated limits.
    pub limits: Limits,
}

/// An open, handshaken connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    next_id: u32,
    /// What the server announced.
    pub info: ServerInfo,
}

impl Conn {
    /// Connects to `addr` and completes `HELLO` with `token`.
    pub async fn connect(addr: SocketAddr, token: &[u8]) -> Result<Conn, LoadError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| LoadError::Protocol(format!("connecting to {addr} timed out")))?
            .map_err(LoadError::io(format!("connecting to {addr}")))?;
        stream
            .set_nodelay(true)
            .map_err(LoadError::io("setting TCP_NODELAY"))?;
        let mut c = Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
            next_id: 1,
            info: ServerInfo {
                version: String::new(),
                limits: Limits {
                    max_frame: HANDSHAKE_MAX_FRAME,
                    max_batch_events: 0,
                    max_aliases: 0,
                },
            },
        };
        let hello = Request::Hello(Hello::new("tally-bench", token));
        let info = c
            .call(&hello, |r| match r {
                Response::HelloOk(ok) => Ok(ServerInfo {
                    version: ok.server_version.to_string(),
                    limits: ok.limits,
                }),
                other => Err(other_answer("HELLO", &other)),
            })
            .await??;
        c.info = info;
        Ok(c)
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Sends one request and hands its answer to `f`.
    pub async fn call<T>(
        &mut self,
        req: &Request<'_>,
        f: impl FnOnce(Response<'_>) -> T,
    ) -> Result<T, LoadError> {
        let id = self.next_id();
        self.out.clear();
        encode_request(id, req, &mut self.out);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(LoadError::io("sending a request"))?;
        let max = self.info.limits.max_frame;
        let frame = tokio::time::timeout(
            Duration::from_secs(60),
            read_frame(&mut self.stream, &mut self.buf, max),
        )
        .await
        .map_err(|_| LoadError::Protocol("no answer within 60 s".into()))??
        .ok_or_else(|| LoadError::Protocol("the server closed the connection".into()))?;
        with_response(&frame, max, |rid, r| {
            if rid == id {
                Ok(f(r))
            } else {
                Err(LoadError::Protocol(format!(
                    "answer to request {rid}, expected {id}"
                )))
            }
        })?
    }

    /// Sends `reqs` pipelined (at most `window` in flight) and hands each answer to
    /// `f` with the index of its request. Answers are matched by request id.
    pub async fn call_many(
        &mut self,
        reqs: &[Request<'_>],
        window: usize,
        mut f: impl FnMut(usize, Response<'_>),
    ) -> Result<(), LoadError> {
        let max = self.info.limits.max_frame;
        let mut ids: HashMap<u32, usize> = HashMap::new();
        let mut sent = 0;
        let mut done = 0;
        while done < reqs.len() {
            self.out.clear();
            while sent < reqs.len() && ids.len() < window.max(1) {
                let id = self.next_id();
                if let Some(req) = reqs.get(sent) {
                    encode_request(id, req, &mut self.out);
                }
                ids.insert(id, sent);
                sent += 1;
            }
            if !self.out.is_empty() {
                self.stream
                    .write_all(&self.out)
                    .await
                    .map_err(LoadError::io("sending requests"))?;
            }
            let frame = tokio::time::timeout(
                Duration::from_secs(60),
                read_frame(&mut self.stream, &mut self.buf, max),
            )
            .await
            .map_err(|_| LoadError::Protocol("no answer within 60 s".into()))??
            .ok_or_else(|| LoadError::Protocol("the server closed the connection".into()))?;
            with_response(&frame, max, |rid, r| match ids.remove(&rid) {
                Some(i) => {
                    f(i, r);
                    Ok(())
                }
                None => Err(LoadError::Protocol(format!(
                    "answer to unknown request id {rid}"
                ))),
            })??;
            done += 1;
        }
        Ok(())
    }

    /// Runs the load loop on this connection until the shared deadline; see the
    /// module documentation.
    pub async fn run_load(self, job: ConnJob) -> ConnStats {
        let Conn {
            mut stream, info, ..
        } = self;
        let (rd, wr) = stream.split();
        let permits = Semaphore::new(job.w.pipeline as usize);
        let (tx, rx) = mpsc::unbounded_channel::<InFlight>();
        let reset_aliases = AtomicBool::new(false);
        let writer = write_loop(&job, &info, wr, &permits, tx, &reset_aliases);
        let reader = read_loop(&job, &info, rd, &permits, rx, &reset_aliases);
        let (w, mut stats) = tokio::join!(writer, reader);
        stats.sent_requests = w.requests;
        stats.sent_bytes = w.bytes;
        stats.sent_events = w.events;
        stats.alias_definitions = w.definitions;
        stats.behind_schedule = w.behind;
        if let Some(e) = w.error {
            stats.failures.push(e);
        }
        stats
    }
}

fn other_answer(what: &str, r: &Response<'_>) -> LoadError {
    match r {
        Response::Error(e) => LoadError::Server {
            context: what.to_string(),
            code: e.code,
            name: code_name(e.code),
            message: e.message.to_string(),
        },
        other => LoadError::Protocol(format!("{what} answered with {:?}", other.opcode())),
    }
}

/// State shared by every connection of a run.
#[derive(Debug)]
pub struct RunShared {
    /// Canonical keys of all series.
    pub keys: Vec<String>,
    /// Series chooser.
    pub sampler: KeySampler,
    /// Acknowledged increments per series (sum of deltas of applied events).
    pub acked: Vec<AtomicI64>,
    /// Increments sent in requests whose answer never came, per series.
    pub unknown: Vec<AtomicI64>,
    /// Series put in at least one batch (0/1).
    pub touched: Vec<AtomicBool>,
    /// Requests started, over all connections (for `max_requests`).
    pub started: AtomicU64,
    /// When the run started.
    pub start: Instant,
    /// When sending stops.
    pub deadline: Instant,
    /// End of the warm-up.
    pub warm_end: Instant,
}

/// What one connection needs to run.
#[derive(Debug, Clone)]
pub struct ConnJob {
    /// The workload.
    pub w: Arc<Workload>,
    /// Shared run state.
    pub shared: Arc<RunShared>,
    /// This connection's index.
    pub index: usize,
    /// Its producer id.
    pub producer: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqKind {
    Incr,
    Query(QueryKind),
}

#[derive(Debug)]
struct InFlight {
    id: u32,
    stamp: Instant,
    /// When it was actually written (differs from `stamp` in open loop).
    sent: Instant,
    kind: ReqKind,
    /// The series of each event (every delta is 1).
    series: Vec<u32>,
}

/// Counters and histograms of one connection (merged into the report).
#[derive(Debug)]
pub struct ConnStats {
    /// Latency of acknowledged `INCR`s, microseconds.
    pub write_hist: Histogram<u64>,
    /// Service time of acknowledged `INCR`s: from the actual write, not the schedule.
    pub write_service_hist: Histogram<u64>,
    /// Latency of successful queries by kind, microseconds.
    pub read_hists: BTreeMap<QueryKind, Histogram<u64>>,
    /// Requests sent.
    pub sent_requests: u64,
    /// Request bytes sent.
    pub sent_bytes: u64,
    /// Events sent.
    pub sent_events: u64,
    /// Events that defined an alias (or were sent by key).
    pub alias_definitions: u64,
    /// Open loop: requests scheduled before the deadline but never sent.
    pub behind_schedule: u64,
    /// `INCR`s acknowledged (whole run).
    pub incr_ok: u64,
    /// Events acknowledged as applied (whole run).
    pub applied: u64,
    /// Events the server reported as duplicates.
    pub duplicates: u64,
    /// Batches answered `duplicate_batch`.
    pub duplicate_batches: u64,
    /// Events refused one by one (per-event validation).
    pub refused: u64,
    /// Successful queries (whole run).
    pub query_ok: u64,
    /// In the measurement window: acknowledged `INCR`s, their events, queries.
    pub window_incr_ok: u64,
    /// See `window_incr_ok`.
    pub window_applied: u64,
    /// See `window_incr_ok`.
    pub window_query_ok: u64,
    /// `ERROR` answers by code: count and the first message.
    pub errors: BTreeMap<u16, (u64, String)>,
    /// Requests never answered (connection lost or timed out).
    pub unanswered: u64,
    /// Connection-level failures.
    pub failures: Vec<LoadError>,
    /// When the last answer arrived.
    pub last_answer: Option<Instant>,
}

impl ConnStats {
    fn new(queries: &[QueryKind]) -> Self {
        Self {
            write_hist: new_histogram(),
            write_service_hist: new_histogram(),
            read_hists: queries.iter().map(|&q| (q, new_histogram())).collect(),
            sent_requests: 0,
            sent_bytes: 0,
            sent_events: 0,
            alias_definitions: 0,
            behind_schedule: 0,
            incr_ok: 0,
            applied: 0,
            duplicates: 0,
            duplicate_batches: 0,
            refused: 0,
            query_ok: 0,
            window_incr_ok: 0,
            window_applied: 0,
            window_query_ok: 0,
            errors: BTreeMap::new(),
            unanswered: 0,
            failures: Vec::new(),
            last_answer: None,
        }
    }
}

#[derive(Debug, Default)]
struct WriterStats {
    requests: u64,
    bytes: u64,
    events: u64,
    definitions: u64,
    behind: u64,
    error: Option<LoadError>,
}

/// The generator of connection `index`. Its seed is a hashed (not merely offset)
/// function of both: SplitMix64 seeds that differ by multiples of its increment give
/// the same stream shifted by a step, and connections would send the same keys.
pub fn connection_rng(seed: u64, index: usize) -> Rng {
    let mut mix = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ index as u64);
    let a = mix.next_u64();
    Rng::new(a ^ mix.next_u64().rotate_left(32))
}

/// Direct-mapped alias cache: alias `a` holds series `slots[a] - 1` (0 = free).
pub(crate) struct Aliases {
    slots: Vec<u32>,
}

impl Aliases {
    pub(crate) fn new(series: u32, max_aliases: u32) -> Self {
        let n = series.min(max_aliases).max(1) as usize;
        Self { slots: vec![0; n] }
    }

    /// The reference for `series`, defining (or re-binding) its alias when needed.
    pub(crate) fn reference<'k>(&mut self, series: u32, key: &'k str) -> (SeriesRef<'k>, bool) {
        let n = self.slots.len() as u32;
        let alias = series % n;
        match self.slots.get_mut(alias as usize) {
            Some(slot) if *slot == series + 1 => (SeriesRef::Alias(alias), false),
            Some(slot) => {
                *slot = series + 1;
                (SeriesRef::Define { key, alias }, true)
            }
            None => (SeriesRef::Key(key), true),
        }
    }

    fn clear(&mut self) {
        self.slots.fill(0);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    job: &ConnJob,
    info: &ServerInfo,
    mut wr: W,
    permits: &Semaphore,
    tx: mpsc::UnboundedSender<InFlight>,
    reset_aliases: &AtomicBool,
) -> WriterStats {
    let w = &job.w;
    let sh = &job.shared;
    let mut st = WriterStats::default();
    let mut rng = connection_rng(w.seed, job.index);
    let mut aliases = Aliases::new(w.series, info.limits.max_aliases);
    let interval = w
        .per_connection_request_rate()
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-9)));
    // Stagger the connections' schedules over one interval.
    let mut next = sh.start
        + interval.map_or(Duration::ZERO, |iv| {
            iv.mul_f64(job.index as f64 / w.connections as f64)
        });
    let mut seq: u64 = 0;
    let mut id: u32 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let metric = w.metric.as_str();
    loop {
        // When is this request due?
        let stamp = match interval {
            Some(iv) => {
                let due = next;
                if due >= sh.deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                next = due + iv;
                due
            }
            None => Instant::now(),
        };
        let permit = match permits.acquire().await {
            Ok(p) => p,
            Err(_) => break, // the reader has stopped
        };
        let now = Instant::now();
        if now >= sh.deadline {
            if let Some(iv) = interval {
                // This request and every later one due before the deadline.
                let late = sh.deadline.saturating_duration_since(stamp);
                st.behind = (late.as_secs_f64() / iv.as_secs_f64()).ceil().max(1.0) as u64;
            }
            break;
        }
        let stamp = if interval.is_some() { stamp } else { now };
        if let Some(cap) = w.max_requests {
            if sh.started.fetch_add(1, Ordering::Relaxed) >= cap {
                break;
            }
        }
        if reset_aliases.swap(false, Ordering::Relaxed) {
            aliases.clear();
        }
        id = id.wrapping_add(1).max(1);
        out.clear();
        let is_read =
            w.read_ratio > 0.0 && (w.read_ratio >= 1.0 || unit_f64(&mut rng) < w.read_ratio);
        let record = if is_read {
            let kind = w
                .queries
                .get(rng.below(w.queries.len() as u64) as usize)
                .copied()
                .unwrap_or(QueryKind::Total);
            let t = now_ms();
            let series = sh.sampler.sample(&mut rng);
            let key = sh.keys.get(series as usize).map_or("", String::as_str);
            let req = match kind {
                QueryKind::Total => Request::Total(TotalQuery {
                    selector: Selector::Exact(key),
                    from_ms: t - HOUR_MS,
                    to_ms: t + MINUTE_MS,
                }),
                QueryKind::Range => Request::Range(RangeQuery {
                    selector: Selector::Exact(key),
                    from_ms: t - HOUR_MS,
                    to_ms: t + MINUTE_MS,
                    step: Step::Millis(MINUTE_MS as u64),
                    function: Function::Sum,
                }),
                QueryKind::Top => Request::Top(TopQuery {
                    selector: Selector::Metric(MetricSelector {
                        name: metric,
                        matchers: Vec::new(),
                        group_by: Vec::new(),
                    }),
                    from_ms: t - 5 * MINUTE_MS,
                    to_ms: t + MINUTE_MS,
                    n: 10,
                    group_by: None,
                }),
            };
            encode_request(id, &req, &mut out);
            InFlight {
                id,
                stamp,
                sent: now,
                kind: ReqKind::Query(kind),
                series: Vec::new(),
            }
        } else {
            seq += 1;
            let producer = Some(Producer {
                id: job.producer,
                sequence: seq,
            });
            let t = now_ms();
            let mut series = Vec::with_capacity(w.batch as usize);
            // Per-event validation: an event the server refuses (say, a
            // timestamp outside its limits) is counted as refused, the rest
            // of its batch as applied.
            let mut b = IncrBuilder::with_validation(&mut out, id, producer, true);
            for _ in 0..w.batch {
                let s = sh.sampler.sample(&mut rng);
                let key = sh.keys.get(s as usize).map_or("", String::as_str);
                let (sref, defined) = if w.aliases {
                    aliases.reference(s, key)
                } else {
                    (SeriesRef::Key(key), true)
                };
                st.definitions += u64::from(defined);
                b.push(&Event {
                    series: sref,
                    delta: 1,
                    timestamp_ms: w.timestamps.timestamp(t, &mut rng),
                    event_id: None,
                });
                if let Some(flag) = sh.touched.get(s as usize) {
                    flag.store(true, Ordering::Relaxed);
                }
                series.push(s);
            }
            st.events += u64::from(w.batch);
            InFlight {
                id,
                stamp,
                sent: now,
                kind: ReqKind::Incr,
                series,
            }
        };
        if tx.send(record).is_err() {
            break; // the reader has stopped
        }
        permit.forget(); // given back by the reader when the answer arrives
        if let Err(e) = wr.write_all(&out).await {
            st.error = Some(LoadError::Io {
                context: "sending a request".into(),
                error: e,
            });
            break;
        }
        st.requests += 1;
        st.bytes += out.len() as u64;
    }
    st
}

async fn read_loop<R: AsyncRead + Unpin>(
    job: &ConnJob,
    info: &ServerInfo,
    mut rd: R,
    permits: &Semaphore,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    reset_aliases: &AtomicBool,
) -> ConnStats {
    let w = &job.w;
    let sh = &job.shared;
    let mut st = ConnStats::new(&w.queries);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut pending: VecDeque<InFlight> = VecDeque::new();
    let max = info.limits.max_frame;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => pending.push_back(r),
                None => break, // the writer is done and everything is answered
            }
        }
        let frame = match tokio::time::timeout(
            w.response_timeout,
            read_frame(&mut rd, &mut buf, max),
        )
        .await
        {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => {
                st.failures.push(LoadError::Protocol(
                    "the server closed the connection with requests in flight".into(),
                ));
                break;
            }
            Ok(Err(e)) => {
                st.failures.push(e);
                break;
            }
            Err(_) => {
                st.failures.push(LoadError::Protocol(format!(
                    "no answer within {:?}; connection given up",
                    w.response_timeout
                )));
                break;
            }
        };
        let now = Instant::now();
        let outcome = with_response(&frame, max, |rid, r| {
            // Find the request: normally the oldest in flight.
            while !pending.iter().any(|p| p.id == rid) {
                match rx.try_recv() {
                    Ok(rec) => pending.push_back(rec),
                    Err(_) => break,
                }
            }
            let pos = pending.iter().position(|p| p.id == rid);
            let rec = match pos.and_then(|i| pending.remove(i)) {
                Some(rec) => rec,
                None => {
                    if let Response::Error(e) = &r {
                        let entry = st
                            .errors
                            .entry(e.code)
                            .or_insert_with(|| (0, e.message.to_string()));
                        entry.0 += 1;
                    }
                    return Err(LoadError::Protocol(format!(
                        "answer with request id {rid} matches no request in flight"
                    )));
                }
            };
            let in_window = rec.stamp >= sh.warm_end;
            let us = u64::try_from(now.saturating_duration_since(rec.stamp).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            // A strict answer is a report with nothing refused.
            let r = match r {
                Response::IncrOk(ok) => Response::IncrReport(tallydb_protocol::IncrReport {
                    applied: ok.applied,
                    duplicates: ok.duplicates,
                    duplicate_batch: ok.duplicate_batch,
                    refused_count: 0,
                    refused: Vec::new(),
                }),
                other => other,
            };
            match (rec.kind, r) {
                (ReqKind::Incr, Response::IncrReport(ok)) => {
                    st.incr_ok += 1;
                    st.applied += u64::from(ok.applied);
                    st.duplicates += u64::from(ok.duplicates);
                    st.duplicate_batches += u64::from(ok.duplicate_batch);
                    st.refused += u64::from(ok.refused_count);
                    if !ok.refused.is_empty() {
                        // A refused event may have been an alias definition.
                        reset_aliases.store(true, Ordering::Relaxed);
                    }
                    if !ok.duplicate_batch {
                        for (i, s) in rec.series.iter().enumerate() {
                            if ok.refused.iter().any(|f| f.index as usize == i) {
                                continue;
                            }
                            if let Some(a) = sh.acked.get(*s as usize) {
                                a.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if in_window {
                        st.window_incr_ok += 1;
                        st.window_applied += u64::from(ok.applied);
                        st.write_hist.saturating_record(us);
                        let service = now.saturating_duration_since(rec.sent).as_micros();
                        st.write_service_hist
                            .saturating_record(u64::try_from(service).unwrap_or(u64::MAX).max(1));
                    }
                }
                (_, Response::Error(e)) => {
                    if rec.kind == ReqKind::Incr {
                        // The batch's alias definitions are void.
                        reset_aliases.store(true, Ordering::Relaxed);
                    }
                    let entry = st
                        .errors
                        .entry(e.code)
                        .or_insert_with(|| (0, e.message.to_string()));
                    entry.0 += 1;
                }
                (ReqKind::Query(kind), r) => {
                    let expected = matches!(
                        (kind, &r),
                        (QueryKind::Total, Response::TotalOk(_))
                            | (QueryKind::Range, Response::RangeOk(_))
                            | (QueryKind::Top, Response::TopOk(_))
                    );
                    if !expected {
                        return Err(other_answer(kind.name(), &r));
                    }
                    st.query_ok += 1;
                    if in_window {
                        st.window_query_ok += 1;
                        if let Some(h) = st.read_hists.get_mut(&kind) {
                            h.saturating_record(us);
                        }
                    }
                }
                (ReqKind::Incr, r) => return Err(other_answer("INCR", &r)),
            }
            Ok(())
        });
        permits.add_permits(1);
        st.last_answer = Some(now);
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                st.failures.push(e);
                break;
            }
        }
    }
    // Whatever is still in flight was never answered.
    permits.close();
    rx.close();
    while let Ok(rec) = rx.try_recv() {
        pending.push_back(rec);
    }
    for rec in pending {
        st.unanswered += 1;
        for s in &rec.series {
            if let Some(u) = sh.unknown.get(*s as usize) {
                u.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_draw_unrelated_streams() {
        let draw = |i| {
            let mut r = connection_rng(1, i);
            (0..64).map(|_| r.below(100_000)).collect::<Vec<_>>()
        };
        let a = draw(0);
        let b = draw(1);
        let shared = a.iter().filter(|x| b.contains(x)).count();
        assert!(shared <= 2, "streams overlap: {shared} of 64");
        assert_eq!(draw(3), draw(3));
    }

    #[test]
    fn alias_cache_defines_once_then_reuses() {
        let mut a = Aliases::new(10, 4);
        assert!(matches!(
            a.reference(5, "k5"),
            (SeriesRef::Define { alias: 1, .. }, true)
        ));
        assert!(matches!(a.reference(5, "k5"), (SeriesRef::Alias(1), false)));
        // 9 maps to the same slot and re-binds it.
        assert!(matches!(
            a.reference(9, "k9"),
            (SeriesRef::Define { alias: 1, .. }, true)
        ));
        assert!(matches!(
            a.reference(5, "k5"),
            (SeriesRef::Define { alias: 1, .. }, true)
        ));
        a.clear();
        assert!(matches!(
            a.reference(5, "k5"),
            (SeriesRef::Define { .. }, true)
        ));
    }
}
