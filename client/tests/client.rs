//! Integration tests of the client against real `tallyd` processes on loopback.
//!
//! The `tallyd` binary is found through `TALLYD_BIN`, or next to this test binary's
//! directory (`target/<profile>/tallyd`; test binaries live in `target/<profile>/deps/`).
//! `cargo test --workspace` builds it (the server package has integration tests, so
//! Cargo builds its binaries for every test run of the workspace). When it is missing —
//! e.g. `cargo test -p tallydb-client` on a clean target directory — each test fails
//! with a message saying to run `cargo build -p tallydb-server --bin tallyd` first.
//!
//! Every server is stopped by pid (the `Tallyd` guard), every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tallydb_client::{
    now_ms, BreakerConfig, CircuitState, Client, Error, Function, MetricSelector, Overflow,
    RangeQuery, RetryPolicy, Selector, Step, TopQuery,
};
use tallydb_e2e::{tallyd_bin_or_fail, Tallyd};
use tallydb_protocol::{FrameHeader, Opcode};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DAY: i64 = 86_400_000;

struct Env {
    dir: TempDir,
    bin: PathBuf,
}

impl Env {
    /// Fails the test (saying how to build it) when the binary is not built.
    fn new(test: &str) -> Env {
        let bin = tallyd_bin_or_fail(test);
        Env {
            dir: tempfile::tempdir().unwrap(),
            bin,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self) -> Tallyd {
        Tallyd::start(&self.bin, self.dir.path(), &self.data(), &[])
    }

    /// Starts on a given loopback port (to restart in place).
    fn start_on(&self, port: u16) -> Tallyd {
        let data = self.data();
        Tallyd::start_with(&self.bin, self.dir.path(), &[], |cmd| {
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(&data);
        })
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn total(client: &Client, key: &str) -> (i64, u64) {
    let now = now_ms();
    let t = client
        .total(&Selector::Exact(key), now - DAY, now + DAY)
        .await
        .unwrap();
    (t.sum, t.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_round_trips() {
    let env = Env::new("every_call_round_trips");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let info = client.server_info().unwrap();
    assert!(info.server_version.starts_with("tallyd"), "{info:?}");
    assert!(info.limits.max_batch_events > 0);

    assert!(client.ping().await.unwrap() < Duration::from_secs(5));
    assert_eq!(client.incr("rt.hits{page=/}").await.unwrap().applied, 1);
    assert_eq!(
        client.incr_by("rt.hits{page=/}", 4).await.unwrap().applied,
        1
    );
    let two_min_ago = now_ms() - 120_000;
    client
        .incr_at("rt.hits{page=/a}", 7, two_min_ago)
        .await
        .unwrap();
    let r = client
        .batch()
        .add("rt.clicks{ad=ad1}", 3)
        .add("rt.clicks{ad=ad2}", 10)
        .add_with_id("rt.clicks{ad=ad1}", 1, b"evt-1")
        .add_event("rt.clicks{ad=ad3}", 2, Some(two_min_ago), Some(b"evt-2"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.applied, r.duplicates, r.duplicate_batch), (4, 0, false));
    // The same event ids again: acknowledged, not counted.
    let r = client
        .batch()
        .add_with_id("rt.clicks{ad=ad1}", 1, b"evt-1")
        .add_with_id("rt.clicks{ad=ad3}", 2, b"evt-2")
        .send()
        .await
        .unwrap();
    assert_eq!((r.applied, r.duplicates), (0, 2));

    assert_eq!(total(&client, "rt.hits{page=/}").await, (5, 2));
    assert_eq!(total(&client, "rt.clicks{ad=ad1}").await, (4, 2));
    let now = now_ms();
    let t = client
        .total(&Selector::Prefix("rt.hits"), now - DAY, now + DAY)
        .await
        .unwrap();
    assert_eq!((t.sum, t.count), (12, 3));
    assert!(t.tiers.0 != 0);
    assert!(t.closed_until_ms > 0);

    let range = client
        .range(&RangeQuery {
            selector: Selector::Exact("rt.hits{page=/a}"),
            from_ms: now - 3_600_000,
            to_ms: now + 60_000,
            step: Step::Millis(60_000),
            function: Function::Sum,
        })
        .await
        .unwrap();
    assert_eq!(range.step_ms, 60_000);
    let points: Vec<_> = range.groups.iter().flat_map(|g| g.points.iter()).collect();
    let sum: i64 = points.iter().filter_map(|p| p.value.as_i64()).sum();
    assert_eq!(sum, 7);
    let minute = two_min_ago - two_min_ago.rem_euclid(60_000);
    assert!(
        points
            .iter()
            .any(|p| p.ts_ms == minute && p.value.as_i64() == Some(7)),
        "{points:?}"
    );

    let top = client
        .top(&TopQuery {
            selector: Selector::Metric(MetricSelector {
                name: "rt.clicks",
                matchers: vec![],
                group_by: vec![],
            }),
            from_ms: now - DAY,
            to_ms: now + DAY,
            n: 2,
            group_by: None,
        })
        .await
        .unwrap();
    let names: Vec<_> = top
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.sum))
        .collect();
    assert_eq!(names, [("rt.clicks{ad=ad2}", 10), ("rt.clicks{ad=ad1}", 4)]);

    let series = client.series(&Selector::Prefix("rt."), 100).await.unwrap();
    assert_eq!(series.keys.len(), 5, "{series:?}");
    assert!(!series.truncated);
    let stats = client.stats().await.unwrap();
    assert!(!stats.entries.is_empty());

    assert!(!client.flush().await.unwrap().is_empty());
    assert!(!client.compact().await.unwrap().is_empty());
    let snap = env.dir.path().join("snap");
    assert!(!client
        .snapshot(snap.to_str().unwrap())
        .await
        .unwrap()
        .is_empty());
    assert!(snap.exists());

    // Server errors are typed and leave the connection usable.
    let err = client.incr("not a valid key!").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(tallydb_client::ErrorCode::InvalidSeries),
        "{err}"
    );
    assert!(!err.is_retryable() && !err.maybe_applied());
    assert_eq!(total(&client, "rt.hits{page=/}").await, (5, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_share_one_client_with_exact_totals() {
    let env = Env::new("eight_tasks_share_one_client_with_exact_totals");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let expected = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let client = client.clone();
        let expected = Arc::clone(&expected);
        tasks.push(tokio::spawn(async move {
            for i in 0..100i64 {
                let delta = t * 1000 + i;
                client.incr_by("share.total", delta).await.unwrap();
                client
                    .batch()
                    .add("share.total", 1)
                    .add(&format!("share.task{{t={t}}}"), 2)
                    .send()
                    .await
                    .unwrap();
                expected.fetch_add(delta + 1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        total(&client, "share.total").await,
        (expected.load(Ordering::Relaxed), 1600)
    );
    for t in 0..8 {
        assert_eq!(
            total(&client, &format!("share.task{{t={t}}}")).await,
            (200, 100)
        );
    }
}

/// A TCP proxy that forwards both ways but swallows the answer to the first `INCR` and
/// then cuts the client connection: the batch was applied, the client never heard.
async fn lossy_proxy(upstream: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(AtomicUsize::new(0));
    let cuts2 = Arc::clone(&cuts);
    tokio::spawn(async move {
        for conn in 0..10 {
            let Ok((mut down, _)) = listener.accept().await else {
                return;
            };
            let cut_this = conn == 0;
            let cuts = Arc::clone(&cuts2);
            tokio::spawn(async move {
                let mut up = TcpStream::connect(upstream).await.unwrap();
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let client_to_server = async {
                    let _ = tokio::io::copy(&mut dr, &mut uw).await;
                };
                let server_to_client = async {
                    let mut buf = BytesMut::new();
                    loop {
                        if ur.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                        // Forward whole frames; drop the connection at the first INCR_OK.
                        while let Ok(Some(header)) = FrameHeader::peek(&buf, u32::MAX) {
                            if buf.len() < header.frame_len() {
                                break;
                            }
                            let frame = buf.split_to(header.frame_len());
                            if cut_this
                                && matches!(
                                    header.opcode(),
                                    Some(Opcode::IncrOk | Opcode::IncrReport)
                                )
                            {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            if dw.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                tokio::select! {
                    () = client_to_server => {}
                    () = server_to_client => {}
                }
            });
        }
    });
    (addr, cuts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_is_lost_is_resent_and_counted_once() {
    let env = Env::new("a_batch_whose_answer_is_lost_is_resent_and_counted_once");
    let server = env.start();
    let (proxy, cuts) = lossy_proxy(server.addr).await;
    let client = Client::builder(proxy.to_string())
        .retry(
            RetryPolicy::default()
                .max_retries(5)
                .initial_backoff(Duration::from_millis(10)),
        )
        .connect()
        .await
        .unwrap();
    let r = client
        .batch()
        .add("lost.answer", 5)
        .add("lost.answer", 6)
        .send()
        .await
        .unwrap();
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "the proxy cut one answer");
    // The resend carried the same producer sequence: recognized, not counted again.
    assert!(r.duplicate_batch, "{r:?}");
    assert_eq!(r.applied, 2, "the original batch's counts are repeated");
    assert_eq!(total(&client, "lost.answer").await, (11, 2));
    // Later batches on the new connection get new sequences and count normally.
    client.incr_by("lost.answer", 1).await.unwrap();
    assert_eq!(total(&client, "lost.answer").await, (12, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_across_sigkill_and_restart_are_counted_exactly_once() {
    let env = Env::new("batches_across_sigkill_and_restart_are_counted_exactly_once");
    let port = free_port();
    let server = Arc::new(std::sync::Mutex::new(Some(env.start_on(port))));
    let client = Client::builder(format!("127.0.0.1:{port}"))
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .retry(
            RetryPolicy::default()
                .max_retries(50)
                .initial_backoff(Duration::from_millis(20))
                .max_backoff(Duration::from_millis(200)),
        )
        .breaker(BreakerConfig::disabled())
        .connect()
        .await
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let client = client.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut expected = 0i64;
            let mut duplicates = 0;
            for i in 1..=300i64 {
                let r = client
                    .batch()
                    .add("kill.total", i)
                    .add(&format!("kill.k{{n={}}}", i % 7), 1)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("batch {i} failed: {e}"));
                duplicates += usize::from(r.duplicate_batch);
                expected += i;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            (expected, duplicates)
        })
    };
    // Kill and restart the server three times while batches flow.
    for round in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.load(Ordering::SeqCst) < round * 60 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let env_bin = env.bin.clone();
        let dir = env.dir.path().to_path_buf();
        let server = Arc::clone(&server);
        tokio::task::spawn_blocking(move || {
            let mut guard = server.lock().unwrap();
            if let Some(mut s) = guard.take() {
                s.signal("KILL");
                s.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
            let data = dir.join("data");
            *guard = Some(Tallyd::start_with(&env_bin, &dir, &[], |cmd| {
                cmd.arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--data-dir")
                    .arg(&data);
            }));
        })
        .await
        .unwrap();
    }
    let (expected, duplicates) = tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .unwrap()
        .unwrap();
    println!("duplicate batches recognized after kills: {duplicates}");
    assert_eq!(total(&client, "kill.total").await, (expected, 300));
    let mut per_key = 0;
    for n in 0..7 {
        per_key += total(&client, &format!("kill.k{{n={n}}}")).await.1;
    }
    assert_eq!(per_key, 300);
    drop(server.lock().unwrap().take());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_fails_fast_and_opens_the_circuit() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let err = Client::builder(addr.as_str())
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let client = Client::builder(addr.as_str())
        .connect_timeout(Duration::from_secs(1))
        .retry(RetryPolicy::none())
        .breaker(
            BreakerConfig::default()
                .failure_threshold(3)
                .cool_down(Duration::from_millis(300)),
        )
        .connect_lazy()
        .unwrap();
    for _ in 0..3 {
        let err = client.ping().await.unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        // The next attempt waits for its backoff (at most 50 ms).
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(client.circuit_state(), CircuitState::Open);
    let started = Instant::now();
    let err = client.incr("down.x").await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err}");
    assert!(!err.maybe_applied());
    assert!(started.elapsed() < Duration::from_millis(100), "fails fast");

    // After the cool-down a probe goes through; with a server back on the port, the
    // circuit closes.
    let env = Env::new("server_down_fails_fast_and_opens_the_circuit (recovery)");
    let _server = env.start_on(port);
    tokio::time::sleep(Duration::from_millis(350)).await;
    client.ping().await.unwrap();
    assert_eq!(client.circuit_state(), CircuitState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out() {
    // Accepts TCP (the kernel does) but never answers HELLO.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let err = Client::builder(addr)
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_flushes_on_interval_and_on_shutdown_exactly() {
    let env = Env::new("recorder_flushes_on_interval_and_on_shutdown_exactly");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let recorder = client
        .recorder()
        .flush_interval(Duration::from_millis(50))
        .flush_events(1_000_000)
        .batch_events(300)
        .start();
    for i in 0..1000i64 {
        recorder.incr(&format!("rec.k{{n={}}}", i % 10), i % 3 - 1);
        recorder.incr("rec.total", 1);
    }
    // The interval flush delivers without a shutdown.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if total(&client, "rec.total").await == (1000, 1000) {
            break;
        }
        assert!(Instant::now() < deadline, "not flushed on interval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = recorder.report();
    assert_eq!((r.recorded, r.sent), (2000, 2000));
    // Events are not coalesced: every increment is one event (count), in its minute.
    let mut sum = 0;
    let mut count = 0;
    for n in 0..10 {
        let (s, c) = total(&client, &format!("rec.k{{n={n}}}")).await;
        sum += s;
        count += c;
    }
    assert_eq!((sum, count), ((0..1000i64).map(|i| i % 3 - 1).sum(), 1000));

    // A shutdown flushes what the interval has not sent yet.
    let slow = client
        .recorder()
        .flush_interval(Duration::from_secs(3600))
        .start();
    for _ in 0..500 {
        slow.incr("rec.late", 2);
    }
    let report = slow.shutdown().await;
    assert_eq!(
        (
            report.recorded,
            report.sent,
            report.dropped,
            report.undelivered
        ),
        (500, 500, 0, 0)
    );
    assert_eq!(total(&client, "rec.late").await, (1000, 500));
    let report = recorder.shutdown().await;
    assert_eq!((report.sent, report.undelivered), (2000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_bounds_memory_when_the_server_is_unreachable() {
    let addr = format!("127.0.0.1:{}", free_port());
    let client = Client::builder(addr)
        .retry(RetryPolicy::none())
        .connect_lazy()
        .unwrap();
    let recorder = client
        .recorder()
        .max_buffered(100)
        .flush_interval(Duration::from_millis(10))
        .overflow(Overflow::DropNewest)
        .start();
    for _ in 0..150 {
        recorder.incr("gone.x", 1);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = tokio::time::timeout(Duration::from_secs(20), recorder.shutdown())
        .await
        .unwrap();
    assert_eq!(report.recorded, 100);
    assert_eq!(report.dropped, 50);
    assert_eq!(report.sent, 0);
    assert_eq!(report.undelivered, 100, "{report:?}");
    assert!(report.last_error.is_some());
}

#[test]
fn blocking_client_works() {
    let env = Env::new("blocking_client_works");
    let server = env.start();
    let client = tallydb_client::blocking::Client::connect(server.addr.to_string()).unwrap();
    client.ping().unwrap();
    client.incr("blk.x").unwrap();
    client.incr_by("blk.x", 9).unwrap();
    let r = client
        .batch(&[("blk.x", 5, None), ("blk.y", 1, Some(now_ms()))])
        .unwrap();
    assert_eq!(r.applied, 2);
    let now = now_ms();
    let t = client
        .total(&Selector::Exact("blk.x"), now - DAY, now + DAY)
        .unwrap();
    assert_eq!((t.sum, t.count), (15, 3));
    let clone = client.clone();
    std::thread::spawn(move || clone.incr("blk.y").unwrap())
        .join()
        .unwrap();
    let t = client
        .total(&Selector::Exact("blk.y"), now - DAY, now + DAY)
        .unwrap();
    assert_eq!(t.sum, 2);
    let recorder = client.recorder();
    recorder.incr("blk.rec", 3);
    let report = client.block_on(recorder.shutdown());
    assert_eq!(report.sent, 1);
}
