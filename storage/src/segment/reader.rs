//! Reading a segment file: [`Segment`] maps the file and verifies its header,
//! footer and index at open; then finds a series' blocks through the index,
//! sweeps the blocks a range needs, or iterates every cell. Blocks are
//! decoded through a [`BlockScratch`], which shares them with other queries
//! through the engine-wide [`BlockCache`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block;
use super::runs::BlockRuns;
use super::{
    BlockMeta, SegmentMeta, BLOCK_HEADER_LEN, FOOTER_LEN, FOOTER_MAGIC, HEADER_LEN, INDEX_ENTRY_LEN,
};
use crate::block_cache::BlockCache;
use crate::cell::{Cell, CellRow, SeriesSums};
use crate::coding::{crc32, DecodeFault, Reader};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, PREFIX_LEN};
use crate::fs::{FileSystem, Mapped};
use crate::time::Tier;

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
        format::check_seal(header).map_err(|f| f.at(path))?;
        let prefix = format::read_prefix(header, FileKind::Segment).map_err(|f| f.at(path))?;
        let tier =
            Tier::from_index(prefix.field[0]).ok_or_else(|| bad(10, "unknown tier".into()))?;
        let mut r = Reader::new(&header[PREFIX_LEN..]);
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
        let fe = |e: DecodeFault| bad(foot_at, e.to_string());
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
            let ie =
                |e: DecodeFault| bad(index_offset as usize + i * INDEX_ENTRY_LEN, e.to_string());
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
        let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
        let at = b.offset as usize;
        let block = self
            .bytes()
            .get(at..at + b.len as usize)
            .ok_or_else(|| bad("block past the end of the file".into()))?;
        let raw = block::open(block, b.cells).map_err(bad)?;
        Ok((raw, b.cells))
    }

    /// Verifies and decodes block `i` into `out`.
    pub fn read_block(&self, i: usize, out: &mut Vec<CellRow>) -> Result<()> {
        let (raw, cells) = self.block_raw(i)?;
        let b = self.blocks[i];
        let bad = |reason: String| Error::corrupt(&self.path, b.offset, reason);
        block::decode(&raw, cells, out).map_err(bad)?;
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
    pub fn scan_series<F: FnMut(i64, &Cell) + ?Sized>(
        &self,
        series: u32,
        from: i64,
        to: i64,
        scratch: &mut BlockScratch,
        f: &mut F,
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
        scratch: &mut BlockScratch,
    ) -> Result<(i128, u64)> {
        let (mut sum, mut count) = (0i128, 0u64);
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
            sum += s;
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
    pub fn sweep_cells<S: SeriesSums + ?Sized>(&self, from: i64, to: i64, sums: &S) -> u64 {
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
    fn blocks_of<S: SeriesSums + ?Sized>(&self, sums: &S) -> (usize, &[BlockMeta]) {
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
    pub fn sweep_sums<S: SeriesSums + ?Sized>(
        &self,
        from: i64,
        to: i64,
        scratch: &mut BlockScratch,
        sums: &mut S,
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

/// A query's scratch handle on decoded blocks: remembers the last block it
/// used, so a scan over increasing series indexes each block once, and shares
/// blocks across queries through the engine-wide [`BlockCache`] when given
/// one. Per query (or per thread), never shared.
#[derive(Debug, Default)]
pub struct BlockScratch {
    shared: Option<Arc<BlockCache<BlockRuns>>>,
    key: Option<(u64, usize)>,
    runs: Option<Arc<BlockRuns>>,
}

impl BlockScratch {
    /// A handle that looks blocks up in `shared` before decoding them.
    pub fn with_shared(shared: Arc<BlockCache<BlockRuns>>) -> Self {
        BlockScratch {
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
