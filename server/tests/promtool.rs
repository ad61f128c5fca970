//! Compatibility with Prometheus' own client: `promtool query range` and
//! `promtool query instant` (Debian package `prometheus`) against a live tallyd, the
//! numbers they print checked against what was written.
//!
//! When `promtool` is missing the test installs the package (`apt-get update`, then
//! `apt-get install -y prometheus`) if it runs as root with apt-get available (as CI
//! does); otherwise it prints a visible "skipping" message and passes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};

use support::Server;
use tallydb_e2e::{now_ms, Client};
use tallydb_protocol::{Event, SeriesRef};

const MIN: i64 = 60_000;

fn have_promtool() -> bool {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `Ok(())` when promtool is available (installing it if it may), else why not.
fn ensure_promtool() -> Result<(), String> {
    if have_promtool() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Err("promtool is not installed and the test does not run as root".into());
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    match apt(&["update", "-qq"]) {
        Err(e) => return Err(format!("apt-get is not available: {e}")),
        Ok(s) if !s.success() => return Err(format!("apt-get update failed: {s}")),
        Ok(_) => {}
    }
    match apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "prometheus",
    ]) {
        Ok(s) if s.success() && have_promtool() => Ok(()),
        Ok(s) => Err(format!("apt-get install prometheus failed: {s}")),
        Err(e) => Err(format!("apt-get install prometheus failed: {e}")),
    }
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "promtool {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ promtool {}\n{stdout}", args.join(" "));
    stdout
}

#[test]
fn promtool_queries_print_the_written_numbers() {
    if let Err(why) = ensure_promtool() {
        println!("skipping: promtool not available ({why})");
        eprintln!("skipping: promtool not available ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now = now_ms();
    let base = now - now.rem_euclid(MIN) - 20 * MIN;
    // Minute k (k = 0..10) of series a gets k + 1; series b gets 100 in minute 3.
    let mut c = Client::connect(server.addr);
    c.hello(b"").unwrap();
    let mut events = Vec::new();
    for k in 0..10 {
        events.push(("clicks{ad=a}", k + 1, base + k * MIN + 5_000));
    }
    events.push(("clicks{ad=b}", 100, base + 3 * MIN + 1));
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
    let model = |end: i64, w: i64| -> i64 {
        events
            .iter()
            .filter(|(_, _, ts)| *ts >= end - w && *ts < end)
            .map(|(_, d, _)| d)
            .sum()
    };
    let url = format!("http://{}", server.http);
    let (start, end) = (base + 5 * MIN, base + 10 * MIN);
    let out = promtool(&[
        "query",
        "range",
        "--start",
        &(start / 1000).to_string(),
        "--end",
        &(end / 1000).to_string(),
        "--step",
        "1m",
        &url,
        "sum(increase(clicks[5m]))",
    ]);
    // promtool prints a matrix as `{} =>` then `VALUE @[SECONDS]` per point.
    for i in 0..=5 {
        let t = start + i * MIN;
        let line = format!("{} @[{}]", model(t, 5 * MIN), t / 1000);
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    let t = base + 10 * MIN;
    let out = promtool(&[
        "query",
        "instant",
        "--time",
        &(t / 1000).to_string(),
        &url,
        "sum by (ad) (increase(clicks[10m]))",
    ]);
    let a: i64 = (1..=10).sum();
    for line in [
        format!("{{ad=\"a\"}} => {a} @[{}]", t / 1000),
        format!("{{ad=\"b\"}} => 100 @[{}]", t / 1000),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
}
