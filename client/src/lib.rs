//! The TallyDB client: send counter increments to `tallyd` and query them, from async
//! tokio services ([`Client`]), from plain threads ([`blocking::Client`]), or from hot
//! paths that must not wait on the network ([`Recorder`]).
//!
//! The client speaks the binary protocol of `docs/PROTOCOL.md` through the pure
//! `tallydb-protocol` crate, whose query types ([`Selector`], [`RangeQuery`],
//! [`TopQuery`] …) it re-exports.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tallydb_client::Error> {
//! use tallydb_client::{Client, Selector};
//!
//! let client = Client::connect("127.0.0.1:7411").await?;
//! client.incr("page_hits{page=/}").await?;
//! client.batch().add("ad_clicks{ad=ad001}", 1).add("ad_clicks{ad=ad002}", 4).send().await?;
//! let now = tallydb_client::now_ms();
//! let total = client.total(&Selector::Exact("page_hits{page=/}"), now - 3_600_000, now + 60_000).await?;
//! println!("{} hits (closed until {})", total.sum, total.closed_until_ms);
//! # Ok(()) }
//! ```
//!
//! # Module tour
//!
//! - [`client`](Client): [`Client`] and [`ClientBuilder`]: connect, increment, batch,
//!   query, admin. Clones share one connection task.
//! - `connection` (private): the connection task — one TCP connection at a time,
//!   pipelined requests matched by request id, per-connection series aliases, request
//!   timeouts, reconnects, retries, exactly-once producer sequences. Its module
//!   documentation explains the delivery guarantees.
//! - [`batch`](Batch): [`Batch`], several events sent as one all-or-nothing `INCR`.
//! - [`recorder`](Recorder): [`Recorder`], buffered increments for hot paths with a
//!   background flusher, bounded memory ([`Overflow`]) and a [`RecorderReport`].
//! - [`blocking`]: [`blocking::Client`], the same API for code without async.
//! - [`RetryPolicy`] (module `backoff`): exponential backoff with full jitter.
//! - [`CircuitBreaker`] (module `breaker`): closed → open → half-open.
//! - `aliases` (private): the per-connection alias table.
//! - Answers are the protocol crate's owned answer types, re-exported here
//!   ([`TotalResult`], [`RangeResult`], [`TopResult`] …; see
//!   `tallydb_protocol::answer`), each with the tiers that served it and
//!   `closed_until_ms`. The connection task decodes each answer once, into them.
//! - [`Error`]: typed errors; [`Error::is_retryable`], [`Error::maybe_applied`].
//!
//! # Guarantees
//!
//! - **Exactly once.** Every batch carries the client's producer id and a sequence; a
//!   batch resent after a lost connection reuses its sequence, so the server applies it
//!   once. Only [`Error::Indeterminate`] leaves a batch's fate unknown (every retry
//!   failed after it may have been applied); every other error means nothing of the
//!   batch was counted.
//! - **Bounded waits.** Connecting is bounded by the connect timeout, each answer by the
//!   request timeout, retries by the [`RetryPolicy`]; the [`CircuitBreaker`] fails calls
//!   at once while a server keeps failing.
//! - **Read your writes.** Requests go over one connection in order, and the server
//!   answers them in order: a query sees every increment acknowledged before it.
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

mod aliases;
mod backoff;
mod batch;
pub mod blocking;
mod breaker;
mod client;
mod connection;
mod error;
mod recorder;

pub use backoff::RetryPolicy;
pub use batch::Batch;
pub use breaker::{BreakerConfig, CircuitBreaker, CircuitState};
pub use client::{Client, ClientBuilder, DEFAULT_ADDR, MAX_IN_FLIGHT};
pub use error::{Error, Result};
pub use recorder::{Overflow, Recorder, RecorderBuilder, RecorderReport};
pub use tallydb_protocol::answer::{
    RangeGroup, RangePoint, RangeResult, SeriesResult, ServerInfo, Stats, TopEntry, TopResult,
    Value,
};
/// The answer to [`Client::total_by`]: one total per group.
pub use tallydb_protocol::total_groups::{TotalGroupResult, TotalGroupsResult};
/// The answer to an increment or a batch: events applied, duplicates skipped, and
/// whether the whole batch had already been applied (a retry after a lost answer).
/// The answer to a batch: applied, duplicate and refused counts, and each refused
/// event's index, error code and reason (`applied + duplicates + refused_count` is
/// the number of events sent). A strict client's batches never list refusals: a bad
/// event fails the whole batch with an error instead.
pub type IncrResult = tallydb_protocol::IncrReport<'static>;
pub use tallydb_protocol::Refusal;
/// The answer to [`Client::total`].
pub use tallydb_protocol::TotalOk as TotalResult;

pub use tallydb_protocol::{
    ErrorCode, Function, Limits, MatchOp, Matcher, MetricSelector, PrefixSelector, RangeQuery,
    Role, Selector, Step, Tiers, TopQuery,
};

/// The current time in unix milliseconds (the unit of every timestamp in the API).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
