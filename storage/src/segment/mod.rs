//! Immutable segment files: the cells of one tier, sorted by series then bucket,
//! in checksummed, compressed, columnar blocks with a block index and a footer.
//!
//! Layout (little-endian; byte-exact description in docs/STORAGE.md):
//! `header(24) | block* | index | footer(60)`. Readers map the file and verify the
//! header, footer and index checksums at open, and each block's checksum every
//! time the block is decoded. A reader touches only the blocks whose key range
//! overlaps its query.
//!
//! - [`writer`]: [`SegmentWriter`], cells in, file out;
//! - [`block`]: the block format: header, compression, the columns of a block;
//! - [`runs`]: [`BlockRuns`], a decoded block indexed by series run, read one
//!   series at a time or swept whole;
//! - [`reader`]: [`Segment`], an open, verified, mapped file: lookups, sweeps,
//!   iteration, and [`BlockScratch`], a query's handle on decoded blocks.
//!
//! Segments hand out cells and per-series sums ([`crate::cell::SeriesSums`]);
//! what a query does with them is the query side's business.

pub mod block;
pub mod reader;
pub mod runs;
pub mod writer;

#[cfg(test)]
mod tests;

use crate::time::Tier;

pub use crate::cell::CellRow;
pub use block::Codec;
pub use reader::{BlockScratch, Segment, SegmentIter};
pub use runs::BlockRuns;
pub use writer::SegmentWriter;

/// Magic near the end of every segment file.
pub const FOOTER_MAGIC: [u8; 8] = *b"TALLYEND";
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
