//! TallyDB's storage engine: exact counter rollups per minute, hour and day in an
//! LSM-style store with a write-ahead log. Synchronous, owns one data directory,
//! knows nothing of the network.
//!
//! A tour, in the order data flows:
//! - [`series`]: series keys and their naming rules; [`dict`]: key <-> id and the
//!   label index behind selectors.
//! - [`engine`]: [`Engine`], the API used by the server and the tools: `apply`
//!   batches (group commit), `range` / `total` / `top` / `series` queries, `flush`,
//!   `compact`, `snapshot`, `close`.
//! - [`wal`]: the write-ahead log (one checksummed record per batch);
//!   [`replay`]: re-applying it at open; [`dedup`]: producer sequences and event-id windows.
//! - [`memtable`]: recent cells in memory; [`segment`]: immutable, checksummed,
//!   compressed segment files read through `mmap`, their decoded blocks shared
//!   by queries in [`block_cache`]; [`manifest`]: the live set,
//!   replaced atomically.
//! - [`compaction`]: what to merge (a pure function) and the summing merge;
//!   [`query`]: query types and the pure planner choosing tiers per time range;
//!   [`sweep`]: the per-series sums behind totals and top-k, and the choice
//!   per source between looking series up and sweeping it in order.
//! - [`cell`], [`time`]: cells, tiers, buckets, retention, clocks;
//!   [`coding`]: byte encodings; [`format`]: the magic, version and
//!   checksum header every file format shares; [`fs`]: the file-access trait.
//! - Test support, compiled only for this crate's tests or with a cargo feature:
//!   `testing::FaultFs` (feature `testkit`) simulates crashes, failed I/O and full
//!   disks; `fuzzing` (feature `fuzzing`) holds the fuzz targets' properties.
//! - Operator tools (`tally-admin`): [`offline`]: read-only loading of a data
//!   directory no engine holds (WAL replayed in memory); [`verify`]: the
//!   integrity check (every checksum, every rollup); [`inspect`]: what a
//!   directory holds; [`backup`]: `BACKUP-MANIFEST`, and restore (verify, copy, swap).
//!
//! File formats are specified byte by byte in `docs/STORAGE.md`.

pub mod backup;
pub mod block_cache;
pub mod cell;
pub mod coding;
pub mod compaction;
pub mod dedup;
pub mod dict;
pub mod engine;
pub mod error;
pub mod format;
pub mod fs;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod manifest;
pub mod memtable;
pub mod offline;
pub mod options;
pub mod query;
pub mod replay;
pub mod segment;
pub mod series;
pub mod sweep;
#[cfg(any(test, feature = "testkit"))]
pub mod testing;
pub mod time;
pub mod verify;
pub mod wal;

pub use cell::Cell;
pub use dedup::EventId;
pub use engine::{
    ApplyOutcome, Batch, CompactOutcome, Durable, Engine, Event, FlushOutcome, Pending,
    ProducerSeq, Reason, RecoveryReport, Refused, Stats, Validation,
};
pub use error::{Error, Result};
pub use options::{FsyncPolicy, Options, DEFAULT_MIN_EVENT_MS};
pub use query::{
    Agg, Group, Matcher, Provenance, RangeQuery, RangeResult, Selector, Step, TopEntry, TopQuery,
    TopResult, TotalGroup, TotalGroupsResult, TotalResult, Value, CHILD_LABEL,
};
pub use series::{SeriesError, SeriesKey, SeriesKeyRef};
pub use time::{Clock, ManualClock, Retention, SystemClock, Tier};
