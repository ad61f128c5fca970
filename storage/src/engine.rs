//! The engine: glue between the WAL, memtable, segments, manifest, dictionary
//! and dedup state, with group commit on the write path and `Arc` snapshots on
//! the read path.
//!
//! Locks, always taken in this order: `flush_lock` / `compact_lock` (one flush and
//! one compaction at a time) → `ws` (WAL position, dedup state; held while a batch
//! is logged and applied, never across I/O) → `tables` (memtable and the live
//! version) → `dict`. `manifest` is taken alone or after `flush_lock`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::block_cache::BlockCache;
use crate::cell::Cell;
use crate::compaction::{choose, CompactionTask, MergeIter};
use crate::dedup::{AppliedSeq, DedupState, EventId, SeqCheck};
use crate::dict::{self, SeriesDict};
use crate::error::{is_no_space, Error, Result};
use crate::fs::{parent, write_atomic, DirLock, FileSystem};
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::{FsyncPolicy, Options, NEVER_WRITE_INTERVAL_MS};
use crate::query::{
    plan, resolve_step, Agg, Group, Matcher, Plan, Provenance, RangeQuery, RangeResult, Selector,
    TopEntry, TopQuery, TopResult, TotalResult, Value,
};
use crate::replay::Replay;
use crate::segment::{self, BlockRuns, Segment, SegmentMeta, SegmentWriter};
use crate::series::SeriesKey;
use crate::sweep::{Access, Sums, MEMTABLE_LOOKUP_ENTRIES, SEGMENT_LOOKUP_CELLS};
use crate::time::{Retention, Tier};
use crate::wal::{self, BatchHeader, LoggedEvent, ProducerMark, WalFile};

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
/// WAL buffer size past which a writer pushes it to the OS itself.
const WAL_BUFFER_WRITE_BYTES: usize = 1 << 20;
/// How long a WAL write stalled by a full disk waits before it is tried again.
const STALL_RETRY: Duration = Duration::from_millis(200);

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

/// One increment to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Series id from [`Engine::series_id`].
    pub series: u32,
    /// The increment (may be negative).
    pub delta: i64,
    /// Event time in ms; the engine's clock when `None`.
    pub ts: Option<i64>,
    /// Event id digest for dedup inside the window.
    pub id: Option<EventId>,
}

/// A producer's `(id, sequence)`: a retried batch with the same pair is applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSeq {
    /// Stable id of the producer (a client instance).
    pub id: u64,
    /// Increasing sequence of the producer's batches.
    pub seq: u64,
}

/// Events applied atomically: all of them or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Exactly-once marker, if the producer uses one.
    pub producer: Option<ProducerSeq>,
    /// The events.
    pub events: Vec<Event>,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// LSN of the batch's WAL record (0 when nothing was logged).
    pub lsn: u64,
    /// Events counted.
    pub applied: u32,
    /// Events skipped because their id was seen inside the dedup window.
    pub duplicates: u32,
    /// True when the producer sequence was already applied: nothing was counted
    /// now; `applied` and `duplicates` repeat the original batch's counts.
    pub duplicate_batch: bool,
}

/// A batch that is logged and applied but not yet known durable; see
/// [`Engine::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a submitted batch must be waited for before it is acknowledged"]
pub struct Pending {
    wait_lsn: u64,
    outcome: ApplyOutcome,
}

impl Pending {
    /// What the batch did; final once [`Engine::wait`] succeeds.
    pub fn outcome(&self) -> ApplyOutcome {
        self.outcome
    }
}

/// Resolves to a submitted batch's outcome once it is durable under the fsync
/// policy; see [`Engine::durable`]. Dropping it early changes nothing: the batch
/// stays applied and is made durable anyway.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Durable {
    shared: Arc<Shared>,
    pending: Pending,
}

impl std::future::Future for Durable {
    type Output = Result<ApplyOutcome>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let s = &self.shared;
        let Pending { wait_lsn, outcome } = self.pending;
        if s.opts.fsync != FsyncPolicy::Always || s.durable_lsn.load(Ordering::Acquire) >= wait_lsn
        {
            return Poll::Ready(Ok(outcome));
        }
        if !s.has_writer.load(Ordering::Acquire) {
            // No WAL writer thread (background work is off): commit here.
            return Poll::Ready(s.wait(self.pending));
        }
        let mut ws = lock(&s.ws);
        if let Some(reason) = &ws.poisoned {
            return Poll::Ready(Err(Error::Poisoned {
                reason: reason.clone(),
            }));
        }
        if ws.synced_lsn >= wait_lsn {
            return Poll::Ready(Ok(outcome));
        }
        ws.waiters.push((wait_lsn, cx.waker().clone()));
        if ws.writer_idle {
            ws.writer_idle = false;
            drop(ws);
            s.ws_cond.notify_all();
        }
        Poll::Pending
    }
}

/// What recovery found at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// WAL files read.
    pub wal_files: usize,
    /// Batch records replayed (after the checkpoint).
    pub records_replayed: u64,
    /// Events replayed.
    pub events_replayed: u64,
    /// Torn tails cut off: file, offset, bytes dropped.
    pub torn_tails: Vec<(PathBuf, u64, u64)>,
    /// Files not in the manifest that were removed (left by an interrupted flush
    /// or compaction).
    pub orphans_removed: Vec<PathBuf>,
    /// Time spent replaying the WAL.
    pub replay_time: Duration,
}

/// What a flush wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Memtables written.
    pub memtables: usize,
    /// Segments written.
    pub segments: usize,
    /// Cells written.
    pub cells: u64,
    /// The checkpoint LSN afterwards.
    pub checkpoint_lsn: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactOutcome {
    /// Merge tasks run.
    pub tasks: usize,
    /// Segments read.
    pub segments_in: usize,
    /// Cells read.
    pub cells_in: u64,
    /// Cells written.
    pub cells_out: u64,
}

/// Figures about the engine for `stats` and monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Series known.
    pub series: u64,
    /// Live segments per tier (minute, hour, day).
    pub segments: [u64; 3],
    /// Cells in segments per tier.
    pub segment_cells: [u64; 3],
    /// Bytes of segment files per tier.
    pub segment_bytes: [u64; 3],
    /// Cells in memtables (active and awaiting flush).
    pub memtable_cells: u64,
    /// Approximate memtable bytes.
    pub memtable_bytes: u64,
    /// WAL bytes written since the last rotation.
    pub wal_bytes: u64,
    /// Highest LSN issued.
    pub last_lsn: u64,
    /// Highest LSN known durable.
    pub synced_lsn: u64,
    /// Checkpoint LSN in the manifest.
    pub checkpoint_lsn: u64,
    /// Event ids remembered for dedup.
    pub dedup_ids: u64,
    /// Producers remembered.
    pub producers: u64,
    /// Approximate bytes of dedup state.
    pub dedup_bytes: u64,
    /// Events counted since open.
    pub events_applied: u64,
    /// Batches applied since open.
    pub batches_applied: u64,
    /// Events skipped as duplicates since open.
    pub duplicates_skipped: u64,
    /// Fsyncs of the WAL since open.
    pub wal_syncs: u64,
    /// Flushes since open.
    pub flushes: u64,
    /// Compaction tasks since open.
    pub compactions: u64,
    /// Time spent in flushes since open, in microseconds.
    pub flush_micros: u64,
    /// Time spent in compaction tasks since open, in microseconds.
    pub compaction_micros: u64,
    /// True if writes are refused after an I/O failure.
    pub poisoned: bool,
    /// True while writes are refused because the disk is full (they resume by
    /// themselves once space is freed).
    pub disk_full: bool,
}

#[derive(Debug)]
struct Frozen {
    lsn: u64,
    wal_seq: u64,
    mem: Arc<Memtable>,
    dedup: Arc<Vec<u8>>,
    series_count: u32,
}

#[derive(Debug, Default)]
struct Version {
    frozen: Vec<Arc<Frozen>>,
    segments: Vec<Arc<Segment>>,
}

impl Version {
    /// A copy of this version with `change` applied.
    fn changed(&self, change: impl FnOnce(&mut Version)) -> Arc<Version> {
        let mut v = Version {
            frozen: self.frozen.clone(),
            segments: self.segments.clone(),
        };
        change(&mut v);
        Arc::new(v)
    }
}

#[derive(Debug, Default)]
struct Tables {
    active: Memtable,
    version: Arc<Version>,
}

#[derive(Debug)]
struct WriteState {
    wal: Option<WalFile>,
    buf: Vec<u8>,
    spare: Vec<u8>,
    next_lsn: u64,
    last_lsn: u64,
    written_lsn: u64,
    synced_lsn: u64,
    io_busy: bool,
    poisoned: Option<String>,
    /// Set while the disk is full: the unwritten WAL bytes stay in `buf`, new
    /// batches are refused, and the write is retried after `retry_at`.
    stalled: Option<(String, Instant)>,
    /// Async waiters for durability (`fsync = always`): LSN and waker.
    waiters: Vec<(u64, Waker)>,
    /// Wakers being woken, kept to reuse the allocation.
    waking: Vec<Waker>,
    /// True while the WAL writer thread sleeps, so a waiter knows to wake it.
    writer_idle: bool,
    /// Threads blocked in [`Shared::block`], which `write_out` must wake.
    blocked: u32,
    dedup: DedupState,
    logged_series: u32,
    wal_bytes: u64,
    scratch: Vec<LoggedEvent>,
}

#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    batches: AtomicU64,
    duplicates: AtomicU64,
    syncs: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    flush_micros: AtomicU64,
    compaction_micros: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    opts: Options,
    ws: Mutex<WriteState>,
    ws_cond: Condvar,
    /// `synced_lsn`, readable without the lock: the fast path of [`Durable`].
    durable_lsn: AtomicU64,
    /// True while a WAL writer thread serves [`Durable`] waiters.
    has_writer: AtomicBool,
    /// Set by `close`: the WAL writer thread stops.
    stopping: AtomicBool,
    tables: RwLock<Tables>,
    dict: RwLock<SeriesDict>,
    manifest: Mutex<Manifest>,
    flush_lock: Mutex<()>,
    compact_lock: Mutex<()>,
    shutdown: Mutex<bool>,
    bg_cond: Condvar,
    counters: Counters,
    recovery: RecoveryReport,
    blocks: Arc<BlockCache<BlockRuns>>,
    _lock: Box<dyn DirLock>,
}

/// The storage engine of one data directory. Cheap to share behind an `Arc`;
/// every method takes `&self`.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Opens (or creates) the data directory `dir`: takes its lock, checks the
    /// format, loads the manifest, dictionary and dedup checkpoint, removes
    /// orphan files and replays the WAL past the checkpoint.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&opts.fs);
        let fs: &dyn FileSystem = fs.as_ref();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create data directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let dir_lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    path: lock_path.clone(),
                }
            } else {
                Error::io("lock data directory", &lock_path, e)
            }
        })?;
        check_format(fs, &dir)?;
        for sub in [SEGMENTS_DIR, WAL_DIR] {
            let p = dir.join(sub);
            fs.create_dir_all(&p)
                .map_err(|e| Error::io("create directory", &p, e))?;
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let mut report = RecoveryReport::default();
        remove_if_exists(fs, &crate::fs::tmp_path(&manifest_path), &mut report)?;
        let manifest = load_manifest(fs, &dir)?;

        // Segments: open the live ones, remove the rest.
        let seg_dir = dir.join(SEGMENTS_DIR);
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for meta in &manifest.segments {
            let path = seg_dir.join(segment::file_name(meta.id));
            segments.push(Segment::open_checked(fs, &path, meta)?);
        }
        let live: std::collections::HashSet<u64> = manifest.segments.iter().map(|s| s.id).collect();
        for name in sorted(
            fs.list(&seg_dir)
                .map_err(|e| Error::io("list", &seg_dir, e))?,
        ) {
            if segment::parse_file_name(&name).is_none_or(|id| !live.contains(&id)) {
                remove_if_exists(fs, &seg_dir.join(name), &mut report)?;
            }
        }

        let dict = dict::load(fs, &dir.join(DICT_FILE), manifest.dict_len)?;
        if dict.len() != manifest.dict_count {
            return Err(Error::corrupt(
                dir.join(DICT_FILE),
                manifest.dict_len,
                format!(
                    "dictionary holds {} series, the manifest says {}",
                    dict.len(),
                    manifest.dict_count
                ),
            ));
        }
        let mut dedup = DedupState::new();
        for name in sorted(fs.list(&dir).map_err(|e| Error::io("list", &dir, e))?) {
            let path = dir.join(&name);
            match parse_dedup_file_name(&name) {
                Some(lsn) if lsn == manifest.dedup_lsn => {
                    let bytes = fs
                        .read(&path)
                        .map_err(|e| Error::io("read dedup checkpoint", &path, e))?;
                    dedup = DedupState::decode(&bytes)
                        .map_err(|(at, why)| Error::corrupt(&path, at, why))?;
                }
                Some(_) => remove_if_exists(fs, &path, &mut report)?,
                None if name.ends_with(".tmp") => remove_if_exists(fs, &path, &mut report)?,
                None => {}
            }
        }
        if manifest.dedup_lsn != 0 && !fs.exists(&dir.join(dedup_file_name(manifest.dedup_lsn))) {
            return Err(Error::corrupt(
                dir.join(MANIFEST_FILE),
                0,
                format!(
                    "dedup checkpoint {} is missing",
                    dedup_file_name(manifest.dedup_lsn)
                ),
            ));
        }

        // WAL replay.
        let started = Instant::now();
        let wal_dir = dir.join(WAL_DIR);
        let mut seqs: Vec<u64> = Vec::new();
        for name in fs
            .list(&wal_dir)
            .map_err(|e| Error::io("list", &wal_dir, e))?
        {
            match wal::parse_file_name(&name) {
                Some(seq) => seqs.push(seq),
                None => remove_if_exists(fs, &wal_dir.join(name), &mut report)?,
            }
        }
        seqs.sort_unstable();
        let mut replay =
            Replay::new(dict, manifest.checkpoint_lsn).with_dedup(dedup, opts.producer_idle_ms);
        for (i, seq) in seqs.iter().enumerate() {
            let path = wal_dir.join(wal::file_name(*seq));
            let bytes = fs
                .read(&path)
                .map_err(|e| Error::io("read wal", &path, e))?;
            let name = path.display().to_string();
            let last = i + 1 == seqs.len();
            let info = replay.file(&name, &bytes, *seq, manifest.checkpoint_lsn, last)?;
            report.wal_files += 1;
            report.records_replayed += info.replayed;
            report.events_replayed += info.events;
            if let Some((at, dropped)) = info.torn {
                tracing::warn!(file = %path.display(), offset = at, dropped_bytes = dropped, "cut a torn WAL tail: the last write never completed");
                let valid_len = bytes.len() as u64 - dropped;
                if valid_len == 0 {
                    fs.remove_file(&path)
                        .map_err(|e| Error::io("remove torn wal", &path, e))?;
                    fs.sync_dir(&wal_dir)
                        .map_err(|e| Error::io("sync directory", &wal_dir, e))?;
                } else {
                    fs.truncate(&path, valid_len)
                        .map_err(|e| Error::io("truncate wal", &path, e))?;
                }
                report.torn_tails.push((path, at, dropped));
            }
        }
        let Replay {
            dict,
            memtable: active,
            last_lsn,
            dedup,
            ..
        } = replay;
        let mut dedup = dedup.map(|(d, _)| d).unwrap_or_default();
        report.replay_time = started.elapsed();
        let now = opts.clock.now_ms();
        dedup.expire(now, opts.producer_idle_ms);
        let next_seq = seqs.last().map_or(1, |s| s + 1);
        let wal_file = WalFile::create(fs, &wal_dir, next_seq)?;
        if report.records_replayed > 0 || !report.torn_tails.is_empty() {
            tracing::info!(
                records = report.records_replayed,
                events = report.events_replayed,
                files = report.wal_files,
                ms = report.replay_time.as_millis() as u64,
                "replayed the write-ahead log"
            );
        }
        let logged_series = dict.len();
        let shared = Arc::new(Shared {
            ws: Mutex::new(WriteState {
                wal: Some(wal_file),
                buf: Vec::with_capacity(WAL_BUFFER_WRITE_BYTES),
                spare: Vec::with_capacity(WAL_BUFFER_WRITE_BYTES),
                next_lsn: last_lsn + 1,
                last_lsn,
                written_lsn: last_lsn,
                synced_lsn: last_lsn,
                io_busy: false,
                poisoned: None,
                stalled: None,
                waiters: Vec::new(),
                waking: Vec::new(),
                writer_idle: false,
                blocked: 0,
                dedup,
                logged_series,
                wal_bytes: 0,
                scratch: Vec::new(),
            }),
            ws_cond: Condvar::new(),
            durable_lsn: AtomicU64::new(last_lsn),
            has_writer: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            tables: RwLock::new(Tables {
                active,
                version: Arc::new(Version {
                    frozen: Vec::new(),
                    segments,
                }),
            }),
            dict: RwLock::new(dict),
            manifest: Mutex::new(manifest),
            flush_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            shutdown: Mutex::new(false),
            bg_cond: Condvar::new(),
            counters: Counters::default(),
            recovery: report,
            blocks: Arc::new(BlockCache::new(opts.block_cache_bytes)),
            _lock: dir_lock,
            dir,
            opts,
        });
        let engine = Engine {
            shared,
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        if engine.shared.opts.background {
            engine.start_background();
        }
        Ok(engine)
    }

    fn start_background(&self) {
        let mut threads = lock(&self.threads);
        let s = Arc::clone(&self.shared);
        threads.push(
            std::thread::Builder::new()
                .name("tally-maintenance".into())
                .spawn(move || s.maintenance_loop())
                .unwrap_or_else(|e| panic!("cannot start a thread: {e}")),
        );
        let s = Arc::clone(&self.shared);
        if self.shared.opts.fsync == FsyncPolicy::Always {
            self.shared.has_writer.store(true, Ordering::Release);
        }
        threads.push(
            std::thread::Builder::new()
                .name("tally-wal".into())
                .spawn(move || s.wal_loop())
                .unwrap_or_else(|e| panic!("cannot start a thread: {e}")),
        );
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
        Ok(write(&self.shared.dict).intern(parsed))
    }

    /// The key of a series id.
    pub fn series_key(&self, id: u32) -> Option<SeriesKey> {
        read(&self.shared.dict).key(id).map(|k| k.to_key())
    }

    /// Applies a batch atomically and returns once it is durable under the
    /// configured fsync policy. Invalid events fail the whole batch with an error
    /// naming the event; nothing of it is counted.
    pub fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        self.shared.apply(batch)
    }

    /// The first half of [`Engine::apply`]: validates, logs and applies the batch
    /// (queries see it at once) without waiting for durability. The caller must
    /// pass the result to [`Engine::wait`] before acknowledging the batch; a
    /// server uses this to keep one connection's pipelined batches in order while
    /// they share a single fsync.
    pub fn submit(&self, batch: &Batch) -> Result<Pending> {
        self.shared.submit(batch)
    }

    /// The second half of [`Engine::apply`]: blocks until the submitted batch is
    /// durable under the fsync policy (group commit), then returns its outcome.
    pub fn wait(&self, pending: Pending) -> Result<ApplyOutcome> {
        self.shared.wait(pending)
    }

    /// [`Engine::wait`] for async callers: a future that resolves when the batch
    /// is durable, without holding a thread while the group commit runs.
    pub fn durable(&self, pending: Pending) -> Durable {
        Durable {
            shared: Arc::clone(&self.shared),
            pending,
        }
    }

    /// Writes and fsyncs everything buffered in the WAL.
    pub fn sync(&self) -> Result<()> {
        let s = &self.shared;
        let ws = lock(&s.ws);
        let lsn = ws.last_lsn;
        s.wait_durable(ws, lsn, true, false)
    }

    /// Writes every memtable to segment files and advances the checkpoint, so the
    /// WAL files it covered are deleted.
    pub fn flush(&self) -> Result<FlushOutcome> {
        self.shared.flush()
    }

    /// Runs compaction until the policy has nothing left to do.
    pub fn compact(&self) -> Result<CompactOutcome> {
        let mut out = CompactOutcome::default();
        for _ in 0..64 {
            match self.shared.compact_once()? {
                Some(step) => {
                    out.tasks += 1;
                    out.segments_in += step.segments_in;
                    out.cells_in += step.cells_in;
                    out.cells_out += step.cells_out;
                }
                None => break,
            }
        }
        Ok(out)
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

    /// The `n` series (or label values) with the largest sums over the range.
    pub fn top(&self, q: &TopQuery) -> Result<TopResult> {
        self.shared.top(q, Access::Auto)
    }

    /// Keys of the selected series, sorted, at most `limit`; the flag says whether
    /// more matched.
    pub fn series(&self, selector: &Selector, limit: usize) -> Result<(Vec<String>, bool)> {
        selector.validate()?;
        let dict = read(&self.shared.dict);
        let ids = resolve_ids(&dict, selector);
        let mut keys: Vec<String> = ids
            .iter()
            .filter_map(|id| dict.key(*id))
            .map(|k| k.as_str().to_string())
            .collect();
        keys.sort_unstable();
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
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
        s.stopping.store(true, Ordering::Release);
        s.bg_cond.notify_all();
        // Taken and released so the WAL writer is waiting or sees `stopping`.
        drop(lock(&s.ws));
        s.ws_cond.notify_all();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        let ws = lock(&s.ws);
        let lsn = ws.last_lsn;
        let res = if ws.poisoned.is_some() {
            // Nothing more can be made durable; release the lock taken above
            // before taking it again below.
            drop(ws);
            Ok(())
        } else {
            s.wait_durable(ws, lsn, true, false)
        };
        let mut ws = lock(&s.ws);
        ws.poisoned
            .get_or_insert_with(|| "the engine is closed".into());
        // Async waiters still registered learn that the engine closed.
        for (_, waker) in ws.waiters.drain(..) {
            waker.wake();
        }
        res
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the storage engine failed");
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

fn remove_if_exists(fs: &dyn FileSystem, path: &Path, report: &mut RecoveryReport) -> Result<()> {
    if fs.exists(path) {
        fs.remove_file(path)
            .map_err(|e| Error::io("remove", path, e))?;
        tracing::info!(file = %path.display(), "removed a file left by an interrupted operation");
        report.orphans_removed.push(path.to_path_buf());
    }
    Ok(())
}

fn check_format(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    let expected = format_file_contents();
    if fs.exists(&path) {
        let bytes = fs.read(&path).map_err(|e| Error::io("read", &path, e))?;
        if bytes != expected.as_bytes() {
            return Err(Error::UnsupportedFormat {
                path,
                found: String::from_utf8_lossy(&bytes).trim().to_string(),
                expected: FORMAT_VERSION,
            });
        }
        return Ok(());
    }
    let others: Vec<String> = fs
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .into_iter()
        .filter(|n| n != LOCK_FILE && !n.ends_with(".tmp"))
        .collect();
    if !others.is_empty() {
        return Err(Error::UnsupportedFormat {
            path,
            found: format!("no format file, but the directory holds {others:?}"),
            expected: FORMAT_VERSION,
        });
    }
    write_atomic(fs, &path, expected.as_bytes()).map_err(|e| Error::io("write", &path, e))
}

/// Loads the manifest. A new directory gets an empty one; a missing manifest
/// beside any data is corruption, never a reason to start empty.
fn load_manifest(fs: &dyn FileSystem, dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    if fs.exists(&path) {
        return Manifest::load(fs, &path);
    }
    let mut data = Vec::new();
    for sub in [SEGMENTS_DIR, WAL_DIR] {
        let p = dir.join(sub);
        let names = fs.list(&p).map_err(|e| Error::io("list", &p, e))?;
        data.extend(names.into_iter().map(|n| format!("{sub}/{n}")));
    }
    let top = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    data.extend(
        top.into_iter()
            .filter(|n| n == DICT_FILE || parse_dedup_file_name(n).is_some()),
    );
    if !data.is_empty() {
        data.sort();
        return Err(Error::corrupt(
            &path,
            0,
            format!(
                "the manifest is missing beside live data ({})",
                data.join(", ")
            ),
        ));
    }
    let manifest = Manifest {
        next_segment_id: 1,
        ..Manifest::default()
    };
    manifest.store(fs, &path)?;
    Ok(manifest)
}

/// Ids of the series a selector matches, ascending.
fn resolve_ids(dict: &SeriesDict, selector: &Selector) -> Vec<u32> {
    match selector {
        Selector::Exact(key) => SeriesKey::parse(key)
            .ok()
            .and_then(|k| dict.get(k.as_str()))
            .into_iter()
            .collect(),
        Selector::Prefix(p) => dict.ids_under_prefix(p),
        Selector::Metric { name, matchers, .. } => {
            let mut lists: Vec<&[u32]> = vec![dict.ids_of_name(name)];
            for m in matchers {
                if let Matcher::Eq(l, v) = m {
                    lists.push(dict.ids_with_label(l, v));
                }
            }
            lists.sort_by_key(|l| l.len());
            let (first, rest) = lists
                .split_first()
                .map_or((&[][..], &[][..]), |(f, r)| (*f, r));
            let negated = matchers.iter().any(|m| matches!(m, Matcher::Ne(..)));
            first
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|l| l.binary_search(id).is_ok()))
                .filter(|id| {
                    if !negated {
                        return true;
                    }
                    let Some(key) = dict.key(*id) else {
                        return false;
                    };
                    matchers.iter().all(|m| match m {
                        Matcher::Eq(..) => true,
                        Matcher::Ne(l, v) => key.label(l).unwrap_or("") != v,
                    })
                })
                .collect()
        }
    }
}

/// Selected ids with their group index, and the groups' label values.
struct Resolved {
    ids: Vec<u32>,
    group_of: Vec<usize>,
    groups: Vec<Vec<(String, String)>>,
}

fn resolve_groups(dict: &SeriesDict, selector: &Selector, group_by: &[String]) -> Resolved {
    let ids = resolve_ids(dict, selector);
    if group_by.is_empty() {
        return Resolved {
            group_of: vec![0; ids.len()],
            ids,
            groups: vec![Vec::new()],
        };
    }
    let mut index: FxHashMap<Vec<String>, usize> = FxHashMap::default();
    let mut groups = Vec::new();
    let mut group_of = Vec::with_capacity(ids.len());
    for id in &ids {
        let values: Vec<String> = group_by
            .iter()
            .map(|l| {
                dict.key(*id)
                    .and_then(|k| k.label(l))
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let g = *index.entry(values.clone()).or_insert_with(|| {
            groups.push(group_by.iter().cloned().zip(values).collect());
            groups.len() - 1
        });
        group_of.push(g);
    }
    Resolved {
        ids,
        group_of,
        groups,
    }
}

impl Shared {
    fn fs(&self) -> &dyn FileSystem {
        self.opts.fs.as_ref()
    }

    fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let pending = self.submit(batch)?;
        self.wait(pending)
    }

    /// Waits until a submitted batch is durable under the fsync policy.
    fn wait(&self, pending: Pending) -> Result<ApplyOutcome> {
        if self.opts.fsync == FsyncPolicy::Always && pending.wait_lsn > 0 {
            let ws = lock(&self.ws);
            self.wait_durable(ws, pending.wait_lsn, true, true)?;
        }
        Ok(pending.outcome)
    }

    fn submit(&self, batch: &Batch) -> Result<Pending> {
        if batch.events.len() > self.opts.max_batch_events {
            return Err(Error::BatchTooLarge {
                events: batch.events.len(),
                max: self.opts.max_batch_events,
            });
        }
        let now = self.opts.clock.now_ms();
        let retention = &self.opts.retention;
        let skew = self.opts.max_future_skew_ms;
        let known = read(&self.dict).len();
        let mut ws = lock(&self.ws);
        if let Some(reason) = &ws.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        if let Some((reason, _)) = &ws.stalled {
            return Err(Error::DiskFull {
                reason: reason.clone(),
            });
        }
        if let Some(p) = batch.producer {
            match ws.dedup.producer(p.id).map(|state| state.check(p.seq)) {
                None | Some(SeqCheck::New) => {}
                Some(SeqCheck::Duplicate(original)) => {
                    // A retry: acknowledged once the original is durable (everything
                    // logged so far), with the original counts.
                    return Ok(Pending {
                        wait_lsn: ws.last_lsn,
                        outcome: ApplyOutcome {
                            lsn: 0,
                            applied: original.applied,
                            duplicates: original.duplicates,
                            duplicate_batch: true,
                        },
                    });
                }
                Some(SeqCheck::TooOld { oldest }) => {
                    return Err(Error::SequenceTooOld {
                        producer: p.id,
                        seq: p.seq,
                        oldest,
                    });
                }
            }
        }
        let mut events = std::mem::take(&mut ws.scratch);
        events.clear();
        let mut duplicates = 0u32;
        let oldest = retention.oldest_accepted(now);
        let cutoffs = retention.cutoffs(now);
        for (index, e) in batch.events.iter().enumerate() {
            let fail = |err: Error, ws: &mut WriteState, events: Vec<LoggedEvent>| {
                ws.scratch = events;
                Err(err)
            };
            if e.series >= known {
                return fail(
                    Error::UnknownSeriesId {
                        index,
                        id: e.series,
                    },
                    &mut ws,
                    events,
                );
            }
            let ts = e.ts.unwrap_or(now);
            if ts > now.saturating_add(skew) {
                return fail(
                    Error::TooFarInFuture {
                        index,
                        ts,
                        now,
                        skew_ms: skew,
                    },
                    &mut ws,
                    events,
                );
            }
            let coverage = Retention::coverage_at(&cutoffs, ts);
            if coverage == 0 {
                return fail(Error::TooOld { index, ts, oldest }, &mut ws, events);
            }
            events.push(LoggedEvent {
                series: e.series,
                ts,
                delta: e.delta,
                coverage,
                id: e.id,
            });
        }
        // Dedup by event id: only after the whole batch is known valid.
        let expiry = now.saturating_add(self.opts.dedup_window_ms);
        let mut has_ids = false;
        if events.iter().any(|e| e.id.is_some()) {
            ws.dedup.expire(now, self.opts.producer_idle_ms);
            let dedup = &mut ws.dedup;
            events.retain(|e| match e.id {
                Some(id) => {
                    has_ids = true;
                    let fresh = dedup.remember(id, expiry);
                    duplicates += u32::from(!fresh);
                    fresh
                }
                None => true,
            });
        }
        let applied = events.len() as u32;
        if events.is_empty() && batch.producer.is_none() {
            ws.scratch = events;
            return Ok(Pending {
                wait_lsn: 0,
                outcome: ApplyOutcome {
                    lsn: 0,
                    applied: 0,
                    duplicates,
                    duplicate_batch: false,
                },
            });
        }
        let lsn = ws.next_lsn;
        ws.next_lsn += 1;
        let producer = batch.producer.map(|p| ProducerMark {
            id: p.id,
            seq: p.seq,
            applied,
            duplicates,
        });
        let header = BatchHeader {
            lsn,
            accepted_at: now,
            producer,
            id_expiry: has_ids.then_some(expiry),
        };
        let before = ws.buf.len();
        {
            let dict = read(&self.dict);
            let from = ws.logged_series;
            let to = dict.len();
            let defs = (from..to).filter_map(|id| dict.key(id).map(|k| (id, k.as_str())));
            let defs: Vec<(u32, &str)> = defs.collect();
            wal::encode_batch(&mut ws.buf, &header, defs.into_iter(), &events);
            ws.logged_series = to;
        }
        ws.wal_bytes += (ws.buf.len() - before) as u64;
        ws.last_lsn = lsn;
        if let Some(p) = producer {
            ws.dedup.record_producer(
                p.id,
                AppliedSeq {
                    seq: p.seq,
                    applied,
                    duplicates,
                },
                now,
            );
        }
        let wants_flush = {
            let mut t = write(&self.tables);
            for e in &events {
                t.active.add(e.series, e.ts, e.delta, e.coverage);
            }
            t.active.approx_bytes() >= self.opts.memtable_bytes
        } || ws.wal_bytes >= self.opts.wal_flush_bytes;
        ws.scratch = events;
        self.counters
            .events
            .fetch_add(u64::from(applied), Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(u64::from(duplicates), Ordering::Relaxed);
        if wants_flush {
            self.bg_cond.notify_all();
        }
        let outcome = ApplyOutcome {
            lsn,
            applied,
            duplicates,
            duplicate_batch: false,
        };
        if self.opts.fsync != FsyncPolicy::Always
            && ws.buf.len() >= WAL_BUFFER_WRITE_BYTES
            && !ws.io_busy
        {
            drop(self.write_out(ws, false));
        }
        Ok(Pending {
            wait_lsn: lsn,
            outcome,
        })
    }

    /// Blocks until `lsn` is written (and fsynced when `sync`), leading a group
    /// write when no other thread is doing I/O. While the disk is full it waits
    /// for space if `through_stall` (a batch already accepted, whose outcome must
    /// not become ambiguous), and otherwise fails with [`Error::DiskFull`].
    fn wait_durable<'a>(
        &'a self,
        mut ws: MutexGuard<'a, WriteState>,
        lsn: u64,
        sync: bool,
        through_stall: bool,
    ) -> Result<()> {
        loop {
            if let Some(reason) = &ws.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            let done = if sync { ws.synced_lsn } else { ws.written_lsn };
            if done >= lsn {
                return Ok(());
            }
            if ws.io_busy {
                ws = self.block(ws, None);
                continue;
            }
            if let Some((reason, retry_at)) = &ws.stalled {
                if !through_stall || self.stopping.load(Ordering::Acquire) {
                    return Err(Error::DiskFull {
                        reason: reason.clone(),
                    });
                }
                let now = Instant::now();
                if now < *retry_at {
                    let left = *retry_at - now;
                    ws = self.block(ws, Some(left));
                    continue;
                }
            }
            ws = self.write_out(ws, sync);
        }
    }

    /// Writes the WAL buffer (one `write`) and optionally fsyncs, without holding
    /// the lock during I/O, then wakes the async waiters it made durable.
    ///
    /// A write refused for lack of space stalls the WAL: whatever it appended is
    /// cut from the file, the bytes stay buffered, new batches are refused, and
    /// the write is retried after [`STALL_RETRY`]. Any other failure (and any
    /// failed fsync, after which the kernel may have dropped the pages) poisons
    /// the engine: it is never retried.
    fn write_out<'a>(
        &'a self,
        mut ws: MutexGuard<'a, WriteState>,
        sync: bool,
    ) -> MutexGuard<'a, WriteState> {
        let Some(mut wal) = ws.wal.take() else {
            return ws;
        };
        ws.io_busy = true;
        let spare = std::mem::take(&mut ws.spare);
        let mut buf = std::mem::replace(&mut ws.buf, spare);
        let target = ws.last_lsn;
        drop(ws);
        let mut failure = None;
        if !buf.is_empty() {
            if let Err(e) = wal.write(&buf) {
                failure = Some(("write", e));
            }
        }
        if failure.is_none() && sync {
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = wal.sync() {
                failure = Some(("fsync", e));
            }
        }
        // A write refused for lack of space: cut what it may have appended, so
        // the retry appends whole records after the last good one.
        let cut = match &failure {
            Some(("write", e)) if is_no_space(e) => Some(self.fs().truncate(wal.path(), wal.len())),
            _ => None,
        };
        let path = wal.path().to_path_buf();
        let mut ws = lock(&self.ws);
        ws.wal = Some(wal);
        ws.io_busy = false;
        match (failure, cut) {
            (None, _) => {
                buf.clear();
                ws.spare = buf;
                ws.written_lsn = ws.written_lsn.max(target);
                if sync {
                    ws.synced_lsn = ws.synced_lsn.max(target);
                    self.durable_lsn.store(ws.synced_lsn, Ordering::Release);
                }
                if let Some((reason, _)) = ws.stalled.take() {
                    tracing::warn!(%reason, "disk space is back; the WAL is written again and writes resume");
                }
            }
            (Some((op, e)), Some(Ok(()))) => {
                // Keep the bytes in order: the failed ones, then any appended since.
                buf.extend_from_slice(&ws.buf);
                let mut newer = std::mem::replace(&mut ws.buf, buf);
                newer.clear();
                ws.spare = newer;
                let reason = format!("{op} {}: {e}", path.display());
                if ws.stalled.is_none() {
                    tracing::error!(%reason, "the disk is full; refusing writes until space is freed");
                }
                ws.stalled = Some((reason, Instant::now() + STALL_RETRY));
            }
            (Some((op, e)), cut) => {
                buf.clear();
                ws.spare = buf;
                let mut reason = format!("{op} {}: {e}", path.display());
                if let Some(Err(c)) = cut {
                    reason.push_str(&format!("; cutting the partial write failed: {c}"));
                }
                tracing::error!(%reason, "WAL I/O failed; refusing further writes");
                ws.poisoned = Some(reason);
            }
        }
        let synced = ws.synced_lsn;
        let poisoned = ws.poisoned.is_some();
        let mut waking = std::mem::take(&mut ws.waking);
        waking.extend(
            ws.waiters
                .extract_if(.., |(lsn, _)| poisoned || *lsn <= synced)
                .map(|(_, waker)| waker),
        );
        // A notification is a syscall: only for blocked threads and the idle WAL
        // writer (async waiters may remain, or a tick may wait for this I/O).
        if ws.blocked > 0 || ws.writer_idle {
            self.ws_cond.notify_all();
        }
        if waking.is_empty() {
            ws.waking = waking;
            return ws;
        }
        // Woken without the lock, so the tasks can take it at once.
        drop(ws);
        for waker in waking.drain(..) {
            waker.wake();
        }
        let mut ws = lock(&self.ws);
        ws.waking = waking;
        ws
    }

    /// Waits on `ws_cond` (at most `timeout`), counted in `blocked` so that
    /// `write_out` knows to notify.
    fn block<'a>(
        &'a self,
        mut ws: MutexGuard<'a, WriteState>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, WriteState> {
        ws.blocked += 1;
        let mut ws = match timeout {
            Some(t) => {
                self.ws_cond
                    .wait_timeout(ws, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.ws_cond.wait(ws).unwrap_or_else(|e| e.into_inner()),
        };
        ws.blocked -= 1;
        ws
    }

    fn poisoned(&self) -> Option<String> {
        lock(&self.ws).poisoned.clone()
    }

    /// Moves the active memtable into the frozen list behind a new WAL file.
    fn freeze(&self) -> Result<bool> {
        let mut ws = lock(&self.ws);
        loop {
            if let Some(reason) = &ws.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            if let Some((reason, _)) = &ws.stalled {
                return Err(Error::DiskFull {
                    reason: reason.clone(),
                });
            }
            if ws.io_busy {
                ws = self.block(ws, None);
            } else if ws.synced_lsn < ws.last_lsn || !ws.buf.is_empty() {
                ws = self.write_out(ws, true);
            } else {
                break;
            }
        }
        let Some(old_seq) = ws.wal.as_ref().map(|w| w.seq()) else {
            return Err(Error::Closed);
        };
        let wal_empty = ws.wal.as_ref().is_none_or(|w| w.is_empty());
        if wal_empty && read(&self.tables).active.is_empty() {
            return Ok(false);
        }
        let wal = WalFile::create(self.fs(), &self.dir.join(WAL_DIR), old_seq + 1)?;
        ws.wal = Some(wal);
        ws.wal_bytes = 0;
        ws.dedup
            .expire(self.opts.clock.now_ms(), self.opts.producer_idle_ms);
        let dedup = Arc::new(ws.dedup.encode());
        // The memtable moves and the version changes under one lock, so a query
        // sees every cell exactly once.
        let mut t = write(&self.tables);
        let frozen = Arc::new(Frozen {
            lsn: ws.last_lsn,
            wal_seq: old_seq,
            mem: Arc::new(std::mem::take(&mut t.active)),
            dedup,
            series_count: ws.logged_series,
        });
        t.version = t.version.changed(|v| v.frozen.push(frozen));
        Ok(true)
    }

    fn flush(&self) -> Result<FlushOutcome> {
        let _guard = lock(&self.flush_lock);
        self.freeze()?;
        let mut out = FlushOutcome::default();
        loop {
            let Some(frozen) = read(&self.tables).version.frozen.first().cloned() else {
                break;
            };
            let (segments, cells) = self.flush_frozen(&frozen)?;
            out.memtables += 1;
            out.segments += segments;
            out.cells += cells;
        }
        out.checkpoint_lsn = lock(&self.manifest).checkpoint_lsn;
        Ok(out)
    }

    fn allocate_segment_id(&self) -> u64 {
        let mut m = lock(&self.manifest);
        let id = m.next_segment_id;
        m.next_segment_id += 1;
        id
    }

    fn flush_frozen(&self, frozen: &Arc<Frozen>) -> Result<(usize, u64)> {
        let started = Instant::now();
        let fs = self.fs();
        let (old_dedup, dict_len, dict_count) = {
            let m = lock(&self.manifest);
            (m.dedup_lsn, m.dict_len, m.dict_count)
        };
        let mut written: Vec<PathBuf> = Vec::new();
        let files = self.write_checkpoint_files(frozen, dict_len, dict_count, &mut written);
        let (segs, cells, new_dict_len) = match files {
            Ok(x) => x,
            Err(e) => {
                for p in &written {
                    let _ = fs.remove_file(p);
                }
                return Err(e);
            }
        };
        {
            let mut m = lock(&self.manifest);
            let mut next = m.clone();
            next.checkpoint_lsn = frozen.lsn;
            next.dict_len = new_dict_len;
            next.dict_count = frozen.series_count.max(m.dict_count);
            next.dedup_lsn = frozen.lsn;
            next.segments.extend(segs.iter().map(|s| *s.meta()));
            // On failure the new manifest may be in place already (say the
            // rename happened and the directory fsync failed), so the segments
            // it names must stay. If the old manifest wins after all, the next
            // open removes them as orphans; a retry writes new ones.
            next.store(fs, &self.dir.join(MANIFEST_FILE))?;
            *m = next;
            self.install(|v| {
                v.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
                v.segments.extend(segs.iter().cloned());
            });
        }
        // The checkpoint covers these: remove them (failures only cost space).
        let wal_dir = self.dir.join(WAL_DIR);
        if let Ok(names) = fs.list(&wal_dir) {
            for name in names {
                if wal::parse_file_name(&name).is_some_and(|seq| seq <= frozen.wal_seq) {
                    let _ = fs.remove_file(&wal_dir.join(name));
                }
            }
        }
        if old_dedup != 0 && old_dedup != frozen.lsn {
            let _ = fs.remove_file(&self.dir.join(dedup_file_name(old_dedup)));
        }
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .flush_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::info!(
            lsn = frozen.lsn,
            segments = segs.len(),
            cells,
            ms = started.elapsed().as_millis() as u64,
            "flushed memtable"
        );
        Ok((segs.len(), cells))
    }

    /// Swaps in a new version built from the current one; readers holding the
    /// old one keep it until they finish.
    fn install(&self, change: impl FnOnce(&mut Version)) {
        let mut t = write(&self.tables);
        t.version = t.version.changed(change);
    }

    /// Writes what a checkpoint needs before its manifest: one segment per
    /// non-empty tier, the new dictionary records and the dedup checkpoint, each
    /// fsynced. Segment files are listed in `written` so that a failure can
    /// remove them. Returns the segments, their cells and the new dictionary length.
    fn write_checkpoint_files(
        &self,
        frozen: &Frozen,
        dict_len: u64,
        dict_count: u32,
        written: &mut Vec<PathBuf>,
    ) -> Result<(Vec<Arc<Segment>>, u64, u64)> {
        let fs = self.fs();
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        let mut segs = Vec::new();
        let mut cells = 0;
        let now = self.opts.clock.now_ms();
        for tier in Tier::ALL {
            let rows = frozen.mem.rows(tier);
            if rows.is_empty() {
                continue;
            }
            let id = self.allocate_segment_id();
            let path = seg_dir.join(segment::file_name(id));
            written.push(path.clone());
            let cold = crate::compaction::cold_before(tier, now);
            let mut w = SegmentWriter::create(fs, &path, id, tier, cold)?;
            for r in rows {
                w.push(r)?;
            }
            cells += w.cells();
            w.finish()?;
            segs.push(Segment::open(fs, &path)?);
        }
        fs.sync_dir(&seg_dir)
            .map_err(|e| Error::io("sync directory", &seg_dir, e))?;

        let dict_path = self.dir.join(DICT_FILE);
        let mut new_dict_len = dict_len;
        if frozen.series_count > dict_count {
            let mut bytes = Vec::new();
            if dict_len == 0 {
                bytes.extend_from_slice(&dict::header());
            }
            dict::encode_records(
                &read(&self.dict),
                dict_count,
                frozen.series_count,
                &mut bytes,
            );
            let res = if dict_len == 0 {
                // A first dictionary replaces whatever an interrupted flush left.
                (|| {
                    if fs.exists(&dict_path) {
                        fs.remove_file(&dict_path)?;
                    }
                    let mut f = fs.create(&dict_path)?;
                    f.write_all(&bytes)?;
                    f.sync()?;
                    fs.sync_dir(&self.dir)
                })()
            } else {
                // Cut bytes an interrupted flush appended past the committed length.
                (|| {
                    if fs.len(&dict_path)? != dict_len {
                        fs.truncate(&dict_path, dict_len)?;
                    }
                    let mut f = fs.append(&dict_path)?;
                    f.write_all(&bytes)?;
                    f.sync()
                })()
            };
            res.map_err(|e| Error::io("write series dictionary", &dict_path, e))?;
            new_dict_len += bytes.len() as u64;
        }

        // Not listed in `written`: an earlier attempt whose manifest write failed
        // late may have published a manifest naming this file. Left over, it is
        // removed at the next open.
        let dedup_path = self.dir.join(dedup_file_name(frozen.lsn));
        write_atomic(fs, &dedup_path, &frozen.dedup)
            .map_err(|e| Error::io("write dedup checkpoint", &dedup_path, e))?;
        Ok((segs, cells, new_dict_len))
    }

    fn compact_once(&self) -> Result<Option<CompactOutcome>> {
        let _guard = lock(&self.compact_lock);
        let started = Instant::now();
        let segments = read(&self.tables).version.segments.clone();
        let metas: Vec<SegmentMeta> = segments.iter().map(|s| *s.meta()).collect();
        let now = self.opts.clock.now_ms();
        let Some(task) = choose(&metas, &self.opts.retention, &self.opts.compaction, now) else {
            return Ok(None);
        };
        let inputs: Vec<Arc<Segment>> = segments
            .into_iter()
            .filter(|s| task.inputs.contains(&s.meta().id))
            .collect();
        let out = self.run_compaction(&task, &inputs)?;
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .compaction_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::info!(tier = %task.tier, inputs = inputs.len(), cells_in = out.cells_in, cells_out = out.cells_out, ms = started.elapsed().as_millis() as u64, "compacted segments");
        Ok(Some(out))
    }

    fn run_compaction(
        &self,
        task: &CompactionTask,
        inputs: &[Arc<Segment>],
    ) -> Result<CompactOutcome> {
        let fs = self.fs();
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        let id = self.allocate_segment_id();
        let path = seg_dir.join(segment::file_name(id));
        let written = (|| -> Result<Option<Arc<Segment>>> {
            let mut w = SegmentWriter::create(fs, &path, id, task.tier, task.cold_before_bucket)?;
            for row in MergeIter::new(inputs, task.keep_from_bucket) {
                w.push(row?)?;
            }
            let empty = w.cells() == 0;
            w.finish()?;
            if empty {
                fs.remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                return Ok(None);
            }
            fs.sync_dir(&seg_dir)
                .map_err(|e| Error::io("sync directory", &seg_dir, e))?;
            Ok(Some(Segment::open(fs, &path)?))
        })();
        let output = match written {
            Ok(o) => o,
            Err(e) => {
                let _ = fs.remove_file(&path);
                return Err(e);
            }
        };
        let ids: Vec<u64> = inputs.iter().map(|s| s.meta().id).collect();
        {
            let mut m = lock(&self.manifest);
            let mut next = m.clone();
            next.segments.retain(|s| !ids.contains(&s.id));
            next.segments.extend(output.iter().map(|s| *s.meta()));
            // On failure the new manifest may be in place already: keep its
            // output segment (an orphan, removed at the next open, if not).
            next.store(fs, &self.dir.join(MANIFEST_FILE))?;
            *m = next;
            self.install(|v| {
                v.segments.retain(|s| !ids.contains(&s.meta().id));
                v.segments.extend(output.iter().cloned());
            });
        }
        for s in inputs {
            let _ = fs.remove_file(s.path());
        }
        Ok(CompactOutcome {
            tasks: 1,
            segments_in: inputs.len(),
            cells_in: inputs.iter().map(|s| s.meta().cells).sum(),
            cells_out: output.map_or(0, |s| s.meta().cells),
        })
    }

    fn snapshot(&self, target: &Path) -> Result<Manifest> {
        fn io<'p>(op: &'static str, p: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
            move |e| Error::io(op, p, e)
        }
        let fs = self.fs();
        if fs.exists(target)
            && !fs
                .list(target)
                .map_err(|e| Error::io("list", target, e))?
                .is_empty()
        {
            return Err(Error::InvalidOption(format!(
                "snapshot target {} is not empty",
                target.display()
            )));
        }
        self.flush()?;
        let (manifest, segments, dict_bytes, dedup_bytes) = {
            let _flush = lock(&self.flush_lock);
            let m = lock(&self.manifest).clone();
            let segments = read(&self.tables).version.segments.clone();
            let dict_path = self.dir.join(DICT_FILE);
            let dict_bytes = if m.dict_len > 0 {
                let mut b = fs
                    .read(&dict_path)
                    .map_err(|e| Error::io("read", &dict_path, e))?;
                b.truncate(m.dict_len as usize);
                b
            } else {
                Vec::new()
            };
            let dedup_bytes = if m.dedup_lsn > 0 {
                let p = self.dir.join(dedup_file_name(m.dedup_lsn));
                Some(fs.read(&p).map_err(|e| Error::io("read", &p, e))?)
            } else {
                None
            };
            (m, segments, dict_bytes, dedup_bytes)
        };
        for sub in [SEGMENTS_DIR, WAL_DIR] {
            let p = target.join(sub);
            fs.create_dir_all(&p).map_err(io("create directory", &p))?;
        }
        let write_file = |path: &Path, bytes: &[u8]| -> Result<()> {
            let mut f = fs.create(path).map_err(io("create", path))?;
            f.write_all(bytes)
                .and_then(|_| f.sync())
                .map_err(io("write", path))
        };
        let seg_dir = target.join(SEGMENTS_DIR);
        for s in segments
            .iter()
            .filter(|s| manifest.segments.iter().any(|m| m.id == s.meta().id))
        {
            write_file(&seg_dir.join(segment::file_name(s.meta().id)), s.bytes())?;
        }
        fs.sync_dir(&seg_dir)
            .map_err(io("sync directory", &seg_dir))?;
        if !dict_bytes.is_empty() {
            write_file(&target.join(DICT_FILE), &dict_bytes)?;
        }
        if let Some(b) = dedup_bytes {
            write_file(&target.join(dedup_file_name(manifest.dedup_lsn)), &b)?;
        }
        write_file(&target.join(FORMAT_FILE), format_file_contents().as_bytes())?;
        let wal_dir = target.join(WAL_DIR);
        fs.sync_dir(&wal_dir)
            .map_err(io("sync directory", &wal_dir))?;
        manifest.store(fs, &target.join(MANIFEST_FILE))?;
        fs.sync_dir(parent(target))
            .map_err(io("sync directory", parent(target)))?;
        Ok(manifest)
    }

    /// Calls `f(index into ids, tier, bucket, cell)` for every stored cell of the
    /// selected series inside the plan's pieces: memtables first, then segments,
    /// reading only the blocks that overlap.
    fn scan(
        &self,
        ids: &[u32],
        plan: &Plan,
        f: &mut dyn FnMut(usize, Tier, i64, &Cell),
    ) -> Result<()> {
        let version = {
            let t = read(&self.tables);
            for p in &plan.pieces {
                for (i, id) in ids.iter().enumerate() {
                    t.active
                        .scan(*id, p.tier, p.from_bucket, p.to_bucket, &mut |b, c| {
                            f(i, p.tier, b, c)
                        });
                }
            }
            Arc::clone(&t.version)
        };
        for fr in &version.frozen {
            for p in &plan.pieces {
                for (i, id) in ids.iter().enumerate() {
                    fr.mem
                        .scan(*id, p.tier, p.from_bucket, p.to_bucket, &mut |b, c| {
                            f(i, p.tier, b, c)
                        });
                }
            }
        }
        let mut cache = segment::BlockScratch::with_shared(Arc::clone(&self.blocks));
        for seg in &version.segments {
            let m = seg.meta();
            for p in plan.pieces.iter().filter(|p| {
                p.tier == m.tier && p.from_bucket <= m.max_bucket && p.to_bucket > m.min_bucket
            }) {
                for (i, id) in ids.iter().enumerate() {
                    seg.scan_series(*id, p.from_bucket, p.to_bucket, &mut cache, &mut |b, c| {
                        f(i, p.tier, b, c)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Adds the sum and count of the selected series' stored cells inside the
    /// plan's pieces to `sums`: the read behind totals and top-k, which need no
    /// more than sums and counts. Each source (memtable, frozen memtable,
    /// segment) is read per piece either by looking each selected series up or
    /// by one sequential sweep, as `access` and the cost model decide.
    fn scan_sums(&self, plan: &Plan, access: Access, sums: &mut Sums) -> Result<()> {
        let selected = sums.ids().len();
        if selected == 0 {
            return Ok(());
        }
        let mem_sums = |mem: &Memtable, sums: &mut Sums| {
            let sweep = access.sweeps(sums, MEMTABLE_LOOKUP_ENTRIES, || mem.sweep_entries());
            if sweep {
                sums.prepare_sweep();
            }
            for p in &plan.pieces {
                if sweep {
                    mem.sweep_sums(p.tier, p.from_bucket, p.to_bucket, sums);
                    continue;
                }
                for i in 0..selected {
                    let id = sums.ids()[i];
                    let (mut sum, mut count) = (0i64, 0u64);
                    mem.scan(id, p.tier, p.from_bucket, p.to_bucket, &mut |_, c| {
                        sum = sum.wrapping_add(c.sum);
                        count = count.wrapping_add(c.count);
                    });
                    sums.add_slot(i, sum, count);
                }
            }
        };
        let version = {
            let t = read(&self.tables);
            mem_sums(&t.active, sums);
            Arc::clone(&t.version)
        };
        for fr in &version.frozen {
            mem_sums(&fr.mem, sums);
        }
        let mut cache = segment::BlockScratch::with_shared(Arc::clone(&self.blocks));
        for seg in &version.segments {
            let m = seg.meta();
            for p in plan.pieces.iter().filter(|p| {
                p.tier == m.tier && p.from_bucket <= m.max_bucket && p.to_bucket > m.min_bucket
            }) {
                let cells = || seg.sweep_cells(p.from_bucket, p.to_bucket, sums);
                if access.sweeps(sums, SEGMENT_LOOKUP_CELLS, cells) {
                    sums.prepare_sweep();
                    seg.sweep_sums(p.from_bucket, p.to_bucket, &mut cache, sums)?;
                    continue;
                }
                for i in 0..selected {
                    let id = sums.ids()[i];
                    let (sum, count) =
                        seg.sum_series(id, p.from_bucket, p.to_bucket, &mut cache)?;
                    sums.add_slot(i, sum, count);
                }
            }
        }
        Ok(())
    }

    fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        q.selector.validate()?;
        let now = self.opts.clock.now_ms();
        let step = resolve_step(q, &self.opts.retention, now)?;
        let grid_from = crate::query::clamp_time(q.from).div_euclid(step) * step;
        let p = plan(grid_from, q.to, Some(step), &self.opts.retention, now);
        let start = p.from.div_euclid(step) * step;
        let points = ((p.to - start + step - 1) / step).max(0) as usize;
        let r = {
            let dict = read(&self.dict);
            resolve_groups(&dict, &q.selector, q.selector.group_by())
        };
        if r.groups.len().saturating_mul(points) > 10_000_000 {
            return Err(Error::InvalidQuery(format!("{} groups x {points} points is too large an answer; narrow the selector or widen the step", r.groups.len())));
        }
        let mut cells: Vec<Vec<Option<Cell>>> = vec![vec![None; points]; r.groups.len()];
        self.scan(&r.ids, &p, &mut |i, tier, b, c| {
            let k = (tier.start_of(b) - start).div_euclid(step);
            if let Some(slot) = cells[r.group_of[i]].get_mut(k as usize) {
                match slot {
                    Some(acc) => acc.merge(c),
                    None => *slot = Some(*c),
                }
            }
        })?;
        let secs = step as f64 / 1000.0;
        let mut groups: Vec<Group> = r
            .groups
            .into_iter()
            .zip(cells)
            .map(|(labels, cells)| {
                let points = cells
                    .iter()
                    .enumerate()
                    .filter_map(|(k, c)| {
                        let t = start + k as i64 * step;
                        let v = match (q.agg, c) {
                            (Agg::Sum, c) => Value::Int(c.map_or(0, |c| c.sum)),
                            (Agg::Count, c) => Value::Int(c.map_or(0, |c| c.count as i64)),
                            (Agg::Rate, c) => Value::Float(c.map_or(0, |c| c.sum) as f64 / secs),
                            (_, None) => return None,
                            (Agg::Avg, Some(c)) => Value::Float(c.avg()?),
                            (Agg::Min, Some(c)) => Value::Int(c.min),
                            (Agg::Max, Some(c)) => Value::Int(c.max),
                        };
                        Some((t, v))
                    })
                    .collect();
                Group { labels, points }
            })
            .collect();
        groups.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(RangeResult {
            step,
            groups,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: start,
                to: p.to,
                series: r.ids.len(),
            },
        })
    }

    fn total(
        &self,
        selector: &Selector,
        from: i64,
        to: i64,
        access: Access,
    ) -> Result<TotalResult> {
        selector.validate()?;
        if from >= to {
            return Err(Error::InvalidQuery(format!(
                "empty time range: from {from} is not before to {to}"
            )));
        }
        let now = self.opts.clock.now_ms();
        let p = plan(from, to, None, &self.opts.retention, now);
        let mut sums = Sums::new(resolve_ids(&read(&self.dict), selector));
        self.scan_sums(&p, access, &mut sums)?;
        let (sum, count) = sums.total();
        Ok(TotalResult {
            sum,
            count,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: p.from,
                to: p.to,
                series: sums.ids().len(),
            },
        })
    }

    fn top(&self, q: &TopQuery, access: Access) -> Result<TopResult> {
        q.selector.validate()?;
        if let Some(l) = &q.by_label {
            crate::series::validate_label_name(l)
                .map_err(|e| Error::InvalidQuery(e.to_string()))?;
        }
        if q.from >= q.to {
            return Err(Error::InvalidQuery(format!(
                "empty time range: from {} is not before to {}",
                q.from, q.to
            )));
        }
        let now = self.opts.clock.now_ms();
        let p = plan(q.from, q.to, None, &self.opts.retention, now);
        let by: Vec<String> = q.by_label.iter().cloned().collect();
        let (r, names) = {
            let dict = read(&self.dict);
            let r = resolve_groups(&dict, &q.selector, &by);
            let names: Vec<String> = if by.is_empty() {
                Vec::new()
            } else {
                r.groups
                    .iter()
                    .map(|g| g.first().map(|(_, v)| v.clone()).unwrap_or_default())
                    .collect()
            };
            (r, names)
        };
        let Resolved {
            ids,
            group_of,
            groups,
        } = r;
        let mut sums = Sums::new(ids);
        self.scan_sums(&p, access, &mut sums)?;
        let mut entries: Vec<(i64, u64, usize)> = if by.is_empty() {
            sums.sums()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.1 > 0)
                .map(|(i, s)| (s.0, s.1, i))
                .collect()
        } else {
            let mut g = vec![(0i64, 0u64); groups.len()];
            for (i, s) in sums.sums().iter().enumerate() {
                let e = &mut g[group_of[i]];
                e.0 = e.0.wrapping_add(s.0);
                e.1 = e.1.wrapping_add(s.1);
            }
            g.into_iter()
                .enumerate()
                .filter(|(_, s)| s.1 > 0)
                .map(|(i, s)| (s.0, s.1, i))
                .collect()
        };
        let dict = read(&self.dict);
        let name_of = |i: usize| -> &str {
            if by.is_empty() {
                sums.ids()
                    .get(i)
                    .and_then(|id| dict.key(*id))
                    .map_or("", |k| k.as_str())
            } else {
                names[i].as_str()
            }
        };
        // Largest sums first, ties by name: the same order decides which
        // entries make the cut and how they are listed.
        let order = |a: &(i64, u64, usize), b: &(i64, u64, usize)| {
            b.0.cmp(&a.0).then_with(|| name_of(a.2).cmp(name_of(b.2)))
        };
        let n = q.n.min(entries.len());
        if n < entries.len() && n > 0 {
            // The n-th largest sum, found without comparing names: entries
            // above it make the cut, entries below it do not, and only those
            // equal to it compete by name.
            entries.select_nth_unstable_by(n - 1, |a, b| b.0.cmp(&a.0));
            let cut = entries[n - 1].0;
            entries.retain(|e| e.0 >= cut);
            if n < entries.len() {
                entries.select_nth_unstable_by(n - 1, order);
            }
        }
        entries.truncate(n);
        entries.sort_by(order);
        let entries: Vec<TopEntry> = entries
            .into_iter()
            .map(|(sum, count, i)| TopEntry {
                name: name_of(i).to_string(),
                sum,
                count,
            })
            .collect();
        Ok(TopResult {
            entries,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: p.from,
                to: p.to,
                series: sums.ids().len(),
            },
        })
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        {
            let ws = lock(&self.ws);
            s.wal_bytes = ws.wal.as_ref().map_or(0, |w| w.len()) + ws.buf.len() as u64;
            s.last_lsn = ws.last_lsn;
            s.synced_lsn = ws.synced_lsn;
            s.dedup_ids = ws.dedup.event_ids() as u64;
            s.producers = ws.dedup.producers() as u64;
            s.dedup_bytes = ws.dedup.approx_bytes() as u64;
            s.poisoned = ws.poisoned.is_some();
            s.disk_full = ws.stalled.is_some();
        }
        {
            let t = read(&self.tables);
            s.memtable_cells = t.active.cells() as u64
                + t.version
                    .frozen
                    .iter()
                    .map(|f| f.mem.cells() as u64)
                    .sum::<u64>();
            s.memtable_bytes = t.active.approx_bytes() as u64
                + t.version
                    .frozen
                    .iter()
                    .map(|f| f.mem.approx_bytes() as u64)
                    .sum::<u64>();
            for seg in &t.version.segments {
                let m = seg.meta();
                let i = m.tier.index();
                s.segments[i] += 1;
                s.segment_cells[i] += m.cells;
                s.segment_bytes[i] += m.bytes;
            }
        }
        s.series = u64::from(read(&self.dict).len());
        s.checkpoint_lsn = lock(&self.manifest).checkpoint_lsn;
        s.events_applied = self.counters.events.load(Ordering::Relaxed);
        s.batches_applied = self.counters.batches.load(Ordering::Relaxed);
        s.duplicates_skipped = self.counters.duplicates.load(Ordering::Relaxed);
        s.wal_syncs = self.counters.syncs.load(Ordering::Relaxed);
        s.flushes = self.counters.flushes.load(Ordering::Relaxed);
        s.compactions = self.counters.compactions.load(Ordering::Relaxed);
        s.flush_micros = self.counters.flush_micros.load(Ordering::Relaxed);
        s.compaction_micros = self.counters.compaction_micros.load(Ordering::Relaxed);
        s
    }

    fn needs_flush(&self) -> bool {
        let wal_bytes = lock(&self.ws).wal_bytes;
        let t = read(&self.tables);
        !t.version.frozen.is_empty()
            || t.active.approx_bytes() >= self.opts.memtable_bytes
            || wal_bytes >= self.opts.wal_flush_bytes
    }

    fn shutting_down(&self) -> bool {
        *lock(&self.shutdown)
    }

    /// Background flushes and compactions until shutdown.
    fn maintenance_loop(&self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            {
                let stop = lock(&self.shutdown);
                if *stop {
                    return;
                }
                let (stop, _) = self
                    .bg_cond
                    .wait_timeout(stop, backoff)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
            }
            if self.poisoned().is_some() {
                continue;
            }
            let mut failed = false;
            if self.needs_flush() {
                if let Err(e) = self.flush() {
                    tracing::error!(error = %e, "background flush failed; will retry");
                    failed = true;
                }
            }
            while !failed && !self.shutting_down() && !self.needs_flush() {
                match self.compact_once() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "background compaction failed; will retry");
                        failed = true;
                    }
                }
            }
            backoff = if failed {
                (backoff * 2).min(Duration::from_secs(10))
            } else {
                Duration::from_millis(250)
            };
        }
    }

    /// The WAL writer thread. Under `always` it runs the group commit for async
    /// waiters ([`Durable`]); under `interval` it fsyncs on the timer; under
    /// `never` it writes the buffer on the timer. Under every policy it retries a
    /// write stalled by a full disk.
    fn wal_loop(&self) {
        let (every, sync) = match self.opts.fsync {
            FsyncPolicy::Always => (None, true),
            FsyncPolicy::Interval(ms) => (Some(Duration::from_millis(ms)), true),
            FsyncPolicy::Never => (Some(Duration::from_millis(NEVER_WRITE_INTERVAL_MS)), false),
        };
        let mut next_tick = every.map(|d| Instant::now() + d);
        let mut ws = lock(&self.ws);
        while !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let tick_due = next_tick.is_some_and(|t| now >= t);
            let retry_at = ws.stalled.as_ref().map(|(_, at)| *at);
            let stall_wait = retry_at.filter(|at| now < *at);
            let behind = if sync {
                ws.synced_lsn < ws.last_lsn
            } else {
                !ws.buf.is_empty()
            };
            let wanted = !ws.waiters.is_empty() || tick_due || retry_at.is_some();
            let blocked = ws.io_busy || stall_wait.is_some() || ws.poisoned.is_some();
            if tick_due && (!behind || !blocked) {
                // The tick is served now (or has nothing to do); a tick that
                // finds another thread's I/O in progress waits for it instead.
                next_tick = every.map(|d| now + d);
            }
            if behind && wanted && !blocked {
                ws = self.write_out(ws, sync);
                continue;
            }
            // A due tick that could not be served waits for a notification (the
            // end of the I/O in progress) or the stall's retry, not a timer.
            let tick_at = next_tick.filter(|t| *t > now);
            let wake_at = match (tick_at, stall_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            ws.writer_idle = true;
            ws = match wake_at {
                Some(at) => {
                    self.ws_cond
                        .wait_timeout(ws, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.ws_cond.wait(ws).unwrap_or_else(|e| e.into_inner()),
            };
            ws.writer_idle = false;
        }
        self.has_writer.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod sweep_tests;
