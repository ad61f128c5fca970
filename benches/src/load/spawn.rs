//! A private `tallyd` for one run: started on a temporary data directory at
//! `127.0.0.1:0`, its address read from the `listening on ADDR` line it prints,
//! stopped by pid (SIGTERM, then SIGKILL) at the end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::error::LoadError;

/// How long `tallyd` may take to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running private server.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Spawned {
    /// Starts `bin --listen 127.0.0.1:0 --data-dir <tmp>/data --fsync <fsync> <extra>`,
    /// with the temporary directory under `parent` (the system default when `None`).
    pub fn start(
        bin: &Path,
        fsync: &str,
        parent: Option<&Path>,
        extra: &[String],
    ) -> Result<Spawned, LoadError> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new()
                .prefix("tally-bench-")
                .tempdir_in(p),
            None => tempfile::Builder::new().prefix("tally-bench-").tempdir(),
        }
        .map_err(LoadError::io("creating the data directory"))?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("tallyd.log");
        let log_file = std::fs::File::create(&log).map_err(LoadError::io("creating the log"))?;
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--fsync")
            .arg(fsync)
            // A private server needs no HTTP listener on the fixed default port;
            // `--server-arg --http-listen=...` overrides this.
            .env("TALLYD_HTTP_LISTEN", "")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| LoadError::Spawn(format!("cannot run {}: {e}", bin.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadError::Spawn("no stdout pipe".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Spawned {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            data_dir,
            dir: Some(dir),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        server.addr = a.trim().parse().map_err(|e| {
                            LoadError::Spawn(format!("bad address {a:?} in its output: {e}"))
                        })?;
                        return Ok(server);
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                    server.kill();
                    return Err(LoadError::Spawn(format!(
                        "{} did not print `listening on ADDR` within {START_TIMEOUT:?}; its log:\n{log}",
                        bin.display()
                    )));
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Keeps the data directory and log after the stop (prints nothing).
    pub fn keep_files(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    /// SIGTERM by pid, waits, then SIGKILL. Returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}
