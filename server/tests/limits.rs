//! Connection limits against hostile clients: answer floods, silent sockets,
//! connection slots and SNAPSHOT targets. Each test starts its own `tallyd`;
//! `TALLY_HOSTILE_BIN` runs them against another binary, such as an older release,
//! to see them fail there.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tallydb_e2e::Tallyd;
use tallydb_protocol::{
    decode_frame, encode_request, ErrorCode, Event, Hello, Message, Request, Response, Selector,
    SeriesRef,
};

const BIN: &str = env!("CARGO_BIN_EXE_tallyd");
/// Socket timeouts of the test clients: nothing they do can hang.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn encode(id: u32, req: &Request<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_request(id, req, &mut out);
    out.to_vec()
}

fn hello_frame() -> Vec<u8> {
    encode(1, &Request::Hello(Hello::new("hostile", b"")))
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads one whole response frame: `Ok(Some(response is an ERROR with this code))`,
/// `Ok(None)` on close.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Option<u16>>> {
    loop {
        match decode_frame(buf, u32::MAX) {
            Ok(Some((frame, used))) => {
                let code = match frame.message {
                    Message::Response(Response::Error(e)) => Some(e.code),
                    _ => None,
                };
                buf.drain(..used);
                return Ok(Some(code));
            }
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(ErrorKind::InvalidData, e.to_string())),
        }
        let mut chunk = [0u8; 16 * 1024];
        match s.read(&mut chunk)? {
            0 => return Ok(None),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const BIN_VAR: &str = "TALLY_HOSTILE_BIN";
/// Default `limits.max_connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `limits.max_connections_per_address`.
const DEFAULT_PER_ADDRESS: usize = 256;
/// How fast a fresh client must be served however the hostile sockets behave.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
const READ_TOKEN: &str = "hostile-read-token";
const ADMIN_TOKEN: &str = "hostile-admin-token";

fn server_bin() -> std::path::PathBuf {
    std::env::var_os(BIN_VAR).map_or_else(|| BIN.into(), Into::into)
}

/// A tallyd with default limits and a read and an admin token, plus `extra` config.
fn start_with_tokens(dir: &Path, extra: &str) -> Tallyd {
    let hex =
        |t: &str| tallydb_server::auth::to_hex(&tallydb_server::auth::hash_token(t.as_bytes()));
    let cfg = dir.join("tokens.toml");
    std::fs::write(
        &cfg,
        format!(
            "{extra}\n[[auth.tokens]]\nname = \"reader\"\nrole = \"read\"\nsha256 = \"{}\"\n\
             [[auth.tokens]]\nname = \"boss\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
            hex(READ_TOKEN),
            hex(ADMIN_TOKEN)
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    Tallyd::start(
        &server_bin(),
        dir,
        &dir.join("data"),
        &["--config", &cfg, "--log-level", "warn"],
    )
}

/// Connects from `src` (any 127.0.0.0/8 address: the server sees distinct peers).
fn connect_from(rt: &tokio::runtime::Runtime, src: [u8; 4], addr: SocketAddr) -> TcpStream {
    let s = rt
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((src, 0)))?;
            let stream = socket.connect(addr).await?;
            let std = stream.into_std()?;
            std.set_nonblocking(false)?;
            Ok::<_, std::io::Error>(std)
        })
        .unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `HELLO` with `token` on `s`: `Ok(())` for `HELLO_OK`, else the `ERROR` code (or
/// `u16::MAX` when the connection closed without one).
fn hello_on(s: &mut TcpStream, token: &str) -> Result<(), u16> {
    s.write_all(&encode(
        1,
        &Request::Hello(Hello::new("hostile", token.as_bytes())),
    ))
    .map_err(|_| u16::MAX)?;
    match read_frame(s, &mut Vec::new()) {
        Ok(Some(None)) => Ok(()),
        Ok(Some(Some(code))) => Err(code),
        _ => Err(u16::MAX),
    }
}

/// Connects from `src`, says `HELLO` with `token` and `PING`; returns how long that
/// took, or what refused it.
fn served(
    rt: &tokio::runtime::Runtime,
    src: [u8; 4],
    addr: SocketAddr,
    token: &str,
) -> Result<(Duration, TcpStream), String> {
    let t = Instant::now();
    let mut s = connect_from(rt, src, addr);
    hello_on(&mut s, token).map_err(|code| format!("HELLO refused with code {code}"))?;
    s.write_all(&encode(2, &Request::Ping))
        .map_err(|e| e.to_string())?;
    match read_frame(&mut s, &mut Vec::new()) {
        Ok(Some(None)) => Ok((t.elapsed(), s)),
        other => Err(format!("PING not answered: {other:?}")),
    }
}

/// Sampled peak of `VmRSS` while `running` is set.
fn rss_sampler(pid: u32, running: Arc<AtomicBool>, peak: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while running.load(Ordering::SeqCst) {
            let now = proc_kib(pid, "VmRSS").unwrap_or(0);
            peak.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Series whose `SERIES` answer is about 8 MB, and the request asking for all of them.
const FLOOD_SERIES: usize = 9_000;

fn flood_key(i: usize) -> String {
    let pad = "x".repeat(118);
    format!("flood{{a={i:06}{pad},b={pad},c={pad},d={pad},e={pad},f={pad},g={pad}}}")
}

fn series_frame(id: u32) -> Vec<u8> {
    encode(
        id,
        &Request::Series(tallydb_protocol::SeriesQuery {
            selector: Selector::Prefix("flood"),
            limit: FLOOD_SERIES as u32,
        }),
    )
}

/// Bound on the server's resident memory under the answer flood: six connections
/// asking for ~8 MB answers they never read. Holding 32 answers per connection (the old
/// behaviour) takes about 1.5 GB; holding one and a budget takes well under this.
const FLOOD_RSS_BOUND_KIB: u64 = 400 << 10;
const FLOOD_READERS: usize = 6;
const FLOOD_TIME: Duration = Duration::from_secs(8);

#[test]
fn answer_flooding_readers_keep_the_server_bounded_and_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with_tokens(dir.path(), "");
    let pid = server.pid();
    let rt = runtime();
    {
        let mut admin = tallydb_e2e::Client::connect(server.addr);
        admin.hello(ADMIN_TOKEN.as_bytes()).unwrap();
        let keys: Vec<String> = (0..FLOOD_SERIES).map(flood_key).collect();
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
            admin.incr(None, events);
        }
        // One answer, read: it really is large.
        let reply = admin.call(&Request::Series(tallydb_protocol::SeriesQuery {
            selector: Selector::Prefix("flood"),
            limit: FLOOD_SERIES as u32,
        }));
        match reply.response() {
            Response::SeriesOk(ok) => assert_eq!(ok.keys.len(), FLOOD_SERIES),
            other => panic!("{other:?}"),
        }
    }
    let rss_before = proc_kib(pid, "VmRSS").unwrap();

    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = rss_sampler(pid, Arc::clone(&running), Arc::clone(&peak));
    let sent = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for n in 0..FLOOD_READERS {
        let mut s = connect_from(&rt, [127, 0, 1, n as u8 + 1], server.addr);
        hello_on(&mut s, READ_TOKEN).unwrap();
        let (running, sent, peak) = (Arc::clone(&running), Arc::clone(&sent), Arc::clone(&peak));
        readers.push(thread::spawn(move || {
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            let mut id = 10u32;
            let mut frame = series_frame(id);
            let mut off = 0;
            // Never reads; stops at the deadline or once the bound is broken.
            let deadline = Instant::now() + FLOOD_TIME;
            while running.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && peak.load(Ordering::SeqCst) < FLOOD_RSS_BOUND_KIB
            {
                match s.write(&frame[off..]) {
                    Ok(0) => break,
                    Ok(k) => {
                        off += k;
                        if off == frame.len() {
                            sent.fetch_add(1, Ordering::Relaxed);
                            id += 1;
                            frame = series_frame(id);
                            off = 0;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            s
        }));
    }
    // While the flood is on: a fresh client is served within a second, twice.
    thread::sleep(Duration::from_secs(2));
    let mut fresh = Vec::new();
    for _ in 0..2 {
        fresh.push(served(&rt, [127, 0, 0, 1], server.addr, READ_TOKEN));
        thread::sleep(Duration::from_secs(1));
    }
    let sockets: Vec<TcpStream> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let rss_flood = proc_kib(pid, "VmRSS").unwrap_or(0);
    running.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    drop(sockets);
    let status = server.terminate();
    println!(
        "answer flood: {FLOOD_READERS} readers wrote {} SERIES requests for ~8 MB answers; \
         server RSS before {rss_before} KiB, at the end {rss_flood} KiB, peak sampled {peak} KiB",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        peak < FLOOD_RSS_BOUND_KIB,
        "server RSS reached {peak} KiB under the answer flood (bound {FLOOD_RSS_BOUND_KIB} KiB)"
    );
    for f in fresh {
        let (took, _) = f.unwrap();
        assert!(took < SERVED_WITHIN, "a fresh client waited {took:?}");
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "tallyd did not stop cleanly: {status:?}"
    );
}

#[test]
fn silent_sockets_at_the_connection_limit_lock_nobody_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), "");
    let rt = runtime();
    // The default limit's worth of sockets that never send a byte, from 8 addresses
    // (each under the per-address limit, so together they fill the server).
    let mut silent = Vec::with_capacity(DEFAULT_MAX_CONNECTIONS);
    for i in 0..DEFAULT_MAX_CONNECTIONS {
        silent.push(connect_from(
            &rt,
            [127, 0, 2, (i % 8) as u8 + 1],
            server.addr,
        ));
    }
    // Let the server accept them all.
    thread::sleep(Duration::from_millis(500));
    let reader = served(&rt, [127, 0, 0, 1], server.addr, READ_TOKEN);
    let admin = served(&rt, [127, 0, 0, 1], server.addr, ADMIN_TOKEN);
    let (took, _r) = reader.expect("a fresh client is served beside silent sockets");
    assert!(took < SERVED_WITHIN, "a fresh client waited {took:?}");
    let (took, _a) = admin.expect("an admin is served beside silent sockets");
    assert!(took < SERVED_WITHIN, "an admin waited {took:?}");
    // The oldest silent socket is gone: told BUSY when it made room, or, on a machine
    // slow enough that opening the others took past the handshake deadline, told
    // UNAUTHENTICATED at that deadline. Either way it was answered and closed.
    let mut first = silent.remove(0);
    let answer = read_frame(&mut first, &mut Vec::new()).unwrap();
    assert!(
        answer == Some(Some(ErrorCode::Busy.code()))
            || answer == Some(Some(ErrorCode::Unauthenticated.code())),
        "the oldest silent socket got {answer:?}, not BUSY or UNAUTHENTICATED"
    );
    println!("silent sockets: {DEFAULT_MAX_CONNECTIONS} open; a reader and an admin were served");
}

#[test]
fn a_connection_without_hello_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), "");
    let mut s = connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let got = read_frame(&mut s, &mut Vec::new());
    let took = t.elapsed();
    assert!(
        matches!(got, Ok(Some(Some(code))) if code == ErrorCode::Unauthenticated.code()),
        "no UNAUTHENTICATED after {took:?}: {got:?}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "closed after {took:?}, not the 5 s default"
    );
    // A part of a HELLO does not extend the deadline.
    let mut s = connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = hello_frame();
    let t = Instant::now();
    s.write_all(&hello[..hello.len() - 1]).unwrap();
    let got = read_frame(&mut s, &mut Vec::new());
    assert!(
        matches!(got, Ok(Some(Some(code))) if code == ErrorCode::Unauthenticated.code()),
        "{got:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(7));
}

#[test]
fn admin_slots_let_an_admin_in_when_sessions_fill_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), "");
    let rt = runtime();
    // The default limit's worth of read sessions, from 8 addresses.
    let mut sessions = Vec::with_capacity(DEFAULT_MAX_CONNECTIONS);
    for i in 0..DEFAULT_MAX_CONNECTIONS {
        let mut s = connect_from(&rt, [127, 0, 3, (i % 8) as u8 + 1], server.addr);
        hello_on(&mut s, READ_TOKEN).unwrap_or_else(|c| panic!("session {i} refused: {c}"));
        sessions.push(s);
    }
    let refused = served(&rt, [127, 0, 0, 1], server.addr, READ_TOKEN);
    let err = refused.expect_err("a reader beyond the limit is refused");
    assert!(err.contains(&ErrorCode::Busy.code().to_string()), "{err}");
    let (took, _admin) = served(&rt, [127, 0, 0, 1], server.addr, ADMIN_TOKEN)
        .expect("an admin gets a slot kept for the admin role");
    assert!(took < SERVED_WITHIN, "the admin waited {took:?}");
    // The sessions are still served.
    let s = &mut sessions[0];
    s.write_all(&encode(9, &Request::Ping)).unwrap();
    assert_eq!(read_frame(s, &mut Vec::new()).unwrap(), Some(None));
}

#[test]
fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), "");
    let rt = runtime();
    let greedy = [127, 0, 4, 1];
    let mut sessions = Vec::with_capacity(DEFAULT_PER_ADDRESS);
    for i in 0..DEFAULT_PER_ADDRESS {
        let mut s = connect_from(&rt, greedy, server.addr);
        hello_on(&mut s, READ_TOKEN).unwrap_or_else(|c| panic!("session {i} refused: {c}"));
        sessions.push(s);
    }
    let err = served(&rt, greedy, server.addr, READ_TOKEN)
        .expect_err("one more session from the same address is refused");
    assert!(err.contains(&ErrorCode::Busy.code().to_string()), "{err}");
    // Other addresses are served, and the greedy one once it closes a session.
    served(&rt, [127, 0, 4, 2], server.addr, READ_TOKEN).unwrap();
    drop(sessions.pop());
    thread::sleep(Duration::from_millis(200));
    served(&rt, greedy, server.addr, READ_TOKEN).unwrap();
}

#[test]
fn snapshot_targets_must_be_absolute_and_outside_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), "");
    let mut c = tallydb_e2e::Client::connect(server.addr);
    c.hello(ADMIN_TOKEN.as_bytes()).unwrap();
    c.add("snap.me", 1);
    let relative = format!("hostile-snapshot-{}", std::process::id());
    /// A server that accepts the relative target writes it into its working directory
    /// (this crate's): removed however the test ends.
    struct RemoveOnDrop(String);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(relative.clone());
    let inside = dir.path().join("data").join("snap");
    let sneaky = dir.path().join("elsewhere/../data/snap2");
    for target in [
        relative.clone(),
        inside.display().to_string(),
        sneaky.display().to_string(),
    ] {
        let reply = c.call(&Request::Snapshot(tallydb_protocol::Snapshot {
            target_dir: &target,
        }));
        let message = reply.expect_error(ErrorCode::InvalidArgument);
        assert!(
            message.contains("absolute") || message.contains("inside the data directory"),
            "{target}: {message}"
        );
    }
    assert!(!inside.exists() && !dir.path().join("data/snap2").exists());
    let outside = dir.path().join("snap");
    let reply = c.call(&Request::Snapshot(tallydb_protocol::Snapshot {
        target_dir: &outside.display().to_string(),
    }));
    assert!(reply.error().is_none(), "{:?}", reply.error());
    assert!(outside.join("MANIFEST").exists());
}
