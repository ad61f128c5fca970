//! The block format: a block's 17-byte header (codec, raw and payload
//! lengths, cells, CRC32), its compression (lz4 for hot data, zstd for cold),
//! and its columns (runs, buckets, counts, shapes, values), encoded from cells
//! and decoded back. Byte layout in docs/STORAGE.md.

use std::borrow::Cow;

use super::{BLOCK_HEADER_LEN, MAX_BLOCK_RAW};
use crate::cell::{Cell, CellRow};
use crate::coding::{crc32, put_i64, put_ivarint, put_u32, put_uvarint, DecodeFault, Reader};
use crate::time::Tier;

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

impl Codec {
    /// The codec of a block of `tier` whose newest bucket is `max_bucket`:
    /// zstd for day blocks and blocks older than `cold_before`, lz4 for the
    /// rest.
    pub fn for_block(tier: Tier, max_bucket: i64, cold_before: i64) -> Codec {
        if tier == Tier::Day || max_bucket < cold_before {
            Codec::Zstd
        } else {
            Codec::Lz4
        }
    }
}

/// Encodes `rows` (at least one, in key order) as one block compressed with
/// `codec`, using `raw` as scratch: returns the block header and the payload.
pub fn encode(
    rows: &[CellRow],
    codec: Codec,
    raw: &mut Vec<u8>,
) -> std::io::Result<([u8; BLOCK_HEADER_LEN], Vec<u8>)> {
    encode_columns(rows, raw);
    let payload: Vec<u8> = match codec {
        Codec::None => raw.clone(),
        Codec::Lz4 => lz4_flex::block::compress(raw),
        Codec::Zstd => zstd::bulk::compress(raw, 3)?,
    };
    let mut head = Vec::with_capacity(BLOCK_HEADER_LEN);
    head.push(codec as u8);
    put_u32(&mut head, raw.len() as u32);
    put_u32(&mut head, rows.len() as u32);
    put_u32(&mut head, payload.len() as u32);
    let crc = crc32(&[&head, &payload]);
    put_u32(&mut head, crc);
    let mut out = [0u8; BLOCK_HEADER_LEN];
    out.copy_from_slice(&head);
    Ok((out, payload))
}

/// Verifies a block's checksum and header against the `cells` the index
/// declares, and returns its decompressed payload. Errors say what is wrong;
/// the caller adds the file and offset.
pub fn open(block: &[u8], cells: u32) -> Result<Cow<'_, [u8]>, String> {
    let f = |e: DecodeFault| e.to_string();
    let mut r = Reader::new(block);
    let codec = r.u8().map_err(f)?;
    let raw_len = r.u32().map_err(f)?;
    let declared = r.u32().map_err(f)?;
    let payload_len = r.u32().map_err(f)?;
    let stored = r.u32().map_err(f)?;
    let payload = &block[BLOCK_HEADER_LEN..];
    let crc = crc32(&[&block[..BLOCK_HEADER_LEN - 4], payload]);
    if crc != stored {
        return Err(format!(
            "block checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
        ));
    }
    if payload_len as usize != payload.len() || declared != cells || raw_len > MAX_BLOCK_RAW {
        return Err("block header disagrees with the index".into());
    }
    let raw: Cow<'_, [u8]> = match codec {
        0 => payload.into(),
        1 => lz4_flex::block::decompress(payload, raw_len as usize)
            .map_err(|e| format!("lz4: {e}"))?
            .into(),
        2 => zstd_decompress(payload, raw_len as usize)
            .map_err(|e| format!("zstd: {e}"))?
            .into(),
        other => return Err(format!("unknown codec {other}")),
    };
    if raw.len() != raw_len as usize {
        return Err("decompressed size differs from the header".into());
    }
    Ok(raw)
}

/// Shape of one cell, so unit and uniform increments cost no value bytes.
pub(super) const SHAPE_UNIT: u8 = 0; // every delta was 1: sum == count, min == max == 1
pub(super) const SHAPE_UNIFORM: u8 = 1; // every delta was d: one value column entry
pub(super) const SHAPE_GENERAL: u8 = 2; // sum, min, max in the value column

/// Encodes cells column by column (runs, buckets, counts, shapes, values) so that
/// similar bytes sit together for the compressor.
fn encode_columns(rows: &[CellRow], raw: &mut Vec<u8>) {
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
pub(super) fn read_run_column(
    r: &mut Reader<'_>,
    cells: u32,
) -> std::result::Result<(i64, Vec<(u32, u32)>), String> {
    let f = |e: DecodeFault| e.to_string();
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

/// Decodes a block's raw payload into `out`.
pub fn decode(raw: &[u8], cells: u32, out: &mut Vec<CellRow>) -> std::result::Result<(), String> {
    out.clear();
    let mut r = Reader::new(raw);
    let f = |e: DecodeFault| e.to_string();
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
pub(super) fn skip_varints(
    buf: &[u8],
    mut pos: usize,
    mut n: usize,
) -> std::result::Result<usize, String> {
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
pub(super) fn value_varints(shapes: &[u8]) -> std::result::Result<usize, String> {
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
