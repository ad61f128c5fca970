//! The `tally-admin` commands. Each takes parsed arguments and a writer for its
//! report, and returns the exit code (or a [`Failure`] carrying one):
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | success; for `verify`, no damage (torn WAL tails and warnings allowed) |
//! | 1 | the command failed (I/O error, target not empty, server unreachable or refusing) |
//! | 2 | bad command line (from clap) |
//! | 3 | damage found (`verify`; `restore` of a damaged backup; `inspect`/`export` of a damaged directory) |
//! | 4 | the data directory is in use by a running server (its lock is held) |
//!
//! One module per command family: `verify`, `backup` (offline backup, `seal`),
//! `online` (the commands that ask a running `tallyd`, through `tallydb-client`),
//! `restore`, `compact` (offline), `inspect` and `export`; this file holds what they
//! share: exit codes, [`Failure`], [`Common`] settings and small helpers.

mod backup;
mod compact;
mod export;
mod inspect;
mod online;
mod restore;
mod verify;

pub use backup::{backup_offline, seal};
pub use compact::compact_offline;
pub use export::{export, export_cmd, ExportFormat, ExportStats};
pub use inspect::{inspect_cmd, inspect_json, write_inspect_text};
pub use online::{backup_online, compact_online};
pub use restore::restore;
pub use verify::{verify_cmd, verify_json, write_verify_text};

use std::path::Path;
use std::time::Duration;

use tallydb_storage::engine::FORMAT_FILE;
use tallydb_storage::{Clock, Error, Options, Retention, SystemClock};

/// Process exit codes (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The command failed.
    Failed = 1,
    /// Bad command line.
    Usage = 2,
    /// Damage found.
    Damage = 3,
    /// The directory is held by a running server.
    InUse = 4,
}

/// A command that could not do its work: the exit code and what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Exit code.
    pub exit: Exit,
    /// Message for standard error.
    pub message: String,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Failed,
            message: message.into(),
        }
    }

    /// Maps a storage error: a held lock is [`Exit::InUse`] with `hint`, damage
    /// is [`Exit::Damage`], anything else [`Exit::Failed`].
    pub fn storage(e: Error, dir: &Path, hint: &str) -> Failure {
        match e {
            Error::Locked { .. } => Failure {
                exit: Exit::InUse,
                message: format!(
                    "data directory {} is in use by a running server; {hint}",
                    dir.display()
                ),
            },
            e @ Error::Corrupt { .. } => Failure {
                exit: Exit::Damage,
                message: format!(
                    "{e}; run `tally-admin verify --data-dir {}` for a full report",
                    dir.display()
                ),
            },
            e => Failure::failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a command returns.
pub type Outcome = Result<Exit, Failure>;

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// One JSON document.
    Json,
}

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// The retention the server runs with.
    pub retention: Retention,
    /// No progress display even on a terminal.
    pub quiet: bool,
    /// Report format.
    pub format: Format,
}

const HINT_READ: &str =
    "use `tally-admin backup --server ADDR --to DIR` for a consistent copy, and check that";
const HINT_BACKUP: &str = "use `tally-admin backup --server ADDR --to DIR` for an online backup";
const HINT_COMPACT: &str = "use `tally-admin compact --server ADDR` to compact it online";
const HINT_RESTORE: &str = "stop the server before restoring into its directory";

fn out_err(e: std::io::Error) -> Failure {
    Failure::failed(format!("writing the report: {e}"))
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn is_data_dir(dir: &Path) -> bool {
    dir.join(FORMAT_FILE).exists()
}

fn require_data_dir(dir: &Path) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::failed(format!(
            "{} does not exist or is not a directory",
            dir.display()
        )));
    }
    if !is_data_dir(dir) {
        return Err(Failure::failed(format!(
            "{} is not a TallyDB data directory (no {FORMAT_FILE} file)",
            dir.display()
        )));
    }
    Ok(())
}

fn engine_options(retention: Retention) -> Options {
    Options {
        retention,
        background: false,
        ..Options::default()
    }
}
