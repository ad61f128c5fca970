//! Writing a segment file: cells in key order in, blocks of
//! [`BLOCK_CELLS`] cells, the block index and the footer out, then one fsync.
//! The caller publishes the file (see the flush and compaction procedures in
//! docs/STORAGE.md).

use std::path::{Path, PathBuf};

use super::block::{self, Codec};
use super::{
    BlockMeta, SegmentMeta, BLOCK_CELLS, FOOTER_LEN, FOOTER_MAGIC, HEADER_LEN, INDEX_ENTRY_LEN,
};
use crate::cell::CellRow;
use crate::coding::{crc32, put_i64, put_u32, put_u64};
use crate::error::{Error, Result};
use crate::format::{self, FileKind};
use crate::fs::{FileSystem, WritableFile};
use crate::time::Tier;

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
        format::put_prefix(&mut header, FileKind::Segment, [tier.index() as u8, 0]);
        put_u64(&mut header, id);
        format::seal(&mut header);
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
        let max_bucket = self.pending.iter().map(|r| r.bucket).max().unwrap_or(0);
        let codec = Codec::for_block(self.tier, max_bucket, self.cold_before);
        let (head, payload) = block::encode(&self.pending, codec, &mut self.raw)
            .map_err(|e| Error::io("compress block", &self.path, e))?;
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
