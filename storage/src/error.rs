//! The engine's typed errors.

use std::io;
use std::path::PathBuf;

use crate::series::SeriesError;

/// Everything that can go wrong in the engine, each variant saying what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another engine in this one) holds the data directory.
    #[error("data directory {path} is locked by another process (is a tallyd or tally-admin already using it?)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory was written by an incompatible format version.
    #[error("data directory {path} has format {found:?}; this build reads format {expected}")]
    UnsupportedFormat {
        /// The format file.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// The version this build understands.
        expected: u32,
    },
    /// A file was written by a format version this build does not read (its
    /// header is otherwise intact).
    #[error(
        "{file}: {what} format version {found}, this build reads {}",
        crate::format::versions(supported)
    )]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// What the file is ("segment file").
        what: &'static str,
        /// The version the file declares.
        found: u16,
        /// The versions this build reads.
        supported: &'static [crate::format::Version],
    },
    /// Stored bytes fail a check: a checksum, a magic number, a length, a field.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record, block or field.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A series key broke a naming rule.
    #[error("event {index}: invalid series: {source}")]
    InvalidSeries {
        /// Position of the event in its batch (0 for a lone key).
        index: usize,
        /// The rule broken.
        #[source]
        source: SeriesError,
    },
    /// An event refers to a series id the engine never issued.
    #[error("event {index}: unknown series id {id}")]
    UnknownSeriesId {
        /// Position of the event in its batch.
        index: usize,
        /// The id.
        id: u32,
    },
    /// An event is older than every tier's retention.
    #[error("event {index}: timestamp {ts} ms is older than every tier's retention (oldest accepted now: {oldest} ms)")]
    TooOld {
        /// Position of the event in its batch.
        index: usize,
        /// The event's timestamp.
        ts: i64,
        /// The oldest timestamp any tier accepts.
        oldest: i64,
    },
    /// An event is older than the configured minimum event time: almost always
    /// seconds sent as milliseconds, or zero.
    #[error("event {index}: timestamp {ts} ms is before the minimum event time of {min_ms} ms ({min})", min = utc_day(*min_ms))]
    TooEarly {
        /// Position of the event in its batch.
        index: usize,
        /// The event's timestamp.
        ts: i64,
        /// The configured limit.
        min_ms: i64,
    },
    /// Counting an event could overflow a cell: the whole batch is refused and
    /// nothing of it is counted.
    #[error("event {index}: counting it could overflow the {what} of series {series} in the {tier} cell starting at {bucket_start} ms (and the finer cells inside it); the batch was refused")]
    CellOverflow {
        /// Position of the event in its batch.
        index: usize,
        /// The series key.
        series: String,
        /// The tier whose cell bounds the check.
        tier: &'static str,
        /// Start of that cell's bucket (ms).
        bucket_start: i64,
        /// `sum` or `count`.
        what: &'static str,
    },
    /// A total over many cells does not fit the answer's `i64`.
    #[error("the {what} of the selected cells does not fit a 64-bit integer (it is {value})")]
    TotalOverflow {
        /// What overflowed (`total`, `range point`, `top entry`).
        what: &'static str,
        /// The exact value.
        value: i128,
    },
    /// An event is further in the future than the allowed clock skew.
    #[error("event {index}: timestamp {ts} ms is more than the allowed skew of {skew_ms} ms ahead of the server clock ({now} ms)")]
    TooFarInFuture {
        /// Position of the event in its batch.
        index: usize,
        /// The event's timestamp.
        ts: i64,
        /// The engine's clock.
        now: i64,
        /// The configured limit.
        skew_ms: i64,
    },
    /// A producer sequence older than every sequence remembered for that producer:
    /// it cannot be told whether it was applied, so it is refused rather than
    /// risk counting it twice.
    #[error("producer {producer}: sequence {seq} is older than the oldest remembered ({oldest}); it may have been applied already")]
    SequenceTooOld {
        /// The producer id.
        producer: u64,
        /// The sequence sent.
        seq: u64,
        /// The oldest sequence remembered.
        oldest: u64,
    },
    /// A batch holds more events than allowed.
    #[error("batch of {events} events is larger than the limit of {max}")]
    BatchTooLarge {
        /// Events in the batch.
        events: usize,
        /// The limit.
        max: usize,
    },
    /// A query is malformed (bad range, step, selector, limit).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Invalid engine options.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Writes are refused after a failed fsync or write; reads still work.
    #[error("writes are refused since an earlier failure could not be made durable: {reason}; restart to recover from the write-ahead log")]
    Poisoned {
        /// The original failure.
        reason: String,
    },
    /// Writes are refused for now: the disk is full. Batches already accepted are
    /// kept in memory and written once space returns; nothing is lost.
    #[error(
        "writes are refused while the disk is full ({reason}); they resume once space is freed"
    )]
    DiskFull {
        /// The failure that stopped writes.
        reason: String,
    },
    /// The engine is closed.
    #[error("the storage engine is closed")]
    Closed,
    /// The compaction policy kept choosing work past the most tasks the live
    /// segments can need: it does not converge, so the run stopped.
    #[error("compaction stopped after {tasks} tasks: the policy kept choosing work past the most the live segments can need")]
    CompactionRunaway {
        /// Tasks run before stopping.
        tasks: usize,
    },
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A corruption error at `offset` of `file`.
    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True if the error reports a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => is_no_space(source),
            Error::DiskFull { .. } => true,
            Error::Poisoned { reason } => reason.contains("No space left"),
            _ => false,
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a time in ms, for messages.
fn utc_day(ms: i64) -> String {
    let (y, m, d) = crate::time::civil_from_days(ms.div_euclid(crate::time::DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// True for the I/O errors of a full disk or an exhausted quota (`ENOSPC`, `EDQUOT`):
/// failures that end once space is freed.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
}
