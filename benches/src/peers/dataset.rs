//! The dataset both systems load: per-minute counts of `series` series, a day of
//! minutes for the first label group and the last hour for every series, cut into
//! [`Unit`]s of one minute × `batch` consecutive series (one `INCR` for TallyDB, one
//! import request for VictoriaMetrics). Values are a hash of (seed, series, minute),
//! so every expected answer is computed here without storing the data.

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::workload::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::Rng;

/// Largest count of one (series, minute) cell: values are `1..=MAX_VALUE`.
pub const MAX_VALUE: u64 = 9;

/// The dataset's shape; every figure derives from it.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// Metric name of every series.
    pub metric: String,
    /// Number of series.
    pub series: u32,
    /// Series per value of label `g` (series `i` is in group `i / group`).
    pub group: u32,
    /// Series per [`Unit`] (events per `INCR`, lines per import request).
    pub batch: u32,
    /// End of the data, exclusive: a minute boundary; the last minute is `anchor - 1 min`.
    pub anchor_ms: i64,
    /// Seed of the values.
    pub seed: u64,
}

/// One minute of `first..end` series: one request on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Start of the minute, unix milliseconds.
    pub ts_ms: i64,
    /// First series index.
    pub first: u32,
    /// One past the last series index.
    pub end: u32,
}

impl Dataset {
    /// Minutes of data of the first group (a day).
    pub const DAY_MINUTES: i64 = DAY_MS / MINUTE_MS;
    /// Minutes of data of every series (an hour).
    pub const HOUR_MINUTES: i64 = HOUR_MS / MINUTE_MS;

    /// Number of label groups.
    pub fn groups(&self) -> u32 {
        self.series.div_ceil(self.group.max(1))
    }

    /// Series with a whole day of data: the first group.
    pub fn day_series(&self) -> u32 {
        self.group.min(self.series)
    }

    /// TallyDB's canonical key of series `i`: `peers{g=017,s=017042}`.
    pub fn key(&self, i: u32) -> String {
        format!("{}{{g={:03},s={i:06}}}", self.metric, i / self.group.max(1))
    }

    /// The label value of group `g`.
    pub fn group_value(g: u32) -> String {
        format!("{g:03}")
    }

    /// The label value of series `i`.
    pub fn series_value(i: u32) -> String {
        format!("{i:06}")
    }

    /// The count of series `i` in the minute starting at `ts_ms`: `1..=MAX_VALUE`.
    pub fn value(&self, i: u32, ts_ms: i64) -> i64 {
        let minute = ts_ms.div_euclid(MINUTE_MS) as u64;
        let h = Rng::new(self.seed ^ (u64::from(i) << 32) ^ minute.rotate_left(17)).next_u64();
        (h % MAX_VALUE + 1) as i64
    }

    /// Whether series `i` has data in the minute starting at `ts_ms`.
    pub fn has(&self, i: u32, ts_ms: i64) -> bool {
        let age = (self.anchor_ms - ts_ms) / MINUTE_MS;
        let limit = if i < self.day_series() {
            Self::DAY_MINUTES
        } else {
            Self::HOUR_MINUTES
        };
        i < self.series && ts_ms % MINUTE_MS == 0 && (1..=limit).contains(&age)
    }

    /// Every unit, oldest minute first: the day-only minutes of the first group, then
    /// the last hour of every series.
    pub fn units(&self) -> Vec<Unit> {
        let batch = self.batch.max(1);
        let blocks = |end: u32| {
            (0..end)
                .step_by(batch as usize)
                .map(move |first| (first, (first + batch).min(end)))
        };
        let mut out = Vec::new();
        for age in (1..=Self::DAY_MINUTES).rev() {
            let ts_ms = self.anchor_ms - age * MINUTE_MS;
            let end = if age > Self::HOUR_MINUTES {
                self.day_series()
            } else {
                self.series
            };
            out.extend(blocks(end).map(|(first, end)| Unit { ts_ms, first, end }));
        }
        out
    }

    /// Samples (= events) in the whole dataset.
    pub fn samples(&self) -> u64 {
        let day = u64::from(self.day_series()) * (Self::DAY_MINUTES - Self::HOUR_MINUTES) as u64;
        day + u64::from(self.series) * Self::HOUR_MINUTES as u64
    }

    /// The sum of series `i` over the minutes `[from_ms, to_ms)`.
    pub fn series_sum(&self, i: u32, from_ms: i64, to_ms: i64) -> i64 {
        let first = from_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        (0..)
            .map(|k| first + k * MINUTE_MS)
            .take_while(|&t| t < to_ms)
            .filter(|&t| t >= from_ms && self.has(i, t))
            .map(|t| self.value(i, t))
            .sum()
    }

    /// Per-minute values of series `i` over `[from_ms, to_ms)`: (minute start, value).
    pub fn series_points(&self, i: u32, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        let first = from_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        (0..)
            .map(|k| first + k * MINUTE_MS)
            .take_while(|&t| t < to_ms)
            .filter(|&t| t >= from_ms && self.has(i, t))
            .map(|t| (t, self.value(i, t)))
            .collect()
    }

    /// The sum over the last hour of every series of group `g`.
    pub fn group_hour_sum(&self, g: u32) -> i64 {
        let first = g * self.group;
        let end = (first + self.group).min(self.series);
        (first..end)
            .map(|i| self.series_sum(i, self.anchor_ms - HOUR_MS, self.anchor_ms))
            .sum()
    }

    /// The last-hour sum of every series, by series index.
    pub fn hour_sums(&self) -> Vec<i64> {
        (0..self.series)
            .map(|i| self.series_sum(i, self.anchor_ms - HOUR_MS, self.anchor_ms))
            .collect()
    }

    /// The sum of every sample.
    pub fn total(&self) -> i64 {
        (0..self.series)
            .map(|i| self.series_sum(i, self.anchor_ms - DAY_MS, self.anchor_ms))
            .sum()
    }

    /// The import body of `unit` in Prometheus text format, one sample a line:
    /// `peers{g="017",s="017042"} 7 1700000000000` (timestamp in milliseconds).
    pub fn prometheus_lines(&self, unit: Unit, out: &mut String) {
        for i in unit.first..unit.end {
            let _ = writeln!(
                out,
                "{}{{g=\"{:03}\",s=\"{i:06}\"}} {} {}",
                self.metric,
                i / self.group.max(1),
                self.value(i, unit.ts_ms),
                unit.ts_ms
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Dataset {
        Dataset {
            metric: "peers".into(),
            series: 250,
            group: 100,
            batch: 40,
            anchor_ms: 1_700_000_040_000 / MINUTE_MS * MINUTE_MS,
            seed: 7,
        }
    }

    #[test]
    fn units_cover_every_sample_once() {
        let d = small();
        let units = d.units();
        let mut n = 0u64;
        let mut total = 0i64;
        for u in &units {
            assert!(u.end > u.first && u.end - u.first <= d.batch);
            for i in u.first..u.end {
                assert!(d.has(i, u.ts_ms), "series {i} at {}", u.ts_ms);
                total += d.value(i, u.ts_ms);
                n += 1;
            }
        }
        assert_eq!(n, d.samples());
        assert_eq!(n, 100 * 1440 + 150 * 60);
        assert_eq!(total, d.total());
        // Oldest first.
        assert!(units.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    }

    #[test]
    fn values_vary_and_stay_in_range() {
        let d = small();
        let vals: Vec<i64> = (0..1000).map(|k| d.value(3, k * MINUTE_MS)).collect();
        assert!(vals.iter().all(|v| (1..=MAX_VALUE as i64).contains(v)));
        assert!(vals.contains(&1) && vals.contains(&(MAX_VALUE as i64)));
    }

    #[test]
    fn keys_and_lines_name_the_same_series() {
        let d = small();
        assert_eq!(d.key(142), "peers{g=001,s=000142}");
        let u = Unit {
            ts_ms: d.anchor_ms - MINUTE_MS,
            first: 142,
            end: 144,
        };
        let mut s = String::new();
        d.prometheus_lines(u, &mut s);
        let first = s.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!(
                "peers{{g=\"001\",s=\"000142\"}} {} {}",
                d.value(142, u.ts_ms),
                u.ts_ms
            )
        );
        assert_eq!(s.lines().count(), 2);
    }

    #[test]
    fn sums_respect_the_windows() {
        let d = small();
        let a = d.anchor_ms;
        // Series 150 only has the last hour.
        assert_eq!(d.series_sum(150, a - DAY_MS, a - HOUR_MS), 0);
        assert_eq!(
            d.series_sum(150, a - DAY_MS, a),
            d.series_sum(150, a - HOUR_MS, a)
        );
        // Series 0 has the whole day: 1440 points.
        assert_eq!(d.series_points(0, a - DAY_MS, a).len(), 1440);
        assert_eq!(d.series_points(0, a, a + DAY_MS).len(), 0);
        let g1: i64 = (100..200).map(|i| d.series_sum(i, a - HOUR_MS, a)).sum();
        assert_eq!(d.group_hour_sum(1), g1);
        assert_eq!(
            d.hour_sums().iter().sum::<i64>(),
            (0..3).map(|g| d.group_hour_sum(g)).sum::<i64>()
        );
    }
}
