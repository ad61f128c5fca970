//! End-to-end benchmarks of the storage engine through its public API:
//! ingest (`Engine::apply`), range and total queries over flushed and compacted
//! segments, label / all-series totals and top-k over 100,000 series, and WAL
//! replay at open.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench -p tallydb-benches --bench storage`
//! Sizes can be shrunk for a quick run with `TALLY_BENCH_SMALL=1`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tallydb_benches::{
    build_minute_day, build_month, build_query_dataset, create_series, exact, options, query_exact,
    random_batch, replay_options, tempdir, write_wal_only, QueryShape, Rng, BASE_MS,
};
use tallydb_storage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::{
    Agg, Clock, Engine, FsyncPolicy, Matcher, RangeQuery, Selector, Step, TopQuery,
};

fn small() -> bool {
    std::env::var_os("TALLY_BENCH_SMALL").is_some()
}

/// Batches of 1,000 unit increments over 100,000 pre-created series, on disk,
/// background threads on, system clock.
fn ingest(c: &mut Criterion) {
    const SERIES: usize = 100_000;
    const BATCH: usize = 1_000;
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, fsync, samples) in [
        ("fsync_never", FsyncPolicy::Never, 20),
        ("fsync_always", FsyncPolicy::Always, 10),
    ] {
        let dir = tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), options(fsync, true, None)).expect("open");
        let ids = create_series(&engine, SERIES).expect("series");
        let mut rng = Rng::new(1);
        let batches: Vec<_> = (0..256)
            .map(|_| random_batch(&mut rng, &ids, BATCH, None))
            .collect();
        let mut i = 0usize;
        g.sample_size(samples);
        g.bench_function(BenchmarkId::new("apply_1000x100k_series", name), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(engine.apply(&batches[i % batches.len()]).expect("apply"))
            })
        });
        engine.close().expect("close");
    }
    g.finish();
}

/// One series over one day of minute cells (step 1m, sum), from compacted
/// segments of a day of 10,000 series x 1,440 minutes.
fn range(c: &mut Criterion) {
    let (series, minutes) = if small() {
        (1_000, 1_440)
    } else {
        (10_000, 1_440)
    };
    let ds = build_minute_day(series, minutes, 3, 7).expect("dataset");
    let mut g = c.benchmark_group("query");
    g.sample_size(30);
    g.throughput(Throughput::Elements(1));
    let mut rng = Rng::new(3);
    g.bench_function(
        BenchmarkId::new("range_1d_step_1m_sum", format!("{series}x{minutes}")),
        |b| {
            b.iter(|| {
                let s = rng.below(series as u64) as usize;
                let r = ds
                    .engine
                    .range(&RangeQuery {
                        selector: exact(s),
                        from: BASE_MS,
                        to: BASE_MS + DAY_MS,
                        step: Step::Fixed(MINUTE_MS),
                        agg: Agg::Sum,
                    })
                    .expect("range");
                black_box(r)
            })
        },
    );
    drop(ds);

    let days = 30;
    let month_series = if small() { 100 } else { 1_000 };
    let ds = build_month(month_series, days, 10 * MINUTE_MS, 11).expect("dataset");
    let now = ds.clock.now_ms();
    g.bench_function(
        BenchmarkId::new("total_30d", format!("{month_series}_series")),
        |b| {
            b.iter(|| {
                let s = rng.below(month_series as u64) as usize;
                let t = ds
                    .engine
                    .total(&exact(s), now - days * DAY_MS, now)
                    .expect("total");
                black_box(t)
            })
        },
    );
    g.finish();
}

/// Queries over the dataset of `build_query_dataset`: 100,000 series with the
/// last hour in two minute segments plus the memtable, 1,000 of them with 30
/// days of history.
fn many_series(c: &mut Criterion) {
    let shape = QueryShape {
        series: if small() { 10_000 } else { 100_000 },
        history_series: if small() { 100 } else { 1_000 },
        history_every_ms: if small() { 10 * MINUTE_MS } else { MINUTE_MS },
        max_count: 3,
        max_delta: 1,
        group_size: 1_000,
    };
    let (ds, now, _) = build_query_dataset(&shape, 17).expect("dataset");
    let e = &ds.engine;
    let mut rng = Rng::new(9);
    let groups = (shape.series / shape.group_size) as u64;
    let metric = |matchers: Vec<Matcher>| Selector::Metric {
        name: "bench_q".into(),
        matchers,
        group_by: Vec::new(),
    };
    let mut g = c.benchmark_group("query_many");
    g.sample_size(20);
    let n = shape.series;
    g.bench_function(BenchmarkId::new("total_30d_one_series", n), |b| {
        b.iter(|| {
            let s = rng.below(shape.history_series as u64) as usize;
            black_box(
                e.total(&query_exact(s, &shape), now - 30 * DAY_MS, now)
                    .expect("total"),
            )
        })
    });
    for label in ["g", "c"] {
        g.bench_function(
            BenchmarkId::new(format!("total_1h_label_{label}"), n),
            |b| {
                b.iter(|| {
                    let v = format!("{:04}", rng.below(groups));
                    let sel = metric(vec![Matcher::Eq(label.into(), v)]);
                    black_box(e.total(&sel, now - HOUR_MS, now).expect("total"))
                })
            },
        );
    }
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("total_1h_all", n), |b| {
        b.iter(|| {
            black_box(
                e.total(&metric(Vec::new()), now - HOUR_MS, now)
                    .expect("total"),
            )
        })
    });
    g.bench_function(BenchmarkId::new("top10_1h_all", n), |b| {
        b.iter(|| {
            black_box(
                e.top(&TopQuery {
                    selector: metric(Vec::new()),
                    from: now - HOUR_MS,
                    to: now,
                    n: 10,
                    by_label: None,
                })
                .expect("top"),
            )
        })
    });
    g.finish();
}

/// `Engine::open` of a directory holding 1,000,000 logged, never flushed
/// increments over 100,000 series.
fn replay(c: &mut Criterion) {
    let events = if small() { 200_000 } else { 1_000_000 };
    let dir = write_wal_only(100_000, events, 5).expect("wal");
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function(BenchmarkId::new("open_replay_wal", events), |b| {
        b.iter(|| {
            let e = Engine::open(dir.path(), replay_options()).expect("open");
            assert_eq!(e.recovery().events_replayed, events as u64);
            e.close().expect("close");
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = ingest, range, many_series, replay
}
criterion_main!(benches);
