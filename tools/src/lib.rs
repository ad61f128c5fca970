//! TallyDB's command-line tools: `tally`, the query and ingest CLI, and
//! `tally-admin`, the operator's tool.
//!
//! A tour:
//! - [`admin`]: every `tally-admin` command (verify, backup, restore, compact,
//!   inspect, export) as a function of parsed arguments returning an outcome
//!   with its exit code, one module per command family; the binary in
//!   `src/bin/tally-admin.rs` only parses flags. The online commands speak to
//!   `tallyd` through the `tallydb-client` crate.
//! - [`tally`]: every `tally` command (incr, ingest, range, total, top, series,
//!   stats, ping) over the `tallydb-client` crate, with [`tally::output`] (table,
//!   JSON, JSON lines, CSV), [`tally::chart`] and [`tally::ingest`]; the binary in
//!   `src/bin/tally.rs` only parses flags.
//! - [`selector`], [`timefmt`]: parsing of selectors and times given on the
//!   command line; [`progress`]: progress on a terminal, silence when piped.
//!
//! The work itself (integrity checks, backups, reading a directory offline) is in
//! the storage crate: `tallydb_storage::{verify, backup, offline, inspect}`.

pub mod admin;
pub mod progress;
pub mod selector;
pub mod tally;
pub mod timefmt;
