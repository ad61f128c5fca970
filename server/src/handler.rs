//! From decoded requests to engine calls and encoded responses.
//!
//! [`handle_frame`] decodes one whole frame, checks the connection's role, calls the
//! engine, and appends exactly one response frame (the answer or an `ERROR`) to the
//! output buffer, never one larger than the negotiated frame limit. It is synchronous:
//! `INCR` and `PING` ([`answers_inline`]) only touch memory and run on the connection's
//! task; everything else may read segments or write files and runs on tokio's blocking
//! pool. An `INCR` is answered before it is durable; [`settle_pending`] then awaits
//! the group commit without holding a thread, before the answer leaves.
//!
//! [`handshake`] decides the answer to the first frame of a connection (version, token,
//! role); it needs no engine and runs on the connection's task.
//!
//! Storage errors become protocol error codes in [`storage_error`].

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tallydb_protocol as proto;
use tallydb_protocol::{
    decode_frame, decode_frame_with_limits, encode_response, AdminOk, DecodeError, ErrorCode,
    ErrorReply, FrameHeader, HelloOk, IncrOk, Message, Opcode, Request, Response, Role,
    HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION,
};
use tallydb_storage as storage;
use tallydb_storage::{Engine, Error as StorageError};

use crate::aliases::{AliasError, AliasTable};
use crate::auth::Authenticator;

/// The server version announced in `HELLO_OK`.
pub const SERVER_VERSION: &str = concat!("tallyd ", env!("CARGO_PKG_VERSION"));

/// Server-wide figures reported by `STATS` next to the engine's.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections being served.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Requests answered (successfully or not) since start.
    pub requests: AtomicU64,
    /// Requests answered with `ERROR`.
    pub request_errors: AtomicU64,
    /// Latency histograms and errors by code, for `/metrics`.
    pub telemetry: crate::http::metrics::Telemetry,
}

/// What every connection shares: the engine, the limits, the authenticator, figures.
#[derive(Debug)]
pub struct Shared {
    /// The storage engine.
    pub engine: Arc<Engine>,
    /// Limits announced in `HELLO_OK` and enforced after it.
    pub limits: proto::Limits,
    /// Token checks.
    pub auth: Authenticator,
    /// Server figures.
    pub stats: ServerStats,
    /// When the server started.
    pub started: Instant,
}

/// One authenticated connection's state.
#[derive(Debug)]
pub struct Session {
    /// The role granted by `HELLO`.
    pub role: Role,
    /// The connection's aliases.
    pub aliases: AliasTable,
    /// `INCR`s submitted to the engine whose `INCR_OK` is already encoded but not
    /// yet durable: request id and offset of each answer in the output. One wait
    /// on the newest covers them all (see [`finish_pending`]).
    pub unsynced: Vec<(u32, usize)>,
    /// The newest submitted batch of that run.
    pub pending: Option<storage::Pending>,
}

impl Session {
    /// A session with the role granted by `HELLO`.
    pub fn new(role: Role, aliases: AliasTable) -> Self {
        Session {
            role,
            aliases,
            unsynced: Vec::new(),
            pending: None,
        }
    }
}

/// True for the requests answered on the connection's task: `INCR` and `PING`
/// touch only memory (an `INCR`'s durability is awaited by [`settle_pending`]).
pub fn answers_inline(frame: &[u8]) -> bool {
    matches!(frame.get(4), Some(&op) if op == Opcode::Incr as u8 || op == Opcode::Ping as u8)
}

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

/// The outcome of the handshake frame.
#[derive(Debug)]
pub enum Handshake {
    /// `HELLO_OK` was encoded; serve the connection with this session.
    Accepted {
        /// The new session.
        session: Session,
        /// The client's name, for logs.
        client_name: String,
        /// The matching token's name, for logs.
        token_name: Option<String>,
    },
    /// An `ERROR` was encoded; keep waiting for `HELLO`.
    Continue,
    /// An `ERROR` was encoded; close the connection after sending it.
    Close(String),
}

/// Answers the frame at the start of `buf` received before `HELLO_OK`.
///
/// Returns `None` when `buf` does not hold a whole frame yet; otherwise the number of
/// bytes used and what to do next (the answer is appended to `out`).
pub fn handshake(
    shared: &Shared,
    peer: IpAddr,
    buf: &[u8],
    out: &mut BytesMut,
) -> Option<(usize, Handshake)> {
    let (frame, used) = match decode_frame(buf, HANDSHAKE_MAX_FRAME) {
        Ok(None) => return None,
        Ok(Some(x)) => x,
        Err(e) => {
            shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
            let header = FrameHeader::peek(buf, HANDSHAKE_MAX_FRAME).ok().flatten();
            let reply = ErrorReply::from_decode_error(&e);
            return Some(match (header, &e) {
                (Some(h), DecodeError::UnsupportedVersion { .. }) => {
                    encode_response(h.request_id, &Response::Error(reply), out);
                    (h.frame_len(), Handshake::Close(e.to_string()))
                }
                (Some(h), _) if e.keeps_framing() => {
                    encode_response(h.request_id, &Response::Error(reply), out);
                    (h.frame_len(), Handshake::Continue)
                }
                _ => {
                    encode_response(0, &Response::Error(reply), out);
                    (buf.len(), Handshake::Close(e.to_string()))
                }
            });
        }
    };
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let id = frame.request_id;
    let hello = match frame.message {
        Message::Request(Request::Hello(h)) => h,
        Message::Request(_) => {
            shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
            let reply = ErrorReply::new(
                ErrorCode::Unauthenticated,
                "the first request on a connection must be HELLO",
            );
            encode_response(id, &Response::Error(reply), out);
            return Some((used, Handshake::Continue));
        }
        Message::Response(r) => {
            shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
            encode_response(id, &Response::Error(response_from_client(r.opcode())), out);
            return Some((used, Handshake::Continue));
        }
    };
    match shared.auth.authenticate(peer, hello.token) {
        Ok(grant) => {
            let ok = HelloOk {
                protocol_version: PROTOCOL_VERSION,
                server_version: SERVER_VERSION,
                limits: shared.limits,
                role: grant.role,
            };
            encode_response(id, &Response::HelloOk(ok), out);
            Some((
                used,
                Handshake::Accepted {
                    session: Session::new(grant.role, AliasTable::new(shared.limits.max_aliases)),
                    client_name: hello.client_name.to_string(),
                    token_name: grant.token_name,
                },
            ))
        }
        Err(e) => {
            shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .telemetry
                .error(ErrorCode::Unauthenticated.code());
            let reply = ErrorReply::new(ErrorCode::Unauthenticated, e.to_string());
            encode_response(id, &Response::Error(reply), out);
            Some((
                used,
                Handshake::Close(format!("authentication failed: {e}")),
            ))
        }
    }
}

fn response_from_client(op: Opcode) -> ErrorReply<'static> {
    ErrorReply::new(
        ErrorCode::UnknownOpcode,
        format!(
            "opcode 0x{:02x} is a response, not a request a client may send",
            op as u8
        ),
    )
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Read => "read",
        Role::Write => "write",
        Role::Admin => "admin",
    }
}

fn op_name(op: Opcode) -> &'static str {
    match op {
        Opcode::Hello => "HELLO",
        Opcode::Ping => "PING",
        Opcode::Incr => "INCR",
        Opcode::Range => "RANGE",
        Opcode::Total => "TOTAL",
        Opcode::Top => "TOP",
        Opcode::Series => "SERIES",
        Opcode::Stats => "STATS",
        Opcode::Flush => "FLUSH",
        Opcode::Compact => "COMPACT",
        Opcode::Snapshot => "SNAPSHOT",
        _ => "response",
    }
}

/// Answers one whole frame (exactly `frame`'s bytes) of an authenticated connection,
/// appending one response frame to `out`.
pub fn handle_frame(shared: &Shared, session: &mut Session, frame: &[u8], out: &mut BytesMut) {
    let started = Instant::now();
    handle_frame_inner(shared, session, frame, out);
    shared
        .stats
        .telemetry
        .observe(frame.get(4).copied(), started.elapsed());
}

fn handle_frame_inner(shared: &Shared, session: &mut Session, frame: &[u8], out: &mut BytesMut) {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let is_incr = frame.get(4) == Some(&(Opcode::Incr as u8));
    if !is_incr {
        finish_pending(shared, session, out);
    }
    let start = out.len();
    let max = shared.limits.max_frame;
    let request_id = FrameHeader::peek(frame, max)
        .ok()
        .flatten()
        .map_or(0, |h| h.request_id);
    let result = if frame.get(4) == Some(&(Opcode::Hello as u8)) {
        Err(ErrorReply::new(
            ErrorCode::InvalidArgument,
            "HELLO was already accepted on this connection",
        ))
    } else {
        match decode_frame_with_limits(frame, &shared.limits) {
            Ok(Some((f, _))) => match f.message {
                Message::Request(req) => dispatch(shared, session, f.request_id, req, out),
                Message::Response(r) => Err(response_from_client(r.opcode())),
            },
            Ok(None) => Err(ErrorReply::new(
                ErrorCode::Malformed,
                "frame truncated: fewer bytes than its length field declares",
            )),
            Err(e) => Err(ErrorReply::from_decode_error(&e)),
        }
    };
    let result = result.and_then(|()| {
        let len = out.len() - start - 4;
        if len > max as usize {
            out.truncate(start);
            Err(ErrorReply::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the answer takes {len} bytes, more than the frame limit of {max}; narrow the query (time range, selector, limit)"
                ),
            ))
        } else {
            Ok(())
        }
    });
    if let Err(reply) = result {
        shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
        shared.stats.telemetry.error(reply.code);
        out.truncate(start);
        encode_response(request_id, &Response::Error(reply), out);
    }
}

type Answer = Result<(), ErrorReply<'static>>;

fn dispatch(
    shared: &Shared,
    session: &mut Session,
    id: u32,
    req: Request<'_>,
    out: &mut BytesMut,
) -> Answer {
    let needed = req.required_role();
    if needed > session.role {
        return Err(ErrorReply::new(
            ErrorCode::Forbidden,
            format!(
                "{} requires the {} role; this connection has the {} role",
                op_name(req.opcode()),
                role_name(needed),
                role_name(session.role)
            ),
        ));
    }
    let engine = &shared.engine;
    match req {
        Request::Hello(_) => Err(ErrorReply::new(
            ErrorCode::InvalidArgument,
            "HELLO was already accepted on this connection",
        )),
        Request::Ping => {
            encode_response(id, &Response::Pong, out);
            Ok(())
        }
        Request::Incr(batch) => incr(engine, session, id, &batch, out),
        Request::Range(q) => range(engine, id, &q, out),
        Request::Total(q) => {
            let sel = selector(&q.selector);
            let r = engine
                .total(&sel, q.from_ms, q.to_ms)
                .map_err(|e| storage_error(&e))?;
            let ok = proto::TotalOk {
                sum: r.sum,
                count: r.count,
                from_ms: r.provenance.from,
                to_ms: r.provenance.to,
                tiers: proto::Tiers(r.provenance.tiers),
                closed_until_ms: r.provenance.closed_until,
            };
            encode_response(id, &Response::TotalOk(ok), out);
            Ok(())
        }
        Request::Top(q) => {
            let tq = storage::TopQuery {
                selector: selector(&q.selector),
                from: q.from_ms,
                to: q.to_ms,
                n: q.n as usize,
                by_label: q.group_by.map(str::to_string),
            };
            let r = engine.top(&tq).map_err(|e| storage_error(&e))?;
            let ok = proto::TopOk {
                tiers: proto::Tiers(r.provenance.tiers),
                closed_until_ms: r.provenance.closed_until,
                entries: r
                    .entries
                    .iter()
                    .map(|e| proto::TopEntry {
                        name: &e.name,
                        sum: e.sum,
                        count: e.count,
                    })
                    .collect(),
            };
            encode_response(id, &Response::TopOk(ok), out);
            Ok(())
        }
        Request::Series(q) => {
            let (keys, truncated) = engine
                .series(&selector(&q.selector), q.limit as usize)
                .map_err(|e| storage_error(&e))?;
            let ok = proto::SeriesOk {
                keys: keys.iter().map(String::as_str).collect(),
                truncated,
            };
            encode_response(id, &Response::SeriesOk(ok), out);
            Ok(())
        }
        Request::Stats => {
            let entries = stats(shared);
            let ok = proto::StatsOk {
                entries: entries
                    .iter()
                    .map(|(name, value)| proto::Stat {
                        name,
                        value: *value,
                    })
                    .collect(),
            };
            encode_response(id, &Response::StatsOk(ok), out);
            Ok(())
        }
        Request::Flush => {
            let f = engine.flush().map_err(|e| storage_error(&e))?;
            let msg = format!(
                "flushed {} memtables into {} segments ({} cells); checkpoint at LSN {}",
                f.memtables, f.segments, f.cells, f.checkpoint_lsn
            );
            encode_response(id, &Response::AdminOk(AdminOk::new(msg)), out);
            Ok(())
        }
        Request::Compact => {
            let c = engine.compact().map_err(|e| storage_error(&e))?;
            let msg = format!(
                "compaction ran {} tasks over {} segments: {} cells in, {} cells out",
                c.tasks, c.segments_in, c.cells_in, c.cells_out
            );
            encode_response(id, &Response::AdminOk(AdminOk::new(msg)), out);
            Ok(())
        }
        Request::Snapshot(s) => {
            if s.target_dir.is_empty() {
                return Err(ErrorReply::new(
                    ErrorCode::InvalidArgument,
                    "snapshot target directory must not be empty",
                ));
            }
            let m = engine
                .snapshot(Path::new(s.target_dir))
                .map_err(|e| storage_error(&e))?;
            let msg = format!(
                "snapshot of {} segments written to {}",
                m.segments.len(),
                s.target_dir
            );
            encode_response(id, &Response::AdminOk(AdminOk::new(msg)), out);
            Ok(())
        }
    }
}

fn incr(
    engine: &Engine,
    session: &mut Session,
    id: u32,
    batch: &proto::Incr<'_>,
    out: &mut BytesMut,
) -> Answer {
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

fn range(engine: &Engine, id: u32, q: &proto::RangeQuery<'_>, out: &mut BytesMut) -> Answer {
    let step = match q.step {
        proto::Step::Auto => storage::Step::Auto,
        proto::Step::Millis(ms) => storage::Step::Fixed(i64::try_from(ms).map_err(|_| {
            ErrorReply::new(
                ErrorCode::InvalidArgument,
                format!("step {ms} ms is too large"),
            )
        })?),
    };
    let agg = match q.function {
        proto::Function::Sum => storage::Agg::Sum,
        proto::Function::Count => storage::Agg::Count,
        proto::Function::Avg => storage::Agg::Avg,
        proto::Function::Min => storage::Agg::Min,
        proto::Function::Max => storage::Agg::Max,
        proto::Function::Rate => storage::Agg::Rate,
    };
    let rq = storage::RangeQuery {
        selector: selector(&q.selector),
        from: q.from_ms,
        to: q.to_ms,
        step,
        agg,
    };
    let r = engine.range(&rq).map_err(|e| storage_error(&e))?;
    /// The engine's groups with every value converted to the reply's kind.
    fn groups<V>(
        r: &storage::RangeResult,
        value: impl Fn(&storage::Value) -> V,
    ) -> Vec<proto::Group<'_, V>> {
        r.groups
            .iter()
            .map(|g| proto::Group {
                labels: g
                    .labels
                    .iter()
                    .map(|(name, value)| proto::Label { name, value })
                    .collect(),
                points: g
                    .points
                    .iter()
                    .map(|(ts, v)| proto::Point {
                        ts_ms: *ts,
                        value: value(v),
                    })
                    .collect(),
            })
            .collect()
    }
    let groups = match q.function.value_kind() {
        proto::ValueKind::Int => proto::RangeGroups::Int(groups(&r, |v| match v {
            storage::Value::Int(i) => *i,
            storage::Value::Float(f) => *f as i64,
        })),
        proto::ValueKind::Float => proto::RangeGroups::Float(groups(&r, |v| match v {
            storage::Value::Int(i) => *i as f64,
            storage::Value::Float(f) => *f,
        })),
    };
    let ok = proto::RangeOk {
        tiers: proto::Tiers(r.provenance.tiers),
        closed_until_ms: r.provenance.closed_until,
        step_ms: u64::try_from(r.step).unwrap_or(0),
        groups,
    };
    encode_response(id, &Response::RangeOk(ok), out);
    Ok(())
}

/// The engine's selector for a wire selector.
pub fn selector(s: &proto::Selector<'_>) -> storage::Selector {
    match s {
        proto::Selector::Exact(key) => storage::Selector::Exact(key.to_string()),
        proto::Selector::Prefix(p) => storage::Selector::Prefix(p.to_string()),
        proto::Selector::Metric(m) => storage::Selector::Metric {
            name: m.name.to_string(),
            matchers: m
                .matchers
                .iter()
                .map(|x| match x.op {
                    proto::MatchOp::Eq => {
                        storage::Matcher::Eq(x.label.to_string(), x.value.to_string())
                    }
                    proto::MatchOp::NotEq => {
                        storage::Matcher::Ne(x.label.to_string(), x.value.to_string())
                    }
                })
                .collect(),
            group_by: m.group_by.iter().map(|l| l.to_string()).collect(),
        },
    }
}

/// The `ERROR` answering a storage failure.
pub fn storage_error(e: &StorageError) -> ErrorReply<'static> {
    let code = match e {
        StorageError::InvalidSeries { .. } => ErrorCode::InvalidSeries,
        StorageError::TooOld { .. } => ErrorCode::TooOld,
        StorageError::TooFarInFuture { .. } => ErrorCode::TooFarInFuture,
        StorageError::InvalidQuery(_) => ErrorCode::InvalidArgument,
        StorageError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        StorageError::SequenceTooOld { .. } => ErrorCode::OutOfOrder,
        StorageError::Poisoned { .. } | StorageError::DiskFull { .. } | StorageError::Io { .. } => {
            ErrorCode::StorageUnavailable
        }
        StorageError::Closed => ErrorCode::ShuttingDown,
        _ => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal {
        tracing::error!(error = %e, "request failed in the storage engine");
    }
    ErrorReply::new(code, e.to_string())
}

/// The `STATS` figures: the engine's, then the server's.
pub fn stats(shared: &Shared) -> Vec<(&'static str, u64)> {
    let s = shared.engine.stats();
    let st = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    vec![
        ("series", s.series),
        ("segments.minute", s.segments[0]),
        ("segments.hour", s.segments[1]),
        ("segments.day", s.segments[2]),
        ("segment_cells.minute", s.segment_cells[0]),
        ("segment_cells.hour", s.segment_cells[1]),
        ("segment_cells.day", s.segment_cells[2]),
        ("segment_bytes.minute", s.segment_bytes[0]),
        ("segment_bytes.hour", s.segment_bytes[1]),
        ("segment_bytes.day", s.segment_bytes[2]),
        ("memtable.cells", s.memtable_cells),
        ("memtable.bytes", s.memtable_bytes),
        ("wal.bytes", s.wal_bytes),
        ("wal.last_lsn", s.last_lsn),
        ("wal.synced_lsn", s.synced_lsn),
        ("wal.checkpoint_lsn", s.checkpoint_lsn),
        ("wal.fsyncs", s.wal_syncs),
        ("dedup.ids", s.dedup_ids),
        ("dedup.producers", s.producers),
        ("dedup.bytes", s.dedup_bytes),
        ("events.applied", s.events_applied),
        ("events.duplicates", s.duplicates_skipped),
        ("batches.applied", s.batches_applied),
        ("flushes", s.flushes),
        ("flush.micros", s.flush_micros),
        ("compactions", s.compactions),
        ("compaction.micros", s.compaction_micros),
        ("storage.poisoned", u64::from(s.poisoned)),
        ("storage.disk_full", u64::from(s.disk_full)),
        ("connections.open", load(&st.connections_open)),
        ("connections.total", load(&st.connections_total)),
        ("connections.refused", load(&st.connections_refused)),
        ("requests.total", load(&st.requests)),
        ("requests.errors", load(&st.request_errors)),
        ("uptime.seconds", shared.started.elapsed().as_secs()),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::AuthConfig;
    use tallydb_protocol::{encode_request, SeriesQuery};

    fn shared(dir: &Path, max_frame: u32) -> Shared {
        let opts = storage::Options {
            background: false,
            ..storage::Options::default()
        };
        Shared {
            engine: Arc::new(Engine::open(dir, opts).unwrap()),
            limits: proto::Limits {
                max_frame,
                max_batch_events: 100,
                max_aliases: 16,
            },
            auth: Authenticator::new(&AuthConfig::default()),
            stats: ServerStats::default(),
            started: Instant::now(),
        }
    }

    fn answer(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Vec<u8> {
        let mut frame = BytesMut::new();
        encode_request(3, req, &mut frame);
        let mut out = BytesMut::new();
        handle_frame(shared, session, &frame, &mut out);
        out.to_vec()
    }

    fn error_of(bytes: &[u8]) -> (u32, u16, String) {
        let (frame, used) = decode_frame(bytes, u32::MAX).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "exactly one response frame");
        match frame.message {
            Message::Response(Response::Error(e)) => {
                (frame.request_id, e.code, e.message.to_string())
            }
            other => panic!("expected an ERROR, got {other:?}"),
        }
    }

    #[test]
    fn answers_too_large_for_the_frame_become_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), 4096);
        for i in 0..300 {
            shared
                .engine
                .series_id(&format!("a_rather_long_metric_name{{label=value{i:05}}}"))
                .unwrap();
        }
        let mut session = Session::new(Role::Read, AliasTable::new(16));
        let query = Request::Series(SeriesQuery {
            selector: proto::Selector::Prefix("a_rather_long_metric_name"),
            limit: 1000,
        });
        let (id, code, msg) = error_of(&answer(&shared, &mut session, &query));
        assert_eq!((id, code), (3, ErrorCode::InvalidArgument.code()));
        assert!(msg.contains("frame limit of 4096"), "{msg}");
        let small = Request::Series(SeriesQuery {
            selector: proto::Selector::Prefix("a_rather_long_metric_name"),
            limit: 3,
        });
        let out = answer(&shared, &mut session, &small);
        let (frame, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
        assert!(matches!(
            frame.message,
            Message::Response(Response::SeriesOk(ref s)) if s.keys.len() == 3 && s.truncated
        ));
    }

    #[test]
    fn roles_are_enforced_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), 1 << 20);
        let mut session = Session::new(Role::Read, AliasTable::new(16));
        let incr = Request::Incr(proto::Incr {
            producer: None,
            events: vec![proto::Event::unit(proto::SeriesRef::Key("x"))],
        });
        let (_, code, msg) = error_of(&answer(&shared, &mut session, &incr));
        assert_eq!(code, ErrorCode::Forbidden.code());
        assert!(msg.contains("INCR requires the write role"), "{msg}");
        session.role = Role::Write;
        let (_, code, _) = error_of(&answer(&shared, &mut session, &Request::Compact));
        assert_eq!(code, ErrorCode::Forbidden.code());
        let out = answer(&shared, &mut session, &incr);
        let (frame, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
        assert!(matches!(
            frame.message,
            Message::Response(Response::IncrOk(IncrOk { applied: 1, .. }))
        ));
        assert_eq!(shared.stats.request_errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn storage_errors_map_to_protocol_codes() {
        let cases: Vec<(StorageError, ErrorCode)> = vec![
            (
                StorageError::TooOld {
                    index: 0,
                    ts: 0,
                    oldest: 1,
                },
                ErrorCode::TooOld,
            ),
            (
                StorageError::TooFarInFuture {
                    index: 0,
                    ts: 9,
                    now: 0,
                    skew_ms: 1,
                },
                ErrorCode::TooFarInFuture,
            ),
            (
                StorageError::InvalidQuery("x".into()),
                ErrorCode::InvalidArgument,
            ),
            (
                StorageError::BatchTooLarge { events: 2, max: 1 },
                ErrorCode::BatchTooLarge,
            ),
            (
                StorageError::Poisoned {
                    reason: "disk".into(),
                },
                ErrorCode::StorageUnavailable,
            ),
            (
                StorageError::io("write", "/x", std::io::Error::other("full")),
                ErrorCode::StorageUnavailable,
            ),
            (
                StorageError::DiskFull {
                    reason: "write: no space".into(),
                },
                ErrorCode::StorageUnavailable,
            ),
            (StorageError::Closed, ErrorCode::ShuttingDown),
            (StorageError::corrupt("/x", 0, "bad"), ErrorCode::Internal),
        ];
        for (err, code) in cases {
            let reply = storage_error(&err);
            assert_eq!(reply.code, code.code(), "{err}");
            assert_eq!(reply.retryable, code.is_retryable());
            assert_eq!(reply.message, err.to_string());
        }
    }
}
