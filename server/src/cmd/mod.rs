//! The commands: from one decoded request to one engine call and one encoded response.
//!
//! One file per command or command family, each with the handler for its requests
//! (mini-redis' `cmd/` habit; the request and answer types themselves are defined once,
//! in `tallydb-protocol`, for client and server alike):
//!
//! - [`hello`]: `HELLO`, the handshake: version, token, role ([`handshake`]).
//! - [`incr`]: `INCR`: aliases, the engine's submit, and the wait for durability
//!   ([`settle_pending`], [`finish_pending`]) before an `INCR_OK` leaves.
//! - [`query`]: `RANGE`, `TOTAL`, `TOP`, `SERIES`; wire selectors to the engine's.
//! - [`mod@stats`]: `STATS`: the engine's figures, then the server's.
//! - [`admin`]: `FLUSH`, `COMPACT`, `SNAPSHOT`.
//!
//! This file holds the dispatcher: [`handle_frame`] decodes one whole frame, checks the
//! connection's role, calls the command's handler, and appends exactly one response
//! frame (the answer or an `ERROR`) to the output buffer, never one larger than the
//! negotiated frame limit. It is synchronous: `INCR` and `PING` ([`answers_inline`])
//! only touch memory and run on the connection's task; everything else may read
//! segments or write files and runs on tokio's blocking pool. Storage errors become
//! protocol error codes in [`storage_error`].

pub mod admin;
pub mod hello;
pub mod incr;
pub mod query;
pub mod stats;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tallydb_protocol as proto;
use tallydb_protocol::{
    decode_frame_with_limits, encode_response, opcode_of, ErrorCode, ErrorReply, FrameHeader,
    Message, Opcode, Request, Response, Role,
};
use tallydb_storage as storage;
use tallydb_storage::{Engine, Error as StorageError};

use crate::aliases::AliasTable;
use crate::auth::Authenticator;

pub use hello::{handshake, Handshake, SERVER_VERSION};
pub use incr::{finish_pending, settle_pending};
pub use query::selector;
pub use stats::stats;

/// Server-wide figures reported by `STATS` next to the engine's.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections being served.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused a slot (`max_connections`, the per-address limit, a
    /// non-admin session on an admin slot) or evicted during their handshake.
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

/// What a command's handler returns: `Ok` once its answer is appended to the output,
/// or the `ERROR` to answer instead.
pub type Handled = Result<(), ErrorReply<'static>>;

/// True for the requests answered on the connection's task: `INCR` and `PING`
/// touch only memory (an `INCR`'s durability is awaited by [`settle_pending`]).
pub fn answers_inline(frame: &[u8]) -> bool {
    matches!(opcode_of(frame), Some(op) if op == Opcode::Incr as u8 || op == Opcode::Ping as u8)
}

/// Answers one whole frame (exactly `frame`'s bytes) of an authenticated connection,
/// appending one response frame to `out`.
pub fn handle_frame(shared: &Shared, session: &mut Session, frame: &[u8], out: &mut BytesMut) {
    let started = Instant::now();
    handle_frame_inner(shared, session, frame, out);
    shared
        .stats
        .telemetry
        .observe(opcode_of(frame), started.elapsed());
}

fn handle_frame_inner(shared: &Shared, session: &mut Session, frame: &[u8], out: &mut BytesMut) {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let opcode = opcode_of(frame);
    if opcode != Some(Opcode::Incr as u8) {
        finish_pending(shared, session, out);
    }
    let start = out.len();
    let max = shared.limits.max_frame;
    let request_id = FrameHeader::peek(frame, max)
        .ok()
        .flatten()
        .map_or(0, |h| h.request_id);
    let result = if opcode == Some(Opcode::Hello as u8) {
        Err(hello::already_accepted())
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

/// Checks the role a request needs, then hands it to its command's handler.
fn dispatch(
    shared: &Shared,
    session: &mut Session,
    id: u32,
    req: Request<'_>,
    out: &mut BytesMut,
) -> Handled {
    let needed = req.required_role();
    if needed > session.role {
        return Err(ErrorReply::new(
            ErrorCode::Forbidden,
            format!(
                "{} requires the {} role; this connection has the {} role",
                req.opcode().name(),
                role_name(needed),
                role_name(session.role)
            ),
        ));
    }
    let engine = &shared.engine;
    match req {
        Request::Hello(_) => Err(hello::already_accepted()),
        Request::Ping => {
            encode_response(id, &Response::Pong, out);
            Ok(())
        }
        Request::Incr(batch) => incr::apply(engine, session, id, &batch, out),
        Request::Range(q) => query::range(engine, id, &q, out),
        Request::Total(q) => query::total(engine, id, &q, out),
        Request::Top(q) => query::top(engine, id, &q, out),
        Request::Series(q) => query::series(engine, id, &q, out),
        Request::Stats => stats::apply(shared, id, out),
        Request::Flush => admin::flush(engine, id, out),
        Request::Compact => admin::compact(engine, id, out),
        Request::Snapshot(s) => admin::snapshot(engine, id, &s, out),
    }
}

/// The `ERROR` answering a frame whose opcode is a response's.
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

/// The `ERROR` answering a storage failure.
pub fn storage_error(e: &StorageError) -> ErrorReply<'static> {
    let code = match e {
        StorageError::InvalidSeries { .. } => ErrorCode::InvalidSeries,
        StorageError::TooOld { .. } | StorageError::TooEarly { .. } => ErrorCode::TooOld,
        StorageError::CellOverflow { .. } | StorageError::TotalOverflow { .. } => {
            ErrorCode::Overflow
        }
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
