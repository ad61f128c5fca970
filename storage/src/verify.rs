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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backup::{check_backup_manifest, BACKUP_MANIFEST_FILE};
use crate::cell::Cell;
use crate::dedup::DedupState;
use crate::dict::{self, SeriesDict};
use crate::engine::{
    dedup_file_name, format_file_contents, DICT_FILE, FORMAT_FILE, LOCK_FILE, MANIFEST_FILE,
    SEGMENTS_DIR, WAL_DIR,
};
use crate::error::{Error, Result};
use crate::fs::{FileSystem, OsFs};
use crate::manifest::Manifest;
use crate::offline::{format_utc, list_wal, Replay, TierCells};
use crate::segment::{self, CellRow, Segment, SegmentMeta, FOOTER_LEN};
use crate::time::{Retention, Tier};
use crate::wal;

/// Rollup mismatches reported one by one; more are counted in one finding.
pub const MAX_ROLLUP_FINDINGS: usize = 50;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Stored bytes or data are wrong: the directory is not intact.
    Damage,
    /// A torn WAL tail: the last write never completed (cut at the next open).
    TornTail,
    /// Something the engine tidies at its next open (orphans, temp files).
    Warning,
}

impl Severity {
    /// Lower-case name: `damage`, `torn-tail`, `warning`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Damage => "damage",
            Severity::TornTail => "torn-tail",
            Severity::Warning => "warning",
        }
    }
}

/// One thing found wrong or noteworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The file, relative to the directory (`segments/…`, `wal/…`, `MANIFEST`).
    pub file: String,
    /// Byte offset of the damaged record, block or structure, when known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(
                f,
                "{}: {} at offset {o}: {}",
                self.severity.name(),
                self.file,
                self.what
            ),
            None => write!(f, "{}: {}: {}", self.severity.name(), self.file, self.what),
        }
    }
}

/// What to check and against which clock and retention.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// File access (the real file system by default).
    pub fs: Arc<dyn FileSystem>,
    /// The retention the server runs with (for the rollup rule).
    pub retention: Retention,
    /// "Now" for retention cut-offs (ms).
    pub now: i64,
    /// Recompute hour and day cells from finer tiers.
    pub rollups: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            fs: Arc::new(OsFs),
            retention: Retention::default(),
            now: crate::time::Clock::now_ms(&crate::time::SystemClock),
            rollups: true,
        }
    }
}

/// Progress of a check, for a terminal display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// What is being checked.
    pub phase: &'a str,
    /// Bytes read so far (all phases).
    pub bytes: u64,
}

/// Everything [`verify`] found and how much it read.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The directory checked.
    pub dir: PathBuf,
    /// Damage, torn tails and warnings, in the order found.
    pub findings: Vec<Finding>,
    /// Things not checked and why (e.g. rollups skipped).
    pub notes: Vec<String>,
    /// Files read.
    pub files: u64,
    /// Bytes read (each file counted once, however often it was read).
    pub bytes: u64,
    /// Segments checked.
    pub segments: u64,
    /// Blocks checked.
    pub blocks: u64,
    /// Cells decoded from segments.
    pub cells: u64,
    /// WAL files checked.
    pub wal_files: u64,
    /// Valid WAL records.
    pub wal_records: u64,
    /// WAL records past the checkpoint (replayed for the rollup check).
    pub wal_replayed: u64,
    /// Series in the dictionary (committed).
    pub series: u64,
    /// Hour cells recomputed from minutes.
    pub hours_checked: u64,
    /// Day cells recomputed from hours.
    pub days_checked: u64,
    /// True if a `BACKUP-MANIFEST` was checked.
    pub backup_manifest: bool,
    /// The clock used for retention cut-offs.
    pub now: i64,
    /// Time taken.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// True when no damage was found (torn tails and warnings allowed).
    pub fn is_intact(&self) -> bool {
        self.damage() == 0
    }

    /// Number of damage findings.
    pub fn damage(&self) -> usize {
        self.count(Severity::Damage)
    }

    /// Number of findings of a severity.
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }
}

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

/// Checks one segment completely; `Some` if it is intact.
fn check_segment(
    c: &mut Checker<'_>,
    rel: &str,
    expected: Option<&SegmentMeta>,
) -> Result<Option<Arc<Segment>>> {
    let path = c.dir.join(rel);
    let seg = match c.fs.map(&path) {
        Ok(map) => {
            let n = (*map).as_ref().len() as u64;
            c.count_bytes(n, "segments");
            Segment::from_bytes(&path, map).map(Arc::new)
        }
        Err(e) => return Err(Error::io("read segment", path, e)),
    };
    c.report.segments += 1;
    let seg = match seg {
        Ok(s) => s,
        Err(e) => {
            c.error(rel, e);
            return Ok(None);
        }
    };
    let meta = *seg.meta();
    let footer_at = meta.bytes - FOOTER_LEN as u64;
    let mut ok = true;
    if let Some(exp) = expected {
        if exp.bytes != meta.bytes {
            c.damage(
                rel,
                None,
                format!(
                    "file is {} bytes, the manifest says {}",
                    meta.bytes, exp.bytes
                ),
            );
            ok = false;
        } else if *exp != meta {
            c.damage(
                rel,
                Some(footer_at),
                format!("segment summary {meta:?} disagrees with the manifest {exp:?}"),
            );
            ok = false;
        }
    }
    let mut rows: Vec<CellRow> = Vec::new();
    let mut prev: Option<(u32, i64)> = None;
    let mut series = 0u32;
    let (mut min_b, mut max_b, mut cells) = (i64::MAX, i64::MIN, 0u64);
    let mut all_read = true;
    for (i, b) in seg.blocks().iter().enumerate() {
        c.report.blocks += 1;
        if let Err(e) = seg.read_block(i, &mut rows) {
            c.error(rel, e);
            ok = false;
            all_read = false;
            prev = None;
            continue;
        }
        let mut bad: Option<String> = None;
        let mut block_max = i64::MIN;
        for r in &rows {
            let key = (r.series, r.bucket);
            if prev.is_some_and(|p| key <= p) {
                bad.get_or_insert(format!(
                    "cell {key:?} is not after {prev:?}: keys out of order"
                ));
            }
            if prev.is_none_or(|p| p.0 != r.series) {
                series += 1;
            }
            prev = Some(key);
            if r.cell.count == 0 || r.cell.min > r.cell.max {
                bad.get_or_insert(format!(
                    "impossible cell for series {} bucket {}: {:?}",
                    r.series, r.bucket, r.cell
                ));
            }
            block_max = block_max.max(r.bucket);
            min_b = min_b.min(r.bucket);
            max_b = max_b.max(r.bucket);
        }
        cells += rows.len() as u64;
        if block_max != b.max_bucket {
            bad.get_or_insert(format!(
                "largest bucket {block_max} differs from the index ({})",
                b.max_bucket
            ));
        }
        if let Some(why) = bad {
            c.damage(rel, Some(b.offset), why);
            ok = false;
        }
    }
    c.report.cells += cells;
    if all_read {
        let (min_b, max_b) = if cells == 0 { (0, 0) } else { (min_b, max_b) };
        if series != seg.series_count()
            || cells != meta.cells
            || min_b != meta.min_bucket
            || max_b != meta.max_bucket
        {
            c.damage(
                rel,
                Some(footer_at),
                format!(
                    "footer says {} cells of {} series in buckets {}..={}, the blocks hold {cells} cells of {series} series in {min_b}..={max_b}",
                    meta.cells,
                    seg.series_count(),
                    meta.min_bucket,
                    meta.max_bucket
                ),
            );
            ok = false;
        }
    }
    Ok(ok.then_some(seg))
}

/// Rolls a sorted stream of fine cells up into `(series, coarse bucket)` cells
/// for the coarse buckets `keep` accepts.
struct Rollup<'a> {
    fine: Tier,
    coarse: Tier,
    inner: TierCells,
    keep: &'a dyn Fn(i64) -> bool,
    pending: Option<CellRow>,
}

impl Iterator for Rollup<'_> {
    type Item = Result<CellRow>;
    fn next(&mut self) -> Option<Result<CellRow>> {
        loop {
            match self.inner.next() {
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(r)) => {
                    let cb = self.coarse.bucket_of(self.fine.start_of(r.bucket));
                    if !(self.keep)(cb) {
                        continue;
                    }
                    match &mut self.pending {
                        Some(p) if p.series == r.series && p.bucket == cb => p.cell.merge(&r.cell),
                        slot => {
                            let out = slot.replace(CellRow {
                                series: r.series,
                                bucket: cb,
                                cell: r.cell,
                            });
                            if out.is_some() {
                                return out.map(Ok);
                            }
                        }
                    }
                }
                None => return self.pending.take().map(Ok),
            }
        }
    }
}

fn check_rollup(
    c: &mut Checker<'_>,
    segments: &[Arc<Segment>],
    replay: &Replay,
    fine: Tier,
    coarse: Tier,
    retention: &Retention,
    now: i64,
) -> Result<()> {
    let of = |t: Tier| -> Vec<Arc<Segment>> {
        segments
            .iter()
            .filter(|s| s.meta().tier == t)
            .cloned()
            .collect()
    };
    let coarse_segs = of(coarse);
    let first_coarse = retention.first_kept_bucket(coarse, now);
    let first_fine = retention.first_kept_bucket(fine, now);
    let keep =
        move |cb: i64| cb >= first_coarse && fine.bucket_of(coarse.start_of(cb)) >= first_fine;
    let mut rolled = Rollup {
        fine,
        coarse,
        inner: TierCells::new(&of(fine), replay.memtable.rows(fine)),
        keep: &keep,
        pending: None,
    };
    let mut stored = TierCells::new(&coarse_segs, replay.memtable.rows(coarse))
        .filter(|r| r.as_ref().map_or(true, |r| keep(r.bucket)));
    let mut a = rolled.next().transpose()?;
    let mut b = stored.next().transpose()?;
    let mut checked = 0u64;
    let mut mismatches = 0usize;
    loop {
        let (key_a, key_b) = (
            a.map(|r| (r.series, r.bucket)),
            b.map(|r| (r.series, r.bucket)),
        );
        let (series, bucket, from_fine, in_coarse) = match (key_a, key_b) {
            (None, None) => break,
            (Some(ka), kb) if kb.is_none_or(|kb| ka < kb) => {
                let r = a.take();
                a = rolled.next().transpose()?;
                (ka.0, ka.1, r.map(|r| r.cell), None)
            }
            (ka, Some(kb)) if ka.is_none_or(|ka| kb < ka) => {
                let r = b.take();
                b = stored.next().transpose()?;
                (kb.0, kb.1, None, r.map(|r| r.cell))
            }
            (Some(ka), Some(_)) => {
                let (ra, rb) = (a.take(), b.take());
                a = rolled.next().transpose()?;
                b = stored.next().transpose()?;
                (ka.0, ka.1, ra.map(|r| r.cell), rb.map(|r| r.cell))
            }
            _ => break,
        };
        checked += 1;
        if from_fine == in_coarse {
            continue;
        }
        mismatches += 1;
        if mismatches > MAX_ROLLUP_FINDINGS {
            continue;
        }
        let key = replay
            .dict
            .key(series)
            .map_or_else(|| format!("#{series}"), |k| k.as_str().to_string());
        let show = |c: Option<Cell>| match c {
            Some(c) => format!(
                "sum {} count {} min {} max {}",
                c.sum, c.count, c.min, c.max
            ),
            None => "nothing".into(),
        };
        // Name the segment(s) holding the coarse cell.
        let mut files = Vec::new();
        let mut cache = segment::BlockScratch::default();
        for s in &coarse_segs {
            let mut hit = false;
            s.scan_series(series, bucket, bucket + 1, &mut cache, &mut |_, _| {
                hit = true
            })?;
            if hit {
                files.push(format!(
                    "{SEGMENTS_DIR}/{}",
                    segment::file_name(s.meta().id)
                ));
            }
        }
        let file = if files.is_empty() {
            format!("{coarse} tier")
        } else {
            files.join(", ")
        };
        c.damage(
            &file,
            None,
            format!(
                "{coarse} cell of {key} at {}: stored {}, but its {fine} cells add up to {}",
                format_utc(coarse.start_of(bucket)),
                show(in_coarse),
                show(from_fine)
            ),
        );
    }
    if mismatches > MAX_ROLLUP_FINDINGS {
        c.damage(
            &format!("{coarse} tier"),
            None,
            format!(
                "{} more {coarse} cells disagree with their {fine} cells",
                mismatches - MAX_ROLLUP_FINDINGS
            ),
        );
    }
    match coarse {
        Tier::Hour => c.report.hours_checked += checked,
        _ => c.report.days_checked += checked,
    }
    Ok(())
}
