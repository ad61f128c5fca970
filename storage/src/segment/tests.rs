//! Segment tests: cells round-trip through every codec, partial decodes and
//! sweeps agree with full decodes, and the cache of decoded blocks keeps its
//! bound.

use super::block::skip_varints;
use super::*;
use crate::block_cache::BlockCache;
use crate::cell::Cell;
use crate::coding::put_uvarint;
use crate::error::Result;
use crate::sweep::Sums;
use crate::testing::FaultFs;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn cell_strategy() -> impl Strategy<Value = Cell> {
    prop_oneof![
        (1u64..100).prop_map(|n| Cell {
            sum: n as i64,
            count: n,
            min: 1,
            max: 1
        }),
        (-9i64..9, 1u64..5).prop_map(|(d, n)| Cell {
            sum: d * n as i64,
            count: n,
            min: d,
            max: d
        }),
        (any::<i64>(), 1u64..u64::MAX, any::<i64>(), any::<i64>()).prop_map(
            |(sum, count, a, b)| Cell {
                sum,
                count,
                min: a.min(b),
                max: a.max(b)
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn cells_round_trip_and_scans_touch_only_their_range(
        cells in prop::collection::btree_map((0u32..300, -5000i64..5000), cell_strategy(), 1..9000),
        probe in (0u32..300, -6000i64..6000, 0i64..3000),
        cold in any::<bool>(),
    ) {
        let fs = FaultFs::new();
        let path = Path::new("x.seg");
        let cold_before = if cold { i64::MAX } else { i64::MIN };
        let mut w = SegmentWriter::create(&fs, path, 9, Tier::Hour, cold_before).expect("create");
        for ((series, bucket), cell) in &cells {
            w.push(CellRow { series: *series, bucket: *bucket, cell: *cell }).expect("push");
        }
        let meta = w.finish().expect("finish");
        prop_assert_eq!(meta.cells, cells.len() as u64);
        let seg = Segment::open(&fs, path).expect("open");
        prop_assert_eq!(seg.meta(), &meta);
        let all: BTreeMap<(u32, i64), Cell> = seg
            .iter()
            .map(|r| r.map(|r| ((r.series, r.bucket), r.cell)))
            .collect::<Result<_>>()
            .expect("iterate");
        prop_assert_eq!(&all, &cells);
        let (series, from, len) = probe;
        let mut got = Vec::new();
        let mut cache = BlockScratch::default();
        seg.scan_series(series, from, from + len, &mut cache, &mut |b, c| got.push((b, *c))).expect("scan");
        let want: Vec<(i64, Cell)> = cells
            .range((series, from)..(series, from + len))
            .map(|((_, b), c)| (*b, *c))
            .collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Decoding one series' run equals decoding the whole block and keeping
    /// that series' cells in the range, for both codecs.
    #[test]
    fn partial_decode_equals_full_decode_filtered(
        cells in prop::collection::btree_map((0u32..60, -3000i64..3000), cell_strategy(), 1..7000),
        window in (-3500i64..3500, 0i64..7000),
        cold in any::<bool>(),
        small in any::<bool>(),
    ) {
        // With `small`, only unit and uniform cells of one-byte counts and
        // deltas: the byte-wise paths of a sweep.
        let cells: BTreeMap<(u32, i64), Cell> = cells
            .into_iter()
            .map(|(k, c)| {
                let keep = !small || (c.min == c.max && c.count < 128 && (-64..64).contains(&c.min));
                (k, if keep { c } else { Cell::of(1) })
            })
            .collect();
        let fs = FaultFs::new();
        let path = Path::new("p.seg");
        let cold_before = if cold { i64::MAX } else { i64::MIN };
        let mut w = SegmentWriter::create(&fs, path, 4, Tier::Minute, cold_before).expect("create");
        for ((series, bucket), cell) in &cells {
            w.push(CellRow { series: *series, bucket: *bucket, cell: *cell }).expect("push");
        }
        w.finish().expect("finish");
        let seg = Segment::open(&fs, path).expect("open");
        let (from, to) = (window.0, window.0 + window.1);
        for i in 0..seg.blocks().len() {
            let mut rows = Vec::new();
            seg.read_block(i, &mut rows).expect("full decode");
            let runs = seg.block_runs(i).expect("index");
            let mut series: Vec<u32> = rows.iter().map(|r| r.series).collect();
            series.dedup();
            prop_assert_eq!(runs.series().collect::<Vec<_>>(), series.clone());
            for s in series.iter().copied().chain([60]) {
                let want: Vec<(i64, Cell)> = rows
                    .iter()
                    .filter(|r| r.series == s && r.bucket >= from && r.bucket < to)
                    .map(|r| (r.bucket, r.cell))
                    .collect();
                let mut got = Vec::new();
                runs.scan(s, from, to, &mut |b, c| got.push((b, *c))).expect("partial decode");
                prop_assert_eq!(&got, &want);
                let sum = want.iter().fold((0i128, 0u64), |a, (_, c)| {
                    (a.0 + i128::from(c.sum), a.1.wrapping_add(c.count))
                });
                prop_assert_eq!(runs.sum(s, from, to).expect("sum"), sum);
            }
            // A sweep of the block adds the same sums per series, reading
            // the bucket column or, when the whole block is in range, not.
            let max = rows.iter().map(|r| r.bucket).max().expect("cells");
            let whole = runs.base() >= from && max < to;
            for (lo, hi, contained) in [(from, to, whole), (i64::MIN, i64::MAX, true), (i64::MIN, i64::MAX, false)] {
                let mut sums = Sums::new(series.clone());
                sums.prepare_sweep();
                runs.sweep(lo, hi, contained, &mut sums).expect("sweep");
                for (k, s) in series.iter().enumerate() {
                    let want = rows
                        .iter()
                        .filter(|r| r.series == *s && r.bucket >= lo && r.bucket < hi)
                        .fold((0i128, 0u64), |a, r| (a.0 + i128::from(r.cell.sum), a.1.wrapping_add(r.cell.count)));
                    // Counts add in u64 inside a block (no real cell count
                    // comes near it); sums are exact.
                    let got = sums.sums()[k];
                    prop_assert_eq!((got.0, got.1 as u64), want);
                }
            }
        }
        let shared = Arc::new(BlockCache::new(1 << 20));
        for s in [0u32, 17, 59] {
            let want = cells
                .range((s, from)..(s, to.max(from)))
                .fold((0i128, 0u64), |a, (_, c)| (a.0 + i128::from(c.sum), a.1.wrapping_add(c.count)));
            for _ in 0..2 {
                let mut cache = BlockScratch::with_shared(Arc::clone(&shared));
                prop_assert_eq!(seg.sum_series(s, from, to, &mut cache).expect("sum"), want);
            }
        }
    }
}

#[test]
fn skipping_varints_lands_after_the_nth() {
    let mut buf = Vec::new();
    let values: Vec<u64> = (0..40)
        .map(|i| if i % 3 == 0 { 1 << (i % 60) } else { i })
        .collect();
    let mut ends = vec![0];
    for v in &values {
        put_uvarint(&mut buf, *v);
        ends.push(buf.len());
    }
    for (n, end) in ends.iter().enumerate() {
        assert_eq!(skip_varints(&buf, 0, n), Ok(*end), "{n} varints");
    }
    assert!(skip_varints(&buf, 0, values.len() + 1).is_err());
}

#[test]
fn out_of_order_pushes_are_refused() {
    let fs = FaultFs::new();
    let mut w = SegmentWriter::create(&fs, Path::new("y.seg"), 1, Tier::Minute, 0).expect("create");
    let row = |series, bucket| CellRow {
        series,
        bucket,
        cell: Cell::of(1),
    };
    w.push(row(2, 5)).expect("first");
    assert!(w.push(row(2, 5)).is_err());
    assert!(w.push(row(1, 9)).is_err());
    assert!(w.push(row(2, 6)).is_ok());
}

// The engine-wide cache holding real decoded blocks.

/// Shards of [`BlockCache`] (its bound is split among them).
const CACHE_SHARDS: usize = 16;

fn blocks(n: u32) -> Arc<Segment> {
    let fs = FaultFs::new();
    let mut w =
        SegmentWriter::create(&fs, Path::new("c.seg"), 3, Tier::Minute, i64::MIN).expect("create");
    for s in 0..n {
        for b in 0..4096 {
            w.push(CellRow {
                series: s,
                bucket: b,
                cell: Cell::of(i64::from(s) + 1),
            })
            .expect("push");
        }
    }
    w.finish().expect("finish");
    Segment::open(&fs, Path::new("c.seg")).expect("open")
}

#[test]
fn stays_within_its_bound_and_keeps_blocks_in_use() {
    let seg = blocks(64);
    let one = seg.block_runs(0).expect("block").approx_bytes();
    // Room for about four blocks per shard.
    let cache = BlockCache::new(one * 4 * CACHE_SHARDS + CACHE_SHARDS);
    for i in 0..seg.blocks().len() {
        cache.insert((3, i), Arc::new(seg.block_runs(i).expect("block")));
        assert!(cache.get((3, 0)).is_some(), "block 0 evicted at {i}");
        assert!(cache.bytes() <= one * 4 * CACHE_SHARDS + CACHE_SHARDS);
    }
    let held = (0..seg.blocks().len())
        .filter(|i| cache.get((3, *i)).is_some())
        .count();
    assert!(held < seg.blocks().len(), "nothing was evicted");
    let r = cache.get((3, 0)).expect("block 0");
    let mut got = Vec::new();
    r.scan(0, 10, 13, &mut |b, c| got.push((b, c.sum)))
        .expect("scan");
    assert_eq!(got, vec![(10, 1), (11, 1), (12, 1)]);
}

#[test]
fn zero_capacity_caches_nothing() {
    let seg = blocks(1);
    let cache = BlockCache::new(0);
    cache.insert((3, 0), Arc::new(seg.block_runs(0).expect("block")));
    assert!(cache.get((3, 0)).is_none());
    assert_eq!(cache.bytes(), 0);
}
