//! The accept loop, the connection limit and graceful shutdown.
//!
//! [`run`] accepts connections until its `shutdown` future completes, one task per
//! connection. [`Admission`] decides who gets a slot (the global and per-address
//! limits, eviction of connections still in their handshake, the admin slots); a
//! connection refused one is answered `ERROR BUSY` (request id 0) and closed. On shutdown the listener
//! is dropped (no new connections), a broadcast tells every connection to stop reading,
//! each finishes the requests it already read, and `run` waits until every connection
//! task has ended (each holds a clone of an `mpsc` sender; the receiver sees the channel
//! close when the last one drops). Then it closes the engine, which syncs the WAL.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tallydb_protocol::{encode_response, ErrorCode, ErrorReply, Response};
use tallydb_storage::Engine;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

use crate::admission::{Admission, AdmissionLimits};
use crate::auth::Authenticator;
use crate::cmd::{ServerStats, Shared};
use crate::config::Config;
use crate::connection::{self, ClientInfo, ConnectionLimits, Shutdown};

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Closing the engine (syncing the WAL) failed: recent acknowledged writes may
    /// depend on WAL replay at the next start.
    #[error("closing the storage engine failed: {0}")]
    Close(#[source] tallydb_storage::Error),
    /// The engine close task panicked.
    #[error("closing the storage engine failed: {0}")]
    Join(String),
}

/// Serves `listener` with `engine` until `shutdown` completes, then drains every
/// connection and closes the engine.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let shared = shared(engine, &config);
    serve(listener, shared, config, shutdown).await
}

/// The state every connection (and the HTTP side door) shares, for `engine`.
pub fn shared(engine: Arc<Engine>, config: &Config) -> Arc<Shared> {
    Arc::new(Shared {
        engine,
        limits: config.protocol_limits(),
        auth: Authenticator::new(&config.auth),
        stats: ServerStats::default(),
        started: Instant::now(),
    })
}

/// [`run`] with state made by [`shared`] (so the HTTP side door can read the same
/// figures): serves until `shutdown` completes, then drains and closes the engine.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let engine = Arc::clone(&shared.engine);
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    let mut listener = Listener {
        listener,
        shared: Arc::clone(&shared),
        admission: Admission::new(AdmissionLimits {
            max_connections: config.limits.max_connections,
            max_per_address: config.limits.max_connections_per_address,
            admin_reserved: config.limits.admin_reserved_connections,
        }),
        conn_limits: ConnectionLimits {
            idle_timeout: config.limits.idle_timeout,
            handshake_timeout: config.limits.handshake_timeout,
            max_pipeline: config.limits.max_pipeline,
        },
        notify_shutdown,
        shutdown_complete_tx,
    };
    tokio::select! {
        () = listener.run() => {}
        () = shutdown => {}
    }
    let Listener {
        listener: socket,
        notify_shutdown,
        shutdown_complete_tx,
        ..
    } = listener;
    drop(socket);
    let open = shared.stats.connections_open.load(Ordering::Relaxed);
    tracing::info!(
        open_connections = open,
        "shutting down: no longer accepting connections, finishing in-flight requests"
    );
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    let _ = shutdown_complete_rx.recv().await;
    tracing::info!("all connections closed; closing the storage engine");
    drop(shared);
    let closing = Arc::clone(&engine);
    let closed = tokio::task::spawn_blocking(move || closing.close()).await;
    match closed {
        Ok(Ok(())) => {
            tracing::info!("storage engine closed; shutdown complete");
            Ok(())
        }
        Ok(Err(e)) => Err(ServerError::Close(e)),
        Err(e) => Err(ServerError::Join(e.to_string())),
    }
}

struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    conn_limits: ConnectionLimits,
    notify_shutdown: broadcast::Sender<()>,
    shutdown_complete_tx: mpsc::Sender<()>,
}

impl Listener {
    async fn run(&mut self) {
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let mut ticket = match self.admission.admit(peer.ip()) {
                Ok(t) => t,
                Err(refusal) => {
                    self.shared
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, %refusal, "connection refused");
                    tokio::spawn(refuse_busy(socket, refusal.to_string()));
                    continue;
                }
            };
            let shared = Arc::clone(&self.shared);
            let limits = self.conn_limits;
            let mut shutdown = Shutdown::new(self.notify_shutdown.subscribe());
            let done = self.shutdown_complete_tx.clone();
            tokio::spawn(async move {
                let stats = &shared.stats;
                stats.connections_total.fetch_add(1, Ordering::Relaxed);
                stats.connections_open.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, "connection opened");
                let started = Instant::now();
                let mut info = ClientInfo::default();
                let reason = connection::serve(
                    Arc::clone(&shared),
                    socket,
                    peer,
                    limits,
                    &mut ticket,
                    &mut shutdown,
                    &mut info,
                )
                .await;
                log_close(peer, &reason, &info, started);
                shared
                    .stats
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
                drop(ticket);
                drop(done);
            });
        }
    }
}

fn log_close(
    peer: SocketAddr,
    reason: &connection::CloseReason,
    info: &ClientInfo,
    started: Instant,
) {
    tracing::info!(
        %peer,
        reason = %reason,
        client = info.name.as_deref().unwrap_or("-"),
        role = info.role.unwrap_or("-"),
        token = info.token.as_deref().unwrap_or("-"),
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "connection closed"
    );
}

async fn refuse_busy(mut socket: TcpStream, message: String) {
    let mut out = BytesMut::new();
    let reply = ErrorReply::new(ErrorCode::Busy, message);
    encode_response(0, &Response::Error(reply), &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = socket.write_all(&out).await;
        let _ = socket.shutdown().await;
    })
    .await;
}
