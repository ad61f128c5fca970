//! One client connection: framing, the handshake, pipelining and limits.
//!
//! A connection goes through two phases:
//!
//! 1. **Handshake.** Frames are read with the [`HANDSHAKE_MAX_FRAME`] limit until a
//!    `HELLO` is accepted ([`cmd::handshake`]). A wrong version or a refused token
//!    is answered with `ERROR` and closes the connection. So does a handshake not
//!    completed within `handshake_timeout` (`UNAUTHENTICATED`), one evicted by a
//!    newcomer while the server is full, and a session on a slot kept for the admin
//!    role whose role is not admin (both `BUSY`; see [`crate::admission`]).
//! 2. **Session.** Two futures run concurrently on the connection's task:
//!    - the *reader* reads into a [`BytesMut`], checks each frame's declared length
//!      against the negotiated maximum as soon as its 4 length bytes are in (before
//!      reserving room for it), cuts whole frames off the buffer and queues them;
//!    - the *processor* takes queued frames in order, answers them in batches and
//!      writes the responses in request order. `INCR` and `PING` are answered on the
//!      task itself, and a run of `INCR`s then awaits one group commit
//!      ([`cmd::settle_pending`]); other requests, which may read segments or
//!      write files, run on the blocking pool ([`cmd::handle_frame`]).
//!
//! Memory is bounded per connection: the read buffer holds at most one frame plus a
//! read chunk, the queue at most `max_pipeline` frames and, through a byte budget
//! ([`Semaphore`]), at most `max_frame + 1 MiB` bytes of queued requests. Answers
//! count too: once the unsent answers reach [`ANSWER_BUDGET`] (1 MiB) they are
//! written out before another request is answered, so a peer that never reads holds
//! at most 1 MiB plus one answer (at most `max_frame`) of answers; meanwhile the queue
//! fills and the reader stops reading the socket.
//!
//! A length field that breaks the limit loses the framing: the connection answers
//! `ERROR` with request id 0 after the responses already due, and closes. Other decode
//! errors are answered per frame and the connection goes on.
//!
//! On shutdown the reader stops reading; requests already queued are still answered.
//! A connection with nothing in flight that receives nothing for `idle_timeout` is
//! closed, and so is one whose peer does not read its responses for that long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tallydb_protocol::{
    encode_response, opcode_of, ErrorCode, ErrorReply, FrameHeader, Opcode, Response,
    HANDSHAKE_MAX_FRAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};

use crate::admission::Ticket;
use crate::cmd::{self, Handshake, Session, Shared};

/// How much to read at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Most frames answered by one trip to the blocking pool.
const BATCH_FRAMES: usize = 32;
/// Most request bytes answered by one trip to the blocking pool.
const BATCH_BYTES: usize = 1 << 20;
/// Unsent answer bytes past which a connection writes them out (waiting for its peer
/// to read) before answering another request.
const ANSWER_BUDGET: usize = 1 << 20;
/// How long a connection closed after a fatal `ERROR` keeps draining its input.
const LINGER: Duration = Duration::from_millis(500);
/// How much input it drains at most.
const LINGER_BYTES: usize = 1 << 20;

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Close a connection idle for this long.
    pub idle_timeout: Duration,
    /// Close a connection that has not completed `HELLO` after this long.
    pub handshake_timeout: Duration,
    /// Most frames queued ahead of the one being answered.
    pub max_pipeline: usize,
}

/// Why a connection ended (logged on close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// The peer closed in the middle of a frame.
    PeerClosedMidFrame,
    /// Nothing happened for `idle_timeout`.
    IdleTimeout,
    /// The peer did not read its responses for `idle_timeout`.
    WriteTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The framing was lost (a bad length field); an `ERROR` was sent.
    FramingLost(String),
    /// The handshake failed; an `ERROR` was sent.
    HandshakeFailed(String),
    /// `HELLO` did not complete within `handshake_timeout`; an `ERROR` was sent.
    HandshakeTimeout,
    /// A newcomer needed the slot of this connection, still in its handshake; an
    /// `ERROR BUSY` was sent.
    Evicted,
    /// The connection was refused a slot after `HELLO`; an `ERROR BUSY` was sent.
    Refused(String),
    /// A socket error.
    Io(String),
    /// An internal failure (a handler task panicked).
    Internal(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("peer closed the connection"),
            Self::PeerClosedMidFrame => f.write_str("peer closed the connection mid-frame"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::WriteTimeout => f.write_str("peer stopped reading responses"),
            Self::Shutdown => f.write_str("server shutdown"),
            Self::FramingLost(e) => write!(f, "framing lost: {e}"),
            Self::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            Self::HandshakeTimeout => f.write_str("no HELLO within the handshake timeout"),
            Self::Evicted => f.write_str("evicted before HELLO: the server is full"),
            Self::Refused(e) => write!(f, "refused after HELLO: {e}"),
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

/// Listens for the server's shutdown broadcast, remembering that it came.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Wraps a subscription to the shutdown broadcast.
    pub fn new(notify: broadcast::Receiver<()>) -> Self {
        Self {
            is_shutdown: false,
            notify,
        }
    }

    /// Whether shutdown was signalled.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for the shutdown signal (at once if it already came).
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // A send or the sender being dropped both mean shutdown.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

/// What the handshake learnt about the client, for the close log line.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// `HELLO`'s client name.
    pub name: Option<String>,
    /// The granted role.
    pub role: Option<&'static str>,
    /// The token's name.
    pub token: Option<String>,
}

enum Item {
    /// A whole frame, holding its share of the connection's byte budget until answered.
    Frame {
        bytes: Bytes,
        _permit: OwnedSemaphorePermit,
    },
    /// The framing is lost: answer this with request id 0 and close.
    Fatal(ErrorReply<'static>),
}

/// Serves one connection, admitted with `ticket`, until it closes; returns why it
/// closed.
pub async fn serve(
    shared: Arc<Shared>,
    mut socket: TcpStream,
    peer: SocketAddr,
    limits: ConnectionLimits,
    ticket: &mut Ticket,
    shutdown: &mut Shutdown,
    info: &mut ClientInfo,
) -> CloseReason {
    let mut buf = BytesMut::with_capacity(4096);
    let gate = Gate {
        limits,
        ticket,
        shutdown,
    };
    let session = match handshake(&shared, &mut socket, peer, gate, &mut buf, info).await {
        Ok(s) => s,
        Err(reason) => return reason,
    };
    let (mut rd, mut wr) = socket.split();
    let (tx, rx) = mpsc::channel(limits.max_pipeline);
    let budget_bytes = shared.limits.max_frame as usize + 4 + BATCH_BYTES;
    let budget = Arc::new(Semaphore::new(budget_bytes));
    let reader = read_frames(
        &mut rd,
        buf,
        tx,
        Arc::clone(&budget),
        budget_bytes,
        shared.limits.max_frame,
        limits.idle_timeout,
        shutdown,
    );
    let processor = process(&shared, &mut wr, rx, session, limits.idle_timeout);
    let (read_end, process_end) = tokio::join!(reader, processor);
    let _ = wr.shutdown().await;
    // The processor's reason wins when it ended the connection (framing, timeouts).
    let reason = process_end.unwrap_or(read_end);
    if matches!(reason, CloseReason::FramingLost(_)) {
        linger(&mut rd).await;
    }
    reason
}

/// After a final `ERROR` and a write shutdown, reads (and drops) what the peer still
/// sends for a moment: closing a socket with unread input makes the kernel send a
/// reset, which can destroy the `ERROR` before the peer reads it.
async fn linger(rd: &mut (impl AsyncReadExt + Unpin)) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

async fn write_out(
    socket: &mut (impl AsyncWriteExt + Unpin),
    out: &[u8],
    timeout: Duration,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(timeout, socket.write_all(out)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CloseReason::Io(e.to_string())),
        Err(_) => Err(CloseReason::WriteTimeout),
    }
}

/// What ends a handshake besides the peer: its deadline, eviction, shutdown.
struct Gate<'a> {
    limits: ConnectionLimits,
    ticket: &'a mut Ticket,
    shutdown: &'a mut Shutdown,
}

/// Counts a connection refused (or evicted) during its handshake.
fn refused(shared: &Shared) {
    shared
        .stats
        .connections_refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Sends a last `ERROR` (best effort, briefly) and closes the socket.
async fn close_with(socket: &mut TcpStream, id: u32, code: ErrorCode, message: String) {
    let mut out = BytesMut::new();
    encode_response(
        id,
        &Response::Error(ErrorReply::new(code, message)),
        &mut out,
    );
    let _ = write_out(socket, &out, LINGER).await;
    let _ = socket.shutdown().await;
    linger(socket).await;
}

async fn handshake(
    shared: &Shared,
    socket: &mut TcpStream,
    peer: SocketAddr,
    gate: Gate<'_>,
    buf: &mut BytesMut,
    info: &mut ClientInfo,
) -> Result<Session, CloseReason> {
    let Gate {
        limits,
        ticket,
        shutdown,
    } = gate;
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let mut out = BytesMut::new();
    loop {
        loop {
            let mark = out.len();
            let id = FrameHeader::peek(buf, HANDSHAKE_MAX_FRAME)
                .ok()
                .flatten()
                .map_or(0, |h| h.request_id);
            let Some((used, outcome)) = cmd::handshake(shared, peer.ip(), buf, &mut out) else {
                break;
            };
            buf.advance(used.min(buf.len()));
            match outcome {
                Handshake::Continue => {}
                Handshake::Accepted {
                    session,
                    client_name,
                    token_name,
                } => {
                    if let Err(refusal) = ticket.hello_done(session.role) {
                        // HELLO_OK is replaced by the refusal.
                        refused(shared);
                        out.truncate(mark);
                        write_out(socket, &out, limits.idle_timeout).await?;
                        close_with(socket, id, ErrorCode::Busy, refusal.to_string()).await;
                        return Err(CloseReason::Refused(refusal.to_string()));
                    }
                    write_out(socket, &out, limits.idle_timeout).await?;
                    info.name = Some(client_name);
                    info.role = Some(match session.role {
                        tallydb_protocol::Role::Read => "read",
                        tallydb_protocol::Role::Write => "write",
                        tallydb_protocol::Role::Admin => "admin",
                    });
                    info.token = token_name;
                    return Ok(session);
                }
                Handshake::Close(reason) => {
                    write_out(socket, &out, limits.idle_timeout).await?;
                    let _ = socket.shutdown().await;
                    linger(socket).await;
                    return Err(CloseReason::HandshakeFailed(reason));
                }
            }
        }
        if !out.is_empty() {
            write_out(socket, &out, limits.idle_timeout).await?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(HANDSHAKE_MAX_FRAME as usize);
        }
        tokio::select! {
            _ = shutdown.recv() => return Err(CloseReason::Shutdown),
            () = ticket.evicted() => {
                refused(shared);
                let message = "the server is full and this connection had not completed HELLO; retry later";
                close_with(socket, 0, ErrorCode::Busy, message.into()).await;
                return Err(CloseReason::Evicted);
            }
            () = tokio::time::sleep_until(deadline) => {
                // On an admin slot the server was full: that is the answer.
                if let Some(refusal) = ticket.unless_admin() {
                    refused(shared);
                    close_with(socket, 0, ErrorCode::Busy, refusal.to_string()).await;
                    return Err(CloseReason::Refused(refusal.to_string()));
                }
                let message = format!(
                    "no HELLO completed within {} ms of connecting",
                    limits.handshake_timeout.as_millis()
                );
                close_with(socket, 0, ErrorCode::Unauthenticated, message).await;
                return Err(CloseReason::HandshakeTimeout);
            }
            r = socket.read_buf(buf) => match r {
                Ok(0) if buf.is_empty() => return Err(CloseReason::PeerClosed),
                Ok(0) => return Err(CloseReason::PeerClosedMidFrame),
                Ok(_) => {}
                Err(e) => return Err(CloseReason::Io(e.to_string())),
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_frames(
    rd: &mut ReadHalf<'_>,
    mut buf: BytesMut,
    tx: mpsc::Sender<Item>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    max_frame: u32,
    idle: Duration,
    shutdown: &mut Shutdown,
) -> CloseReason {
    // One timer for the connection's life, re-armed only when it fires: arming a
    // fresh one per read would cost a timer-wheel insert and removal per request.
    let mut last_read = tokio::time::Instant::now();
    let idle_deadline = tokio::time::sleep(idle);
    tokio::pin!(idle_deadline);
    loop {
        // Queue every whole frame in the buffer.
        loop {
            let header = match FrameHeader::peek(&buf, max_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let reason = CloseReason::FramingLost(e.to_string());
                    let _ = tx
                        .send(Item::Fatal(ErrorReply::from_decode_error(&e)))
                        .await;
                    return reason;
                }
            };
            let len = header.frame_len();
            if buf.len() < len {
                // Room for what is declared, a chunk at a time: memory follows the bytes
                // actually received, not the length field.
                buf.reserve((len - buf.len()).min(READ_CHUNK));
                break;
            }
            let permits = u32::try_from(len).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                p = Arc::clone(&budget).acquire_many_owned(permits) => match p {
                    Ok(p) => p,
                    Err(_) => return CloseReason::Internal("byte budget closed".into()),
                },
                _ = tx.closed() => return CloseReason::PeerClosed,
                _ = shutdown.recv() => return CloseReason::Shutdown,
            };
            let frame = buf.split_to(len).freeze();
            if tx
                .send(Item::Frame {
                    bytes: frame,
                    _permit: permit,
                })
                .await
                .is_err()
            {
                return CloseReason::PeerClosed;
            }
        }
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK.min(HANDSHAKE_MAX_FRAME as usize));
        }
        loop {
            tokio::select! {
                _ = shutdown.recv() => return CloseReason::Shutdown,
                _ = tx.closed() => return CloseReason::PeerClosed,
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) if buf.is_empty() => return CloseReason::PeerClosed,
                    Ok(0) => return CloseReason::PeerClosedMidFrame,
                    Ok(_) => {
                        last_read = tokio::time::Instant::now();
                        break;
                    }
                    Err(e) => return CloseReason::Io(e.to_string()),
                },
                _ = &mut idle_deadline => {
                    let now = tokio::time::Instant::now();
                    let quiet = now - last_read;
                    if quiet >= idle && budget.available_permits() == budget_bytes {
                        return CloseReason::IdleTimeout;
                    }
                    // Bytes arrived since it was armed, or a request is still being
                    // answered: not idle.
                    let next = if quiet >= idle { now + idle } else { last_read + idle };
                    idle_deadline.as_mut().reset(next);
                }
            }
        }
    }
}

/// Answers queued frames in order. Returns `Some(reason)` if it ended the connection.
async fn process(
    shared: &Arc<Shared>,
    wr: &mut WriteHalf<'_>,
    mut rx: mpsc::Receiver<Item>,
    mut session: Session,
    write_timeout: Duration,
) -> Option<CloseReason> {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes = 0;
        while batch.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
            match batch.last() {
                Some(Item::Fatal(_)) => break,
                Some(Item::Frame { bytes: f, .. }) => bytes += f.len(),
                None => {}
            }
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut out = BytesMut::new();
        let mut fatal = None;
        let mut next = 0;
        while next < batch.len() {
            // Unsent answers count against the connection's budget: past it, they are
            // written (waiting for the peer to read them) before the next request is
            // answered, so the queue fills and the reader stops reading.
            if out.len() >= ANSWER_BUDGET {
                cmd::settle_pending(shared, &mut session, &mut out).await;
                if let Err(reason) = write_out(wr, &out, write_timeout).await {
                    return Some(reason);
                }
                out.clear();
            }
            let frame = match &batch[next] {
                Item::Frame { bytes, .. } => bytes,
                Item::Fatal(reply) => {
                    cmd::settle_pending(shared, &mut session, &mut out).await;
                    encode_response(0, &Response::Error(reply.clone()), &mut out);
                    fatal = Some(CloseReason::FramingLost(reply.message.to_string()));
                    break;
                }
            };
            if opcode_of(frame) != Some(Opcode::Incr as u8) {
                cmd::settle_pending(shared, &mut session, &mut out).await;
            }
            if cmd::answers_inline(frame) {
                cmd::handle_frame(shared, &mut session, frame, &mut out);
                next += 1;
                continue;
            }
            // The run of frames that need the blocking pool goes there in one hop, which
            // stops early once the answers reach the budget.
            let run: Vec<Bytes> = batch[next..]
                .iter()
                .map_while(|item| match item {
                    Item::Frame { bytes, .. } if !cmd::answers_inline(bytes) => Some(bytes.clone()),
                    _ => None,
                })
                .collect();
            let task_shared = Arc::clone(shared);
            let mut task_out = std::mem::take(&mut out);
            let joined = tokio::task::spawn_blocking(move || {
                let mut done = 0;
                for frame in &run {
                    cmd::handle_frame(&task_shared, &mut session, frame, &mut task_out);
                    done += 1;
                    if task_out.len() >= ANSWER_BUDGET {
                        break;
                    }
                }
                (session, task_out, done)
            })
            .await;
            match joined {
                Ok((back, back_out, done)) => {
                    session = back;
                    out = back_out;
                    next += done;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a request handler failed");
                    let mut out = BytesMut::new();
                    let reply = ErrorReply::new(ErrorCode::Internal, "internal server error");
                    encode_response(0, &Response::Error(reply), &mut out);
                    let _ = write_out(wr, &out, write_timeout).await;
                    return Some(CloseReason::Internal(e.to_string()));
                }
            }
        }
        cmd::settle_pending(shared, &mut session, &mut out).await;
        if let Err(reason) = write_out(wr, &out, write_timeout).await {
            return Some(reason);
        }
        // The byte budget is released only once the answers are written.
        drop(batch);
        if fatal.is_some() {
            return fatal;
        }
    }
    None
}
