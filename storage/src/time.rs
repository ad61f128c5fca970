//! Time: tiers and their UTC-aligned buckets, retention cut-offs, and the clock.
//!
//! Timestamps are `i64` milliseconds since the Unix epoch (UTC). A bucket of a
//! tier is identified by its index: `ts.div_euclid(tier.bucket_ms())`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds in one of the duration units people write: `ms`, `s`, `m`, `h`,
/// `d`, `w`.
pub fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => return None,
    })
}

/// The UTC calendar date `(year, month 1..=12, day 1..=31)` of a day count since
/// 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A rollup tier: every event is counted in each tier whose retention covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// One cell per series per UTC minute.
    Minute = 0,
    /// One cell per series per UTC hour.
    Hour = 1,
    /// One cell per series per UTC day.
    Day = 2,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 3] = [Tier::Minute, Tier::Hour, Tier::Day];

    /// Width of one bucket in milliseconds.
    #[inline]
    pub const fn bucket_ms(self) -> i64 {
        match self {
            Tier::Minute => MINUTE_MS,
            Tier::Hour => HOUR_MS,
            Tier::Day => DAY_MS,
        }
    }

    /// The bucket holding `ts`.
    #[inline]
    pub const fn bucket_of(self, ts: i64) -> i64 {
        ts.div_euclid(self.bucket_ms())
    }

    /// Start of bucket `b` in milliseconds.
    #[inline]
    pub const fn start_of(self, bucket: i64) -> i64 {
        bucket.saturating_mul(self.bucket_ms())
    }

    /// Index used in on-disk headers and bitmasks.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Bit of this tier in a tier bitmask (minute 1, hour 2, day 4).
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Decodes [`Tier::index`].
    pub fn from_index(i: u8) -> Option<Tier> {
        match i {
            0 => Some(Tier::Minute),
            1 => Some(Tier::Hour),
            2 => Some(Tier::Day),
            _ => None,
        }
    }

    /// Lower-case name: `minute`, `hour`, `day`.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Minute => "minute",
            Tier::Hour => "hour",
            Tier::Day => "day",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How long each tier keeps its cells (`None` = forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Minute tier retention in milliseconds (default 7 days).
    pub minute_ms: Option<i64>,
    /// Hour tier retention in milliseconds (default 400 days).
    pub hour_ms: Option<i64>,
    /// Day tier retention in milliseconds (default forever).
    pub day_ms: Option<i64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute_ms: Some(7 * DAY_MS),
            hour_ms: Some(400 * DAY_MS),
            day_ms: None,
        }
    }
}

impl Retention {
    /// Retention of one tier.
    pub fn of(&self, tier: Tier) -> Option<i64> {
        match tier {
            Tier::Minute => self.minute_ms,
            Tier::Hour => self.hour_ms,
            Tier::Day => self.day_ms,
        }
    }

    /// The oldest bucket of `tier` still retained at `now`: a bucket is kept while
    /// any part of it is younger than the retention.
    pub fn first_kept_bucket(&self, tier: Tier, now: i64) -> i64 {
        match self.of(tier) {
            None => i64::MIN,
            Some(r) => tier.bucket_of(now.saturating_sub(r)),
        }
    }

    /// True if `tier` retains a cell for time `ts` at `now`.
    pub fn covers(&self, tier: Tier, ts: i64, now: i64) -> bool {
        tier.bucket_of(ts) >= self.first_kept_bucket(tier, now)
    }

    /// Bitmask of the tiers that retain `ts` at `now`.
    pub fn coverage(&self, ts: i64, now: i64) -> u8 {
        Tier::ALL
            .iter()
            .filter(|t| self.covers(**t, ts, now))
            .fold(0, |m, t| m | t.bit())
    }

    /// Per tier (minute, hour, day), the oldest timestamp it retains at `now`;
    /// computed once per batch so that [`Retention::coverage_at`] is three compares.
    pub fn cutoffs(&self, now: i64) -> [i64; 3] {
        Tier::ALL.map(|t| {
            let b = self.first_kept_bucket(t, now);
            if b == i64::MIN {
                i64::MIN
            } else {
                t.start_of(b)
            }
        })
    }

    /// Bitmask of the tiers retaining `ts`, given [`Retention::cutoffs`].
    #[inline]
    pub fn coverage_at(cutoffs: &[i64; 3], ts: i64) -> u8 {
        u8::from(ts >= cutoffs[0])
            | u8::from(ts >= cutoffs[1]) << 1
            | u8::from(ts >= cutoffs[2]) << 2
    }

    /// The oldest timestamp any tier still accepts at `now`.
    pub fn oldest_accepted(&self, now: i64) -> i64 {
        Tier::ALL
            .iter()
            .map(|t| {
                let b = self.first_kept_bucket(*t, now);
                if b == i64::MIN {
                    i64::MIN
                } else {
                    t.start_of(b)
                }
            })
            .min()
            .unwrap_or(i64::MIN)
    }
}

/// Source of "now" for the engine: the system clock, or a manual clock in tests.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to; shared by clones.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }
    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_utc_aligned_and_floor_negative_times() {
        assert_eq!(Tier::Minute.bucket_of(59_999), 0);
        assert_eq!(Tier::Minute.bucket_of(60_000), 1);
        assert_eq!(Tier::Minute.bucket_of(-1), -1);
        assert_eq!(Tier::Day.start_of(Tier::Day.bucket_of(DAY_MS + 5)), DAY_MS);
    }

    #[test]
    fn retention_keeps_partially_young_buckets() {
        let r = Retention::default();
        let now = 100 * DAY_MS + 30 * MINUTE_MS;
        assert!(r.covers(Tier::Minute, now - 7 * DAY_MS, now));
        assert!(!r.covers(Tier::Minute, now - 7 * DAY_MS - MINUTE_MS, now));
        assert!(r.covers(Tier::Day, i64::MIN / 2, now));
        assert_eq!(
            r.coverage(now - 8 * DAY_MS, now),
            Tier::Hour.bit() | Tier::Day.bit()
        );
        assert_eq!(r.oldest_accepted(now), i64::MIN);
        let cutoffs = r.cutoffs(now);
        for ts in [
            now,
            now - 7 * DAY_MS,
            now - 7 * DAY_MS - MINUTE_MS,
            now - 500 * DAY_MS,
            i64::MIN / 4,
        ] {
            assert_eq!(
                Retention::coverage_at(&cutoffs, ts),
                r.coverage(ts, now),
                "ts {ts}"
            );
        }
    }
}
