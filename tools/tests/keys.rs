//! End-to-end tests of keys and selectors through `tally` and `tally-admin` against a
//! real `tallyd`: the same selector and the same unix time mean the same thing to both
//! tools, UTF-8 label values are counted and queried, reserved label names are refused,
//! `total … by (…)` answers per group, and a prefix groups by path segment.
//!
//! `tallyd` is found as in `tally.rs` (`TALLYD_BIN` or `target/<profile>/tallyd`).
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::prelude::*;
use tallydb_e2e::{tallyd_bin_or_fail, Tallyd};
use tempfile::TempDir;

/// 2024-03-01T10:00:00Z.
const BASE_S: i64 = 1_709_287_200;

const FOREVER: &str = "[retention]\nminute = \"forever\"\nhour = \"forever\"\nday = \"forever\"\n";

struct Env {
    dir: TempDir,
    server: Option<Tallyd>,
}

impl Env {
    fn new(test: &str) -> Env {
        let bin = tallyd_bin_or_fail(test);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("tallyd.toml");
        std::fs::write(&cfg, FOREVER).unwrap();
        let server = Tallyd::start(
            &bin,
            dir.path(),
            &dir.path().join("data"),
            &["--config", cfg.to_str().unwrap()],
        );
        Env {
            dir,
            server: Some(server),
        }
    }

    fn tally(&self) -> Command {
        let mut c = Command::cargo_bin("tally").unwrap();
        let addr = self.server.as_ref().map(|s| s.addr.to_string());
        c.env("TALLY_SERVER", addr.unwrap_or_default())
            .env_remove("TALLY_TOKEN")
            .timeout(std::time::Duration::from_secs(60));
        c
    }

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

    fn incr(&self, key: &str, delta: i64, at_s: i64) {
        self.ok(&["incr", key, &delta.to_string(), "--at", &at_s.to_string()]);
    }

    /// Stops the server so that offline tools may open the data directory.
    fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.terminate();
        }
    }

    fn admin(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("tally-admin")
            .unwrap()
            .env_remove("TALLY_TOKEN")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

/// CSV rows (header skipped) as vectors of fields.
fn csv_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn tally_and_tally_admin_read_a_selector_and_a_unix_time_alike() {
    let mut env = Env::new("tally_and_tally_admin_read_a_selector_and_a_unix_time_alike");
    for (key, delta, off) in [
        ("clicks{ad=a1,country=US}", 5, 0),
        ("clicks{ad=a2,country=US}", 6, 60),
        ("clicks{ad=a3,country=FR}", 1, 90),
        ("clicks{ad=a1,country=US,os=ios}", 7, 120),
    ] {
        env.incr(key, delta, BASE_S + off);
    }
    // Unix seconds, as both tools are given them.
    let (from, to) = ((BASE_S - 120).to_string(), (BASE_S + 240).to_string());
    let sel = "clicks{country=US}";
    let total = env.ok(&[
        "total", sel, "--from", &from, "--to", &to, "--format", "csv",
    ]);
    let tally_sum: i64 = csv_rows(&total)[0][0].parse().unwrap();
    let series = env.ok(&["series", sel, "--format", "csv"]);
    let mut tally_keys: Vec<String> = series
        .lines()
        .skip(1)
        .map(|l| l.trim_matches('"').replace("\"\"", "\""))
        .collect();
    tally_keys.sort();
    assert_eq!(tally_sum, 18, "{total}");
    env.stop();
    let data = env.dir.path().join("data");
    let cfg = env.dir.path().join("tallyd.toml");
    let (code, out, err) = env.admin(&[
        "--config",
        cfg.to_str().unwrap(),
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--selector",
        sel,
        "--from",
        &from,
        "--to",
        &to,
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut admin_keys = Vec::new();
    let mut admin_sum = 0;
    for line in out.lines().skip(1) {
        let (ts, rest) = line.split_once(',').unwrap();
        let (key, delta) = rest.rsplit_once(',').unwrap();
        let ts: i64 = ts.parse().unwrap();
        assert!(
            ((BASE_S - 120) * 1000..(BASE_S + 240) * 1000).contains(&ts),
            "{line}"
        );
        let key = key.trim_matches('"').replace("\"\"", "\"");
        if !admin_keys.contains(&key) {
            admin_keys.push(key);
        }
        admin_sum += delta.parse::<i64>().unwrap();
    }
    admin_keys.sort();
    assert_eq!(admin_keys, tally_keys);
    assert_eq!(admin_sum, tally_sum);
}

#[test]
fn utf8_label_values_are_counted_and_queried() {
    let env = Env::new("utf8_label_values_are_counted_and_queried");
    env.incr(r#"hits{page="/search?q=café"}"#, 3, BASE_S);
    env.incr(r#"hits{page="/search?q=café",lang="日本語"}"#, 4, BASE_S);
    env.incr(r#"hits{page="say \"hi\", then {leave}"}"#, 5, BASE_S);
    env.incr("hits{page=/home}", 1, BASE_S);
    let span = ["--from", "2024-03-01T09:00Z", "--to", "2024-03-01T11:00Z"];
    let total = |sel: &str| -> i64 {
        let mut args = vec!["total", sel, "--format", "csv"];
        args.extend(span);
        csv_rows(&env.ok(&args))[0][0].parse().unwrap()
    };
    assert_eq!(total(r#"hits{page="/search?q=café"}"#), 7);
    assert_eq!(total(r#"hits{page="/search?q=caf\u00e9"}"#), 7);
    assert_eq!(total(r#"exact:hits{page="/search?q=café"}"#), 3);
    assert_eq!(total(r#"hits{page="say \"hi\", then {leave}"}"#), 5);
    assert_eq!(total(r#"{__name__="hits",lang="日本語"}"#), 4);
    assert_eq!(total("hits{page=/home}"), 1);
    let series = env.ok(&["series", "hits", "--format", "jsonl"]);
    assert!(
        series.contains(r#"hits{lang=\"日本語\",page=\"/search?q=café\"}"#),
        "{series}"
    );
    let mut args = vec!["total", "hits by (page)", "--format", "csv"];
    args.extend(span);
    let by_page = env.ok(&args);
    assert!(by_page.contains("/search?q=café,7,"), "{by_page}");
    // A bare value outside the plain set is refused with the rule.
    env.tally()
        .args(["total", "hits{page=café}"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must be quoted"));
}

#[test]
fn reserved_label_names_are_refused() {
    let env = Env::new("reserved_label_names_are_refused");
    env.tally()
        .args(["incr", "hits{__name__=other}"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("reserved"));
    env.tally()
        .args(["incr", "hits{__tenant=a}"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("reserved"));
    env.tally()
        .args(["total", "hits{__tenant=a}"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("reserved"));
    let series = env.ok(&["series", "hits", "--format", "csv"]);
    assert_eq!(series.lines().count(), 1, "nothing was created: {series}");
}

#[test]
fn total_by_answers_one_total_per_group() {
    let env = Env::new("total_by_answers_one_total_per_group");
    for (key, delta) in [
        ("clicks{ad=a1,country=US}", 5),
        ("clicks{ad=a2,country=US}", 6),
        ("clicks{ad=a3,country=FR}", 1),
        ("clicks{ad=a1,country=FR}", 4),
        ("clicks{ad=a4}", 9),
    ] {
        env.incr(key, delta, BASE_S);
    }
    let span = ["--from", "2024-03-01T09:00Z", "--to", "2024-03-01T11:00Z"];
    let run = |sel: &str| {
        let mut args = vec!["total", sel, "--format", "csv"];
        args.extend(span);
        env.ok(&args)
    };
    let out = run("clicks by (country)");
    let rows = csv_rows(&out);
    let pairs: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(
        pairs,
        vec![
            (String::new(), "9".to_string()),
            ("FR".to_string(), "5".to_string()),
            ("US".to_string(), "11".to_string()),
        ],
        "{out}"
    );
    assert!(out.starts_with("country,sum,count,"), "{out}");
    let out = run("clicks{country!=FR} by (country, ad)");
    assert_eq!(csv_rows(&out).len(), 3, "{out}");
    // The PromQL form without a metric name.
    let out = run(r#"{country="US"}"#);
    assert_eq!(csv_rows(&out)[0][0], "11", "{out}");
    let out = run(r#"{country="FR"} by (ad)"#);
    assert_eq!(csv_rows(&out).len(), 2, "{out}");
    let json = {
        let mut args = vec!["total", "clicks by (country)", "--format", "json"];
        args.extend(span);
        env.ok(&args)
    };
    assert!(json.contains("\"country\": \"US\""), "{json}");
}

#[test]
fn a_prefix_groups_by_path_segment() {
    let env = Env::new("a_prefix_groups_by_path_segment");
    for (key, delta) in [
        ("com.example.music", 2),
        ("com.example.music.jazz", 3),
        ("com.example.video{dc=eu}", 4),
        ("com.example.video.live{dc=us}", 1),
        ("com.examples.other", 100),
        ("com.other", 50),
    ] {
        env.incr(key, delta, BASE_S);
    }
    let span = ["--from", "2024-03-01T09:00Z", "--to", "2024-03-01T11:00Z"];
    let run = |sel: &str| {
        let mut args = vec!["total", sel, "--format", "csv"];
        args.extend(span);
        csv_rows(&env.ok(&args))
            .into_iter()
            .map(|r| r[..r.len() - 5].join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        run("com.example.* by (__child__)"),
        vec!["music,5", "video,5"]
    );
    assert_eq!(
        run("prefix:com.example by (__child__, dc)"),
        vec!["music,,5", "video,eu,4", "video,us,1"]
    );
    assert_eq!(
        run("com.* by (__child__)"),
        vec!["example,10", "examples,100", "other,50"]
    );
    env.tally()
        .args(["total", "com.example by (__child__)"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("reserved"));
}

#[test]
fn tally_admin_takes_no_token_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let admin = || Command::cargo_bin("tally-admin").unwrap();
    admin()
        .args(["compact", "--server", "127.0.0.1:1", "--token", "s3cr3t"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--token-file"));
    let missing = dir.path().join("no-such-token");
    admin()
        .args(["compact", "--server", "127.0.0.1:1", "--token-file"])
        .arg(&missing)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("token file"));
    admin()
        .args(["compact", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--token-file"))
        .stdout(predicate::str::contains("TALLY_TOKEN"));
}
