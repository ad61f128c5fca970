//! `INCR`: a batch of increments, from wire events to the engine's `submit`, and the
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
use tallydb_protocol::{encode_response, ErrorCode, ErrorReply, IncrOk, Response};
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
/// to the engine and encodes its `INCR_OK`, which [`settle_pending`] or
/// [`finish_pending`] hold back until the batch is durable. Allocates one `Vec` of
/// engine events per batch, whatever its size; nothing per event.
pub fn apply(
    engine: &Engine,
    session: &mut Session,
    id: u32,
    batch: &proto::Incr<'_>,
    out: &mut BytesMut,
) -> Handled {
    let mut aliases = session.aliases.batch();
    let alias_error = |index: usize, e: AliasError| {
        ErrorReply::new(
            ErrorCode::InvalidSeries,
            format!("event {index}: invalid series: {e}"),
        )
    };
    let series_id = |index: usize, key: &str| {
        engine.series_id(key).map_err(|e| match e {
            StorageError::InvalidSeries { source, .. } => ErrorReply::new(
                ErrorCode::InvalidSeries,
                format!("event {index}: invalid series: {source}"),
            ),
            other => storage_error(&other),
        })
    };
    let mut events = Vec::with_capacity(batch.events.len());
    for (index, e) in batch.events.iter().enumerate() {
        let resolved = match e.series {
            proto::SeriesRef::Key(key) => series_id(index, key),
            proto::SeriesRef::Alias(alias) => {
                aliases.resolve(alias).map_err(|e| alias_error(index, e))
            }
            proto::SeriesRef::Define { key, alias } => series_id(index, key).and_then(|sid| {
                aliases
                    .define(alias, sid)
                    .map(|()| sid)
                    .map_err(|e| alias_error(index, e))
            }),
        };
        let series = match resolved {
            Ok(s) => s,
            Err(reply) => {
                aliases.abort();
                return Err(reply);
            }
        };
        events.push(storage::Event {
            series,
            delta: e.delta,
            ts: e.timestamp_ms,
            id: e.event_id.map(storage::EventId::from_bytes),
        });
    }
    let b = storage::Batch {
        producer: batch.producer.map(|p| storage::ProducerSeq {
            id: p.id,
            seq: p.sequence,
        }),
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
