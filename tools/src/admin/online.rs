//! The commands that ask a running `tallyd` (`backup --server`, `compact --server`),
//! through the client crate's blocking client.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tallydb_client::{blocking, Client, RetryPolicy};

use super::backup::seal_and_verify;
use super::{out_err, Common, Exit, Failure, Outcome};

/// `backup --server ADDR --to DIR`: the server writes the snapshot into DIR **on
/// its own machine**. If DIR is visible here too, `BACKUP-MANIFEST` is written
/// and the backup verified; otherwise run `tally-admin seal DIR` there.
pub fn backup_online(
    addr: &str,
    token: &[u8],
    to: &Path,
    timeout: Duration,
    c: &Common,
    out: &mut dyn Write,
) -> Outcome {
    if !to.is_absolute() {
        return Err(Failure::failed(format!(
            "--to {}: give an absolute path (the server writes the snapshot, relative to its own working directory otherwise)",
            to.display()
        )));
    }
    let started = Instant::now();
    let target = to
        .to_str()
        .ok_or_else(|| Failure::failed("--to is not UTF-8"))?;
    let msg = connect(addr, token, timeout)?
        .snapshot(target)
        .map_err(|e| refused(addr, &e))?;
    if !to.join("MANIFEST").exists() {
        writeln!(
            out,
            "server {addr}: {msg}\n{} is not visible on this machine: run `tally-admin seal {}` on the server's machine to add BACKUP-MANIFEST and verify it",
            to.display(),
            to.display()
        )
        .map_err(out_err)?;
        return Ok(Exit::Ok);
    }
    seal_and_verify(to, &format!("server {addr}"), c, started, out)
}

/// `compact --server ADDR`: asks a running server to compact.
pub fn compact_online(addr: &str, token: &[u8], timeout: Duration, out: &mut dyn Write) -> Outcome {
    let msg = connect(addr, token, timeout)?
        .compact()
        .map_err(|e| refused(addr, &e))?;
    writeln!(out, "server {addr}: {msg}").map_err(out_err)?;
    Ok(Exit::Ok)
}

/// How long connecting (TCP and `HELLO`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `addr` as `tally-admin` with `token`. `timeout` bounds each answer (a
/// snapshot of a large directory can take minutes). An admin request is sent once:
/// resending a `SNAPSHOT` or `COMPACT` whose answer was lost is the operator's call.
fn connect(addr: &str, token: &[u8], timeout: Duration) -> Result<blocking::Client, Failure> {
    let builder = Client::builder(addr)
        .client_name("tally-admin")
        .token(token)
        .connect_timeout(CONNECT_TIMEOUT)
        .request_timeout(timeout)
        .retry(RetryPolicy::default().max_retries(0));
    blocking::Client::from_builder(builder).map_err(|e| refused(addr, &e))
}

/// The failure for an admin request the server refused or never answered.
fn refused(addr: &str, e: &tallydb_client::Error) -> Failure {
    Failure::failed(format!("server {addr}: {e}"))
}
