//! `tally-bench`, TallyDB's load generator: it speaks the wire protocol directly
//! (the protocol crate over tokio TCP, no client crate) so that what it measures is
//! the server, not a client library.
//!
//! - [`workload`]: the options of a run ([`Workload`]), key distributions
//!   (uniform, Zipf), event timestamps (live, late, backfill), query kinds.
//! - [`conn`]: one connection: handshake, pipelined writer and reader, per-connection
//!   series aliases, producer id and sequence on every batch, latency from the
//!   *scheduled* send time in open loop (no coordinated omission).
//! - [`run`]: drives all connections until the deadline, merges histograms, samples
//!   CPU and memory ([`procstat`]), diffs the server's `STATS`, then checks
//!   exactness: the `TOTAL` of every series written against the increments
//!   acknowledged (lost and doubled must both be 0).
//! - [`spawn`]: a private `tallyd` on a temporary data directory, stopped by pid.
//! - [`report`]: the [`Report`], human-readable or JSON.
//!
//! How to run it and the latest figures: `docs/BENCHMARKS.md`.

pub mod conn;
pub mod error;
pub mod procstat;
pub mod report;
pub mod run;
pub mod spawn;
pub mod workload;

pub use error::LoadError;
pub use report::Report;
pub use run::{run, Target};
pub use spawn::Spawned;
pub use workload::{KeyDist, QueryKind, TimestampMode, VerifyMode, Workload};
