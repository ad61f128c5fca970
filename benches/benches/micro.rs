//! Micro-benchmarks of the storage engine's parts: segment block encode and
//! decode, memtable apply, and the compaction merge.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench -p tallydb-benches --bench micro`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tallydb_benches::{read_all, segment_rows, tempdir, write_segment, Rng, BASE_MS};
use tallydb_storage::compaction::MergeIter;
use tallydb_storage::fs::OsFs;
use tallydb_storage::memtable::Memtable;
use tallydb_storage::segment::{Segment, SegmentWriter};
use tallydb_storage::testing::FaultFs;
use tallydb_storage::Tier;

/// 200 series x 1,440 minutes = 288,000 cells of 1..=3 unit increments.
const SERIES: u32 = 200;
const MINUTES: i64 = 1_440;

fn segment(c: &mut Criterion) {
    let rows = segment_rows(0..SERIES, 0..MINUTES, 3, 1);
    let cells = rows.len() as u64;
    let mut g = c.benchmark_group("segment");
    g.sample_size(20);
    g.throughput(Throughput::Elements(cells));
    let mut n = 0u64;
    for (name, cold) in [("lz4", false), ("zstd", true)] {
        // In memory: encoding and compression only.
        g.bench_function(BenchmarkId::new("encode_in_memory", name), |b| {
            b.iter_batched(
                FaultFs::new,
                |fs| {
                    n += 1;
                    let p = Path::new("/s.seg");
                    black_box(write_segment(&fs, p, n, &rows, cold).expect("write"))
                },
                BatchSize::SmallInput,
            )
        });
    }
    // A real temporary file, including the fsync at finish.
    let dir = tempdir().expect("temp dir");
    g.bench_function(BenchmarkId::new("encode_temp_file", "lz4"), |b| {
        b.iter(|| {
            n += 1;
            let p = dir.path().join(format!("{n}.seg"));
            let meta = write_segment(&OsFs, &p, n, &rows, false).expect("write");
            std::fs::remove_file(&p).expect("remove");
            black_box(meta)
        })
    });
    for (name, cold) in [("lz4", false), ("zstd", true)] {
        let p = dir.path().join(format!("read-{name}.seg"));
        write_segment(&OsFs, &p, 1, &rows, cold).expect("write");
        g.bench_function(BenchmarkId::new("open_and_decode_all", name), |b| {
            b.iter(|| {
                let got = read_all(&OsFs, &p).expect("read");
                assert_eq!(got, cells);
            })
        });
    }
    g.finish();
}

fn memtable(c: &mut Criterion) {
    const N: usize = 100_000;
    const BATCH: usize = 1_000;
    let mut rng = Rng::new(2);
    let series: Vec<u32> = (0..64 * BATCH)
        .map(|_| rng.below(N as u64) as u32)
        .collect();
    let ts = BASE_MS + 30_000;
    let mut g = c.benchmark_group("memtable");
    g.sample_size(30);
    g.throughput(Throughput::Elements(BATCH as u64));
    // Steady state: every series already has its cells for the current minute.
    let mut m = Memtable::new();
    for s in 0..N as u32 {
        m.add(s, ts, 1, 0b111);
    }
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("add_all_tiers", "100k_series"), |b| {
        b.iter(|| {
            let at = (i % 64) * BATCH;
            i += 1;
            for s in &series[at..at + BATCH] {
                m.add(*s, ts, 1, 0b111);
            }
        })
    });
    // Each increment opens a new minute cell (a new minute begins).
    let mut m = Memtable::new();
    let mut minute = 0i64;
    g.bench_function(BenchmarkId::new("add_new_minute", "100k_series"), |b| {
        b.iter(|| {
            let at = (i % 64) * BATCH;
            i += 1;
            minute += 1;
            let t = ts + minute * 60_000;
            for s in &series[at..at + BATCH] {
                m.add(*s, t, 1, 0b111);
            }
        })
    });
    black_box(m.cells());
    g.finish();
}

/// Four segments, each one hour of the same 2,000 series (as four hourly
/// flushes leave them), merged into one.
fn compaction(c: &mut Criterion) {
    let dir = tempdir().expect("temp dir");
    let mut segs: Vec<Arc<Segment>> = Vec::new();
    for k in 0..4i64 {
        let rows = segment_rows(0..2_000, k * 60..(k + 1) * 60, 3, 10 + k as u64);
        let p = dir.path().join(format!("{k}.seg"));
        write_segment(&OsFs, &p, k as u64 + 1, &rows, false).expect("write");
        segs.push(Segment::open(&OsFs, &p).expect("open"));
    }
    let cells: u64 = segs.iter().map(|s| s.meta().cells).sum();
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10);
    g.throughput(Throughput::Elements(cells));
    g.bench_function(BenchmarkId::new("merge_iter", "4x120k_cells"), |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in MergeIter::new(&segs, i64::MIN) {
                black_box(r.expect("row"));
                n += 1;
            }
            assert_eq!(n, cells);
        })
    });
    g.bench_function(
        BenchmarkId::new("merge_and_write_in_memory", "4x120k_cells"),
        |b| {
            b.iter_batched(
                FaultFs::new,
                |fs| {
                    let mut w = SegmentWriter::create(
                        &fs,
                        Path::new("/out.seg"),
                        99,
                        Tier::Minute,
                        i64::MIN,
                    )
                    .expect("create");
                    for r in MergeIter::new(&segs, i64::MIN) {
                        w.push(r.expect("row")).expect("push");
                    }
                    black_box(w.finish().expect("finish"))
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = segment, memtable, compaction
}
criterion_main!(benches);
