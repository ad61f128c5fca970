//! Seed inputs for the fuzz targets: valid WAL files and segments, and typical damage.

use super::*;

/// A batch record of a seed: header, series it defines, events.
type SeedBatch = (BatchHeader, Vec<(u32, String)>, Vec<LoggedEvent>);

/// Valid WAL files (several batches with new series, producer marks, event ids and
/// every tier mask) and typical damage: seeds for `wal_recovery`. Written out by
/// `cargo run -p tallydb-storage --example storage_fuzz_seeds`.
pub fn seed_wal_files() -> Vec<(&'static str, Vec<u8>)> {
    let t0 = NOW - 3 * HOUR_MS;
    let key = |k: &str| {
        SeriesKey::parse(k)
            .map(|k| k.as_str().to_string())
            .unwrap_or_default()
    };
    let k0 = key("ad_clicks{country=US,ad=ad001}");
    let k1 = key("ad_clicks{ad=ad002,country=FR}");
    let k2 = key("com.example.music");
    let ev = |series: u32, ts: i64, delta: i64, coverage: u8, id: Option<u64>| LoggedEvent {
        series,
        ts,
        delta,
        coverage,
        id: id.map(EventId),
    };
    let header = |lsn: u64, accepted_at: i64| BatchHeader {
        lsn,
        accepted_at,
        producer: None,
        id_expiry: None,
    };
    let mut batches: Vec<SeedBatch> = vec![
        (
            BatchHeader {
                producer: Some(ProducerMark {
                    id: 7,
                    seq: 1,
                    applied: 4,
                    duplicates: 0,
                }),
                ..header(1, t0)
            },
            vec![(0, k0.clone()), (1, k1)],
            vec![
                ev(0, t0, 1, 0b111, None),
                ev(0, t0 + 1, 1, 0b111, None),
                ev(1, t0 - MINUTE_MS, 5, 0b111, None),
                ev(0, t0 + 61_000, -3, 0b111, None),
            ],
        ),
        (
            BatchHeader {
                id_expiry: Some(t0 + HOUR_MS),
                ..header(2, t0 + 500)
            },
            vec![(2, k2)],
            vec![
                ev(2, t0 + 400, 2, 0b111, Some(0xdead_beef)),
                ev(2, t0 - 9 * DAY_MS, 4, 0b110, Some(0xfeed)),
                ev(1, t0 - 500 * DAY_MS, 6, 0b100, None),
            ],
        ),
        (
            BatchHeader {
                producer: Some(ProducerMark {
                    id: 7,
                    seq: 2,
                    applied: 2,
                    duplicates: 1,
                }),
                id_expiry: Some(t0 + 2 * HOUR_MS),
                ..header(3, t0 + HOUR_MS)
            },
            Vec::new(),
            vec![
                ev(0, t0 + HOUR_MS, i64::MAX, 0b111, Some(1)),
                ev(0, t0 + HOUR_MS + 2, i64::MAX, 0b111, Some(2)),
            ],
        ),
        (header(4, t0 + HOUR_MS + 10), Vec::new(), Vec::new()),
    ];
    let file = |batches: &[SeedBatch], seq: u64| {
        let mut out = wal::file_header(seq);
        for (h, defs, events) in batches {
            wal::encode_batch(
                &mut out,
                h,
                defs.iter().map(|(id, k)| (*id, k.as_str())),
                events,
            );
        }
        out
    };
    let full = file(&batches, WAL_SEQ);
    let first_end = {
        let one = file(&batches[..1], WAL_SEQ);
        one.len()
    };
    let mut seeds = vec![
        ("wal-batches", full.clone()),
        ("wal-one-batch", file(&batches[..1], WAL_SEQ)),
        ("wal-header-only", wal::file_header(WAL_SEQ)),
        ("wal-torn-record", full[..full.len() - 5].to_vec()),
        ("wal-torn-header", full[..WAL_HEADER_LEN - 3].to_vec()),
        ("wal-zero-tail", [&full[..], &[0u8; 40][..]].concat()),
        ("wal-wrong-number", file(&batches, WAL_SEQ + 1)),
    ];
    let mut damaged = full.clone();
    damaged[first_end - 2] ^= 0x40;
    seeds.push(("wal-damage-before-valid", damaged));
    let mut bad_header = full.clone();
    bad_header[3] ^= 1;
    seeds.push(("wal-damaged-header", bad_header));
    // Events far from now: both ends of time, wrapping sums.
    let far = vec![(
        header(1, 0),
        vec![(0, k0.clone())],
        vec![
            ev(0, i64::MIN, -1, 0b111, None),
            ev(0, i64::MAX, i64::MIN, 0b111, None),
            ev(0, -TIME_LIMIT, 3, 0b100, None),
            ev(0, TIME_LIMIT - 1, 3, 0b110, None),
        ],
    )];
    seeds.push(("wal-far-times", file(&far, WAL_SEQ)));
    // Records the replay refuses: a missing LSN, an undefined series, a skipped tier.
    batches[1].0.lsn = 3;
    seeds.push(("wal-lsn-gap", file(&batches[..2], WAL_SEQ)));
    let undefined = vec![(header(1, t0), Vec::new(), vec![ev(0, t0, 1, 0b111, None)])];
    seeds.push(("wal-undefined-series", file(&undefined, WAL_SEQ)));
    let skipped = vec![(
        header(1, t0),
        vec![(0, k0.clone())],
        vec![ev(0, t0, 1, 0b101, None)],
    )];
    seeds.push(("wal-skipped-tier", file(&skipped, WAL_SEQ)));
    let redefined = vec![(
        header(1, t0),
        vec![(0, k0.clone()), (0, key("other"))],
        Vec::new(),
    )];
    seeds.push(("wal-redefined-series", file(&redefined, WAL_SEQ)));
    seeds
}

/// Valid segments of every tier and both codecs (lz4 for hot blocks, zstd for cold
/// and day blocks), empty, multi-block, and at the extremes of buckets and values:
/// seeds for `segment_open`.
pub fn seed_segments() -> Vec<(&'static str, Vec<u8>)> {
    let unit = |n: u64| Cell {
        sum: n as i64,
        count: n,
        min: 1,
        max: 1,
    };
    let uniform = |d: i64, n: u64| Cell {
        sum: d.wrapping_mul(n as i64),
        count: n,
        min: d,
        max: d,
    };
    let general = Cell {
        sum: 40,
        count: 5,
        min: -3,
        max: 20,
    };
    let base = NOW / MINUTE_MS;
    let small: Vec<CellRow> = [
        (0, 0, unit(3)),
        (0, 1, uniform(-2, 4)),
        (0, 5, general),
        (2, 0, unit(1)),
        (2, 1_000, uniform(7, 2)),
        (9, -3, general),
    ]
    .into_iter()
    .map(|(series, off, cell)| CellRow {
        series,
        bucket: base + off,
        cell,
    })
    .collect();
    let many: Vec<CellRow> = (0..segment::BLOCK_CELLS as i64 + 40)
        .map(|i| CellRow {
            series: (i / 700) as u32,
            bucket: base + i % 700,
            cell: if i % 9 == 0 {
                general
            } else {
                unit(1 + (i % 3) as u64)
            },
        })
        .collect();
    let extreme = vec![
        CellRow {
            series: 0,
            bucket: i64::MIN / MINUTE_MS,
            cell: Cell {
                sum: i64::MIN,
                count: u64::MAX,
                min: i64::MIN,
                max: i64::MAX,
            },
        },
        CellRow {
            series: 0,
            bucket: i64::MAX / MINUTE_MS,
            cell: unit(u64::MAX),
        },
        CellRow {
            series: u32::MAX,
            bucket: 0,
            cell: uniform(i64::MIN, 3),
        },
    ];
    let hot = i64::MIN; // every block newer than this: lz4 (except the day tier)
    let cold = i64::MAX; // every block older than this: zstd
    [
        ("segment-minute-lz4", Tier::Minute, hot, small.clone()),
        ("segment-minute-zstd", Tier::Minute, cold, small.clone()),
        ("segment-hour-lz4", Tier::Hour, hot, small.clone()),
        ("segment-day-zstd", Tier::Day, hot, small),
        ("segment-empty", Tier::Minute, hot, Vec::new()),
        ("segment-two-blocks-lz4", Tier::Minute, hot, many.clone()),
        ("segment-two-blocks-zstd", Tier::Hour, cold, many),
        ("segment-extremes-lz4", Tier::Minute, hot, extreme.clone()),
        ("segment-extremes-zstd", Tier::Minute, cold, extreme),
    ]
    .into_iter()
    .map(|(name, tier, cold_before, rows)| (name, write_segment(tier, cold_before, &rows)))
    .collect()
}

/// A segment file holding `rows` (strictly increasing keys).
pub(super) fn write_segment(tier: Tier, cold_before: i64, rows: &[CellRow]) -> Vec<u8> {
    let fs = FaultFs::new();
    let path = segment_path();
    let made = fs.create_dir_all(crate::fs::parent(&path));
    assert!(made.is_ok(), "{made:?}");
    let written = SegmentWriter::create(&fs, &path, 1, tier, cold_before).and_then(|mut w| {
        for r in rows {
            w.push(*r)?;
        }
        w.finish()
    });
    assert!(written.is_ok(), "writing a seed segment: {written:?}");
    fs.file(&path).unwrap_or_default()
}
