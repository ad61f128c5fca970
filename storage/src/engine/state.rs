//! What the engine's rooms share: [`Shared`] (options, the write lock behind
//! group commit, the memtable and live [`Version`], dictionary, manifest and
//! counters) and the poison-tolerant lock helpers.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::block_cache::BlockCache;
use crate::dict::SeriesDict;
use crate::fs::{DirLock, FileSystem};
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::segment::BlockRuns;
use crate::segment::Segment;
use crate::wal::commit::GroupCommit;

use super::recovery::RecoveryReport;
use super::stats::Counters;
use super::write::WriteState;

/// A memtable frozen behind a WAL rotation, waiting to be flushed, with what its
/// checkpoint needs.
#[derive(Debug)]
pub(crate) struct Frozen {
    /// Highest LSN the memtable holds.
    pub(crate) lsn: u64,
    /// The last WAL file it covers.
    pub(crate) wal_seq: u64,
    pub(crate) mem: Arc<Memtable>,
    /// The encoded dedup state as of `lsn`.
    pub(crate) dedup: Arc<Vec<u8>>,
    /// Series logged as of `lsn`.
    pub(crate) series_count: u32,
}

/// What readers see besides the active memtable: frozen memtables and live
/// segments. Replaced whole (copy on write); readers keep the `Arc` they took.
#[derive(Debug, Default)]
pub(crate) struct Version {
    pub(crate) frozen: Vec<Arc<Frozen>>,
    pub(crate) segments: Vec<Arc<Segment>>,
}

impl Version {
    /// A copy of this version with `change` applied.
    pub(crate) fn changed(&self, change: impl FnOnce(&mut Version)) -> Arc<Version> {
        let mut v = Version {
            frozen: self.frozen.clone(),
            segments: self.segments.clone(),
        };
        change(&mut v);
        Arc::new(v)
    }
}

/// The active memtable and the live version, changed together under one lock.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) active: Memtable,
    pub(crate) version: Arc<Version>,
}

/// Everything the engine's methods and background threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    /// The write lock (WAL position, dedup state) and group commit.
    pub(crate) commit: Arc<GroupCommit<WriteState>>,
    pub(crate) tables: RwLock<Tables>,
    pub(crate) dict: RwLock<SeriesDict>,
    pub(crate) manifest: Mutex<Manifest>,
    pub(crate) flush_lock: Mutex<()>,
    pub(crate) compact_lock: Mutex<()>,
    /// Set by `close`: the maintenance thread stops.
    pub(crate) shutdown: Mutex<bool>,
    pub(crate) bg_cond: Condvar,
    pub(crate) counters: Counters,
    pub(crate) recovery: RecoveryReport,
    /// Decoded segment blocks shared by every query.
    pub(crate) blocks: Arc<BlockCache<BlockRuns>>,
    pub(crate) _lock: Box<dyn DirLock>,
}

impl Shared {
    pub(crate) fn fs(&self) -> &dyn FileSystem {
        self.opts.fs.as_ref()
    }

    /// Why writes are refused for good, if they are.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.commit.lock().log.poisoned.clone()
    }

    /// Swaps in a new version built from the current one; readers holding the
    /// old one keep it until they finish.
    pub(crate) fn install(&self, change: impl FnOnce(&mut Version)) {
        let mut t = write(&self.tables);
        t.version = t.version.changed(change);
    }

    /// Takes the next segment id from the manifest (in memory; it is stored with
    /// the manifest that names the segment).
    pub(crate) fn allocate_segment_id(&self) -> u64 {
        let mut m = lock(&self.manifest);
        let id = m.next_segment_id;
        m.next_segment_id += 1;
        id
    }
}

/// Locks `m`, carrying on after a panic in another holder.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `m`, carrying on after a panic in another holder.
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `m`, carrying on after a panic in another holder.
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
