//! `INCR`: a batch of increments, from wire events to the engine's `submit` (all or
//! nothing) or `submit_each` (per-event validation, answered `INCR_REPORT`), and the
//! wait for durability.
//!
//! An `INCR` is answered before it is durable: its `INCR_OK` is encoded at once and the
//! batch's [`storage::Pending`] kept in the [`Session`]. [`settle_pending`] (on the
//! connection's task) or [`finish_pending`] (on a blocking thread) then awaits the group
//! commit, once for a whole run of `INCR`s, before any other answer is encoded and before
//! the output is written: an `INCR_OK` never leaves the server ahead of its fsync, and a
//! failed wait turns those answers into errors.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use tallydb_protocol as proto;
use tallydb_protocol::{
    encode_response, ErrorCode, ErrorReply, IncrOk, IncrReport, Refusal, Response,
};
use tallydb_storage as storage;
use tallydb_storage::{Engine, Error as StorageError};

use super::{storage_error, Handled, Session, Shared};
use crate::aliases::AliasError;

/// Waits until every `INCR` answered optimistically in `out` is durable. Awaited
/// before any other answer is encoded and before `out` is written to the socket,
/// so an `INCR_OK` never leaves the server ahead of its fsync. If the wait fails
/// (the engine refused to sync), those answers are replaced by errors.
pub async fn settle_pending(shared: &Shared, session: &mut Session, out: &mut BytesMut) {
    let Some(pending) = session.pending.take() else {
        session.unsynced.clear();
        return;
    };
    let started = Instant::now();
    let waited = shared.engine.durable(pending).await;
    settled(shared, session, out, started, waited);
}

/// [`settle_pending`] for callers on a blocking thread.
pub fn finish_pending(shared: &Shared, session: &mut Session, out: &mut BytesMut) {
    let Some(pending) = session.pending.take() else {
        session.unsynced.clear();
        return;
    };
    let started = Instant::now();
    let waited = shared.engine.wait(pending);
    settled(shared, session, out, started, waited);
}

fn settled(
    shared: &Shared,
    session: &mut Session,
    out: &mut BytesMut,
    started: Instant,
    waited: storage::Result<storage::ApplyOutcome>,
) {
    shared
        .stats
        .telemetry
        .durable_wait
        .observe(started.elapsed());
    if let Err(e) = waited {
        let reply = storage_error(&e);
        if let Some(&(_, start)) = session.unsynced.first() {
            out.truncate(start);
        }
        for (id, _) in &session.unsynced {
            shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
            shared.stats.telemetry.error(reply.code);
            encode_response(*id, &Response::Error(reply.clone()), out);
        }
    }
    session.unsynced.clear();
}

/// Answers an `INCR`: resolves each event's series (keys, aliases), submits the batch
/// to the engine and encodes its `INCR_OK` (or, for a batch asking for per-event
/// validation, its `INCR_REPORT`), which [`settle_pending`] or [`finish_pending`] hold
/// back until the batch is durable. Allocates one `Vec` of engine events per batch,
/// whatever its size; nothing per valid event.
///
/// Series are created only for events that are counted: every key and time is
/// checked before any key is interned, so a refused batch (or a refused event)
/// leaves the dictionary as it was. With per-event validation, an alias whose
/// defining event is refused is bound by the first later event of the batch that
/// names it and is valid, and otherwise stays as it was: a client treats an alias
/// as defined only once an event naming it in its defining batch was applied.
pub fn apply(
    engine: &Engine,
    session: &mut Session,
    id: u32,
    batch: &proto::Incr<'_>,
    out: &mut BytesMut,
) -> Handled {
    if batch.per_event {
        return apply_each(engine, session, id, batch, out);
    }
    let mut aliases = session.aliases.batch();
    // Every key and alias first, then every time: nothing is interned unless the
    // whole batch is valid.
    let mut defined: Vec<u32> = Vec::new();
    for (index, e) in batch.events.iter().enumerate() {
        let checked = match e.series {
            proto::SeriesRef::Key(key) => check_key(engine, index, key),
            proto::SeriesRef::Alias(alias) => match aliases.resolve(alias) {
                Err(AliasError::Undefined(_)) if defined.contains(&alias) => Ok(()),
                other => other.map(|_| ()).map_err(|e| alias_error(index, e)),
            },
            proto::SeriesRef::Define { key, alias } => {
                check_key(engine, index, key).and_then(|()| match aliases.resolve(alias) {
                    Err(AliasError::OutOfRange { .. }) => aliases
                        .resolve(alias)
                        .map(|_| ())
                        .map_err(|e| alias_error(index, e)),
                    _ => {
                        defined.push(alias);
                        Ok(())
                    }
                })
            }
        };
        if let Err(reply) = checked {
            aliases.abort();
            return Err(reply);
        }
    }
    for (index, e) in batch.events.iter().enumerate() {
        if let Err(reason) = engine.check_time(e.timestamp_ms) {
            aliases.abort();
            return Err(storage_error(&reason.to_error(index)));
        }
    }
    let mut events = Vec::with_capacity(batch.events.len());
    for (index, e) in batch.events.iter().enumerate() {
        let resolved = match e.series {
            proto::SeriesRef::Key(key) => series_id(engine, index, key),
            proto::SeriesRef::Alias(alias) => {
                aliases.resolve(alias).map_err(|e| alias_error(index, e))
            }
            proto::SeriesRef::Define { key, alias } => {
                series_id(engine, index, key).and_then(|sid| {
                    aliases
                        .define(alias, sid)
                        .map(|()| sid)
                        .map_err(|e| alias_error(index, e))
                })
            }
        };
        let series = match resolved {
            Ok(s) => s,
            Err(reply) => {
                aliases.abort();
                return Err(reply);
            }
        };
        events.push(engine_event(series, e));
    }
    let b = storage::Batch {
        producer: producer(batch),
        events,
    };
    match engine.submit(&b) {
        Ok(pending) => {
            aliases.commit();
            // Answered now, sent only after `finish_pending` saw it durable.
            let outcome = pending.outcome();
            session.unsynced.push((id, out.len()));
            session.pending = Some(pending);
            let ok = IncrOk {
                applied: outcome.applied,
                duplicates: outcome.duplicates,
                duplicate_batch: outcome.duplicate_batch,
            };
            encode_response(id, &Response::IncrOk(ok), out);
            Ok(())
        }
        Err(e) => {
            aliases.abort();
            Err(storage_error(&e))
        }
    }
}

/// [`apply`] with per-event validation: a bad event is refused on its own (index
/// and reason in the `INCR_REPORT`) and the valid ones are applied together.
fn apply_each(
    engine: &Engine,
    session: &mut Session,
    id: u32,
    batch: &proto::Incr<'_>,
    out: &mut BytesMut,
) -> Handled {
    let mut aliases = session.aliases.batch();
    let mut refused: Vec<Refusal<'static>> = Vec::new();
    let mut events = Vec::with_capacity(batch.events.len());
    // Position in the batch sent of each engine event.
    let mut positions: Vec<u32> = Vec::with_capacity(batch.events.len());
    // Aliases whose defining event was refused for its time: bound, with their
    // series created, by the first later event of the batch naming them that is
    // valid; otherwise left as they were.
    let mut deferred: Vec<(u32, &str)> = Vec::new();
    for (index, e) in batch.events.iter().enumerate() {
        let time = engine.check_time(e.timestamp_ms);
        let time_ok =
            |time: Result<(), storage::Reason>| time.map_err(|r| storage_error(&r.to_error(index)));
        let resolved = match e.series {
            proto::SeriesRef::Key(key) => check_key(engine, index, key).and_then(|()| {
                time_ok(time)?;
                series_id(engine, index, key)
            }),
            proto::SeriesRef::Alias(alias) => match deferred.iter().position(|d| d.0 == alias) {
                Some(i) => time_ok(time).and_then(|()| {
                    let sid = series_id(engine, index, deferred[i].1)?;
                    deferred.swap_remove(i);
                    aliases
                        .define(alias, sid)
                        .map(|()| sid)
                        .map_err(|e| alias_error(index, e))
                }),
                None => aliases
                    .resolve(alias)
                    .map_err(|e| alias_error(index, e))
                    .and_then(|sid| time_ok(time).map(|()| sid)),
            },
            proto::SeriesRef::Define { key, alias } => check_key(engine, index, key)
                .and_then(|()| match aliases.resolve(alias) {
                    Err(e @ AliasError::OutOfRange { .. }) => Err(alias_error(index, e)),
                    _ => Ok(()),
                })
                .and_then(|()| {
                    deferred.retain(|d| d.0 != alias);
                    if let Err(r) = time {
                        deferred.push((alias, key));
                        return Err(storage_error(&r.to_error(index)));
                    }
                    let sid = series_id(engine, index, key)?;
                    aliases
                        .define(alias, sid)
                        .map(|()| sid)
                        .map_err(|e| alias_error(index, e))
                }),
        };
        match resolved {
            Ok(series) => {
                events.push(engine_event(series, e));
                positions.push(index as u32);
            }
            Err(reply) => refused.push(Refusal {
                index: index as u32,
                code: reply.code,
                message: reply.message,
            }),
        }
    }
    let b = storage::Batch {
        producer: producer(batch),
        events,
    };
    match engine.submit_each(&b) {
        Ok((pending, engine_refused)) => {
            aliases.commit();
            for r in engine_refused {
                let index = positions.get(r.index).copied().unwrap_or(u32::MAX);
                let e = r.reason.to_error(index as usize);
                refused.push(Refusal {
                    index,
                    code: storage_error(&e).code,
                    message: e.to_string().into(),
                });
            }
            refused.sort_by_key(|r| r.index);
            let outcome = pending.outcome();
            session.unsynced.push((id, out.len()));
            session.pending = Some(pending);
            let refused_count = if outcome.duplicate_batch {
                outcome.refused
            } else {
                refused.len() as u32
            };
            if outcome.duplicate_batch {
                // Nothing was checked again: the first answer listed them.
                refused.clear();
            }
            let report = IncrReport {
                applied: outcome.applied,
                duplicates: outcome.duplicates,
                duplicate_batch: outcome.duplicate_batch,
                refused_count,
                refused,
            };
            encode_response(id, &Response::IncrReport(report), out);
            Ok(())
        }
        Err(e) => {
            aliases.abort();
            Err(storage_error(&e))
        }
    }
}

fn alias_error(index: usize, e: AliasError) -> ErrorReply<'static> {
    ErrorReply::new(
        ErrorCode::InvalidSeries,
        format!("event {index}: invalid series: {e}"),
    )
}

fn invalid_series(index: usize, e: StorageError) -> ErrorReply<'static> {
    match e {
        StorageError::InvalidSeries { source, .. } => ErrorReply::new(
            ErrorCode::InvalidSeries,
            format!("event {index}: invalid series: {source}"),
        ),
        other => storage_error(&other),
    }
}

/// Checks a key without creating its series.
fn check_key(engine: &Engine, index: usize, key: &str) -> Result<(), ErrorReply<'static>> {
    engine.check_key(key).map_err(|e| invalid_series(index, e))
}

/// The series id of a key, creating the series if it is new.
fn series_id(engine: &Engine, index: usize, key: &str) -> Result<u32, ErrorReply<'static>> {
    engine.series_id(key).map_err(|e| invalid_series(index, e))
}

fn engine_event(series: u32, e: &proto::Event<'_>) -> storage::Event {
    storage::Event {
        series,
        delta: e.delta,
        ts: e.timestamp_ms,
        id: e.event_id.map(storage::EventId::from_bytes),
    }
}

fn producer(batch: &proto::Incr<'_>) -> Option<storage::ProducerSeq> {
    batch.producer.map(|p| storage::ProducerSeq {
        id: p.id,
        seq: p.sequence,
    })
}
