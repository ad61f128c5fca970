//! What [`verify`](super::verify) reports: findings by severity, the options it
//! runs with, its progress callback and the report with its counts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::fs::{FileSystem, OsFs};
use crate::time::Retention;

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

/// Everything [`verify`](super::verify()) found and how much it read.
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
