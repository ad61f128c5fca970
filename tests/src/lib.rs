//! End-to-end test helpers for TallyDB: start a real `tallyd` process on a temporary
//! data directory, talk the wire protocol to it, and stop it by pid.
//!
//! - [`Tallyd`]: one server process. [`Tallyd::start`] runs the binary with
//!   `--listen 127.0.0.1:0` and reads the bound address from the `listening on ADDR`
//!   line it prints on stdout; its log goes to a file in the test directory. Dropping
//!   it sends SIGTERM, then SIGKILL if the process has not exited within a few seconds.
//! - [`Client`]: a small blocking client over [`std::net::TcpStream`] built on the
//!   protocol crate, with raw access for malformed-frame tests. Every read has a
//!   timeout, so no test can hang.
//!
//! The integration tests that use these helpers live in `server/tests/`, where Cargo
//! provides the path of the freshly built binary (`env!("CARGO_BIN_EXE_tallyd")`);
//! a test crate elsewhere in the workspace could not rely on the binary being built.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tallydb_protocol::{
    decode_frame, encode_request, ErrorCode, Event, Hello, HelloOk, Incr, IncrOk, Message,
    Producer, Request, Response, Selector, SeriesRef, TotalOk, TotalQuery,
};

/// How long a test waits for the server to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout of test clients.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

static STARTS: AtomicUsize = AtomicUsize::new(0);

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `tallyd` binary for tests outside the server package: `TALLYD_BIN`, or
/// `target/<profile>/tallyd` next to the calling test binary's directory (test
/// binaries live in `target/<profile>/deps/`). `cargo test --workspace` builds it,
/// since the server package has integration tests. `None` when it is missing.
pub fn tallyd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TALLYD_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join(format!("tallyd{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

/// How to get the `tallyd` binary, for the failure message of a test that needs it.
pub const HOW_TO_BUILD_TALLYD: &str = "build it with `cargo build -p tallydb-server --bin tallyd` \
     (`cargo test --workspace` does so), or point TALLYD_BIN at one";

/// [`tallyd_bin`], or a panic that fails `test` and says how to build the binary: a
/// test that cannot run must not pass.
pub fn tallyd_bin_or_fail(test: &str) -> PathBuf {
    match tallyd_bin() {
        Some(bin) => bin,
        None => panic!("{test}: the tallyd binary was not found; {HOW_TO_BUILD_TALLYD}"),
    }
}

/// A running `tallyd` process.
#[derive(Debug)]
pub struct Tallyd {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its log file (stderr).
    pub log: PathBuf,
}

impl Tallyd {
    /// Starts `bin` with `--listen 127.0.0.1:0 --data-dir DATA` and `extra` arguments,
    /// its log in `dir`, and waits for its `listening on` line.
    pub fn start(bin: &Path, dir: &Path, data: &Path, extra: &[&str]) -> Tallyd {
        Self::start_with(bin, dir, extra, |cmd| {
            cmd.arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--data-dir")
                .arg(data);
        })
    }

    /// Starts `bin` with only `extra` arguments, after `configure` adjusted the command
    /// (working directory, environment, more arguments).
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Tallyd {
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let log = dir.join(format!("tallyd-{n}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        // No HTTP listener on the fixed default port unless a test asks for one
        // (a flag overrides this variable).
        cmd.env("TALLYD_HTTP_LISTEN", "");
        configure(&mut cmd);
        cmd.args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Forward lines until EOF so the process never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // The test stopped listening; keep draining.
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut server = Tallyd {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        server.addr = addr.trim().parse().unwrap();
                        return server;
                    }
                }
                Err(_) => {
                    let log = server.log_text();
                    server.kill();
                    panic!("tallyd did not print its address; its log:\n{log}");
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by pid with `kill(1)`.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`STOP_TIMEOUT`]). Returns the
    /// exit status, `None` if it had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal("TERM");
        let status = self.wait_timeout(STOP_TIMEOUT);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Connects and completes the handshake without a token.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.hello(b"").unwrap();
        c
    }
}

impl Drop for Tallyd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("TERM");
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                self.kill();
            }
        }
    }
}

/// An `ERROR` answer, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorOwned {
    /// Request id it answered.
    pub request_id: u32,
    /// The code.
    pub code: u16,
    /// The message.
    pub message: String,
}

impl ErrorOwned {
    /// Whether this is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.code()
    }
}

/// One response frame as received.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The request id it echoes.
    pub request_id: u32,
    bytes: Vec<u8>,
}

impl Reply {
    /// The decoded response.
    pub fn response(&self) -> Response<'_> {
        match decode_frame(&self.bytes, u32::MAX)
            .unwrap()
            .unwrap()
            .0
            .message
        {
            Message::Response(r) => r,
            Message::Request(r) => panic!("server sent a request: {r:?}"),
        }
    }

    /// The `ERROR` this reply is, if it is one.
    pub fn error(&self) -> Option<ErrorOwned> {
        match self.response() {
            Response::Error(e) => Some(ErrorOwned {
                request_id: self.request_id,
                code: e.code,
                message: e.message.to_string(),
            }),
            _ => None,
        }
    }

    /// Panics unless this is an `ERROR` with `code`; returns its message.
    pub fn expect_error(&self, code: ErrorCode) -> String {
        match self.error() {
            Some(e) if e.is(code) => e.message,
            _ => panic!("expected {code}, got {:?}", self.response()),
        }
    }
}

/// A blocking test client.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
}

impl Client {
    /// Connects (no handshake yet).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    /// Sends `HELLO` with `token`; the `HELLO_OK` fields or the `ERROR`.
    pub fn hello(&mut self, token: &[u8]) -> Result<HelloOk<'static>, ErrorOwned> {
        let reply = self.call(&Request::Hello(Hello::new("e2e", token)));
        match reply.response() {
            Response::HelloOk(ok) => Ok(HelloOk {
                protocol_version: ok.protocol_version,
                server_version: "",
                limits: ok.limits,
                role: ok.role,
            }),
            _ => Err(reply.error().unwrap()),
        }
    }

    /// The next request id.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Encodes `req` with the next request id and sends it; returns the id.
    pub fn send(&mut self, req: &Request<'_>) -> u32 {
        let id = self.next_id();
        let mut out = BytesMut::new();
        encode_request(id, req, &mut out);
        self.send_raw(&out);
        id
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Closes the write side.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads the next response frame; `None` on a clean close. Panics after
    /// [`READ_TIMEOUT`].
    pub fn read_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some(reply) = self.take_frame() {
                return Some(reply);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "connection closed mid-frame");
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("reading a reply: {e} ({:?})", e.kind()),
            }
        }
    }

    /// Like [`Client::read_reply`], but any failure (reset, timeout, a close in the
    /// middle of a frame) is `None`: for tests that kill the server.
    pub fn read_reply_or_close(&mut self) -> Option<Reply> {
        loop {
            if let Some(reply) = self.take_frame() {
                return Some(reply);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Reply> {
        let (request_id, used) = match decode_frame(&self.buf, u32::MAX) {
            Ok(Some((frame, used))) => (frame.request_id, used),
            Ok(None) => return None,
            Err(e) => panic!("the server sent an undecodable frame: {e}"),
        };
        let bytes: Vec<u8> = self.buf.drain(..used).collect();
        Some(Reply { request_id, bytes })
    }

    /// Whether the server closed the connection (reads EOF within [`READ_TIMEOUT`]).
    pub fn is_closed(&mut self) -> bool {
        self.read_reply().is_none()
    }

    /// Sends a request and reads its answer (checking the request id).
    pub fn call(&mut self, req: &Request<'_>) -> Reply {
        let id = self.send(req);
        let reply = self.read_reply().expect("the server closed the connection");
        assert_eq!(reply.request_id, id, "answer to another request");
        reply
    }

    /// `INCR` of `events`; panics on `ERROR`.
    pub fn incr(&mut self, producer: Option<Producer>, events: Vec<Event<'_>>) -> IncrOk {
        match self.try_incr(producer, events) {
            Ok(ok) => ok,
            Err(e) => panic!("INCR failed: {e:?}"),
        }
    }

    /// `INCR` of `events`.
    pub fn try_incr(
        &mut self,
        producer: Option<Producer>,
        events: Vec<Event<'_>>,
    ) -> Result<IncrOk, ErrorOwned> {
        let reply = self.call(&Request::Incr(Incr {
            producer,
            events,
            per_event: false,
        }));
        match reply.response() {
            Response::IncrOk(ok) => Ok(ok),
            _ => Err(reply.error().unwrap()),
        }
    }

    /// Adds `delta` to `key` now.
    pub fn add(&mut self, key: &str, delta: i64) -> IncrOk {
        self.incr(
            None,
            vec![Event {
                series: SeriesRef::Key(key),
                delta,
                timestamp_ms: None,
                event_id: None,
            }],
        )
    }

    /// `TOTAL` of `selector` over `from..to`; panics on `ERROR`.
    pub fn total_of(&mut self, selector: Selector<'_>, from_ms: i64, to_ms: i64) -> TotalOk {
        let reply = self.call(&Request::Total(TotalQuery {
            selector,
            from_ms,
            to_ms,
        }));
        match reply.response() {
            Response::TotalOk(ok) => ok,
            other => panic!("TOTAL failed: {other:?}"),
        }
    }

    /// Sum of the exact series `key` over the last and next day.
    pub fn total(&mut self, key: &str) -> i64 {
        let now = now_ms();
        self.total_of(Selector::Exact(key), now - 86_400_000, now + 86_400_000)
            .sum
    }
}

/// A small deterministic generator (SplitMix64) for random frames.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.bytes(16), b.bytes(16));
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn replies_decode_what_the_server_would_send() {
        let mut out = BytesMut::new();
        tallydb_protocol::encode_response(9, &Response::Pong, &mut out);
        let (frame, used) = decode_frame(&out, u32::MAX).unwrap().unwrap();
        let reply = Reply {
            request_id: frame.request_id,
            bytes: out[..used].to_vec(),
        };
        assert_eq!(reply.request_id, 9);
        assert_eq!(reply.response(), Response::Pong);
        assert!(reply.error().is_none());
    }
}
