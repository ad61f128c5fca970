#![allow(clippy::unwrap_used)]
//! Damage is detected and reported, never returned as data.
//!
//! Every test builds a real data directory with the engine (on [`FaultFs`], so a
//! directory can be copied, damaged and reopened thousands of times in memory),
//! damages one file, reopens, and checks one of two outcomes:
//!
//! - a torn WAL tail (the last write never completed) is cut off, reported in
//!   [`RecoveryReport::torn_tails`](tallydb_storage::RecoveryReport) and every
//!   earlier batch is intact;
//! - any other damage is `Error::Corrupt` naming the file and the offset of the
//!   damaged record, block or structure, at open or (for a segment block) from
//!   every query that reads the block, while queries that do not read it still
//!   return exact answers.
//!
//! The lock test uses the real file system in a temporary directory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tallydb_storage::engine::{
    dedup_file_name, DICT_FILE, FORMAT_FILE, LOCK_FILE, MANIFEST_FILE, SEGMENTS_DIR, WAL_DIR,
};
use tallydb_storage::fs::{FileSystem, Mapped, OsFs};
use tallydb_storage::manifest::Manifest;
use tallydb_storage::segment::{self, CellRow, Segment, BLOCK_HEADER_LEN, FOOTER_LEN, HEADER_LEN};
use tallydb_storage::testing::FaultFs;
use tallydb_storage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::wal;
use tallydb_storage::{
    Agg, Batch, Engine, Error, Event, EventId, ManualClock, Options, ProducerSeq, RangeQuery,
    Result, Selector, Step, Value,
};

/// The data directory inside every [`FaultFs`].
const DIR: &str = "/db";
/// The engine's clock: noon of some day.
const NOW: i64 = 20_000 * DAY_MS + 12 * HOUR_MS;

/// Every file of a data directory: path -> bytes.
type Image = BTreeMap<PathBuf, Vec<u8>>;

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn options(fs: &FaultFs) -> Options {
    Options {
        background: false,
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(NOW)),
        ..Options::default()
    }
}

fn open(fs: &FaultFs) -> Result<Engine> {
    Engine::open(DIR, options(fs))
}

fn collect(fs: &dyn FileSystem, dir: &Path, out: &mut Image) {
    for name in fs.list(dir).unwrap() {
        let path = dir.join(name);
        match fs.read(&path) {
            Ok(bytes) => {
                out.insert(path, bytes);
            }
            Err(_) => collect(fs, &path, out),
        }
    }
}

/// Copies every file of the data directory out of `fs`.
fn image(fs: &FaultFs) -> Image {
    let mut out = Image::new();
    collect(fs, &dir(), &mut out);
    out
}

/// A fresh file system holding exactly `img`, every byte durable.
fn restore(img: &Image) -> FaultFs {
    let fs = FaultFs::new();
    fs.create_dir_all(&dir().join(SEGMENTS_DIR)).unwrap();
    fs.create_dir_all(&dir().join(WAL_DIR)).unwrap();
    for (path, bytes) in img {
        fs.set_file(path, bytes).unwrap();
    }
    fs
}

/// `img` with `path` replaced by `bytes`.
fn with_file(img: &Image, path: &Path, bytes: Vec<u8>) -> Image {
    let mut img = img.clone();
    img.insert(path.to_path_buf(), bytes);
    img
}

/// `img` with byte `at` of `path` XORed with `mask`.
fn flipped(img: &Image, path: &Path, at: usize, mask: u8) -> Image {
    let mut bytes = img[path].clone();
    bytes[at] ^= mask;
    with_file(img, path, bytes)
}

/// A short description of a result, without dumping a whole engine.
fn describe<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "Ok(..)".into(),
        Err(e) => format!("Err({e:?})"),
    }
}

/// The offset of the `Error::Corrupt` in `r`, which must name `file`.
#[track_caller]
fn corrupt_offset<T>(r: Result<T>, file: &Path, what: &dyn Debug) -> u64 {
    match r {
        Err(Error::Corrupt {
            file: f, offset, ..
        }) if f == file => offset,
        other => panic!(
            "{what:?}: expected Error::Corrupt naming {}, got {}",
            file.display(),
            describe(&other)
        ),
    }
}

/// Every single-bit flip.
const EVERY_BIT: [u8; 8] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80];

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn event(series: u32, delta: i64, ts: i64, id: Option<u64>) -> Event {
    Event {
        series,
        delta,
        ts: Some(ts),
        id: id.map(EventId),
    }
}

fn sum_of(e: &Engine, selector: Selector) -> Result<(i64, u64)> {
    let t = e.total(&selector, NOW - DAY_MS, NOW + HOUR_MS)?;
    Ok((t.sum, t.count))
}

// ---------------------------------------------------------------------------
// WAL
// ---------------------------------------------------------------------------

const LATE_KEY: &str = "hits.late{src=wal}";

/// A data directory whose only WAL file holds `BATCHES` batch records.
struct WalFixture {
    img: Image,
    wal: PathBuf,
    /// `[start, end)` of every record in the WAL file.
    records: Vec<(usize, usize)>,
    /// `(sum, count)` over `hits*` once the first `k` batches are applied, per `k`.
    totals: Vec<(i64, u64)>,
    /// The last batch, to retry after it was torn off.
    last: Batch,
}

const BATCHES: usize = 5;

fn wal_fixture() -> WalFixture {
    let fs = FaultFs::new();
    let e = open(&fs).unwrap();
    let hits = e.series_id("hits").unwrap();
    let mut totals = vec![(0, 0)];
    let mut last = Batch::default();
    for b in 0..BATCHES as i64 {
        let mut batch = Batch {
            producer: Some(ProducerSeq {
                id: 7,
                seq: b as u64 + 1,
            }),
            events: (0..3)
                .map(|k| event(hits, b * 10 + k + 1, NOW - k * MINUTE_MS, None))
                .collect(),
        };
        if b as usize == BATCHES - 1 {
            // The last batch also defines a series and carries event ids, so the
            // torn record holds every kind of field.
            let late = e.series_id(LATE_KEY).unwrap();
            batch
                .events
                .push(event(late, 1000, NOW - HOUR_MS, Some(11)));
            batch.events.push(event(late, 2000, NOW, Some(12)));
            last = batch.clone();
        }
        let out = e.apply(&batch).unwrap();
        assert_eq!(out.applied as usize, batch.events.len());
        let (s, c) = *totals.last().unwrap();
        let sum: i64 = batch.events.iter().map(|ev| ev.delta).sum();
        totals.push((s + sum, c + batch.events.len() as u64));
    }
    drop(e);
    let img = image(&fs);
    let wals: Vec<&PathBuf> = img
        .keys()
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    assert_eq!(wals.len(), 1, "one WAL file expected: {wals:?}");
    let wal = wals[0].clone();
    let scan = wal::scan_file(&wal, &img[&wal], 1).unwrap();
    assert_eq!(scan.torn_at, None);
    let records: Vec<(usize, usize)> = scan
        .records
        .iter()
        .map(|r| (r.start - wal::RECORD_HEADER_LEN, r.end))
        .collect();
    assert_eq!(records.len(), BATCHES);
    assert_eq!(records.last().unwrap().1, img[&wal].len());
    WalFixture {
        img,
        wal,
        records,
        totals,
        last,
    }
}

fn all_hits() -> Selector {
    Selector::Prefix("hits".into())
}

/// Opens a WAL image that must recover with every batch but the last (or all of
/// them when `complete`), reporting `torn` (offset, bytes dropped) if given; then
/// checks that the damage is gone for good.
#[track_caller]
fn check_torn(fx: &WalFixture, wal: Vec<u8>, complete: bool, torn: Option<(u64, u64)>, what: &str) {
    let fs = restore(&with_file(&fx.img, &fx.wal, wal));
    let e = open(&fs).unwrap_or_else(|err| panic!("{what}: open failed: {err}"));
    let kept = if complete { BATCHES } else { BATCHES - 1 };
    assert_eq!(
        sum_of(&e, all_hits()).unwrap(),
        fx.totals[kept],
        "{what}: wrong totals"
    );
    let expected: Vec<(PathBuf, u64, u64)> = torn
        .into_iter()
        .map(|(at, n)| (fx.wal.clone(), at, n))
        .collect();
    assert_eq!(e.recovery().torn_tails, expected, "{what}: torn tails");
    assert_eq!(e.recovery().records_replayed, kept as u64, "{what}");
    let late_known = !e
        .series(&Selector::Exact(LATE_KEY.into()), 10)
        .unwrap()
        .0
        .is_empty();
    assert_eq!(late_known, complete, "{what}: series of the last batch");
    // The producer's retry of the last batch is applied exactly when it was lost.
    let late = e.series_id(LATE_KEY).unwrap();
    let mut retry = fx.last.clone();
    for ev in retry.events.iter_mut().filter(|ev| ev.id.is_some()) {
        ev.series = late;
    }
    let out = e.apply(&retry).unwrap();
    assert_eq!(out.duplicate_batch, complete, "{what}: retry outcome");
    if !complete {
        assert_eq!(
            (out.applied as usize, out.duplicates),
            (retry.events.len(), 0),
            "{what}: the torn batch's event ids must not be remembered"
        );
    }
    drop(e);
    let e = open(&fs).unwrap_or_else(|err| panic!("{what}: reopen failed: {err}"));
    assert!(
        e.recovery().torn_tails.is_empty(),
        "{what}: torn tail reported again: {:?}",
        e.recovery().torn_tails
    );
    assert_eq!(
        sum_of(&e, all_hits()).unwrap(),
        fx.totals[BATCHES],
        "{what}: after the retry"
    );
}

#[test]
fn wal_cut_anywhere_in_the_last_record_is_a_torn_tail() {
    let fx = wal_fixture();
    let full = &fx.img[&fx.wal];
    let (start, end) = *fx.records.last().unwrap();
    for cut in start..=end {
        let torn = (cut > start && cut < end).then_some((start as u64, (cut - start) as u64));
        check_torn(
            &fx,
            full[..cut].to_vec(),
            cut == end,
            torn,
            &format!("cut at {cut} (last record {start}..{end})"),
        );
    }
}

#[test]
fn wal_zero_and_garbage_tails_are_torn_tails() {
    let fx = wal_fixture();
    let full = &fx.img[&fx.wal];
    let (start, end) = *fx.records.last().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for n in [1, 2, 4, 8, 9, 16, 17, 33, 100, 511, 4096, 70_000] {
        // After a complete last record: nothing is lost but the tail.
        let mut zeros = full.clone();
        zeros.resize(end + n, 0);
        check_torn(
            &fx,
            zeros,
            true,
            Some((end as u64, n as u64)),
            &format!("{n} zero bytes appended"),
        );
        let mut garbage = full.clone();
        garbage.extend(rng.bytes(n));
        check_torn(
            &fx,
            garbage,
            true,
            Some((end as u64, n as u64)),
            &format!("{n} garbage bytes appended"),
        );
    }
    // A last record only partly written, the rest of its space zero-filled or
    // garbage (as a file system that extended the file but lost the data leaves it).
    // The padding may happen to restore the record (its last bytes are zeros), in
    // which case nothing but the excess is lost.
    let expect = |bytes: &[u8]| {
        if bytes.len() >= end && bytes[..end] == full[..] {
            (
                true,
                (bytes.len() > end).then_some((end as u64, (bytes.len() - end) as u64)),
            )
        } else {
            (false, Some((start as u64, (bytes.len() - start) as u64)))
        }
    };
    for cut in (start + 1..end).step_by(3) {
        for pad in [end - cut, end - cut + 50] {
            let mut zeros = full[..cut].to_vec();
            zeros.resize(cut + pad, 0);
            let (complete, torn) = expect(&zeros);
            check_torn(
                &fx,
                zeros,
                complete,
                torn,
                &format!("cut at {cut}, {pad} zeros"),
            );
            let mut garbage = full[..cut].to_vec();
            garbage.extend(rng.bytes(pad));
            let (complete, torn) = expect(&garbage);
            check_torn(
                &fx,
                garbage,
                complete,
                torn,
                &format!("cut at {cut}, {pad} garbage bytes"),
            );
        }
    }
}

#[test]
fn wal_damaged_last_record_is_a_torn_tail() {
    let fx = wal_fixture();
    let (start, end) = *fx.records.last().unwrap();
    for at in start..end {
        let mut bytes = fx.img[&fx.wal].clone();
        bytes[at] ^= 0x10;
        check_torn(
            &fx,
            bytes,
            false,
            Some((start as u64, (end - start) as u64)),
            &format!("flip at {at} of the last record"),
        );
    }
}

#[test]
fn wal_flipped_byte_in_an_earlier_record_is_corruption() {
    let fx = wal_fixture();
    let n = fx.records.len();
    for &(start, end) in &fx.records[..n - 1] {
        for at in start..end {
            for mask in EVERY_BIT.into_iter().chain([0xff]) {
                let fs = restore(&flipped(&fx.img, &fx.wal, at, mask));
                let what = format!("flip {mask:#04x} at {at} of record {start}..{end}");
                let offset = corrupt_offset(open(&fs), &fx.wal, &what);
                assert_eq!(offset, start as u64, "{what}: offset of the damaged record");
            }
        }
    }
    // The file header.
    for at in 0..wal::WAL_HEADER_LEN {
        for mask in EVERY_BIT {
            let fs = restore(&flipped(&fx.img, &fx.wal, at, mask));
            let what = format!("flip {mask:#04x} at {at} of the WAL header");
            assert_eq!(corrupt_offset(open(&fs), &fx.wal, &what), 0, "{what}");
        }
    }
}

#[test]
fn wal_torn_tail_in_a_file_that_is_not_the_last_is_corruption() {
    let fx = wal_fixture();
    // A second session writes into a second WAL file.
    let fs = restore(&fx.img);
    let e = open(&fs).unwrap();
    let hits = e.series_id("hits").unwrap();
    e.apply(&Batch {
        producer: None,
        events: vec![event(hits, 5, NOW, None)],
    })
    .unwrap();
    drop(e);
    let img = image(&fs);
    let wals: Vec<&PathBuf> = img
        .keys()
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    assert_eq!(wals.len(), 2);
    let (start, end) = *fx.records.last().unwrap();
    for cut in [start + 1, (start + end) / 2, end - 1] {
        let bytes = img[&fx.wal][..cut].to_vec();
        let fs = restore(&with_file(&img, &fx.wal, bytes));
        let what = format!("first WAL file cut at {cut}");
        assert_eq!(
            corrupt_offset(open(&fs), &fx.wal, &what),
            start as u64,
            "{what}"
        );
    }
}

#[test]
fn wal_file_with_a_torn_header_is_dropped_when_it_is_the_last() {
    let fx = wal_fixture();
    // A second session's file, as a crash while creating it leaves it.
    let second = dir().join(WAL_DIR).join(wal::file_name(2));
    let header = wal::file_header(2);
    for len in 0..header.len() {
        let mut bytes = header[..len].to_vec();
        let fs = restore(&with_file(&fx.img, &second, bytes.clone()));
        let what = format!("second WAL file of {len} header bytes");
        let e = open(&fs).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(
            e.recovery().torn_tails,
            vec![(second.clone(), 0, len as u64)],
            "{what}"
        );
        assert_eq!(
            sum_of(&e, all_hits()).unwrap(),
            fx.totals[BATCHES],
            "{what}"
        );
        drop(e);
        assert!(
            open(&fs).unwrap().recovery().torn_tails.is_empty(),
            "{what}"
        );
        // The same bytes damaged rather than short, with nothing after them.
        bytes.resize(header.len(), 0);
        let fs = restore(&with_file(&fx.img, &second, bytes));
        let e = open(&fs).unwrap_or_else(|err| panic!("{what}, zero-filled: {err}"));
        assert_eq!(
            e.recovery().torn_tails,
            vec![(second.clone(), 0, header.len() as u64)],
            "{what}, zero-filled"
        );
    }
}

// ---------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------

/// Series `hits{s=00}` .. `hits{s=10}`: 0..9 have 500 minutes three days ago
/// (cold), 9 and 10 have 60 minutes two hours ago (hot). The minute segment then
/// holds two blocks: 4,096 cold cells (zstd) and the rest (lz4); hour blocks are
/// lz4 and day blocks zstd.
const SERIES: usize = 11;

fn key(s: usize) -> String {
    format!("hits{{s={s:02}}}")
}

fn fixture_events(ids: &[u32], round: i64) -> Vec<Event> {
    let mut events = Vec::new();
    for (s, id) in ids.iter().enumerate() {
        let s = s as i64;
        if s < 9 {
            for k in 0..500 {
                let delta = (s * 7 + k + round) % 13 + 1;
                events.push(event(*id, delta, NOW - 3 * DAY_MS + k * MINUTE_MS, None));
            }
        }
        if s >= 9 {
            for k in 0..60 {
                let delta = if k % 5 == 0 { -(k + round) } else { 1 };
                events.push(event(*id, delta, NOW - 2 * HOUR_MS + k * MINUTE_MS, None));
            }
        }
    }
    events
}

struct SegFixture {
    img: Image,
    /// Exact sum of every series.
    sums: Vec<i64>,
    /// The live segment files.
    segments: Vec<PathBuf>,
}

/// Flushes `rounds` times (the same cells with other deltas each time), then
/// compacts when `compact`.
fn seg_fixture(rounds: i64, compact: bool) -> SegFixture {
    let fs = FaultFs::new();
    let e = open(&fs).unwrap();
    let ids: Vec<u32> = (0..SERIES).map(|s| e.series_id(&key(s)).unwrap()).collect();
    let mut sums = vec![0i64; SERIES];
    for round in 0..rounds {
        let mut events = fixture_events(&ids, round);
        // Some event ids, so the dedup checkpoint has content.
        for (i, ev) in events.iter_mut().enumerate().take(20) {
            ev.id = Some(EventId(1000 * round as u64 + i as u64));
        }
        for ev in &events {
            sums[ev.series as usize] += ev.delta;
        }
        let out = e
            .apply(&Batch {
                producer: Some(ProducerSeq {
                    id: 42,
                    seq: round as u64 + 1,
                }),
                events,
            })
            .unwrap();
        assert_eq!(out.duplicates, 0);
        e.flush().unwrap();
    }
    if compact {
        let out = e.compact().unwrap();
        assert!(out.tasks >= 3, "expected a merge per tier: {out:?}");
    }
    assert_eq!(e.stats().segments, [1, 1, 1]);
    drop(e);
    let img = image(&fs);
    let segments: Vec<PathBuf> = img
        .keys()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .cloned()
        .collect();
    let fx = SegFixture {
        img,
        sums,
        segments,
    };
    // The fixture must hold what the tests claim to damage.
    let mut codecs = Vec::new();
    for p in &fx.segments {
        let seg = load_segment(&fx, p);
        for b in seg.blocks() {
            codecs.push((seg.meta().tier, fx.img[p][b.offset as usize]));
        }
    }
    use tallydb_storage::Tier::{Day, Hour, Minute};
    codecs.sort();
    assert_eq!(
        codecs,
        vec![(Minute, 1), (Minute, 2), (Hour, 1), (Day, 2)],
        "(tier, codec) of every block"
    );
    // And the engine must answer it exactly.
    let e = open(&restore(&fx.img)).unwrap();
    for (q, r) in queries().iter().zip(run_queries(&e)) {
        assert_eq!(r.unwrap(), q.expected(&fx), "{q:?} on the intact data");
    }
    fx
}

fn mapped(bytes: Vec<u8>) -> Mapped {
    Arc::new(bytes)
}

fn load_segment(fx: &SegFixture, path: &Path) -> Segment {
    Segment::from_bytes(path, mapped(fx.img[path].clone())).unwrap()
}

/// One query of the sweep: a series (or all, `None`) summed over a range at a step
/// that makes it read one tier.
#[derive(Debug, Clone, Copy)]
struct Query {
    series: Option<usize>,
    step: i64,
}

impl Query {
    fn expected(&self, fx: &SegFixture) -> i64 {
        match self.series {
            Some(s) => fx.sums[s],
            None => fx.sums.iter().sum(),
        }
    }
}

/// Per tier: all series together (reads every block), and series that read only
/// the first minute block (0), both (8) or only the second (9, 10).
fn queries() -> Vec<Query> {
    let mut q = Vec::new();
    for step in [MINUTE_MS, HOUR_MS, DAY_MS] {
        for s in [0, 8, 9, 10] {
            q.push(Query {
                series: Some(s),
                step,
            });
        }
        q.push(Query { series: None, step });
    }
    q
}

fn run_query(e: &Engine, q: &Query) -> Result<i64> {
    let today = NOW.div_euclid(DAY_MS) * DAY_MS;
    let (from, to) = match q.step {
        MINUTE_MS => (NOW - 3 * DAY_MS - HOUR_MS, NOW + MINUTE_MS),
        _ => (today - 4 * DAY_MS, today + DAY_MS),
    };
    let selector = match q.series {
        Some(s) => Selector::Exact(key(s)),
        None => all_hits(),
    };
    let r = e.range(&RangeQuery {
        selector,
        from,
        to,
        step: Step::Fixed(q.step),
        agg: Agg::Sum,
    })?;
    let want_tier = match q.step {
        MINUTE_MS => 1,
        HOUR_MS => 2,
        _ => 4,
    };
    assert_eq!(r.provenance.tiers, want_tier, "{q:?} must read one tier");
    Ok(r.groups
        .iter()
        .flat_map(|g| &g.points)
        .map(|(_, v)| match v {
            Value::Int(v) => *v,
            Value::Float(f) => panic!("sum gave a float {f}"),
        })
        .sum())
}

fn run_queries(e: &Engine) -> Vec<Result<i64>> {
    queries().iter().map(|q| run_query(e, q)).collect()
}

/// A part of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    BlockHeader(usize),
    Payload(usize),
    Index,
    Footer,
}

/// The parts of an intact segment with their byte ranges.
fn parts(seg: &Segment) -> Vec<(Part, std::ops::Range<usize>)> {
    let len = seg.bytes().len();
    let mut out = vec![(Part::Header, 0..HEADER_LEN)];
    let mut index_at = HEADER_LEN;
    for (i, b) in seg.blocks().iter().enumerate() {
        let at = b.offset as usize;
        let end = at + b.len as usize;
        out.push((Part::BlockHeader(i), at..at + BLOCK_HEADER_LEN));
        out.push((Part::Payload(i), at + BLOCK_HEADER_LEN..end));
        index_at = end;
    }
    out.push((Part::Index, index_at..len - FOOTER_LEN));
    out.push((Part::Footer, len - FOOTER_LEN..len));
    out
}

fn block_of(part: Part) -> Option<usize> {
    match part {
        Part::BlockHeader(i) | Part::Payload(i) => Some(i),
        _ => None,
    }
}

/// Offsets to damage in `range`: every byte, or for long ranges the first and
/// last 24 bytes and a dense sample between them.
fn sample(range: std::ops::Range<usize>, every: bool) -> Vec<usize> {
    if every || range.len() <= 160 {
        return range.collect();
    }
    let (a, b) = (range.start, range.end);
    let mut v: Vec<usize> = (a..a + 24).collect();
    v.extend((a + 24..b - 24).step_by(((b - a) / 112).max(1)));
    v.extend(b - 24..b);
    v
}

/// Damages every part of every segment through the engine: open must fail with
/// `Corrupt` naming the file inside the damaged part, or (block damage only) every
/// query must either be exact or fail with `Corrupt` naming the block, and at
/// least one must fail.
fn sweep_engine(fx: &SegFixture) {
    let qs = queries();
    for path in &fx.segments {
        let seg = load_segment(fx, path);
        for (part, range) in parts(&seg) {
            let block_offset = block_of(part).map(|i| seg.blocks()[i].offset);
            for at in sample(range.clone(), false) {
                let what = format!("{} {part:?} byte {at}", path.display());
                let fs = restore(&flipped(&fx.img, path, at, 0x20));
                match open(&fs) {
                    Err(Error::Corrupt { file, offset, .. }) => {
                        assert_eq!(&file, path, "{what}");
                        match block_offset {
                            Some(b) => assert_eq!(offset, b, "{what}"),
                            None => assert!(
                                range.contains(&(offset as usize)),
                                "{what}: offset {offset} outside {range:?}"
                            ),
                        }
                    }
                    Err(other) => panic!("{what}: expected Corrupt, got {other:?}"),
                    Ok(e) => {
                        let Some(b) = block_offset else {
                            panic!("{what}: damage outside the blocks went unnoticed at open");
                        };
                        let mut failed = 0;
                        for (q, r) in qs.iter().zip(run_queries(&e)) {
                            match r {
                                Ok(v) => {
                                    assert_eq!(v, q.expected(fx), "{what}: wrong answer to {q:?}")
                                }
                                Err(err) => {
                                    let off = corrupt_offset::<()>(Err(err), path, &(&what, q));
                                    assert_eq!(off, b, "{what}: {q:?} names the block");
                                    failed += 1;
                                }
                            }
                        }
                        assert!(failed > 0, "{what}: no query noticed the damaged block");
                    }
                }
            }
        }
    }
}

#[test]
fn segment_damage_after_a_flush_is_detected_through_the_engine() {
    sweep_engine(&seg_fixture(1, false));
}

#[test]
fn segment_damage_after_a_compaction_is_detected_through_the_engine() {
    sweep_engine(&seg_fixture(4, true));
}

/// Every byte of every segment, every part, straight through `Segment::from_bytes`
/// and `read_block`.
fn sweep_segment(fx: &SegFixture) {
    for path in &fx.segments {
        let seg = load_segment(fx, path);
        let good: Vec<Vec<CellRow>> = (0..seg.blocks().len())
            .map(|i| {
                let mut rows = Vec::new();
                seg.read_block(i, &mut rows).unwrap();
                rows
            })
            .collect();
        for (part, range) in parts(&seg) {
            for at in sample(range.clone(), true) {
                for mask in EVERY_BIT {
                    let what = format!("{} {part:?} byte {at} ^ {mask:#04x}", path.display());
                    let mut bytes = fx.img[path].clone();
                    bytes[at] ^= mask;
                    match Segment::from_bytes(path, mapped(bytes)) {
                        Err(e) => {
                            let off = corrupt_offset::<()>(Err(e), path, &what);
                            assert!(
                                block_of(part).is_none(),
                                "{what}: blocks are checked when read, not at open ({off})"
                            );
                            assert!(
                                range.contains(&(off as usize)),
                                "{what}: offset {off} outside {range:?}"
                            );
                        }
                        Ok(damaged) => {
                            let Some(bad) = block_of(part) else {
                                panic!("{what}: accepted at open");
                            };
                            for (i, want) in good.iter().enumerate() {
                                let mut rows = Vec::new();
                                let r = damaged.read_block(i, &mut rows);
                                if i == bad {
                                    let off = corrupt_offset(r, path, &what);
                                    assert_eq!(off, seg.blocks()[i].offset, "{what}");
                                } else {
                                    r.unwrap();
                                    assert_eq!(&rows, want, "{what}: intact block {i}");
                                }
                            }
                            let read: Vec<Result<CellRow>> = Arc::new(damaged).iter().collect();
                            assert!(
                                read.iter().any(|r| r.is_err()),
                                "{what}: iteration missed the damage"
                            );
                        }
                    }
                }
            }
        }
        // Every truncation, and a zero-filled file, fail at open.
        let bytes = &fx.img[path];
        for len in 0..bytes.len() {
            let r = Segment::from_bytes(path, mapped(bytes[..len].to_vec()));
            corrupt_offset(r, path, &format!("{} cut at {len}", path.display()));
        }
        let r = Segment::from_bytes(path, mapped(vec![0; bytes.len()]));
        corrupt_offset(r, path, &"zero-filled segment");
    }
}

#[test]
fn segment_damage_is_detected_by_open_and_read_block() {
    sweep_segment(&seg_fixture(1, false));
    sweep_segment(&seg_fixture(4, true));
}

#[test]
fn segment_open_reads_through_the_file_system() {
    let fx = seg_fixture(1, false);
    let path = &fx.segments[0];
    let seg = load_segment(&fx, path);
    let fs = restore(&fx.img);
    assert_eq!(Segment::open(&fs, path).unwrap().meta(), seg.meta());
    // Damage in the footer: refused at open.
    let len = fx.img[path].len();
    fs.corrupt(path, (len - 10) as u64, 0x40).unwrap();
    let off = corrupt_offset(Segment::open(&fs, path), path, &"footer");
    assert_eq!(off, (len - FOOTER_LEN) as u64);
    // Damage in a block: opens, the block is refused when read.
    let fs = restore(&fx.img);
    let b = seg.blocks()[0];
    fs.corrupt(path, b.offset + b.len as u64 - 1, 0x01).unwrap();
    let damaged = Segment::open(&fs, path).unwrap();
    let mut rows = Vec::new();
    assert_eq!(
        corrupt_offset(damaged.read_block(0, &mut rows), path, &"payload"),
        b.offset
    );
    // A block number past the index is an error, not a panic.
    assert!(damaged.read_block(99, &mut rows).is_err());
    // A missing file is an I/O error naming it.
    let missing = dir().join(SEGMENTS_DIR).join(segment::file_name(999));
    match Segment::open(&fs, &missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing segment: {}", describe(&other)),
    }
}

// ---------------------------------------------------------------------------
// Manifest, dictionary, dedup checkpoint, FORMAT
// ---------------------------------------------------------------------------

/// Flips every byte of `path` (with each mask) and expects `Corrupt` naming it.
fn every_flip_is_corrupt(
    fx: &SegFixture,
    path: &Path,
    range: std::ops::Range<usize>,
    masks: &[u8],
) {
    for at in range {
        for &mask in masks {
            let fs = restore(&flipped(&fx.img, path, at, mask));
            corrupt_offset(
                open(&fs),
                path,
                &format!("{} byte {at} ^ {mask:#04x}", path.display()),
            );
        }
    }
}

#[test]
fn manifest_damage_is_detected() {
    let fx = seg_fixture(1, false);
    let path = dir().join(MANIFEST_FILE);
    let n = fx.img[&path].len();
    every_flip_is_corrupt(&fx, &path, 0..n, &EVERY_BIT);
    for len in [0, 1, n / 2, n - 4, n - 1] {
        let fs = restore(&with_file(&fx.img, &path, fx.img[&path][..len].to_vec()));
        corrupt_offset(open(&fs), &path, &format!("manifest cut at {len}"));
    }
}

#[test]
fn dictionary_damage_in_the_committed_part_is_detected() {
    let fx = seg_fixture(1, false);
    let path = dir().join(DICT_FILE);
    let m = Manifest::decode(
        &dir().join(MANIFEST_FILE),
        &fx.img[&dir().join(MANIFEST_FILE)],
    )
    .unwrap();
    assert_eq!(m.dict_len as usize, fx.img[&path].len());
    assert_eq!(m.dict_count as usize, SERIES);
    every_flip_is_corrupt(&fx, &path, 0..m.dict_len as usize, &EVERY_BIT);
    // A committed part that is shorter than the manifest says.
    let fs = restore(&with_file(
        &fx.img,
        &path,
        fx.img[&path][..m.dict_len as usize - 3].to_vec(),
    ));
    corrupt_offset(open(&fs), &path, &"dictionary shorter than committed");
}

#[test]
fn dictionary_bytes_past_the_committed_length_are_cut_off() {
    let fx = seg_fixture(1, false);
    let path = dir().join(DICT_FILE);
    let committed = fx.img[&path].clone();
    let mut rng = Rng(0xd1c7_0000_0000_0042);
    // What a checkpoint that crashed before its manifest leaves: a valid record
    // for a series the manifest does not count, then part of another.
    let mut record = Vec::new();
    {
        let body_key = b"hits{s=99}";
        let mut body = Vec::new();
        body.extend_from_slice(&(body_key.len() as u32).to_le_bytes());
        body.extend_from_slice(&(SERIES as u32).to_le_bytes());
        body.extend_from_slice(body_key);
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
    }
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", rng.bytes(37)),
        ("zeros", vec![0; 64]),
        ("valid record", record.clone()),
        (
            "record and a half",
            [record.clone(), record[..9].to_vec()].concat(),
        ),
        ("damaged record", {
            let mut r = record.clone();
            r[6] ^= 0xff;
            r
        }),
    ];
    for (what, tail) in tails {
        let fs = restore(&with_file(
            &fx.img,
            &path,
            [committed.clone(), tail].concat(),
        ));
        let e = open(&fs).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(
            fs.file(&path).unwrap(),
            committed,
            "{what}: tail not cut off"
        );
        let (keys, _) = e.series(&all_hits(), 100).unwrap();
        assert_eq!(keys.len(), SERIES, "{what}: {keys:?}");
        assert_eq!(
            sum_of(&e, Selector::Exact(key(9))).unwrap().0,
            fx.sums[9],
            "{what}"
        );
        // New series append after the cut and survive a reopen.
        let id = e.series_id("hits{s=50}").unwrap();
        assert_eq!(id as usize, SERIES, "{what}");
        e.apply(&Batch {
            producer: None,
            events: vec![event(id, 3, NOW, None)],
        })
        .unwrap();
        e.flush().unwrap();
        drop(e);
        let e = open(&fs).unwrap_or_else(|err| panic!("{what}: reopen: {err}"));
        assert_eq!(
            sum_of(&e, Selector::Exact("hits{s=50}".into())).unwrap(),
            (3, 1),
            "{what}"
        );
        assert_eq!(
            e.series(&all_hits(), 100).unwrap().0.len(),
            SERIES + 1,
            "{what}"
        );
    }
}

#[test]
fn dedup_checkpoint_damage_is_detected() {
    let fx = seg_fixture(1, false);
    let m_path = dir().join(MANIFEST_FILE);
    let m = Manifest::decode(&m_path, &fx.img[&m_path]).unwrap();
    assert_ne!(m.dedup_lsn, 0);
    let path = dir().join(dedup_file_name(m.dedup_lsn));
    let n = fx.img[&path].len();
    assert!(
        n > 100,
        "the checkpoint should hold a producer and event ids ({n} bytes)"
    );
    every_flip_is_corrupt(&fx, &path, 0..n, &EVERY_BIT);
    for len in [0, 3, n / 2, n - 1] {
        let fs = restore(&with_file(&fx.img, &path, fx.img[&path][..len].to_vec()));
        corrupt_offset(open(&fs), &path, &format!("checkpoint cut at {len}"));
    }
    // A checkpoint the manifest names but that is gone: the manifest is blamed.
    let mut img = fx.img.clone();
    img.remove(&path);
    corrupt_offset(open(&restore(&img)), &m_path, &"missing checkpoint");
}

#[test]
fn missing_manifest_beside_live_data_is_corruption() {
    let fx = seg_fixture(1, false);
    let mut img = fx.img.clone();
    img.remove(&dir().join(MANIFEST_FILE));
    let fs = restore(&img);
    let r = open(&fs);
    let survived = fx.segments.iter().all(|p| fs.file(p).is_some());
    corrupt_offset(r, &dir().join(MANIFEST_FILE), &"missing manifest");
    assert!(survived, "segments were deleted");
}

fn expect_unsupported(r: Result<Engine>, what: &str) {
    match r {
        Err(Error::UnsupportedFormat { path, .. }) => {
            assert_eq!(path, dir().join(FORMAT_FILE), "{what}")
        }
        other => panic!(
            "{what}: expected UnsupportedFormat, got {}",
            describe(&other)
        ),
    }
}

#[test]
fn format_file_damage_is_detected() {
    let fx = seg_fixture(1, false);
    let path = dir().join(FORMAT_FILE);
    let n = fx.img[&path].len();
    for at in 0..n {
        for mask in [0x80, 0x20, 0xff] {
            let fs = restore(&flipped(&fx.img, &path, at, mask));
            expect_unsupported(open(&fs), &format!("FORMAT byte {at} ^ {mask:#04x}"));
        }
    }
    for len in [0, 10, n - 3] {
        let fs = restore(&with_file(&fx.img, &path, fx.img[&path][..len].to_vec()));
        expect_unsupported(open(&fs), &format!("FORMAT cut at {len}"));
    }
    let mut img = fx.img.clone();
    img.remove(&path);
    expect_unsupported(open(&restore(&img)), "FORMAT missing beside data");
}

#[test]
fn format_file_every_single_bit_flip_is_detected() {
    let fx = seg_fixture(1, false);
    let path = dir().join(FORMAT_FILE);
    for at in 0..fx.img[&path].len() {
        for bit in 0..8 {
            let fs = restore(&flipped(&fx.img, &path, at, 1 << bit));
            expect_unsupported(open(&fs), &format!("FORMAT byte {at} bit {bit}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Lock
// ---------------------------------------------------------------------------

#[test]
fn a_second_open_of_a_locked_directory_fails_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let opts = || Options {
        background: false,
        fs: Arc::new(OsFs),
        ..Options::default()
    };
    let first = Engine::open(&dir, opts()).unwrap();
    let id = first.series_id("hits").unwrap();
    first
        .apply(&Batch {
            producer: None,
            events: vec![Event {
                series: id,
                delta: 4,
                ts: None,
                id: None,
            }],
        })
        .unwrap();
    for _ in 0..2 {
        match Engine::open(&dir, opts()) {
            Err(Error::Locked { path }) => assert_eq!(path, dir.join(LOCK_FILE)),
            other => panic!("second open: expected Locked, got {}", describe(&other)),
        }
    }
    // The refused open changed nothing.
    let now = first.options().clock.now_ms();
    let total = first
        .total(
            &Selector::Exact("hits".into()),
            now - HOUR_MS,
            now + HOUR_MS,
        )
        .unwrap();
    assert_eq!(total.sum, 4);
    drop(first);
    let second = Engine::open(&dir, opts()).unwrap();
    let total = second
        .total(
            &Selector::Exact("hits".into()),
            now - HOUR_MS,
            now + HOUR_MS,
        )
        .unwrap();
    assert_eq!((total.sum, total.count), (4, 1));
    assert!(second.recovery().torn_tails.is_empty());
}

#[test]
fn faultfs_lock_behaves_the_same() {
    let fs = FaultFs::new();
    let first = open(&fs).unwrap();
    match open(&fs) {
        Err(Error::Locked { path }) => assert_eq!(path, dir().join(LOCK_FILE)),
        other => panic!("second open: expected Locked, got {}", describe(&other)),
    }
    drop(first);
    open(&fs).unwrap();
}
