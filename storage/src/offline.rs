//! Read-only access to a data directory that no engine has open, for operator
//! tools (`tally-admin verify`, `inspect`, `export`).
//!
//! Nothing here writes to the directory: no recovery, no truncation of a torn
//! tail, no removal of orphans (the engine does those at its next open). The
//! WAL is replayed into an in-memory [`Memtable`](crate::memtable::Memtable) exactly as recovery does
//! (records after the checkpoint, series definitions, each event into the tiers
//! its record says it was counted in), so a reader sees every acknowledged
//! increment, flushed or not.
//!
//! A directory held by a running engine is refused: [`lock_for_reading`] takes a
//! *shared* lock on `LOCK`, which fails while `tallyd` (or any engine) holds its
//! exclusive lock, and keeps an engine from opening the directory while it is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compaction::MergeIter;
use crate::dedup::DedupState;
use crate::dict::{self, SeriesDict};
use crate::engine::{dedup_file_name, DICT_FILE, LOCK_FILE, MANIFEST_FILE, SEGMENTS_DIR, WAL_DIR};
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::manifest::Manifest;
use crate::segment::{self, CellRow, Segment};
use crate::time::{Tier, DAY_MS};
use crate::wal;

pub use crate::replay::{coverage_is_valid, Replay, WalFileInfo};

/// A shared lock on a data directory's `LOCK` file, released on drop. Holding it
/// keeps any engine (which needs the exclusive lock) from opening the directory.
#[derive(Debug)]
pub struct ReadLock {
    _file: Option<std::fs::File>,
}

/// Takes a shared lock on `dir/LOCK` if the file exists (a directory no engine
/// ever opened, such as a backup, has none and needs none; none is created).
/// Fails with [`Error::Locked`] when an engine holds the directory.
///
/// This uses the operating system's advisory lock (`flock`) directly, the one
/// [`crate::fs::OsFs::lock`] takes exclusively.
pub fn lock_for_reading(dir: &Path) -> Result<ReadLock> {
    let path = dir.join(LOCK_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadLock { _file: None }),
        Err(e) => return Err(Error::io("open lock file", &path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(ReadLock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock data directory", &path, e)),
    }
}

/// WAL file numbers found in `wal/`, sorted, and the names that are not WAL files.
pub fn list_wal(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<u64>, Vec<String>)> {
    let wal_dir = dir.join(WAL_DIR);
    if !fs.exists(&wal_dir) {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut seqs = Vec::new();
    let mut other = Vec::new();
    for name in fs
        .list(&wal_dir)
        .map_err(|e| Error::io("list", &wal_dir, e))?
    {
        match wal::parse_file_name(&name) {
            Some(seq) => seqs.push(seq),
            None => other.push(name),
        }
    }
    seqs.sort_unstable();
    other.sort();
    Ok((seqs, other))
}

/// A data directory loaded read-only: the manifest, the live segments (header,
/// footer and index verified; blocks are verified as they are read), the
/// dictionary and the WAL replayed into memory.
#[derive(Debug)]
pub struct DataDir {
    /// The directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Series ids committed in `series.dict`.
    pub committed_series: u32,
    /// Live segments in manifest order.
    pub segments: Vec<Arc<Segment>>,
    /// One entry per WAL file.
    pub wal_files: Vec<WalFileInfo>,
    /// The WAL replay (dictionary with every series, unflushed cells).
    pub replay: Replay,
    /// The dedup checkpoint named by the manifest, with its file name and size.
    pub dedup: Option<(String, u64, DedupState)>,
}

impl DataDir {
    /// Loads `dir` without changing it. The first damage found is
    /// [`Error::Corrupt`]; a torn WAL tail is not damage (see
    /// [`WalFileInfo::torn`]). Use [`crate::verify`] for a complete check.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<DataDir> {
        let manifest = Manifest::load(fs, &dir.join(MANIFEST_FILE))?;
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for meta in &manifest.segments {
            let path = dir.join(SEGMENTS_DIR).join(segment::file_name(meta.id));
            segments.push(Segment::open_checked(fs, &path, meta)?);
        }
        let dict_path = dir.join(DICT_FILE);
        let dict = if manifest.dict_len == 0 {
            SeriesDict::new()
        } else {
            let bytes = fs
                .read(&dict_path)
                .map_err(|e| Error::io("read series dictionary", &dict_path, e))?;
            let committed = bytes.get(..manifest.dict_len as usize).ok_or_else(|| {
                Error::corrupt(
                    &dict_path,
                    bytes.len() as u64,
                    format!(
                        "file is {} bytes but the manifest committed {}",
                        bytes.len(),
                        manifest.dict_len
                    ),
                )
            })?;
            dict::decode(&dict_path, committed)?
        };
        if dict.len() != manifest.dict_count {
            return Err(Error::corrupt(
                &dict_path,
                manifest.dict_len,
                format!(
                    "dictionary holds {} series, the manifest says {}",
                    dict.len(),
                    manifest.dict_count
                ),
            ));
        }
        let committed_series = dict.len();
        let dedup = if manifest.dedup_lsn != 0 {
            let name = dedup_file_name(manifest.dedup_lsn);
            let path = dir.join(&name);
            let bytes = fs
                .read(&path)
                .map_err(|e| Error::io("read dedup checkpoint", &path, e))?;
            let state =
                DedupState::decode(&bytes).map_err(|(at, why)| Error::corrupt(&path, at, why))?;
            Some((name, bytes.len() as u64, state))
        } else {
            None
        };
        let mut replay = Replay::new(dict, manifest.checkpoint_lsn);
        let (seqs, _) = list_wal(fs, dir)?;
        let mut wal_files = Vec::with_capacity(seqs.len());
        for (i, seq) in seqs.iter().enumerate() {
            let rel = format!("{WAL_DIR}/{}", wal::file_name(*seq));
            let path = dir.join(&rel);
            let bytes = fs
                .read(&path)
                .map_err(|e| Error::io("read wal", &path, e))?;
            let info = replay
                .file(
                    &rel,
                    &bytes,
                    *seq,
                    manifest.checkpoint_lsn,
                    i + 1 == seqs.len(),
                )
                .map_err(|e| rebase(e, dir))?;
            wal_files.push(info);
        }
        Ok(DataDir {
            dir: dir.to_path_buf(),
            manifest,
            committed_series,
            segments,
            wal_files,
            replay,
            dedup,
        })
    }

    /// The series dictionary (committed and WAL-defined series).
    pub fn dict(&self) -> &SeriesDict {
        &self.replay.dict
    }

    /// Every stored cell of `tier` in `(series, bucket)` order: the live segments
    /// merged (equal keys summed) with the replayed WAL. Cells past retention that
    /// compaction has not removed yet are included; filter them if needed.
    pub fn cells(&self, tier: Tier) -> TierCells {
        let segs: Vec<Arc<Segment>> = self
            .segments
            .iter()
            .filter(|s| s.meta().tier == tier)
            .cloned()
            .collect();
        TierCells::new(&segs, self.replay.memtable.rows(tier))
    }
}

/// Relative WAL paths in errors from [`Replay::file`] become full paths.
fn rebase(e: Error, dir: &Path) -> Error {
    match e {
        Error::Corrupt {
            file,
            offset,
            reason,
        } if file.is_relative() => Error::Corrupt {
            file: dir.join(file),
            offset,
            reason,
        },
        other => other,
    }
}

/// Cells of segments merged with in-memory rows, in key order, equal keys summed.
#[derive(Debug)]
pub struct TierCells {
    segs: MergeIter,
    seg_head: Option<CellRow>,
    seg_done: bool,
    mem: std::vec::IntoIter<CellRow>,
    mem_head: Option<CellRow>,
}

impl TierCells {
    /// Merges `segments` (all of one tier) with `rows` (sorted by key).
    pub fn new(segments: &[Arc<Segment>], rows: Vec<CellRow>) -> TierCells {
        let mut mem = rows.into_iter();
        let mem_head = mem.next();
        TierCells {
            segs: MergeIter::new(segments, i64::MIN),
            seg_head: None,
            seg_done: false,
            mem,
            mem_head,
        }
    }
}

impl Iterator for TierCells {
    type Item = Result<CellRow>;

    fn next(&mut self) -> Option<Result<CellRow>> {
        if self.seg_head.is_none() && !self.seg_done {
            match self.segs.next() {
                Some(Ok(r)) => self.seg_head = Some(r),
                Some(Err(e)) => {
                    self.seg_done = true;
                    return Some(Err(e));
                }
                None => self.seg_done = true,
            }
        }
        let key = |r: &CellRow| (r.series, r.bucket);
        match (self.seg_head, self.mem_head) {
            (None, None) => None,
            (Some(a), None) => {
                self.seg_head = None;
                Some(Ok(a))
            }
            (None, Some(b)) => {
                self.mem_head = self.mem.next();
                Some(Ok(b))
            }
            (Some(mut a), Some(b)) => {
                if key(&a) < key(&b) {
                    self.seg_head = None;
                    Some(Ok(a))
                } else if key(&b) < key(&a) {
                    self.mem_head = self.mem.next();
                    Some(Ok(b))
                } else {
                    a.cell.merge(&b.cell);
                    self.seg_head = None;
                    self.mem_head = self.mem.next();
                    Some(Ok(a))
                }
            }
        }
    }
}

/// Formats a timestamp (ms) as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`, shortened to
/// minutes when seconds and milliseconds are zero.
pub fn format_utc(ms: i64) -> String {
    let (y, m, d) = crate::time::civil_from_days(ms.div_euclid(DAY_MS));
    let rem = ms.rem_euclid(DAY_MS);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if s == 0 && milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_utc(-60_000), "1969-12-31T23:59Z");
    }

    #[test]
    fn coverage_masks() {
        assert!(coverage_is_valid(7) && coverage_is_valid(6) && coverage_is_valid(4));
        assert!(!coverage_is_valid(5) && !coverage_is_valid(1) && !coverage_is_valid(0));
    }
}
