//! `/-/healthy` and `/-/ready`, as Prometheus answers them: plain text, 200 or 503.
//!
//! Healthy means the process serves HTTP. Ready means the storage engine is open: WAL
//! replay has finished and queries and writes are served. The HTTP listener is bound
//! before the engine opens, so an orchestrator sees 503 during a long replay.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::HttpState;

/// `GET /-/healthy`.
pub async fn healthy() -> impl IntoResponse {
    (StatusCode::OK, "TallyDB is Healthy.\n")
}

/// `GET /-/ready`.
pub async fn ready(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    match state.shared() {
        Some(_) => (StatusCode::OK, "TallyDB is Ready.\n"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: replaying the write-ahead log.\n",
        ),
    }
}
