//! The HTTP side door (`http_listen`, default `127.0.0.1:7412`), on axum:
//!
//! - [`health`]: `/-/healthy` (the process serves HTTP) and `/-/ready` (503 until the
//!   storage engine has opened, i.e. WAL replay has finished);
//! - [`metrics`]: `/metrics`, the server's own figures in the Prometheus text format,
//!   and the lock-free histograms the protocol handler feeds;
//! - [`api`]: a Prometheus-compatible read API (`/api/v1/query`, `query_range`,
//!   `labels`, `label/<name>/values`, `series`, `metadata`, `status/buildinfo`) with
//!   Prometheus' response and error shapes, for Grafana's Prometheus data source;
//! - [`promql`]: the PromQL subset, translated into engine range queries;
//! - [`native`]: `/api/v1/tally/total`, totals per group with selectors and times read
//!   as `tally` reads them.
//!
//! The listener is bound before the engine opens, so `/-/ready` answers 503 during WAL
//! replay; [`HttpState::set_ready`] hands it the server state once the engine is open.
//!
//! Auth is the protocol's: the same token digests and roles ([`Authenticator`]). A
//! token comes as `Authorization: Bearer <token>` or HTTP Basic with the token as the
//! password (any user name). Without tokens, loopback clients are allowed, remote ones
//! only with `auth.allow_remote_without_token`. Every role may read, so `/metrics` and
//! the query API need any valid token; health endpoints need none.

// Handlers answer errors as ready `Response`s; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod health;
pub mod metrics;
pub mod native;
pub mod promql;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tallydb_protocol::Role;

use crate::auth::{AuthError, Authenticator};
use crate::cmd::Shared;
use crate::config::Config;

/// How long one query may run before it is answered `503 timeout`.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What every HTTP request can see.
#[derive(Debug)]
pub struct HttpState {
    shared: OnceLock<Arc<Shared>>,
    auth: Authenticator,
    max_connections: usize,
}

impl HttpState {
    /// State for this configuration, not ready yet.
    pub fn new(config: &Config) -> Arc<HttpState> {
        Arc::new(HttpState {
            shared: OnceLock::new(),
            auth: Authenticator::new(&config.auth),
            max_connections: config.limits.max_connections,
        })
    }

    /// Marks the server ready: the engine is open (WAL replay finished).
    pub fn set_ready(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    /// The server state once ready.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.get()
    }

    /// Checks the request's credentials; `Err` is the response to send.
    pub fn authorize(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<Role, Response> {
        let token = match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            None => Vec::new(),
            Some(v) => match credentials(v) {
                Some(t) => t,
                None => {
                    return Err(unauthorized(
                        "the Authorization header must be \"Bearer <token>\" or \"Basic <base64 of user:token>\"",
                    ))
                }
            },
        };
        self.auth
            .authenticate(peer.ip(), &token)
            .map(|g| g.role)
            .map_err(|e| match e {
                AuthError::RemoteRefused => {
                    api::error(StatusCode::FORBIDDEN, "forbidden", &e.to_string())
                }
                AuthError::TokenRequired | AuthError::BadToken => unauthorized(&e.to_string()),
            })
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = api::error(StatusCode::UNAUTHORIZED, "unauthorized", msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"tallyd\""),
    );
    r
}

/// The token of an `Authorization` header value.
fn credentials(value: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest)?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// Standard base64 (padding optional); `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/-/healthy", get(health::healthy).head(health::healthy))
        .route("/-/ready", get(health::ready).head(health::ready))
        .route("/metrics", get(metrics_page))
        .route("/api/v1/query", get(api::query).post(api::query))
        .route(
            "/api/v1/query_range",
            get(api::query_range).post(api::query_range),
        )
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/metadata", get(api::metadata))
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route(
            "/api/v1/tally/total",
            get(native::total).post(native::total),
        )
        .fallback(api::not_found)
        .with_state(state)
}

async fn metrics_page(
    axum::extract::State(state): axum::extract::State<Arc<HttpState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = state.authorize(peer, &headers) {
        return r;
    }
    let Some(shared) = state.shared().cloned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the storage engine is still opening (WAL replay)\n",
        )
            .into_response();
    };
    let max = state.max_connections;
    match tokio::task::spawn_blocking(move || metrics::render(&shared, max)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Serves HTTP on `listener` until `shutdown` completes; in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_bearer_or_basic() {
        assert_eq!(credentials("Bearer s3cr3t"), Some(b"s3cr3t".to_vec()));
        // "grafana:s3cr3t"
        assert_eq!(
            credentials("Basic Z3JhZmFuYTpzM2NyM3Q="),
            Some(b"s3cr3t".to_vec())
        );
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(credentials("Digest x"), None);
        assert_eq!(base64_decode("YWJj"), Some(b"abc".to_vec()));
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
    }
}
