//! The query set asked of both systems ([`PeerQuery`]), the parameters of one
//! repetition ([`Params`]), and answers reduced to a comparable form ([`Answer`]).

use serde::Serialize;

use super::dataset::Dataset;
use crate::load::workload::{DAY_MS, HOUR_MS};
use crate::Rng;

/// One query of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerQuery {
    /// One series (of the first group) over the last day at a 1-minute step.
    DayRange,
    /// The total of one series over the last day.
    DayTotal,
    /// The total of one series over the last 30 days (only the last day holds data).
    MonthTotal,
    /// The sum over the last hour of the 1,000 series of one `g` label value.
    GroupHourSum,
    /// The sum over the last hour of every series.
    AllHourSum,
    /// The 10 series with the largest sums over the last hour.
    AllHourTop10,
}

impl PeerQuery {
    /// Every query, in table order.
    pub const ALL: [PeerQuery; 6] = [
        Self::DayRange,
        Self::DayTotal,
        Self::MonthTotal,
        Self::GroupHourSum,
        Self::AllHourSum,
        Self::AllHourTop10,
    ];

    /// Short name (JSON, table).
    pub fn name(self) -> &'static str {
        match self {
            Self::DayRange => "one series, 1 day at 1m",
            Self::DayTotal => "one series, total over 1 day",
            Self::MonthTotal => "one series, total over 30 days",
            Self::GroupHourSum => "sum, last hour, 1,000 series by label",
            Self::AllHourSum => "sum, last hour, all series",
            Self::AllHourTop10 => "top 10, last hour, all series",
        }
    }

    /// TallyDB's p99 target in microseconds, where the requirement sets one.
    pub fn target_p99_us(self) -> Option<u64> {
        match self {
            Self::DayRange => Some(1_000),
            Self::MonthTotal => Some(300),
            Self::GroupHourSum => Some(2_000),
            Self::AllHourSum | Self::AllHourTop10 => Some(40_000),
            Self::DayTotal => None,
        }
    }

    /// Whether it reads every series (fewer repetitions).
    pub fn is_heavy(self) -> bool {
        matches!(self, Self::AllHourSum | Self::AllHourTop10)
    }

    /// The query's time window `[from, to)` relative to the dataset's anchor.
    pub fn window(self, d: &Dataset) -> (i64, i64) {
        let to = d.anchor_ms;
        match self {
            Self::DayRange | Self::DayTotal => (to - DAY_MS, to),
            Self::MonthTotal => (to - 30 * DAY_MS, to),
            Self::GroupHourSum | Self::AllHourSum | Self::AllHourTop10 => (to - HOUR_MS, to),
        }
    }

    /// Draws the parameters of one repetition: a series of the first group, or a group.
    pub fn params(self, d: &Dataset, rng: &mut Rng) -> Params {
        let series = rng.below(u64::from(d.day_series().max(1))) as u32;
        let group = rng.below(u64::from(d.groups().max(1))) as u32;
        Params { series, group }
    }

    /// The exact answer, computed from the dataset. `hour_sums` is
    /// [`Dataset::hour_sums`] (computed once).
    pub fn expected(self, d: &Dataset, p: Params, hour_sums: &[i64]) -> Answer {
        let (from, to) = self.window(d);
        match self {
            Self::DayRange => Answer::Points(d.series_points(p.series, from, to)),
            Self::DayTotal | Self::MonthTotal => Answer::Sum(d.series_sum(p.series, from, to)),
            Self::GroupHourSum => Answer::Sum(d.group_hour_sum(p.group)),
            Self::AllHourSum => Answer::Sum(hour_sums.iter().sum()),
            Self::AllHourTop10 => {
                let mut v = hour_sums.to_vec();
                v.sort_unstable_by(|a, b| b.cmp(a));
                v.truncate(10);
                Answer::Top(v)
            }
        }
    }
}

/// What one repetition asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// A series index of the first group (the ones with a day of data).
    pub series: u32,
    /// A group index.
    pub group: u32,
}

/// An answer in a form both systems' answers reduce to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Non-empty points: (minute start in unix ms, value), in time order.
    Points(Vec<(i64, i64)>),
    /// One number.
    Sum(i64),
    /// The top sums, largest first (series names are left out: equal sums tie).
    Top(Vec<i64>),
}

impl Answer {
    /// A one-line summary for the report.
    pub fn summary(&self) -> String {
        match self {
            Self::Points(p) => format!(
                "{} points, sum {}",
                p.len(),
                p.iter().map(|(_, v)| v).sum::<i64>()
            ),
            Self::Sum(s) => format!("sum {s}"),
            Self::Top(v) => format!("top sums {v:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::workload::MINUTE_MS;

    #[test]
    fn expected_answers_follow_the_dataset() {
        let d = Dataset {
            metric: "peers".into(),
            series: 300,
            group: 100,
            batch: 100,
            anchor_ms: 1_700_000_000_000 / MINUTE_MS * MINUTE_MS,
            seed: 1,
        };
        let hs = d.hour_sums();
        let p = Params {
            series: 5,
            group: 2,
        };
        let Answer::Points(pts) = PeerQuery::DayRange.expected(&d, p, &hs) else {
            panic!("points expected");
        };
        assert_eq!(pts.len(), 1440);
        let day = PeerQuery::DayTotal.expected(&d, p, &hs);
        assert_eq!(day, Answer::Sum(pts.iter().map(|(_, v)| v).sum()));
        assert_eq!(PeerQuery::MonthTotal.expected(&d, p, &hs), day);
        let Answer::Top(top) = PeerQuery::AllHourTop10.expected(&d, p, &hs) else {
            panic!("top expected");
        };
        assert_eq!(top.len(), 10);
        assert!(top.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(top[0], hs.iter().copied().max().unwrap_or(0));
        assert_eq!(
            PeerQuery::AllHourSum.expected(&d, p, &hs),
            Answer::Sum((0..3).map(|g| d.group_hour_sum(g)).sum())
        );
    }
}
