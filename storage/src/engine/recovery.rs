//! Opening a data directory: its lock and format file, the manifest (created for
//! a new directory, required beside any data), the live segments, dictionary and
//! dedup checkpoint, removal of files an interrupted flush or compaction left,
//! and replay of the WAL past the checkpoint.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::dedup::DedupState;
use crate::dict::{self, SeriesDict};
use crate::error::{Error, Result};
use crate::fs::{write_atomic, FileSystem};
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::replay::Replay;
use crate::segment::{self, Segment};
use crate::wal::commit::{GroupCommit, LogState};
use crate::wal::{self, WalFile};

use super::state::{Shared, Tables, Version};
use super::stats::Counters;
use super::write::WriteState;
use super::{
    dedup_file_name, format_file_contents, parse_dedup_file_name, DICT_FILE, FORMAT_FILE,
    FORMAT_VERSION, LOCK_FILE, MANIFEST_FILE, SEGMENTS_DIR, WAL_DIR,
};

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

/// What the WAL replay rebuilt.
struct Replayed {
    dict: SeriesDict,
    active: Memtable,
    dedup: DedupState,
    last_lsn: u64,
    /// The number of the WAL file to open next.
    next_seq: u64,
}

/// Opens (or creates) the data directory `dir` with validated `opts` and
/// recovers its state; background threads are not started.
pub(super) fn open(dir: &Path, opts: Options) -> Result<Shared> {
    let dir = dir.to_path_buf();
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
    let segments = open_segments(fs, &dir, &manifest, &mut report)?;
    let dict = load_dict(fs, &dir, &manifest)?;
    let dedup = load_dedup(fs, &dir, &manifest, &mut report)?;

    let started = Instant::now();
    let replayed = replay_wal(fs, &dir, &opts, &manifest, dict, dedup, &mut report)?;
    report.replay_time = started.elapsed();
    let Replayed {
        dict,
        active,
        mut dedup,
        last_lsn,
        next_seq,
    } = replayed;
    dedup.expire(opts.clock.now_ms(), opts.producer_idle_ms);
    let wal_file = WalFile::create(fs, &dir.join(WAL_DIR), next_seq)?;
    if report.records_replayed > 0 || !report.torn_tails.is_empty() {
        tracing::info!(
            records = report.records_replayed,
            events = report.events_replayed,
            files = report.wal_files,
            ms = report.replay_time.as_millis() as u64,
            "replayed the write-ahead log"
        );
    }
    let write_state = WriteState {
        log: LogState::new(wal_file, last_lsn),
        dedup,
        logged_series: dict.len(),
        scratch: Vec::new(),
        ledger: Default::default(),
    };
    let commit = GroupCommit::new(write_state, last_lsn, opts.fsync, Arc::clone(&opts.fs));
    Ok(Shared {
        commit: Arc::new(commit),
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
        blocks: Arc::new(crate::block_cache::BlockCache::new(opts.block_cache_bytes)),
        _lock: dir_lock,
        dir,
        opts,
    })
}

/// Opens the segments the manifest names and removes every other file of the
/// segment directory.
fn open_segments(
    fs: &dyn FileSystem,
    dir: &Path,
    manifest: &Manifest,
    report: &mut RecoveryReport,
) -> Result<Vec<Arc<Segment>>> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for meta in &manifest.segments {
        let path = seg_dir.join(segment::file_name(meta.id));
        segments.push(Segment::open_checked(fs, &path, meta)?);
    }
    let live: HashSet<u64> = manifest.segments.iter().map(|s| s.id).collect();
    for name in sorted(
        fs.list(&seg_dir)
            .map_err(|e| Error::io("list", &seg_dir, e))?,
    ) {
        if segment::parse_file_name(&name).is_none_or(|id| !live.contains(&id)) {
            remove_if_exists(fs, &seg_dir.join(name), report)?;
        }
    }
    Ok(segments)
}

/// Loads the dictionary up to the length the manifest commits, which must hold
/// the number of series the manifest says.
fn load_dict(fs: &dyn FileSystem, dir: &Path, manifest: &Manifest) -> Result<SeriesDict> {
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
    Ok(dict)
}

/// Loads the dedup checkpoint the manifest names and removes every other
/// checkpoint and temporary file.
fn load_dedup(
    fs: &dyn FileSystem,
    dir: &Path,
    manifest: &Manifest,
    report: &mut RecoveryReport,
) -> Result<DedupState> {
    let mut dedup = DedupState::new();
    for name in sorted(fs.list(dir).map_err(|e| Error::io("list", dir, e))?) {
        let path = dir.join(&name);
        match parse_dedup_file_name(&name) {
            Some(lsn) if lsn == manifest.dedup_lsn => {
                let bytes = fs
                    .read(&path)
                    .map_err(|e| Error::io("read dedup checkpoint", &path, e))?;
                dedup = DedupState::decode(&bytes)
                    .map_err(|(at, why)| Error::corrupt(&path, at, why))?;
            }
            Some(_) => remove_if_exists(fs, &path, report)?,
            None if name.ends_with(".tmp") => remove_if_exists(fs, &path, report)?,
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
    Ok(dedup)
}

/// Replays every WAL file past the checkpoint in order, cutting a torn tail off
/// the last one.
fn replay_wal(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &Options,
    manifest: &Manifest,
    dict: SeriesDict,
    dedup: DedupState,
    report: &mut RecoveryReport,
) -> Result<Replayed> {
    let wal_dir = dir.join(WAL_DIR);
    let mut seqs: Vec<u64> = Vec::new();
    for name in fs
        .list(&wal_dir)
        .map_err(|e| Error::io("list", &wal_dir, e))?
    {
        match wal::parse_file_name(&name) {
            Some(seq) => seqs.push(seq),
            None => remove_if_exists(fs, &wal_dir.join(name), report)?,
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
        memtable,
        last_lsn,
        dedup,
        ..
    } = replay;
    Ok(Replayed {
        dict,
        active: memtable,
        dedup: dedup.map(|(d, _)| d).unwrap_or_default(),
        last_lsn,
        next_seq: seqs.last().map_or(1, |s| s + 1),
    })
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
