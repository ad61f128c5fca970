//! The read path: range, total and top-k execution. A query resolves its
//! selector, asks the planner which tier serves each part of its time range,
//! then reads the active memtable, the frozen memtables and the overlapping
//! segments of one `Arc` snapshot of the live version, so it sees every
//! acknowledged increment exactly once.

use std::sync::Arc;

use crate::cell::Cell;
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::query::{
    plan, resolve_step, Agg, Group, Plan, Provenance, RangeQuery, RangeResult, Selector, TopEntry,
    TopQuery, TopResult, TotalGroup, TotalGroupsResult, TotalResult, Value,
};
use crate::segment;
use crate::sweep::{Access, Sums, MEMTABLE_LOOKUP_ENTRIES, SEGMENT_LOOKUP_CELLS};
use crate::time::Tier;

use super::select::{resolve_groups, resolve_ids, Resolved};
use super::state::{read, Shared};

impl Shared {
    /// Calls `f(index into ids, tier, bucket, cell)` for every stored cell of the
    /// selected series inside the plan's pieces: memtables first, then segments,
    /// reading only the blocks that overlap.
    fn scan(
        &self,
        ids: &[u32],
        plan: &Plan,
        f: &mut dyn FnMut(usize, Tier, i64, &Cell),
    ) -> Result<()> {
        let version = {
            let t = read(&self.tables);
            for p in &plan.pieces {
                for (i, id) in ids.iter().enumerate() {
                    t.active
                        .scan(*id, p.tier, p.from_bucket, p.to_bucket, &mut |b, c| {
                            f(i, p.tier, b, c)
                        });
                }
            }
            Arc::clone(&t.version)
        };
        for fr in &version.frozen {
            for p in &plan.pieces {
                for (i, id) in ids.iter().enumerate() {
                    fr.mem
                        .scan(*id, p.tier, p.from_bucket, p.to_bucket, &mut |b, c| {
                            f(i, p.tier, b, c)
                        });
                }
            }
        }
        let mut cache = segment::BlockScratch::with_shared(Arc::clone(&self.blocks));
        for seg in &version.segments {
            let m = seg.meta();
            for p in plan.pieces.iter().filter(|p| {
                p.tier == m.tier && p.from_bucket <= m.max_bucket && p.to_bucket > m.min_bucket
            }) {
                for (i, id) in ids.iter().enumerate() {
                    seg.scan_series(*id, p.from_bucket, p.to_bucket, &mut cache, &mut |b, c| {
                        f(i, p.tier, b, c)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Adds the sum and count of the selected series' stored cells inside the
    /// plan's pieces to `sums`: the read behind totals and top-k, which need no
    /// more than sums and counts. Each source (memtable, frozen memtable,
    /// segment) is read per piece either by looking each selected series up or
    /// by one sequential sweep, as `access` and the cost model decide.
    fn scan_sums(&self, plan: &Plan, access: Access, sums: &mut Sums) -> Result<()> {
        let selected = sums.ids().len();
        if selected == 0 {
            return Ok(());
        }
        let mem_sums = |mem: &Memtable, sums: &mut Sums| {
            let sweep = access.sweeps(sums, MEMTABLE_LOOKUP_ENTRIES, || mem.sweep_entries());
            if sweep {
                sums.prepare_sweep();
            }
            for p in &plan.pieces {
                if sweep {
                    mem.sweep_sums(p.tier, p.from_bucket, p.to_bucket, sums);
                    continue;
                }
                for i in 0..selected {
                    let id = sums.ids()[i];
                    let (mut sum, mut count) = (0i128, 0u64);
                    mem.scan(id, p.tier, p.from_bucket, p.to_bucket, &mut |_, c| {
                        sum += i128::from(c.sum);
                        count = count.wrapping_add(c.count);
                    });
                    sums.add_slot(i, sum, count);
                }
            }
        };
        let version = {
            let t = read(&self.tables);
            mem_sums(&t.active, sums);
            Arc::clone(&t.version)
        };
        for fr in &version.frozen {
            mem_sums(&fr.mem, sums);
        }
        let mut cache = segment::BlockScratch::with_shared(Arc::clone(&self.blocks));
        for seg in &version.segments {
            let m = seg.meta();
            for p in plan.pieces.iter().filter(|p| {
                p.tier == m.tier && p.from_bucket <= m.max_bucket && p.to_bucket > m.min_bucket
            }) {
                let cells = || seg.sweep_cells(p.from_bucket, p.to_bucket, sums);
                if access.sweeps(sums, SEGMENT_LOOKUP_CELLS, cells) {
                    sums.prepare_sweep();
                    seg.sweep_sums(p.from_bucket, p.to_bucket, &mut cache, sums)?;
                    continue;
                }
                for i in 0..selected {
                    let id = sums.ids()[i];
                    let (sum, count) =
                        seg.sum_series(id, p.from_bucket, p.to_bucket, &mut cache)?;
                    sums.add_slot(i, sum, count);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        q.selector.validate()?;
        let now = self.opts.clock.now_ms();
        let step = resolve_step(q, &self.opts.retention, now)?;
        let grid_from = crate::query::clamp_time(q.from).div_euclid(step) * step;
        let p = plan(grid_from, q.to, Some(step), &self.opts.retention, now);
        let start = p.from.div_euclid(step) * step;
        let points = ((p.to - start + step - 1) / step).max(0) as usize;
        let r = {
            let dict = read(&self.dict);
            resolve_groups(&dict, &q.selector, q.selector.group_by())
        };
        if r.groups.len().saturating_mul(points) > 10_000_000 {
            return Err(Error::InvalidQuery(format!("{} groups x {points} points is too large an answer; narrow the selector or widen the step", r.groups.len())));
        }
        let mut cells: Vec<Vec<Option<WideCell>>> = vec![vec![None; points]; r.groups.len()];
        self.scan(&r.ids, &p, &mut |i, tier, b, c| {
            let k = (tier.start_of(b) - start).div_euclid(step);
            if let Some(slot) = cells[r.group_of[i]].get_mut(k as usize) {
                match slot {
                    Some(acc) => acc.merge(c),
                    None => *slot = Some(WideCell::of(c)),
                }
            }
        })?;
        let secs = step as f64 / 1000.0;
        let point = |k: usize, c: &Option<WideCell>| -> Result<Option<(i64, Value)>> {
            let t = start + k as i64 * step;
            let too_large = |value: i128| Error::TotalOverflow {
                what: "range point",
                value,
            };
            let v = match (q.agg, c) {
                (Agg::Sum, c) => {
                    let sum = c.map_or(0, |c| c.sum);
                    Value::Int(i64::try_from(sum).map_err(|_| too_large(sum))?)
                }
                (Agg::Count, c) => {
                    let count = c.map_or(0, |c| c.count);
                    let wide = i128::try_from(count).unwrap_or(i128::MAX);
                    Value::Int(i64::try_from(count).map_err(|_| too_large(wide))?)
                }
                (Agg::Rate, c) => Value::Float(c.map_or(0.0, |c| c.sum as f64) / secs),
                (_, None) => return Ok(None),
                (Agg::Avg, Some(c)) => Value::Float(c.sum as f64 / c.count as f64),
                (Agg::Min, Some(c)) => Value::Int(c.min),
                (Agg::Max, Some(c)) => Value::Int(c.max),
            };
            Ok(Some((t, v)))
        };
        let mut groups = Vec::with_capacity(r.groups.len());
        for (labels, cells) in r.groups.into_iter().zip(cells) {
            let mut points = Vec::new();
            for (k, c) in cells.iter().enumerate() {
                if let Some(p) = point(k, c)? {
                    points.push(p);
                }
            }
            groups.push(Group { labels, points });
        }
        groups.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(RangeResult {
            step,
            groups,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: start,
                to: p.to,
                series: r.ids.len(),
            },
        })
    }

    pub(crate) fn total(
        &self,
        selector: &Selector,
        from: i64,
        to: i64,
        access: Access,
    ) -> Result<TotalResult> {
        selector.validate()?;
        if from >= to {
            return Err(Error::InvalidQuery(format!(
                "empty time range: from {from} is not before to {to}"
            )));
        }
        let now = self.opts.clock.now_ms();
        let p = plan(from, to, None, &self.opts.retention, now);
        let mut sums = Sums::new(resolve_ids(&read(&self.dict), selector));
        self.scan_sums(&p, access, &mut sums)?;
        let (sum, count) = sums.total();
        let (sum, count) = crate::sweep::narrow("total", sum, count)?;
        Ok(TotalResult {
            sum,
            count,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: p.from,
                to: p.to,
                series: sums.ids().len(),
            },
        })
    }

    pub(crate) fn total_groups(
        &self,
        selector: &Selector,
        from: i64,
        to: i64,
        access: Access,
    ) -> Result<TotalGroupsResult> {
        selector.validate()?;
        if from >= to {
            return Err(Error::InvalidQuery(format!(
                "empty time range: from {from} is not before to {to}"
            )));
        }
        let now = self.opts.clock.now_ms();
        let p = plan(from, to, None, &self.opts.retention, now);
        let Resolved {
            ids,
            group_of,
            groups,
        } = resolve_groups(&read(&self.dict), selector, selector.group_by());
        let mut sums = Sums::new(ids);
        self.scan_sums(&p, access, &mut sums)?;
        // Exact in i128 (each series' sum is a sum of i64 cells); a group whose total
        // does not fit the answer is an error, never a wrapped number.
        let mut totals = vec![(0i128, 0u128); groups.len()];
        for (i, s) in sums.sums().iter().enumerate() {
            if let Some(t) = group_of.get(i).and_then(|g| totals.get_mut(*g)) {
                t.0 += s.0;
                t.1 += s.1;
            }
        }
        let mut groups: Vec<TotalGroup> = groups
            .into_iter()
            .zip(totals)
            .map(|(labels, (sum, count))| {
                let (sum, count) = crate::sweep::narrow("total", sum, count)?;
                Ok(TotalGroup { labels, sum, count })
            })
            .collect::<Result<_>>()?;
        groups.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(TotalGroupsResult {
            groups,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: p.from,
                to: p.to,
                series: sums.ids().len(),
            },
        })
    }

    pub(crate) fn top(&self, q: &TopQuery, access: Access) -> Result<TopResult> {
        q.selector.validate()?;
        if let Some(l) = &q.by_label {
            crate::series::validate_label_name(l)
                .map_err(|e| Error::InvalidQuery(e.to_string()))?;
        }
        if q.from >= q.to {
            return Err(Error::InvalidQuery(format!(
                "empty time range: from {} is not before to {}",
                q.from, q.to
            )));
        }
        let now = self.opts.clock.now_ms();
        let p = plan(q.from, q.to, None, &self.opts.retention, now);
        let by: Vec<String> = q.by_label.iter().cloned().collect();
        let (r, names) = {
            let dict = read(&self.dict);
            let r = resolve_groups(&dict, &q.selector, &by);
            let names: Vec<String> = if by.is_empty() {
                Vec::new()
            } else {
                r.groups
                    .iter()
                    .map(|g| g.first().map(|(_, v)| v.clone()).unwrap_or_default())
                    .collect()
            };
            (r, names)
        };
        let Resolved {
            ids,
            group_of,
            groups,
        } = r;
        let mut sums = Sums::new(ids);
        self.scan_sums(&p, access, &mut sums)?;
        let mut entries: Vec<(i128, u128, usize)> = if by.is_empty() {
            sums.sums()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.1 > 0)
                .map(|(i, s)| (s.0, s.1, i))
                .collect()
        } else {
            let mut g = vec![(0i128, 0u128); groups.len()];
            for (i, s) in sums.sums().iter().enumerate() {
                let e = &mut g[group_of[i]];
                e.0 += s.0;
                e.1 += s.1;
            }
            g.into_iter()
                .enumerate()
                .filter(|(_, s)| s.1 > 0)
                .map(|(i, s)| (s.0, s.1, i))
                .collect()
        };
        let dict = read(&self.dict);
        let name_of = |i: usize| -> &str {
            if by.is_empty() {
                sums.ids()
                    .get(i)
                    .and_then(|id| dict.key(*id))
                    .map_or("", |k| k.as_str())
            } else {
                names[i].as_str()
            }
        };
        // Largest sums first, ties by name: the same order decides which
        // entries make the cut and how they are listed.
        let order = |a: &(i128, u128, usize), b: &(i128, u128, usize)| {
            b.0.cmp(&a.0).then_with(|| name_of(a.2).cmp(name_of(b.2)))
        };
        let n = q.n.min(entries.len());
        if n < entries.len() && n > 0 {
            // The n-th largest sum, found without comparing names: entries
            // above it make the cut, entries below it do not, and only those
            // equal to it compete by name.
            entries.select_nth_unstable_by(n - 1, |a, b| b.0.cmp(&a.0));
            let cut = entries[n - 1].0;
            entries.retain(|e| e.0 >= cut);
            if n < entries.len() {
                entries.select_nth_unstable_by(n - 1, order);
            }
        }
        entries.truncate(n);
        entries.sort_by(order);
        let entries = entries
            .into_iter()
            .map(|(sum, count, i)| {
                let (sum, count) = crate::sweep::narrow("top entry", sum, count)?;
                Ok(TopEntry {
                    name: name_of(i).to_string(),
                    sum,
                    count,
                })
            })
            .collect::<Result<Vec<TopEntry>>>()?;
        Ok(TopResult {
            entries,
            provenance: Provenance {
                tiers: p.tiers(),
                closed_until: p.closed_until(now),
                from: p.from,
                to: p.to,
                series: sums.ids().len(),
            },
        })
    }
}

/// A point's cells merged exactly: the sum and count over many series and
/// buckets may pass `i64`, which an answer then reports as
/// [`Error::TotalOverflow`] instead of wrapping.
#[derive(Debug, Clone, Copy)]
struct WideCell {
    sum: i128,
    count: u128,
    min: i64,
    max: i64,
}

impl Default for WideCell {
    fn default() -> Self {
        WideCell {
            sum: 0,
            count: 0,
            min: i64::MAX,
            max: i64::MIN,
        }
    }
}

impl WideCell {
    fn of(c: &Cell) -> WideCell {
        WideCell {
            sum: i128::from(c.sum),
            count: u128::from(c.count),
            min: c.min,
            max: c.max,
        }
    }

    fn merge(&mut self, c: &Cell) {
        self.sum += i128::from(c.sum);
        self.count += u128::from(c.count);
        self.min = self.min.min(c.min);
        self.max = self.max.max(c.max);
    }
}
