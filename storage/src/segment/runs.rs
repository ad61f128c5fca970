//! A decoded block indexed by series run ([`BlockRuns`]): where each series'
//! cells start in every column, so a lookup decodes one series only and a
//! sweep sums whole runs, often without decoding a varint.

use super::block::{
    read_run_column, skip_varints, value_varints, SHAPE_GENERAL, SHAPE_UNIFORM, SHAPE_UNIT,
};
use crate::block_cache::Weigh;
use crate::cell::{Cell, SeriesSums};
use crate::coding::{unzigzag, DecodeFault, Reader};

/// Sum and count of the cells whose shapes, counts and values are given (the
/// columns of whole runs): no bucket is decoded.
fn sum_cells(
    shapes: &[u8],
    counts: &[u8],
    values: &[u8],
) -> std::result::Result<(i128, u64), String> {
    let (mut sum, mut count) = (0i128, 0u64);
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
            sum += i128::from(d) * i128::from(n);
            count = count.wrapping_add(u64::from(n));
        }
        return Ok((sum, count));
    }
    let e = |e: DecodeFault| e.to_string();
    let mut counts = Reader::new(counts);
    let mut values = Reader::new(values);
    for &shape in shapes {
        let n = counts.uvarint().map_err(e)?;
        let s = match shape {
            SHAPE_UNIT => i128::from(n),
            // A uniform cell's sum is stored as delta × count, which fits i64.
            SHAPE_UNIFORM => i128::from(values.ivarint().map_err(e)?.wrapping_mul(n as i64)),
            SHAPE_GENERAL => {
                let s = values.ivarint().map_err(e)?;
                values.ivarint().map_err(e)?;
                values.ivarint().map_err(e)?;
                i128::from(s)
            }
            other => return Err(format!("unknown cell shape {other}")),
        };
        sum += s;
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

impl Weigh for BlockRuns {
    fn approx_bytes(&self) -> usize {
        BlockRuns::approx_bytes(self)
    }
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
    pub(super) fn index(raw: Vec<u8>, cells: u32) -> std::result::Result<BlockRuns, String> {
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
    pub fn scan<F: FnMut(i64, &Cell) + ?Sized>(
        &self,
        series: u32,
        from: i64,
        to: i64,
        f: &mut F,
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
        let e = |e: DecodeFault| e.to_string();
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
    pub fn sum(&self, series: u32, from: i64, to: i64) -> std::result::Result<(i128, u64), String> {
        let Ok(k) = self.runs.binary_search_by_key(&series, |r| r.series) else {
            return Ok((0, 0));
        };
        self.sum_run(k, from, to)
    }

    /// Sum and count of the cells of run `k` with bucket in `from..to`.
    fn sum_run(&self, k: usize, from: i64, to: i64) -> std::result::Result<(i128, u64), String> {
        let (mut sum, mut count) = (0i128, 0u64);
        self.scan_run(k, from, to, &mut |_, c: &Cell| {
            sum += i128::from(c.sum);
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
    pub fn sweep<S: SeriesSums + ?Sized>(
        &self,
        from: i64,
        to: i64,
        contained: bool,
        sums: &mut S,
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
                (i128::from(count), count)
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
    pub(super) fn bounds(&self) -> std::result::Result<[(u32, i64); 2], String> {
        let (Some(first), Some(last)) = (self.runs.first(), self.runs.last()) else {
            return Err("empty block".into());
        };
        let (fb, _) = self.scan_run(0, i64::MIN, i64::MIN, &mut |_, _| {})?;
        let (_, lb) = self.scan_run(self.runs.len() - 1, i64::MAX, i64::MAX, &mut |_, _| {})?;
        Ok([(first.series, fb), (last.series, lb)])
    }
}
