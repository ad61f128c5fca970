//! [`Client`] and [`ClientBuilder`]: the async API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tallydb_protocol::answer::Answer;
use tallydb_protocol::{
    encode_request, ErrorCode, IncrOk, Opcode, RangeQuery, Request, Selector, SeriesQuery,
    Snapshot, TopQuery, TotalQuery, MAX_CLIENT_NAME_LEN, MAX_EVENT_ID_LEN, MAX_SERIES_KEY_LEN,
    MAX_TOKEN_LEN,
};
use tokio::sync::{mpsc, oneshot};

use crate::backoff::{random_u64, RetryPolicy};
use crate::batch::Batch;
use crate::breaker::{BreakerConfig, CircuitState};
use crate::connection::{self, Command, Config, OwnedEvent, Payload, Shared, Task};
use crate::error::{Error, Result};
use crate::recorder::RecorderBuilder;
use crate::{
    IncrResult, RangeResult, Refusal, SeriesResult, ServerInfo, Stats, TopResult,
    TotalGroupsResult, TotalResult,
};

/// Most requests unanswered on one connection. It equals the number of recent
/// sequences the server remembers per producer, so every batch left ambiguous by a
/// lost connection can still be recognised when it is resent: counted once, never
/// refused as too old.
pub const MAX_IN_FLIGHT: usize = 64;
/// The default server address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7411";

/// Settings for a [`Client`]; [`ClientBuilder::connect`] opens it.
///
/// ```no_run
/// # async fn demo() -> Result<(), tallydb_client::Error> {
/// use std::time::Duration;
/// use tallydb_client::{Client, RetryPolicy};
/// let client = Client::builder("127.0.0.1:7411")
///     .connect_timeout(Duration::from_secs(1))
///     .request_timeout(Duration::from_secs(5))
///     .token("s3cr3t")
///     .client_name("checkout/1.4")
///     .retry(RetryPolicy::default().max_retries(5))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: Config,
    queue_capacity: usize,
}

impl ClientBuilder {
    /// Settings with defaults for the server at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            config: Config {
                addr: addr.into(),
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(10),
                token: Vec::new(),
                client_name: format!("tallydb-client/{}", env!("CARGO_PKG_VERSION")),
                retry: RetryPolicy::default(),
                breaker: BreakerConfig::default(),
                producer_id: random_u64(),
                max_in_flight: MAX_IN_FLIGHT,
                max_aliases: 65_536,
                strict: false,
            },
            queue_capacity: 1024,
        }
    }

    /// Bound on TCP connect plus the `HELLO` handshake (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Bound on each request's answer, counted from when it is written (default 10 s).
    /// An overdue answer means the connection is dead: it is replaced and the request
    /// retried. Raise it for slow admin commands (`compact`, `snapshot`).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// The token sent in `HELLO`; it selects the role (none by default).
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.config.token = token.into();
        self
    }

    /// A name for the server's logs, e.g. `checkout/1.4`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.config.client_name = name.into();
        self
    }

    /// All-or-nothing batches (default `false`): with `true` one invalid event fails
    /// its whole batch with an error, as servers before per-event validation did;
    /// with `false` each event is validated on its own, the valid ones are applied and
    /// the answer lists the refused ones ([`crate::IncrResult::refused`]).
    pub fn strict(mut self, strict: bool) -> Self {
        self.config.strict = strict;
        self
    }

    /// Retry policy (default: 3 retries, 50 ms doubling to 2 s, full jitter).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Circuit breaker settings (default: opens after 5 failures, probes after 2 s).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// The producer id for exactly-once batches (default: random per client).
    ///
    /// Two live clients must never share a producer id. A stable id across restarts is
    /// safe: sequences start at the current time in microseconds, so they keep
    /// increasing as long as the clock does not step back.
    pub fn producer_id(mut self, id: u64) -> Self {
        self.config.producer_id = id;
        self
    }

    /// Most requests written and not yet answered on the connection (default and
    /// maximum [`MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.clamp(1, MAX_IN_FLIGHT);
        self
    }

    /// Requests queued for the connection task beyond those in flight (default 1024);
    /// callers wait for room when it is full.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Most series aliases per connection (default 65 536; the server's `max_aliases`
    /// applies too). Series beyond it are sent by full key.
    pub fn max_aliases(mut self, n: u32) -> Self {
        self.config.max_aliases = n;
        self
    }

    fn check(&self) -> Result<()> {
        if self.config.client_name.len() > MAX_CLIENT_NAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "the client name is longer than {MAX_CLIENT_NAME_LEN} bytes"
            )));
        }
        if self.config.token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidArgument(format!(
                "the token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// Connects and completes the handshake (one attempt, within the connect timeout),
    /// then starts the connection task on the current tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tallydb_client::Error> {
    /// let client = tallydb_client::Client::builder("127.0.0.1:7411").connect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<Client> {
        self.check()?;
        let session = connection::connect(&self.config).await?;
        Ok(self.spawn(Some(session)))
    }

    /// Starts the client without connecting: the first request connects. Useful when
    /// the server may be down at start-up. Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tallydb_client::Error> {
    /// let client = tallydb_client::Client::builder("127.0.0.1:7411").connect_lazy()?;
    /// client.ping().await?; // connects now
    /// # Ok(()) }
    /// ```
    pub fn connect_lazy(self) -> Result<Client> {
        self.check()?;
        Ok(self.spawn(None))
    }

    fn spawn(self, session: Option<connection::Session>) -> Client {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let config = Arc::new(self.config);
        let shared = Arc::new(Shared::default());
        if let Some(s) = &session {
            shared.set_server_info(Some(s.info.clone()));
        }
        let task = Task::new(Arc::clone(&config), Arc::clone(&shared), rx);
        tokio::spawn(task.run(session));
        Client {
            inner: Arc::new(Inner { tx, config, shared }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Command>,
    config: Arc<Config>,
    shared: Arc<Shared>,
}

/// An async TallyDB client. Cheap to clone; every clone shares one connection task.
///
/// ```no_run
/// # async fn demo() -> Result<(), tallydb_client::Error> {
/// use tallydb_client::{Client, Selector};
/// let client = Client::connect("127.0.0.1:7411").await?;
/// client.incr("page_hits{page=/}").await?;
/// client.incr_by("ad_clicks{ad=ad001,country=US}", 3).await?;
/// let now = tallydb_client::now_ms();
/// let total = client
///     .total(&Selector::Exact("page_hits{page=/}"), now - 3_600_000, now + 60_000)
///     .await?;
/// println!("{} hits", total.sum);
/// # Ok(()) }
/// ```
///
/// Requests from many tasks are pipelined over one TCP connection. Every request is
/// answered within its retries' bounds (connect timeout, request timeout, backoff); the
/// connection task stops once every clone is dropped and every request answered.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to `addr` (`host:port`) with default settings.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tallydb_client::Error> {
    /// let client = tallydb_client::Client::connect("127.0.0.1:7411").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(addr: impl Into<String>) -> Result<Client> {
        ClientBuilder::new(addr).connect().await
    }

    /// Settings for a client of the server at `addr`.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(addr)
    }

    /// The producer id this client's batches carry.
    pub fn producer_id(&self) -> u64 {
        self.inner.config.producer_id
    }

    /// What the server announced on the current connection; `None` while disconnected.
    pub fn server_info(&self) -> Option<ServerInfo> {
        self.inner
            .shared
            .server_info
            .lock()
            .ok()
            .and_then(|g| g.clone())
    }

    /// The circuit breaker's state.
    pub fn circuit_state(&self) -> CircuitState {
        self.inner.shared.circuit()
    }

    /// Adds 1 to `key` at the server's receive time.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// client.incr("video_views{video=v42}").await?;
    /// # Ok(()) }
    /// ```
    pub async fn incr(&self, key: &str) -> Result<IncrResult> {
        self.incr_by(key, 1).await
    }

    /// Adds `delta` (may be negative) to `key` at the server's receive time.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// client.incr_by("bytes_sent{host=a}", 1500).await?;
    /// # Ok(()) }
    /// ```
    pub async fn incr_by(&self, key: &str, delta: i64) -> Result<IncrResult> {
        single(self.batch().add(key, delta).send().await)
    }

    /// Adds `delta` to `key` at `ts_ms` (unix ms), e.g. for late or backfilled events.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// let an_hour_ago = tallydb_client::now_ms() - 3_600_000;
    /// client.incr_at("likes{post=p1}", 1, an_hour_ago).await?;
    /// # Ok(()) }
    /// ```
    pub async fn incr_at(&self, key: &str, delta: i64, ts_ms: i64) -> Result<IncrResult> {
        single(self.batch().add_at(key, delta, ts_ms).send().await)
    }

    /// A batch of events sent as one `INCR`, applied exactly once: its valid events
    /// together, each invalid one refused alone and listed in the answer (or, with
    /// [`ClientBuilder::strict`], all or nothing).
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// let result = client
    ///     .batch()
    ///     .add("page_hits{page=/}", 1)
    ///     .add_at("page_hits{page=/about}", 2, tallydb_client::now_ms() - 60_000)
    ///     .add_with_id("orders{shop=s1}", 1, b"order-8812")
    ///     .send()
    ///     .await?;
    /// assert_eq!(result.applied + result.duplicates, 3);
    /// # Ok(()) }
    /// ```
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone())
    }

    /// Sends already-owned events as one batch. Without strict mode an event the
    /// client can tell is invalid (a key or event id too long to send) is refused here,
    /// with its index, and the others are sent.
    pub(crate) async fn send_events(&self, events: Vec<OwnedEvent>) -> Result<IncrResult> {
        if self.inner.config.strict {
            for e in &events {
                check_event(e)?;
            }
            return match self.call(Payload::Incr(events)).await? {
                Answer::IncrOk(ok) => Ok(report_of(ok)),
                Answer::IncrReport(r) => Ok(r),
                other => Err(unexpected(Opcode::IncrOk, other)),
            };
        }
        let one = events.len() == 1;
        if let [only] = events.as_slice() {
            // One event: the error it would meet here is the answer.
            check_event(only)?;
        }
        let mut local = Vec::new();
        let mut positions = Vec::with_capacity(events.len());
        let mut sent = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            match check_event(&e) {
                Ok(()) => {
                    positions.push(i as u32);
                    sent.push(e);
                }
                Err(err) => local.push(Refusal {
                    index: i as u32,
                    code: ErrorCode::InvalidSeries.code(),
                    message: format!("event {i}: {err}").into(),
                }),
            }
        }
        let mut report = if sent.is_empty() {
            report_of(IncrOk {
                applied: 0,
                duplicates: 0,
                duplicate_batch: false,
            })
        } else {
            match self.call(Payload::Incr(sent)).await? {
                Answer::IncrReport(r) => r,
                Answer::IncrOk(ok) => report_of(ok),
                other => return Err(unexpected(Opcode::IncrReport, other)),
            }
        };
        if !local.is_empty() {
            for r in &mut report.refused {
                r.index = positions.get(r.index as usize).copied().unwrap_or(r.index);
            }
            report.refused_count = report.refused_count.saturating_add(local.len() as u32);
            report.refused.append(&mut local);
            report.refused.sort_by_key(|r| r.index);
        }
        if one {
            // A batch of one event fails with its refusal, like `incr`.
            return single(Ok(report));
        }
        Ok(report)
    }

    /// Points of `query.function` over `[from_ms, to_ms)` at `query.step`.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// use tallydb_client::{Function, RangeQuery, Selector, Step};
    /// let now = tallydb_client::now_ms();
    /// let range = client
    ///     .range(&RangeQuery {
    ///         selector: Selector::Exact("page_hits{page=/}"),
    ///         from_ms: now - 3_600_000,
    ///         to_ms: now,
    ///         step: Step::Millis(60_000),
    ///         function: Function::Sum,
    ///     })
    ///     .await?;
    /// for group in &range.groups {
    ///     for p in &group.points {
    ///         println!("{} {}", p.ts_ms, p.value);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn range(&self, query: &RangeQuery<'_>) -> Result<RangeResult> {
        let (answer, _) = self.request(&Request::Range(query.clone())).await?;
        match answer {
            Answer::RangeOk(ok) => Ok(ok),
            other => Err(unexpected(Opcode::RangeOk, other)),
        }
    }

    /// Sum and count of `selector` over `[from_ms, to_ms)`.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// use tallydb_client::Selector;
    /// let now = tallydb_client::now_ms();
    /// let t = client.total(&Selector::Prefix("com.amazon."), now - 86_400_000, now).await?;
    /// println!("{} over {} events", t.sum, t.count);
    /// # Ok(()) }
    /// ```
    pub async fn total(
        &self,
        selector: &Selector<'_>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<TotalResult> {
        let req = Request::Total(TotalQuery {
            selector: selector.clone(),
            from_ms,
            to_ms,
        });
        let (answer, _) = self.request(&req).await?;
        match answer {
            Answer::TotalOk(ok) => Ok(ok),
            other => Err(unexpected(Opcode::TotalOk, other)),
        }
    }

    /// One total per group of the selector's `by` labels (`m by (country)`, or
    /// `com.example.* by (__child__)` for one per path segment); a selector that does
    /// not group gives one group without labels. Use it rather than [`Client::total`]
    /// for grouping selectors, which the server answers per group.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// use tallydb_client::{MetricSelector, Selector};
    /// let now = tallydb_client::now_ms();
    /// let by_country = Selector::Metric(MetricSelector {
    ///     name: "ad_clicks",
    ///     matchers: vec![],
    ///     group_by: vec!["country"],
    /// });
    /// for g in client.total_by(&by_country, now - 3_600_000, now).await?.groups {
    ///     println!("{:?}: {}", g.labels, g.sum);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn total_by(
        &self,
        selector: &Selector<'_>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<TotalGroupsResult> {
        let req = Request::Total(TotalQuery {
            selector: selector.clone(),
            from_ms,
            to_ms,
        });
        let (answer, _) = self.request(&req).await?;
        match answer {
            Answer::TotalGroupsOk(ok) => Ok(ok),
            Answer::TotalOk(ok) => Ok(ok.into()),
            other => Err(unexpected(Opcode::TotalGroupsOk, other)),
        }
    }

    /// The `query.n` largest sums, per series or per value of `query.group_by`.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// use tallydb_client::{MetricSelector, Selector, TopQuery};
    /// let now = tallydb_client::now_ms();
    /// let top = client
    ///     .top(&TopQuery {
    ///         selector: Selector::Metric(MetricSelector {
    ///             name: "ad_clicks",
    ///             matchers: vec![],
    ///             group_by: vec![],
    ///         }),
    ///         from_ms: now - 3_600_000,
    ///         to_ms: now,
    ///         n: 10,
    ///         group_by: Some("ad"),
    ///     })
    ///     .await?;
    /// for e in &top.entries {
    ///     println!("{} {}", e.name, e.sum);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn top(&self, query: &TopQuery<'_>) -> Result<TopResult> {
        let (answer, _) = self.request(&Request::Top(query.clone())).await?;
        match answer {
            Answer::TopOk(ok) => Ok(ok),
            other => Err(unexpected(Opcode::TopOk, other)),
        }
    }

    /// Up to `limit` series keys matching `selector`.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// use tallydb_client::Selector;
    /// let s = client.series(&Selector::Prefix("ad_"), 100).await?;
    /// println!("{:?} (truncated: {})", s.keys, s.truncated);
    /// # Ok(()) }
    /// ```
    pub async fn series(&self, selector: &Selector<'_>, limit: u32) -> Result<SeriesResult> {
        let req = Request::Series(SeriesQuery {
            selector: selector.clone(),
            limit,
        });
        let (answer, _) = self.request(&req).await?;
        match answer {
            Answer::SeriesOk(ok) => Ok(ok),
            other => Err(unexpected(Opcode::SeriesOk, other)),
        }
    }

    /// Server figures.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// let stats = client.stats().await?;
    /// println!("{:?}", stats.get("wal.fsyncs"));
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats> {
        let (answer, _) = self.request(&Request::Stats).await?;
        match answer {
            Answer::StatsOk(ok) => Ok(ok),
            other => Err(unexpected(Opcode::StatsOk, other)),
        }
    }

    /// Round trip to the server; returns the time it took (including any reconnect).
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// println!("rtt {:?}", client.ping().await?);
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<Duration> {
        let (answer, took) = self.request(&Request::Ping).await?;
        match answer {
            Answer::Pong => Ok(took),
            other => Err(unexpected(Opcode::Pong, other)),
        }
    }

    /// Admin: flush the server's memtable to a segment file. Returns the server's message.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// println!("{}", client.flush().await?);
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<String> {
        self.admin(&Request::Flush).await
    }

    /// Admin: run a compaction. Returns the server's message.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// println!("{}", client.compact().await?);
    /// # Ok(()) }
    /// ```
    pub async fn compact(&self) -> Result<String> {
        self.admin(&Request::Compact).await
    }

    /// Admin: write an online snapshot into `target_dir` on the server's file system.
    ///
    /// ```no_run
    /// # async fn demo(client: tallydb_client::Client) -> Result<(), tallydb_client::Error> {
    /// println!("{}", client.snapshot("/backups/tally-2024-06-01").await?);
    /// # Ok(()) }
    /// ```
    pub async fn snapshot(&self, target_dir: &str) -> Result<String> {
        self.admin(&Request::Snapshot(Snapshot { target_dir }))
            .await
    }

    /// A [`Recorder`](crate::Recorder) builder on this client.
    pub fn recorder(&self) -> RecorderBuilder {
        RecorderBuilder::new(self.clone())
    }

    async fn admin(&self, req: &Request<'_>) -> Result<String> {
        let (answer, _) = self.request(req).await?;
        match answer {
            Answer::AdminOk(message) => Ok(message),
            other => Err(unexpected(Opcode::AdminOk, other)),
        }
    }

    /// Encodes `req` (request id patched in by the connection task) and waits for its
    /// answer; also returns how long that took.
    async fn request(&self, req: &Request<'_>) -> Result<(Answer, Duration)> {
        let mut out = BytesMut::new();
        encode_request(0, req, &mut out);
        let started = Instant::now();
        let answer = self.call(Payload::Frame(out.freeze())).await?;
        Ok((answer, started.elapsed()))
    }

    /// Hands `payload` to the connection task and waits for its decoded answer.
    async fn call(&self, payload: Payload) -> Result<Answer> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command { payload, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

fn check_event(e: &OwnedEvent) -> Result<()> {
    if e.key.len() > MAX_SERIES_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "series key {:?}… is longer than {MAX_SERIES_KEY_LEN} bytes",
            e.key.chars().take(40).collect::<String>()
        )));
    }
    if e.event_id
        .as_ref()
        .is_some_and(|id| id.len() > MAX_EVENT_ID_LEN)
    {
        return Err(Error::InvalidArgument(format!(
            "an event id is longer than {MAX_EVENT_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// The answer to a one-event batch: its refusal, if any, as the error it is
/// (`incr`, `incr_by` and `incr_at` fail when their one event is refused).
fn single(answer: Result<IncrResult>) -> Result<IncrResult> {
    let report = answer?;
    match report.refused.first() {
        Some(r) => Err(Error::Server {
            code: ErrorCode::from_code(r.code),
            raw_code: r.code,
            message: r.message.to_string(),
            retryable: false,
        }),
        None => Ok(report),
    }
}

/// An `INCR_OK` as the report it stands for: nothing refused.
fn report_of(ok: IncrOk) -> IncrResult {
    IncrResult {
        applied: ok.applied,
        duplicates: ok.duplicates,
        duplicate_batch: ok.duplicate_batch,
        refused_count: 0,
        refused: Vec::new(),
    }
}

/// The error for an answer of the wrong kind (an `ERROR` stays a server error).
fn unexpected(expected: Opcode, got: Answer) -> Error {
    match got {
        Answer::Error(e) => Error::server(&e),
        other => Error::UnexpectedResponse {
            expected: expected.name(),
            got: other.opcode().name(),
        },
    }
}
