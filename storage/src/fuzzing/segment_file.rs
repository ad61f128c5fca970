//! Target `segment_open`: opening, every block, the iterator, scans and rewriting
//! of a fuzzed segment file.

use super::*;

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

/// Every block read twice: `Ok(cells)` or the corruption error checked.
pub(super) fn read_blocks(seg: &Segment, path: &Path) -> Vec<Option<Vec<CellRow>>> {
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
pub(super) fn check_iter(seg: &Arc<Segment>, read: &[Option<Vec<CellRow>>]) {
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
pub(super) fn is_intact(seg: &Segment, read: &[Option<Vec<CellRow>>]) -> bool {
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

pub(super) fn check_scans(seg: &Segment, all: &[CellRow], intact: bool) {
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
pub(super) fn check_rewrite(seg: &Segment, all: &[CellRow]) {
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
