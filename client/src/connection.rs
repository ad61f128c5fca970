//! The connection task: one TCP connection at a time, shared by every clone of a
//! [`Client`](crate::Client).
//!
//! Callers send [`Command`]s over a bounded channel and wait on a oneshot for the answer.
//! The task:
//!
//! - **pipelines**: it writes up to `max_in_flight` requests without waiting, each with
//!   its own request id, and matches answers to requests by id;
//! - **encodes `INCR` per connection**: series aliases ([`AliasTable`]) and the producer
//!   sequence are filled in when a batch is written, so a reconnect starts a fresh alias
//!   table and a resent batch keeps its sequence;
//! - **times out** each request (`request_timeout` from when it was written): a request
//!   without an answer by then means the connection is dead, and it is replaced;
//! - **retries** after connection failures (every unanswered request is resent on the
//!   next connection, in its original order) and after `ERROR`s flagged retryable (after
//!   an exponential backoff with full jitter), at most `max_retries` times per request;
//! - runs the **circuit breaker**: while it is open, requests fail at once.
//!
//! # Exactly-once batches
//!
//! Every batch carries the client's producer id and a sequence assigned when it is first
//! written, increasing in write order (the server requires increasing sequences per
//! producer). The server answers a connection's requests in order, so when a connection
//! fails, the batches without an answer are exactly the latest ones; they are marked
//! *ambiguous* (applied or not, nobody knows) and resent first on the next connection
//! with their original sequences, one at a time, and no new batch is written until
//! every ambiguous batch is resolved. The server then applies each at most once. A batch refused with a
//! retryable `ERROR` was not applied at all: unless it is ambiguous, it is retried under
//! a new sequence, since later batches may have been applied in the meantime.
//!
//! The server remembers the outcomes of each producer's 64 most recent sequences, so
//! an ambiguous batch resent after later batches were applied is still recognised:
//! counted if it never was, acknowledged as a duplicate if it was. A resent batch
//! older than that window is refused with `OUT_OF_ORDER` rather than risk a double
//! count, which cannot happen here: at most [`crate::client::MAX_IN_FLIGHT`] (64)
//! requests are ever unanswered on a connection.
//!
//! Sequences start at the current time in microseconds, so a producer id reused by a
//! restarted process still sends increasing sequences.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tallydb_protocol::answer::{Answer, ServerInfo};
use tallydb_protocol::{
    decode_frame, encode_request, set_request_id, Event, Hello, IncrBuilder, Limits, Message,
    Opcode, Producer, Request, Response, SeriesRef, HANDSHAKE_MAX_FRAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use crate::aliases::{AliasTable, BatchAliases};
use crate::backoff::{RetryPolicy, Rng};
use crate::breaker::{BreakerConfig, CircuitBreaker, CircuitState};
use crate::error::{Error, Result};
/// Bytes read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Resolved client settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) addr: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) token: Vec<u8>,
    pub(crate) client_name: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: BreakerConfig,
    pub(crate) producer_id: u64,
    pub(crate) max_in_flight: usize,
    pub(crate) max_aliases: u32,
    /// Batches all or nothing (`INCR` without per-event validation).
    pub(crate) strict: bool,
}

/// One increment, owned, as queued for the connection task.
#[derive(Debug, Clone)]
pub(crate) struct OwnedEvent {
    pub(crate) key: Arc<str>,
    pub(crate) delta: i64,
    pub(crate) ts_ms: Option<i64>,
    pub(crate) event_id: Option<Box<[u8]>>,
}

/// What to send.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A request frame encoded with request id 0; the id is patched in when written.
    Frame(Bytes),
    /// An `INCR` batch, encoded per connection (aliases, producer sequence).
    Incr(Vec<OwnedEvent>),
}

/// A request and where to send its answer, decoded once by the task (an `ERROR`
/// arrives as `Err`).
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) payload: Payload,
    pub(crate) reply: oneshot::Sender<Result<Answer>>,
}

/// State the task publishes for [`Client`](crate::Client) accessors.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) server_info: Mutex<Option<ServerInfo>>,
    circuit: AtomicU8,
}

impl Shared {
    pub(crate) fn circuit(&self) -> CircuitState {
        match self.circuit.load(Ordering::Relaxed) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    fn set_circuit(&self, s: CircuitState) {
        let v = match s {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        };
        self.circuit.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_server_info(&self, info: Option<ServerInfo>) {
        if let Ok(mut g) = self.server_info.lock() {
            *g = info;
        }
    }
}

/// An open, handshaken connection.
pub(crate) struct Session {
    pub(crate) info: ServerInfo,
    stream: TcpStream,
    rbuf: BytesMut,
    limits: Limits,
    aliases: AliasTable,
    next_id: u32,
}

impl Session {
    fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }
}

/// Opens a connection and completes the handshake, all within the connect timeout.
pub(crate) async fn connect(config: &Config) -> Result<Session> {
    let handshake = async {
        let mut stream = TcpStream::connect(config.addr.as_str())
            .await
            .map_err(|source| Error::Connect {
                addr: config.addr.clone(),
                source,
            })?;
        // Small frames must not wait for Nagle's algorithm.
        stream.set_nodelay(true).map_err(Error::Io)?;
        let mut out = BytesMut::new();
        let hello = Hello::new(&config.client_name, &config.token);
        encode_request(1, &Request::Hello(hello), &mut out);
        stream.write_all(&out).await.map_err(Error::Io)?;
        let mut rbuf = BytesMut::with_capacity(4096);
        loop {
            if let Some((frame, used)) = decode_frame(&rbuf, HANDSHAKE_MAX_FRAME)? {
                let info = match frame.message {
                    Message::Response(Response::HelloOk(ok)) => ServerInfo::from(ok),
                    Message::Response(Response::Error(e)) => return Err(Error::server(&e)),
                    Message::Response(other) => {
                        return Err(Error::UnexpectedResponse {
                            expected: Opcode::HelloOk.name(),
                            got: other.opcode().name(),
                        })
                    }
                    Message::Request(_) => {
                        return Err(Error::UnexpectedResponse {
                            expected: Opcode::HelloOk.name(),
                            got: "a request",
                        })
                    }
                };
                rbuf.advance(used);
                let cap = info.limits.max_aliases.min(config.max_aliases);
                return Ok(Session {
                    stream,
                    rbuf,
                    limits: info.limits,
                    aliases: AliasTable::new(cap),
                    next_id: 2,
                    info,
                });
            }
            if stream.read_buf(&mut rbuf).await.map_err(Error::Io)? == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                )));
            }
        }
    };
    match timeout(config.connect_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(Error::ConnectTimeout {
            addr: config.addr.clone(),
            after: config.connect_timeout,
        }),
    }
}

/// A request held by the task.
struct Pending {
    payload: Payload,
    reply: oneshot::Sender<Result<Answer>>,
    /// Failed attempts so far.
    attempts: u32,
    /// The producer sequence, once a batch has been written under it.
    seq: Option<u64>,
    /// Written under `seq`, and the connection failed before the answer.
    ambiguous: bool,
    /// Request id on the current connection.
    request_id: u32,
    /// When an answer is overdue (set when written).
    deadline: Instant,
    /// Aliases the batch defines (confirmed by its `INCR_OK`).
    defined: Vec<u32>,
    /// `(event index, alias)` of each event naming an alias this batch defines.
    define_at: Vec<(u32, u32)>,
}

impl Pending {
    fn new(cmd: Command) -> Self {
        Self {
            payload: cmd.payload,
            reply: cmd.reply,
            attempts: 0,
            seq: None,
            ambiguous: false,
            request_id: 0,
            deadline: Instant::now(),
            defined: Vec::new(),
            define_at: Vec::new(),
        }
    }

    fn is_incr(&self) -> bool {
        matches!(self.payload, Payload::Incr(_))
    }

    /// Answers the caller with `err` (wrapped when a batch may have been applied).
    fn fail(self, err: Error) {
        let err = if self.ambiguous && !matches!(err, Error::Indeterminate(_)) {
            Error::Indeterminate(Box::new(err))
        } else {
            err
        };
        let _ = self.reply.send(Err(err));
    }
}

fn any_ambiguous(q: &VecDeque<Pending>) -> bool {
    q.iter().any(|p| p.ambiguous)
}

/// How a session ended.
enum SessionEnd {
    /// Every client handle is gone and nothing is pending.
    Exit,
    /// The connection failed or was closed; reconnect when there is work.
    Lost,
}

/// The answer to one frame, owned before the receive buffer moves on.
enum Outcome {
    Ok(Answer),
    Error(Error),
}

pub(crate) struct Task {
    config: Arc<Config>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    rx_closed: bool,
    /// Waiting to be written, in order.
    queue: VecDeque<Pending>,
    /// Waiting for a backoff to pass before being requeued (retryable `ERROR`s).
    delayed: Vec<(Instant, Pending)>,
    breaker: CircuitBreaker,
    rng: Rng,
    last_seq: u64,
    /// Consecutive failed connection attempts or lost connections.
    failures: u32,
    backoff_until: Option<Instant>,
}

impl Task {
    pub(crate) fn new(
        config: Arc<Config>,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
    ) -> Self {
        let breaker = CircuitBreaker::new(config.breaker);
        Self {
            config,
            shared,
            rx,
            rx_closed: false,
            queue: VecDeque::new(),
            delayed: Vec::new(),
            breaker,
            rng: Rng::from_entropy(),
            last_seq: 0,
            failures: 0,
            backoff_until: None,
        }
    }

    /// Runs until every client handle is dropped and every request is answered.
    pub(crate) async fn run(mut self, mut session: Option<Session>) {
        loop {
            let s = match session.take() {
                Some(s) => s,
                None => match self.disconnected().await {
                    Some(s) => s,
                    None => return,
                },
            };
            self.shared.set_server_info(Some(s.info.clone()));
            let end = self.connected(s).await;
            self.shared.set_server_info(None);
            if let SessionEnd::Exit = end {
                return;
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_seq = self.last_seq.saturating_add(1).max(now_us);
        self.last_seq
    }

    fn publish_circuit(&self) {
        self.shared
            .set_circuit(self.breaker.state(std::time::Instant::now()));
    }

    /// Moves delayed requests whose backoff passed (all, if `all`) to the queue's front,
    /// keeping their relative order.
    fn promote_delayed(&mut self, now: Instant, all: bool) {
        if self.delayed.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.delayed = waiting;
        for (_, p) in ready.into_iter().rev() {
            self.queue.push_front(p);
        }
    }

    fn accept(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(cmd) => self.queue.push_back(Pending::new(cmd)),
            None => self.rx_closed = true,
        }
    }

    /// No connection: wait for work, respect the breaker and the backoff, connect.
    async fn disconnected(&mut self) -> Option<Session> {
        loop {
            self.promote_delayed(Instant::now(), true);
            self.queue.retain(|p| !p.reply.is_closed());
            if self.queue.is_empty() {
                if self.rx_closed {
                    return None;
                }
                let cmd = self.rx.recv().await;
                self.accept(cmd);
                continue;
            }
            let now = std::time::Instant::now();
            if self.breaker.state(now) == CircuitState::Open {
                self.publish_circuit();
                let retry_in = self.breaker.try_acquire(now).err().unwrap_or_default();
                for p in self.queue.drain(..) {
                    p.fail(Error::CircuitOpen { retry_in });
                }
                continue;
            }
            if let Some(until) = self.backoff_until {
                if Instant::now() < until {
                    tokio::select! {
                        cmd = self.rx.recv(), if !self.rx_closed => self.accept(cmd),
                        () = sleep_until(until) => self.backoff_until = None,
                    }
                    continue;
                }
            }
            if let Err(retry_in) = self.breaker.try_acquire(now) {
                // Another probe is out (not reachable with one connection task; never spin).
                for p in self.queue.drain(..) {
                    p.fail(Error::CircuitOpen { retry_in });
                }
                continue;
            }
            self.publish_circuit();
            match connect(&self.config).await {
                Ok(session) => {
                    tracing::debug!(addr = %self.config.addr, "connected");
                    self.breaker.on_success();
                    self.publish_circuit();
                    self.failures = 0;
                    self.backoff_until = None;
                    return Some(session);
                }
                Err(e) => {
                    tracing::warn!(addr = %self.config.addr, error = %e, "connection attempt failed");
                    self.breaker.on_failure(std::time::Instant::now());
                    self.publish_circuit();
                    self.failures = self.failures.saturating_add(1);
                    let delay = self.config.retry.delay(self.failures, self.rng.unit());
                    self.backoff_until = Some(Instant::now() + delay);
                    let fatal = !e.is_retryable();
                    let max = self.config.retry.max_retries;
                    let mut keep = VecDeque::with_capacity(self.queue.len());
                    for mut p in self.queue.drain(..) {
                        p.attempts = p.attempts.saturating_add(1);
                        if fatal || p.attempts > max {
                            p.fail(e.duplicate());
                        } else {
                            keep.push_back(p);
                        }
                    }
                    self.queue = keep;
                }
            }
        }
    }

    /// Writes `p` into `wbuf` under a new request id. `Err` answers the caller at once.
    fn encode(&mut self, s: &mut Session, p: &mut Pending, wbuf: &mut BytesMut) -> Result<()> {
        let id = s.next_id();
        let start = wbuf.len();
        match &p.payload {
            Payload::Frame(frame) => {
                wbuf.extend_from_slice(frame);
                if let Some(written) = wbuf.get_mut(start..) {
                    set_request_id(written, id);
                }
            }
            Payload::Incr(events) => {
                let max_events = s.limits.max_batch_events;
                let too_large = |bytes| Error::BatchTooLarge {
                    events: events.len(),
                    bytes,
                    max_events,
                    max_bytes: s.limits.max_frame,
                };
                if events.len() > max_events as usize {
                    return Err(too_large(0));
                }
                let seq = match p.seq {
                    Some(seq) => seq,
                    None => self.next_seq(),
                };
                let producer = Producer {
                    id: self.config.producer_id,
                    sequence: seq,
                };
                let mut defined = BatchAliases::default();
                let mut builder =
                    IncrBuilder::with_validation(wbuf, id, Some(producer), !self.config.strict);
                p.define_at.clear();
                for (i, e) in events.iter().enumerate() {
                    let series = s.aliases.series_ref(&e.key, &mut defined);
                    match series {
                        SeriesRef::Define { alias, .. } => p.define_at.push((i as u32, alias)),
                        SeriesRef::Alias(alias) if defined.defined.contains(&alias) => {
                            p.define_at.push((i as u32, alias));
                        }
                        _ => {}
                    }
                    builder.push(&Event {
                        series,
                        delta: e.delta,
                        timestamp_ms: e.ts_ms,
                        event_id: e.event_id.as_deref(),
                    });
                }
                let len = builder.frame_len();
                if len.saturating_sub(4) > s.limits.max_frame as usize {
                    wbuf.truncate(start);
                    return Err(too_large(len));
                }
                p.seq = Some(seq);
                p.defined = defined.defined;
            }
        }
        p.request_id = id;
        p.deadline = Instant::now() + self.config.request_timeout;
        Ok(())
    }

    /// Serves requests over one connection until it fails or the client is dropped.
    async fn connected(&mut self, mut s: Session) -> SessionEnd {
        let mut inflight: VecDeque<Pending> = VecDeque::new();
        let mut wbuf = BytesMut::new();
        let max_in_flight = self.config.max_in_flight.max(1);
        let lost: Error = loop {
            // Fill the pipeline from the queue.
            while inflight.len() < max_in_flight {
                let Some(front) = self.queue.front() else {
                    break;
                };
                if front.reply.is_closed() {
                    self.queue.pop_front();
                    continue;
                }
                let pos = if !front.is_incr() || front.ambiguous && !any_ambiguous(&inflight) {
                    0
                } else if any_ambiguous(&inflight) {
                    // Ambiguous batches are resent one at a time, and no batch is written
                    // after one until it is answered: if it is refused (e.g. BUSY) it can
                    // be resent under the same sequence, none higher having been applied.
                    break;
                } else if self.delayed.iter().any(|(_, p)| p.ambiguous) {
                    // Its backoff timer will requeue it; nothing may overtake it.
                    break;
                } else {
                    self.queue.iter().position(|p| p.ambiguous).unwrap_or(0)
                };
                let Some(mut p) = self.queue.remove(pos) else {
                    break;
                };
                match self.encode(&mut s, &mut p, &mut wbuf) {
                    Ok(()) => inflight.push_back(p),
                    Err(e) => p.fail(e),
                }
            }
            if self.rx_closed
                && inflight.is_empty()
                && self.queue.is_empty()
                && self.delayed.is_empty()
            {
                return SessionEnd::Exit;
            }
            let timer = inflight
                .front()
                .map(|p| p.deadline)
                .into_iter()
                .chain(self.delayed.iter().map(|(at, _)| *at))
                .min();
            let can_accept =
                !self.rx_closed && self.queue.is_empty() && inflight.len() < max_in_flight;
            let (mut rd, mut wr) = s.stream.split();
            if s.rbuf.capacity() - s.rbuf.len() < 4096 {
                s.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                read = rd.read_buf(&mut s.rbuf) => match read {
                    Ok(0) => {
                        if inflight.is_empty() {
                            // An idle connection closed by the server: not a failure.
                            tracing::debug!("the server closed an idle connection");
                            return SessionEnd::Lost;
                        }
                        break Error::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ));
                    }
                    Ok(_) => {
                        if let Err(e) = self.take_answers(&mut s, &mut inflight) {
                            break e;
                        }
                    }
                    Err(e) => break Error::Io(e),
                },
                written = wr.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                    if let Err(e) = written {
                        break Error::Io(e);
                    }
                }
                cmd = self.rx.recv(), if can_accept => self.accept(cmd),
                () = sleep_until(timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if timer.is_some() => {
                    let now = Instant::now();
                    if inflight.front().is_some_and(|p| p.deadline <= now) {
                        break Error::Timeout { after: self.config.request_timeout };
                    }
                    self.promote_delayed(now, false);
                }
            }
        };
        self.connection_lost(lost, inflight);
        SessionEnd::Lost
    }

    /// Decodes every whole answer in the read buffer and hands it to its request.
    fn take_answers(&mut self, s: &mut Session, inflight: &mut VecDeque<Pending>) -> Result<()> {
        loop {
            let (request_id, outcome, used) = match decode_frame(&s.rbuf, s.limits.max_frame)? {
                None => return Ok(()),
                Some((frame, used)) => {
                    let outcome = match frame.message {
                        Message::Response(Response::Error(e)) => Outcome::Error(Error::server(&e)),
                        Message::Response(r) => Outcome::Ok(Answer::from(r)),
                        Message::Request(_) => {
                            return Err(Error::UnexpectedResponse {
                                expected: "a response",
                                got: "a request",
                            })
                        }
                    };
                    (frame.request_id, outcome, used)
                }
            };
            s.rbuf.advance(used);
            if request_id == 0 {
                // A connection-level error: the server closes the connection next.
                return Err(match outcome {
                    Outcome::Error(e) => e,
                    Outcome::Ok(_) => Error::UnexpectedResponse {
                        expected: "an answer to a request",
                        got: "request id 0",
                    },
                });
            }
            let Some(pos) = inflight.iter().position(|p| p.request_id == request_id) else {
                tracing::debug!(request_id, "answer to no outstanding request");
                continue;
            };
            let Some(mut p) = inflight.remove(pos) else {
                continue;
            };
            match outcome {
                Outcome::Ok(answer) => {
                    if p.is_incr() {
                        if let Answer::IncrReport(r) = &answer {
                            // An alias defined by this batch is bound only if an
                            // event naming it was applied; otherwise the next
                            // batch defines it again.
                            let bound = |a: &u32| {
                                p.define_at.iter().any(|(i, alias)| {
                                    alias == a && !r.refused.iter().any(|f| f.index == *i)
                                })
                            };
                            p.defined.retain(|a| bound(a));
                        }
                        s.aliases.confirm(&p.defined);
                    }
                    let _ = p.reply.send(Ok(answer));
                }
                Outcome::Error(e) => {
                    if e.is_retryable()
                        && p.attempts < self.config.retry.max_retries
                        && !p.reply.is_closed()
                    {
                        p.attempts += 1;
                        if !p.ambiguous {
                            // Nothing of it was applied; later batches may have been.
                            p.seq = None;
                        }
                        let delay = self.config.retry.delay(p.attempts, self.rng.unit());
                        tracing::debug!(error = %e, ?delay, "retrying after a retryable error");
                        self.delayed.push((Instant::now() + delay, p));
                    } else {
                        p.fail(e);
                    }
                }
            }
        }
    }

    /// Requeues (or fails) every request of a lost connection, in order, and counts the
    /// failure.
    fn connection_lost(&mut self, err: Error, inflight: VecDeque<Pending>) {
        tracing::warn!(addr = %self.config.addr, error = %err, in_flight = inflight.len(), "connection lost");
        self.breaker.on_failure(std::time::Instant::now());
        self.publish_circuit();
        self.failures = self.failures.saturating_add(1);
        let delay = self.config.retry.delay(self.failures, self.rng.unit());
        self.backoff_until = Some(Instant::now() + delay);
        let max = self.config.retry.max_retries;
        let mut requeue = VecDeque::with_capacity(inflight.len() + self.queue.len());
        for mut p in inflight {
            if p.is_incr() && p.seq.is_some() {
                p.ambiguous = true;
            }
            p.attempts = p.attempts.saturating_add(1);
            if p.attempts > max {
                p.fail(err.duplicate());
            } else if !p.reply.is_closed() {
                requeue.push_back(p);
            }
        }
        requeue.append(&mut self.queue);
        self.queue = requeue;
    }
}
