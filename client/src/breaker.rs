//! The circuit breaker: stop hammering a server that keeps failing.
//!
//! ```text
//!            N consecutive failures               cool-down elapsed
//!   Closed ─────────────────────────► Open ───────────────────────► HalfOpen
//!     ▲                                 ▲                              │
//!     │ success                         └──────── probe fails ─────────┤
//!     └────────────────────────────────────────── probe succeeds ──────┘
//! ```
//!
//! While open, calls fail at once with [`Error::CircuitOpen`](crate::Error::CircuitOpen)
//! without touching the network. After the cool-down one probe (a connection attempt)
//! is let through; its outcome closes or reopens the circuit. Failures are
//! connection-level: connect errors and timeouts, handshake failures, lost connections
//! and request timeouts. Server `ERROR` answers prove the server is alive and do not
//! count.
//!
//! [`CircuitBreaker`] is a pure state machine: the caller passes the current
//! [`Instant`], so tests drive it without sleeping.

use std::time::{Duration, Instant};

/// Circuit breaker settings.
///
/// ```
/// use std::time::Duration;
/// use tallydb_client::BreakerConfig;
/// let breaker = BreakerConfig::default()
///     .failure_threshold(10)
///     .cool_down(Duration::from_secs(5));
/// # let _ = breaker;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub(crate) failure_threshold: u32,
    pub(crate) cool_down: Duration,
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, probes after 2 s.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(2),
        }
    }
}

impl BreakerConfig {
    /// Consecutive connection-level failures that open the circuit (at least 1).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// How long the circuit stays open before a probe is let through.
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = d;
        self
    }

    /// A breaker that never opens.
    pub fn disabled() -> Self {
        Self {
            failure_threshold: u32::MAX,
            cool_down: Duration::ZERO,
        }
    }
}

/// The breaker's state, as reported by [`Client::circuit_state`](crate::Client::circuit_state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; counting consecutive failures.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// The cool-down ended: one probe is allowed; its outcome decides.
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker state machine.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    /// The state at `now` (an open breaker whose cool-down has passed reads half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to make an attempt at `now`. `Err(wait)` while open (or while the half-open
    /// probe is already out); `Ok` otherwise, and in half-open state the attempt is the
    /// probe: report its outcome with [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(())
            }
            // Another probe is out; its outcome will decide soon.
            State::HalfOpen { probing: true } => Err(self.config.cool_down),
        }
    }

    /// An attempt succeeded: the circuit closes and the failure count resets.
    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// An attempt failed at `now`: counts toward the threshold, or reopens a half-open
    /// circuit.
    pub fn on_failure(&mut self, now: Instant) {
        let open = State::Open {
            until: now + self.config.cool_down,
        };
        self.state = match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    open
                } else {
                    State::Closed { failures }
                }
            }
            State::HalfOpen { .. } => open,
            // A failure reported while open (an attempt that started before it opened)
            // restarts the cool-down.
            State::Open { .. } => open,
        };
    }

    /// Consecutive failures counted while closed.
    pub fn failures(&self) -> u32 {
        match self.state {
            State::Closed { failures } => failures,
            State::Open { .. } | State::HalfOpen { .. } => self.config.failure_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(n: u32, cool: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            BreakerConfig::default()
                .failure_threshold(n)
                .cool_down(Duration::from_millis(cool)),
        )
    }

    #[test]
    fn opens_after_n_consecutive_failures() {
        let t = Instant::now();
        let mut b = breaker(3, 100);
        for i in 0..2 {
            assert_eq!(b.try_acquire(t), Ok(()));
            b.on_failure(t);
            assert_eq!(b.state(t), CircuitState::Closed, "after {} failures", i + 1);
        }
        b.on_failure(t);
        assert_eq!(b.state(t), CircuitState::Open);
        assert_eq!(b.try_acquire(t), Err(Duration::from_millis(100)));
        assert_eq!(
            b.try_acquire(t + Duration::from_millis(40)),
            Err(Duration::from_millis(60))
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let t = Instant::now();
        let mut b = breaker(3, 100);
        b.on_failure(t);
        b.on_failure(t);
        b.on_success();
        assert_eq!(b.failures(), 0);
        b.on_failure(t);
        b.on_failure(t);
        assert_eq!(b.state(t), CircuitState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let t = Instant::now();
        let mut b = breaker(1, 100);
        b.on_failure(t);
        let later = t + Duration::from_millis(100);
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire(later), Ok(()));
        // The probe is out: a second caller is refused.
        assert!(b.try_acquire(later).is_err());
        b.on_success();
        assert_eq!(b.state(later), CircuitState::Closed);
        assert_eq!(b.try_acquire(later), Ok(()));
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_cool_down() {
        let t = Instant::now();
        let mut b = breaker(2, 100);
        b.on_failure(t);
        b.on_failure(t);
        let probe_at = t + Duration::from_millis(150);
        assert_eq!(b.try_acquire(probe_at), Ok(()));
        b.on_failure(probe_at);
        assert_eq!(b.state(probe_at), CircuitState::Open);
        assert_eq!(
            b.try_acquire(probe_at + Duration::from_millis(99)),
            Err(Duration::from_millis(1))
        );
        assert_eq!(b.try_acquire(probe_at + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn disabled_never_opens() {
        let t = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::disabled());
        for _ in 0..10_000 {
            b.on_failure(t);
        }
        assert_eq!(b.state(t), CircuitState::Closed);
        assert_eq!(b.try_acquire(t), Ok(()));
    }
}
