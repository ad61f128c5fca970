//! `HELLO`: the handshake. [`handshake`] decides the answer to the first frame of a
//! connection (version, token, role); it needs no engine and runs on the connection's
//! task.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tallydb_protocol::{
    decode_frame, encode_response, DecodeError, ErrorCode, ErrorReply, FrameHeader, HelloOk,
    Message, Request, Response, HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION,
};

use super::{response_from_client, Session, Shared};
use crate::aliases::AliasTable;

/// The server version announced in `HELLO_OK`.
pub const SERVER_VERSION: &str = concat!("tallyd ", env!("CARGO_PKG_VERSION"));

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

/// The `ERROR` answering a second `HELLO` on a connection.
pub(super) fn already_accepted() -> ErrorReply<'static> {
    ErrorReply::new(
        ErrorCode::InvalidArgument,
        "HELLO was already accepted on this connection",
    )
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
