//! End-to-end tests: real `tallyd` processes on temporary data directories, driven over
//! TCP with the protocol crate, stopped (or killed) by pid.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tallydb_e2e::{now_ms, Client, Rng, Tallyd};
use tallydb_protocol::{
    encode_request, ErrorCode, Event, Function, Hello, Incr, MatchOp, Matcher, MetricSelector,
    Producer, RangeGroups, RangeQuery, Request, Response, Role, Selector, SeriesQuery, SeriesRef,
    Snapshot, Step, TopQuery, HANDSHAKE_MAX_FRAME,
};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_tallyd");

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self, extra: &[&str]) -> Tallyd {
        Tallyd::start(Path::new(BIN), self.dir.path(), &self.data(), extra)
    }

    /// Writes a config file into the test directory and returns `--config PATH` args.
    fn config(&self, text: &str) -> Vec<String> {
        let path = self.dir.path().join("tallyd.toml");
        std::fs::write(&path, text).unwrap();
        vec!["--config".into(), path.display().to_string()]
    }

    fn start_with_config(&self, text: &str) -> Tallyd {
        let args = self.config(text);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start(&args)
    }
}

fn ev(series: SeriesRef<'_>, delta: i64) -> Event<'_> {
    Event {
        series,
        delta,
        timestamp_ms: None,
        event_id: None,
    }
}

#[test]
fn every_command_round_trips() {
    let env = Env::new();
    let server = env.start(&[]);
    let mut c = Client::connect(server.addr);
    let hello = c.hello(b"").unwrap();
    assert_eq!(hello.role, Role::Admin, "loopback without tokens is admin");
    assert_eq!(hello.limits.max_frame, 16 << 20);
    assert_eq!(hello.limits.max_aliases, 65_536);

    assert_eq!(c.call(&Request::Ping).response(), Response::Pong);

    // INCR: define an alias, use it, a key, a delta, a timestamp, an event id.
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    let ok = c.incr(
        None,
        vec![
            ev(
                SeriesRef::Define {
                    key: "ad_clicks{ad=ad001,country=US}",
                    alias: 1,
                },
                1,
            ),
            ev(SeriesRef::Alias(1), 4),
            ev(SeriesRef::Key("ad_clicks{ad=ad002,country=FR}"), 10),
            Event {
                series: SeriesRef::Key("com.example.music"),
                delta: 7,
                timestamp_ms: Some(minute),
                event_id: Some(b"e-1"),
            },
            Event {
                series: SeriesRef::Key("com.example.music"),
                delta: 7,
                timestamp_ms: Some(minute),
                event_id: Some(b"e-1"),
            },
        ],
    );
    assert_eq!(
        (ok.applied, ok.duplicates, ok.duplicate_batch),
        (4, 1, false)
    );
    assert_eq!(c.total("ad_clicks{ad=ad001,country=US}"), 5);
    assert_eq!(
        c.total("ad_clicks{country=FR,ad=ad002}"),
        10,
        "keys are canonical"
    );
    assert_eq!(c.total("com.example.music"), 7);

    // TOTAL over a metric selector and a prefix.
    let day = 86_400_000;
    let metric = Selector::Metric(MetricSelector {
        name: "ad_clicks",
        matchers: vec![],
        group_by: vec![],
    });
    let t = c.total_of(metric, now - day, now + day);
    assert_eq!((t.sum, t.count), (15, 3));
    assert!(t.tiers.0 != 0);
    let t = c.total_of(Selector::Prefix("com.example"), now - day, now + day);
    assert_eq!(t.sum, 7);

    // RANGE at one-minute steps, grouped by country.
    let reply = c.call(&Request::Range(RangeQuery {
        selector: Selector::Metric(MetricSelector {
            name: "ad_clicks",
            matchers: vec![Matcher {
                label: "country",
                op: MatchOp::NotEq,
                value: "DE",
            }],
            group_by: vec!["country"],
        }),
        from_ms: minute - 5 * 60_000,
        to_ms: minute + 60_000,
        step: Step::Millis(60_000),
        function: Function::Sum,
    }));
    match reply.response() {
        Response::RangeOk(r) => {
            assert_eq!(r.step_ms, 60_000);
            let RangeGroups::Int(groups) = r.groups else {
                panic!("sum must be integers")
            };
            assert_eq!(groups.len(), 2);
            let sums: Vec<(String, i64)> = groups
                .iter()
                .map(|g| {
                    (
                        g.labels[0].value.to_string(),
                        g.points.iter().map(|p| p.value).sum(),
                    )
                })
                .collect();
            assert!(sums.contains(&("US".into(), 5)), "{sums:?}");
            assert!(sums.contains(&("FR".into(), 10)), "{sums:?}");
        }
        other => panic!("{other:?}"),
    }
    // RANGE avg answers floats.
    let reply = c.call(&Request::Range(RangeQuery {
        selector: Selector::Exact("ad_clicks{ad=ad001,country=US}"),
        from_ms: now - 3_600_000,
        to_ms: now + 60_000,
        step: Step::Auto,
        function: Function::Avg,
    }));
    match reply.response() {
        Response::RangeOk(r) => assert!(matches!(r.groups, RangeGroups::Float(_))),
        other => panic!("{other:?}"),
    }

    // TOP by series and by label.
    let reply = c.call(&Request::Top(TopQuery {
        selector: Selector::Metric(MetricSelector {
            name: "ad_clicks",
            matchers: vec![],
            group_by: vec![],
        }),
        from_ms: now - day,
        to_ms: now + day,
        n: 1,
        group_by: Some("country"),
    }));
    match reply.response() {
        Response::TopOk(t) => {
            assert_eq!(t.entries.len(), 1);
            assert_eq!((t.entries[0].name, t.entries[0].sum), ("FR", 10));
        }
        other => panic!("{other:?}"),
    }

    // SERIES with a limit.
    let reply = c.call(&Request::Series(SeriesQuery {
        selector: Selector::Metric(MetricSelector {
            name: "ad_clicks",
            matchers: vec![],
            group_by: vec![],
        }),
        limit: 1,
    }));
    match reply.response() {
        Response::SeriesOk(s) => {
            assert_eq!(s.keys, vec!["ad_clicks{ad=ad001,country=US}"]);
            assert!(s.truncated);
        }
        other => panic!("{other:?}"),
    }

    // STATS: engine and server figures.
    let reply = c.call(&Request::Stats);
    match reply.response() {
        Response::StatsOk(s) => {
            let get = |name: &str| s.entries.iter().find(|e| e.name == name).map(|e| e.value);
            assert_eq!(get("series"), Some(3));
            assert_eq!(get("events.applied"), Some(4));
            assert_eq!(get("connections.open"), Some(1));
            assert!(get("requests.total").unwrap() >= 10);
            assert!(get("wal.fsyncs").is_some());
        }
        other => panic!("{other:?}"),
    }

    // Admin commands.
    for req in [Request::Flush, Request::Compact] {
        match c.call(&req).response() {
            Response::AdminOk(m) => assert!(!m.message.is_empty()),
            other => panic!("{other:?}"),
        }
    }
    let snap = env.dir.path().join("snap");
    let snap_s = snap.display().to_string();
    match c
        .call(&Request::Snapshot(Snapshot {
            target_dir: &snap_s,
        }))
        .response()
    {
        Response::AdminOk(m) => assert!(m.message.contains(&snap_s), "{}", m.message),
        other => panic!("{other:?}"),
    }
    assert!(snap.join("MANIFEST").exists());
    assert_eq!(
        c.total("ad_clicks{ad=ad001,country=US}"),
        5,
        "flush keeps counts"
    );

    // Errors with their codes; the connection goes on after each.
    let e = c
        .try_incr(None, vec![ev(SeriesRef::Key("bad key!"), 1)])
        .unwrap_err();
    assert!(e.is(ErrorCode::InvalidSeries), "{e:?}");
    assert!(e.message.contains("event 0"), "{e:?}");
    let e = c
        .try_incr(None, vec![ev(SeriesRef::Alias(9), 1)])
        .unwrap_err();
    assert!(
        e.is(ErrorCode::InvalidSeries) && e.message.contains("alias 9"),
        "{e:?}"
    );
    let e = c
        .try_incr(None, vec![ev(SeriesRef::Alias(70_000), 1)])
        .unwrap_err();
    assert!(e.is(ErrorCode::InvalidSeries), "{e:?}");
    let future = Event {
        series: SeriesRef::Key("x"),
        delta: 1,
        timestamp_ms: Some(now + 2 * day),
        event_id: None,
    };
    let e = c.try_incr(None, vec![future]).unwrap_err();
    assert!(e.is(ErrorCode::TooFarInFuture), "{e:?}");
    // A failed batch leaves the aliases it defined undefined, and counts nothing.
    let e = c
        .try_incr(
            None,
            vec![
                ev(SeriesRef::Define { key: "y", alias: 2 }, 1),
                ev(SeriesRef::Alias(1), 1),
                future,
            ],
        )
        .unwrap_err();
    assert!(e.is(ErrorCode::TooFarInFuture), "{e:?}");
    let e = c
        .try_incr(None, vec![ev(SeriesRef::Alias(2), 1)])
        .unwrap_err();
    assert!(
        e.is(ErrorCode::InvalidSeries),
        "alias 2 must be undefined: {e:?}"
    );
    assert_eq!(c.total("ad_clicks{ad=ad001,country=US}"), 5);
    c.incr(None, vec![ev(SeriesRef::Alias(1), 1)]); // alias 1 is still bound
    assert_eq!(c.total("ad_clicks{ad=ad001,country=US}"), 6);
    let bad_range = c.call(&Request::Total(tallydb_protocol::TotalQuery {
        selector: Selector::Exact("x"),
        from_ms: now,
        to_ms: now - 1,
    }));
    let msg = bad_range.expect_error(ErrorCode::InvalidArgument);
    assert!(msg.contains("empty time range"), "{msg}");
    let bad_step = c.call(&Request::Range(RangeQuery {
        selector: Selector::Exact("x"),
        from_ms: now - day,
        to_ms: now,
        step: Step::Millis(1234),
        function: Function::Sum,
    }));
    bad_step.expect_error(ErrorCode::InvalidArgument);
    c.call(&Request::Hello(Hello::new("again", b"")))
        .expect_error(ErrorCode::InvalidArgument);
    assert_eq!(c.call(&Request::Ping).response(), Response::Pong);
}

#[test]
fn events_older_than_every_retention_are_refused() {
    let env = Env::new();
    let server =
        env.start_with_config("[retention]\nminute = \"1d\"\nhour = \"2d\"\nday = \"3d\"\n");
    let mut c = server.client();
    let old = Event {
        series: SeriesRef::Key("x"),
        delta: 1,
        timestamp_ms: Some(now_ms() - 10 * 86_400_000),
        event_id: None,
    };
    let e = c.try_incr(None, vec![old]).unwrap_err();
    assert!(e.is(ErrorCode::TooOld), "{e:?}");
    assert!(e.message.contains("retention"), "{e:?}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let env = Env::new();
    let server = env.start(&[]);
    let mut c = server.client();
    let mut out = BytesMut::new();
    let mut ids = Vec::new();
    for i in 0..100u32 {
        let id = c.next_id();
        ids.push(id);
        let req = if i % 2 == 0 {
            Request::Incr(Incr {
                producer: None,
                events: vec![ev(SeriesRef::Key("pipelined"), i64::from(i))],
                per_event: false,
            })
        } else {
            Request::Ping
        };
        encode_request(id, &req, &mut out);
    }
    c.send_raw(&out);
    let mut applied = 0;
    for id in ids {
        let reply = c.read_reply().unwrap();
        assert_eq!(reply.request_id, id);
        match reply.response() {
            Response::IncrOk(ok) => applied += ok.applied,
            Response::Pong => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(applied, 50);
    let expected: i64 = (0..100).filter(|i| i % 2 == 0).sum();
    assert_eq!(c.total("pipelined"), expected);
}

#[test]
fn concurrent_writers_totals_are_exact() {
    let env = Env::new();
    let server = env.start(&[]);
    let addr = server.addr;
    let threads: Vec<_> = (0..16i64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.hello(b"").unwrap();
                let key = format!("writer{{id=w{t}}}");
                let mut sum = 0;
                for i in 0..40i64 {
                    let events = (0..5)
                        .map(|j| {
                            let d = t + i + j;
                            sum += d;
                            ev(SeriesRef::Key(&key), d)
                        })
                        .collect::<Vec<_>>();
                    let ok = c.incr(None, events);
                    assert_eq!(ok.applied, 5);
                    c.add("writer_all", 1);
                }
                sum
            })
        })
        .collect();
    let sums: Vec<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut c = server.client();
    for (t, sum) in sums.iter().enumerate() {
        assert_eq!(c.total(&format!("writer{{id=w{t}}}")), *sum);
    }
    assert_eq!(c.total("writer_all"), 16 * 40);
    let now = now_ms();
    let all = c.total_of(
        Selector::Metric(MetricSelector {
            name: "writer",
            matchers: vec![],
            group_by: vec![],
        }),
        now - 86_400_000,
        now + 86_400_000,
    );
    assert_eq!(all.sum, sums.iter().sum::<i64>());
    assert_eq!(all.count, 16 * 40 * 5);
}

fn raw_frame(len: u32, opcode: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = BytesMut::new();
    v.put_u32_le(len);
    v.put_u8(opcode);
    v.put_u32_le(id);
    v.extend_from_slice(payload);
    v.to_vec()
}

#[test]
fn bad_frames_get_errors_and_harm_no_one_else() {
    let env = Env::new();
    let server = env.start(&["--log-level", "warn"]);
    let mut good = server.client();
    good.add("steady", 1);

    // Unknown opcode and trailing bytes: an ERROR for that frame, connection kept.
    let mut c = server.client();
    c.send_raw(&raw_frame(5, 0x7e, 41, &[]));
    let r = c.read_reply().unwrap();
    assert_eq!(r.request_id, 41);
    r.expect_error(ErrorCode::UnknownOpcode);
    c.send_raw(&raw_frame(6, 0x02, 42, &[0]));
    let r = c.read_reply().unwrap();
    assert_eq!(r.request_id, 42);
    r.expect_error(ErrorCode::Malformed);
    c.send_raw(&raw_frame(5, 0x82, 43, &[])); // a response opcode
    c.read_reply()
        .unwrap()
        .expect_error(ErrorCode::UnknownOpcode);
    // An INCR declaring more events than max_batch_events.
    let mut p = vec![0u8];
    p.extend_from_slice(&200_000u32.to_le_bytes());
    p.extend_from_slice(&[4, 0]);
    c.send_raw(&raw_frame(5 + p.len() as u32, 0x10, 44, &p));
    c.read_reply()
        .unwrap()
        .expect_error(ErrorCode::BatchTooLarge);
    assert_eq!(c.call(&Request::Ping).response(), Response::Pong);

    // A frame declaring 4 GiB: FRAME_TOO_LARGE with request id 0, then close.
    let mut c = server.client();
    c.send_raw(&[0xff, 0xff, 0xff, 0xff, 0x02]);
    let r = c.read_reply().unwrap();
    assert_eq!(r.request_id, 0);
    r.expect_error(ErrorCode::FrameTooLarge);
    assert!(c.is_closed());
    // Before HELLO the 4096-byte handshake limit applies.
    let mut c = Client::connect(server.addr);
    c.send_raw(&raw_frame(HANDSHAKE_MAX_FRAME + 1, 0x01, 1, &[]));
    c.read_reply()
        .unwrap()
        .expect_error(ErrorCode::FrameTooLarge);
    assert!(c.is_closed());
    // A length below 5: framing lost.
    let mut c = server.client();
    c.send_raw(&[3, 0, 0, 0, 0x02, 0, 0]);
    let r = c.read_reply().unwrap();
    assert_eq!(r.request_id, 0);
    r.expect_error(ErrorCode::Malformed);
    assert!(c.is_closed());

    // A truncated frame followed by a half-close: a clean close, no answer.
    let mut c = server.client();
    let mut out = BytesMut::new();
    encode_request(5, &Request::Ping, &mut out);
    c.send_raw(&out[..6]);
    c.shutdown_write();
    assert!(c.is_closed());

    // Random frames: every answer is an ERROR (or a clean close), never a hang.
    let mut rng = Rng::new(0x7a11);
    for round in 0..20 {
        let mut c = server.client();
        let n = 1 + (rng.next_u64() % 64) as usize;
        let mut junk = rng.bytes(n);
        if round % 2 == 0 {
            // A plausible length so the payload is parsed, not just the length.
            let len = (n as u32).saturating_sub(4).max(5);
            junk.splice(0..4.min(n), len.to_le_bytes());
        }
        c.send_raw(&junk);
        c.shutdown_write();
        for _ in 0..100 {
            match c.read_reply() {
                None => break,
                Some(r) => assert!(r.error().is_some(), "junk got {:?}", r.response()),
            }
        }
    }

    // The first connection never noticed.
    good.add("steady", 1);
    assert_eq!(good.total("steady"), 2);
    assert_eq!(good.call(&Request::Ping).response(), Response::Pong);
}

#[test]
fn requests_before_hello_and_wrong_versions_are_refused() {
    let env = Env::new();
    let server = env.start(&[]);
    let mut c = Client::connect(server.addr);
    c.call(&Request::Ping)
        .expect_error(ErrorCode::Unauthenticated);
    c.hello(b"").unwrap();
    assert_eq!(c.call(&Request::Ping).response(), Response::Pong);

    // HELLO and requests pipelined in one write: the requests are served after HELLO_OK.
    let mut c = Client::connect(server.addr);
    let mut out = BytesMut::new();
    encode_request(1, &Request::Hello(Hello::new("eager", b"")), &mut out);
    encode_request(2, &Request::Ping, &mut out);
    encode_request(3, &Request::Stats, &mut out);
    c.send_raw(&out);
    assert!(matches!(
        c.read_reply().unwrap().response(),
        Response::HelloOk(_)
    ));
    assert_eq!(c.read_reply().unwrap().response(), Response::Pong);
    assert!(matches!(
        c.read_reply().unwrap().response(),
        Response::StatsOk(_)
    ));

    let mut c = Client::connect(server.addr);
    let mut hello = Hello::new("future-client", b"");
    hello.protocol_version = 2;
    let reply = c.call(&Request::Hello(hello));
    let msg = reply.expect_error(ErrorCode::UnsupportedVersion);
    assert!(
        msg.contains("version 2") && msg.contains("version 1"),
        "{msg}"
    );
    assert!(c.is_closed());
}

#[test]
fn restart_after_sigterm_keeps_every_count() {
    let env = Env::new();
    let mut server = env.start(&["--log-format", "json"]);
    let mut c = server.client();
    for i in 0..50 {
        c.add("restart", i);
    }
    c.incr(
        Some(Producer { id: 7, sequence: 1 }),
        vec![ev(SeriesRef::Key("restart"), 1000)],
    );
    let expected: i64 = (0..50).sum::<i64>() + 1000;
    assert_eq!(c.total("restart"), expected);
    let status = server.terminate().expect("tallyd must exit after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(c.is_closed());
    let log = server.log_text();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(log.contains("connection closed"), "{log}");
    assert!(
        log.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{log}"
    );

    let server = env.start(&[]);
    let mut c = server.client();
    assert_eq!(c.total("restart"), expected);
    // The producer's sequence survived the restart: a retry is not counted again.
    let ok = c.incr(
        Some(Producer { id: 7, sequence: 1 }),
        vec![ev(SeriesRef::Key("restart"), 1000)],
    );
    assert!(ok.duplicate_batch);
    assert_eq!(c.total("restart"), expected);
}

#[test]
fn sigkill_keeps_every_acknowledged_count() {
    let env = Env::new();
    let mut server = env.start(&["--fsync", "always"]);
    let addr = server.addr;
    let acked = Arc::new(AtomicI64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.hello(b"").unwrap();
                let key = format!("killed{{w=w{w}}}");
                let mut mine = 0;
                // Bounded: stops at the first failure (the kill) or after 5000 batches.
                for _ in 0..5000 {
                    let id = c.send(&Request::Incr(Incr {
                        producer: None,
                        events: vec![ev(SeriesRef::Key(&key), 1)],
                        per_event: false,
                    }));
                    match c.read_reply_or_close() {
                        Some(r) if r.request_id == id && r.error().is_none() => {
                            mine += 1;
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
                mine
            })
        })
        .collect();
    // Let them write for a while, then kill -9 mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::SeqCst) < 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    let per_writer: Vec<i64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(per_writer.iter().sum::<i64>() >= 200);

    let server = env.start(&[]);
    let mut c = server.client();
    for (w, mine) in per_writer.iter().enumerate() {
        let total = c.total(&format!("killed{{w=w{w}}}"));
        // Every acknowledged increment survived; at most the one in flight was
        // applied without its acknowledgement arriving.
        assert!(
            total == *mine || total == mine + 1,
            "writer {w}: {total} stored, {mine} acknowledged"
        );
    }
}

#[test]
fn each_role_is_refused_what_it_may_not_do() {
    let env = Env::new();
    let hash = |t: &str| {
        let out = std::process::Command::new(BIN)
            .arg("hash-token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(t.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let config = format!(
        "[[auth.tokens]]\nname = \"reader\"\nrole = \"read\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"writer\"\nrole = \"write\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"boss\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        hash("r-secret"),
        hash("w-secret\n"), // hash-token strips one trailing newline
        hash("a-secret"),
    );
    let server = env.start_with_config(&config);
    let connect = |token: &[u8]| {
        let mut c = Client::connect(server.addr);
        let role = c.hello(token).map(|ok| ok.role);
        (c, role)
    };

    let (mut c, role) = connect(b"");
    assert!(role.unwrap_err().is(ErrorCode::Unauthenticated));
    assert!(c.is_closed());
    let (mut c, role) = connect(b"nope");
    assert!(role.unwrap_err().is(ErrorCode::Unauthenticated));
    assert!(c.is_closed());

    let incr = |c: &mut Client| {
        c.call(&Request::Incr(Incr {
            producer: None,
            events: vec![ev(SeriesRef::Key("roles"), 1)],
            per_event: false,
        }))
    };
    let (mut r, role) = connect(b"r-secret");
    assert_eq!(role.unwrap(), Role::Read);
    let msg = incr(&mut r).expect_error(ErrorCode::Forbidden);
    assert!(msg.contains("write"), "{msg}");
    r.call(&Request::Flush).expect_error(ErrorCode::Forbidden);
    assert_eq!(r.call(&Request::Ping).response(), Response::Pong);
    assert_eq!(r.total("roles"), 0);

    let (mut w, role) = connect(b"w-secret");
    assert_eq!(role.unwrap(), Role::Write);
    assert!(incr(&mut w).error().is_none());
    w.call(&Request::Compact).expect_error(ErrorCode::Forbidden);
    w.call(&Request::Snapshot(Snapshot {
        target_dir: "/tmp/x",
    }))
    .expect_error(ErrorCode::Forbidden);

    let (mut a, role) = connect(b"a-secret");
    assert_eq!(role.unwrap(), Role::Admin);
    assert!(incr(&mut a).error().is_none());
    assert!(matches!(
        a.call(&Request::Flush).response(),
        Response::AdminOk(_)
    ));
    assert_eq!(r.total("roles"), 2);
}

#[test]
fn producer_retry_is_counted_once() {
    let env = Env::new();
    let server = env.start(&[]);
    let mut c = server.client();
    let batch = |c: &mut Client, seq| {
        c.incr(
            Some(Producer {
                id: 0xfeed,
                sequence: seq,
            }),
            vec![
                ev(SeriesRef::Key("retried"), 5),
                ev(SeriesRef::Key("retried"), 1),
            ],
        )
    };
    let first = batch(&mut c, 1);
    assert_eq!((first.applied, first.duplicate_batch), (2, false));
    // A retry repeats the original counts and counts nothing.
    let retry = batch(&mut c, 1);
    assert_eq!(
        (retry.applied, retry.duplicates, retry.duplicate_batch),
        (2, 0, true)
    );
    // The retry may also come on another connection (a reconnecting client).
    let mut other = server.client();
    assert!(batch(&mut other, 1).duplicate_batch);
    assert!(!batch(&mut other, 3).duplicate_batch);
    // Sequence 2 was never applied: it is counted, even after 3.
    assert!(!batch(&mut other, 2).duplicate_batch);
    let old = batch(&mut other, 1);
    assert_eq!((old.applied, old.duplicate_batch), (2, true));
    assert_eq!(c.total("retried"), 18);
}

#[test]
fn connection_limit_and_idle_timeout() {
    let env = Env::new();
    // No slots kept for the admin role: the third connection is refused at once.
    let server = env.start_with_config(
        "[limits]\nmax_connections = 2\nadmin_reserved_connections = 0\nidle_timeout = \"1s\"\n",
    );
    let mut a = server.client();
    let _b = server.client();
    let mut c = Client::connect(server.addr);
    let r = c.read_reply().unwrap();
    assert_eq!(r.request_id, 0);
    r.expect_error(ErrorCode::Busy);
    assert!(c.is_closed());
    assert_eq!(a.call(&Request::Ping).response(), Response::Pong);
    // Both go idle and are closed after about a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(a.is_closed());
    let mut d = server.client();
    assert_eq!(d.call(&Request::Ping).response(), Response::Pong);
}

#[test]
fn bad_config_fails_before_anything_is_opened() {
    let env = Env::new();
    let cases = [
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        ("[retention]\nminute = \"7x\"\n", "retention.minute"),
        ("fsync = \"sometimes\"\n", "fsync"),
        ("listen = \"nowhere\"\n", "listen"),
    ];
    for (text, key) in cases {
        let args = env.config(text);
        let out = std::process::Command::new(BIN)
            .args(&args)
            .arg("--data-dir")
            .arg(env.data())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
        assert!(
            !env.data().exists(),
            "the data directory must not be created"
        );
    }
    // The default config printed by the binary is valid and loads.
    let out = std::process::Command::new(BIN)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:7411\""));
    let args = env.config(&text);
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn starts_without_arguments_in_a_fresh_directory() {
    let env = Env::new();
    let cwd = env.dir.path().join("fresh");
    std::fs::create_dir(&cwd).unwrap();
    // No arguments; only the port is moved off 7411 (through the environment) so the
    // test cannot collide with a server already running on this machine.
    let server = Tallyd::start_with(Path::new(BIN), env.dir.path(), &[], |cmd| {
        cmd.current_dir(&cwd).env("TALLYD_LISTEN", "127.0.0.1:0");
    });
    let mut c = server.client();
    c.add("fresh", 3);
    assert_eq!(c.total("fresh"), 3);
    assert!(cwd.join("tally-data").is_dir());
}

#[test]
fn sigterm_answers_requests_already_read_then_exits_zero() {
    let env = Env::new();
    let mut server = env.start(&[]);
    let mut c = server.client();
    let mut out = BytesMut::new();
    for _ in 0..300 {
        let id = c.next_id();
        let req = Request::Incr(Incr {
            producer: None,
            events: vec![ev(SeriesRef::Key("drained"), 1)],
            per_event: false,
        });
        encode_request(id, &req, &mut out);
    }
    c.send_raw(&out);
    server.signal("TERM");
    let mut acked = 0;
    while let Some(r) = c.read_reply_or_close() {
        match r.response() {
            Response::IncrOk(ok) => acked += i64::from(ok.applied),
            other => panic!("{other:?}"),
        }
    }
    let status = server.wait_timeout(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    let server = env.start(&[]);
    let mut c = server.client();
    // Exactly what was acknowledged: every request read before the signal was answered.
    assert_eq!(c.total("drained"), acked);
}

#[test]
fn a_second_signal_exits_at_once() {
    let env = Env::new();
    let mut server = env.start_with_config("[limits]\nidle_timeout = \"60s\"\n");
    let mut c = server.client();
    c.add("big", 1);
    // Large answers that the client never reads keep the connection busy writing.
    let now = now_ms();
    let mut out = BytesMut::new();
    for _ in 0..16 {
        let id = c.next_id();
        let req = Request::Range(RangeQuery {
            selector: Selector::Exact("big"),
            from_ms: now - 99_000 * 60_000,
            to_ms: now,
            step: Step::Millis(60_000),
            function: Function::Sum,
        });
        encode_request(id, &req, &mut out);
    }
    c.send_raw(&out);
    std::thread::sleep(Duration::from_millis(1000));
    server.signal("TERM");
    assert!(
        server.wait_timeout(Duration::from_millis(500)).is_none(),
        "the first signal waits for the stuck connection"
    );
    server.signal("TERM");
    let status = server.wait_timeout(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(130));
    drop(c);
}
