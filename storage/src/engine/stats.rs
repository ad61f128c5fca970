//! Figures about the engine for `stats` and monitoring: [`Stats`], gathered
//! from the write state, the live version and the running [`Counters`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::state::{lock, read, Shared};

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

/// Running totals since open, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) flushes: AtomicU64,
    /// Segments written by flushes: what compaction's task budget grows by.
    pub(crate) flushed_segments: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) flush_micros: AtomicU64,
    pub(crate) compaction_micros: AtomicU64,
}

impl Shared {
    /// Current figures.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = Stats::default();
        {
            let ws = self.commit.lock();
            let log = &ws.log;
            s.wal_bytes = log.wal.as_ref().map_or(0, |w| w.len()) + log.buf.len() as u64;
            s.last_lsn = log.last_lsn;
            s.synced_lsn = log.synced_lsn;
            s.dedup_ids = ws.dedup.event_ids() as u64;
            s.producers = ws.dedup.producers() as u64;
            s.dedup_bytes = ws.dedup.approx_bytes() as u64;
            s.poisoned = log.poisoned.is_some();
            s.disk_full = log.stalled.is_some();
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
        s.wal_syncs = self.commit.syncs();
        s.flushes = self.counters.flushes.load(Ordering::Relaxed);
        s.compactions = self.counters.compactions.load(Ordering::Relaxed);
        s.flush_micros = self.counters.flush_micros.load(Ordering::Relaxed);
        s.compaction_micros = self.counters.compaction_micros.load(Ordering::Relaxed);
        s
    }
}
