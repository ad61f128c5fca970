//! The engine: [`Engine`], the API over one data directory, and the glue
//! between the WAL, memtable, segments, manifest, dictionary and dedup state.
//!
//! Its rooms, in the order data flows:
//! - `recovery`: opening a directory: lock, format, manifest, orphans, dedup
//!   checkpoint, WAL replay.
//! - `write`: the write path: validation, dedup, WAL append and memtable insert
//!   of a batch, under one lock; `ledger`: the per series and day bounds that
//!   refuse a batch which could overflow a cell. Durability is [`crate::wal::commit`]'s (group
//!   commit and the fsync policies).
//! - `flush`: memtables to segments and a new checkpoint; the compaction worker
//!   is [`crate::compaction::worker`].
//! - `background`: the maintenance and WAL writer threads.
//! - `snapshot`: a consistent copy of the live data set.
//! - `select` and `read`: selector resolution and range / total / top execution
//!   over memtables and segments.
//! - `state`: what the rooms share; `stats`: the figures.
//!
//! Locks, always taken in this order: `flush_lock` / `compact_lock` (one flush and
//! one compaction at a time) → `commit`'s write lock (WAL position, dedup state;
//! held while a batch is logged and applied, never across I/O) → `tables`
//! (memtable and the live version) → `dict`. `manifest` is taken alone or after
//! `flush_lock` / `compact_lock`; a flush or compaction holding it to publish a
//! manifest installs the new version (`tables`) or poisons the engine (the
//! write lock) before releasing it.
//!
//! A failed fsync of the WAL, or during a flush or compaction of the segment
//! directory, dictionary, dedup checkpoint or manifest, poisons the engine:
//! writes are refused with [`Error::Poisoned`] saying why, reads go on, and a
//! restart recovers from the WAL.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::options::Options;
use crate::query::{
    RangeQuery, RangeResult, Selector, TopQuery, TopResult, TotalGroupsResult, TotalResult,
};
use crate::series::SeriesKey;
use crate::sweep::Access;

mod background;
mod flush;
mod ledger;
mod read;
mod recovery;
mod select;
mod snapshot;
mod state;
mod stats;
mod write;

pub use crate::compaction::worker::CompactOutcome;
pub use crate::wal::commit::{Durable, Pending};
pub use flush::FlushOutcome;
pub use recovery::RecoveryReport;
pub use stats::Stats;
pub use write::{ApplyOutcome, Batch, Event, ProducerSeq, Reason, Refused, Validation};

pub(crate) use state::{lock, read, Shared};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the format-version file.
pub const FORMAT_FILE: &str = "FORMAT";
/// Name of the manifest.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Name of the series dictionary.
pub const DICT_FILE: &str = "series.dict";
/// Directory of segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// Directory of WAL files.
pub const WAL_DIR: &str = "wal";
/// Data directory format version written and read by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of the format file.
pub fn format_file_contents() -> String {
    format!("tallydb data directory\nformat {FORMAT_VERSION}\n")
}

/// Name of the dedup checkpoint taken at `lsn`.
pub fn dedup_file_name(lsn: u64) -> String {
    format!("dedup-{lsn:016x}.state")
}

fn parse_dedup_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("dedup-")?.strip_suffix(".state")?;
    u64::from_str_radix(hex, 16).ok()
}

/// The storage engine of one data directory. Cheap to share behind an `Arc`;
/// every method takes `&self`.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Engine {
    /// Opens (or creates) the data directory `dir`: takes its lock, checks the
    /// format, loads the manifest, dictionary and dedup checkpoint, removes
    /// orphan files and replays the WAL past the checkpoint.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        opts.validate()?;
        let shared = Arc::new(recovery::open(dir.as_ref(), opts)?);
        let engine = Engine {
            shared,
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        if engine.shared.opts.background {
            background::start(&engine.shared, &mut lock(&engine.threads));
        }
        Ok(engine)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// What recovery found at open.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// The id of a series key, creating the series if it is new. The key is
    /// validated and canonicalised; the id is stable for the life of the data
    /// directory.
    pub fn series_id(&self, key: &str) -> Result<u32> {
        if let Some(id) = read(&self.shared.dict).get(key) {
            return Ok(id);
        }
        let parsed =
            SeriesKey::parse(key).map_err(|source| Error::InvalidSeries { index: 0, source })?;
        Ok(state::write(&self.shared.dict).intern(parsed))
    }

    /// Checks that `key` is a valid series key without creating its series.
    pub fn check_key(&self, key: &str) -> Result<()> {
        if read(&self.shared.dict).get(key).is_some() {
            return Ok(());
        }
        SeriesKey::parse(key)
            .map(|_| ())
            .map_err(|source| Error::InvalidSeries { index: 0, source })
    }

    /// The key of a series id.
    pub fn series_key(&self, id: u32) -> Option<SeriesKey> {
        read(&self.shared.dict).key(id).map(|k| k.to_key())
    }

    /// Applies a batch atomically and returns once it is durable under the
    /// configured fsync policy. Invalid events fail the whole batch with an error
    /// naming the event; nothing of it is counted (strict validation; see
    /// [`Engine::apply_each`] for per-event validation).
    pub fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let pending = self.submit(batch)?;
        self.shared.commit.wait(pending)
    }

    /// Applies the valid events of a batch together and returns once they are
    /// durable, with the events refused one by one (index and reason). Errors
    /// that concern the whole batch still fail it whole: a poisoned or full
    /// engine, a batch too large, a producer sequence too old, and an event
    /// that could overflow a cell ([`Error::CellOverflow`]).
    pub fn apply_each(&self, batch: &Batch) -> Result<(ApplyOutcome, Vec<Refused>)> {
        let (pending, refused) = self.submit_each(batch)?;
        Ok((self.shared.commit.wait(pending)?, refused))
    }

    /// The first half of [`Engine::apply`]: validates, logs and applies the batch
    /// (queries see it at once) without waiting for durability. The caller must
    /// pass the result to [`Engine::wait`] before acknowledging the batch; a
    /// server uses this to keep one connection's pipelined batches in order while
    /// they share a single fsync.
    pub fn submit(&self, batch: &Batch) -> Result<Pending> {
        self.shared
            .submit(batch, Validation::Strict, &mut Vec::new())
    }

    /// The first half of [`Engine::apply_each`]: like [`Engine::submit`] with
    /// per-event validation; the refused events come back at once, the outcome
    /// once [`Engine::wait`] or [`Engine::durable`] resolves the [`Pending`].
    pub fn submit_each(&self, batch: &Batch) -> Result<(Pending, Vec<Refused>)> {
        let mut refused = Vec::new();
        let pending = self
            .shared
            .submit(batch, Validation::PerEvent, &mut refused)?;
        Ok((pending, refused))
    }

    /// Checks an event time against the minimum time, the allowed skew and the
    /// retention, as a batch is checked: lets a caller refuse an event before
    /// it creates its series (see [`Engine::series_id`]). `None` is "now".
    pub fn check_time(&self, ts: Option<i64>) -> std::result::Result<(), Reason> {
        let o = &self.shared.opts;
        let now = o.clock.now_ms();
        let ts = ts.unwrap_or(now);
        if ts > now.saturating_add(o.max_future_skew_ms) {
            Err(Reason::TooFarInFuture {
                ts,
                now,
                skew_ms: o.max_future_skew_ms,
            })
        } else if ts < o.min_event_ms {
            Err(Reason::TooEarly {
                ts,
                min_ms: o.min_event_ms,
            })
        } else if o.retention.coverage(ts, now) == 0 {
            Err(Reason::TooOld {
                ts,
                oldest: o.retention.oldest_accepted(now),
            })
        } else {
            Ok(())
        }
    }

    /// The second half of [`Engine::apply`]: blocks until the submitted batch is
    /// durable under the fsync policy (group commit), then returns its outcome.
    pub fn wait(&self, pending: Pending) -> Result<ApplyOutcome> {
        self.shared.commit.wait(pending)
    }

    /// [`Engine::wait`] for async callers: a future that resolves when the batch
    /// is durable, without holding a thread while the group commit runs.
    pub fn durable(&self, pending: Pending) -> Durable {
        Durable::new(self.shared.commit.clone(), pending)
    }

    /// Writes and fsyncs everything buffered in the WAL.
    pub fn sync(&self) -> Result<()> {
        self.shared.commit.sync_all()
    }

    /// Writes every memtable to segment files and advances the checkpoint, so the
    /// WAL files it covered are deleted.
    pub fn flush(&self) -> Result<FlushOutcome> {
        self.shared.flush()
    }

    /// Runs compaction until the policy has nothing left to do: until
    /// [`crate::compaction::choose`] picks no task. Fails with
    /// [`Error::CompactionRunaway`] rather than loop for ever should the policy
    /// keep choosing past the most tasks the live segments can need.
    pub fn compact(&self) -> Result<CompactOutcome> {
        self.shared.compact_all()
    }

    /// Writes a consistent copy of the live data set into `target` (which must be
    /// missing or empty) while writes continue: everything acknowledged before the
    /// call is in the copy, which opens as a data directory of its own.
    pub fn snapshot(&self, target: &Path) -> Result<Manifest> {
        self.shared.snapshot(target)
    }

    /// Range query: points at a step, per group.
    pub fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        self.shared.range(q)
    }

    /// Total of the selected series over `from..to` (ms).
    pub fn total(&self, selector: &Selector, from: i64, to: i64) -> Result<TotalResult> {
        self.shared.total(selector, from, to, Access::Auto)
    }

    /// Totals of the selected series over `from..to` (ms), one per group of the
    /// selector's group-by labels (one group when it has none).
    pub fn total_groups(
        &self,
        selector: &Selector,
        from: i64,
        to: i64,
    ) -> Result<TotalGroupsResult> {
        self.shared.total_groups(selector, from, to, Access::Auto)
    }

    /// The `n` series (or label values) with the largest sums over the range.
    pub fn top(&self, q: &TopQuery) -> Result<TopResult> {
        self.shared.top(q, Access::Auto)
    }

    /// Keys of the selected series, sorted, at most `limit`; the flag says whether
    /// more matched.
    pub fn series(&self, selector: &Selector, limit: usize) -> Result<(Vec<String>, bool)> {
        self.shared.series(selector, limit)
    }

    /// Current figures.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops background work, writes and fsyncs the WAL, and releases the
    /// directory lock once the engine is dropped.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let s = &self.shared;
        *lock(&s.shutdown) = true;
        s.bg_cond.notify_all();
        s.commit.stop();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        s.commit.close()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the storage engine failed");
        }
    }
}

#[cfg(test)]
mod sweep_tests;

#[cfg(test)]
mod fault_tests;
