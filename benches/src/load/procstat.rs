//! CPU time and resident memory of a process, read from `/proc` (Linux).
//!
//! CPU: `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks,
//! converted with `getconf CLK_TCK`, usually 100/s). Memory: `VmRSS` of
//! `/proc/<pid>/status`. A [`Sampler`] reads both every interval during a run.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, else 100).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `utime + stime` of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// Parses `utime + stime` out of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11, stime index 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss_kib(&status)
}

/// Parses the `VmRSS:` line of `/proc/<pid>/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resource use of one process over a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcUsage {
    /// The process id.
    pub pid: u32,
    /// CPU seconds (user + system) used during the run.
    pub cpu_seconds: f64,
    /// Average cores busy: CPU seconds / wall seconds (1.0 = one core).
    pub cpu_cores: f64,
    /// Largest resident set seen, MiB.
    pub rss_max_mib: f64,
    /// Resident set at the end, MiB.
    pub rss_end_mib: f64,
    /// Number of samples taken.
    pub samples: usize,
}

/// Samples one process until [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    ticks_per_sec: u64,
    start: Instant,
    start_ticks: Option<u64>,
    rss_max: u64,
    rss_last: u64,
    samples: usize,
}

impl Sampler {
    /// Starts sampling `pid` now.
    pub fn start(pid: u32, ticks_per_sec: u64) -> Self {
        let mut s = Self {
            pid,
            ticks_per_sec,
            start: Instant::now(),
            start_ticks: cpu_ticks(pid),
            rss_max: 0,
            rss_last: 0,
            samples: 0,
        };
        s.sample();
        s
    }

    /// Takes one memory sample.
    pub fn sample(&mut self) {
        if let Some(rss) = rss_kib(self.pid) {
            self.rss_max = self.rss_max.max(rss);
            self.rss_last = rss;
            self.samples += 1;
        }
    }

    /// Takes the last sample; `None` if the process could not be read.
    pub fn finish(mut self) -> Option<ProcUsage> {
        self.sample();
        let wall = self.start.elapsed().max(Duration::from_millis(1));
        let ticks = cpu_ticks(self.pid)?.checked_sub(self.start_ticks?)?;
        let cpu_seconds = ticks as f64 / self.ticks_per_sec as f64;
        Some(ProcUsage {
            pid: self.pid,
            cpu_seconds,
            cpu_cores: cpu_seconds / wall.as_secs_f64(),
            rss_max_mib: self.rss_max as f64 / 1024.0,
            rss_end_mib: self.rss_last as f64 / 1024.0,
            samples: self.samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "1234 (tally d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 5 0";
        assert_eq!(parse_cpu_ticks(line), Some(290));
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\ttallyd\nVmPeak:\t  9000 kB\nVmRSS:\t   5120 kB\n";
        assert_eq!(parse_rss_kib(status), Some(5120));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(rss_kib(me).is_some_and(|r| r > 0));
    }
}
