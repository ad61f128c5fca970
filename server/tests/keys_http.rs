//! Keys and selectors through the HTTP side door: a UTF-8 label value counted over the
//! protocol is found by the Prometheus API and by `/api/v1/tally/total`, which reads
//! selectors and times as `tally` does (quoted values, `by (…)`, `__child__`, unix
//! seconds), and refuses reserved label names with the rule.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::{get, Server};
use tallydb_e2e::{now_ms, Client};
use tallydb_protocol::{Event, SeriesRef};

const MIN: i64 = 60_000;

fn data(a: &support::Answer) -> Value {
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["status"], "success", "{}", a.body);
    j["data"].clone()
}

#[test]
fn utf8_values_grouped_totals_and_path_segments_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now = now_ms();
    let base = now - now.rem_euclid(MIN) - 10 * MIN;
    let mut c = Client::connect(server.addr);
    c.hello(b"").unwrap();
    for (key, delta) in [
        (r#"hits{page="/search?q=café"}"#, 3),
        (r#"hits{page="/search?q=café",lang="日本語"}"#, 4),
        ("hits{page=/home}", 1),
        ("com.example.music.jazz", 2),
        ("com.example.video", 5),
    ] {
        c.incr(
            None,
            vec![Event {
                series: SeriesRef::Key(key),
                delta,
                timestamp_ms: Some(base),
                event_id: None,
            }],
        );
    }
    let from = ((base - MIN) / 1000).to_string();
    let to = ((now + MIN) / 1000).to_string();
    let total = |sel: &str| {
        get(
            &server.url("/api/v1/tally/total"),
            &[("selector", sel), ("from", &from), ("to", &to)],
            &[],
        )
    };
    let d = data(&total(r#"hits{page="/search?q=café"}"#));
    assert_eq!(d["groups"][0]["sum"], 7, "{d}");
    let d = data(&total(r#"exact:hits{page="/search?q=caf\u00e9"}"#));
    assert_eq!(d["groups"][0]["sum"], 3, "{d}");
    let d = data(&total("hits by (page)"));
    let groups: Vec<(String, i64)> = d["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["labels"]["page"].as_str().unwrap().to_string(),
                g["sum"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![("/home".to_string(), 1), ("/search?q=café".to_string(), 7)]
    );
    let d = data(&total("com.example.* by (__child__)"));
    assert_eq!(d["groups"][0]["labels"]["__child__"], "music", "{d}");
    assert_eq!(d["groups"][1]["sum"], 5, "{d}");
    // Reserved names are refused with the rule.
    let a = total("hits{__name__=x}");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("__name__"), "{}", a.body);
    let a = total("hits{__tenant=x}");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("reserved"), "{}", a.body);

    // The Prometheus API sees the same series with the value unquoted.
    let a = get(
        &server.url("/api/v1/series"),
        &[("match[]", r#"hits{page="/search?q=café"}"#)],
        &[],
    );
    let d = data(&a);
    let pages: Vec<&str> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["page"].as_str().unwrap())
        .collect();
    assert_eq!(pages, vec!["/search?q=café", "/search?q=café"], "{d}");
    let a = get(&server.url("/api/v1/label/lang/values"), &[], &[]);
    assert_eq!(data(&a), serde_json::json!(["日本語"]));
}
