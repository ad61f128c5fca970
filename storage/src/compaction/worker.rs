//! The compaction worker: carries out what [`choose`] picks. It
//! merges the chosen segments into one new segment, fsyncs it and its
//! directory, publishes a manifest without the inputs, swaps the live version
//! and removes the inputs. A failed directory or manifest fsync poisons the
//! engine, as in a flush; any other failure leaves the inputs live.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{lock, read, Shared};
use crate::error::{Error, Result};
use crate::segment::{self, Segment, SegmentMeta, SegmentWriter};

use super::{choose, CompactionTask, MergeIter};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactOutcome {
    /// Merge tasks run.
    pub tasks: usize,
    /// Segments read.
    pub segments_in: usize,
    /// Cells read.
    pub cells_in: u64,
    /// Cells written.
    pub cells_out: u64,
}

/// Most tasks a run of [`choose`] can need for `segments` live or flushed
/// segments. Each task either merges several segments into one (one fewer
/// segment) or rewrites one segment past retention into one that is not; as
/// time passes a segment can fall past retention again. That bounds a run that
/// converges by three tasks per segment; four plus slack leaves a margin.
fn task_budget(segments: u64) -> u64 {
    segments.saturating_mul(4).saturating_add(16)
}

impl Shared {
    /// Runs the compaction policy until it chooses nothing.
    pub(crate) fn compact_all(&self) -> Result<CompactOutcome> {
        self.compact_until_done(|metas, now| {
            choose(metas, &self.opts.retention, &self.opts.compaction, now)
        })
    }

    /// Runs the tasks `next_task` chooses until it chooses none. Segments that
    /// flushes add meanwhile raise the task budget; past it the run stops with
    /// [`Error::CompactionRunaway`] instead of looping for ever.
    pub(crate) fn compact_until_done(
        &self,
        mut next_task: impl FnMut(&[SegmentMeta], i64) -> Option<CompactionTask>,
    ) -> Result<CompactOutcome> {
        let live_at_start = read(&self.tables).version.segments.len() as u64;
        let flushed_at_start = self.counters.flushed_segments.load(Ordering::Relaxed);
        let mut out = CompactOutcome::default();
        loop {
            let flushed = self.counters.flushed_segments.load(Ordering::Relaxed) - flushed_at_start;
            let budget = task_budget(live_at_start + flushed);
            let mut over_budget = false;
            let step = self.compact_once(|metas, now| {
                let task = next_task(metas, now)?;
                if out.tasks as u64 >= budget {
                    over_budget = true;
                    return None;
                }
                Some(task)
            })?;
            if over_budget {
                return Err(Error::CompactionRunaway { tasks: out.tasks });
            }
            let Some(step) = step else {
                return Ok(out);
            };
            out.tasks += 1;
            out.segments_in += step.segments_in;
            out.cells_in += step.cells_in;
            out.cells_out += step.cells_out;
        }
    }

    /// Runs the one task `next_task` chooses from the live segments, if any.
    pub(crate) fn compact_once(
        &self,
        next_task: impl FnOnce(&[SegmentMeta], i64) -> Option<CompactionTask>,
    ) -> Result<Option<CompactOutcome>> {
        let _guard = lock(&self.compact_lock);
        self.commit.lock().log.check_poisoned()?;
        let started = Instant::now();
        let segments = read(&self.tables).version.segments.clone();
        let metas: Vec<SegmentMeta> = segments.iter().map(|s| *s.meta()).collect();
        let now = self.opts.clock.now_ms();
        let Some(task) = next_task(&metas, now) else {
            return Ok(None);
        };
        let inputs: Vec<Arc<Segment>> = segments
            .into_iter()
            .filter(|s| task.inputs.contains(&s.meta().id))
            .collect();
        let out = self.run_compaction(&task, &inputs)?;
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .compaction_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::info!(tier = %task.tier, inputs = inputs.len(), cells_in = out.cells_in, cells_out = out.cells_out, ms = started.elapsed().as_millis() as u64, "compacted segments");
        Ok(Some(out))
    }

    /// Merges `inputs` into one segment (none if nothing is left) and publishes
    /// the change.
    fn run_compaction(
        &self,
        task: &CompactionTask,
        inputs: &[Arc<Segment>],
    ) -> Result<CompactOutcome> {
        let fs = self.fs();
        let seg_dir = self.dir.join(crate::engine::SEGMENTS_DIR);
        let id = self.allocate_segment_id();
        let path = seg_dir.join(segment::file_name(id));
        let written = (|| -> Result<Option<Arc<Segment>>> {
            let mut w = SegmentWriter::create(fs, &path, id, task.tier, task.cold_before_bucket)?;
            for row in MergeIter::new(inputs, task.keep_from_bucket) {
                w.push(row?)?;
            }
            let empty = w.cells() == 0;
            w.finish()?;
            if empty {
                fs.remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                return Ok(None);
            }
            self.sync_dir_or_poison(&seg_dir)?;
            Ok(Some(Segment::open(fs, &path)?))
        })();
        let output = match written {
            Ok(o) => o,
            Err(e) => {
                let _ = fs.remove_file(&path);
                return Err(e);
            }
        };
        let ids: Vec<u64> = inputs.iter().map(|s| s.meta().id).collect();
        {
            let mut m = lock(&self.manifest);
            let mut next = m.clone();
            next.segments.retain(|s| !ids.contains(&s.id));
            next.segments.extend(output.iter().map(|s| *s.meta()));
            // On failure the new manifest may be in place already: keep its
            // output segment (an orphan, removed at the next open, if not).
            self.store_manifest(&next)?;
            *m = next;
            self.install(|v| {
                v.segments.retain(|s| !ids.contains(&s.meta().id));
                v.segments.extend(output.iter().cloned());
            });
        }
        for s in inputs {
            let _ = fs.remove_file(s.path());
        }
        Ok(CompactOutcome {
            tasks: 1,
            segments_in: inputs.len(),
            cells_in: inputs.iter().map(|s| s.meta().cells).sum(),
            cells_out: output.map_or(0, |s| s.meta().cells),
        })
    }
}
