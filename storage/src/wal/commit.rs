//! Group commit: where an accepted batch becomes durable.
//!
//! The write path appends each batch's record to an in-memory WAL buffer under
//! the engine's write lock (`LogState`) and gets an LSN. This module turns
//! buffered LSNs into written and fsynced ones: whichever thread finds no I/O in
//! progress writes the whole buffer with one `write` (and one fsync), without
//! holding the lock, so concurrent writers share a single fsync.
//!
//! The durability contract, per [`FsyncPolicy`]:
//! - `always`: [`Engine::wait`](crate::Engine::wait) (and the [`Durable`]
//!   future) returns only once the batch's record is fsynced. An acknowledged
//!   batch survives power loss.
//! - `interval:<ms>`: a batch is acknowledged once buffered; the WAL writer
//!   thread writes and fsyncs every interval, so power loss or a crash loses at
//!   most the last interval.
//! - `never`: a batch is acknowledged once buffered; the WAL writer thread hands
//!   the buffer to the OS every [`NEVER_WRITE_INTERVAL_MS`] and never fsyncs, so a
//!   process crash loses at most that interval and power loss whatever the OS
//!   had not written.
//!
//! Under every policy a write refused for lack of space stalls the WAL (the bytes
//! stay buffered, new batches are refused with [`Error::DiskFull`], the write is
//! retried); any other failed write, and every failed fsync, poisons the engine:
//! writes are refused with [`Error::Poisoned`] until a restart recovers from the
//! WAL. A failed fsync is never retried, since the kernel may have dropped the
//! pages it could not write.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::engine::ApplyOutcome;
use crate::error::{is_no_space, Error, Result};
use crate::fs::FileSystem;
use crate::options::{FsyncPolicy, NEVER_WRITE_INTERVAL_MS};
use crate::wal::WalFile;

/// WAL buffer size past which a writer pushes it to the OS itself.
pub(crate) const WAL_BUFFER_WRITE_BYTES: usize = 1 << 20;
/// How long a WAL write stalled by a full disk waits before it is tried again.
const STALL_RETRY: Duration = Duration::from_millis(200);

/// The WAL file, its buffer and positions: the part of the engine's write state
/// that group commit owns. Kept under the engine's write lock with the rest of
/// that state, so a batch is logged and applied in one critical section.
#[derive(Debug)]
pub(crate) struct LogState {
    /// The open WAL file; `None` while a thread writes it without the lock.
    pub(crate) wal: Option<WalFile>,
    /// Encoded records not yet written.
    pub(crate) buf: Vec<u8>,
    spare: Vec<u8>,
    /// LSN the next batch gets.
    pub(crate) next_lsn: u64,
    /// Highest LSN issued.
    pub(crate) last_lsn: u64,
    written_lsn: u64,
    /// Highest LSN known fsynced.
    pub(crate) synced_lsn: u64,
    /// True while a thread writes the WAL without the lock.
    pub(crate) io_busy: bool,
    /// Why writes are refused for good (until a restart), if they are.
    pub(crate) poisoned: Option<String>,
    /// Set while the disk is full: the unwritten WAL bytes stay in `buf`, new
    /// batches are refused, and the write is retried after the instant.
    pub(crate) stalled: Option<(String, Instant)>,
    /// Async waiters for durability (`fsync = always`): LSN and waker.
    waiters: Vec<(u64, Waker)>,
    /// Wakers being woken, kept to reuse the allocation.
    waking: Vec<Waker>,
    /// True while the WAL writer thread sleeps, so a waiter knows to wake it.
    writer_idle: bool,
    /// Threads blocked in [`GroupCommit::block`], which `write_out` must wake.
    blocked: u32,
    /// WAL bytes logged since the last rotation.
    pub(crate) wal_bytes: u64,
}

impl LogState {
    /// The state of a freshly opened WAL file after recovery up to `last_lsn`.
    pub(crate) fn new(wal: WalFile, last_lsn: u64) -> Self {
        LogState {
            wal: Some(wal),
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
            wal_bytes: 0,
        }
    }

    /// Fails with [`Error::Poisoned`] once writes are refused for good.
    pub(crate) fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Fails when a new batch cannot be accepted: poisoned, or stalled by a full disk.
    pub(crate) fn check_accepting(&self) -> Result<()> {
        self.check_poisoned()?;
        match &self.stalled {
            Some((reason, _)) => Err(Error::DiskFull {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// A batch that is logged and applied but not yet known durable; see
/// [`Engine::submit`](crate::Engine::submit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a submitted batch must be waited for before it is acknowledged"]
pub struct Pending {
    /// The LSN that must be durable before the batch is acknowledged (0: none).
    pub(crate) wait_lsn: u64,
    pub(crate) outcome: ApplyOutcome,
}

impl Pending {
    /// What the batch did; final once [`Engine::wait`](crate::Engine::wait) succeeds.
    pub fn outcome(&self) -> ApplyOutcome {
        self.outcome
    }
}

/// Resolves to a submitted batch's outcome once it is durable under the fsync
/// policy; see [`Engine::durable`](crate::Engine::durable). Dropping it early
/// changes nothing: the batch stays applied and is made durable anyway.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Durable {
    commit: Arc<dyn PollDurable>,
    pending: Pending,
}

impl Durable {
    pub(crate) fn new(commit: Arc<dyn PollDurable>, pending: Pending) -> Self {
        Durable { commit, pending }
    }
}

impl std::future::Future for Durable {
    type Output = Result<ApplyOutcome>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.commit.poll_durable(self.pending, cx)
    }
}

/// What [`Durable`] needs of a [`GroupCommit`], without its state type.
pub(crate) trait PollDurable: fmt::Debug + Send + Sync {
    fn poll_durable(&self, pending: Pending, cx: &mut Context<'_>) -> Poll<Result<ApplyOutcome>>;
}

/// Group commit over a WAL whose [`LogState`] lives inside the engine's write
/// state `S`: one mutex for both, a condition variable for threads waiting on
/// I/O, and the WAL writer thread's loop.
#[derive(Debug)]
pub(crate) struct GroupCommit<S> {
    state: Mutex<S>,
    cond: Condvar,
    /// `synced_lsn`, readable without the lock: the fast path of [`Durable`].
    durable_lsn: AtomicU64,
    /// True while a WAL writer thread serves [`Durable`] waiters.
    has_writer: AtomicBool,
    /// Set by `close`: the WAL writer thread stops.
    stopping: AtomicBool,
    /// Fsyncs of the WAL since open.
    syncs: AtomicU64,
    policy: FsyncPolicy,
    fs: Arc<dyn FileSystem>,
}

impl<S: AsMut<LogState>> GroupCommit<S> {
    /// Group commit over `state`, whose log was recovered up to `last_lsn`.
    pub(crate) fn new(
        state: S,
        last_lsn: u64,
        policy: FsyncPolicy,
        fs: Arc<dyn FileSystem>,
    ) -> Self {
        GroupCommit {
            state: Mutex::new(state),
            cond: Condvar::new(),
            durable_lsn: AtomicU64::new(last_lsn),
            has_writer: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            policy,
            fs,
        }
    }

    /// Takes the engine's write lock.
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fsyncs of the WAL since open.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Waits until a submitted batch is durable under the fsync policy.
    pub(crate) fn wait(&self, pending: Pending) -> Result<ApplyOutcome> {
        if self.policy == FsyncPolicy::Always && pending.wait_lsn > 0 {
            let ws = self.lock();
            self.wait_durable(ws, pending.wait_lsn, true, true)?;
        }
        Ok(pending.outcome)
    }

    /// Writes and fsyncs everything logged so far.
    pub(crate) fn sync_all(&self) -> Result<()> {
        let mut ws = self.lock();
        let lsn = ws.as_mut().last_lsn;
        self.wait_durable(ws, lsn, true, false)
    }

    /// Blocks until `lsn` is written (and fsynced when `sync`), leading a group
    /// write when no other thread is doing I/O. While the disk is full it waits
    /// for space if `through_stall` (a batch already accepted, whose outcome must
    /// not become ambiguous), and otherwise fails with [`Error::DiskFull`].
    pub(crate) fn wait_durable<'a>(
        &'a self,
        mut ws: MutexGuard<'a, S>,
        lsn: u64,
        sync: bool,
        through_stall: bool,
    ) -> Result<()> {
        loop {
            let log = ws.as_mut();
            log.check_poisoned()?;
            let done = if sync {
                log.synced_lsn
            } else {
                log.written_lsn
            };
            if done >= lsn {
                return Ok(());
            }
            if log.io_busy {
                ws = self.block(ws, None);
                continue;
            }
            if let Some((reason, retry_at)) = &log.stalled {
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
    pub(crate) fn write_out<'a>(
        &'a self,
        mut ws: MutexGuard<'a, S>,
        sync: bool,
    ) -> MutexGuard<'a, S> {
        let log = ws.as_mut();
        let Some(mut wal) = log.wal.take() else {
            return ws;
        };
        log.io_busy = true;
        let spare = std::mem::take(&mut log.spare);
        let mut buf = std::mem::replace(&mut log.buf, spare);
        let target = log.last_lsn;
        drop(ws);
        let mut failure = None;
        if !buf.is_empty() {
            if let Err(e) = wal.write(&buf) {
                failure = Some(("write", e));
            }
        }
        if failure.is_none() && sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = wal.sync() {
                failure = Some(("fsync", e));
            }
        }
        // A write refused for lack of space: cut what it may have appended, so
        // the retry appends whole records after the last good one.
        let cut = match &failure {
            Some(("write", e)) if is_no_space(e) => Some(self.fs.truncate(wal.path(), wal.len())),
            _ => None,
        };
        let path = wal.path().to_path_buf();
        let mut ws = self.lock();
        let log = ws.as_mut();
        log.wal = Some(wal);
        log.io_busy = false;
        match (failure, cut) {
            (None, _) => {
                buf.clear();
                log.spare = buf;
                log.written_lsn = log.written_lsn.max(target);
                if sync {
                    log.synced_lsn = log.synced_lsn.max(target);
                    self.durable_lsn.store(log.synced_lsn, Ordering::Release);
                }
                if let Some((reason, _)) = log.stalled.take() {
                    tracing::warn!(%reason, "disk space is back; the WAL is written again and writes resume");
                }
            }
            (Some((op, e)), Some(Ok(()))) => {
                // Keep the bytes in order: the failed ones, then any appended since.
                buf.extend_from_slice(&log.buf);
                let mut newer = std::mem::replace(&mut log.buf, buf);
                newer.clear();
                log.spare = newer;
                let reason = format!("{op} {}: {e}", path.display());
                if log.stalled.is_none() {
                    tracing::error!(%reason, "the disk is full; refusing writes until space is freed");
                }
                log.stalled = Some((reason, Instant::now() + STALL_RETRY));
            }
            (Some((op, e)), cut) => {
                buf.clear();
                log.spare = buf;
                let mut reason = format!("{op} {}: {e}", path.display());
                if let Some(Err(c)) = cut {
                    reason.push_str(&format!("; cutting the partial write failed: {c}"));
                }
                tracing::error!(%reason, "WAL I/O failed; refusing further writes");
                log.poisoned = Some(reason);
            }
        }
        self.wake_waiters(ws)
    }

    /// Wakes the async waiters whose LSN is durable (all of them once poisoned)
    /// and the threads blocked on the condition variable.
    fn wake_waiters<'a>(&'a self, mut ws: MutexGuard<'a, S>) -> MutexGuard<'a, S> {
        let log = ws.as_mut();
        let synced = log.synced_lsn;
        let poisoned = log.poisoned.is_some();
        let mut waking = std::mem::take(&mut log.waking);
        waking.extend(
            log.waiters
                .extract_if(.., |(lsn, _)| poisoned || *lsn <= synced)
                .map(|(_, waker)| waker),
        );
        // A notification is a syscall: only for blocked threads and the idle WAL
        // writer (async waiters may remain, or a tick may wait for this I/O).
        if log.blocked > 0 || log.writer_idle {
            self.cond.notify_all();
        }
        if waking.is_empty() {
            log.waking = waking;
            return ws;
        }
        // Woken without the lock, so the tasks can take it at once.
        drop(ws);
        for waker in waking.drain(..) {
            waker.wake();
        }
        let mut ws = self.lock();
        ws.as_mut().waking = waking;
        ws
    }

    /// Waits on the condition variable (at most `timeout`), counted in
    /// `blocked` so that `write_out` knows to notify.
    pub(crate) fn block<'a>(
        &'a self,
        mut ws: MutexGuard<'a, S>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, S> {
        ws.as_mut().blocked += 1;
        let mut ws = match timeout {
            Some(t) => {
                self.cond
                    .wait_timeout(ws, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.cond.wait(ws).unwrap_or_else(|e| e.into_inner()),
        };
        ws.as_mut().blocked -= 1;
        ws
    }

    /// Refuses all further writes, for `reason`: used when an fsync outside the
    /// WAL (a flush's or compaction's) fails. Returns the error to report.
    pub(crate) fn poison(&self, reason: String) -> Error {
        let mut ws = self.lock();
        let log = ws.as_mut();
        let reason = match &log.poisoned {
            Some(first) => first.clone(),
            None => {
                tracing::error!(%reason, "an fsync failed; refusing further writes");
                log.poisoned = Some(reason.clone());
                reason
            }
        };
        drop(self.wake_waiters(ws));
        Error::Poisoned { reason }
    }

    /// Marks that a WAL writer thread will serve [`Durable`] waiters; called
    /// before [`GroupCommit::run_writer`] is started.
    pub(crate) fn expect_writer(&self) {
        if self.policy == FsyncPolicy::Always {
            self.has_writer.store(true, Ordering::Release);
        }
    }

    /// Asks the WAL writer thread to stop.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        // Taken and released so the WAL writer is waiting or sees `stopping`.
        drop(self.lock());
        self.cond.notify_all();
    }

    /// The last step of closing, after the WAL writer thread stopped: writes and
    /// fsyncs what is buffered, then refuses further writes and tells the async
    /// waiters still registered that the engine closed.
    pub(crate) fn close(&self) -> Result<()> {
        let mut ws = self.lock();
        let log = ws.as_mut();
        let lsn = log.last_lsn;
        let res = if log.poisoned.is_some() {
            // Nothing more can be made durable; release the lock taken above
            // before taking it again below.
            drop(ws);
            Ok(())
        } else {
            self.wait_durable(ws, lsn, true, false)
        };
        let mut ws = self.lock();
        let log = ws.as_mut();
        log.poisoned
            .get_or_insert_with(|| "the engine is closed".into());
        for (_, waker) in log.waiters.drain(..) {
            waker.wake();
        }
        res
    }

    /// The WAL writer thread. Under `always` it runs the group commit for async
    /// waiters ([`Durable`]); under `interval` it fsyncs on the timer; under
    /// `never` it writes the buffer on the timer. Under every policy it retries a
    /// write stalled by a full disk.
    pub(crate) fn run_writer(&self) {
        let (every, sync) = match self.policy {
            FsyncPolicy::Always => (None, true),
            FsyncPolicy::Interval(ms) => (Some(Duration::from_millis(ms)), true),
            FsyncPolicy::Never => (Some(Duration::from_millis(NEVER_WRITE_INTERVAL_MS)), false),
        };
        let mut next_tick = every.map(|d| Instant::now() + d);
        let mut ws = self.lock();
        while !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let log = ws.as_mut();
            let tick_due = next_tick.is_some_and(|t| now >= t);
            let retry_at = log.stalled.as_ref().map(|(_, at)| *at);
            let stall_wait = retry_at.filter(|at| now < *at);
            let behind = if sync {
                log.synced_lsn < log.last_lsn
            } else {
                !log.buf.is_empty()
            };
            let wanted = !log.waiters.is_empty() || tick_due || retry_at.is_some();
            let blocked = log.io_busy || stall_wait.is_some() || log.poisoned.is_some();
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
            log.writer_idle = true;
            ws = match wake_at {
                Some(at) => {
                    self.cond
                        .wait_timeout(ws, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.cond.wait(ws).unwrap_or_else(|e| e.into_inner()),
            };
            ws.as_mut().writer_idle = false;
        }
        self.has_writer.store(false, Ordering::Release);
    }
}

impl<S: AsMut<LogState> + fmt::Debug + Send> PollDurable for GroupCommit<S> {
    fn poll_durable(&self, pending: Pending, cx: &mut Context<'_>) -> Poll<Result<ApplyOutcome>> {
        let Pending { wait_lsn, outcome } = pending;
        if self.policy != FsyncPolicy::Always
            || self.durable_lsn.load(Ordering::Acquire) >= wait_lsn
        {
            return Poll::Ready(Ok(outcome));
        }
        if !self.has_writer.load(Ordering::Acquire) {
            // No WAL writer thread (background work is off): commit here.
            return Poll::Ready(self.wait(pending));
        }
        let mut ws = self.lock();
        let log = ws.as_mut();
        if let Err(e) = log.check_poisoned() {
            return Poll::Ready(Err(e));
        }
        if log.synced_lsn >= wait_lsn {
            return Poll::Ready(Ok(outcome));
        }
        log.waiters.push((wait_lsn, cx.waker().clone()));
        if log.writer_idle {
            log.writer_idle = false;
            drop(ws);
            self.cond.notify_all();
        }
        Poll::Pending
    }
}
