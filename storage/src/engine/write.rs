//! The write path: a batch is checked, its event ids deduplicated, its record
//! appended to the WAL buffer and its cells added to the active memtable, all
//! under the write lock so that LSN order, dedup state and memtable agree. When
//! it becomes durable is [`crate::wal::commit`]'s business.

use std::sync::atomic::Ordering;

use std::sync::Arc;

use crate::cell::Cell;
use crate::dedup::{AppliedSeq, DedupState, EventId, SeqCheck};
use crate::error::{Error, Result};
use crate::options::FsyncPolicy;
use crate::segment::BlockScratch;
use crate::time::Retention;
use crate::time::Tier;
use crate::wal::commit::{LogState, Pending, WAL_BUFFER_WRITE_BYTES};
use crate::wal::{self, BatchHeader, LoggedEvent, ProducerMark};

use super::ledger::{DayMass, Ledger};
use super::state::{read, write, Shared};

/// One increment to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Series id from [`Engine::series_id`](super::Engine::series_id).
    pub series: u32,
    /// The increment (may be negative).
    pub delta: i64,
    /// Event time in ms; the engine's clock when `None`.
    pub ts: Option<i64>,
    /// Event id digest for dedup inside the window.
    pub id: Option<EventId>,
}

/// A producer's `(id, sequence)`: a retried batch with the same pair is applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSeq {
    /// Stable id of the producer (a client instance).
    pub id: u64,
    /// Increasing sequence of the producer's batches.
    pub seq: u64,
}

/// Events applied atomically: all of them or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Exactly-once marker, if the producer uses one.
    pub producer: Option<ProducerSeq>,
    /// The events.
    pub events: Vec<Event>,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// LSN of the batch's WAL record (0 when nothing was logged).
    pub lsn: u64,
    /// Events counted.
    pub applied: u32,
    /// Events skipped because their id was seen inside the dedup window.
    pub duplicates: u32,
    /// True when the producer sequence was already applied: nothing was counted
    /// now; `applied` and `duplicates` repeat the original batch's counts.
    pub duplicate_batch: bool,
    /// Events refused one by one (per-event validation only; their reasons are
    /// returned beside the outcome). `applied + duplicates + refused` is the
    /// number of events sent, also for a retried batch.
    pub refused: u32,
}

/// How a batch is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// All or nothing: the first invalid event fails the whole batch.
    #[default]
    Strict,
    /// Per event: invalid events are refused one by one, with a reason, and
    /// the valid ones are applied together.
    PerEvent,
}

/// Why one event was refused by per-event validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The series id was never issued.
    UnknownSeries {
        /// The id.
        id: u32,
    },
    /// Older than every tier's retention.
    TooOld {
        /// The event's timestamp (ms).
        ts: i64,
        /// The oldest timestamp accepted now.
        oldest: i64,
    },
    /// Before the minimum event time.
    TooEarly {
        /// The event's timestamp (ms).
        ts: i64,
        /// The configured minimum.
        min_ms: i64,
    },
    /// Further ahead than the allowed clock skew.
    TooFarInFuture {
        /// The event's timestamp (ms).
        ts: i64,
        /// The engine's clock.
        now: i64,
        /// The configured skew.
        skew_ms: i64,
    },
}

impl Reason {
    /// The engine error this reason stands for, for event `index`.
    pub fn to_error(self, index: usize) -> Error {
        match self {
            Reason::UnknownSeries { id } => Error::UnknownSeriesId { index, id },
            Reason::TooOld { ts, oldest } => Error::TooOld { index, ts, oldest },
            Reason::TooEarly { ts, min_ms } => Error::TooEarly { index, ts, min_ms },
            Reason::TooFarInFuture { ts, now, skew_ms } => Error::TooFarInFuture {
                index,
                ts,
                now,
                skew_ms,
            },
        }
    }
}

/// One event refused by per-event validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Position of the event in its batch.
    pub index: usize,
    /// Why.
    pub reason: Reason,
}

/// What the write lock guards: the WAL buffer and positions, and the state
/// that must change in the same order as the log.
#[derive(Debug)]
pub(crate) struct WriteState {
    pub(crate) log: LogState,
    /// Producer sequences and event-id windows.
    pub(crate) dedup: DedupState,
    /// Series whose definitions are in the WAL (or a checkpoint) already.
    pub(crate) logged_series: u32,
    /// The events of the batch being logged, kept to reuse the allocation.
    pub(crate) scratch: Vec<LoggedEvent>,
    /// Per series and day bounds that keep every cell inside `i64`.
    pub(crate) ledger: Ledger,
}

impl AsMut<LogState> for WriteState {
    fn as_mut(&mut self) -> &mut LogState {
        &mut self.log
    }
}

/// The clock and limits a batch is checked against, read once per batch.
struct Limits<'a> {
    now: i64,
    skew: i64,
    min_ts: i64,
    retention: &'a Retention,
    /// Series ids issued so far.
    known: u32,
}

/// What deduplication by event id left of a batch.
struct Deduped {
    duplicates: u32,
    /// Expiry of the batch's event ids, if it carried any.
    id_expiry: Option<i64>,
}

impl Shared {
    /// Validates, logs and applies `batch` without waiting for durability;
    /// per-event refusals are pushed to `refused` (only under
    /// [`Validation::PerEvent`]; strict validation fails the batch instead).
    pub(crate) fn submit(
        &self,
        batch: &Batch,
        mode: Validation,
        refused: &mut Vec<Refused>,
    ) -> Result<Pending> {
        if batch.events.len() > self.opts.max_batch_events {
            return Err(Error::BatchTooLarge {
                events: batch.events.len(),
                max: self.opts.max_batch_events,
            });
        }
        let limits = Limits {
            now: self.opts.clock.now_ms(),
            skew: self.opts.max_future_skew_ms,
            min_ts: self.opts.min_event_ms,
            retention: &self.opts.retention,
            known: read(&self.dict).len(),
        };
        // One critical section from here on: the LSN order, the dedup state and
        // the memtable change together, and a bad event leaves all three as
        // they were.
        let mut ws = self.commit.lock();
        ws.log.check_accepting()?;
        if let Some(retry) = check_producer(&ws, batch)? {
            return Ok(retry);
        }
        let first_refused = refused.len();
        let mut events = check_events(&mut ws, batch, &limits, mode, refused)?;
        let refused_now = (refused.len() - first_refused) as u32;
        if let Err(e) = self.check_overflow(&mut ws, &events, &refused[first_refused..]) {
            ws.scratch = events;
            refused.truncate(first_refused);
            return Err(e);
        }
        let deduped = self.drop_seen_ids(&mut ws, &mut events, limits.now);
        let applied = events.len() as u32;
        if events.is_empty() && batch.producer.is_none() {
            ws.scratch = events;
            return Ok(Pending {
                wait_lsn: 0,
                outcome: ApplyOutcome {
                    lsn: 0,
                    applied: 0,
                    duplicates: deduped.duplicates,
                    duplicate_batch: false,
                    refused: refused_now,
                },
            });
        }
        let producer = batch.producer.map(|p| ProducerMark {
            id: p.id,
            seq: p.seq,
            applied,
            duplicates: deduped.duplicates,
        });
        let lsn = self.log_batch(&mut ws, &events, producer, &deduped, limits.now);
        let wants_flush =
            self.insert_memtable(&events) || ws.log.wal_bytes >= self.opts.wal_flush_bytes;
        ws.scratch = events;
        self.count_applied(applied, deduped.duplicates, wants_flush);
        if self.opts.fsync != FsyncPolicy::Always
            && ws.log.buf.len() >= WAL_BUFFER_WRITE_BYTES
            && !ws.log.io_busy
        {
            drop(self.commit.write_out(ws, false));
        }
        Ok(Pending {
            wait_lsn: lsn,
            outcome: ApplyOutcome {
                lsn,
                applied,
                duplicates: deduped.duplicates,
                duplicate_batch: false,
                refused: refused_now,
            },
        })
    }

    /// Refuses the batch whole if counting its events could overflow any cell
    /// (see [`super::ledger`]); otherwise records their mass.
    /// `refused` are the batch's refused events, left out of `events`.
    fn check_overflow(
        &self,
        ws: &mut WriteState,
        events: &[LoggedEvent],
        refused: &[Refused],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let ledger = &mut ws.ledger;
        ledger.begin();
        let mut load = |series: u32, day: i64| self.day_mass(series, day);
        for (index, e) in events.iter().enumerate() {
            if let Err(o) = ledger.add(index, e.series, e.ts, e.delta, &mut load)? {
                ledger.rollback();
                let key = self
                    .dict_key(o.series)
                    .unwrap_or_else(|| format!("#{}", o.series));
                // `index` counts the valid events only; name the event by
                // its position in the batch sent.
                let mut index = index;
                for r in refused {
                    if r.index <= index {
                        index += 1;
                    }
                }
                return Err(super::ledger::overflow_error(
                    super::ledger::Overflow { index, ..o },
                    key,
                ));
            }
        }
        Ok(())
    }

    /// The key of series `id`, if issued.
    fn dict_key(&self, id: u32) -> Option<String> {
        read(&self.dict).key(id).map(|k| k.as_str().to_owned())
    }

    /// The mass bound of one day of one series from its stored day cells.
    fn day_mass(&self, series: u32, day: i64) -> Result<DayMass> {
        let t = read(&self.tables);
        let mut mass = DayMass::default();
        let mut add = |_: i64, c: &Cell| mass = mass.plus(DayMass::of_cell(c));
        t.active.scan(series, Tier::Day, day, day + 1, &mut add);
        for f in &t.version.frozen {
            f.mem.scan(series, Tier::Day, day, day + 1, &mut add);
        }
        let mut scratch = BlockScratch::with_shared(Arc::clone(&self.blocks));
        for seg in &t.version.segments {
            if seg.meta().tier == Tier::Day {
                seg.scan_series(series, day, day + 1, &mut scratch, &mut add)?;
            }
        }
        Ok(mass)
    }

    /// Drops the events whose id was seen inside the dedup window, remembering
    /// the new ids; only called once the whole batch is known valid.
    fn drop_seen_ids(
        &self,
        ws: &mut WriteState,
        events: &mut Vec<LoggedEvent>,
        now: i64,
    ) -> Deduped {
        let mut out = Deduped {
            duplicates: 0,
            id_expiry: None,
        };
        if !events.iter().any(|e| e.id.is_some()) {
            return out;
        }
        let expiry = now.saturating_add(self.opts.dedup_window_ms);
        ws.dedup.expire(now, self.opts.producer_idle_ms);
        let dedup = &mut ws.dedup;
        events.retain(|e| match e.id {
            Some(id) => {
                out.id_expiry = Some(expiry);
                let fresh = dedup.remember(id, expiry);
                out.duplicates += u32::from(!fresh);
                fresh
            }
            None => true,
        });
        out
    }

    /// Appends the batch's record (with the definitions of series new since the
    /// last record) to the WAL buffer and records its producer sequence;
    /// returns its LSN.
    fn log_batch(
        &self,
        ws: &mut WriteState,
        events: &[LoggedEvent],
        producer: Option<ProducerMark>,
        deduped: &Deduped,
        now: i64,
    ) -> u64 {
        let lsn = ws.log.next_lsn;
        ws.log.next_lsn += 1;
        let header = BatchHeader {
            lsn,
            accepted_at: now,
            producer,
            id_expiry: deduped.id_expiry,
        };
        let before = ws.log.buf.len();
        {
            let dict = read(&self.dict);
            let from = ws.logged_series;
            let to = dict.len();
            let defs = (from..to).filter_map(|id| dict.key(id).map(|k| (id, k.as_str())));
            let defs: Vec<(u32, &str)> = defs.collect();
            wal::encode_batch(&mut ws.log.buf, &header, defs.into_iter(), events);
            ws.logged_series = to;
        }
        ws.log.wal_bytes += (ws.log.buf.len() - before) as u64;
        ws.log.last_lsn = lsn;
        if let Some(p) = producer {
            ws.dedup.record_producer(
                p.id,
                AppliedSeq {
                    seq: p.seq,
                    applied: p.applied,
                    duplicates: p.duplicates,
                },
                now,
            );
        }
        lsn
    }

    /// Adds the events to the active memtable; true once it is large enough to flush.
    fn insert_memtable(&self, events: &[LoggedEvent]) -> bool {
        let mut t = write(&self.tables);
        for e in events {
            t.active.add(e.series, e.ts, e.delta, e.coverage);
        }
        t.active.approx_bytes() >= self.opts.memtable_bytes
    }

    /// Counts an applied batch, waking the maintenance thread if a flush is due.
    fn count_applied(&self, applied: u32, duplicates: u32, wants_flush: bool) {
        let c = &self.counters;
        c.events.fetch_add(u64::from(applied), Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.duplicates
            .fetch_add(u64::from(duplicates), Ordering::Relaxed);
        if wants_flush {
            self.bg_cond.notify_all();
        }
    }
}

/// A retried producer sequence is acknowledged once the original is durable
/// (everything logged so far), with the original counts; a sequence older than
/// any remembered is refused.
fn check_producer(ws: &WriteState, batch: &Batch) -> Result<Option<Pending>> {
    let Some(p) = batch.producer else {
        return Ok(None);
    };
    match ws.dedup.producer(p.id).map(|state| state.check(p.seq)) {
        None | Some(SeqCheck::New) => Ok(None),
        Some(SeqCheck::Duplicate(original)) => Ok(Some(Pending {
            wait_lsn: ws.log.last_lsn,
            outcome: ApplyOutcome {
                lsn: 0,
                applied: original.applied,
                duplicates: original.duplicates,
                duplicate_batch: true,
                refused: (batch.events.len() as u32)
                    .saturating_sub(original.applied)
                    .saturating_sub(original.duplicates),
            },
        })),
        Some(SeqCheck::TooOld { oldest }) => Err(Error::SequenceTooOld {
            producer: p.id,
            seq: p.seq,
            oldest,
        }),
    }
}

/// Checks every event (known series, not before the minimum time, not too
/// far in the future, inside some tier's retention) and resolves its time and
/// tiers. Strict: the first bad event fails the batch. Per event: bad events
/// are pushed to `refused` and left out.
fn check_events(
    ws: &mut WriteState,
    batch: &Batch,
    limits: &Limits<'_>,
    mode: Validation,
    refused: &mut Vec<Refused>,
) -> Result<Vec<LoggedEvent>> {
    let mut events = std::mem::take(&mut ws.scratch);
    events.clear();
    let now = limits.now;
    let oldest = limits.retention.oldest_accepted(now);
    let cutoffs = limits.retention.cutoffs(now);
    for (index, e) in batch.events.iter().enumerate() {
        let checked = if e.series >= limits.known {
            Err(Reason::UnknownSeries { id: e.series })
        } else {
            let ts = e.ts.unwrap_or(now);
            if ts > now.saturating_add(limits.skew) {
                Err(Reason::TooFarInFuture {
                    ts,
                    now,
                    skew_ms: limits.skew,
                })
            } else if ts < limits.min_ts {
                Err(Reason::TooEarly {
                    ts,
                    min_ms: limits.min_ts,
                })
            } else {
                match Retention::coverage_at(&cutoffs, ts) {
                    0 => Err(Reason::TooOld { ts, oldest }),
                    coverage => Ok(LoggedEvent {
                        series: e.series,
                        ts,
                        delta: e.delta,
                        coverage,
                        id: e.id,
                    }),
                }
            }
        };
        match (checked, mode) {
            (Ok(logged), _) => events.push(logged),
            (Err(reason), Validation::PerEvent) => refused.push(Refused { index, reason }),
            (Err(reason), Validation::Strict) => {
                ws.scratch = events;
                return Err(reason.to_error(index));
            }
        }
    }
    Ok(events)
}
