//! Progress on standard error while it is a terminal; nothing when it is piped
//! or redirected, so scripts and monitoring see only the final summary.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A throttled one-line progress display.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// Shows progress only if standard error is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    /// True when enabled and the line was last drawn at least 100 ms ago (then
    /// marks it drawn now).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if !self.enabled
            || self
                .last
                .is_some_and(|l| now.duration_since(l) < Duration::from_millis(100))
        {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// Updates the line (at most ten times a second).
    pub fn bytes(&mut self, phase: &str, bytes: u64) {
        if !self.due() {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mb = bytes as f64 / 1e6;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{phase}: {mb:.1} MB read, {:.0} MB/s",
            mb / secs
        );
        let _ = err.flush();
        self.shown = true;
    }

    /// Updates an item counter, with a bar and percentage when `total_bytes` of input
    /// are known (at most ten times a second):
    /// `ingest [########----------]  42%  420000 events  310000 events/s`.
    pub fn items(
        &mut self,
        phase: &str,
        items: u64,
        unit: &str,
        done_bytes: u64,
        total_bytes: Option<u64>,
    ) {
        if !self.due() {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let bar = match total_bytes {
            Some(total) if total > 0 => {
                let frac = (done_bytes as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (frac * 24.0).round() as usize;
                format!(
                    " [{}{}] {:>3.0}%",
                    "#".repeat(filled),
                    "-".repeat(24 - filled),
                    frac * 100.0
                )
            }
            _ => String::new(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{phase}{bar}  {items} {unit}  {:.0} {unit}/s",
            items as f64 / secs
        );
        let _ = err.flush();
        self.shown = true;
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
