//! A blocking client for code without async: [`blocking::Client`](Client) owns a small
//! tokio runtime (one worker thread) that runs the connection task, and each call
//! blocks the calling thread until its answer.
//!
//! Do not use it inside an async context (a tokio runtime thread): blocking there stalls
//! the runtime, and dropping the last handle there panics. From async code use
//! [`crate::Client`].
//!
//! ```no_run
//! use tallydb_client::blocking::Client;
//! use tallydb_client::Selector;
//!
//! let client = Client::connect("127.0.0.1:7411")?;
//! client.incr("cron_runs{job=backup}")?;
//! let now = tallydb_client::now_ms();
//! let total = client.total(&Selector::Exact("cron_runs{job=backup}"), now - 86_400_000, now + 60_000)?;
//! println!("{} runs today", total.sum);
//! # Ok::<(), tallydb_client::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use tallydb_protocol::{RangeQuery, Selector, TopQuery};

use crate::breaker::CircuitState;
use crate::client::ClientBuilder;
use crate::error::{Error, Result};
use crate::{
    IncrResult, RangeResult, SeriesResult, ServerInfo, Stats, TopResult, TotalGroupsResult,
    TotalResult,
};

/// A blocking TallyDB client. Cheap to clone; clones share the runtime and connection.
#[derive(Debug, Clone)]
pub struct Client {
    // Field order matters: the async client drops before the runtime it lives on.
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tallydb-client")
        .enable_all()
        .build()
        .map_err(Error::Io)
}

impl Client {
    /// Connects to `addr` with default settings.
    pub fn connect(addr: impl Into<String>) -> Result<Client> {
        Self::from_builder(ClientBuilder::new(addr))
    }

    /// Connects with the settings of an async [`ClientBuilder`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let builder = tallydb_client::Client::builder("127.0.0.1:7411")
    ///     .request_timeout(Duration::from_secs(2));
    /// let client = tallydb_client::blocking::Client::from_builder(builder)?;
    /// # Ok::<(), tallydb_client::Error>(())
    /// ```
    pub fn from_builder(builder: ClientBuilder) -> Result<Client> {
        let runtime = runtime()?;
        let inner = runtime.block_on(builder.connect())?;
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client, for use on this client's runtime (e.g. to start a
    /// [`Recorder`](crate::Recorder) with [`Client::recorder`]).
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// Starts a [`Recorder`](crate::Recorder) on this client's runtime with default
    /// settings. `Recorder::incr` needs no runtime; call `shutdown` with
    /// [`Client::block_on`].
    pub fn recorder(&self) -> crate::Recorder {
        let _guard = self.runtime.enter();
        self.inner.recorder().start()
    }

    /// Runs a future on this client's runtime, blocking the calling thread.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// See [`crate::Client::incr`].
    pub fn incr(&self, key: &str) -> Result<IncrResult> {
        self.block_on(self.inner.incr(key))
    }

    /// See [`crate::Client::incr_by`].
    pub fn incr_by(&self, key: &str, delta: i64) -> Result<IncrResult> {
        self.block_on(self.inner.incr_by(key, delta))
    }

    /// See [`crate::Client::incr_at`].
    pub fn incr_at(&self, key: &str, delta: i64, ts_ms: i64) -> Result<IncrResult> {
        self.block_on(self.inner.incr_at(key, delta, ts_ms))
    }

    /// Sends `events` — `(key, delta, optional timestamp)` — as one exactly-once batch.
    ///
    /// ```no_run
    /// # let client = tallydb_client::blocking::Client::connect("127.0.0.1:7411")?;
    /// client.batch(&[("a", 1, None), ("b", 2, Some(tallydb_client::now_ms()))])?;
    /// # Ok::<(), tallydb_client::Error>(())
    /// ```
    pub fn batch(&self, events: &[(&str, i64, Option<i64>)]) -> Result<IncrResult> {
        let mut batch = self.inner.batch();
        for (key, delta, ts) in events {
            batch.add_event(key, *delta, *ts, None);
        }
        self.block_on(batch.send())
    }

    /// See [`crate::Client::range`].
    pub fn range(&self, query: &RangeQuery<'_>) -> Result<RangeResult> {
        self.block_on(self.inner.range(query))
    }

    /// See [`crate::Client::total`].
    pub fn total(&self, selector: &Selector<'_>, from_ms: i64, to_ms: i64) -> Result<TotalResult> {
        self.block_on(self.inner.total(selector, from_ms, to_ms))
    }

    /// See [`crate::Client::total_by`].
    pub fn total_by(
        &self,
        selector: &Selector<'_>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<TotalGroupsResult> {
        self.block_on(self.inner.total_by(selector, from_ms, to_ms))
    }

    /// See [`crate::Client::top`].
    pub fn top(&self, query: &TopQuery<'_>) -> Result<TopResult> {
        self.block_on(self.inner.top(query))
    }

    /// See [`crate::Client::series`].
    pub fn series(&self, selector: &Selector<'_>, limit: u32) -> Result<SeriesResult> {
        self.block_on(self.inner.series(selector, limit))
    }

    /// See [`crate::Client::stats`].
    pub fn stats(&self) -> Result<Stats> {
        self.block_on(self.inner.stats())
    }

    /// See [`crate::Client::ping`].
    pub fn ping(&self) -> Result<Duration> {
        self.block_on(self.inner.ping())
    }

    /// See [`crate::Client::flush`].
    pub fn flush(&self) -> Result<String> {
        self.block_on(self.inner.flush())
    }

    /// See [`crate::Client::compact`].
    pub fn compact(&self) -> Result<String> {
        self.block_on(self.inner.compact())
    }

    /// See [`crate::Client::snapshot`].
    pub fn snapshot(&self, target_dir: &str) -> Result<String> {
        self.block_on(self.inner.snapshot(target_dir))
    }

    /// See [`crate::Client::server_info`].
    pub fn server_info(&self) -> Option<ServerInfo> {
        self.inner.server_info()
    }

    /// See [`crate::Client::circuit_state`].
    pub fn circuit_state(&self) -> CircuitState {
        self.inner.circuit_state()
    }
}
