//! Old-format fixtures: a small data directory and a backup written by the
//! format-1 code, committed under `tests/fixtures/v1/`, opened by today's code.
//!
//! The fixture proves that every on-disk format still reads (and, where an
//! encoder exists, still writes) byte for byte what version 1 wrote: the
//! `FORMAT` file, the manifest, the series dictionary, the dedup checkpoint,
//! the WAL, segments of each codec (lz4 for hot minute and hour blocks, zstd
//! for day blocks) and `BACKUP-MANIFEST`. The engine opens a copy and must find
//! exactly the counts the script below produced; `verify` must find it intact.
//!
//! The committed files are never modified: every test works on a copy.
//! **Never regenerate the fixture of an existing version**: it is the record
//! of what that version wrote. A new format version gets a new directory
//! (`v2/`, written by [`generate_fixture`] after `FIXTURE_VERSION` is raised)
//! and the old one stays, with its test, for as long as it is supported.
//! To write a new one:
//!
//! ```text
//! TALLY_WRITE_FIXTURE=1 cargo test -p tallydb-storage --test fixtures -- --ignored generate_fixture
//! ```
//!
//! The generator refuses to overwrite an existing directory.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tallydb_storage::backup::{self, BackupManifest, BACKUP_MANIFEST_FILE};
use tallydb_storage::dedup::DedupState;
use tallydb_storage::engine::{
    format_file_contents, DICT_FILE, FORMAT_FILE, MANIFEST_FILE, SEGMENTS_DIR, WAL_DIR,
};
use tallydb_storage::format::Version;
use tallydb_storage::fs::OsFs;
use tallydb_storage::manifest::Manifest;
use tallydb_storage::segment::{self, Segment, SegmentWriter};
use tallydb_storage::time::{Tier, DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::verify::{verify, VerifyOptions};
use tallydb_storage::{
    dict, wal, Batch, Engine, Error, Event, EventId, FsyncPolicy, ManualClock, Options,
    ProducerSeq, Selector, TopQuery,
};

/// The format version whose fixture the generator writes.
const FIXTURE_VERSION: u32 = 1;

/// The generator's clock: 2026-01-15T12:00:00Z.
const NOW: i64 = 20_468 * DAY_MS + 12 * HOUR_MS;

/// The series the script writes, in the order they are created.
const SERIES: [&str; 5] = [
    "page_hits{page=home}",
    "page_hits{page=about}",
    "ad_clicks{ad=ad001,country=US}",
    "com.example.music",
    "com.example.video",
];

fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("v{version}"))
}

fn options(now: i64) -> Options {
    Options {
        background: false,
        fsync: FsyncPolicy::Always,
        clock: Arc::new(ManualClock::new(now)),
        ..Options::default()
    }
}

fn ev(engine: &Engine, series: usize, delta: i64, ago: i64, id: Option<&str>) -> Event {
    Event {
        series: engine.series_id(SERIES[series]).unwrap(),
        delta,
        ts: Some(NOW - ago),
        id: id.map(|s| EventId::from_bytes(s.as_bytes())),
    }
}

fn batch(producer: Option<(u64, u64)>, events: Vec<Event>) -> Batch {
    Batch {
        producer: producer.map(|(id, seq)| ProducerSeq { id, seq }),
        events,
    }
}

/// The script: two batches flushed into segments; one more, then a snapshot
/// (which flushes again) taken as the backup; two batches left in the WAL.
fn write_script(engine: &Engine, backup_dir: &Path) {
    let mut a = Vec::new();
    // Unit increments over a few recent minutes (compact cells, lz4 blocks).
    for m in 0..12 {
        for _ in 0..=(m % 3) {
            a.push(ev(engine, 0, 1, m * MINUTE_MS + 1_000, None));
        }
    }
    // A uniform cell (every delta 3) and general cells.
    for _ in 0..4 {
        a.push(ev(engine, 1, 3, 2 * MINUTE_MS, None));
    }
    a.push(ev(engine, 2, 5, 90 * MINUTE_MS, Some("click-1")));
    a.push(ev(engine, 2, -2, 90 * MINUTE_MS, Some("click-2")));
    a.push(ev(engine, 2, 10, 3 * HOUR_MS, Some("click-3")));
    // Late events: three days old (every tier), forty days old (hour and day).
    a.push(ev(engine, 3, 7, 3 * DAY_MS, None));
    a.push(ev(engine, 3, 2, 40 * DAY_MS, None));
    assert_eq!(
        engine.apply(&batch(Some((7, 1)), a)).unwrap().applied,
        33,
        "batch a"
    );
    let b = vec![
        ev(engine, 0, 1, 30_000, None),
        ev(engine, 3, -4, 2 * DAY_MS + 5 * HOUR_MS, None),
        ev(engine, 3, 1_000_000_000_000, 20 * MINUTE_MS, None),
    ];
    assert_eq!(engine.apply(&batch(None, b)).unwrap().applied, 3, "batch b");
    engine.flush().unwrap();

    let c = vec![
        ev(engine, 2, 5, 10 * MINUTE_MS, Some("click-1")), // a duplicate id
        ev(engine, 2, 6, 10 * MINUTE_MS, Some("click-4")),
        ev(engine, 1, 3, 61 * MINUTE_MS, None),
    ];
    let out = engine.apply(&batch(Some((7, 2)), c)).unwrap();
    assert_eq!((out.applied, out.duplicates), (2, 1), "batch c");
    engine.snapshot(backup_dir).unwrap();
    backup::write_backup_manifest(&OsFs, backup_dir, "fixture generator", NOW, &mut |_| {})
        .unwrap();

    let d = vec![
        ev(engine, 4, 1, 45_000, Some("view-1")),
        ev(engine, 4, 1, 44_000, Some("view-2")),
        ev(engine, 0, 2, 15_000, None),
    ];
    assert_eq!(
        engine.apply(&batch(Some((9, 1)), d)).unwrap().applied,
        3,
        "batch d"
    );
    let e = vec![
        ev(engine, 4, 1, 10_000, Some("view-1")), // a duplicate id
        ev(engine, 1, -1, 5_000, None),
    ];
    let out = engine.apply(&batch(None, e)).unwrap();
    assert_eq!((out.applied, out.duplicates), (1, 1), "batch e");
}

/// Writes the fixture of [`FIXTURE_VERSION`] (see the module documentation).
#[test]
#[ignore = "writes a new fixture; never run it for a version that has one"]
fn generate_fixture() {
    assert!(
        std::env::var_os("TALLY_WRITE_FIXTURE").is_some(),
        "set TALLY_WRITE_FIXTURE=1 to write a new fixture"
    );
    let out = fixture_dir(FIXTURE_VERSION);
    assert!(
        !out.exists(),
        "{} exists: the fixture of an existing version is never regenerated",
        out.display()
    );
    let data = out.join("data");
    let engine = Engine::open(&data, options(NOW)).unwrap();
    write_script(&engine, &out.join("backup"));
    engine.close().unwrap();
    drop(engine);
    // The lock file is the engine's, not part of the format.
    std::fs::remove_file(data.join("LOCK")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A private copy of the fixture's `sub` directory.
fn copy_of(sub: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(sub);
    copy_dir(&fixture_dir(1).join(sub), &dir);
    (tmp, dir)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Sum and count per series over the last 60 days, as the script wrote them.
const DATA_TOTALS: [(i64, u64); 5] = [(27, 26), (14, 6), (19, 4), (1_000_000_000_005, 4), (2, 2)];
/// The same as of the backup (before the last two batches).
const BACKUP_TOTALS: [(i64, u64); 5] = [(25, 25), (15, 5), (19, 4), (1_000_000_000_005, 4), (0, 0)];

fn totals(engine: &Engine) -> Vec<(i64, u64)> {
    SERIES
        .iter()
        .map(|key| {
            let t = engine
                .total(
                    &Selector::Exact(key.to_string()),
                    NOW - 60 * DAY_MS,
                    NOW + HOUR_MS,
                )
                .unwrap();
            (t.sum, t.count)
        })
        .collect()
}

#[test]
fn the_v1_data_directory_opens_with_every_count() {
    let (_tmp, dir) = copy_of("data");
    let engine = Engine::open(&dir, options(NOW + MINUTE_MS)).unwrap();
    let rec = engine.recovery();
    assert_eq!(
        (rec.wal_files, rec.records_replayed, rec.events_replayed),
        (1, 2, 4)
    );
    assert!(rec.torn_tails.is_empty() && rec.orphans_removed.is_empty());
    assert_eq!(totals(&engine), DATA_TOTALS);
    let s = engine.stats();
    assert_eq!(s.series, 5);
    assert_eq!(s.segments, [2, 2, 2]);
    assert_eq!(s.checkpoint_lsn, 3);
    assert_eq!(s.last_lsn, 5);
    // Per-tier reads of the late events: the hour and day tiers hold the
    // forty-day-old one, the minute tier does not.
    let music = Selector::Exact(SERIES[3].to_string());
    let t = engine
        .total(&music, NOW - 41 * DAY_MS, NOW - 39 * DAY_MS)
        .unwrap();
    assert_eq!((t.sum, t.count), (2, 1));
    let top = engine
        .top(&TopQuery {
            selector: Selector::Metric {
                name: "page_hits".into(),
                matchers: vec![],
                group_by: vec![],
            },
            from: NOW - HOUR_MS,
            to: NOW + HOUR_MS,
            n: 1,
            by_label: None,
        })
        .unwrap();
    assert_eq!(top.entries.len(), 1);
    assert_eq!(top.entries[0].name, SERIES[0]);
    assert_eq!(top.entries[0].sum, 27);

    // The dedup checkpoint and the WAL carry the exactly-once state: a
    // remembered event id and producer sequences are recognised.
    let again = engine
        .apply(&batch(
            None,
            vec![
                ev(&engine, 2, 5, 60_000, Some("click-3")),
                ev(&engine, 4, 1, 60_000, Some("view-2")),
            ],
        ))
        .unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 2));
    let retry = engine
        .apply(&batch(Some((7, 2)), vec![ev(&engine, 0, 1, 0, None)]))
        .unwrap();
    assert!(retry.duplicate_batch);
    assert_eq!((retry.applied, retry.duplicates), (2, 1));
    let retry = engine
        .apply(&batch(Some((9, 1)), vec![ev(&engine, 0, 1, 0, None)]))
        .unwrap();
    assert!(retry.duplicate_batch);
    assert_eq!(retry.applied, 3);
    assert_eq!(totals(&engine), DATA_TOTALS);
    engine.close().unwrap();
}

#[test]
fn the_v1_backup_opens_with_the_counts_at_the_snapshot() {
    let (_tmp, dir) = copy_of("backup");
    std::fs::remove_file(dir.join(BACKUP_MANIFEST_FILE)).unwrap();
    let engine = Engine::open(&dir, options(NOW + MINUTE_MS)).unwrap();
    assert_eq!(engine.recovery().records_replayed, 0);
    assert_eq!(totals(&engine), BACKUP_TOTALS);
    engine.close().unwrap();
}

#[test]
fn verify_finds_the_v1_fixture_intact() {
    for sub in ["data", "backup"] {
        let (_tmp, dir) = copy_of(sub);
        let opts = VerifyOptions {
            now: NOW + MINUTE_MS,
            ..VerifyOptions::default()
        };
        let report = verify(&dir, &opts, &mut |_| {}).unwrap();
        assert!(report.findings.is_empty(), "{sub}: {:?}", report.findings);
        assert!(report.is_intact(), "{sub}");
        // The dictionary's committed series (the fifth is defined in the
        // data directory's WAL only) and the segments of both flushes.
        assert_eq!((report.series, report.segments), (4, 6), "{sub}");
        let replayed = if sub == "data" { 2 } else { 0 };
        assert_eq!(report.wal_replayed, replayed, "{sub}");
        assert_eq!(report.backup_manifest, sub == "backup");
        assert!(report.hours_checked > 0 && report.days_checked > 0, "{sub}");
    }
}

#[test]
fn every_v1_file_decodes_and_encodes_to_the_same_bytes() {
    let (_tmp, dir) = copy_of("data");
    let fs = OsFs;

    assert_eq!(
        names(&dir),
        [
            "FORMAT",
            "MANIFEST",
            "dedup-0000000000000003.state",
            "segments",
            "series.dict",
            "wal"
        ]
    );
    assert_eq!(
        read(&dir.join(FORMAT_FILE)),
        format_file_contents().as_bytes()
    );

    let manifest_bytes = read(&dir.join(MANIFEST_FILE));
    let m = Manifest::decode(&dir.join(MANIFEST_FILE), &manifest_bytes).unwrap();
    assert_eq!(m.encode(), manifest_bytes);
    assert_eq!((m.checkpoint_lsn, m.dict_count, m.dedup_lsn), (3, 4, 3));
    assert_eq!(m.segments.len(), 6);

    let dict_bytes = read(&dir.join(DICT_FILE));
    assert_eq!(dict_bytes.len() as u64, m.dict_len);
    let d = dict::decode(&dir.join(DICT_FILE), &dict_bytes).unwrap();
    assert_eq!(d.len(), 4);
    for (id, key) in SERIES[..4].iter().enumerate() {
        assert_eq!(d.get(key), Some(id as u32));
    }
    let mut re = dict::header();
    dict::encode_records(&d, 0, d.len(), &mut re);
    assert_eq!(re, dict_bytes);

    let dedup_bytes = read(&dir.join("dedup-0000000000000003.state"));
    let state = DedupState::decode(&dedup_bytes).unwrap();
    assert_eq!((state.producers(), state.event_ids()), (1, 4));
    assert_eq!(state.encode(), dedup_bytes);

    // The WAL: the header this build writes, and the two records after the
    // checkpoint.
    let wal_dir = dir.join(WAL_DIR);
    let wal_names = names(&wal_dir);
    assert_eq!(wal_names.len(), 1);
    let seq = wal::parse_file_name(&wal_names[0]).unwrap();
    let wal_bytes = read(&wal_dir.join(&wal_names[0]));
    assert_eq!(wal_bytes[..wal::WAL_HEADER_LEN], wal::file_header(seq)[..]);
    let scan = wal::scan_file(&wal_dir.join(&wal_names[0]), &wal_bytes, seq).unwrap();
    assert_eq!(scan.torn_at, None);
    assert_eq!(scan.valid_len, wal_bytes.len() as u64);
    let lsns: Vec<u64> = scan
        .records
        .iter()
        .map(|r| wal::decode_batch(&wal_bytes[r.clone()]).unwrap().header.lsn)
        .collect();
    assert_eq!(lsns, [4, 5]);

    // Segments: each opens against its manifest entry, and writing its cells
    // again gives the same file, byte for byte.
    let mut codecs = BTreeSet::new();
    let mut tiers = Vec::new();
    for meta in &m.segments {
        let path = dir.join(SEGMENTS_DIR).join(segment::file_name(meta.id));
        let seg = Segment::open_checked(&fs, &path, meta).unwrap();
        let rows: Vec<_> = seg.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len() as u64, meta.cells);
        for b in seg.blocks() {
            codecs.insert((meta.tier, seg.bytes()[b.offset as usize]));
        }
        tiers.push(meta.tier);
        let copy = dir.join(format!("rewrite-{}.seg", meta.id));
        let cold = tallydb_storage::compaction::cold_before(meta.tier, NOW);
        let mut w = SegmentWriter::create(&fs, &copy, meta.id, meta.tier, cold).unwrap();
        for r in rows {
            w.push(r).unwrap();
        }
        assert_eq!(&w.finish().unwrap(), meta);
        assert_eq!(read(&copy), read(&path), "segment {}", meta.id);
    }
    tiers.sort_by_key(|t| t.index());
    assert_eq!(
        tiers,
        [
            Tier::Minute,
            Tier::Minute,
            Tier::Hour,
            Tier::Hour,
            Tier::Day,
            Tier::Day
        ]
    );
    // lz4 (1) for the hot minute and hour blocks, zstd (2) for the day blocks.
    assert_eq!(
        codecs,
        BTreeSet::from([(Tier::Minute, 1), (Tier::Hour, 1), (Tier::Day, 2)])
    );
}

#[test]
fn the_v1_backup_manifest_decodes_and_checks() {
    let (_tmp, dir) = copy_of("backup");
    let bytes = read(&dir.join(BACKUP_MANIFEST_FILE));
    let m = BackupManifest::decode(Path::new(BACKUP_MANIFEST_FILE), &bytes).unwrap();
    assert_eq!(m.encode().as_bytes(), bytes);
    assert_eq!(
        (m.created_ms, m.source.as_str()),
        (NOW, "fixture generator")
    );
    assert_eq!(m.files.len(), names(&dir.join(SEGMENTS_DIR)).len() + 4);
    let problems = backup::check_backup_manifest(&OsFs, &dir, &mut |_| {}).unwrap();
    assert_eq!(problems, Some(vec![]));
}

/// Rewrites the version field of a binary file's header to `version` and
/// fixes the checksum that covers it: what a newer build would have written.
fn bump_version(path: &Path, version: u16, seal: Seal) {
    let mut b = read(path);
    b[8..10].copy_from_slice(&version.to_le_bytes());
    let end = match seal {
        Seal::Header(len) => len - 4,
        Seal::File => b.len() - 4,
    };
    let crc = tallydb_storage::coding::crc32(&[&b[..end]]);
    b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

/// Where the checksum covering a header sits.
#[derive(Clone, Copy)]
enum Seal {
    /// At the end of a header of this many bytes.
    Header(usize),
    /// At the end of the file.
    File,
}

#[track_caller]
fn assert_unsupported<T: std::fmt::Debug>(r: tallydb_storage::Result<T>, file: &Path) {
    match r {
        Err(Error::UnsupportedVersion {
            file: f,
            found,
            supported,
            ..
        }) => {
            assert_eq!(f, file);
            assert_eq!(found, 2);
            assert_eq!(supported, &[Version::V1]);
        }
        other => panic!(
            "expected UnsupportedVersion for {}, got {other:?}",
            file.display()
        ),
    }
}

#[test]
fn a_file_of_a_newer_version_is_refused_naming_it_and_the_versions() {
    // A segment, the WAL and the manifest, each on its own copy.
    let (_tmp, dir) = copy_of("data");
    let seg = dir.join(SEGMENTS_DIR).join(segment::file_name(1));
    bump_version(&seg, 2, Seal::Header(segment::HEADER_LEN));
    assert_unsupported(Engine::open(&dir, options(NOW)).map(|_| ()), &seg);

    let (_tmp, dir) = copy_of("data");
    let wal_dir = dir.join(WAL_DIR);
    let wal_file = wal_dir.join(&names(&wal_dir)[0]);
    bump_version(&wal_file, 2, Seal::Header(wal::WAL_HEADER_LEN));
    assert_unsupported(Engine::open(&dir, options(NOW)).map(|_| ()), &wal_file);

    let (_tmp, dir) = copy_of("data");
    let manifest = dir.join(MANIFEST_FILE);
    bump_version(&manifest, 2, Seal::File);
    assert_unsupported(Engine::open(&dir, options(NOW)).map(|_| ()), &manifest);

    // The text header of BACKUP-MANIFEST, its checksum line fixed.
    let (_tmp, dir) = copy_of("backup");
    let text = String::from_utf8(read(&dir.join(BACKUP_MANIFEST_FILE))).unwrap();
    let body = text.replacen("tallydb backup manifest 1", "tallydb backup manifest 2", 1);
    let body = &body[..body.trim_end().rfind('\n').unwrap() + 1];
    let crc = tallydb_storage::coding::crc32(&[body.as_bytes()]);
    let bumped = format!("{body}crc32 {crc:08x}\n");
    let path = Path::new(BACKUP_MANIFEST_FILE);
    assert_unsupported(BackupManifest::decode(path, bumped.as_bytes()), path);
}
