//! Engine options and the fsync policy.

use std::str::FromStr;
use std::sync::Arc;

use crate::compaction::CompactionOptions;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, OsFs};
use crate::time::{Clock, Retention, SystemClock, HOUR_MS, MINUTE_MS};

/// When a write is acknowledged relative to its WAL record reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after the fsync covering the record (group commit shares
    /// one fsync among concurrent writers). Nothing acknowledged is ever lost.
    Always,
    /// Acknowledge once buffered; write and fsync every `n` milliseconds. A power
    /// loss may lose up to about `n` ms of acknowledged writes (plus one fsync).
    Interval(u64),
    /// Acknowledge once buffered; write to the OS every 100 ms and never fsync
    /// except at flush and close. A process crash loses at most ~100 ms; a power
    /// loss may lose everything since the last flush.
    Never,
}

/// How often the WAL buffer reaches the OS under [`FsyncPolicy::Never`].
pub const NEVER_WRITE_INTERVAL_MS: u64 = 100;

impl FromStr for FsyncPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| (1..=60_000).contains(ms))
                    .ok_or_else(|| {
                        Error::InvalidOption(format!(
                            "fsync policy {s:?}: expected always, never or interval:<ms> with 1 to 60000 ms"
                        ))
                    })?;
                Ok(FsyncPolicy::Interval(ms))
            }
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(ms) => write!(f, "interval:{ms}"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// The default earliest event time: 2000-01-01T00:00Z in unix ms.
pub const DEFAULT_MIN_EVENT_MS: i64 = 946_684_800_000;

/// Everything configurable about an engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durability of acknowledged writes (default `always`).
    pub fsync: FsyncPolicy,
    /// Retention per tier (defaults: minute 7 days, hour 400 days, day forever).
    pub retention: Retention,
    /// How far ahead of the clock an event may be (default 10 minutes).
    pub max_future_skew_ms: i64,
    /// Earliest event time accepted, in unix ms (default 2000-01-01T00:00Z,
    /// [`DEFAULT_MIN_EVENT_MS`]): earlier timestamps are almost always zero or
    /// seconds sent as milliseconds, and are refused like future ones.
    pub min_event_ms: i64,
    /// How long event ids are remembered for dedup (default 1 hour).
    pub dedup_window_ms: i64,
    /// How long an idle producer's sequence is remembered (default 7 days).
    pub producer_idle_ms: i64,
    /// Memtable size that triggers a flush (default 64 MiB).
    pub memtable_bytes: usize,
    /// WAL bytes since the last flush that trigger a flush (default 256 MiB).
    pub wal_flush_bytes: u64,
    /// Most events in one batch (default 1,000,000).
    pub max_batch_events: usize,
    /// Run flushes, compactions and interval syncs on background threads
    /// (default true; tests turn it off to drive them by hand).
    pub background: bool,
    /// Compaction policy tuning.
    pub compaction: CompactionOptions,
    /// Bytes of decoded segment blocks kept for queries (default 64 MiB; 0
    /// turns the cache off).
    pub block_cache_bytes: usize,
    /// File access (the real file system by default).
    pub fs: Arc<dyn FileSystem>,
    /// Source of "now".
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::Always,
            retention: Retention::default(),
            max_future_skew_ms: 10 * MINUTE_MS,
            min_event_ms: DEFAULT_MIN_EVENT_MS,
            dedup_window_ms: HOUR_MS,
            producer_idle_ms: 7 * 24 * HOUR_MS,
            memtable_bytes: 64 << 20,
            wal_flush_bytes: 256 << 20,
            max_batch_events: 1_000_000,
            background: true,
            compaction: CompactionOptions::default(),
            block_cache_bytes: 64 << 20,
            fs: Arc::new(OsFs),
            clock: Arc::new(SystemClock),
        }
    }
}

impl Options {
    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<()> {
        let r = &self.retention;
        let bad = |m: String| Err(Error::InvalidOption(m));
        for (name, v) in [
            ("minute", r.minute_ms),
            ("hour", r.hour_ms),
            ("day", r.day_ms),
        ] {
            if let Some(ms) = v {
                if ms < MINUTE_MS {
                    return bad(format!(
                        "{name} retention of {ms} ms is shorter than one minute"
                    ));
                }
            }
        }
        let le = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a <= b,
        };
        if !le(r.minute_ms, r.hour_ms) || !le(r.hour_ms, r.day_ms) {
            return bad(
                "retention must not shrink from finer to coarser tiers (minute <= hour <= day)"
                    .into(),
            );
        }
        if self.max_future_skew_ms < 0 {
            return bad("max future skew must not be negative".into());
        }
        if self.dedup_window_ms < 0 || self.producer_idle_ms < 0 {
            return bad("dedup window and producer idle time must not be negative".into());
        }
        if self.max_batch_events == 0 || self.memtable_bytes == 0 {
            return bad("batch and memtable limits must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print() {
        for s in ["always", "never", "interval:50"] {
            assert_eq!(s.parse::<FsyncPolicy>().expect("valid").to_string(), s);
        }
        for s in ["sometimes", "interval:", "interval:0", "interval:x"] {
            assert!(s.parse::<FsyncPolicy>().is_err(), "{s}");
        }
    }

    #[test]
    fn shrinking_retention_is_refused() {
        let mut o = Options::default();
        assert!(o.validate().is_ok());
        o.retention.hour_ms = Some(HOUR_MS);
        assert!(o.validate().is_err());
    }
}
