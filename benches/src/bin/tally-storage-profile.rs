//! Runs one storage workload in a loop for a fixed time, for a profiler:
//! builds its dataset first, prints the dataset's shape, then loops and prints
//! the mean time per operation.
//!
//! Run: `perf record -g target/release/tally-storage-profile total 10`
//! Workloads: `ingest`, `range`, `total`, `replay`, `merge`; the second argument
//! is the loop time in seconds (default 10).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use tallydb_benches::{
    build_minute_day, build_month, create_series, exact, options, random_batch, replay_options,
    segment_rows, tempdir, write_segment, write_wal_only, Rng, BASE_MS,
};
use tallydb_storage::compaction::MergeIter;
use tallydb_storage::fs::OsFs;
use tallydb_storage::segment::Segment;
use tallydb_storage::time::{DAY_MS, MINUTE_MS};
use tallydb_storage::{Agg, Clock, Engine, FsyncPolicy, RangeQuery, Stats, Step};

fn shape(s: &Stats) {
    println!(
        "segments per tier {:?}, cells {:?}, bytes {:?}",
        s.segments, s.segment_cells, s.segment_bytes
    );
}

fn run(secs: u64, mut f: impl FnMut() -> Result<(), Box<dyn Error>>) -> Result<(), Box<dyn Error>> {
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        f()?;
        n += 1;
    }
    let per = started.elapsed().as_secs_f64() / n as f64;
    println!("{n} operations, {:.3} us each", per * 1e6);
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "total".into());
    let secs: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let mut rng = Rng::new(3);
    match what.as_str() {
        "ingest" => {
            let dir = tempdir()?;
            let engine = Engine::open(dir.path(), options(FsyncPolicy::Never, true, None))?;
            let ids = create_series(&engine, 100_000)?;
            let batches: Vec<_> = (0..256)
                .map(|_| random_batch(&mut rng, &ids, 1_000, None))
                .collect();
            let mut i = 0;
            run(secs, || {
                i += 1;
                black_box(engine.apply(&batches[i % batches.len()])?);
                Ok(())
            })?;
        }
        "range" => {
            let ds = build_minute_day(10_000, 1_440, 3, 7)?;
            shape(&ds.engine.stats());
            run(secs, || {
                let s = rng.below(ds.ids.len() as u64) as usize;
                black_box(ds.engine.range(&RangeQuery {
                    selector: exact(s),
                    from: BASE_MS,
                    to: BASE_MS + DAY_MS,
                    step: Step::Fixed(MINUTE_MS),
                    agg: Agg::Sum,
                })?);
                Ok(())
            })?;
        }
        "total" => {
            let ds = build_month(1_000, 30, 10 * MINUTE_MS, 11)?;
            shape(&ds.engine.stats());
            let now = ds.clock.now_ms();
            run(secs, || {
                let s = rng.below(ds.ids.len() as u64) as usize;
                black_box(ds.engine.total(&exact(s), now - 30 * DAY_MS, now)?);
                Ok(())
            })?;
        }
        "replay" => {
            let dir = write_wal_only(100_000, 1_000_000, 5)?;
            run(secs, || {
                let e = Engine::open(dir.path(), replay_options())?;
                e.close()?;
                Ok(())
            })?;
        }
        "merge" => {
            let dir = tempdir()?;
            let mut segs = Vec::new();
            for k in 0..4i64 {
                let rows = segment_rows(0..2_000, k * 60..(k + 1) * 60, 3, 10 + k as u64);
                let p = dir.path().join(format!("{k}.seg"));
                write_segment(&OsFs, &p, k as u64 + 1, &rows, false)?;
                segs.push(Segment::open(&OsFs, &p)?);
            }
            run(secs, || {
                for r in MergeIter::new(&segs, i64::MIN) {
                    black_box(r?);
                }
                Ok(())
            })?;
        }
        other => return Err(format!("unknown workload {other}").into()),
    }
    Ok(())
}
