//! Shared helpers for TallyDB's storage benchmarks and the figures binary.
//!
//! The crate's targets:
//! - `benches/storage.rs` (criterion): ingest through `Engine::apply` with fsync
//!   `never` and `always`, a one-day range query and a 30-day total over
//!   compacted segments, WAL replay at open.
//! - `benches/micro.rs` (criterion): segment encode and decode, memtable add,
//!   the compaction merge.
//! - `benches/protocol.rs` (criterion): encode and decode of `INCR` (keys and
//!   aliases, 1 and 1,000 events), `INCR_OK` and a one-day `RANGE_OK`.
//! - `tally-storage-figures`: bytes on disk per cell after compaction, WAL bytes
//!   per increment and WAL replay speed, printed as a table with the command
//!   that reproduces it.
//! - `tally-storage-profile`: one workload in a loop, to run under a profiler.
//! - `tally-bench` ([`load`]): the load generator, driving a real `tallyd` over the
//!   wire protocol (see `docs/BENCHMARKS.md`).
//! - `tally-hostile`: a real `tallyd` under hostile clients on loopback: RSS under
//!   six connections flooding large answers they never read, and the time for a
//!   fresh client to be served beside 1,024 silent sockets.
//! - `tally-peers-vm` ([`peers`]): the same dataset and queries against
//!   VictoriaMetrics and a private `tallyd`, run by `benches/peers/run.sh`.
//!
//! Helpers here:
//! - [`Rng`]: a tiny deterministic generator (SplitMix64), so every run of a
//!   benchmark writes the same data without pulling in a `rand` dependency.
//! - [`options`]: engine options for benchmarks (fsync policy, background
//!   threads, an optional [`ManualClock`]).
//! - [`create_series`], [`random_batch`]: pre-created series ids and batches of
//!   unit increments spread uniformly over them.
//! - [`build_minute_day`]: one UTC day of minute cells for many series, written
//!   minute by minute through [`Engine::apply`] with a manual clock, then
//!   flushed and compacted (the range-query and bytes-per-cell dataset).
//! - [`build_month`]: thirty days of data for a few series under the default
//!   retention (the total-query dataset).
//! - [`write_wal_only`]: N increments logged to the WAL and never flushed, for
//!   replay-at-open timing.
//! - [`segment_rows`], [`write_segment`]: sorted cell rows and segment files for
//!   the encode, decode and merge micro-benchmarks.
//!
//! Everything runs on the real file system ([`tallydb_storage::fs::OsFs`]) in
//! temporary directories unless a helper says otherwise.

pub mod load;
pub mod peers;

use std::path::Path;
use std::sync::Arc;

use tallydb_storage::fs::FileSystem;
use tallydb_storage::segment::{CellRow, Segment, SegmentMeta, SegmentWriter};
use tallydb_storage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::{
    Batch, Cell, Engine, Event, FsyncPolicy, ManualClock, Options, Result, Selector, Tier,
};

/// Midnight UTC of 2024-01-01, the start of every synthetic dataset.
pub const BASE_MS: i64 = 19_723 * DAY_MS;

/// SplitMix64: deterministic, fast, good enough to spread keys and counts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Engine options for a benchmark: the given fsync policy and background
/// switch, the real file system, and `clock` when given (else the system clock).
pub fn options(fsync: FsyncPolicy, background: bool, clock: Option<&ManualClock>) -> Options {
    let mut o = Options {
        fsync,
        background,
        ..Options::default()
    };
    if let Some(c) = clock {
        o.clock = Arc::new(c.clone());
    }
    o
}

/// The key of benchmark series `i`: `bench_hits{s=000042}`.
pub fn series_key(i: usize) -> String {
    format!("bench_hits{{s={i:06}}}")
}

/// Creates `n` series and returns their ids, in key order.
pub fn create_series(engine: &Engine, n: usize) -> Result<Vec<u32>> {
    (0..n).map(|i| engine.series_id(&series_key(i))).collect()
}

/// An exact selector of benchmark series `i`.
pub fn exact(i: usize) -> Selector {
    Selector::Exact(series_key(i))
}

/// `n` unit increments of uniformly random series from `ids` at `ts`.
pub fn random_batch(rng: &mut Rng, ids: &[u32], n: usize, ts: Option<i64>) -> Batch {
    let events = (0..n)
        .map(|_| Event {
            series: ids[rng.below(ids.len() as u64) as usize],
            delta: 1,
            ts,
            id: None,
        })
        .collect();
    Batch {
        producer: None,
        events,
    }
}

/// A data directory with an open engine, kept alive together.
#[derive(Debug)]
pub struct Dataset {
    /// The engine (dropped before the directory).
    pub engine: Engine,
    /// The manual clock the engine reads.
    pub clock: ManualClock,
    /// Ids of the series written, indexed like [`series_key`].
    pub ids: Vec<u32>,
    /// Increments written.
    pub events: u64,
    /// Cells of the minute tier written (distinct series-minutes).
    pub minute_cells: u64,
    /// The temporary data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

/// Writes one UTC day (from [`BASE_MS`]) of `series` x `minutes` minute cells,
/// each holding between 1 and `max_count` unit increments (uniformly random)
/// with timestamps spread over its minute. The manual clock follows the data;
/// the memtable is flushed every hour of data, then everything is flushed and
/// compacted. The engine runs with fsync `never` and no background threads.
pub fn build_minute_day(
    series: usize,
    minutes: usize,
    max_count: u64,
    seed: u64,
) -> Result<Dataset> {
    let dir = tempdir()?;
    let clock = ManualClock::new(BASE_MS);
    let engine = Engine::open(dir.path(), options(FsyncPolicy::Never, false, Some(&clock)))?;
    let ids = create_series(&engine, series)?;
    let mut rng = Rng::new(seed);
    let mut events = 0u64;
    let mut batch = Batch::default();
    for m in 0..minutes as i64 {
        let start = BASE_MS + m * MINUTE_MS;
        clock.set(start + MINUTE_MS - 1);
        batch.events.clear();
        for id in &ids {
            let n = 1 + rng.below(max_count);
            for _ in 0..n {
                batch.events.push(Event {
                    series: *id,
                    delta: 1,
                    ts: Some(start + rng.below(MINUTE_MS as u64) as i64),
                    id: None,
                });
            }
        }
        events += batch.events.len() as u64;
        engine.apply(&batch)?;
        if (m + 1) % 60 == 0 {
            engine.flush()?;
        }
    }
    clock.set(BASE_MS + minutes as i64 * MINUTE_MS + MINUTE_MS);
    engine.flush()?;
    compact_fully(&engine)?;
    Ok(Dataset {
        engine,
        clock,
        ids,
        events,
        minute_cells: (series * minutes) as u64,
        dir,
    })
}

/// From [`BASE_MS`] until `end`, one event per series of `ids` every `every_ms`
/// with a random delta in 1..=10, flushed at the end of each day and compacted
/// every week; returns the events written.
fn write_history(
    engine: &Engine,
    clock: &ManualClock,
    ids: &[u32],
    end: i64,
    every_ms: i64,
    rng: &mut Rng,
) -> Result<u64> {
    let mut events = 0u64;
    let mut batch = Batch::default();
    let mut t = BASE_MS;
    let mut day = 0;
    while t < end && !ids.is_empty() {
        clock.set(t + every_ms - 1);
        batch.events.clear();
        for id in ids {
            batch.events.push(Event {
                series: *id,
                delta: 1 + rng.below(10) as i64,
                ts: Some(t + rng.below(every_ms as u64) as i64),
                id: None,
            });
        }
        events += batch.events.len() as u64;
        engine.apply(&batch)?;
        t += every_ms;
        let d = (t - BASE_MS) / DAY_MS;
        if d != day {
            day = d;
            engine.flush()?;
            if day % 7 == 0 {
                compact_fully(engine)?;
            }
        }
    }
    Ok(events)
}

/// Writes `days` days (from [`BASE_MS`]) of increments to `series` series, one
/// event per series every `every_ms` with a random delta in 1..=10, under the
/// default retention: flushed at the end of each day, compacted every week and
/// at the end. The clock then reads the end of the data, `days` days plus
/// 5 h 17 min after [`BASE_MS`], so a 30-day total is planned as minute, hour
/// and day pieces.
pub fn build_month(series: usize, days: i64, every_ms: i64, seed: u64) -> Result<Dataset> {
    let dir = tempdir()?;
    let clock = ManualClock::new(BASE_MS);
    let engine = Engine::open(dir.path(), options(FsyncPolicy::Never, false, Some(&clock)))?;
    let ids = create_series(&engine, series)?;
    let mut rng = Rng::new(seed);
    let end = BASE_MS + days * DAY_MS + 5 * HOUR_MS + 17 * MINUTE_MS;
    let events = write_history(&engine, &clock, &ids, end, every_ms, &mut rng)?;
    clock.set(end);
    engine.flush()?;
    compact_fully(&engine)?;
    Ok(Dataset {
        engine,
        clock,
        ids,
        events,
        minute_cells: 0,
        dir,
    })
}

/// Shape of the query dataset built by [`build_query_dataset`].
#[derive(Debug, Clone, Copy)]
pub struct QueryShape {
    /// Series written in the last hour (all of them).
    pub series: usize,
    /// Series `0..history_series` also get 30 days of history before that hour.
    pub history_series: usize,
    /// One event per history series every this many ms.
    pub history_every_ms: i64,
    /// Increments per series and minute in the last hour: uniform in `1..=max_count`.
    pub max_count: u64,
    /// Delta of each increment in the last hour: uniform in `1..=max_delta`
    /// (1: unit increments, the compact cells of the memtable and segments).
    pub max_delta: u64,
    /// Series per value of the `g` and `c` labels.
    pub group_size: usize,
}

/// Days of history in [`build_query_dataset`].
pub const QUERY_HISTORY_DAYS: i64 = 30;

/// The key of query-dataset series `i` of `n`: `bench_q{c=..,g=..,s=..}`.
/// Label `c` groups `group_size` consecutive ids (contiguous in every segment),
/// label `g` takes every `n / group_size`-th id (spread over every block).
pub fn query_series_key(i: usize, n: usize, group_size: usize) -> String {
    let groups = (n / group_size.max(1)).max(1);
    format!(
        "bench_q{{c={:04},g={:04},s={i:06}}}",
        i / group_size.max(1),
        i % groups
    )
}

/// An exact selector of query-dataset series `i`.
pub fn query_exact(i: usize, shape: &QueryShape) -> Selector {
    Selector::Exact(query_series_key(i, shape.series, shape.group_size))
}

/// The dataset of the query-latency figures. Series `0..history_series` get
/// [`QUERY_HISTORY_DAYS`] days of history (one event every `history_every_ms`
/// with a delta in 1..=10; flushed daily, compacted weekly, as a live engine
/// would), then every series gets one hour of minute cells (1..=`max_count`
/// unit increments per minute). That hour is flushed after 20 and 40 minutes
/// and not compacted, so it lies in two minute segments plus the memtable.
/// The clock ends at the end of that hour, 10 h 30 min into a UTC day, so that
/// "the last hour" is planned as minute pieces. Returns the dataset and the end
/// time (`now`) and the number of increments in the last hour.
pub fn build_query_dataset(shape: &QueryShape, seed: u64) -> Result<(Dataset, i64, u64)> {
    let dir = tempdir()?;
    let clock = ManualClock::new(BASE_MS);
    let engine = Engine::open(dir.path(), options(FsyncPolicy::Never, false, Some(&clock)))?;
    let ids: Vec<u32> = (0..shape.series)
        .map(|i| engine.series_id(&query_series_key(i, shape.series, shape.group_size)))
        .collect::<Result<_>>()?;
    let mut rng = Rng::new(seed);
    let end = BASE_MS + QUERY_HISTORY_DAYS * DAY_MS + 10 * HOUR_MS + 30 * MINUTE_MS;
    let hour_start = end - HOUR_MS;
    let every = shape.history_every_ms.max(1);
    let history = &ids[..shape.history_series.min(ids.len())];
    let mut events = write_history(&engine, &clock, history, hour_start, every, &mut rng)?;
    let mut batch = Batch::default();
    engine.flush()?;
    compact_fully(&engine)?;
    let mut minute_cells = 0u64;
    let history_events = events;
    for m in 0..60 {
        let start = hour_start + m * MINUTE_MS;
        clock.set(start + MINUTE_MS - 1);
        batch.events.clear();
        for id in &ids {
            let n = 1 + rng.below(shape.max_count);
            for _ in 0..n {
                let delta = if shape.max_delta > 1 {
                    1 + rng.below(shape.max_delta) as i64
                } else {
                    1
                };
                batch.events.push(Event {
                    series: *id,
                    delta,
                    ts: Some(start + rng.below(MINUTE_MS as u64) as i64),
                    id: None,
                });
            }
        }
        minute_cells += ids.len() as u64;
        events += batch.events.len() as u64;
        engine.apply(&batch)?;
        if m == 19 || m == 39 {
            engine.flush()?;
        }
    }
    clock.set(end);
    Ok((
        Dataset {
            engine,
            clock,
            ids,
            events,
            minute_cells,
            dir,
        },
        end,
        events - history_events,
    ))
}

/// Latency percentiles of repeated runs of one operation.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Runs measured.
    pub runs: usize,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Largest, in microseconds.
    pub max_us: f64,
    /// Mean, in microseconds.
    pub mean_us: f64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} us, p99 {:.1} us, max {:.1} us, mean {:.1} us ({} runs)",
            self.p50_us, self.p99_us, self.max_us, self.mean_us, self.runs
        )
    }
}

/// Runs `op(i)` for i = 0, 1, ... (after `warmup` untimed runs) until `max_runs`
/// runs or `max_time` have passed, and returns the latency percentiles.
pub fn measure<E>(
    warmup: usize,
    max_runs: usize,
    max_time: std::time::Duration,
    mut op: impl FnMut(usize) -> std::result::Result<(), E>,
) -> std::result::Result<Latency, E> {
    for i in 0..warmup {
        op(i)?;
    }
    let until = std::time::Instant::now() + max_time;
    let mut us: Vec<f64> = Vec::with_capacity(max_runs.min(1 << 20));
    while us.len() < max_runs.max(1) && (us.is_empty() || std::time::Instant::now() < until) {
        let started = std::time::Instant::now();
        op(warmup + us.len())?;
        us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1];
    Ok(Latency {
        runs: us.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
        mean_us: us.iter().sum::<f64>() / us.len() as f64,
    })
}

/// Runs [`Engine::compact`] until a round does nothing.
pub fn compact_fully(engine: &Engine) -> Result<u64> {
    let mut tasks = 0u64;
    loop {
        let out = engine.compact()?;
        if out.tasks == 0 {
            return Ok(tasks);
        }
        tasks += out.tasks as u64;
    }
}

/// Logs `events` unit increments (batches of 1,000 over `series` series, clock
/// fixed) into a fresh data directory with fsync `never` and no background
/// threads, never flushing, then closes the engine. Returns the directory.
pub fn write_wal_only(series: usize, events: usize, seed: u64) -> Result<tempfile::TempDir> {
    let dir = tempdir()?;
    let clock = ManualClock::new(BASE_MS);
    let engine = Engine::open(dir.path(), options(FsyncPolicy::Never, false, Some(&clock)))?;
    let ids = create_series(&engine, series)?;
    let mut rng = Rng::new(seed);
    let mut left = events;
    while left > 0 {
        let n = left.min(1_000);
        engine.apply(&random_batch(&mut rng, &ids, n, None))?;
        left -= n;
    }
    engine.close()?;
    Ok(dir)
}

/// Options to reopen a directory made by [`write_wal_only`].
pub fn replay_options() -> Options {
    options(
        FsyncPolicy::Never,
        false,
        Some(&ManualClock::new(BASE_MS + MINUTE_MS)),
    )
}

/// Sorted minute rows for the series in `series` and the minutes in
/// `minutes` (counted from [`BASE_MS`]), each a cell of 1..=`max_count` unit
/// increments.
pub fn segment_rows(
    series: std::ops::Range<u32>,
    minutes: std::ops::Range<i64>,
    max_count: u64,
    seed: u64,
) -> Vec<CellRow> {
    let mut rng = Rng::new(seed);
    let first = Tier::Minute.bucket_of(BASE_MS);
    let mut rows = Vec::with_capacity(series.len() * minutes.clone().count());
    for s in series {
        for b in minutes.clone() {
            let n = 1 + rng.below(max_count);
            rows.push(CellRow {
                series: s,
                bucket: first + b,
                cell: Cell {
                    sum: n as i64,
                    count: n,
                    min: 1,
                    max: 1,
                },
            });
        }
    }
    rows
}

/// Writes `rows` (sorted) as minute segment `id` at `path`: lz4 blocks when
/// `cold` is false, zstd when true.
pub fn write_segment(
    fs: &dyn FileSystem,
    path: &Path,
    id: u64,
    rows: &[CellRow],
    cold: bool,
) -> Result<SegmentMeta> {
    let cold_before = if cold { i64::MAX } else { i64::MIN };
    let mut w = SegmentWriter::create(fs, path, id, Tier::Minute, cold_before)?;
    for r in rows {
        w.push(*r)?;
    }
    w.finish()
}

/// Opens `path` and counts its cells by decoding every block.
pub fn read_all(fs: &dyn FileSystem, path: &Path) -> Result<u64> {
    let seg = Segment::open(fs, path)?;
    let mut n = 0u64;
    for r in seg.iter() {
        r?;
        n += 1;
    }
    Ok(n)
}

/// A temporary directory on the real file system (under `$TMPDIR`).
pub fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("tally-bench-")
        .tempdir()
        .map_err(|e| tallydb_storage::Error::io("create temp dir", Path::new("."), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(9);
        let mut seen = [false; 5];
        for _ in 0..1_000 {
            let v = rng.below(5) as usize;
            assert!(v < 5);
            seen[v] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn minute_day_dataset_holds_every_increment_once() {
        let ds = build_minute_day(12, 90, 3, 1).expect("dataset");
        let st = ds.engine.stats();
        assert_eq!(st.memtable_cells, 0);
        assert_eq!(st.segment_cells[Tier::Minute.index()], 12 * 90);
        assert_eq!(st.segment_cells[Tier::Hour.index()], 12 * 2);
        let all = Selector::Prefix("bench_hits".into());
        let t = ds
            .engine
            .total(&all, BASE_MS, BASE_MS + 90 * MINUTE_MS)
            .expect("total");
        assert_eq!(t.count, ds.events);
        assert_eq!(t.sum, ds.events as i64);
    }

    #[test]
    fn wal_only_directory_replays_every_increment() {
        let dir = write_wal_only(50, 2_500, 2).expect("wal");
        let e = Engine::open(dir.path(), replay_options()).expect("open");
        assert_eq!(e.recovery().events_replayed, 2_500);
        assert_eq!(e.stats().segments, [0, 0, 0]);
        e.close().expect("close");
    }
}
