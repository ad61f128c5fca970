//! Immutable segment files: the cells of one tier, sorted by series then bucket,
//! in checksummed, compressed, columnar blocks with a block index and a footer.
//!
//! Layout (little-endian; byte-exact description in docs/STORAGE.md):
//! `header(24) | block* | index | footer(60)`. Readers map the file and verify the
//! header, footer and index checksums at open, and each block's checksum every
//! time the block is decoded. A reader touches only the blocks whose key range
//! overlaps its query.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::block_cache::DecodedBlocks;
use crate::cell::Cell;
use crate::coding::{
    crc32, put_i64, put_ivarint, put_u16, put_u32, put_u64, put_uvarint, unzigzag, Reader,
};
use crate::error::{Error, Result};
use crate::fs::{FileSystem, Mapped, WritableFile};
use crate::sweep::Sums;
use crate::time::Tier;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TALLYSEG";
/// Magic near the end of every segment file.
pub const FOOTER_MAGIC: [u8; 8] = *b"TALLYEND";
/// Segment format version written by this build.
pub const SEGMENT_VERSION: u16 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Footer size in bytes.
pub const FOOTER_LEN: usize = 60;
/// Block header size in bytes.
pub const BLOCK_HEADER_LEN: usize = 17;
/// Size of one block index entry in bytes.
pub const INDEX_ENTRY_LEN: usize = 48;
/// Cells per block before a new block starts.
pub const BLOCK_CELLS: usize = 4096;
/// Upper bound on a block's decompressed size, checked before allocating.
pub const MAX_BLOCK_RAW: u32 = 64 << 20;

/// Compression of one block's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// `lz4_flex` block format: fast, for hot minute and hour data.
    Lz4 = 1,
    /// zstd level 3: compact, for day and cold data.
    Zstd = 2,
}

/// One cell with its coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRow {
    /// Series id from the dictionary.
    pub series: u32,
    /// Bucket index within the segment's tier.
    pub bucket: i64,
    /// The aggregate.
    pub cell: Cell,
}

/// Index entry of one block: its key range and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    /// Series of the first cell.
    pub first_series: u32,
    /// Series of the last cell.
    pub last_series: u32,
    /// Bucket of the first cell.
    pub first_bucket: i64,
    /// Bucket of the last cell.
    pub last_bucket: i64,
    /// Largest bucket of any cell in the block.
    pub max_bucket: i64,
    /// Offset of the block header in the file.
    pub offset: u64,
    /// Bytes of header plus payload.
    pub len: u32,
    /// Cells in the block.
    pub cells: u32,
}

/// Summary of a segment, kept in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Unique id; the file is `segments/<id as 16 hex digits>.seg`.
    pub id: u64,
    /// Tier of every cell in the file.
    pub tier: Tier,
    /// Cells in the file.
    pub cells: u64,
    /// Smallest bucket.
    pub min_bucket: i64,
    /// Largest bucket.
    pub max_bucket: i64,
    /// File size in bytes.
    pub bytes: u64,
}

/// File name of segment `id` inside the segments directory.
pub fn file_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

/// Parses a name made by [`file_name`].
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Writes a segment file block by block; cells must come in strictly increasing
/// `(series, bucket)` order.
pub struct SegmentWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    id: u64,
    tier: Tier,
    cold_before: i64,
    offset: u64,
    pending: Vec<CellRow>,
    index: Vec<BlockMeta>,
    raw: Vec<u8>,
    cells: u64,
    series: u32,
    last_series: Option<u32>,
    last_key: Option<(u32, i64)>,
    min_bucket: i64,
    max_bucket: i64,
}

impl std::fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("path", &self.path)
            .field("cells", &self.cells)
            .finish()
    }
}

impl SegmentWriter {
    /// Creates the file. Blocks whose newest bucket is older than `cold_before`
    /// (and all day-tier blocks) are compressed with zstd, the rest with lz4.
    pub fn create(
        fs: &dyn FileSystem,
        path: &Path,
        id: u64,
        tier: Tier,
        cold_before: i64,
    ) -> Result<SegmentWriter> {
        let mut file = fs
            .create(path)
            .map_err(|e| Error::io("create segment", path, e))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&SEGMENT_MAGIC);
        put_u16(&mut header, SEGMENT_VERSION);
        header.push(tier.index() as u8);
        header.push(0);
        put_u64(&mut header, id);
        let crc = crc32(&[&header]);
        put_u32(&mut header, crc);
        file.write_all(&header)
            .map_err(|e| Error::io("write segment", path, e))?;
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            id,
            tier,
            cold_before,
            offset: HEADER_LEN as u64,
            pending: Vec::with_capacity(BLOCK_CELLS),
            index: Vec::new(),
            raw: Vec::new(),
            cells: 0,
            series: 0,
            last_series: None,
            last_key: None,
            min_bucket: i64::MAX,
            max_bucket: i64::MIN,
        })
    }

    /// Appends one cell; keys must strictly increase.
    pub fn push(&mut self, row: CellRow) -> Result<()> {
        let key = (row.series, row.bucket);
        if let Some(last) = self.last_key {
            if key <= last {
                return Err(Error::InvalidOption(format!(
                    "segment writer: key {key:?} after {last:?} is out of order"
                )));
            }
        }
        self.last_key = Some(key);
        if self.last_series != Some(row.series) {
            self.series += 1;
            self.last_series = Some(row.series);
        }
        self.min_bucket = self.min_bucket.min(row.bucket);
        self.max_bucket = self.max_bucket.max(row.bucket);
        self.cells += 1;
        self.pending.push(row);
        if self.pending.len() >= BLOCK_CELLS {
            self.write_block()?;
        }
        Ok(())
    }

    /// Cells pushed so far.
    pub fn cells(&self) -> u64 {
        self.cells
    }

    fn write_block(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        encode_block(&self.pending, &mut self.raw);
        let max_bucket = self.pending.iter().map(|r| r.bucket).max().unwrap_or(0);
        let codec = if self.tier == Tier::Day || max_bucket < self.cold_before {
            Codec::Zstd
        } else {
            Codec::Lz4
        };
        let payload: Vec<u8> = match codec {
            Codec::None => self.raw.clone(),
            Codec::Lz4 => lz4_flex::block::compress(&self.raw),
            Codec::Zstd => zstd::bulk::compress(&self.raw, 3)
                .map_err(|e| Error::io("compress block", &self.path, e))?,
        };
        let mut head = Vec::with_capacity(BLOCK_HEADER_LEN);
        head.push(codec as u8);
        put_u32(&mut head, self.raw.len() as u32);
        put_u32(&mut head, self.pending.len() as u32);
        put_u32(&mut head, payload.len() as u32);
        let crc = crc32(&[&head, &payload]);
        put_u32(&mut head, crc);
        self.file
            .write_all(&head)
            .and_then(|_| self.file.write_all(&payload))
            .map_err(|e| Error::io("write segment", &self.path, e))?;
        let (first, last) = (self.pending[0], self.pending[self.pending.len() - 1]);
        let len = (head.len() + payload.len()) as u32;
        self.index.push(BlockMeta {
            first_series: first.series,
            last_series: last.series,
            first_bucket: first.bucket,
            last_bucket: last.bucket,
            max_bucket,
            offset: self.offset,
            len,
            cells: self.pending.len() as u32,
        });
        self.offset += u64::from(len);
        self.pending.clear();
        Ok(())
    }

    /// Writes the last block, the index and the footer, and fsyncs the file.
    pub fn finish(mut self) -> Result<SegmentMeta> {
        self.write_block()?;
        let mut index = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN);
        for b in &self.index {
            put_u32(&mut index, b.first_series);
            put_u32(&mut index, b.last_series);
            put_i64(&mut index, b.first_bucket);
            put_i64(&mut index, b.last_bucket);
            put_i64(&mut index, b.max_bucket);
            put_u64(&mut index, b.offset);
            put_u32(&mut index, b.len);
            put_u32(&mut index, b.cells);
        }
        let (min_bucket, max_bucket) = if self.cells == 0 {
            (0, 0)
        } else {
            (self.min_bucket, self.max_bucket)
        };
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        put_u64(&mut footer, self.offset);
        put_u32(&mut footer, index.len() as u32);
        put_u32(&mut footer, crc32(&[&index]));
        put_u32(&mut footer, self.index.len() as u32);
        put_u32(&mut footer, self.series);
        put_u64(&mut footer, self.cells);
        put_i64(&mut footer, min_bucket);
        put_i64(&mut footer, max_bucket);
        footer.extend_from_slice(&FOOTER_MAGIC);
        let crc = crc32(&[&footer]);
        put_u32(&mut footer, crc);
        let path = self.path.clone();
        self.file
            .write_all(&index)
            .and_then(|_| self.file.write_all(&footer))
            .and_then(|_| self.file.sync())
            .map_err(|e| Error::io("write segment", &path, e))?;
        Ok(SegmentMeta {
            id: self.id,
            tier: self.tier,
            cells: self.cells,
            min_bucket,
            max_bucket,
            bytes: self.offset + (index.len() + footer.len()) as u64,
        })
    }
}

/// Shape of one cell, so unit and uniform increments cost no value bytes.
const SHAPE_UNIT: u8 = 0; // every delta was 1: sum == count, min == max == 1
const SHAPE_UNIFORM: u8 = 1; // every delta was d: one value column entry
const SHAPE_GENERAL: u8 = 2; // sum, min, max in the value column

/// Encodes cells column by column (runs, buckets, counts, shapes, values) so that
/// similar bytes sit together for the compressor.
fn encode_block(rows: &[CellRow], raw: &mut Vec<u8>) {
    raw.clear();
    let base = rows.iter().map(|r| r.bucket).min().unwrap_or(0);
    put_i64(raw, base);
    // Runs of equal series.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for r in rows {
        match runs.last_mut() {
            Some((s, n)) if *s == r.series => *n += 1,
            _ => runs.push((r.series, 1)),
        }
    }
    put_uvarint(raw, runs.len() as u64);
    let mut prev = 0u32;
    for (i, (s, n)) in runs.iter().enumerate() {
        put_uvarint(raw, u64::from(if i == 0 { *s } else { s - prev }));
        put_uvarint(raw, u64::from(*n));
        prev = *s;
    }
    // Buckets: first of a run relative to the block base, then gaps minus one.
    let mut i = 0;
    for (_, n) in &runs {
        let run = &rows[i..i + *n as usize];
        put_uvarint(raw, (run[0].bucket - base) as u64);
        for w in run.windows(2) {
            put_uvarint(raw, (w[1].bucket - w[0].bucket - 1) as u64);
        }
        i += *n as usize;
    }
    for r in rows {
        put_uvarint(raw, r.cell.count);
    }
    let shape = |c: &Cell| {
        if c.min == 1 && c.max == 1 && c.sum as u64 == c.count {
            SHAPE_UNIT
        } else if c.min == c.max && c.sum == c.min.wrapping_mul(c.count as i64) {
            SHAPE_UNIFORM
        } else {
            SHAPE_GENERAL
        }
    };
    for r in rows {
        raw.push(shape(&r.cell));
    }
    for r in rows {
        match shape(&r.cell) {
            SHAPE_UNIT => {}
            SHAPE_UNIFORM => put_ivarint(raw, r.cell.min),
            _ => {
                put_ivarint(raw, r.cell.sum);
                put_ivarint(raw, r.cell.min);
                put_ivarint(raw, r.cell.max);
            }
        }
    }
}

/// Reads a block's base bucket and run column (series id and cell count of each
/// run), checking that ids increase, no run is empty, the runs hold exactly
/// `cells` cells and the rest of the block can hold them.
fn read_run_column(
    r: &mut Reader<'_>,
    cells: u32,
) -> std::result::Result<(i64, Vec<(u32, u32)>), String> {
    let f = |e: crate::coding::DecodeFault| e.to_string();
    let base = r.i64().map_err(f)?;
    let nruns = r.count(2).map_err(f)?;
    let mut runs = Vec::with_capacity(nruns);
    let mut series = 0u32;
    let mut total = 0usize;
    for i in 0..nruns {
        let d = r.uvarint32().map_err(f)?;
        series = if i == 0 {
            d
        } else {
            series
                .checked_add(d)
                .filter(|_| d > 0)
                .ok_or("series ids not increasing")?
        };
        let n = r.uvarint32().map_err(f)?;
        if n == 0 {
            return Err("empty series run".into());
        }
        total = total.checked_add(n as usize).ok_or("cell count overflow")?;
        runs.push((series, n));
    }
    if total != cells as usize {
        return Err(format!(
            "block declares {cells} cells but its runs hold {total}"
        ));
    }
    if total > r.remaining() {
        return Err("cell count larger than the block".into());
    }
    Ok((base, runs))
}

/// Decodes a block's raw payload; `what` names the block for errors.
fn decode_block(raw: &[u8], cells: u32, out: &mut Vec<CellRow>) -> std::result::Result<(), String> {
    out.clear();
    let mut r = Reader::new(raw);
    let f = |e: crate::coding::DecodeFault| e.to_string();
    let (base, runs) = read_run_column(&mut r, cells)?;
    out.reserve(cells as usize);
    for (s, n) in runs {
        let n = n as usize;
        let mut bucket = base
            .checked_add(i64::try_from(r.uvarint().map_err(f)?).map_err(|_| "bucket overflow")?)
            .ok_or("bucket overflow")?;
        for k in 0..n {
            if k > 0 {
                let gap = i64::try_from(r.uvarint().map_err(f)?).map_err(|_| "bucket overflow")?;
                bucket = bucket
                    .checked_add(gap)
                    .and_then(|b| b.checked_add(1))
                    .ok_or("bucket overflow")?;
            }
            out.push(CellRow {
                series: s,
                bucket,
                cell: Cell::of(0),
            });
        }
    }
    for row in out.iter_mut() {
        row.cell.count = r.uvarint().map_err(f)?;
    }
    let shapes = r.take(cells as usize).map_err(f)?;
    for (row, shape) in out.iter_mut().zip(shapes) {
        let c = &mut row.cell;
        match *shape {
            SHAPE_UNIT => {
                c.sum = c.count as i64;
                c.min = 1;
                c.max = 1;
            }
            SHAPE_UNIFORM => {
                let d = r.ivarint().map_err(f)?;
                c.sum = d.wrapping_mul(c.count as i64);
                c.min = d;
                c.max = d;
            }
            SHAPE_GENERAL => {
                c.sum = r.ivarint().map_err(f)?;
                c.min = r.ivarint().map_err(f)?;
                c.max = r.ivarint().map_err(f)?;
            }
            other => return Err(format!("unknown cell shape {other}")),
        }
    }
    if !r.is_empty() {
        return Err(format!("{} trailing bytes in block", r.remaining()));
    }
    Ok(())
}

/// Position after the `n`-th varint terminator at or after `pos`: skips `n`
/// varints without decoding them, eight bytes at a time.
fn skip_varints(buf: &[u8], mut pos: usize, mut n: usize) -> std::result::Result<usize, String> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while n >= 8 {
        let Some(word) = buf.get(pos..pos + 8) else {
            break;
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let ends = (!u64::from_le_bytes(w) & HIGH).count_ones() as usize;
        if ends >= n {
            break;
        }
        n -= ends;
        pos += 8;
    }
    while n > 0 {
        let b = *buf.get(pos).ok_or("varint column truncated")?;
        pos += 1;
        if b < 0x80 {
            n -= 1;
        }
    }
    Ok(pos)
}

/// Value-column varints of a cell of each shape (unit, uniform, general).
fn value_varints(shapes: &[u8]) -> std::result::Result<usize, String> {
    let mut n = 0usize;
    let mut worst = 0u8;
    for &s in shapes {
        worst = worst.max(s);
        n += [0usize, 1, 3][usize::from(s.min(SHAPE_GENERAL))];
    }
    if worst > SHAPE_GENERAL {
        return Err(format!("unknown cell shape {worst}"));
    }
    Ok(n)
}

/// Sum and count of the cells whose shapes, counts and values are given (the
/// columns of whole runs): no bucket is decoded.
fn sum_cells(
    shapes: &[u8],
    counts: &[u8],
    values: &[u8],
) -> std::result::Result<(i64, u64), String> {
    let (mut sum, mut count) = (0i64, 0u64);
    // The common shapes of counters: unit or uniform cells whose counts and
    // deltas are one-byte varints (as many bytes as cells, as many value bytes
    // as uniform cells): a byte-wise loop with no varint decoding.
    let uniform = shapes.iter().filter(|s| **s == SHAPE_UNIFORM).count();
    if counts.len() == shapes.len()
        && values.len() == uniform
        && shapes.iter().all(|s| *s <= SHAPE_UNIFORM)
    {
        // Branch-free: a unit cell is a uniform cell of delta 1 that takes no
        // value byte.
        let mut at = 0usize;
        for (&shape, &n) in shapes.iter().zip(counts) {
            let uniform = shape == SHAPE_UNIFORM;
            let coded = values.get(at).copied().unwrap_or(0);
            let d = if uniform {
                unzigzag(u64::from(coded))
            } else {
                1
            };
            at += usize::from(uniform);
            sum = sum.wrapping_add(d.wrapping_mul(i64::from(n)));
            count = count.wrapping_add(u64::from(n));
        }
        return Ok((sum, count));
    }
    let e = |e: crate::coding::DecodeFault| e.to_string();
    let mut counts = Reader::new(counts);
    let mut values = Reader::new(values);
    for &shape in shapes {
        let n = counts.uvarint().map_err(e)?;
        let s = match shape {
            SHAPE_UNIT => n as i64,
            SHAPE_UNIFORM => values.ivarint().map_err(e)?.wrapping_mul(n as i64),
            SHAPE_GENERAL => {
                let s = values.ivarint().map_err(e)?;
                values.ivarint().map_err(e)?;
                values.ivarint().map_err(e)?;
                s
            }
            other => return Err(format!("unknown cell shape {other}")),
        };
        sum = sum.wrapping_add(s);
        count = count.wrapping_add(n);
    }
    Ok((sum, count))
}

/// Where one series' run starts in each column of a decompressed block.
#[derive(Debug, Clone, Copy)]
struct RunAt {
    series: u32,
    cells: u32,
    bucket_at: u32,
    count_at: u32,
    shape_at: u32,
    value_at: u32,
}

/// A verified, decompressed block with the position of every series run in
/// each column, so that one series' cells decode without decoding the other
/// series of the block (the columns are read lazily, run by run).
#[derive(Debug)]
pub struct BlockRuns {
    raw: Vec<u8>,
    base: i64,
    runs: Vec<RunAt>,
}

impl BlockRuns {
    /// Indexes a block's raw payload holding `cells` cells: parses the run
    /// column and finds where every run starts in the other columns.
    fn index(raw: Vec<u8>, cells: u32) -> std::result::Result<BlockRuns, String> {
        let mut r = Reader::new(&raw);
        let (base, column) = read_run_column(&mut r, cells)?;
        if raw.len() > u32::MAX as usize {
            return Err("block larger than 4 GiB".into());
        }
        let total = cells as usize;
        let mut runs: Vec<RunAt> = column
            .into_iter()
            .map(|(series, n)| RunAt {
                series,
                cells: n,
                bucket_at: 0,
                count_at: 0,
                shape_at: 0,
                value_at: 0,
            })
            .collect();
        let mut pos = r.position();
        for run in runs.iter_mut() {
            run.bucket_at = pos as u32;
            pos = skip_varints(&raw, pos, run.cells as usize)?;
        }
        for run in runs.iter_mut() {
            run.count_at = pos as u32;
            pos = skip_varints(&raw, pos, run.cells as usize)?;
        }
        let shapes_at = pos;
        pos = pos
            .checked_add(total)
            .filter(|end| *end <= raw.len())
            .ok_or("shape column truncated")?;
        let mut shape_at = shapes_at;
        for run in runs.iter_mut() {
            run.shape_at = shape_at as u32;
            run.value_at = pos as u32;
            let shapes = &raw[shape_at..shape_at + run.cells as usize];
            pos = skip_varints(&raw, pos, value_varints(shapes)?)?;
            shape_at += run.cells as usize;
        }
        if pos != raw.len() {
            return Err(format!("{} trailing bytes in block", raw.len() - pos));
        }
        Ok(BlockRuns { raw, base, runs })
    }

    /// Bytes held, for cache accounting.
    pub fn approx_bytes(&self) -> usize {
        self.raw.len() + self.runs.len() * std::mem::size_of::<RunAt>()
    }

    /// Series of the block, ascending.
    pub fn series(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs.iter().map(|r| r.series)
    }

    /// Calls `f` for each cell of `series` in the block with bucket in
    /// `from..to`, decoding that series' run only.
    pub fn scan(
        &self,
        series: u32,
        from: i64,
        to: i64,
        f: &mut dyn FnMut(i64, &Cell),
    ) -> std::result::Result<(), String> {
        let Ok(k) = self.runs.binary_search_by_key(&series, |r| r.series) else {
            return Ok(());
        };
        self.scan_run(k, from, to, f).map(|_| ())
    }

    /// Decodes run `k`, calling `f` for its cells with bucket in `from..to`;
    /// returns the run's first and last bucket.
    fn scan_run<F: FnMut(i64, &Cell) + ?Sized>(
        &self,
        k: usize,
        from: i64,
        to: i64,
        f: &mut F,
    ) -> std::result::Result<(i64, i64), String> {
        let run = *self.runs.get(k).ok_or("no such run")?;
        let e = |e: crate::coding::DecodeFault| e.to_string();
        let tail = |at: u32| {
            self.raw
                .get(at as usize..)
                .ok_or("column offset past the block")
        };
        let mut buckets = Reader::new(tail(run.bucket_at)?);
        let mut counts = Reader::new(tail(run.count_at)?);
        let mut values = Reader::new(tail(run.value_at)?);
        let shapes = tail(run.shape_at)?
            .get(..run.cells as usize)
            .ok_or("shape column truncated")?;
        let overflow = || "bucket overflow".to_string();
        let mut bucket = self
            .base
            .checked_add(i64::try_from(buckets.uvarint().map_err(e)?).map_err(|_| overflow())?)
            .ok_or_else(overflow)?;
        let first = bucket;
        for (i, &shape) in shapes.iter().enumerate() {
            if i > 0 {
                let gap = i64::try_from(buckets.uvarint().map_err(e)?).map_err(|_| overflow())?;
                bucket = bucket
                    .checked_add(gap)
                    .and_then(|b| b.checked_add(1))
                    .ok_or_else(overflow)?;
                if bucket >= to {
                    return Ok((first, bucket));
                }
            }
            let count = counts.uvarint().map_err(e)?;
            let cell = match shape {
                SHAPE_UNIT => Cell {
                    sum: count as i64,
                    count,
                    min: 1,
                    max: 1,
                },
                SHAPE_UNIFORM => {
                    let d = values.ivarint().map_err(e)?;
                    Cell {
                        sum: d.wrapping_mul(count as i64),
                        count,
                        min: d,
                        max: d,
                    }
                }
                SHAPE_GENERAL => Cell {
                    sum: values.ivarint().map_err(e)?,
                    count,
                    min: values.ivarint().map_err(e)?,
                    max: values.ivarint().map_err(e)?,
                },
                other => return Err(format!("unknown cell shape {other}")),
            };
            if bucket >= from && bucket < to {
                f(bucket, &cell);
            }
        }
        Ok((first, bucket))
    }

    /// Sum and count of the cells of `series` in the block with bucket in
    /// `from..to`: the same cells [`scan`](Self::scan) visits, summed in place.
    pub fn sum(&self, series: u32, from: i64, to: i64) -> std::result::Result<(i64, u64), String> {
        let Ok(k) = self.runs.binary_search_by_key(&series, |r| r.series) else {
            return Ok((0, 0));
        };
        self.sum_run(k, from, to)
    }

    /// Sum and count of the cells of run `k` with bucket in `from..to`.
    fn sum_run(&self, k: usize, from: i64, to: i64) -> std::result::Result<(i64, u64), String> {
        let (mut sum, mut count) = (0i64, 0u64);
        self.scan_run(k, from, to, &mut |_, c: &Cell| {
            sum = sum.wrapping_add(c.sum);
            count = count.wrapping_add(c.count);
        })?;
        Ok((sum, count))
    }

    /// Smallest bucket of any cell in the block.
    pub fn base(&self) -> i64 {
        self.base
    }

    /// Adds the sum and count of every selected series' cells with bucket in
    /// `from..to` to `sums`, run after run. With `contained` (every cell of
    /// the block lies in the range, as its base and the index's largest bucket
    /// show) the bucket column is not read at all: a run of unit cells whose
    /// counts are one-byte varints is summed as a plain byte slice, a run of
    /// unit and uniform cells with one-byte counts and deltas byte by byte.
    pub fn sweep(
        &self,
        from: i64,
        to: i64,
        contained: bool,
        sums: &mut Sums,
    ) -> std::result::Result<(), String> {
        let count_end = self.runs.first().map_or(0, |r| r.shape_at as usize);
        for (k, run) in self.runs.iter().enumerate() {
            if !sums.selects(run.series) {
                continue;
            }
            if !contained {
                let (sum, count) = self.sum_run(k, from, to)?;
                sums.add(run.series, sum, count);
                continue;
            }
            let next = self.runs.get(k + 1);
            let counts = self
                .raw
                .get(run.count_at as usize..next.map_or(count_end, |r| r.count_at as usize))
                .ok_or("count column out of bounds")?;
            let values = self
                .raw
                .get(run.value_at as usize..next.map_or(self.raw.len(), |r| r.value_at as usize))
                .ok_or("value column out of bounds")?;
            let (sum, count) = if values.is_empty() {
                // No value varints: every cell is a unit cell, sum == count.
                let count = if counts.len() == run.cells as usize {
                    // As many bytes as cells: every count is a one-byte varint.
                    counts.iter().map(|b| u64::from(*b)).sum::<u64>()
                } else {
                    let mut r = Reader::new(counts);
                    let mut count = 0u64;
                    for _ in 0..run.cells {
                        count = count.wrapping_add(r.uvarint().map_err(|e| e.to_string())?);
                    }
                    count
                };
                (count as i64, count)
            } else {
                let shapes = self
                    .raw
                    .get(run.shape_at as usize..run.shape_at as usize + run.cells as usize)
                    .ok_or("shape column out of bounds")?;
                sum_cells(shapes, counts, values)?
            };
            sums.add(run.series, sum, count);
        }
        Ok(())
    }

    /// First and last `(series, bucket)` of the block.
    fn bounds(&self) -> std::result::Result<[(u32, i64); 2], String> {
        let (Some(first), Some(last)) = (self.runs.first(), self.runs.last()) else {
            return Err("empty block".into());
        };
        let (fb, _) = self.scan_run(0, i64::MIN, i64::MIN, &mut |_, _| {})?;
        let (_, lb) = self.scan_run(self.runs.len() - 1, i64::MAX, i64::MAX, &mut |_, _| {})?;
        Ok([(first.series, fb), (last.series, lb)])
    }
}

thread_local! {
    /// One zstd decompression context per thread: creating one per block costs
    /// more than decompressing a small block.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(payload, capacity),
            None => zstd::bulk::decompress(payload, capacity),
        }
    })
}

/// An open, verified, memory-mapped segment.
pub struct Segment {
    path: PathBuf,
    map: Mapped,
    meta: SegmentMeta,
    blocks: Vec<BlockMeta>,
    series_count: u32,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Segment {
    /// Maps `path` and checks its header, footer and index.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> Result<Arc<Segment>> {
        let map = fs
            .map(path)
            .map_err(|e| Error::io("open segment", path, e))?;
        Self::from_bytes(path, map).map(Arc::new)
    }

    /// Opens the segment the manifest describes as `meta` and checks that the
    /// file's own summary agrees with it.
    pub fn open_checked(
        fs: &dyn FileSystem,
        path: &Path,
        meta: &SegmentMeta,
    ) -> Result<Arc<Segment>> {
        let seg = Self::open(fs, path)?;
        if seg.meta() != meta {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "segment summary {:?} disagrees with the manifest {meta:?}",
                    seg.meta()
                ),
            ));
        }
        Ok(seg)
    }

    /// Parses an already-loaded segment image.
    pub fn from_bytes(path: &Path, map: Mapped) -> Result<Segment> {
        let bytes: &[u8] = (*map).as_ref();
        let bad = |offset: usize, reason: String| Error::corrupt(path, offset as u64, reason);
        if bytes.len() < HEADER_LEN + FOOTER_LEN {
            return Err(bad(
                0,
                format!("file of {} bytes is too short for a segment", bytes.len()),
            ));
        }
        let header = &bytes[..HEADER_LEN];
        let stored = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
        let crc = crc32(&[&header[..20]]);
        if crc != stored {
            return Err(bad(
                0,
                format!("header checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        if header[..8] != SEGMENT_MAGIC {
            return Err(bad(0, "bad magic: not a segment file".into()));
        }
        let mut r = Reader::new(&header[8..20]);
        let version = r.u16().map_err(|e| bad(8, e.to_string()))?;
        if version != SEGMENT_VERSION {
            return Err(bad(
                8,
                format!("segment format version {version}, this build reads {SEGMENT_VERSION}"),
            ));
        }
        let tier = Tier::from_index(r.u8().map_err(|e| bad(10, e.to_string()))?)
            .ok_or_else(|| bad(10, "unknown tier".into()))?;
        let _flags = r.u8().map_err(|e| bad(11, e.to_string()))?;
        let id = r.u64().map_err(|e| bad(12, e.to_string()))?;

        let foot_at = bytes.len() - FOOTER_LEN;
        let footer = &bytes[foot_at..];
        let stored = u32::from_le_bytes([footer[56], footer[57], footer[58], footer[59]]);
        let crc = crc32(&[&footer[..56]]);
        if crc != stored {
            return Err(bad(
                foot_at,
                format!("footer checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        if footer[48..56] != FOOTER_MAGIC {
            return Err(bad(foot_at + 48, "bad footer magic".into()));
        }
        let fe = |e: crate::coding::DecodeFault| bad(foot_at, e.to_string());
        let mut r = Reader::new(footer);
        let index_offset = r.u64().map_err(fe)?;
        let index_len = r.u32().map_err(fe)?;
        let index_crc = r.u32().map_err(fe)?;
        let block_count = r.u32().map_err(fe)?;
        let series_count = r.u32().map_err(fe)?;
        let cells = r.u64().map_err(fe)?;
        let min_bucket = r.i64().map_err(fe)?;
        let max_bucket = r.i64().map_err(fe)?;
        let index_end = index_offset
            .checked_add(u64::from(index_len))
            .filter(|end| *end == foot_at as u64 && index_offset >= HEADER_LEN as u64)
            .ok_or_else(|| {
                bad(
                    foot_at,
                    "index position disagrees with the file size".into(),
                )
            })?;
        if u64::from(block_count) * INDEX_ENTRY_LEN as u64 != u64::from(index_len) {
            return Err(bad(
                foot_at,
                "index length disagrees with the block count".into(),
            ));
        }
        let index = &bytes[index_offset as usize..index_end as usize];
        let crc = crc32(&[index]);
        if crc != index_crc {
            return Err(bad(
                index_offset as usize,
                format!(
                    "block index checksum mismatch: stored {index_crc:#010x}, computed {crc:#010x}"
                ),
            ));
        }
        let mut r = Reader::new(index);
        let mut blocks = Vec::with_capacity(block_count as usize);
        let mut expected_offset = HEADER_LEN as u64;
        let mut total_cells = 0u64;
        for i in 0..block_count as usize {
            let ie = |e: crate::coding::DecodeFault| {
                bad(index_offset as usize + i * INDEX_ENTRY_LEN, e.to_string())
            };
            let b = BlockMeta {
                first_series: r.u32().map_err(ie)?,
                last_series: r.u32().map_err(ie)?,
                first_bucket: r.i64().map_err(ie)?,
                last_bucket: r.i64().map_err(ie)?,
                max_bucket: r.i64().map_err(ie)?,
                offset: r.u64().map_err(ie)?,
                len: r.u32().map_err(ie)?,
                cells: r.u32().map_err(ie)?,
            };
            if b.offset != expected_offset || (b.len as usize) < BLOCK_HEADER_LEN {
                return Err(bad(
                    index_offset as usize + i * INDEX_ENTRY_LEN,
                    "block offsets are not contiguous".into(),
                ));
            }
            expected_offset += u64::from(b.len);
            total_cells += u64::from(b.cells);
            blocks.push(b);
        }
        if expected_offset != index_offset || total_cells != cells {
            return Err(bad(
                index_offset as usize,
                "block index disagrees with the footer".into(),
            ));
        }
        let bytes_len = bytes.len() as u64;
        Ok(Segment {
            path: path.to_path_buf(),
            map,
            meta: SegmentMeta {
                id,
                tier,
                cells,
                min_bucket,
                max_bucket,
                bytes: bytes_len,
            },
            blocks,
            series_count,
        })
    }

    /// The segment's summary.
    pub fn meta(&self) -> &SegmentMeta {
        &self.meta
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The block index.
    pub fn blocks(&self) -> &[BlockMeta] {
        &self.blocks
    }

    /// Distinct series in the segment.
    pub fn series_count(&self) -> u32 {
        self.series_count
    }

    /// The raw bytes of the whole file (for snapshots).
    pub fn bytes(&self) -> &[u8] {
        (*self.map).as_ref()
    }

    /// Verifies block `i`'s checksum and header and returns its decompressed
    /// payload with its cell count.
    fn block_raw(&self, i: usize) -> Result<(std::borrow::Cow<'_, [u8]>, u32)> {
        let b = self
            .blocks
            .get(i)
            .ok_or_else(|| Error::corrupt(&self.path, 0, format!("no block {i}")))?;
        let bytes = self.bytes();
        let at = b.offset as usize;
        let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
        let block = bytes
            .get(at..at + b.len as usize)
            .ok_or_else(|| bad("block past the end of the file".into()))?;
        let mut r = Reader::new(block);
        let codec = r.u8().map_err(|e| bad(e.to_string()))?;
        let raw_len = r.u32().map_err(|e| bad(e.to_string()))?;
        let cells = r.u32().map_err(|e| bad(e.to_string()))?;
        let payload_len = r.u32().map_err(|e| bad(e.to_string()))?;
        let stored = r.u32().map_err(|e| bad(e.to_string()))?;
        let payload = &block[BLOCK_HEADER_LEN..];
        let crc = crc32(&[&block[..BLOCK_HEADER_LEN - 4], payload]);
        if crc != stored {
            return Err(bad(format!(
                "block checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
            )));
        }
        if payload_len as usize != payload.len() || cells != b.cells || raw_len > MAX_BLOCK_RAW {
            return Err(bad("block header disagrees with the index".into()));
        }
        let raw: std::borrow::Cow<'_, [u8]> = match codec {
            0 => payload.into(),
            1 => lz4_flex::block::decompress(payload, raw_len as usize)
                .map_err(|e| bad(format!("lz4: {e}")))?
                .into(),
            2 => zstd_decompress(payload, raw_len as usize)
                .map_err(|e| bad(format!("zstd: {e}")))?
                .into(),
            other => return Err(bad(format!("unknown codec {other}"))),
        };
        if raw.len() != raw_len as usize {
            return Err(bad("decompressed size differs from the header".into()));
        }
        Ok((raw, cells))
    }

    /// Verifies and decodes block `i` into `out`.
    pub fn read_block(&self, i: usize, out: &mut Vec<CellRow>) -> Result<()> {
        let (raw, cells) = self.block_raw(i)?;
        let b = self.blocks[i];
        let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
        decode_block(&raw, cells, out).map_err(bad)?;
        let (first, last) = match (out.first(), out.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err(bad("empty block".into())),
        };
        if (first.series, first.bucket) != (b.first_series, b.first_bucket)
            || (last.series, last.bucket) != (b.last_series, b.last_bucket)
        {
            return Err(bad("block contents disagree with the index".into()));
        }
        Ok(())
    }

    /// Verifies, decompresses and indexes block `i` for run-by-run decoding.
    pub fn block_runs(&self, i: usize) -> Result<BlockRuns> {
        let (raw, cells) = self.block_raw(i)?;
        let b = self.blocks[i];
        let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
        let runs = BlockRuns::index(raw.into_owned(), cells).map_err(bad)?;
        let [first, last] = runs.bounds().map_err(bad)?;
        if first != (b.first_series, b.first_bucket) || last != (b.last_series, b.last_bucket) {
            return Err(bad("block contents disagree with the index".into()));
        }
        Ok(runs)
    }

    /// Index of the first block that may hold `(series, bucket)` or a later key.
    pub fn first_block_at_or_after(&self, series: u32, bucket: i64) -> usize {
        self.blocks
            .partition_point(|b| (b.last_series, b.last_bucket) < (series, bucket))
    }

    /// Calls `f` for every cell of `series` with bucket in `from..to`, reading only
    /// the blocks that overlap. `scratch` is reused across calls.
    pub fn scan_series(
        &self,
        series: u32,
        from: i64,
        to: i64,
        scratch: &mut BlockCache,
        f: &mut dyn FnMut(i64, &Cell),
    ) -> Result<()> {
        if from >= to || to <= self.meta.min_bucket || from > self.meta.max_bucket {
            return Ok(());
        }
        let mut i = self.first_block_at_or_after(series, from);
        while let Some(b) = self.blocks.get(i) {
            if (b.first_series, b.first_bucket) >= (series, to) {
                break;
            }
            let b = *b;
            let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
            scratch
                .runs(self, i)?
                .scan(series, from, to, f)
                .map_err(bad)?;
            if (b.last_series, b.last_bucket) >= (series, to) {
                return Ok(());
            }
            i += 1;
        }
        Ok(())
    }

    /// Sum and count of the cells of `series` with bucket in `from..to`, like
    /// [`scan_series`](Self::scan_series) but without a call per cell.
    pub fn sum_series(
        &self,
        series: u32,
        from: i64,
        to: i64,
        scratch: &mut BlockCache,
    ) -> Result<(i64, u64)> {
        let (mut sum, mut count) = (0i64, 0u64);
        if from >= to || to <= self.meta.min_bucket || from > self.meta.max_bucket {
            return Ok((sum, count));
        }
        let mut i = self.first_block_at_or_after(series, from);
        while let Some(b) = self.blocks.get(i) {
            if (b.first_series, b.first_bucket) >= (series, to) {
                break;
            }
            let b = *b;
            let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
            let (s, n) = scratch.runs(self, i)?.sum(series, from, to).map_err(bad)?;
            sum = sum.wrapping_add(s);
            count = count.wrapping_add(n);
            if (b.last_series, b.last_bucket) >= (series, to) {
                break;
            }
            i += 1;
        }
        Ok((sum, count))
    }

    /// Cells of the blocks that may hold buckets in `from..to` and a series of
    /// `sums`: the blocks a [`sweep_sums`](Self::sweep_sums) over that range
    /// reads.
    pub fn sweep_cells(&self, from: i64, to: i64, sums: &Sums) -> u64 {
        if from >= to || to <= self.meta.min_bucket || from > self.meta.max_bucket {
            return 0;
        }
        let (_, blocks) = self.blocks_of(sums);
        blocks
            .iter()
            .filter(|b| b.max_bucket >= from && sums.any_in(b.first_series, b.last_series))
            .map(|b| u64::from(b.cells))
            .sum()
    }

    /// The blocks whose series range meets the range of the selected ids, with
    /// the index of the first.
    fn blocks_of(&self, sums: &Sums) -> (usize, &[BlockMeta]) {
        let Some((lo, hi)) = sums.id_range() else {
            return (0, &[]);
        };
        let start = self.blocks.partition_point(|b| b.last_series < lo);
        let end = self.blocks.partition_point(|b| b.first_series <= hi);
        (start, self.blocks.get(start..end.max(start)).unwrap_or(&[]))
    }

    /// Adds the sum and count of every selected series' cells with bucket in
    /// `from..to` to `sums`, walking each block that may hold such buckets
    /// and a selected series once, in file order: no per-series search. See
    /// [`BlockRuns::sweep`].
    pub fn sweep_sums(
        &self,
        from: i64,
        to: i64,
        scratch: &mut BlockCache,
        sums: &mut Sums,
    ) -> Result<()> {
        if from >= to || to <= self.meta.min_bucket || from > self.meta.max_bucket {
            return Ok(());
        }
        let (first, blocks) = self.blocks_of(sums);
        for (i, b) in blocks.iter().enumerate() {
            let i = first + i;
            if b.max_bucket < from || !sums.any_in(b.first_series, b.last_series) {
                continue;
            }
            let runs = scratch.runs(self, i)?;
            let contained = runs.base() >= from && b.max_bucket < to;
            runs.sweep(from, to, contained, sums)
                .map_err(|reason| Error::corrupt(&self.path, b.offset, reason))?;
        }
        Ok(())
    }

    /// Iterates every cell in key order, block by block.
    pub fn iter(self: &Arc<Self>) -> SegmentIter {
        SegmentIter {
            seg: Arc::clone(self),
            block: 0,
            rows: Vec::new(),
            pos: 0,
        }
    }
}

/// A query's handle on decoded blocks: remembers the last block it used, so a
/// scan over increasing series indexes each block once, and shares blocks
/// across queries through an engine-wide [`DecodedBlocks`] cache when given one.
#[derive(Debug, Default)]
pub struct BlockCache {
    shared: Option<Arc<DecodedBlocks>>,
    key: Option<(u64, usize)>,
    runs: Option<Arc<BlockRuns>>,
}

impl BlockCache {
    /// A handle that looks blocks up in `shared` before decoding them.
    pub fn with_shared(shared: Arc<DecodedBlocks>) -> Self {
        BlockCache {
            shared: Some(shared),
            key: None,
            runs: None,
        }
    }

    /// Block `i` of `seg`, verified, decompressed and indexed by run.
    pub fn runs(&mut self, seg: &Segment, i: usize) -> Result<&BlockRuns> {
        let key = (seg.meta.id, i);
        if self.key != Some(key) || self.runs.is_none() {
            self.key = None;
            let cached = self.shared.as_ref().and_then(|c| c.get(key));
            let runs = match cached {
                Some(r) => r,
                None => {
                    let r = Arc::new(seg.block_runs(i)?);
                    if let Some(c) = &self.shared {
                        c.insert(key, Arc::clone(&r));
                    }
                    r
                }
            };
            self.runs = Some(runs);
            self.key = Some(key);
        }
        match &self.runs {
            Some(r) => Ok(r),
            None => Err(Error::corrupt(
                &seg.path,
                0,
                format!("block {i} not loaded"),
            )),
        }
    }
}

/// Every cell of a segment in key order.
#[derive(Debug)]
pub struct SegmentIter {
    seg: Arc<Segment>,
    block: usize,
    rows: Vec<CellRow>,
    pos: usize,
}

impl Iterator for SegmentIter {
    type Item = Result<CellRow>;
    fn next(&mut self) -> Option<Self::Item> {
        while self.pos >= self.rows.len() {
            if self.block >= self.seg.blocks.len() {
                return None;
            }
            if let Err(e) = self.seg.read_block(self.block, &mut self.rows) {
                self.block = self.seg.blocks.len();
                self.rows.clear();
                return Some(Err(e));
            }
            self.block += 1;
            self.pos = 0;
        }
        let r = self.rows[self.pos];
        self.pos += 1;
        Some(Ok(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FaultFs;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

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
            let mut cache = BlockCache::default();
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
                    let sum = want.iter().fold((0i64, 0u64), |a, (_, c)| {
                        (a.0.wrapping_add(c.sum), a.1.wrapping_add(c.count))
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
                            .fold((0i64, 0u64), |a, r| (a.0.wrapping_add(r.cell.sum), a.1.wrapping_add(r.cell.count)));
                        prop_assert_eq!(sums.sums()[k], want);
                    }
                }
            }
            let shared = Arc::new(DecodedBlocks::new(1 << 20));
            for s in [0u32, 17, 59] {
                let want = cells
                    .range((s, from)..(s, to.max(from)))
                    .fold((0i64, 0u64), |a, (_, c)| (a.0.wrapping_add(c.sum), a.1.wrapping_add(c.count)));
                for _ in 0..2 {
                    let mut cache = BlockCache::with_shared(Arc::clone(&shared));
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
        let mut w =
            SegmentWriter::create(&fs, Path::new("y.seg"), 1, Tier::Minute, 0).expect("create");
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
}
