//! Query types and the pure planning functions behind them: which tier serves
//! which part of a time range, and how a range is cut into aligned pieces so that
//! every answer is exact.

use crate::error::{Error, Result};
use crate::series::{validate_label_name, validate_name, SeriesKey};
use crate::time::{Retention, Tier, MINUTE_MS};

/// Most points a fixed-step range query may ask for.
pub const MAX_POINTS: i64 = 100_000;
/// Points an `auto` step aims to stay under.
pub const AUTO_POINTS: i64 = 1_440;
/// Timestamps are clamped to ±2^50 ms (about 35,000 years) to keep arithmetic exact.
pub const TIME_LIMIT: i64 = 1 << 50;

/// A label matcher of a metric selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// The label equals the value.
    Eq(String, String),
    /// The label differs from the value (a missing label counts as empty).
    Ne(String, String),
}

/// Which series a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One series by key.
    Exact(String),
    /// Every series of a metric that passes all matchers, aggregated per distinct
    /// combination of the `group_by` labels (all together when empty).
    Metric {
        /// Metric name; empty for any metric (then at least one `Eq` matcher with a
        /// non-empty value is required).
        name: String,
        /// Label matchers, all of which must hold.
        matchers: Vec<Matcher>,
        /// Labels to group by.
        group_by: Vec<String>,
    },
    /// Every series whose name is the prefix or lies under it in the dotted
    /// hierarchy (`com.example` covers `com.example.music`), aggregated together.
    Prefix(String),
    /// A prefix as [`Selector::Prefix`], aggregated per distinct combination of the
    /// `group_by` labels, where [`CHILD_LABEL`] stands for the path segment of the
    /// name just below the prefix (`music` for `com.example.music.jazz` under
    /// `com.example.`; empty for the prefix's own name).
    PrefixBy {
        /// The prefix.
        prefix: String,
        /// Labels to group by, possibly [`CHILD_LABEL`].
        group_by: Vec<String>,
    },
}

/// The group-by name of a prefix selector that groups by the next path segment of
/// the metric name (a reserved label name: no series carries it).
pub const CHILD_LABEL: &str = "__child__";

/// The path segment of `name` just below `prefix` (empty when `name` is the prefix
/// itself), for grouping by [`CHILD_LABEL`].
pub fn child_segment<'n>(prefix: &str, name: &'n str) -> &'n str {
    let rest = name.strip_prefix(prefix).unwrap_or("");
    let rest = if prefix.ends_with('.') {
        rest
    } else {
        rest.strip_prefix('.').unwrap_or(rest)
    };
    rest.split('.').next().unwrap_or("")
}

impl Selector {
    /// Checks names and labels, so that a typo gets an error rather than nothing.
    pub fn validate(&self) -> Result<()> {
        let invalid = |e: crate::series::SeriesError| Error::InvalidQuery(e.to_string());
        match self {
            Selector::Exact(k) => SeriesKey::parse(k).map(|_| ()).map_err(invalid),
            Selector::Metric {
                name,
                matchers,
                group_by,
            } => {
                if name.is_empty() {
                    // Any metric: a PromQL-style selector needs one matcher that
                    // narrows it, or it would select everything.
                    if !matchers
                        .iter()
                        .any(|m| matches!(m, Matcher::Eq(_, v) if !v.is_empty()))
                    {
                        return Err(Error::InvalidQuery(
                            "a selector without a metric name needs a matcher label=value with a non-empty value".into(),
                        ));
                    }
                } else {
                    validate_name(name).map_err(invalid)?;
                }
                for m in matchers {
                    let (Matcher::Eq(l, _) | Matcher::Ne(l, _)) = m;
                    validate_label_name(l).map_err(invalid)?;
                }
                for l in group_by {
                    validate_label_name(l).map_err(invalid)?;
                }
                Ok(())
            }
            Selector::Prefix(p) => {
                let trimmed = p.strip_suffix('.').unwrap_or(p);
                validate_name(trimmed).map_err(invalid)
            }
            Selector::PrefixBy { prefix, group_by } => {
                let trimmed = prefix.strip_suffix('.').unwrap_or(prefix);
                validate_name(trimmed).map_err(invalid)?;
                for l in group_by.iter().filter(|l| *l != CHILD_LABEL) {
                    validate_label_name(l).map_err(invalid)?;
                }
                Ok(())
            }
        }
    }

    /// The group-by labels, if any.
    pub fn group_by(&self) -> &[String] {
        match self {
            Selector::Metric { group_by, .. } | Selector::PrefixBy { group_by, .. } => group_by,
            _ => &[],
        }
    }
}

/// The aggregate a range query returns per point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// Sum of deltas.
    Sum,
    /// Number of events.
    Count,
    /// Sum divided by count.
    Avg,
    /// Smallest delta.
    Min,
    /// Largest delta.
    Max,
    /// Sum per second of the step.
    Rate,
}

/// The spacing of points in a range answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The finest tier that still retains the range, with at most
    /// [`AUTO_POINTS`] points.
    Auto,
    /// A fixed step in milliseconds: a positive multiple of one minute.
    Fixed(i64),
}

/// A range query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeQuery {
    /// Which series.
    pub selector: Selector,
    /// Start (ms, inclusive).
    pub from: i64,
    /// End (ms, exclusive).
    pub to: i64,
    /// Point spacing.
    pub step: Step,
    /// Aggregate per point.
    pub agg: Agg,
}

/// A value in an answer: exact integers for sums, counts and extremes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact integer.
    Int(i64),
    /// A ratio (avg, rate).
    Float(f64),
}

/// One series (or group of series) of a range answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Group-by label values, empty when not grouped.
    pub labels: Vec<(String, String)>,
    /// `(step start ms, value)`; empty steps are 0 for sum, count and rate and
    /// absent for avg, min and max.
    pub points: Vec<(i64, Value)>,
}

/// Where an answer came from and how fresh it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    /// Tiers that served the answer (bitmask of [`Tier::bit`]).
    pub tiers: u8,
    /// Buckets starting at or after this time (ms) may still grow.
    pub closed_until: i64,
    /// Start of the range actually covered (ms).
    pub from: i64,
    /// End of the range actually covered (ms).
    pub to: i64,
    /// Series matched by the selector.
    pub series: usize,
}

/// Answer to a range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeResult {
    /// Step used, in ms.
    pub step: i64,
    /// Groups, sorted by labels.
    pub groups: Vec<Group>,
    /// Source and freshness.
    pub provenance: Provenance,
}

/// Answer to a total query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalResult {
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
    /// Source and freshness.
    pub provenance: Provenance,
}

/// One group of a grouped total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalGroup {
    /// `(label, value)` in the order of the selector's group-by list.
    pub labels: Vec<(String, String)>,
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
}

/// Answer to a grouped total query: one total per group, sorted by label values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalGroupsResult {
    /// The groups that matched at least one series.
    pub groups: Vec<TotalGroup>,
    /// Source and freshness.
    pub provenance: Provenance,
}

/// A top-k query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopQuery {
    /// Which series compete.
    pub selector: Selector,
    /// Start (ms, inclusive).
    pub from: i64,
    /// End (ms, exclusive).
    pub to: i64,
    /// How many entries to return.
    pub n: usize,
    /// Rank values of this label instead of whole series.
    pub by_label: Option<String>,
}

/// One entry of a top-k answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    /// Series key, or the label value when ranking by label.
    pub name: String,
    /// Sum over the range.
    pub sum: i64,
    /// Events over the range.
    pub count: u64,
}

/// Answer to a top-k query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopResult {
    /// Largest sums first; ties by name.
    pub entries: Vec<TopEntry>,
    /// Source and freshness.
    pub provenance: Provenance,
}

/// A run of buckets of one tier: `from_bucket..to_bucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The tier.
    pub tier: Tier,
    /// First bucket.
    pub from_bucket: i64,
    /// One past the last bucket.
    pub to_bucket: i64,
}

/// How to read a time range exactly: disjoint pieces covering `from..to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Pieces in time order.
    pub pieces: Vec<Piece>,
    /// Start actually covered.
    pub from: i64,
    /// End actually covered.
    pub to: i64,
}

impl Plan {
    /// Bitmask of the tiers used.
    pub fn tiers(&self) -> u8 {
        self.pieces.iter().fold(0, |m, p| m | p.tier.bit())
    }

    /// Start of the open bucket of the finest tier used: later buckets may grow.
    pub fn closed_until(&self, now: i64) -> i64 {
        let tier = self.pieces.last().map(|p| p.tier).unwrap_or(Tier::Minute);
        tier.start_of(tier.bucket_of(now))
    }
}

/// Clamps a timestamp into the supported range.
pub fn clamp_time(t: i64) -> i64 {
    t.clamp(-TIME_LIMIT, TIME_LIMIT)
}

fn floor_to(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

/// Plans `from..to` as aligned pieces: at each point the coarsest tier that
/// retains it, is aligned there, fits before `to` and, when `step` is given, does
/// not cross a step boundary. Where only a coarser tier retains the data the piece
/// overshoots (the answer reports the range it really covers). Pure: no I/O.
pub fn plan(from: i64, to: i64, step: Option<i64>, retention: &Retention, now: i64) -> Plan {
    let (from, to) = (clamp_time(from), clamp_time(to));
    let oldest = retention.oldest_accepted(now).max(-TIME_LIMIT);
    let mut p = from.max(oldest);
    let mut pieces: Vec<Piece> = Vec::new();
    let Some(first) = Tier::ALL.into_iter().find(|t| retention.covers(*t, p, now)) else {
        return Plan {
            pieces,
            from: p,
            to: p,
        };
    };
    p = floor_to(p, first.bucket_ms());
    let start = p;
    while p < to {
        let candidates = || {
            Tier::ALL
                .into_iter()
                .rev()
                .filter(move |t| retention.covers(*t, p, now) && p.rem_euclid(t.bucket_ms()) == 0)
        };
        let fits =
            |t: &Tier| p + t.bucket_ms() <= to && step.is_none_or(|s| s % t.bucket_ms() == 0);
        let (tier, n) = match candidates().find(fits) {
            Some(t) => {
                // Take as many buckets as possible before a coarser tier could
                // take over (at its next boundary) or `to` is reached.
                let mut stop = floor_to(to, t.bucket_ms());
                for c in Tier::ALL
                    .into_iter()
                    .filter(|c| c.bucket_ms() > t.bucket_ms())
                {
                    if step.is_none_or(|s| s % c.bucket_ms() == 0) {
                        let next = floor_to(p, c.bucket_ms()) + c.bucket_ms();
                        stop = stop.min(next.max(p + t.bucket_ms()));
                    }
                }
                (t, ((stop - p) / t.bucket_ms()).max(1))
            }
            // Only tiers too coarse for the step or the end: overshoot with the
            // finest one retaining this point.
            None => match candidates().next_back() {
                Some(t) => (t, 1),
                None => break,
            },
        };
        let b = tier.bucket_of(p);
        match pieces.last_mut() {
            Some(last) if last.tier == tier && last.to_bucket == b => last.to_bucket = b + n,
            _ => pieces.push(Piece {
                tier,
                from_bucket: b,
                to_bucket: b + n,
            }),
        }
        p += n * tier.bucket_ms();
    }
    Plan {
        pieces,
        from: start,
        to: p.max(start),
    }
}

/// Resolves the step of a range query and checks its limits.
pub fn resolve_step(q: &RangeQuery, retention: &Retention, now: i64) -> Result<i64> {
    if q.from >= q.to {
        return Err(Error::InvalidQuery(format!(
            "empty time range: from {} is not before to {}",
            q.from, q.to
        )));
    }
    let span = clamp_time(q.to) - clamp_time(q.from);
    match q.step {
        Step::Fixed(s) => {
            if s <= 0 || s % MINUTE_MS != 0 {
                return Err(Error::InvalidQuery(format!(
                    "step {s} ms is not a positive multiple of one minute"
                )));
            }
            let points = span / s + 1;
            if points > MAX_POINTS {
                return Err(Error::InvalidQuery(format!(
                    "{points} points at step {s} ms exceed the limit of {MAX_POINTS}; use a larger step"
                )));
            }
            Ok(s)
        }
        Step::Auto => {
            let from = clamp_time(q.from).max(retention.oldest_accepted(now));
            let tier = Tier::ALL
                .into_iter()
                .find(|t| retention.covers(*t, from, now))
                .unwrap_or(Tier::Day);
            let b = tier.bucket_ms();
            let k = (span + b * AUTO_POINTS - 1) / (b * AUTO_POINTS);
            Ok(b * k.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY_MS, HOUR_MS};

    fn covered(p: &Plan) -> i64 {
        p.pieces
            .iter()
            .map(|x| (x.to_bucket - x.from_bucket) * x.tier.bucket_ms())
            .sum()
    }

    #[test]
    fn totals_use_coarse_buckets_in_the_middle() {
        let r = Retention::default();
        let now = 1000 * DAY_MS;
        let from = now - 3 * DAY_MS - 5 * HOUR_MS - 7 * MINUTE_MS;
        let p = plan(from, now, None, &r, now);
        assert_eq!((p.from, p.to), (from, now));
        assert_eq!(covered(&p), now - from);
        let tiers: Vec<Tier> = p.pieces.iter().map(|x| x.tier).collect();
        assert_eq!(tiers, vec![Tier::Minute, Tier::Hour, Tier::Day]);
    }

    #[test]
    fn retention_boundaries_snap_outward_and_stay_disjoint() {
        let r = Retention::default();
        let now = 1000 * DAY_MS + 13 * MINUTE_MS;
        let from = now - 8 * DAY_MS - 17 * MINUTE_MS; // minutes gone here
        let p = plan(from, now, None, &r, now);
        assert_eq!(p.from, floor_to(from, HOUR_MS));
        assert_eq!(covered(&p), p.to - p.from);
        for w in p.pieces.windows(2) {
            let end = w[0].tier.start_of(w[0].to_bucket);
            assert_eq!(end, w[1].tier.start_of(w[1].from_bucket));
        }
    }

    #[test]
    fn steps_are_not_crossed_unless_only_a_coarse_tier_remains() {
        let r = Retention::default();
        let now = 1000 * DAY_MS;
        let p = plan(now - 2 * DAY_MS, now, Some(5 * MINUTE_MS), &r, now);
        assert!(p.pieces.iter().all(|x| x.tier == Tier::Minute));
        let p = plan(now - 30 * DAY_MS, now, Some(5 * MINUTE_MS), &r, now);
        assert_eq!(p.pieces[0].tier, Tier::Hour);
        assert_eq!(p.pieces.last().map(|x| x.tier), Some(Tier::Minute));
        let p = plan(now - 30 * DAY_MS, now, Some(DAY_MS), &r, now);
        assert!(p.pieces.iter().all(|x| x.tier == Tier::Day));
    }

    #[test]
    fn huge_ranges_plan_quickly() {
        let r = Retention::default();
        let p = plan(i64::MIN, i64::MAX, None, &r, 0);
        assert!(p.pieces.len() < 16);
    }
}
