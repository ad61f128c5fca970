//! Crash harness: writers send batches with producer ids and sequences while
//! `tallyd` is killed with SIGKILL at random moments (during ingest, flushes,
//! compactions and snapshots) and restarted on the same data directory. Writers
//! retry every unacknowledged batch with its original sequence. At the end every
//! series' total, at minute, hour and day level, must equal exactly the increments
//! issued: nothing lost, nothing counted twice.
//!
//! Short mode (CI): 20 kills. Long mode: `TALLY_CRASH_KILLS=500 cargo test
//! --release -p tallydb-server --test crash -- --nocapture` (figures printed).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tallydb_e2e::{now_ms, Rng, Tallyd};
use tallydb_protocol::{
    decode_frame, encode_request, Event, Function, Hello, Incr, Message, Producer, RangeGroups,
    RangeQuery, Request, Response, Selector, SeriesRef, Snapshot, Step, TotalQuery,
    PROTOCOL_VERSION,
};

const BIN: &str = env!("CARGO_BIN_EXE_tallyd");
const WRITERS: u64 = 4;
const KEYS: usize = 12;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A minimal client that reports every failure as `None` instead of panicking:
/// the server dies under it on purpose.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
}

impl Conn {
    fn open(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
        stream.set_nodelay(true).ok()?;
        let mut c = Conn {
            stream,
            buf: Vec::new(),
            next_id: 1,
        };
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "crash-harness",
            token: b"",
        });
        match c.call(&hello)? {
            Ok(()) => Some(c),
            Err(_) => None,
        }
    }

    /// Sends a request and returns its answer's frame bytes, `Err` for an `ERROR`.
    fn call_raw(&mut self, req: &Request<'_>) -> Option<Result<Vec<u8>, String>> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        encode_request(id, req, &mut out);
        self.stream.write_all(&out).ok()?;
        loop {
            if let Ok(Some((frame, used))) = decode_frame(&self.buf, u32::MAX) {
                let bytes = self.buf[..used].to_vec();
                let is_error = matches!(frame.message, Message::Response(Response::Error(_)));
                let error = match &frame.message {
                    Message::Response(Response::Error(e)) => e.message.to_string(),
                    _ => String::new(),
                };
                let rid = frame.request_id;
                self.buf.drain(..used);
                if rid != id {
                    return None;
                }
                return Some(if is_error { Err(error) } else { Ok(bytes) });
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn call(&mut self, req: &Request<'_>) -> Option<Result<(), String>> {
        self.call_raw(req).map(|r| r.map(|_| ()))
    }
}

/// The server's current address (changes at every restart).
type Addr = Arc<Mutex<SocketAddr>>;

fn key(k: usize) -> String {
    format!("crash.k{k}")
}

/// One writer: `batches` batches of random increments, each retried with its
/// sequence until acknowledged. Returns the increments it issued per key.
fn writer(w: u64, addr: Addr, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> [i64; KEYS] {
    let mut rng = Rng::new(0xC0FFEE + w);
    let mut issued = [0i64; KEYS];
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut conn: Option<Conn> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let n = 1 + (rng.next_u64() % 40) as usize;
        let now = now_ms();
        let events: Vec<(usize, i64, i64)> = (0..n)
            .map(|_| {
                let k = (rng.next_u64() % KEYS as u64) as usize;
                let delta = 1 + (rng.next_u64() % 5) as i64;
                // Some events a few minutes late: still inside every tier.
                let late =
                    i64::from(rng.next_u64().is_multiple_of(4)) * (rng.next_u64() % 30) as i64;
                (k, delta, now - late * 60_000)
            })
            .collect();
        let attempts_until = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                Instant::now() < attempts_until,
                "writer {w}: batch {seq} not acknowledged within 120 s"
            );
            if conn.is_none() {
                conn = Conn::open(*addr.lock().unwrap());
            }
            let Some(c) = conn.as_mut() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let req = Request::Incr(Incr {
                producer: Some(Producer {
                    id: 1000 + w,
                    sequence: seq,
                }),
                events: events
                    .iter()
                    .map(|(k, delta, ts)| Event {
                        series: SeriesRef::Key(&keys[*k]),
                        delta: *delta,
                        timestamp_ms: Some(*ts),
                        event_id: None,
                    })
                    .collect(),
                per_event: false,
            });
            match c.call(&req) {
                Some(Ok(())) => break,
                Some(Err(e)) => panic!("writer {w}: batch {seq} refused: {e}"),
                None => {
                    conn = None;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        for (k, delta, _) in &events {
            issued[*k] += delta;
        }
        acked.fetch_add(events.iter().map(|e| e.1 as u64).sum(), Ordering::Relaxed);
    }
    issued
}

/// Sends flush, compact and snapshot requests so that kills land inside them.
fn admin(dir: &Path, addr: Addr, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(42);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20 + rng.next_u64() % 60));
        let Some(mut c) = Conn::open(*addr.lock().unwrap()) else {
            continue;
        };
        n += 1;
        let target = dir.join(format!("snap-{n}"));
        let target = target.display().to_string();
        let req = match n % 3 {
            0 => Request::Flush,
            1 => Request::Compact,
            _ => Request::Snapshot(Snapshot {
                target_dir: &target,
            }),
        };
        let _ = c.call(&req);
    }
}

fn sum_range(c: &mut Conn, k: &str, step_ms: u64) -> i64 {
    let now = now_ms();
    let req = Request::Range(RangeQuery {
        selector: Selector::Exact(k),
        from_ms: now - 3 * 86_400_000,
        to_ms: now + 86_400_000,
        step: Step::Millis(step_ms),
        function: Function::Sum,
    });
    let bytes = c.call_raw(&req).unwrap().unwrap();
    let (frame, _) = decode_frame(&bytes, u32::MAX).unwrap().unwrap();
    match frame.message {
        Message::Response(Response::RangeOk(r)) => match r.groups {
            RangeGroups::Int(groups) => groups
                .iter()
                .flat_map(|g| g.points.iter().map(|p| p.value))
                .sum(),
            RangeGroups::Float(_) => panic!("sum answered with floats"),
        },
        other => panic!("RANGE failed: {other:?}"),
    }
}

fn total(c: &mut Conn, k: &str) -> i64 {
    let now = now_ms();
    let req = Request::Total(TotalQuery {
        selector: Selector::Exact(k),
        from_ms: now - 3 * 86_400_000,
        to_ms: now + 86_400_000,
    });
    let bytes = c.call_raw(&req).unwrap().unwrap();
    let (frame, _) = decode_frame(&bytes, u32::MAX).unwrap().unwrap();
    match frame.message {
        Message::Response(Response::TotalOk(t)) => t.sum,
        other => panic!("TOTAL failed: {other:?}"),
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let kills: usize = std::env::var("TALLY_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let config = dir.join("tallyd.toml");
    // A tiny memtable makes flushes (and so compactions) happen all the time.
    std::fs::write(&config, "memtable_size = \"64KiB\"\n").unwrap();
    let config = config.display().to_string();
    let args = ["--config", config.as_str(), "--fsync", "always"];
    let start = |d: &Path| Tallyd::start(Path::new(BIN), dir, d, &args);

    let mut server = start(&data);
    let addr: Addr = Arc::new(Mutex::new(server.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, stop, acked) = (addr.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || writer(w, addr, stop, acked))
        })
        .collect();
    let admin_thread = {
        let (dir, addr, stop) = (dir.to_path_buf(), addr.clone(), stop.clone());
        std::thread::spawn(move || admin(&dir, addr, stop))
    };

    let mut rng = Rng::new(7);
    let started = Instant::now();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(50 + rng.next_u64() % 250));
        server.kill();
        server = start(&data);
        *addr.lock().unwrap() = server.addr;
    }
    stop.store(true, Ordering::SeqCst);
    let mut issued = [0i64; KEYS];
    for w in writers {
        for (k, v) in w.join().unwrap().iter().enumerate() {
            issued[k] += v;
        }
    }
    admin_thread.join().unwrap();

    // One more kill and restart with everything written: recovery alone must hold it.
    server.kill();
    let server = start(&data);
    let mut c = Conn::open(server.addr).unwrap();
    let mut lost = 0i64;
    let mut doubled = 0i64;
    for (k, want) in issued.iter().enumerate() {
        let name = key(k);
        let got = total(&mut c, &name);
        lost += (want - got).max(0);
        doubled += (got - want).max(0);
        for step in [60_000, 3_600_000, 86_400_000] {
            assert_eq!(
                sum_range(&mut c, &name, step),
                *want,
                "{name} at step {step} ms"
            );
        }
        assert_eq!(got, *want, "{name}: total");
    }
    // What the servers did between kills, from their logs.
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    let count = |what: &str| logs.matches(what).count();
    let (flushes, compactions) = (count("flushed memtable"), count("compacted segments"));
    println!(
        "crash harness: {kills} kills survived in {:.1} s, {} increments acknowledged, lost {lost}, doubled {doubled}; \
         {flushes} flushes, {compactions} compactions, {} WAL replays, {} torn tails cut",
        started.elapsed().as_secs_f64(),
        acked.load(Ordering::Relaxed),
        count("replayed the write-ahead log"),
        count("cut a torn WAL tail"),
    );
    assert_eq!((lost, doubled), (0, 0));
    assert!(
        flushes > 0 && compactions > 0,
        "kills must land among flushes and compactions"
    );
}
