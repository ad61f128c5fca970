//! The properties checked by the fuzz targets in `storage/fuzz/` and by the corpus
//! replay test `storage/tests/fuzz_corpus.rs`: one copy of the logic, so a corpus file
//! that passes `cargo test` passes the fuzzer and the other way round.
//!
//! Each check takes arbitrary bytes as the contents of one file and panics (with the
//! story of the input) when a property does not hold. Everything runs on an in-memory
//! [`FaultFs`], so one execution costs microseconds. Not part of the crate's API:
//! hidden from the documentation and free to change.

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

/// Target `wal_recovery`: `data` is the only WAL file of a data directory whose
/// `FORMAT` and `MANIFEST` are valid and empty (checkpoint 0).
///
/// 1. [`wal::scan_file`] either fails with [`Error::Corrupt`] naming the file and an
///    offset inside it, or returns records that are checksummed, contiguous from the
///    header, and end at `valid_len`, with a torn tail at `valid_len` or none; the
///    file cut at `valid_len` scans clean, and zeros after a clean file are a torn
///    tail.
/// 2. Every record that decodes re-encodes canonically: no longer than it was, to a
///    record that decodes the same, scans, and re-encodes to itself.
/// 3. [`Replay::file`] fails exactly when the scan does (same error), or with
///    `Corrupt` inside the file; when it succeeds its memtable holds, per tier, exactly
///    the cells of the replayed events, its dictionary the defined series, and its
///    counts and LSNs those of the records. As a file that is not the last, a torn
///    tail is corruption at its offset.
/// 4. [`Engine::open`] on the directory fails with the replay's error or succeeds with
///    the replay's report; totals, top-k, series listings and minute ranges equal the
///    replayed events; the answers stay the same after a flush and after close and
///    reopen, and the reopened engine finds no torn tail.
pub fn check_wal_recovery(data: &[u8]) {
    let path = wal_path();
    let scan = wal::scan_file(&path, data, WAL_SEQ);
    let records = match &scan {
        Ok(scan) => {
            check_scan(&path, data, scan);
            scan.records
                .iter()
                .map(|r| check_record(&data[r.clone()]))
                .collect()
        }
        Err(e) => {
            assert_corrupt(e, &path, data.len() as u64);
            Vec::new()
        }
    };
    let replayed = replay(data, true);
    let model = match (&scan, &replayed) {
        (Err(s), Err(r)) => {
            assert_eq!(
                s.to_string(),
                r.to_string(),
                "replay reports the scan error"
            );
            None
        }
        (Err(s), Ok(_)) => panic!("the scan failed with {s} but the replay succeeded"),
        (Ok(_), Err(e)) => {
            assert_corrupt(e, &path, data.len() as u64);
            None
        }
        (Ok(scan), Ok((replay, info))) => Some(check_replay(data, scan, &records, replay, info)),
    };
    // The same file followed by another one: a torn tail is no longer normal.
    let not_last = replay(data, false);
    match (&scan, &replayed, &not_last) {
        (Ok(scan), Ok((_, info)), Ok((_, again))) => {
            assert_eq!(
                scan.torn_at, None,
                "a torn tail passed in a file that is not the last"
            );
            assert_eq!(info, again);
        }
        (Ok(scan), Ok(_), Err(e)) => match (scan.torn_at, e) {
            (Some(at), Error::Corrupt { file, offset, .. }) => {
                assert_eq!((file.as_path(), *offset), (path.as_path(), at));
            }
            _ => panic!(
                "a file that is not the last failed with {e} (torn at {:?})",
                scan.torn_at
            ),
        },
        (_, Err(e), Err(again)) => assert_eq!(e.to_string(), again.to_string()),
        (_, Err(e), Ok(_)) => {
            panic!("the file fails as the last one ({e}) but passes as an earlier one")
        }
        (Err(_), Ok(_), _) => unreachable!("checked above"),
    }
    check_engine(data, &replayed, model.as_ref());
}

/// Target `segment_open`: `data` is a segment file.
///
/// 1. [`Segment::open`] (through a [`FaultFs`]) and [`Segment::from_bytes`] agree;
///    a refusal is [`Error::Corrupt`] naming the file and an offset inside it.
/// 2. An opened segment reports its size, accepts [`Segment::open_checked`] with its
///    own summary and refuses any other one as corruption at offset 0; its block
///    index is contiguous from the header and adds up to the footer's cell count.
/// 3. Every block either decodes to as many cells as the index says, strictly
///    increasing, starting and ending at the index's keys, the same each time, or
///    fails with `Corrupt` at the block's offset; [`Segment::iter`] yields exactly the
///    cells of the blocks up to the first failure, then that error, then nothing.
/// 4. [`Segment::scan_series`] returns only cells of that series and range that a
///    block holds; when the segment is intact (as `tally-admin verify` sees it: every
///    block decodes, keys increase across blocks, the index and footer summaries
///    agree with the cells) it returns exactly those cells, and the cells written
///    again with [`SegmentWriter`] read back identically.
pub fn check_segment_open(data: &[u8]) {
    let path = segment_path();
    let fs = FaultFs::new();
    let planted = fs.set_file(&path, data);
    assert!(planted.is_ok(), "planting the segment: {planted:?}");
    let opened = Segment::open(&fs, &path);
    let direct = Segment::from_bytes(&path, Arc::new(data.to_vec()));
    let seg = match (opened, direct) {
        (Ok(seg), Ok(_)) => seg,
        (Err(e), Err(d)) => {
            assert_eq!(e.to_string(), d.to_string());
            assert_corrupt(&e, &path, data.len() as u64);
            return;
        }
        (a, b) => panic!("Segment::open gave {a:?} but Segment::from_bytes {b:?}"),
    };
    let meta = *seg.meta();
    assert_eq!(meta.bytes, data.len() as u64);
    assert!(
        Segment::open_checked(&fs, &path, &meta).is_ok(),
        "open_checked refused the segment's own summary {meta:?}"
    );
    let other = SegmentMeta {
        cells: meta.cells.wrapping_add(1),
        ..meta
    };
    match Segment::open_checked(&fs, &path, &other) {
        Err(Error::Corrupt {
            file, offset: 0, ..
        }) if file == path => {}
        got => panic!("open_checked with a wrong summary gave {got:?}"),
    }
    let mut at = HEADER_LEN as u64;
    let mut cells = 0u64;
    for b in seg.blocks() {
        assert_eq!(b.offset, at, "blocks are contiguous");
        at += u64::from(b.len);
        cells += u64::from(b.cells);
    }
    assert_eq!(cells, meta.cells);
    assert!(at <= meta.bytes);

    let read = read_blocks(&seg, &path);
    check_iter(&seg, &read);
    let all: Vec<CellRow> = read.iter().flatten().flatten().copied().collect();
    let intact = is_intact(&seg, &read);
    check_scans(&seg, &all, intact);
    if intact {
        check_rewrite(&seg, &all);
    }
}

// ---------------------------------------------------------------------------------
// WAL

/// The scan's report is coherent with the bytes.
fn check_scan(path: &Path, data: &[u8], scan: &FileScan) {
    let len = data.len() as u64;
    assert!(scan.valid_len <= len, "{scan:?} for {len} bytes");
    match scan.torn_at {
        None => assert_eq!(scan.valid_len, len),
        Some(at) => assert_eq!(at, scan.valid_len),
    }
    if scan.valid_len == 0 {
        assert!(scan.records.is_empty());
        assert_eq!(scan.torn_at, Some(0));
        return;
    }
    // An accepted header: magic, version, number and checksum.
    assert!(scan.valid_len >= WAL_HEADER_LEN as u64);
    assert_eq!(data[..8], WAL_MAGIC);
    assert_eq!(data[8..10], WAL_VERSION.to_le_bytes());
    assert_eq!(data[12..20], WAL_SEQ.to_le_bytes());
    assert_eq!(
        crate::coding::crc32(&[&data[..20]]).to_le_bytes(),
        data[20..24]
    );
    let mut at = WAL_HEADER_LEN;
    for r in &scan.records {
        assert_eq!(r.start, at + RECORD_HEADER_LEN, "records are contiguous");
        let head = &data[at..r.start];
        assert_eq!(head[4..8], (r.len() as u32).to_le_bytes());
        assert_eq!(head[8], RECORD_BATCH);
        assert_eq!(
            head[..4],
            crate::coding::crc32(&[&data[at + 4..r.end]]).to_le_bytes()
        );
        at = r.end;
    }
    assert_eq!(at as u64, scan.valid_len);
    let valid = &data[..at];
    if scan.torn_at.is_some() {
        // What the engine keeps of the file scans clean.
        match wal::scan_file(path, valid, WAL_SEQ) {
            Ok(cut) => {
                assert_eq!(cut.records, scan.records);
                assert_eq!(cut.torn_at, None);
            }
            Err(e) => panic!("the valid part of a torn file fails: {e}"),
        }
    } else {
        // Zeros after the last record (a preallocated or torn write) are a torn tail.
        let padded = [valid, &[0u8; 32][..]].concat();
        match wal::scan_file(path, &padded, WAL_SEQ) {
            Ok(p) => {
                assert_eq!(p.records, scan.records);
                assert_eq!(p.torn_at, Some(len));
            }
            Err(e) => panic!("zeros after a clean file fail: {e}"),
        }
    }
}

/// Decodes one record's payload; whatever decodes must re-encode canonically.
fn check_record(payload: &[u8]) -> Option<BatchRecord> {
    let rec = wal::decode_batch(payload).ok()?;
    let once = encode_record(&rec);
    assert!(
        once.len() - RECORD_HEADER_LEN <= payload.len(),
        "{rec:?} re-encodes longer than it was"
    );
    match wal::decode_batch(&once[RECORD_HEADER_LEN..]) {
        Ok(again) => {
            assert_eq!(again, rec);
            assert_eq!(
                encode_record(&again),
                once,
                "the encoding is not a fixed point"
            );
        }
        Err(e) => panic!("{rec:?} re-encodes to a record that fails with {e}"),
    }
    let file = [wal::file_header(WAL_SEQ), once].concat();
    match wal::scan_file(&wal_path(), &file, WAL_SEQ) {
        Ok(scan) => {
            assert_eq!(scan.records.len(), 1);
            assert_eq!(scan.torn_at, None);
        }
        Err(e) => panic!("a re-encoded record does not scan: {e}"),
    }
    Some(rec)
}

fn encode_record(rec: &BatchRecord) -> Vec<u8> {
    let mut out = Vec::new();
    wal::encode_batch(
        &mut out,
        &rec.header,
        rec.new_series.iter().map(|(id, key)| (*id, key.as_str())),
        &rec.events,
    );
    out
}

fn replay(data: &[u8], last: bool) -> crate::Result<(Replay, WalFileInfo)> {
    let mut replay =
        Replay::new(SeriesDict::new(), 0).with_dedup(DedupState::new(), PRODUCER_IDLE_MS);
    let rel = wal_path().display().to_string();
    let info = replay.file(&rel, data, WAL_SEQ, 0, last)?;
    Ok((replay, info))
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

fn check_replay(
    data: &[u8],
    scan: &FileScan,
    records: &[Option<BatchRecord>],
    replay: &Replay,
    info: &WalFileInfo,
) -> Model {
    let mut model = Model::default();
    let (mut replayed, mut events, mut last_lsn) = (0u64, 0u64, 0u64);
    let mut max_accepted_at = i64::MIN;
    let mut last_producer = None;
    for rec in records {
        let Some(rec) = rec else {
            panic!("the replay accepted a record that does not decode");
        };
        if rec.header.lsn == 0 {
            continue; // at or below the checkpoint
        }
        replayed += 1;
        last_lsn = rec.header.lsn;
        max_accepted_at = max_accepted_at.max(rec.header.accepted_at);
        last_producer = rec.header.producer;
        for (id, key) in &rec.new_series {
            match model.keys.get(*id as usize) {
                Some(k) => assert_eq!(k, key, "series {id} redefined"),
                None => {
                    assert_eq!(
                        *id as usize,
                        model.keys.len(),
                        "series defined out of order"
                    );
                    model.keys.push(key.clone());
                }
            }
        }
        for e in &rec.events {
            events += 1;
            assert!(
                (e.series as usize) < model.keys.len(),
                "undefined series replayed"
            );
            model.events.push((e.series, e.ts, e.delta));
            for tier in Tier::ALL {
                if e.coverage & tier.bit() != 0 {
                    model
                        .cells
                        .entry((tier.index(), e.series, tier.bucket_of(e.ts)))
                        .and_modify(|c| c.add(e.delta))
                        .or_insert(Cell::of(e.delta));
                }
            }
        }
    }
    assert_eq!(replay.records, replayed);
    assert_eq!(replay.events, events);
    assert_eq!(replay.last_lsn, last_lsn);
    assert_eq!(replay.max_accepted_at, max_accepted_at);
    assert_eq!(replay.dict.len() as usize, model.keys.len());
    for (id, key) in model.keys.iter().enumerate() {
        let got = replay.dict.key(id as u32).map(|k| k.as_str());
        assert_eq!(got, Some(key.as_str()), "series {id}");
    }
    for tier in Tier::ALL {
        let rows = replay.memtable.rows(tier);
        for w in rows.windows(2) {
            assert!((w[0].series, w[0].bucket) < (w[1].series, w[1].bucket));
        }
        let got: Vec<((u32, i64), Cell)> = rows
            .iter()
            .map(|r| ((r.series, r.bucket), r.cell))
            .collect();
        let want: Vec<((u32, i64), Cell)> = model
            .cells
            .range((tier.index(), 0, i64::MIN)..=(tier.index(), u32::MAX, i64::MAX))
            .map(|((_, s, b), c)| ((*s, *b), *c))
            .collect();
        assert_eq!(got, want, "{tier} cells of the memtable");
    }
    if let (Some(p), Some((dedup, _))) = (last_producer, &replay.dedup) {
        assert!(
            dedup.producer(p.id).is_some(),
            "producer {} of the last record is forgotten",
            p.id
        );
    }
    assert_eq!(info.records, records.len() as u64);
    assert_eq!(info.replayed, replayed);
    assert_eq!(info.events, events);
    assert_eq!(info.bytes, data.len() as u64);
    let mut lsns = records.iter().flatten().map(|r| r.header.lsn);
    let first_last = lsns
        .next()
        .map(|first| (first, lsns.next_back().unwrap_or(first)));
    assert_eq!(info.lsns, first_last);
    let torn = scan
        .torn_at
        .map(|at| (at, data.len() as u64 - scan.valid_len));
    assert_eq!(info.torn, torn);
    model
}

fn engine_options(fs: &FaultFs) -> Options {
    Options {
        background: false,
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(NOW)),
        retention: Retention {
            minute_ms: None,
            hour_ms: None,
            day_ms: None,
        },
        ..Options::default()
    }
}

/// A data directory holding `FORMAT`, an empty `MANIFEST` and `data` as its WAL.
fn directory_with_wal(data: &[u8]) -> FaultFs {
    let fs = FaultFs::new();
    let dir = Path::new(DIR);
    let manifest = Manifest {
        next_segment_id: 1,
        ..Manifest::default()
    };
    for (path, bytes) in [
        (dir.join(FORMAT_FILE), format_file_contents().into_bytes()),
        (dir.join(MANIFEST_FILE), manifest.encode()),
        (wal_path(), data.to_vec()),
    ] {
        let planted = fs.set_file(&path, &bytes);
        assert!(planted.is_ok(), "planting {}: {planted:?}", path.display());
    }
    fs
}

fn check_engine(
    data: &[u8],
    replayed: &crate::Result<(Replay, WalFileInfo)>,
    model: Option<&Model>,
) {
    let fs = directory_with_wal(data);
    let opened = Engine::open(DIR, engine_options(&fs));
    let (engine, (replay, info), model) = match (opened, replayed, model) {
        (Err(e), Err(r), _) => {
            assert_eq!(
                e.to_string(),
                r.to_string(),
                "the engine reports the replay error"
            );
            return;
        }
        (Ok(engine), Ok(r), Some(model)) => (engine, r, model),
        (opened, replayed, _) => panic!(
            "Engine::open gave {:?} but the replay {:?}",
            opened.map(|_| ()),
            replayed.as_ref().map(|_| ())
        ),
    };
    let report = engine.recovery();
    assert_eq!(report.records_replayed, replay.records);
    assert_eq!(report.events_replayed, replay.events);
    let torn: Vec<(PathBuf, u64, u64)> = info
        .torn
        .iter()
        .map(|(at, dropped)| (wal_path(), *at, *dropped))
        .collect();
    assert_eq!(report.torn_tails, torn);
    let answers = check_answers(&engine, model);

    // Flushed to segments, the data answers the same.
    let flushed = engine.flush();
    assert!(flushed.is_ok(), "flush: {flushed:?}");
    assert_eq!(
        check_answers(&engine, model),
        answers,
        "answers changed by a flush"
    );
    let closed = engine.close();
    assert!(closed.is_ok(), "close: {closed:?}");
    drop(engine);

    // The torn tail was cut for good: a second recovery finds a clean log.
    let valid_len = data.len() as u64 - info.torn.map_or(0, |(_, dropped)| dropped);
    if valid_len == 0 {
        assert_eq!(
            fs.file(&wal_path()),
            None,
            "a WAL file with nothing valid is removed"
        );
    }
    let reopened = Engine::open(DIR, engine_options(&fs));
    let engine = match reopened {
        Ok(engine) => engine,
        Err(e) => panic!("reopening after recovery and a flush failed: {e}"),
    };
    assert!(engine.recovery().torn_tails.is_empty());
    assert_eq!(
        check_answers(&engine, model),
        answers,
        "answers changed by a reopen"
    );
}

/// Queries the engine and checks every answer against the model; returns the answers
/// so that later openings can be compared with them.
fn check_answers(engine: &Engine, model: &Model) -> Vec<String> {
    let mut answers = Vec::new();
    for (id, key) in model.keys.iter().enumerate().take(CHECKED_SERIES) {
        let id = id as u32;
        let got = engine.total(&Selector::Exact(key.clone()), LO, HI);
        let Ok(t) = got else {
            panic!("total of {key}: {got:?}");
        };
        assert_eq!(
            (t.sum, t.count),
            model.total(|s| s == id, LO, HI),
            "total of {key}"
        );
        assert_eq!(t.provenance.tiers, Tier::Day.bit(), "{t:?}");
        answers.push(format!("{key}: {t:?}"));
    }
    let names: BTreeSet<String> = model
        .keys
        .iter()
        .filter_map(|k| SeriesKey::parse(k).ok())
        .map(|k| k.name().to_string())
        .collect();
    for name in names.iter().take(CHECKED_NAMES) {
        let ids: Vec<u32> = (0..model.keys.len() as u32)
            .filter(|id| {
                SeriesKey::parse(&model.keys[*id as usize]).is_ok_and(|k| k.name() == name)
            })
            .collect();
        let selector = Selector::Metric {
            name: name.clone(),
            matchers: Vec::new(),
            group_by: Vec::new(),
        };
        let got = engine.total(&selector, LO, HI);
        let Ok(total) = got else {
            panic!("total of {name}: {got:?}");
        };
        assert_eq!(
            (total.sum, total.count),
            model.total(|s| ids.contains(&s), LO, HI),
            "total of {name}"
        );
        let got = engine.series(&selector, usize::MAX);
        let Ok((keys, more)) = got else {
            panic!("series of {name}: {got:?}");
        };
        let mut want: Vec<String> = ids
            .iter()
            .map(|id| model.keys[*id as usize].clone())
            .collect();
        want.sort();
        assert_eq!((keys, more), (want, false), "series of {name}");
        let top = engine.top(&TopQuery {
            selector,
            from: LO,
            to: HI,
            n: ids.len(),
            by_label: None,
        });
        let Ok(top) = top else {
            panic!("top of {name}: {top:?}");
        };
        let mut count = 0u64;
        for e in &top.entries {
            let id = model.keys.iter().position(|k| *k == e.name);
            let Some(id) = id.map(|i| i as u32).filter(|i| ids.contains(i)) else {
                panic!("top of {name} ranks {}, not one of its series", e.name);
            };
            assert_eq!(
                (e.sum, e.count),
                model.total(|s| s == id, LO, HI),
                "top entry {}",
                e.name
            );
            count += e.count;
        }
        for w in top.entries.windows(2) {
            assert!(
                (w[1].sum, &w[0].name) <= (w[0].sum, &w[1].name),
                "top order {top:?}"
            );
        }
        assert_eq!(count, total.count, "top of {name} misses events");
        answers.push(format!("{name}: {total:?} {top:?}"));
    }
    // Minute cells: one hour of the first minute-tier event of a few series.
    let mut checked = 0;
    for (id, key) in model.keys.iter().enumerate() {
        if checked == CHECKED_RANGES {
            break;
        }
        let minute = Tier::Minute.index();
        let first = model
            .cells
            .range((minute, id as u32, i64::MIN)..=(minute, id as u32, i64::MAX))
            .map(|((_, _, b), _)| {
                Tier::Hour.start_of(Tier::Hour.bucket_of(Tier::Minute.start_of(*b)))
            })
            .find(|h| (-TIME_LIMIT..=TIME_LIMIT - HOUR_MS).contains(h));
        let Some(from) = first else { continue };
        checked += 1;
        for agg in [Agg::Sum, Agg::Min] {
            let q = RangeQuery {
                selector: Selector::Exact(key.clone()),
                from,
                to: from + HOUR_MS,
                step: Step::Fixed(MINUTE_MS),
                agg,
            };
            let got = engine.range(&q);
            let Ok(r) = got else {
                panic!("{q:?}: {got:?}");
            };
            let want: Vec<(i64, Value)> = (0..60)
                .map(|k| from + k * MINUTE_MS)
                .filter_map(|t| {
                    let cell = model
                        .cells
                        .get(&(minute, id as u32, Tier::Minute.bucket_of(t)));
                    match (agg, cell) {
                        (Agg::Sum, c) => Some((t, Value::Int(c.map_or(0, |c| c.sum)))),
                        (_, c) => c.map(|c| (t, Value::Int(c.min))),
                    }
                })
                .collect();
            assert_eq!(r.groups.len(), 1, "{q:?}");
            assert_eq!(r.groups[0].points, want, "{q:?}");
            answers.push(format!("{q:?}: {r:?}"));
        }
    }
    answers
}

// ---------------------------------------------------------------------------------
// Segments

/// Every block read twice: `Ok(cells)` or the corruption error checked.
fn read_blocks(seg: &Segment, path: &Path) -> Vec<Option<Vec<CellRow>>> {
    let mut out = Vec::with_capacity(seg.blocks().len());
    for (i, b) in seg.blocks().iter().enumerate() {
        let mut rows = Vec::new();
        let got = seg.read_block(i, &mut rows);
        let mut again = Vec::new();
        let second = seg.read_block(i, &mut again);
        match (got, second) {
            (Ok(()), Ok(())) => {
                assert_eq!(rows, again, "block {i} reads differently twice");
                assert_eq!(rows.len(), b.cells as usize, "block {i}");
                for w in rows.windows(2) {
                    assert!(
                        (w[0].series, w[0].bucket) < (w[1].series, w[1].bucket),
                        "block {i}: keys out of order"
                    );
                }
                let (first, last) = (rows[0], rows[rows.len() - 1]);
                assert_eq!(
                    (first.series, first.bucket),
                    (b.first_series, b.first_bucket)
                );
                assert_eq!((last.series, last.bucket), (b.last_series, b.last_bucket));
                out.push(Some(rows));
            }
            (Err(e), Err(e2)) => {
                assert_eq!(e.to_string(), e2.to_string());
                match &e {
                    Error::Corrupt { file, offset, .. } => {
                        assert_eq!((file.as_path(), *offset), (path, b.offset), "{e}");
                    }
                    _ => panic!("block {i}: {e}"),
                }
                out.push(None);
            }
            (a, b) => panic!("block {i} read as {a:?} then {b:?}"),
        }
    }
    out
}

/// The iterator yields the blocks' cells up to the first failing block, then its
/// error, then nothing.
fn check_iter(seg: &Arc<Segment>, read: &[Option<Vec<CellRow>>]) {
    let mut it = seg.iter();
    for (i, block) in read.iter().enumerate() {
        match block {
            Some(rows) => {
                for row in rows {
                    match it.next() {
                        Some(Ok(r)) => assert_eq!(r, *row),
                        other => panic!("iter at block {i}: {other:?}, expected {row:?}"),
                    }
                }
            }
            None => {
                let next = it.next();
                assert!(
                    matches!(next, Some(Err(_))),
                    "iter at failed block {i}: {next:?}"
                );
                assert!(it.next().is_none(), "iter goes on after an error");
                return;
            }
        }
    }
    assert!(it.next().is_none());
}

/// Intact as `tally-admin verify` checks a segment: every block decodes, keys
/// increase across blocks, cells are possible, and the index's largest buckets and
/// the footer's summary agree with the cells.
fn is_intact(seg: &Segment, read: &[Option<Vec<CellRow>>]) -> bool {
    let mut prev: Option<(u32, i64)> = None;
    let mut series = 0u32;
    let (mut min_b, mut max_b, mut cells) = (i64::MAX, i64::MIN, 0u64);
    for (b, block) in seg.blocks().iter().zip(read) {
        let Some(rows) = block else { return false };
        let mut block_max = i64::MIN;
        for r in rows {
            let key = (r.series, r.bucket);
            if prev.is_some_and(|p| key <= p) || r.cell.count == 0 || r.cell.min > r.cell.max {
                return false;
            }
            if prev.is_none_or(|p| p.0 != r.series) {
                series += 1;
            }
            prev = Some(key);
            block_max = block_max.max(r.bucket);
            min_b = min_b.min(r.bucket);
            max_b = max_b.max(r.bucket);
            cells += 1;
        }
        if block_max != b.max_bucket {
            return false;
        }
    }
    let (min_b, max_b) = if cells == 0 { (0, 0) } else { (min_b, max_b) };
    let meta = seg.meta();
    series == seg.series_count()
        && cells == meta.cells
        && min_b == meta.min_bucket
        && max_b == meta.max_bucket
}

fn check_scans(seg: &Segment, all: &[CellRow], intact: bool) {
    let have: HashSet<(u32, i64, i64, u64, i64, i64)> = all
        .iter()
        .map(|r| {
            (
                r.series,
                r.bucket,
                r.cell.sum,
                r.cell.count,
                r.cell.min,
                r.cell.max,
            )
        })
        .collect();
    let mut series: Vec<u32> = all.iter().map(|r| r.series).collect();
    series.dedup();
    series.truncate(8);
    series.push(all.last().map_or(0, |r| r.series.wrapping_add(1)));
    let meta = seg.meta();
    for s in series {
        let buckets: Vec<i64> = all
            .iter()
            .filter(|r| r.series == s)
            .map(|r| r.bucket)
            .collect();
        let mut ranges = vec![
            (i64::MIN, i64::MAX),
            (meta.min_bucket, meta.max_bucket.saturating_add(1)),
        ];
        if let (Some(&first), Some(&last)) = (buckets.first(), buckets.last()) {
            let mid = first + (last - first) / 2;
            ranges.extend([
                (first, first.saturating_add(1)),
                (mid, last),
                (first.saturating_add(1), last.saturating_add(1)),
                (last, first),
            ]);
        }
        for (from, to) in ranges {
            let mut got: Vec<(i64, Cell)> = Vec::new();
            let mut cache = BlockScratch::default();
            let res = seg.scan_series(s, from, to, &mut cache, &mut |b, c| got.push((b, *c)));
            let want: Vec<(i64, Cell)> = all
                .iter()
                .filter(|r| r.series == s && from <= r.bucket && r.bucket < to)
                .map(|r| (r.bucket, r.cell))
                .collect();
            if intact {
                assert!(res.is_ok(), "scan of an intact segment: {res:?}");
                assert_eq!(got, want, "scan of series {s} over {from}..{to}");
            } else {
                if let Err(e) = &res {
                    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
                }
                for (b, c) in &got {
                    assert!(
                        (from..to).contains(b),
                        "scan {from}..{to} returned bucket {b}"
                    );
                    let key = (s, *b, c.sum, c.count, c.min, c.max);
                    assert!(
                        have.contains(&key),
                        "scan returned {key:?}, held by no block"
                    );
                }
            }
        }
    }
}

/// The cells of an intact segment, written again, read back the same.
fn check_rewrite(seg: &Segment, all: &[CellRow]) {
    let fs = FaultFs::new();
    let path = Path::new(DIR).join("rewritten.seg");
    let meta = seg.meta();
    let made = fs.create_dir_all(Path::new(DIR));
    assert!(made.is_ok(), "{made:?}");
    let written =
        SegmentWriter::create(&fs, &path, meta.id, meta.tier, i64::MIN).and_then(|mut w| {
            for r in all {
                w.push(*r)?;
            }
            w.finish()
        });
    let again = match written {
        Ok(m) => m,
        Err(e) => panic!("rewriting {} cells: {e}", all.len()),
    };
    assert_eq!(
        (
            again.id,
            again.tier,
            again.cells,
            again.min_bucket,
            again.max_bucket
        ),
        (
            meta.id,
            meta.tier,
            meta.cells,
            meta.min_bucket,
            meta.max_bucket
        )
    );
    let reopened = Segment::open_checked(&fs, &path, &again);
    let Ok(reopened) = reopened else {
        panic!("the rewritten segment does not open: {reopened:?}");
    };
    assert_eq!(reopened.series_count(), seg.series_count());
    let rows: crate::Result<Vec<CellRow>> = reopened.iter().collect();
    match rows {
        Ok(rows) => assert_eq!(rows, all, "rewritten cells differ"),
        Err(e) => panic!("reading the rewritten segment: {e}"),
    }
}

// ---------------------------------------------------------------------------------
// Shared

fn assert_corrupt(e: &Error, path: &Path, len: u64) {
    match e {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file, path, "{e}");
            assert!(*offset < len.max(1), "{e} in a file of {len} bytes");
        }
        other => panic!("expected corruption of {}, got {other}", path.display()),
    }
}

// ---------------------------------------------------------------------------------
// Seeds

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
fn write_segment(tier: Tier, cold_before: i64, rows: &[CellRow]) -> Vec<u8> {
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
