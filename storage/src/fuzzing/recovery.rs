//! Target `wal_recovery`: the WAL scan, each record's decoding and canonical
//! re-encoding, and the replay against a model of the records.

use super::*;

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

/// The scan's report is coherent with the bytes.
pub(super) fn check_scan(path: &Path, data: &[u8], scan: &FileScan) {
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
pub(super) fn check_record(payload: &[u8]) -> Option<BatchRecord> {
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

pub(super) fn encode_record(rec: &BatchRecord) -> Vec<u8> {
    let mut out = Vec::new();
    wal::encode_batch(
        &mut out,
        &rec.header,
        rec.new_series.iter().map(|(id, key)| (*id, key.as_str())),
        &rec.events,
    );
    out
}

pub(super) fn replay(data: &[u8], last: bool) -> crate::Result<(Replay, WalFileInfo)> {
    let mut replay =
        Replay::new(SeriesDict::new(), 0).with_dedup(DedupState::new(), PRODUCER_IDLE_MS);
    let rel = wal_path().display().to_string();
    let info = replay.file(&rel, data, WAL_SEQ, 0, last)?;
    Ok((replay, info))
}

pub(super) fn check_replay(
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
