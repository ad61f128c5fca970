//! [`Recorder`]: increments from hot paths, buffered and sent in the background.
//!
//! [`Recorder::incr`] does no I/O and, for a series seen before, no allocation: it takes
//! a short mutex, looks the key up in an intern table and appends `(series, delta,
//! timestamp)` to a buffer. A background task sends the buffer as batches every
//! `flush_interval`, or sooner when `flush_events` are waiting.
//!
//! # Exact, not coalesced
//!
//! Every increment is sent as its own event, stamped with the client's clock when
//! [`incr`](Recorder::incr) was called. Nothing is summed on the client, so the
//! server's `count`, `min`, `max` and `avg` stay exactly what they would be had each
//! increment been sent alone, and each increment lands in the minute it happened in,
//! however late the flush. (Coalescing equal series per minute would send fewer bytes
//! but turn N increments into one event whose count is 1 and whose min and max are the
//! sum; the throughput is already high enough without it: an aliased event is a few
//! bytes on the wire.)
//!
//! # Delivery
//!
//! Each flush sends batches through the [`Client`], so they get its retries, circuit
//! breaker and exactly-once producer sequences. A batch that fails without having been
//! applied (server unreachable, circuit open, `BUSY`) goes back to the front of the
//! buffer and is retried at the next flush. A batch whose fate is unknown
//! ([`Error::Indeterminate`](crate::Error::Indeterminate)) is *not* resent — that could
//! count it twice — and is reported as `uncertain`. A batch the server refuses for good
//! (e.g. an invalid series name: a batch is all or nothing) is reported as `rejected`.
//!
//! # Bounded memory
//!
//! At most `max_buffered` increments are held (buffered plus being sent). When the buffer
//! is full — typically because the server is unreachable — [`Overflow`] decides:
//! [`Overflow::DropNewest`] (the default) drops the new increment and counts it;
//! [`Overflow::Block`] makes `incr` wait until the flusher makes room (never use it on a
//! thread that the flusher's runtime needs, e.g. inside a current-thread runtime).
//!
//! [`Recorder::shutdown`] flushes what is left, stops the flusher and returns a
//! [`RecorderReport`] of what was sent, dropped, rejected, uncertain and undelivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::connection::OwnedEvent;
use crate::error::Error;

/// What [`Recorder::incr`] does when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the new increment and count it in [`RecorderReport::dropped`].
    DropNewest,
    /// Block the calling thread until the flusher makes room (or the recorder shuts
    /// down, when the increment is dropped and counted).
    Block,
}

/// Settings for a [`Recorder`], from [`Client::recorder`].
///
/// ```no_run
/// # async fn demo(client: tallydb_client::Client) {
/// use std::time::Duration;
/// use tallydb_client::Overflow;
/// let recorder = client
///     .recorder()
///     .flush_interval(Duration::from_millis(200))
///     .flush_events(5_000)
///     .max_buffered(1_000_000)
///     .overflow(Overflow::DropNewest)
///     .start();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RecorderBuilder {
    client: Client,
    flush_interval: Duration,
    flush_events: usize,
    max_buffered: usize,
    batch_events: usize,
    overflow: Overflow,
}

impl RecorderBuilder {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            flush_interval: Duration::from_millis(100),
            flush_events: 10_000,
            max_buffered: 1_000_000,
            batch_events: 10_000,
            overflow: Overflow::DropNewest,
        }
    }

    /// Flush at least this often (default 100 ms).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d.max(Duration::from_millis(1));
        self
    }

    /// Flush as soon as this many increments are buffered (default 10 000).
    pub fn flush_events(mut self, n: usize) -> Self {
        self.flush_events = n.max(1);
        self
    }

    /// Most increments held in memory, buffered or being sent (default 1 000 000).
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n.max(1);
        self
    }

    /// Most events per `INCR` batch (default 10 000; keep it within the server's
    /// `max_batch_events`).
    pub fn batch_events(mut self, n: usize) -> Self {
        self.batch_events = n.max(1);
        self
    }

    /// What `incr` does when the buffer is full (default [`Overflow::DropNewest`]).
    pub fn overflow(mut self, o: Overflow) -> Self {
        self.overflow = o;
        self
    }

    /// Starts the background flusher on the current tokio runtime.
    pub fn start(self) -> Recorder {
        let shared = Arc::new(RecShared {
            state: Mutex::new(RecState::default()),
            space: Condvar::new(),
            wake: Notify::new(),
            counters: Counters::default(),
            flush_events: self.flush_events,
            max_buffered: self.max_buffered,
            overflow: self.overflow,
        });
        let flusher = Flusher {
            shared: Arc::clone(&shared),
            client: self.client,
            interval: self.flush_interval,
            batch_events: self.batch_events,
        };
        let handle = tokio::spawn(flusher.run());
        Recorder {
            handle: Arc::new(Handle {
                shared,
                join: Mutex::new(Some(handle)),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    series: u32,
    delta: i64,
    ts_ms: i64,
}

#[derive(Debug, Default)]
struct RecState {
    keys: HashMap<Box<str>, u32>,
    names: Vec<Arc<str>>,
    buf: Vec<Rec>,
    /// Increments taken by the flusher and not yet settled.
    flushing: usize,
    closed: bool,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    uncertain: AtomicU64,
    flushes: AtomicU64,
}

#[derive(Debug)]
struct RecShared {
    state: Mutex<RecState>,
    space: Condvar,
    wake: Notify,
    counters: Counters,
    flush_events: usize,
    max_buffered: usize,
    overflow: Overflow,
}

impl RecShared {
    fn lock(&self) -> MutexGuard<'_, RecState> {
        // A panic while holding the lock cannot leave the state inconsistent (each
        // critical section is a few pushes and counters); keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
        self.wake.notify_one();
    }
}

/// Owned by every [`Recorder`] clone; the last one dropped stops the flusher (after a
/// final flush).
#[derive(Debug)]
struct Handle {
    shared: Arc<RecShared>,
    join: Mutex<Option<JoinHandle<RecorderReport>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Buffers increments and sends them in the background. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), tallydb_client::Error> {
/// let client = tallydb_client::Client::connect("127.0.0.1:7411").await?;
/// let recorder = client.recorder().start();
/// for _ in 0..1000 {
///     recorder.incr("api_calls{route=/login}", 1); // no I/O
/// }
/// let report = recorder.shutdown().await;
/// assert_eq!(report.sent, 1000);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Recorder {
    handle: Arc<Handle>,
}

/// Counts of a [`Recorder`]'s increments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderReport {
    /// Increments accepted by `incr`.
    pub recorded: u64,
    /// Increments acknowledged by the server.
    pub sent: u64,
    /// Increments dropped because the buffer was full or the recorder was closed.
    pub dropped: u64,
    /// Increments refused for good: one by one (an invalid key, a time outside the
    /// server's limits), or with their whole batch (e.g. one that could overflow).
    pub rejected: u64,
    /// Increments whose batch may or may not have been counted.
    pub uncertain: u64,
    /// Increments still buffered (at shutdown: could not be delivered).
    pub undelivered: u64,
    /// Flush rounds so far.
    pub flushes: u64,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

impl Recorder {
    /// Adds `delta` to `key` now. No I/O; no allocation once `key` has been seen.
    /// When the buffer is full, [`Overflow`] decides.
    pub fn incr(&self, key: &str, delta: i64) {
        self.incr_at(key, delta, crate::now_ms());
    }

    /// Adds `delta` to `key` at `ts_ms` (unix ms).
    pub fn incr_at(&self, key: &str, delta: i64, ts_ms: i64) {
        let shared = &self.handle.shared;
        let mut st = shared.lock();
        loop {
            if st.closed {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if st.buf.len() + st.flushing < shared.max_buffered {
                break;
            }
            match shared.overflow {
                Overflow::DropNewest => {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Overflow::Block => {
                    shared.wake.notify_one();
                    st = shared.space.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        let series = match st.keys.get(key) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(st.names.len()).unwrap_or(u32::MAX);
                st.keys.insert(Box::from(key), i);
                st.names.push(Arc::from(key));
                i
            }
        };
        st.buf.push(Rec {
            series,
            delta,
            ts_ms,
        });
        shared.counters.recorded.fetch_add(1, Ordering::Relaxed);
        if st.buf.len() == shared.flush_events {
            shared.wake.notify_one();
        }
    }

    /// Counts so far (`undelivered` = currently buffered).
    pub fn report(&self) -> RecorderReport {
        report(&self.handle.shared)
    }

    /// Flushes what is buffered, stops the flusher and reports. Increments recorded on
    /// other clones afterwards are dropped (and counted).
    pub async fn shutdown(self) -> RecorderReport {
        self.handle.shared.close();
        let join = self
            .handle
            .join
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match join {
            Some(j) => match j.await {
                Ok(r) => r,
                Err(_) => report(&self.handle.shared),
            },
            None => report(&self.handle.shared),
        }
    }
}

fn report(shared: &RecShared) -> RecorderReport {
    let (undelivered, last_error) = {
        let st = shared.lock();
        (st.buf.len() + st.flushing, st.last_error.clone())
    };
    let c = &shared.counters;
    RecorderReport {
        recorded: c.recorded.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        dropped: c.dropped.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        uncertain: c.uncertain.load(Ordering::Relaxed),
        undelivered: undelivered as u64,
        flushes: c.flushes.load(Ordering::Relaxed),
        last_error,
    }
}

struct Flusher {
    shared: Arc<RecShared>,
    client: Client,
    interval: Duration,
    batch_events: usize,
}

impl Flusher {
    async fn run(self) -> RecorderReport {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.shared.wake.notified() => {}
            }
            let closed = self.shared.lock().closed;
            self.flush().await;
            if closed {
                break;
            }
        }
        report(&self.shared)
    }

    /// Sends everything buffered; unsent increments go back to the buffer's front.
    async fn flush(&self) {
        let (recs, names) = {
            let mut st = self.shared.lock();
            if st.buf.is_empty() {
                return;
            }
            let recs = std::mem::take(&mut st.buf);
            st.flushing = recs.len();
            (recs, st.names.clone())
        };
        self.shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
        let mut done = 0;
        for chunk in recs.chunks(self.batch_events) {
            let events: Vec<OwnedEvent> = chunk
                .iter()
                .map(|r| OwnedEvent {
                    key: names
                        .get(r.series as usize)
                        .map(Arc::clone)
                        .unwrap_or_else(|| Arc::from("")),
                    delta: r.delta,
                    ts_ms: Some(r.ts_ms),
                    event_id: None,
                })
                .collect();
            let n = chunk.len() as u64;
            let result = self.client.send_events(events).await;
            let c = &self.shared.counters;
            match result {
                Ok(report) => {
                    // Per-event validation: a bad event (an invalid key, a time
                    // outside the server's limits) is refused alone.
                    let refused = u64::from(report.refused_count).min(n);
                    c.sent.fetch_add(n - refused, Ordering::Relaxed);
                    if refused > 0 {
                        c.rejected.fetch_add(refused, Ordering::Relaxed);
                        if let Some(first) = report.refused.first() {
                            tracing::warn!(refused, first = %first.message, "recorder events refused");
                            self.note_refusal(&first.message);
                        }
                    }
                }
                Err(e) if e.maybe_applied() => {
                    c.uncertain.fetch_add(n, Ordering::Relaxed);
                    self.note(&e);
                }
                Err(e) if e.is_retryable() => {
                    // Not applied: keep this and the following chunks for the next round.
                    self.note(&e);
                    tracing::warn!(error = %e, pending = recs.len() - done, "recorder flush failed; will retry");
                    break;
                }
                Err(e) => {
                    c.rejected.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(error = %e, events = n, "recorder batch refused");
                    self.note(&e);
                }
            }
            done += chunk.len();
            let mut st = self.shared.lock();
            st.flushing = recs.len() - done;
            drop(st);
            self.shared.space.notify_all();
        }
        let mut st = self.shared.lock();
        if let Some(rest) = recs.get(done..) {
            if !rest.is_empty() {
                st.buf.splice(0..0, rest.iter().copied());
            }
        }
        st.flushing = 0;
        drop(st);
        self.shared.space.notify_all();
    }

    fn note(&self, e: &Error) {
        self.shared.lock().last_error = Some(e.to_string());
    }

    fn note_refusal(&self, message: &str) {
        self.shared.lock().last_error = Some(format!("refused: {message}"));
    }
}
