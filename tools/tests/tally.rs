//! End-to-end tests of the `tally` CLI against a real `tallyd` on a temporary directory.
//!
//! `tallyd` is found through `TALLYD_BIN`, or next to this test binary's directory
//! (`target/<profile>/tallyd`); `cargo test --workspace` builds it. When it is missing
//! each test fails with a message saying how to build it.
//!
//! The servers keep every tier forever (a config file), so the tests write events at
//! fixed times in 2024 and the snapshots (tests/snapshots/) hold fixed timestamps; the
//! only now-dependent field, `closed until`, is redacted.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use sha2::{Digest, Sha256};
use tallydb_e2e::{tallyd_bin_or_fail, Tallyd};
use tempfile::TempDir;

/// 2024-03-01T10:00:00Z.
const BASE: i64 = 1_709_287_200_000;
const FROM: &str = "2024-03-01T09:58:00Z";
const TO: &str = "2024-03-01T10:04:00Z";

struct Env {
    dir: TempDir,
    server: Tallyd,
}

const FOREVER: &str = "[retention]\nminute = \"forever\"\nhour = \"forever\"\nday = \"forever\"\n";

impl Env {
    /// Fails the test (saying how to build it) when the binary is not built.
    fn new(test: &str) -> Env {
        Self::with_config(test, "")
    }

    fn with_config(test: &str, extra: &str) -> Env {
        let bin = tallyd_bin_or_fail(test);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("tallyd.toml");
        std::fs::write(&cfg, format!("{FOREVER}{extra}")).unwrap();
        let data = dir.path().join("data");
        let server = Tallyd::start(
            &bin,
            dir.path(),
            &data,
            &["--config", cfg.to_str().unwrap()],
        );
        Env { dir, server }
    }

    fn tally(&self) -> Command {
        let mut c = Command::cargo_bin("tally").unwrap();
        c.env("TALLY_SERVER", self.server.addr.to_string())
            .env_remove("TALLY_TOKEN")
            .timeout(std::time::Duration::from_secs(60));
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `tally ARGS`, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self
            .tally()
            .args(args)
            .assert()
            .success()
            .get_output()
            .clone();
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Replaces the now-dependent `closed until` values.
fn redact(s: &str) -> String {
    s.lines()
        .map(|l| {
            if let Some(i) = l.find("closed until: ") {
                let rest = &l[i + "closed until: ".len()..];
                let after = rest.find(' ').map_or("", |j| &rest[j..]);
                format!("{}closed until: [now]{after}", &l[..i])
            } else if let Some(i) = l.find("\"closed_until_ms\": ") {
                let comma = if l.trim_end().ends_with(',') { "," } else { "" };
                format!("{}\"closed_until_ms\": \"[now]\"{comma}", &l[..i])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn at(offset_s: i64) -> String {
    (BASE + offset_s * 1000).to_string()
}

/// Clicks on three ads in two countries between 10:00 and 10:02.
fn seed(env: &Env) {
    for (key, delta, off) in [
        ("clicks{ad=a1,country=US}", 5, 0),
        ("clicks{ad=a1,country=US}", 2, 30),
        ("clicks{ad=a2,country=US}", 6, 60),
        ("clicks{ad=a3,country=FR}", 1, 90),
        ("clicks{ad=a1,country=FR}", 4, 150),
    ] {
        env.ok(&["incr", key, &delta.to_string(), "--at", &at(off)]);
    }
}

#[test]
fn incr_then_total_in_every_format() {
    let env = Env::new("incr_then_total_in_every_format");
    seed(&env);
    let span = ["--from", FROM, "--to", TO];
    let total = |sel: &str, fmt: &str| {
        let mut args = vec!["total", sel];
        args.extend(span);
        args.extend(["--format", fmt]);
        redact(&env.ok(&args))
    };
    insta::assert_snapshot!("total_table", total("clicks", "table"));
    insta::assert_snapshot!("total_json", total("clicks{country=US,ad=a1}", "json"));
    insta::assert_snapshot!("total_csv", total("metric:clicks{country=US}", "csv"));
    // Matchers with != and the exact form agree with hand-computed sums.
    assert!(total("clicks{country!=US}", "csv")
        .ends_with("\n5,2,2024-03-01T09:58:00Z,2024-03-01T10:04:00Z,1709287080000,1709287440000"));
    assert!(total("exact:clicks{ad=a2,country=US}", "jsonl").contains("\"sum\":6"));
}

#[test]
fn range_top_series_in_every_format() {
    let env = Env::new("range_top_series_in_every_format");
    seed(&env);
    let q = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--from", FROM, "--to", TO]);
        redact(&env.ok(&v))
    };
    insta::assert_snapshot!(
        "range_table",
        q(&["range", "clicks by (country)", "--step", "1m"])
    );
    insta::assert_snapshot!(
        "range_csv",
        q(&["range", "clicks", "--step", "1m", "--fn", "count", "--format", "csv"])
    );
    insta::assert_snapshot!(
        "range_json",
        q(&[
            "range",
            "clicks{ad=a1,country=US}",
            "--step",
            "5m",
            "--fn",
            "avg",
            "--format",
            "json"
        ])
    );
    insta::assert_snapshot!("top_table", q(&["top", "clicks", "-n", "2"]));
    insta::assert_snapshot!(
        "top_by_csv",
        q(&["top", "clicks", "--by", "ad", "--format", "csv"])
    );
    insta::assert_snapshot!(
        "top_jsonl",
        q(&["top", "clicks{country!=FR}", "--format", "jsonl"])
    );
    insta::assert_snapshot!("series_table", redact(&env.ok(&["series", "clicks"])));
    insta::assert_snapshot!(
        "series_json",
        redact(&env.ok(&["series", "clicks{ad!=a1}", "--format", "json"]))
    );
    let chart = q(&[
        "range", "clicks", "--step", "1m", "--chart", "--width", "20",
    ]);
    insta::assert_snapshot!("range_chart", chart);
}

#[test]
fn chart_marks_open_buckets_and_stats_ping_answer() {
    let env = Env::new("chart_marks_open_buckets_and_stats_ping_answer");
    env.ok(&["incr", "live{page=/}", "3"]);
    let chart = env.ok(&[
        "range",
        "live{page=/}",
        "--from",
        "-3m",
        "--step",
        "1m",
        "--chart",
    ]);
    assert!(chart.lines().any(|l| l.ends_with(" 3 ~")), "{chart}");
    assert!(chart.contains("~ bucket still open"), "{chart}");
    let table = env.ok(&["range", "live{page=/}", "--from", "-3m", "--step", "1m"]);
    assert!(
        table.lines().any(|l| l.trim_end().ends_with("3  *")),
        "{table}"
    );
    let stats = env.ok(&["stats", "--format", "csv"]);
    assert!(
        stats.starts_with("name,value\n") && stats.contains("\nseries,1\n"),
        "{stats}"
    );
    let ping = env.ok(&["ping", "--format", "json"]);
    assert!(
        ping.contains("\"role\": \"admin\"") && ping.contains("tallyd"),
        "{ping}"
    );
}

#[test]
fn incr_with_an_event_id_counts_once() {
    let env = Env::new("incr_with_an_event_id_counts_once");
    env.ok(&["incr", "orders{shop=s1}", "--id", "order-1", "--at", &at(0)]);
    env.tally()
        .args([
            "incr",
            "orders{shop=s1}",
            "--id",
            "order-1",
            "--at",
            &at(0),
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .stdout("series,delta,applied,duplicates\norders{shop=s1},1,0,1\n")
        .stderr(predicate::str::contains("already seen"));
    env.ok(&["incr", "orders{shop=s1}", "-3", "--at", &at(1)]);
    let t = env.ok(&[
        "total",
        "orders{shop=s1}",
        "--from",
        FROM,
        "--to",
        TO,
        "--format",
        "csv",
    ]);
    assert!(t.contains("\n-2,2,"), "{t}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn summary(stdout: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["summary"][0].clone()
}

#[test]
fn ingest_csv_and_ndjson_exact_totals_and_duplicates() {
    let env = Env::new("ingest_csv_and_ndjson_exact_totals_and_duplicates");
    // 25 000 CSV events over 100 series (3 batches of 10 000), the format of
    // `tally-admin export` plus an event_id column; 500 repeated ids.
    let mut csv = String::from("timestamp_ms,series,delta,event_id\n");
    let mut expected = 0i64;
    for i in 0..25_000i64 {
        let id = if i >= 24_500 { i - 24_500 } else { i };
        csv.push_str(&format!(
            "{},\"hits{{page=p{},region=r{}}}\",{},e{id}\n",
            BASE + (i % 120) * 1000,
            i % 50,
            i % 2,
            i % 7 + 1
        ));
        if i < 24_500 {
            expected += i % 7 + 1;
        }
    }
    let file = env.path("events.csv");
    write(&file, &csv);
    let out = env.ok(&[
        "ingest",
        file.to_str().unwrap(),
        "--format",
        "csv",
        "--summary",
        "json",
    ]);
    let s = summary(&out);
    assert_eq!(s["events"], 25_000, "{out}");
    assert_eq!(s["applied"], 24_500, "{out}");
    assert_eq!(s["duplicates"], 500, "{out}");
    assert_eq!(s["batches"], 3, "{out}");
    let total = env.ok(&[
        "total", "hits", "--from", FROM, "--to", TO, "--format", "jsonl",
    ]);
    assert!(
        total.contains(&format!("\"sum\":{expected}")),
        "{total} vs {expected}"
    );

    // NDJSON on stdin: both timestamp spellings, default delta, ids.
    let nd = format!(
        "{{\"series\":\"likes{{post=p1}}\",\"delta\":2,\"timestamp_ms\":{BASE},\"id\":\"l1\"}}\n\
         \n\
         {{\"series\":\"likes{{post=p1}}\",\"ts\":\"2024-03-01T10:01:00Z\"}}\n\
         {{\"series\":\"likes{{post=p2}}\",\"delta\":5,\"ts\":{BASE},\"id\":\"l1\"}}\n\
         {{\"series\":\"likes{{post=p1}}\",\"delta\":2,\"timestamp_ms\":{BASE},\"id\":\"l1\"}}\n"
    );
    let out = env
        .tally()
        .args(["ingest", "-", "--format", "ndjson", "--summary", "csv"])
        .write_stdin(nd)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with("events,applied,duplicates,batches,skipped_lines,"),
        "{out}"
    );
    assert!(
        out.lines().nth(1).unwrap().starts_with("4,2,2,1,0,"),
        "{out}"
    );
    let total = env.ok(&[
        "total", "likes", "--from", FROM, "--to", TO, "--format", "csv",
    ]);
    assert!(total.contains("\n3,2,"), "{total}");
}

#[test]
fn ingest_reads_what_tally_admin_export_writes() {
    let env = Env::new("ingest_reads_what_tally_admin_export_writes");
    // The documented export output (docs/OPERATIONS.md), at fixed 2024 times.
    let text = format!(
        "timestamp_ms,series,delta\n{},\"hits{{page=p0000001,region=r1}}\",24711\n{},\"hits{{page=p0000001,region=r1}}\",23687\n",
        BASE,
        BASE + 3_600_000
    );
    let file = env.path("export.csv");
    write(&file, &text);
    env.ok(&["ingest", file.to_str().unwrap()]);
    let t = env.ok(&[
        "total",
        "hits{region=r1,page=p0000001}",
        "--from",
        "2024-03-01T10:00Z",
        "--to",
        "2024-03-01T12:00Z",
        "--format",
        "csv",
    ]);
    assert!(t.contains("\n48398,2,"), "{t}");
}

#[test]
fn ingest_stops_at_a_bad_line_or_skips_it() {
    let env = Env::new("ingest_stops_at_a_bad_line_or_skips_it");
    let file = env.path("bad.csv");
    write(
        &file,
        &format!("timestamp_ms,series,delta\n{BASE},a,1\n{BASE},a,2\n{BASE},a,many\n{BASE},a,4\n"),
    );
    let f = file.to_str().unwrap();
    env.tally()
        .args(["ingest", f, "--summary", "csv"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\n2,2,0,1,0,"))
        .stderr(predicate::str::contains(
            "line 4: delta \"many\" is not an integer",
        ))
        .stderr(predicate::str::contains("tail -n +4"));
    let t = env.ok(&["total", "a", "--from", FROM, "--to", TO, "--format", "csv"]);
    assert!(
        t.contains("\n3,2,"),
        "nothing after the bad line is sent: {t}"
    );
    env.tally()
        .args(["ingest", f, "--skip-bad", "--summary", "csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\n3,3,0,1,1,"))
        .stderr(predicate::str::contains("line 4:").and(predicate::str::contains("(skipped)")));
    let t = env.ok(&["total", "a", "--from", FROM, "--to", TO, "--format", "csv"]);
    assert!(t.contains("\n10,5,"), "{t}");
}

#[test]
fn server_down_is_exit_1_with_a_clear_message() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["ping"],
        vec!["total", "hits"],
        vec!["incr", "hits"],
        vec!["ingest", "-"],
    ] {
        Command::cargo_bin("tally")
            .unwrap()
            .args(["--server", &addr])
            .args(&args)
            .write_stdin("")
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .code(1)
            .stdout("")
            .stderr(predicate::str::contains(format!(
                "cannot connect to {addr}"
            )))
            .stderr(predicate::str::contains("is tallyd running there?"));
    }
}

#[test]
fn usage_errors_are_exit_2() {
    let tally = || Command::cargo_bin("tally").unwrap();
    tally().assert().code(2);
    tally().args(["total"]).assert().code(2);
    tally().args(["frobnicate"]).assert().code(2);
    tally()
        .args(["range", "clicks{ad}"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("label=value"));
    tally()
        .args(["range", "clicks", "--step", "30s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("whole number of minutes"));
    tally()
        .args(["total", "clicks", "--from", "yesterday"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid time"));
    // A reversed range is refused before connecting (no server needed).
    tally()
        .args([
            "--server",
            "127.0.0.1:9",
            "total",
            "clicks",
            "--from",
            "now",
            "--to",
            "-1h",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("empty time range"));
    tally()
        .args(["incr", "x", "--token", "s3cr3t"])
        .assert()
        .code(2);
}

#[test]
fn unknown_series_is_zero_with_a_note() {
    let env = Env::new("unknown_series_is_zero_with_a_note");
    env.tally()
        .args([
            "total",
            "nothing{here=1}",
            "--from",
            FROM,
            "--to",
            TO,
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "sum,count,from,to,from_ms,to_ms\n0,0,",
        ))
        .stderr(predicate::str::contains("note: no events matched"))
        .stderr(predicate::str::contains("metric:nothing{here=1}"));
    // A range answers every bucket, zeros included.
    let r = env.ok(&[
        "range", "nothing", "--from", FROM, "--to", TO, "--step", "1m", "--format", "csv",
    ]);
    assert_eq!(r.lines().count(), 7, "{r}");
    assert!(r.lines().skip(1).all(|l| l.ends_with(",0,false")), "{r}");
}

#[test]
fn server_errors_are_exit_1() {
    let env = Env::new("server_errors_are_exit_1");
    env.tally()
        .args(["incr", "bad key"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("INVALID_SERIES"));
    // Older than nothing: every tier keeps data forever here, but the future is refused.
    env.tally()
        .args(["incr", "x", "--at", "now+1d"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("TOO_FAR_IN_FUTURE"));
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn tokens_from_env_or_file_and_refusals() {
    let cfg = format!(
        "[[auth.tokens]]\nname = \"reader\"\nrole = \"read\"\nsha256 = \"{}\"\n",
        sha256_hex("s3cr3t")
    );
    let env = Env::with_config("tokens_from_env_or_file_and_refusals", &cfg);
    env.tally()
        .args(["ping"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("UNAUTHENTICATED"))
        .stderr(predicate::str::contains("TALLY_TOKEN"));
    env.tally()
        .env("TALLY_TOKEN", "wrong")
        .args(["ping"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("refused the token"));
    env.tally()
        .env("TALLY_TOKEN", "s3cr3t")
        .args(["ping", "--format", "csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains(",read,"));
    let file = env.path("token");
    write(&file, "s3cr3t\n");
    env.tally()
        .args([
            "--token-file",
            file.to_str().unwrap(),
            "total",
            "x",
            "--format",
            "csv",
        ])
        .assert()
        .success();
    env.tally()
        .args(["--token-file", file.to_str().unwrap(), "incr", "x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("FORBIDDEN"))
        .stderr(predicate::str::contains("role does not allow"));
}

#[test]
fn help_has_examples_and_completions_generate() {
    let tally = || Command::cargo_bin("tally").unwrap();
    tally()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("TALLY_TOKEN"));
    for sub in [
        "incr",
        "ingest",
        "range",
        "total",
        "top",
        "series",
        "stats",
        "ping",
        "completions",
    ] {
        tally()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:\n  tally"));
    }
    tally()
        .args(["range", "--help"])
        .assert()
        .stdout(predicate::str::contains("by (ad)").and(predicate::str::contains("unix seconds")));
    for (shell, marker) in [
        ("bash", "_tally()"),
        ("zsh", "#compdef tally"),
        ("fish", "complete -c tally"),
    ] {
        tally()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker));
    }
}
