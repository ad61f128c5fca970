//! Measures what hostile clients cost a real `tallyd`, on loopback only:
//!
//! - `flood`: six connections (`--readers`) pipeline `SERIES` requests whose answers
//!   are about 8 MB each and never read them, for `--seconds`; prints the server's
//!   RSS (`/proc/PID/status` `VmRSS`, sampled every 100 ms) before, at its peak and at
//!   the end, and the time a fresh client takes to be served (`HELLO` + `PING`) during
//!   the flood. The flood stops early if RSS passes `--rss-cap-mib`.
//! - `silent`: `--silent` sockets (default 1,024, the default connection limit) that
//!   never send a byte, spread over 8 loopback source addresses, then the time for a
//!   fresh client to be served, retried until `--seconds` have passed.
//!
//! It starts its own `tallyd` (`--tallyd PATH`, default configuration, a temporary
//! data directory, `127.0.0.1:0`) and stops it by pid at the end.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-hostile cargo run --release -p tallydb-benches
//! --bin tally-hostile -- --tallyd /work/target-hostile/release/tallyd`

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use clap::Parser;
use tallydb_protocol::{
    decode_frame, encode_request, Event, Hello, Incr, Message, Request, Response, Selector,
    SeriesQuery, SeriesRef,
};

/// Loopback measurements of answer floods and silent sockets against a real tallyd.
#[derive(Debug, Parser)]
struct Args {
    /// The tallyd binary to start.
    #[arg(long)]
    tallyd: PathBuf,
    /// `flood`, `silent` or `both`.
    #[arg(long, default_value = "both")]
    scenario: String,
    /// Connections flooding answers.
    #[arg(long, default_value_t = 6)]
    readers: usize,
    /// Series in the flood's answers (about 870 bytes of key each).
    #[arg(long, default_value_t = 9_000)]
    series: usize,
    /// Sockets that never speak.
    #[arg(long, default_value_t = 1_024)]
    silent: usize,
    /// How long the flood lasts; how long a fresh client keeps retrying.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The flood stops when the server's RSS passes this.
    #[arg(long, default_value_t = 3_072)]
    rss_cap_mib: u64,
}

/// A tallyd started for the measurement, killed by pid when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &PathBuf) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("TALLYD_HTTP_LISTEN", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("tallyd's stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tallyd did not print its address");
            };
            if let Some(a) = line.strip_prefix("listening on ") {
                let addr = a.trim().parse()?;
                return Ok(Server {
                    child,
                    addr,
                    _dir: dir,
                });
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(id: u32, req: &Request<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_request(id, req, &mut out);
    out.to_vec()
}

/// Reads one response: `Ok(None)` for an answer, `Ok(Some(code))` for an `ERROR`.
fn read_reply(s: &mut TcpStream) -> Result<Option<u16>> {
    let mut buf = Vec::new();
    loop {
        if let Some((frame, _)) = decode_frame(&buf, u32::MAX)? {
            return Ok(match frame.message {
                Message::Response(Response::Error(e)) => Some(e.code),
                _ => None,
            });
        }
        let mut chunk = [0u8; 64 * 1024];
        match s.read(&mut chunk)? {
            0 => bail!("the server closed the connection"),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn connect_from(rt: &tokio::runtime::Runtime, src: [u8; 4], addr: SocketAddr) -> Result<TcpStream> {
    let s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((src, 0)))?;
        let stream = socket.connect(addr).await?;
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        Ok::<_, std::io::Error>(std)
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn hello(s: &mut TcpStream) -> Result<Option<u16>> {
    s.write_all(&encode(
        1,
        &Request::Hello(Hello::new("tally-hostile", b"")),
    ))?;
    read_reply(s)
}

/// Connects, `HELLO`, `PING`: how long it took, or the error code that refused it.
fn fresh_client(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s = connect_from(rt, [127, 0, 0, 1], addr).map_err(|e| e.to_string())?;
    match hello(&mut s) {
        Ok(None) => {}
        Ok(Some(code)) => return Err(format!("ERROR {code}")),
        Err(e) => return Err(e.to_string()),
    }
    s.write_all(&encode(2, &Request::Ping))
        .map_err(|e| e.to_string())?;
    match read_reply(&mut s) {
        Ok(None) => Ok(t.elapsed()),
        Ok(Some(code)) => Err(format!("ERROR {code}")),
        Err(e) => Err(e.to_string()),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("VmRSS"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn flood_key(i: usize) -> String {
    let pad = "x".repeat(118);
    format!("flood{{a={i:06}{pad},b={pad},c={pad},d={pad},e={pad},f={pad},g={pad}}}")
}

fn flood(args: &Args, rt: &tokio::runtime::Runtime) -> Result<()> {
    let server = Server::start(&args.tallyd)?;
    let (addr, pid) = (server.addr, server.pid());
    let mut admin = connect_from(rt, [127, 0, 0, 1], addr)?;
    if let Some(code) = hello(&mut admin)? {
        bail!("HELLO refused: {code}");
    }
    let keys: Vec<String> = (0..args.series).map(flood_key).collect();
    for chunk in keys.chunks(3_000) {
        let events = chunk
            .iter()
            .map(|k| Event {
                series: SeriesRef::Key(k),
                delta: 1,
                timestamp_ms: None,
                event_id: None,
            })
            .collect();
        admin.write_all(&encode(
            3,
            &Request::Incr(Incr {
                producer: None,
                events,
                per_event: false,
            }),
        ))?;
        if let Some(code) = read_reply(&mut admin)? {
            bail!("INCR refused: {code}");
        }
    }
    let series = encode(
        4,
        &Request::Series(SeriesQuery {
            selector: Selector::Prefix("flood"),
            limit: u32::try_from(args.series)?,
        }),
    );
    admin.write_all(&series)?;
    read_reply(&mut admin)?;
    drop(admin);
    let before = rss_kib(pid);

    let cap = args.rss_cap_mib << 10;
    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut readers = Vec::new();
    for n in 0..args.readers {
        let mut s = connect_from(rt, [127, 0, 1, (n % 250) as u8 + 1], addr)?;
        hello(&mut s)?;
        s.set_write_timeout(Some(Duration::from_millis(100)))?;
        let (running, peak, frame) = (Arc::clone(&running), Arc::clone(&peak), series.clone());
        readers.push(thread::spawn(move || {
            let mut off = 0;
            while running.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && peak.load(Ordering::SeqCst) < cap
            {
                match s.write(&frame[off..]) {
                    Ok(0) => break,
                    Ok(k) => off = (off + k) % frame.len(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            s
        }));
    }
    thread::sleep(Duration::from_secs(args.seconds / 2));
    let fresh = fresh_client(rt, addr);
    let sockets: Vec<TcpStream> = readers.into_iter().filter_map(|t| t.join().ok()).collect();
    let elapsed = started.elapsed();
    let end = rss_kib(pid);
    running.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    drop(sockets);
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "flood: {} readers pipelining SERIES (~{} MB answers) unread for {:.1} s: server RSS before {} MiB, peak {} MiB{}, end {} MiB; fresh client during the flood: {}",
        args.readers,
        args.series * 870 / 1_000_000,
        elapsed.as_secs_f64(),
        before >> 10,
        peak >> 10,
        if peak >= cap { " (cap reached, flood stopped)" } else { "" },
        end >> 10,
        match fresh {
            Ok(d) => format!("served in {:.1} ms", d.as_secs_f64() * 1e3),
            Err(e) => format!("not served ({e})"),
        }
    );
    Ok(())
}

fn silent(args: &Args, rt: &tokio::runtime::Runtime) -> Result<()> {
    let server = Server::start(&args.tallyd)?;
    let addr = server.addr;
    let mut sockets = Vec::with_capacity(args.silent);
    for i in 0..args.silent {
        sockets.push(connect_from(rt, [127, 0, 2, (i % 8) as u8 + 1], addr)?);
    }
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        match fresh_client(rt, addr) {
            Ok(d) => break Ok(d),
            Err(e) if Instant::now() >= deadline => break Err(e),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    };
    println!(
        "silent: {} sockets open that never send a byte; fresh client: {}",
        sockets.len(),
        match outcome {
            Ok(d) => format!(
                "served in {:.1} ms (try {tries}, {:.1} ms after the first)",
                d.as_secs_f64() * 1e3,
                started.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => format!(
                "not served within {} s ({tries} tries, last: {e})",
                args.seconds
            ),
        }
    );
    drop(sockets);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.scenario.as_str() {
        "flood" => flood(&args, &rt),
        "silent" => silent(&args, &rt),
        "both" => {
            flood(&args, &rt)?;
            silent(&args, &rt)
        }
        other => bail!("unknown scenario {other:?}: flood, silent or both"),
    }
}
