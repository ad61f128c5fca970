//! The HTTP side door against a real `tallyd`: health, readiness, `/metrics`, and the
//! Prometheus-compatible API, numbers checked exactly against what was written over the
//! protocol (a model computes each expected window sum).
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{get, post_form, Server};
use tallydb_e2e::{now_ms, Client};
use tallydb_protocol::{ErrorCode, Event, SeriesRef};

const MIN: i64 = 60_000;

/// What the test wrote: (series key, labels, delta, timestamp ms).
struct Written {
    base: i64,
    events: Vec<(&'static str, i64, i64)>,
}

impl Written {
    /// Sum of deltas of the series passing `keep` with timestamps in [end - w, end).
    fn window(&self, end: i64, w: i64, keep: impl Fn(&str) -> bool) -> i64 {
        self.events
            .iter()
            .filter(|(k, _, ts)| keep(k) && *ts >= end - w && *ts < end)
            .map(|(_, d, _)| d)
            .sum()
    }
}

fn write_fixture(server: &Server) -> Written {
    let now = now_ms();
    let base = now - now.rem_euclid(MIN) - 30 * MIN;
    let events: Vec<(&'static str, i64, i64)> = vec![
        ("hits{page=home}", 3, base + 10_000),
        ("hits{page=home}", 4, base + MIN + 1),
        ("hits{page=home}", 5, base + 5 * MIN + 1_000),
        ("hits{page=about}", 10, base + 30_000),
        ("hits{page=about}", 1, base + 9 * MIN + 59_999),
        ("com.example.music{country=US}", 7, base + 2 * MIN),
    ];
    let mut c = Client::connect(server.addr);
    c.hello(b"").unwrap();
    for (key, delta, ts) in &events {
        c.incr(
            None,
            vec![Event {
                series: SeriesRef::Key(key),
                delta: *delta,
                timestamp_ms: Some(*ts),
                event_id: None,
            }],
        );
    }
    // One refused increment, for the error counter.
    let err = c
        .try_incr(
            None,
            vec![Event {
                series: SeriesRef::Key("hits{page=home}"),
                delta: 1,
                timestamp_ms: Some(now + 3_600_000),
                event_id: None,
            }],
        )
        .unwrap_err();
    assert!(err.is(ErrorCode::TooFarInFuture), "{err:?}");
    Written { base, events }
}

fn secs(ms: i64) -> String {
    format!("{}", ms / 1000)
}

fn success_data(a: &support::Answer) -> Value {
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["status"], "success", "{}", a.body);
    j["data"].clone()
}

fn assert_error(a: &support::Answer, status: u16, kind: &str, needle: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    let j = a.json();
    assert_eq!(j["status"], "error", "{}", a.body);
    assert_eq!(j["errorType"], kind, "{}", a.body);
    let msg = j["error"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[test]
fn health_metrics_and_the_prometheus_api_answer_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let w = write_fixture(&server);
    let base = w.base;

    // Health and readiness.
    let a = get(&server.url("/-/healthy"), &[], &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "TallyDB is Healthy.\n"));
    let a = get(&server.url("/-/ready"), &[], &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "TallyDB is Ready.\n"));

    // /metrics: the text format with the handler's figures.
    let a = get(&server.url("/metrics"), &[], &[]);
    assert_eq!(a.status, 200);
    assert!(
        a.content_type.starts_with("text/plain; version=0.0.4"),
        "{a:?}"
    );
    let m = &a.body;
    for line in [
        "# TYPE tallyd_request_duration_seconds histogram",
        "tallyd_request_duration_seconds_count{command=\"INCR\"} 7",
        "tallyd_request_duration_seconds_bucket{command=\"INCR\",le=\"+Inf\"} 7",
        "tallyd_increments_total 6",
        "tallyd_request_errors_total{code=\"TOO_FAR_IN_FUTURE\"} 1",
        "tallyd_request_errors_total{code=\"TOO_OLD\"} 0",
        "tallyd_connections_max 1024",
        "tallyd_segments{tier=\"minute\"} ",
        "tallyd_memtable_bytes ",
        "tallyd_wal_bytes ",
        "tallyd_disk_free_bytes ",
        "tallyd_flushes_total 0",
        "tallyd_flush_seconds_total 0",
        "# TYPE tallyd_compaction_seconds_total counter",
    ] {
        assert!(m.contains(line), "/metrics lacks {line:?}:\n{m}");
    }

    // query_range: sum(increase(hits[5m])) at a 1m step, each point against the model.
    let (start, end) = (base + 5 * MIN, base + 12 * MIN);
    let a = get(
        &server.url("/api/v1/query_range"),
        &[
            ("query", "sum(increase(hits[5m]))"),
            ("start", &secs(start)),
            ("end", &secs(end)),
            ("step", "60"),
        ],
        &[],
    );
    let data = success_data(&a);
    assert_eq!(data["resultType"], "matrix");
    let expected: Vec<Value> = (0..=7)
        .map(|i| {
            let t = start + i * MIN;
            json!([
                t / 1000,
                w.window(t, 5 * MIN, |k| k.starts_with("hits")).to_string()
            ])
        })
        .collect();
    assert_eq!(
        data["result"],
        json!([{"metric": {}, "values": expected}]),
        "{}",
        a.body
    );
    // Spot-check the model itself: [base, base+5m) holds 3 + 4 + 10.
    assert_eq!(expected[0][1], "17");

    // The same via POST form, and with a 1m step written as a duration.
    let b = post_form(
        &server.url("/api/v1/query_range"),
        &[
            ("query", "sum(increase(hits[5m]))"),
            ("start", &secs(start)),
            ("end", &secs(end)),
            ("step", "1m"),
        ],
    );
    assert_eq!(success_data(&b), data);

    // A bare selector: increments per step, with its name and labels.
    let a = get(
        &server.url("/api/v1/query_range"),
        &[
            ("query", "hits{page=\"home\"}"),
            ("start", &secs(base + MIN)),
            ("end", &secs(base + 3 * MIN)),
            ("step", "60"),
        ],
        &[],
    );
    assert_eq!(
        success_data(&a)["result"],
        json!([{"metric": {"__name__": "hits", "page": "home"}, "values": [
            [(base + MIN) / 1000, "3"], [(base + 2 * MIN) / 1000, "4"], [(base + 3 * MIN) / 1000, "0"]
        ]}])
    );

    // Instant queries at base + 10m.
    let t = base + 10 * MIN;
    let instant = |q: &str| -> Value {
        let a = get(
            &server.url("/api/v1/query"),
            &[("query", q), ("time", &secs(t))],
            &[],
        );
        success_data(&a)
    };
    let d = instant("sum by (page) (increase(hits[10m]))");
    assert_eq!(d["resultType"], "vector");
    assert_eq!(
        d["result"],
        json!([
            {"metric": {"page": "about"}, "value": [t / 1000, "11"]},
            {"metric": {"page": "home"}, "value": [t / 1000, "12"]},
        ])
    );
    assert_eq!(
        instant("topk(1, increase(hits[10m]))")["result"],
        json!([{"metric": {"page": "home"}, "value": [t / 1000, "12"]}])
    );
    assert_eq!(
        instant("increase(hits{page=~\"ho.*\"}[10m]) * 60 - 2")["result"],
        json!([{"metric": {"page": "home"}, "value": [t / 1000, "718"]}])
    );
    // Regexes are fully anchored.
    assert_eq!(
        instant("increase(hits{page=~\"ho\"}[10m])")["result"],
        json!([])
    );
    assert_eq!(
        instant("increase(hits{page!~\"home\"}[10m])")["result"],
        json!([{"metric": {"page": "about"}, "value": [t / 1000, "11"]}])
    );
    assert_eq!(
        instant("sum(increase({__name__=\"com.example.music\"}[10m]))")["result"],
        json!([{"metric": {}, "value": [t / 1000, "7"]}])
    );
    let rate = instant("rate(hits{page=\"home\"}[5m])");
    let v: f64 = rate["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((v - 5.0 / 300.0).abs() < 1e-12, "{rate}");
    assert_eq!(
        instant("max(increase(hits[10m])) / 2")["result"],
        json!([{"metric": {}, "value": [t / 1000, "6"]}])
    );
    assert_eq!(
        instant("count(increase(hits[10m]))")["result"],
        json!([{"metric": {}, "value": [t / 1000, "2"]}])
    );
    let d = instant("1 + 1");
    assert_eq!(
        d,
        json!({"resultType": "scalar", "result": [t / 1000, "2"]})
    );

    // Errors, in Prometheus' shapes.
    let q = |params: &[(&str, &str)]| get(&server.url("/api/v1/query_range"), params, &[]);
    let (s0, s1) = (secs(start), secs(end));
    assert_error(
        &q(&[
            ("query", "sum(("),
            ("start", &s0),
            ("end", &s1),
            ("step", "60"),
        ]),
        400,
        "bad_data",
        "invalid parameter \"query\"",
    );
    assert_error(
        &q(&[
            ("query", "nosuchfn(hits)"),
            ("start", &s0),
            ("end", &s1),
            ("step", "60"),
        ]),
        400,
        "bad_data",
        "nosuchfn",
    );
    assert_error(
        &q(&[
            ("query", "histogram_quantile(0.9, hits)"),
            ("start", &s0),
            ("end", &s1),
            ("step", "60"),
        ]),
        400,
        "bad_data",
        "not supported by TallyDB",
    );
    assert_error(
        &q(&[
            ("query", "hits"),
            ("start", "yesterday"),
            ("end", &s1),
            ("step", "60"),
        ]),
        400,
        "bad_data",
        "invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp",
    );
    assert_error(
        &q(&[
            ("query", "hits"),
            ("start", &s1),
            ("end", &s0),
            ("step", "60"),
        ]),
        400,
        "bad_data",
        "end timestamp must not be before start time",
    );
    assert_error(
        &q(&[
            ("query", "hits"),
            ("start", &s0),
            ("end", &s1),
            ("step", "0"),
        ]),
        400,
        "bad_data",
        "zero or negative query resolution step",
    );
    assert_error(
        &q(&[
            ("query", "hits"),
            ("start", "0"),
            ("end", &s1),
            ("step", "60"),
        ]),
        400,
        "bad_data",
        "exceeded maximum resolution of 11,000 points",
    );
    assert_error(
        &get(
            &server.url("/api/v1/query"),
            &[("query", "hits / hits")],
            &[],
        ),
        400,
        "bad_data",
        "two vectors",
    );
    assert_error(
        &get(
            &server.url("/api/v1/query"),
            &[("query", "increase(hits{Bad-Label=\"x\"}[1m])")],
            &[],
        ),
        400,
        "bad_data",
        "",
    );
    assert_error(
        &get(&server.url("/api/v1/nope"), &[], &[]),
        404,
        "not_found",
        "no such endpoint",
    );

    // Labels, label values, series, metadata, buildinfo.
    let a = get(&server.url("/api/v1/labels"), &[], &[]);
    assert_eq!(success_data(&a), json!(["__name__", "country", "page"]));
    let a = get(&server.url("/api/v1/labels"), &[("match[]", "hits")], &[]);
    assert_eq!(success_data(&a), json!(["__name__", "page"]));
    let a = get(&server.url("/api/v1/label/page/values"), &[], &[]);
    assert_eq!(success_data(&a), json!(["about", "home"]));
    let a = get(&server.url("/api/v1/label/__name__/values"), &[], &[]);
    assert_eq!(success_data(&a), json!(["com.example.music", "hits"]));
    let a = get(
        &server.url("/api/v1/label/page/values"),
        &[("match[]", "hits{page!=\"about\"}")],
        &[],
    );
    assert_eq!(success_data(&a), json!(["home"]));
    let a = get(
        &server.url("/api/v1/series"),
        &[
            ("match[]", "hits{page=~\"a.*\"}"),
            ("match[]", "{__name__=\"com.example.music\"}"),
            ("start", &s0),
        ],
        &[],
    );
    assert_eq!(
        success_data(&a),
        json!([
            {"__name__": "com.example.music", "country": "US"},
            {"__name__": "hits", "page": "about"},
        ])
    );
    let a = post_form(&server.url("/api/v1/series"), &[("match[]", "hits")]);
    assert_eq!(success_data(&a).as_array().unwrap().len(), 2);
    assert_error(
        &get(&server.url("/api/v1/series"), &[], &[]),
        400,
        "bad_data",
        "no match[] parameter provided",
    );
    assert_error(
        &get(
            &server.url("/api/v1/series"),
            &[("match[]", "sum(hits)")],
            &[],
        ),
        400,
        "bad_data",
        "not a series selector",
    );
    let a = get(&server.url("/api/v1/metadata"), &[], &[]);
    let d = success_data(&a);
    assert_eq!(d["hits"][0]["type"], "counter");
    assert_eq!(d.as_object().unwrap().len(), 2);
    let a = get(&server.url("/api/v1/status/buildinfo"), &[], &[]);
    assert_eq!(success_data(&a)["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn tokens_guard_http_like_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    // sha256("reader-token")
    let digest = {
        let out = std::process::Command::new(support::BIN)
            .arg("hash-token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"reader-token")?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let config = dir.path().join("tallyd.toml");
    std::fs::write(
        &config,
        format!("[[auth.tokens]]\nname = \"grafana\"\nrole = \"read\"\nsha256 = \"{digest}\"\n"),
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let url = server.url("/api/v1/query");
    let params = [("query", "1")];

    let a = get(&url, &params, &[]);
    assert_error(&a, 401, "unauthorized", "this server requires a token");
    let a = get(&url, &params, &[("Authorization", "Bearer wrong")]);
    assert_error(&a, 401, "unauthorized", "the token was refused");
    let a = get(&url, &params, &[("Authorization", "Token x")]);
    assert_error(&a, 401, "unauthorized", "Authorization header");
    let a = get(&server.url("/metrics"), &[], &[]);
    assert_eq!(a.status, 401);

    let a = get(&url, &params, &[("Authorization", "Bearer reader-token")]);
    assert_eq!(success_data(&a)["result"][1], "1");
    // Basic: any user, the token as password ("grafana:reader-token").
    let a = get(
        &url,
        &params,
        &[("Authorization", "Basic Z3JhZmFuYTpyZWFkZXItdG9rZW4=")],
    );
    assert_eq!(success_data(&a)["result"][1], "1");
    let a = get(
        &server.url("/metrics"),
        &[],
        &[("Authorization", "Bearer reader-token")],
    );
    assert_eq!(a.status, 200);
    // Health needs no token.
    assert_eq!(get(&server.url("/-/ready"), &[], &[]).status, 200);
}

#[test]
fn an_empty_http_listen_turns_http_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["config", "check", "--http-listen", "", "--data-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new(support::BIN)
        .args(["config", "check", "--http-listen", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config key `http_listen`"), "{err}");
}
