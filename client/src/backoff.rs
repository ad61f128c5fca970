//! Retries: [`RetryPolicy`] and exponential backoff with full jitter.
//!
//! The delay before retry `n` (1-based) is drawn uniformly from
//! `[0, min(max_backoff, initial_backoff × 2^(n-1))]` ("full jitter", as in the AWS
//! architecture blog's *Exponential Backoff and Jitter*): clients that failed together
//! do not retry together. The computation is a pure function of the attempt number and
//! a random draw, so its bounds are unit-tested without sleeping.

use std::time::Duration;

/// How often and how patiently the client retries a request.
///
/// A request is sent at most `1 + max_retries` times. It is retried after a connection
/// failure (connect error, reset, request timeout) and after a server `ERROR` flagged
/// retryable (`BUSY`, `STORAGE_UNAVAILABLE`, `SHUTTING_DOWN`); never after other errors.
///
/// ```
/// use std::time::Duration;
/// use tallydb_client::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .max_retries(5)
///     .initial_backoff(Duration::from_millis(20))
///     .max_backoff(Duration::from_secs(1));
/// assert_eq!(policy.max_delay(3), Duration::from_millis(80));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 3 retries, 50 ms initial backoff, 2 s cap.
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries: every failure is returned at once.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Most retries per request (after the first attempt).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Backoff bound before the first retry; doubles per retry.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Cap on the backoff bound.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// The upper bound of the delay before retry `attempt` (1-based):
    /// `min(max_backoff, initial_backoff × 2^(attempt-1))`.
    pub fn max_delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// The delay before retry `attempt`, given a uniform random draw `unit` in `[0, 1)`:
    /// full jitter over `[0, max_delay(attempt)]`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.max_delay(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A small non-cryptographic generator (SplitMix64) for jitter and producer ids, seeded
/// from the standard library's per-process random hasher keys and the clock.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from process randomness.
    pub(crate) fn from_entropy() -> Self {
        Rng(random_u64())
    }

    #[cfg(test)]
    pub(crate) fn with_seed(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        // 53 random bits: every value is exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 64 random bits: `RandomState` keys are random per process (and per instance), mixed
/// with the clock and a counter so two calls never repeat.
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_delay_doubles_and_caps() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(100));
        assert_eq!(p.max_delay(1), Duration::from_millis(10));
        assert_eq!(p.max_delay(2), Duration::from_millis(20));
        assert_eq!(p.max_delay(4), Duration::from_millis(80));
        assert_eq!(p.max_delay(5), Duration::from_millis(100));
        assert_eq!(p.max_delay(1000), Duration::from_millis(100));
        // Attempt 0 behaves like attempt 1; no overflow at u32::MAX.
        assert_eq!(p.max_delay(0), Duration::from_millis(10));
        assert_eq!(p.max_delay(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_stays_in_bounds_and_spreads() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(50))
            .max_backoff(Duration::from_secs(2));
        let mut rng = Rng::with_seed(42);
        for attempt in 1..=10 {
            let bound = p.max_delay(attempt);
            let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
            for _ in 0..2000 {
                let d = p.delay(attempt, rng.unit());
                assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
                lo = lo.min(d);
                hi = hi.max(d);
            }
            // Full jitter: draws reach both ends of [0, bound].
            assert!(lo < bound / 10, "attempt {attempt}: min {lo:?}");
            assert!(hi > bound * 9 / 10, "attempt {attempt}: max {hi:?}");
        }
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 5.0), p.max_delay(3));
    }

    #[test]
    fn unit_draws_are_in_range() {
        let mut rng = Rng::with_seed(7);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_ne!(random_u64(), random_u64());
    }
}
