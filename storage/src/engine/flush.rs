//! Flush: the active memtable is frozen behind a new WAL file, then written as
//! one segment per tier with the new dictionary records and a dedup checkpoint,
//! and a new manifest moves the checkpoint past it so the WAL files it covered
//! can go.
//!
//! Every file is fsynced before the manifest that names it is published, and the
//! manifest is published atomically (temporary file, fsync, rename, directory
//! fsync). Any of those fsyncs failing poisons the engine instead of being
//! retried: the kernel may have dropped the pages it could not write, so a later
//! fsync that succeeds would prove nothing. (A segment file's own fsync is part
//! of writing it; a segment that fails it is removed and never named, and the
//! flush may be retried.) Other failures leave the frozen memtable in place for
//! the next attempt.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::dict;
use crate::error::{Error, Result};
use crate::fs::{tmp_path, FileSystem};
use crate::manifest::Manifest;
use crate::segment::{self, Segment, SegmentWriter};
use crate::time::Tier;
use crate::wal::{self, WalFile};

use super::state::{lock, read, write, Frozen, Shared};
use super::{dedup_file_name, DICT_FILE, MANIFEST_FILE, SEGMENTS_DIR, WAL_DIR};

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

/// A failed step of publishing a file, telling a failed fsync from the rest.
enum PublishError {
    /// An fsync failed: never to be retried.
    Sync(io::Error),
    /// Anything else (create, write, rename): nothing was made durable.
    Other(io::Error),
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, directory
/// fsync), as [`crate::fs::write_atomic`] does, saying whether a failure was an fsync.
fn publish(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let tmp = tmp_path(path);
    if fs.exists(&tmp) {
        fs.remove_file(&tmp).map_err(PublishError::Other)?;
    }
    let mut f = fs.create(&tmp).map_err(PublishError::Other)?;
    f.write_all(bytes).map_err(PublishError::Other)?;
    f.sync().map_err(PublishError::Sync)?;
    drop(f);
    fs.rename(&tmp, path).map_err(PublishError::Other)?;
    fs.sync_dir(crate::fs::parent(path))
        .map_err(PublishError::Sync)
}

impl Shared {
    /// Poisons the engine for a failed fsync of `what` at `path`.
    pub(crate) fn fsync_failed(&self, what: &str, path: &Path, e: &io::Error) -> Error {
        self.commit.poison(format!(
            "fsync of the {what} {} failed: {e}",
            path.display()
        ))
    }

    /// Fsyncs directory `dir`, poisoning the engine if that fails.
    pub(crate) fn sync_dir_or_poison(&self, dir: &Path) -> Result<()> {
        self.fs()
            .sync_dir(dir)
            .map_err(|e| self.fsync_failed("directory", dir, &e))
    }

    /// Publishes `bytes` at `path` atomically, poisoning the engine if an fsync
    /// fails; `op` names other failures.
    fn publish_or_poison(
        &self,
        what: &str,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<()> {
        publish(self.fs(), path, bytes).map_err(|e| match e {
            PublishError::Sync(e) => self.fsync_failed(what, path, &e),
            PublishError::Other(e) => Error::io(op, path, e),
        })
    }

    /// Publishes `next` as the manifest (see [`Shared::publish_or_poison`]).
    pub(crate) fn store_manifest(&self, next: &Manifest) -> Result<()> {
        let path = self.dir.join(MANIFEST_FILE);
        self.publish_or_poison("manifest", "write manifest", &path, &next.encode())
    }

    /// Freezes the active memtable and writes every frozen one out.
    pub(crate) fn flush(&self) -> Result<FlushOutcome> {
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

    /// True when a flush is due: a frozen memtable waits, or the active memtable
    /// or the WAL grew past its limit.
    pub(crate) fn needs_flush(&self) -> bool {
        let wal_bytes = self.commit.lock().log.wal_bytes;
        let t = read(&self.tables);
        !t.version.frozen.is_empty()
            || t.active.approx_bytes() >= self.opts.memtable_bytes
            || wal_bytes >= self.opts.wal_flush_bytes
    }

    /// Moves the active memtable into the frozen list behind a new WAL file.
    pub(crate) fn freeze(&self) -> Result<bool> {
        let mut ws = self.commit.lock();
        loop {
            ws.log.check_accepting()?;
            if ws.log.io_busy {
                ws = self.commit.block(ws, None);
            } else if ws.log.synced_lsn < ws.log.last_lsn || !ws.log.buf.is_empty() {
                ws = self.commit.write_out(ws, true);
            } else {
                break;
            }
        }
        let Some(old_seq) = ws.log.wal.as_ref().map(|w| w.seq()) else {
            return Err(Error::Closed);
        };
        let wal_empty = ws.log.wal.as_ref().is_none_or(|w| w.is_empty());
        if wal_empty && read(&self.tables).active.is_empty() {
            return Ok(false);
        }
        let wal_dir = self.dir.join(WAL_DIR);
        let wal = match WalFile::create(self.fs(), &wal_dir, old_seq + 1) {
            Ok(wal) => wal,
            Err(Error::Io {
                op: "sync directory",
                source,
                ..
            }) => {
                drop(ws);
                return Err(self.fsync_failed("directory", &wal_dir, &source));
            }
            Err(e) => return Err(e),
        };
        ws.log.wal = Some(wal);
        ws.log.wal_bytes = 0;
        ws.dedup
            .expire(self.opts.clock.now_ms(), self.opts.producer_idle_ms);
        let dedup = Arc::new(ws.dedup.encode());
        // The memtable moves and the version changes under one lock, so a query
        // sees every cell exactly once.
        let mut t = write(&self.tables);
        let frozen = Arc::new(Frozen {
            lsn: ws.log.last_lsn,
            wal_seq: old_seq,
            mem: Arc::new(std::mem::take(&mut t.active)),
            dedup,
            series_count: ws.logged_series,
        });
        t.version = t.version.changed(|v| v.frozen.push(frozen));
        Ok(true)
    }

    /// Writes one frozen memtable out and publishes the checkpoint past it;
    /// returns the segments and cells written.
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
            // open removes them as orphans.
            self.store_manifest(&next)?;
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
            .flushed_segments
            .fetch_add(segs.len() as u64, Ordering::Relaxed);
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
        self.sync_dir_or_poison(&seg_dir)?;
        let new_dict_len = if frozen.series_count > dict_count {
            self.append_dict(frozen.series_count, dict_len, dict_count)?
        } else {
            dict_len
        };
        // Not listed in `written`: an earlier attempt whose manifest write failed
        // late may have published a manifest naming this file. Left over, it is
        // removed at the next open.
        let dedup_path = self.dir.join(dedup_file_name(frozen.lsn));
        self.publish_or_poison(
            "dedup checkpoint",
            "write dedup checkpoint",
            &dedup_path,
            &frozen.dedup,
        )?;
        Ok((segs, cells, new_dict_len))
    }

    /// Writes the dictionary records of series `dict_count..series_count` after
    /// the committed `dict_len` bytes and fsyncs them; returns the new length.
    fn append_dict(&self, series_count: u32, dict_len: u64, dict_count: u32) -> Result<u64> {
        let fs = self.fs();
        let dict_path = self.dir.join(DICT_FILE);
        let mut bytes = Vec::new();
        if dict_len == 0 {
            bytes.extend_from_slice(&dict::header());
        }
        dict::encode_records(&read(&self.dict), dict_count, series_count, &mut bytes);
        let io = |e| Error::io("write series dictionary", &dict_path, e);
        let mut f = if dict_len == 0 {
            // A first dictionary replaces whatever an interrupted flush left.
            if fs.exists(&dict_path) {
                fs.remove_file(&dict_path).map_err(io)?;
            }
            fs.create(&dict_path).map_err(io)?
        } else {
            // Cut bytes an interrupted flush appended past the committed length.
            if fs.len(&dict_path).map_err(io)? != dict_len {
                fs.truncate(&dict_path, dict_len).map_err(io)?;
            }
            fs.append(&dict_path).map_err(io)?
        };
        f.write_all(&bytes).map_err(io)?;
        f.sync()
            .map_err(|e| self.fsync_failed("series dictionary", &dict_path, &e))?;
        if dict_len == 0 {
            self.sync_dir_or_poison(&self.dir)?;
        }
        Ok(dict_len + bytes.len() as u64)
    }
}
