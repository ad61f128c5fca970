//! Smoke test of `tally-bench`: about one second of load against a private tallyd,
//! then its exactness check must report nothing lost and nothing doubled.
//!
//! The tallyd binary is not a target of this package, so Cargo does not provide its
//! path. It is taken from `TALLYD_BIN`, else looked for next to this test's target
//! directory (`<target>/<profile>/tallyd`, present after `cargo test --workspace` or
//! `cargo build -p tallydb-server`). When it cannot be found the test fails, saying
//! how to build it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn find_tallyd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TALLYD_BIN") {
        return Some(PathBuf::from(p));
    }
    // <target>/<profile>/tally-bench: tallyd would sit beside it.
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_tally-bench"));
    let candidate = bench.parent()?.join("tallyd");
    candidate.is_file().then_some(candidate)
}

#[test]
fn one_second_of_load_is_exact() {
    let Some(tallyd) = find_tallyd() else {
        panic!(
            "one_second_of_load_is_exact: no tallyd binary found: build it with \
             `cargo build -p tallydb-server --bin tallyd` (`cargo test --workspace` does so), \
             or point TALLYD_BIN at one"
        );
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally-bench"))
        .args(["--spawn"])
        .arg(&tallyd)
        .args([
            "--fsync",
            "never",
            "--connections",
            "2",
            "--batch",
            "10",
            "--pipeline",
            "2",
            "--series",
            "50",
            "--duration",
            "1",
            "--read-ratio",
            "0.1",
            "--query",
            "total,range,top",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("tally-bench did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        status.success(),
        "tally-bench exited with {status}; output:\n{out}"
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = &report["verification"];
    assert_eq!(v["lost"], 0, "{out}");
    assert_eq!(v["doubled"], 0, "{out}");
    assert_eq!(v["exact"], true, "{out}");
    let acked = report["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "nothing was acknowledged: {out}");
    assert_eq!(v["acknowledged"].as_u64(), Some(acked));
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0), "{out}");
    assert!(report["write_latency"]["p99_us"].as_u64().unwrap() > 0);
    assert!(report["server_usage"]["cpu_seconds"].as_f64().is_some());
}
