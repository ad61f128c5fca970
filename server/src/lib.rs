//! `tallyd`, the TallyDB server: the binary wire protocol (`tallydb-protocol`) over
//! TCP in front of the storage engine (`tallydb-storage`).
//!
//! The binary (`src/main.rs`) only parses flags, sets up tracing, loads the
//! [`Config`], opens the engine and calls [`run`]; everything else lives here.
//!
//! # Module tour
//!
//! - [`config`]: the `tallydb-config` crate re-exported (shared with `tally-admin`):
//!   the TOML file, `TALLYD_*` variables and flags, resolved and validated into a
//!   [`Config`] before anything is opened; [`config::DEFAULT_CONFIG`] documents every key.
//! - [`server`]: [`run`], the accept loop and graceful shutdown (a broadcast, then
//!   waiting for every connection task, then closing the engine).
//! - [`admission`]: connection slots: the global and per-address limits, eviction of
//!   connections still in their handshake when a newcomer needs the slot, and the
//!   slots kept for the admin role.
//! - [`connection`]: one connection: the handshake under the 4 KiB handshake frame
//!   limit, then a reader that frames requests (length checked before anything is
//!   allocated) and a processor that answers them in order; handshake deadline, idle
//!   timeout; per-connection memory bounds (queued requests and unsent answers).
//! - [`cmd`]: the commands, one file per command family (`hello`, `incr`, `query`,
//!   `stats`, `admin`) and a dispatcher: one request to one engine call and one
//!   response; roles; storage errors → protocol error codes.
//! - [`auth`]: token digests compared in constant time, roles granted by `HELLO`.
//! - [`http`]: the HTTP side door on `http_listen`: `/-/healthy`, `/-/ready`, `/metrics`
//!   (latency histograms per command, errors by code, saturation) and a
//!   Prometheus-compatible query API with a PromQL subset for Grafana (`docs/GRAFANA.md`).
//! - [`aliases`]: the per-connection alias table, with batch staging so a failed `INCR`
//!   leaves its aliases undefined.
//!
//! Requests of one connection are answered in order (pipelined frames are read ahead);
//! many connections' `INCR`s share the engine's group commit, since each `apply` call
//! blocks on its own blocking-pool thread until the shared fsync covers it.

pub mod admission;
pub mod aliases;
pub mod auth;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod http;
pub mod server;

pub use config::Config;
pub use server::{run, serve, shared, ServerError};
