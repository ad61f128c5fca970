//! What a run sends: the [`Workload`] options, key choice ([`KeySampler`]: uniform
//! or Zipf), event timestamps ([`TimestampMode`]) and query kinds ([`QueryKind`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::Rng;

use super::error::LoadError;

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// How series are chosen for each event (and for exact-series queries).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every series equally likely.
    Uniform,
    /// Series `i` (0-based) has weight `1 / (i + 1)^s`: a few hot series.
    Zipf(f64),
}

impl FromStr for KeyDist {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, LoadError> {
        if s == "uniform" {
            return Ok(Self::Uniform);
        }
        let bad = || {
            LoadError::Config(format!(
                "--keys {s:?}: expected uniform or zipf:<s> with s > 0, e.g. zipf:1.1"
            ))
        };
        let exp = s.strip_prefix("zipf:").ok_or_else(bad)?;
        match exp.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Self::Zipf(v)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// The timestamps events carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampMode {
    /// None: the server's receive time (the common case, smallest events).
    Live,
    /// Late events: uniformly 1 minute to 1 hour in the past (minute tier).
    Late,
    /// Backfill: uniformly 8 to 30 days in the past, older than the default minute
    /// retention (7 days), so counted in the hour and day tiers only.
    Backfill,
}

impl FromStr for TimestampMode {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, LoadError> {
        match s {
            "live" => Ok(Self::Live),
            "late" => Ok(Self::Late),
            "backfill" => Ok(Self::Backfill),
            _ => Err(LoadError::Config(format!(
                "--timestamps {s:?}: expected live, late or backfill"
            ))),
        }
    }
}

impl fmt::Display for TimestampMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Live => "live",
            Self::Late => "late",
            Self::Backfill => "backfill",
        })
    }
}

impl TimestampMode {
    /// The timestamp of one event sent at `now_ms`.
    pub fn timestamp(self, now_ms: i64, rng: &mut Rng) -> Option<i64> {
        let back = |lo: i64, hi: i64, rng: &mut Rng| {
            let span = u64::try_from(hi - lo).unwrap_or(1).max(1);
            now_ms - lo - i64::try_from(rng.below(span)).unwrap_or(0)
        };
        match self {
            Self::Live => None,
            Self::Late => Some(back(MINUTE_MS, HOUR_MS, rng)),
            Self::Backfill => Some(back(8 * DAY_MS, 30 * DAY_MS, rng)),
        }
    }

    /// How far back events may go: the verification query starts before this.
    pub fn max_age_ms(self) -> i64 {
        match self {
            Self::Live => 0,
            Self::Late => HOUR_MS,
            Self::Backfill => 30 * DAY_MS,
        }
    }
}

/// A read request kind of the read/write mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryKind {
    /// `TOTAL` of one series (chosen like the written keys) over the last hour.
    Total,
    /// `RANGE` of one series over the last hour, 1-minute step, `sum`.
    Range,
    /// `TOP` 10 series of the benchmark metric over the last 5 minutes.
    Top,
}

impl QueryKind {
    /// Every kind.
    pub const ALL: [QueryKind; 3] = [Self::Total, Self::Range, Self::Top];

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Range => "range",
            Self::Top => "top",
        }
    }

    /// Parses a comma-separated list such as `total,top`.
    pub fn parse_list(s: &str) -> Result<Vec<QueryKind>, LoadError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let kind = Self::ALL
                .into_iter()
                .find(|k| k.name() == part)
                .ok_or_else(|| {
                    LoadError::Config(format!(
                        "--query {part:?}: expected total, range or top (comma-separated)"
                    ))
                })?;
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        if out.is_empty() {
            return Err(LoadError::Config("--query names no query kind".into()));
        }
        Ok(out)
    }
}

/// How the run checks exactness at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// `TOTAL` of every series written, compared one by one, plus the metric total.
    Series,
    /// Only the `TOTAL` of the whole metric (one request).
    Metric,
    /// No check.
    None,
}

impl FromStr for VerifyMode {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, LoadError> {
        match s {
            "series" => Ok(Self::Series),
            "metric" => Ok(Self::Metric),
            "none" => Ok(Self::None),
            _ => Err(LoadError::Config(format!(
                "--verify {s:?}: expected series, metric or none"
            ))),
        }
    }
}

/// Everything that defines a run (except where the server is).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Connections, each with its own producer id and alias table.
    pub connections: usize,
    /// Events per `INCR`.
    pub batch: u32,
    /// Open-loop target in increments per second (reads are added in proportion to
    /// `read_ratio`); `0` = closed loop, each connection as fast as its pipeline allows.
    pub rate: f64,
    /// How long requests are sent (responses are then awaited up to `drain_timeout`).
    pub duration: Duration,
    /// Optional hard cap on the number of requests sent, over all connections.
    pub max_requests: Option<u64>,
    /// Responses to requests scheduled in this first part of the run are not in the
    /// latency and throughput figures (they still count for exactness).
    pub warmup: Duration,
    /// Number of distinct series (cardinality).
    pub series: u32,
    /// How keys are chosen.
    pub keys: KeyDist,
    /// Which timestamps events carry.
    pub timestamps: TimestampMode,
    /// Fraction of requests that are queries, `0.0..=1.0`.
    pub read_ratio: f64,
    /// Query kinds, chosen uniformly for each read.
    pub queries: Vec<QueryKind>,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Token sent in `HELLO`.
    pub token: Vec<u8>,
    /// Metric name of every series written; unique per run so that runs against a
    /// long-lived server do not mix.
    pub metric: String,
    /// Seed of the key and timestamp generators.
    pub seed: u64,
    /// Use per-connection series aliases after a series' first definition.
    pub aliases: bool,
    /// The exactness check after the run.
    pub verify: VerifyMode,
    /// How long to wait for an answer before giving a connection up.
    pub response_timeout: Duration,
}

impl Workload {
    /// Checks the option ranges; the message names the option.
    pub fn validate(&self) -> Result<(), LoadError> {
        let fail = |m: &str| Err(LoadError::Config(m.to_string()));
        if self.connections == 0 || self.connections > 10_000 {
            return fail("--connections must be between 1 and 10000");
        }
        if self.batch == 0 {
            return fail("--batch must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return fail("--rate must be a number >= 0");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            return fail("--duration must be between 1 ms and 24 h (runs are bounded)");
        }
        if self.warmup >= self.duration {
            return fail("--warmup must be shorter than --duration");
        }
        if self.series == 0 || self.series > 100_000_000 {
            return fail("--series must be between 1 and 100000000");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return fail("--read-ratio must be between 0 and 1");
        }
        if self.pipeline == 0 || self.pipeline > 100_000 {
            return fail("--pipeline must be between 1 and 100000");
        }
        if self.queries.is_empty() {
            return fail("--query names no query kind");
        }
        if self.max_requests == Some(0) {
            return fail("--max-requests must be at least 1");
        }
        Ok(())
    }

    /// Requests per second per connection in open-loop mode (`None` when closed).
    pub fn per_connection_request_rate(&self) -> Option<f64> {
        if self.rate <= 0.0 {
            return None;
        }
        let requests = if self.read_ratio >= 1.0 {
            self.rate
        } else {
            self.rate / f64::from(self.batch) / (1.0 - self.read_ratio)
        };
        Some(requests / self.connections as f64)
    }
}

/// The canonical key of benchmark series `i` of `metric`: `metric{s=000042}`.
pub fn series_key(metric: &str, i: u32) -> String {
    format!("{metric}{{s={i:06}}}")
}

/// Draws series indexes in `0..n` from a [`KeyDist`].
#[derive(Debug, Clone)]
pub struct KeySampler {
    n: u32,
    /// Cumulative Zipf weights, normalized to end at 1.0; `None` for uniform.
    cdf: Option<Vec<f64>>,
}

impl KeySampler {
    /// A sampler over `n > 0` series.
    pub fn new(n: u32, dist: KeyDist) -> Self {
        let cdf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf(s) => {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (0..n)
                    .map(|i| {
                        acc += 1.0 / (f64::from(i) + 1.0).powf(s);
                        acc
                    })
                    .collect();
                for c in &mut cdf {
                    *c /= acc;
                }
                Some(cdf)
            }
        };
        Self { n, cdf }
    }

    /// One series index.
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        match &self.cdf {
            None => u32::try_from(rng.below(u64::from(self.n))).unwrap_or(0),
            Some(cdf) => {
                let u = unit_f64(rng);
                let i = cdf.partition_point(|&c| c < u);
                u32::try_from(i.min(cdf.len().saturating_sub(1))).unwrap_or(0)
            }
        }
    }
}

/// A uniform float in `[0, 1)`.
pub fn unit_f64(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_distributions() {
        assert_eq!("uniform".parse::<KeyDist>().ok(), Some(KeyDist::Uniform));
        assert_eq!("zipf:1.1".parse::<KeyDist>().ok(), Some(KeyDist::Zipf(1.1)));
        assert!("zipf:0".parse::<KeyDist>().is_err());
        assert!("zipf".parse::<KeyDist>().is_err());
        assert!("normal".parse::<KeyDist>().is_err());
    }

    #[test]
    fn zipf_prefers_low_indexes_and_stays_in_range() {
        let s = KeySampler::new(1000, KeyDist::Zipf(1.2));
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            let i = s.sample(&mut rng) as usize;
            counts[i] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
        assert!(counts[0] > 10 * counts[100].max(1));
    }

    #[test]
    fn uniform_covers_every_series() {
        let s = KeySampler::new(10, KeyDist::Uniform);
        let mut rng = Rng::new(2);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[s.sample(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
    }

    #[test]
    fn timestamps_fall_in_their_window() {
        let mut rng = Rng::new(3);
        let now = 1_700_000_000_000;
        for _ in 0..1000 {
            assert_eq!(TimestampMode::Live.timestamp(now, &mut rng), None);
            let late = TimestampMode::Late.timestamp(now, &mut rng).unwrap_or(0);
            assert!(late <= now - MINUTE_MS && late > now - HOUR_MS);
            let back = TimestampMode::Backfill
                .timestamp(now, &mut rng)
                .unwrap_or(0);
            assert!(back <= now - 8 * DAY_MS && back > now - 30 * DAY_MS);
        }
    }

    #[test]
    fn open_loop_rate_is_split_over_connections() {
        let w = Workload {
            connections: 4,
            batch: 10,
            rate: 4000.0,
            duration: Duration::from_secs(1),
            max_requests: None,
            warmup: Duration::ZERO,
            series: 10,
            keys: KeyDist::Uniform,
            timestamps: TimestampMode::Live,
            read_ratio: 0.5,
            queries: vec![QueryKind::Total],
            pipeline: 1,
            token: Vec::new(),
            metric: "m".into(),
            seed: 0,
            aliases: true,
            verify: VerifyMode::Series,
            response_timeout: Duration::from_secs(1),
        };
        // 4000 increments/s = 400 writes/s; half the requests are reads: 800 req/s.
        assert_eq!(w.per_connection_request_rate(), Some(200.0));
        assert!(w.validate().is_ok());
    }
}
