//! The properties checked by the fuzz targets in `storage/fuzz/` and by the corpus
//! replay test `storage/tests/fuzz_corpus.rs`: one copy of the logic, so a corpus file
//! that passes `cargo test` passes the fuzzer and the other way round.
//!
//! Each check takes arbitrary bytes as the contents of one file and panics (with the
//! story of the input) when a property does not hold. Everything runs on an in-memory
//! [`FaultFs`], so one execution costs microseconds. Not part of the crate's API:
//! hidden from the documentation and free to change. Compiled only with the
//! `fuzzing` feature.
//!
//! - `recovery`: target `wal_recovery` (scan, record, replay); `answers`: the engine
//!   opened on the fuzzed WAL and its answers against a model;
//! - `segment_file`: target `segment_open`; `seeds`: valid and damaged seed inputs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cell::Cell;
use crate::dedup::{DedupState, EventId};
use crate::dict::SeriesDict;
use crate::engine::{format_file_contents, Engine, FORMAT_FILE, MANIFEST_FILE, WAL_DIR};
use crate::error::Error;
use crate::fs::FileSystem;
use crate::manifest::Manifest;
use crate::query::{Agg, RangeQuery, Selector, Step, TopQuery, Value, TIME_LIMIT};
use crate::replay::{Replay, WalFileInfo};
use crate::segment::{
    self, BlockScratch, CellRow, Segment, SegmentMeta, SegmentWriter, HEADER_LEN,
};
use crate::series::SeriesKey;
use crate::testing::FaultFs;
use crate::time::{ManualClock, Retention, Tier, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::wal::{
    self, BatchHeader, BatchRecord, FileScan, LoggedEvent, ProducerMark, RECORD_BATCH,
    RECORD_HEADER_LEN, WAL_HEADER_LEN, WAL_MAGIC, WAL_VERSION,
};
use crate::Options;

/// The data directory inside every [`FaultFs`].
const DIR: &str = "/db";
/// Number of the fuzzed WAL file: the first one an engine writes.
const WAL_SEQ: u64 = 1;
/// The engine's clock: noon of some day in 2024.
const NOW: i64 = 19_800 * DAY_MS + 12 * HOUR_MS;
/// Producer idle time used by every replay (the engine's default).
const PRODUCER_IDLE_MS: i64 = 7 * DAY_MS;
/// Totals are asked over `LO..HI`: the widest day-aligned range inside the clamped
/// time range, which the planner serves from the day tier alone.
const LO: i64 = (-TIME_LIMIT).div_euclid(DAY_MS) * DAY_MS + DAY_MS;
const HI: i64 = TIME_LIMIT.div_euclid(DAY_MS) * DAY_MS;
/// Most series (and metric names) whose answers are checked one by one per input.
const CHECKED_SERIES: usize = 16;
const CHECKED_NAMES: usize = 8;
const CHECKED_RANGES: usize = 4;

fn wal_path() -> PathBuf {
    Path::new(DIR).join(WAL_DIR).join(wal::file_name(WAL_SEQ))
}

fn segment_path() -> PathBuf {
    Path::new(DIR).join("segments").join(segment::file_name(1))
}

/// What the replayed records say, computed independently of the memtable.
#[derive(Debug, Default)]
struct Model {
    /// Series keys by id.
    keys: Vec<String>,
    /// `(tier index, series, bucket) -> cell`.
    cells: BTreeMap<(usize, u32, i64), Cell>,
    /// `(series, ts, delta)` of every replayed event.
    events: Vec<(u32, i64, i64)>,
}

impl Model {
    /// Sum and count of the events of the series `keep` accepts with `ts` in `lo..hi`.
    fn total(&self, keep: impl Fn(u32) -> bool, lo: i64, hi: i64) -> (i64, u64) {
        self.events
            .iter()
            .filter(|(s, ts, _)| keep(*s) && (lo..hi).contains(ts))
            .fold((0i64, 0u64), |(sum, n), (_, _, d)| {
                (sum.wrapping_add(*d), n + 1)
            })
    }
}

fn assert_corrupt(e: &Error, path: &Path, len: u64) {
    match e {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file, path, "{e}");
            assert!(*offset < len.max(1), "{e} in a file of {len} bytes");
        }
        other => panic!("expected corruption of {}, got {other}", path.display()),
    }
}

mod answers;
mod recovery;
mod seeds;
mod segment_file;

use answers::*;

pub use recovery::check_wal_recovery;
pub use seeds::{seed_segments, seed_wal_files};
pub use segment_file::check_segment_open;
