//! Integrity check of a data directory or a backup, without changing it.
//!
//! [`verify`] re-reads every checksum and recomputes every rollup it can:
//!
//! 1. `FORMAT`, the manifest, the committed prefix of `series.dict` (and its
//!    series count), the dedup checkpoint the manifest names;
//! 2. every segment file: header, footer and index checksums, then **every
//!    block** (checksum, decompression, decoding), key order within and across
//!    blocks, the index's key ranges, the footer's summary (cells, series,
//!    bucket range), and the manifest's entry (tier, cells, buckets, size);
//! 3. every WAL file: header, every record's checksum and decoding, LSN
//!    continuity past the checkpoint, series definitions, tier masks. A damaged
//!    tail of the newest file with no valid record after it is a **torn tail**
//!    (a write that never completed; the engine cuts it at its next open), not
//!    damage; anywhere else it is damage;
//! 4. files against the manifest: a live file missing or of the wrong size is
//!    damage; files the engine would remove at open (orphan segments, older
//!    dedup checkpoints, `*.tmp`, uncommitted dictionary bytes) are warnings;
//! 5. `BACKUP-MANIFEST`, when present: every listed file's size and CRC32, and
//!    no unlisted file;
//! 6. **rollups**. Each event is counted independently into every tier that
//!    retained its timestamp when it was written, so wherever a finer tier still
//!    holds a whole coarser bucket, the coarser cell must equal the merge of the
//!    finer cells (sum, count, min and max). The data compared is what a query
//!    would read: the live segments merged with the WAL records past the
//!    checkpoint, replayed as recovery replays them (so unflushed writes are on
//!    both sides). A coarse bucket `C` (hour from minutes, day from hours) is
//!    checked when, at `now`, the coarse tier retains `C` and the finer tier
//!    retains the first fine bucket of `C`. Since retention cut-offs only move
//!    forward with the clock, every event of such a bucket was inside the finer
//!    tier's retention when it was written (so it was counted in both tiers), and
//!    compaction cannot have removed any of its fine cells. This needs `now` at
//!    or after the writer's clock and the retention the server runs with (a
//!    shorter one is safe; a longer one can report false mismatches for late
//!    events); `now` is raised to the newest WAL record's time if that is later.
//!    Rollups are skipped for a pair of tiers when a segment of either is
//!    damaged or the WAL could not be replayed (reported in
//!    [`VerifyReport::notes`]).
//!
//! This module walks the directory; `report` holds the report types,
//! `segment_file` the check of one segment, `rollup` the rollup rule.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::backup::{check_backup_manifest, BACKUP_MANIFEST_FILE};
use crate::dedup::DedupState;
use crate::dict::{self, SeriesDict};
use crate::engine::{
    dedup_file_name, format_file_contents, DICT_FILE, FORMAT_FILE, LOCK_FILE, MANIFEST_FILE,
    SEGMENTS_DIR, WAL_DIR,
};
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::manifest::Manifest;
use crate::offline::{list_wal, Replay};
use crate::segment::{self, Segment, SegmentMeta};
use crate::time::Tier;
use crate::wal;

mod report;
mod rollup;
mod segment_file;

pub use report::{Finding, Progress, Severity, VerifyOptions, VerifyReport, MAX_ROLLUP_FINDINGS};

use rollup::check_rollup;
use segment_file::check_segment;

struct Checker<'a> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    report: VerifyReport,
    progress: &'a mut dyn FnMut(Progress<'_>),
}

impl Checker<'_> {
    fn find(&mut self, severity: Severity, file: &str, offset: Option<u64>, what: String) {
        self.report.findings.push(Finding {
            severity,
            file: file.to_string(),
            offset,
            what,
        });
    }

    fn damage(&mut self, file: &str, offset: Option<u64>, what: impl Into<String>) {
        self.find(Severity::Damage, file, offset, what.into());
    }

    /// Records an engine error about `file` as damage (with its offset if it is
    /// a corruption report).
    fn error(&mut self, file: &str, e: Error) {
        match e {
            Error::Corrupt { offset, reason, .. } => self.damage(file, Some(offset), reason),
            other => self.damage(file, None, other.to_string()),
        }
    }

    fn read(&mut self, rel: &str, phase: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(rel);
        match self.fs.read(&path) {
            Ok(b) => {
                self.count_bytes(b.len() as u64, phase);
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    fn count_bytes(&mut self, n: u64, phase: &str) {
        self.report.files += 1;
        self.report.bytes += n;
        (self.progress)(Progress {
            phase,
            bytes: self.report.bytes,
        });
    }

    fn list(&self, sub: &str) -> Result<Vec<String>> {
        let p = self.dir.join(sub);
        if !self.fs.exists(&p) {
            return Ok(Vec::new());
        }
        let mut v = self.fs.list(&p).map_err(|e| Error::io("list", &p, e))?;
        v.sort();
        Ok(v)
    }
}

/// Checks the data directory or backup `dir` (see the module documentation).
/// Damage is reported in the result; `Err` means the check itself could not
/// run (the directory is unreadable, an I/O error). Takes no lock: callers
/// refuse a directory a live engine holds ([`crate::offline::lock_for_reading`]).
pub fn verify(
    dir: &Path,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<VerifyReport> {
    let started = Instant::now();
    let fs = opts.fs.as_ref();
    if !fs.exists(dir) {
        return Err(Error::io(
            "open",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let mut c = Checker {
        fs,
        dir,
        report: VerifyReport {
            dir: dir.to_path_buf(),
            ..VerifyReport::default()
        },
        progress,
    };

    // FORMAT.
    match c.read(FORMAT_FILE, "format")? {
        Some(b) if b == format_file_contents().as_bytes() => {}
        Some(b) => c.damage(
            FORMAT_FILE,
            Some(0),
            format!(
                "format file reads {:?}, this build reads {:?}",
                String::from_utf8_lossy(&b).trim(),
                format_file_contents().trim()
            ),
        ),
        None => c.damage(FORMAT_FILE, None, "missing: not a TallyDB data directory"),
    }

    // MANIFEST.
    let manifest = match c.read(MANIFEST_FILE, "manifest")? {
        Some(b) => match Manifest::decode(Path::new(MANIFEST_FILE), &b) {
            Ok(m) => Some(m),
            Err(e) => {
                c.error(MANIFEST_FILE, e);
                None
            }
        },
        None => {
            c.damage(MANIFEST_FILE, None, "missing");
            None
        }
    };
    if manifest.is_none() {
        c.report
            .notes
            .push("manifest unreadable: files checked on their own, not against it; WAL not replayed; rollups not checked".into());
    }

    // BACKUP-MANIFEST.
    let before = c.report.bytes;
    let problems = check_backup_manifest(fs, dir, &mut |b| {
        (c.progress)(Progress {
            phase: "backup manifest",
            bytes: before + b,
        })
    })?;
    if let Some(problems) = problems {
        c.report.backup_manifest = true;
        for p in problems {
            c.damage(&p.file, p.offset, p.what);
        }
    }

    // Segments.
    let seg_names = c.list(SEGMENTS_DIR)?;
    let live: Vec<SegmentMeta> = match &manifest {
        Some(m) => m.segments.clone(),
        None => Vec::new(),
    };
    let mut intact: Vec<Arc<Segment>> = Vec::new();
    let mut damaged_tiers: HashSet<Tier> = HashSet::new();
    for meta in &live {
        let name = segment::file_name(meta.id);
        let rel = format!("{SEGMENTS_DIR}/{name}");
        if !seg_names.contains(&name) {
            c.damage(
                &rel,
                None,
                format!(
                    "missing: the manifest lists this {} segment ({} cells)",
                    meta.tier, meta.cells
                ),
            );
            damaged_tiers.insert(meta.tier);
            continue;
        }
        match check_segment(&mut c, &rel, Some(meta))? {
            Some(seg) => intact.push(seg),
            None => {
                damaged_tiers.insert(meta.tier);
            }
        }
    }
    for name in &seg_names {
        let rel = format!("{SEGMENTS_DIR}/{name}");
        match segment::parse_file_name(name) {
            Some(id) if live.iter().any(|m| m.id == id) => {}
            Some(_) if manifest.is_none() => {
                let _ = check_segment(&mut c, &rel, None)?;
            }
            _ => c.find(
                Severity::Warning,
                &rel,
                None,
                "not in the manifest (left by an interrupted flush or compaction; removed at the next open)".into(),
            ),
        }
    }

    // Dictionary.
    let mut dict: Option<SeriesDict> = None;
    let dict_bytes = c.read(DICT_FILE, "dictionary")?;
    if let Some(m) = &manifest {
        match (&dict_bytes, m.dict_len) {
            (None, 0) => dict = Some(SeriesDict::new()),
            (Some(b), 0) => {
                dict = Some(SeriesDict::new());
                c.find(
                    Severity::Warning,
                    DICT_FILE,
                    Some(0),
                    format!(
                        "{} uncommitted bytes (the manifest commits none; removed at the next open)",
                        b.len()
                    ),
                );
            }
            (None, n) => c.damage(
                DICT_FILE,
                None,
                format!("missing: the manifest commits {n} bytes of it"),
            ),
            (Some(b), n) if (b.len() as u64) < n => c.damage(
                DICT_FILE,
                Some(b.len() as u64),
                format!("file is {} bytes but the manifest commits {n}", b.len()),
            ),
            (Some(b), n) => match dict::decode(Path::new(DICT_FILE), &b[..n as usize]) {
                Ok(d) if d.len() != m.dict_count => c.damage(
                    DICT_FILE,
                    Some(n),
                    format!(
                        "dictionary holds {} series, the manifest says {}",
                        d.len(),
                        m.dict_count
                    ),
                ),
                Ok(d) => {
                    if b.len() as u64 > n {
                        c.find(
                            Severity::Warning,
                            DICT_FILE,
                            Some(n),
                            format!(
                                "{} bytes past the committed length (left by an interrupted flush; cut at the next open)",
                                b.len() as u64 - n
                            ),
                        );
                    }
                    dict = Some(d);
                }
                Err(e) => c.error(DICT_FILE, e),
            },
        }
    }
    c.report.series = dict.as_ref().map_or(0, |d| u64::from(d.len()));

    // Dedup checkpoint and other top-level files.
    let top = c.list(".")?;
    let dedup_live = manifest
        .as_ref()
        .filter(|m| m.dedup_lsn != 0)
        .map(|m| dedup_file_name(m.dedup_lsn));
    if let Some(name) = &dedup_live {
        match c.read(name, "dedup checkpoint")? {
            Some(b) => {
                if let Err((at, why)) = DedupState::decode(&b) {
                    c.damage(name, Some(at), why);
                }
            }
            None => c.damage(
                name,
                None,
                "missing: the manifest names this dedup checkpoint",
            ),
        }
    }
    for name in &top {
        let known = [
            FORMAT_FILE,
            MANIFEST_FILE,
            DICT_FILE,
            LOCK_FILE,
            BACKUP_MANIFEST_FILE,
            SEGMENTS_DIR,
            WAL_DIR,
        ];
        if known.contains(&name.as_str()) || Some(name) == dedup_live.as_ref() {
            continue;
        }
        let what = if name.starts_with("dedup-") && name.ends_with(".state") {
            "dedup checkpoint not named by the manifest (removed at the next open)"
        } else if name.ends_with(".tmp") {
            "temporary file left by an interrupted write (removed at the next open)"
        } else {
            "not a TallyDB file"
        };
        c.find(Severity::Warning, name, None, what.into());
    }

    // WAL.
    let (seqs, others) = list_wal(fs, dir)?;
    for o in others {
        c.find(
            Severity::Warning,
            &format!("{WAL_DIR}/{o}"),
            None,
            "not a WAL file (removed at the next open)".into(),
        );
    }
    let checkpoint = manifest.as_ref().map_or(0, |m| m.checkpoint_lsn);
    let mut replay = dict.map(|d| Replay::new(d, checkpoint));
    let mut replay_ok = replay.is_some();
    for (i, seq) in seqs.iter().enumerate() {
        let rel = format!("{WAL_DIR}/{}", wal::file_name(*seq));
        let Some(bytes) = c.read(&rel, "wal")? else {
            continue;
        };
        c.report.wal_files += 1;
        let last = i + 1 == seqs.len();
        let result = match (&mut replay, replay_ok) {
            (Some(r), true) => r.file(&rel, &bytes, *seq, checkpoint, last),
            // Without a dictionary or after a damaged file: checksums only.
            _ => Replay::new(SeriesDict::new(), u64::MAX).file(&rel, &bytes, *seq, u64::MAX, last),
        };
        match result {
            Ok(info) => {
                c.report.wal_records += info.records;
                c.report.wal_replayed += info.replayed;
                if let Some((at, dropped)) = info.torn {
                    c.find(
                        Severity::TornTail,
                        &rel,
                        Some(at),
                        format!(
                            "torn tail: {dropped} bytes after the last complete record (a write that never completed; cut at the next open)"
                        ),
                    );
                }
            }
            Err(e) => {
                c.error(&rel, e);
                replay_ok = false;
            }
        }
    }

    // Rollups.
    let now = replay
        .as_ref()
        .map_or(opts.now, |r| opts.now.max(r.max_accepted_at));
    c.report.now = now;
    if !opts.rollups {
        c.report
            .notes
            .push("rollups not checked (--no-rollups)".into());
    } else if let (Some(r), true) = (&replay, replay_ok) {
        for (fine, coarse) in [(Tier::Minute, Tier::Hour), (Tier::Hour, Tier::Day)] {
            if damaged_tiers.contains(&fine) || damaged_tiers.contains(&coarse) {
                c.report.notes.push(format!(
                    "{coarse} cells not recomputed from {fine} cells: a {} segment is damaged",
                    if damaged_tiers.contains(&fine) {
                        fine
                    } else {
                        coarse
                    }
                ));
                continue;
            }
            (c.progress)(Progress {
                phase: "rollups",
                bytes: c.report.bytes,
            });
            check_rollup(&mut c, &intact, r, fine, coarse, &opts.retention, now)?;
        }
    } else if manifest.is_some() {
        c.report
            .notes
            .push("rollups not checked: the dictionary or the WAL could not be read".into());
    }
    c.report.elapsed = started.elapsed();
    Ok(c.report)
}
