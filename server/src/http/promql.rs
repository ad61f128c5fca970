//! A PromQL subset evaluated over TallyDB's rollups: the AST from the `promql-parser`
//! crate, translated into engine range queries at the tier that fits the step.
//!
//! TallyDB stores *increments* per bucket, not samples of a cumulative counter, so the
//! functions are defined on sums of increments over windows that end at each evaluation
//! time `t`. Windows are whole minutes (the finest bucket), ending at `t` rounded up to
//! a minute: `increase(x[5m])` at 10:05:00 is the sum of the increments with timestamps
//! in [10:00:00, 10:05:00).
//!
//! - `x` (a bare selector): the increments in the window of one step ending at `t` (one
//!   minute for instant queries and steps under a minute): "increments per step".
//! - `increase(x[d])`: the increments in the window of length `d` ending at `t`;
//!   `rate(x[d])` the same divided by `d` in seconds. Both drop the metric name.
//! - `sum`, `avg`, `min`, `max`, `count` with `by (...)` or `without (...)`;
//!   `topk(k, ...)` and `bottomk(k, ...)`.
//! - Arithmetic (`+ - * / % ^`) between numbers, or between a vector and a number.
//! - Matchers `=`, `!=`, `=~`, `!~` (regular expressions fully anchored, as in
//!   Prometheus): equalities go to the engine's label index, regular expressions filter
//!   the candidate series it returns. A metric name is required; names with dots are
//!   written `{__name__="com.example.music"}`.
//!
//! How the data is read: for a selector with window `w`, one [`Engine::range`] call at a
//! granule `g` that divides `w`, the step and the alignment of the first window end
//! (so every window is a whole number of granules), from the start of the first window
//! to the end of the last; each window is then a difference of prefix sums. The engine
//! picks the coarsest tier whose bucket divides `g`: a 1 h step over 1 h windows is
//! served from hour cells.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::{MatchOp, Matcher as PromMatcher};
use promql_parser::parser::{self, AggregateExpr, BinaryExpr, Call, Expr, VectorSelector};
use tallydb_storage as storage;
use tallydb_storage::{Engine, SeriesKey};

/// One minute in ms: the finest bucket.
pub const MINUTE_MS: i64 = 60_000;
/// Most series one selector may match.
pub const MAX_SERIES: usize = 10_000;

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query is not valid PromQL, or uses what TallyDB does not support (HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// Valid, but failed while running, e.g. too many series or points (HTTP 422).
    #[error("{0}")]
    Execution(String),
    /// The storage engine cannot serve (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<storage::Error> for QueryError {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::Poisoned { .. }
            | storage::Error::DiskFull { .. }
            | storage::Error::Io { .. }
            | storage::Error::Closed => QueryError::Unavailable(e.to_string()),
            other => QueryError::Execution(other.to_string()),
        }
    }
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadData(msg.into())
}

/// Evaluation times: `start`, `start + step`, ... (`points` of them), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// First evaluation time.
    pub start: i64,
    /// Spacing (ignored when `points == 1`).
    pub step: i64,
    /// Number of evaluation times.
    pub points: usize,
    /// Whether this is an instant query (bare selectors then use one-minute windows).
    pub instant: bool,
}

impl Grid {
    /// The `i`-th evaluation time.
    pub fn at(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }

    fn last(&self) -> i64 {
        self.at(self.points.saturating_sub(1))
    }
}

/// Labels of a series, `__name__` included when the metric name is kept.
pub type Labels = BTreeMap<String, String>;

/// One series of a result: a value (or none) per evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// One entry per evaluation time.
    pub values: Vec<Option<f64>>,
}

/// The value of an expression over the grid.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number per evaluation time.
    Scalar(Vec<f64>),
    /// Series.
    Vector(Vec<Series>),
}

/// Parses `query` with the PromQL parser.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    if query.trim().is_empty() {
        return Err(bad("1:1: parse error: no expression found in input"));
    }
    parser::parse(query).map_err(|e| bad(format!("invalid parameter \"query\": {e}")))
}

/// Evaluates a parsed expression over `grid`.
pub fn eval(engine: &Engine, expr: &Expr, grid: &Grid) -> Result<Value, QueryError> {
    Evaluator { engine, grid }.eval(expr)
}

struct Evaluator<'a> {
    engine: &'a Engine,
    grid: &'a Grid,
}

fn ceil_to(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit + if t.rem_euclid(unit) == 0 { 0 } else { unit }
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Evaluator<'_> {
    fn eval(&self, expr: &Expr) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.grid.points])),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => Ok(map_values(self.eval(&u.expr)?, |v| -v, true)),
            Expr::VectorSelector(vs) => {
                let window = if self.grid.instant {
                    MINUTE_MS
                } else {
                    ceil_to(self.grid.step, MINUTE_MS)
                };
                self.select(vs, window, true)
            }
            Expr::MatrixSelector(_) => Err(bad(
                "a range selector such as x[5m] must be the argument of increase() or rate(); \
                 TallyDB does not return raw samples",
            )),
            Expr::Call(call) => self.call(call),
            Expr::Aggregate(agg) => self.aggregate(agg),
            Expr::Binary(b) => self.binary(b),
            Expr::StringLiteral(_) => Err(bad("string literals are not supported as a result")),
            Expr::Subquery(_) => Err(bad("subqueries are not supported by TallyDB")),
            Expr::Extension(_) => Err(bad("unsupported expression")),
        }
    }

    fn call(&self, call: &Call) -> Result<Value, QueryError> {
        let name = call.func.name;
        let per_second = match name {
            "increase" => false,
            "rate" => true,
            other => {
                return Err(bad(format!(
                    "function \"{other}\" is not supported by TallyDB; supported functions: increase, rate"
                )))
            }
        };
        let Some(Expr::MatrixSelector(ms)) = call.args.args.first().map(|a| a.as_ref()) else {
            return Err(bad(format!(
                "{name}() expects a range selector such as x[5m]"
            )));
        };
        let range = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
        if range <= 0 {
            return Err(bad(format!("{name}(): the range must be positive")));
        }
        let window = ceil_to(range, MINUTE_MS);
        let v = self.select(&ms.vs, window, false)?;
        if per_second {
            let secs = window as f64 / 1000.0;
            Ok(map_values(v, |x| x / secs, true))
        } else {
            Ok(v)
        }
    }

    /// Sums of increments per series over windows of `window` ms ending at each
    /// evaluation time (rounded up to a minute).
    fn select(
        &self,
        vs: &VectorSelector,
        window: i64,
        keep_name: bool,
    ) -> Result<Value, QueryError> {
        if vs.offset.is_some() || vs.at.is_some() {
            return Err(bad("offset and @ modifiers are not supported by TallyDB"));
        }
        if !vs.matchers.or_matchers.is_empty() {
            return Err(bad("\"or\" inside a selector is not supported by TallyDB"));
        }
        let matchers = &vs.matchers.matchers;
        let name = vs
            .name
            .clone()
            .or_else(|| {
                matchers
                    .iter()
                    .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                    .map(|m| m.value.clone())
            })
            .ok_or_else(|| {
                bad("a metric name is required: write name{...} or {__name__=\"com.example.name\"}")
            })?;
        let candidates = matching_series(self.engine, &name, matchers)?;
        let mut out = Vec::with_capacity(candidates.len());
        if candidates.is_empty() {
            return Ok(Value::Vector(out));
        }
        let grid = self.grid;
        // Every window end is a whole minute; the granule divides the window, the step
        // (when it is a whole number of minutes) and the first end's alignment.
        let first_end = ceil_to(grid.start, MINUTE_MS);
        let mut g = gcd(window, first_end);
        if grid.points > 1 {
            g = gcd(
                g,
                if grid.step % MINUTE_MS == 0 {
                    grid.step
                } else {
                    MINUTE_MS
                },
            );
        }
        let g = g.max(MINUTE_MS);
        let from = first_end - window;
        let to = ceil_to(grid.last(), MINUTE_MS);
        let granules = usize::try_from((to - from) / g).unwrap_or(0);
        // One call: the candidates' equality matchers, grouped by every label they
        // carry, so each group is one series.
        let label_names: BTreeSet<String> = candidates
            .iter()
            .flat_map(|k| k.labels().map(|(l, _)| l.to_string()))
            .collect();
        let engine_matchers = engine_matchers(matchers);
        let q = storage::RangeQuery {
            selector: storage::Selector::Metric {
                name: name.clone(),
                matchers: engine_matchers,
                group_by: label_names.iter().cloned().collect(),
            },
            from,
            to,
            step: storage::Step::Fixed(g),
            agg: storage::Agg::Sum,
        };
        let r = self.engine.range(&q)?;
        let wanted: BTreeSet<Vec<(String, String)>> = candidates
            .iter()
            .map(|k| {
                label_names
                    .iter()
                    .map(|l| {
                        (
                            l.clone(),
                            k.label(l).map_or_else(String::new, |v| v.into_owned()),
                        )
                    })
                    .collect()
            })
            .collect();
        for group in &r.groups {
            if !wanted.contains(&group.labels) {
                continue;
            }
            let mut prefix = vec![0i64; granules + 1];
            let mut sums = vec![0i64; granules];
            for (ts, v) in &group.points {
                if *ts < from || *ts >= to {
                    continue;
                }
                let k = usize::try_from((ts - from) / g).unwrap_or(0);
                if let Some(slot) = sums.get_mut(k) {
                    *slot += match v {
                        storage::Value::Int(i) => *i,
                        storage::Value::Float(f) => *f as i64,
                    };
                }
            }
            for k in 0..granules {
                prefix[k + 1] = prefix[k] + sums[k];
            }
            let values = (0..grid.points)
                .map(|i| {
                    let end = ceil_to(grid.at(i), MINUTE_MS);
                    let ke = usize::try_from((end - from) / g).unwrap_or(0).min(granules);
                    let ks = usize::try_from((end - window - from) / g)
                        .unwrap_or(0)
                        .min(ke);
                    Some((prefix[ke] - prefix[ks]) as f64)
                })
                .collect();
            let mut labels: Labels = group
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect();
            if keep_name {
                labels.insert("__name__".into(), name.clone());
            }
            out.push(Series { labels, values });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Vector(out))
    }

    fn aggregate(&self, agg: &AggregateExpr) -> Result<Value, QueryError> {
        let op = agg.op.to_string();
        let input = match self.eval(&agg.expr)? {
            Value::Vector(v) => v,
            Value::Scalar(_) => {
                return Err(bad(format!(
                    "expected type instant vector in aggregation expression, got scalar ({op})"
                )))
            }
        };
        let key_of = |labels: &Labels| -> Labels {
            match &agg.modifier {
                None => Labels::new(),
                Some(parser::LabelModifier::Include(ls)) => labels
                    .iter()
                    .filter(|(k, _)| ls.labels.iter().any(|l| l == *k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Some(parser::LabelModifier::Exclude(ls)) => labels
                    .iter()
                    .filter(|(k, _)| *k != "__name__" && !ls.labels.iter().any(|l| l == *k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        };
        let mut groups: BTreeMap<Labels, Vec<&Series>> = BTreeMap::new();
        for s in &input {
            groups.entry(key_of(&s.labels)).or_default().push(s);
        }
        let points = self.grid.points;
        match op.as_str() {
            "topk" | "bottomk" => {
                let k = match agg.param.as_deref().map(|p| self.eval(p)) {
                    Some(Ok(Value::Scalar(k))) => k.first().copied().unwrap_or(0.0),
                    _ => return Err(bad(format!("{op}() expects a number as its first argument"))),
                };
                let k = if k.is_finite() && k > 0.0 { k as usize } else { 0 };
                let mut keep: Vec<Vec<bool>> = vec![vec![false; points]; input.len()];
                let index: BTreeMap<*const Series, usize> = input
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s as *const Series, i))
                    .collect();
                for members in groups.values() {
                    #[allow(clippy::needless_range_loop)]
                    for t in 0..points {
                        let mut present: Vec<(f64, usize)> = members
                            .iter()
                            .filter_map(|s| {
                                let i = index.get(&(*s as *const Series)).copied()?;
                                s.values[t].map(|v| (v, i))
                            })
                            .collect();
                        present.sort_by(|a, b| {
                            let o = a.0.total_cmp(&b.0);
                            if op == "topk" {
                                o.reverse()
                            } else {
                                o
                            }
                        });
                        for (_, i) in present.into_iter().take(k) {
                            keep[i][t] = true;
                        }
                    }
                }
                let out = input
                    .iter()
                    .zip(keep)
                    .filter(|(_, kp)| kp.iter().any(|x| *x))
                    .map(|(s, kp)| Series {
                        labels: s.labels.clone(),
                        values: s
                            .values
                            .iter()
                            .zip(kp)
                            .map(|(v, k)| if k { *v } else { None })
                            .collect(),
                    })
                    .collect();
                Ok(Value::Vector(out))
            }
            "sum" | "avg" | "min" | "max" | "count" => {
                let out = groups
                    .into_iter()
                    .map(|(labels, members)| {
                        let values = (0..points)
                            .map(|t| {
                                let vals: Vec<f64> =
                                    members.iter().filter_map(|s| s.values[t]).collect();
                                if vals.is_empty() {
                                    return None;
                                }
                                let n = vals.len() as f64;
                                Some(match op.as_str() {
                                    "sum" => vals.iter().sum(),
                                    "avg" => vals.iter().sum::<f64>() / n,
                                    "min" => vals.iter().copied().fold(f64::INFINITY, f64::min),
                                    "max" => {
                                        vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                                    }
                                    _ => n,
                                })
                            })
                            .collect();
                        Series { labels, values }
                    })
                    .collect();
                Ok(Value::Vector(out))
            }
            other => Err(bad(format!(
                "aggregation \"{other}\" is not supported by TallyDB; supported: sum, avg, min, max, count, topk, bottomk"
            ))),
        }
    }

    fn binary(&self, b: &BinaryExpr) -> Result<Value, QueryError> {
        let op = b.op.to_string();
        let f: fn(f64, f64) -> f64 = match op.as_str() {
            "+" => |a, b| a + b,
            "-" => |a, b| a - b,
            "*" => |a, b| a * b,
            "/" => |a, b| a / b,
            "%" => |a, b| a % b,
            "^" => f64::powf,
            other => {
                return Err(bad(format!(
                    "operator \"{other}\" is not supported by TallyDB; supported: + - * / % ^ with a number on one side"
                )))
            }
        };
        let lhs = self.eval(&b.lhs)?;
        let rhs = self.eval(&b.rhs)?;
        match (lhs, rhs) {
            (Value::Scalar(a), Value::Scalar(c)) => Ok(Value::Scalar(
                a.iter().zip(&c).map(|(x, y)| f(*x, *y)).collect(),
            )),
            (Value::Vector(v), Value::Scalar(c)) => Ok(Value::Vector(
                v.into_iter()
                    .map(|s| Series {
                        labels: drop_name(s.labels),
                        values: s
                            .values
                            .iter()
                            .zip(&c)
                            .map(|(x, y)| x.map(|x| f(x, *y)))
                            .collect(),
                    })
                    .collect(),
            )),
            (Value::Scalar(c), Value::Vector(v)) => Ok(Value::Vector(
                v.into_iter()
                    .map(|s| Series {
                        labels: drop_name(s.labels),
                        values: s
                            .values
                            .iter()
                            .zip(&c)
                            .map(|(x, y)| x.map(|x| f(*y, x)))
                            .collect(),
                    })
                    .collect(),
            )),
            (Value::Vector(_), Value::Vector(_)) => Err(bad(
                "arithmetic between two vectors is not supported by TallyDB; use a number on one side",
            )),
        }
    }
}

fn drop_name(mut labels: Labels) -> Labels {
    labels.remove("__name__");
    labels
}

fn map_values(v: Value, f: impl Fn(f64) -> f64, drop: bool) -> Value {
    match v {
        Value::Scalar(xs) => Value::Scalar(xs.into_iter().map(f).collect()),
        Value::Vector(ss) => Value::Vector(
            ss.into_iter()
                .map(|s| Series {
                    labels: if drop { drop_name(s.labels) } else { s.labels },
                    values: s.values.into_iter().map(|x| x.map(&f)).collect(),
                })
                .collect(),
        ),
    }
}

/// The equality matchers the engine's label index can use (`=` with a value and `!=`);
/// everything else is checked on the candidates.
fn engine_matchers(matchers: &[PromMatcher]) -> Vec<storage::Matcher> {
    matchers
        .iter()
        .filter(|m| m.name != "__name__")
        .filter_map(|m| match &m.op {
            MatchOp::Equal if !m.value.is_empty() => {
                Some(storage::Matcher::Eq(m.name.clone(), m.value.clone()))
            }
            MatchOp::NotEqual => Some(storage::Matcher::Ne(m.name.clone(), m.value.clone())),
            _ => None,
        })
        .collect()
}

/// The series of metric `name` that pass every PromQL matcher (a missing label counts
/// as the empty string, as in Prometheus).
pub fn matching_series(
    engine: &Engine,
    name: &str,
    matchers: &[PromMatcher],
) -> Result<Vec<SeriesKey>, QueryError> {
    let selector = storage::Selector::Metric {
        name: name.to_string(),
        matchers: engine_matchers(matchers),
        group_by: Vec::new(),
    };
    selector
        .validate()
        .map_err(|e| bad(format!("invalid selector: {e}")))?;
    let (keys, truncated) = engine.series(&selector, MAX_SERIES)?;
    if truncated {
        return Err(QueryError::Execution(format!(
            "more than {MAX_SERIES} series match the selector of {name}; narrow it with label matchers"
        )));
    }
    Ok(keys
        .iter()
        .filter_map(|k| SeriesKey::parse(k).ok())
        .filter(|k| {
            matchers.iter().all(|m| {
                let value = if m.name == "__name__" {
                    std::borrow::Cow::Borrowed(k.name())
                } else {
                    k.label(&m.name).unwrap_or_default()
                };
                m.is_match(&value)
            })
        })
        .collect())
}

/// The series selected by a `match[]` argument (a bare vector selector).
pub fn series_of_match(engine: &Engine, text: &str) -> Result<Vec<SeriesKey>, QueryError> {
    let expr =
        parser::parse(text).map_err(|e| bad(format!("invalid parameter \"match[]\": {e}")))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(bad(format!(
            "invalid parameter \"match[]\": {text:?} is not a series selector"
        )));
    };
    let name = vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone())
    });
    match name {
        Some(name) => matching_series(engine, &name, &vs.matchers.matchers),
        // No name: every series, filtered (label values and series listings).
        None => Ok(all_series(engine)
            .into_iter()
            .filter(|k| {
                vs.matchers.matchers.iter().all(|m| {
                    let value = if m.name == "__name__" {
                        std::borrow::Cow::Borrowed(k.name())
                    } else {
                        k.label(&m.name).unwrap_or_default()
                    };
                    m.is_match(&value)
                })
            })
            .collect()),
    }
}

/// Every series in the dictionary (ids are dense from 0).
pub fn all_series(engine: &Engine) -> Vec<SeriesKey> {
    let mut out = Vec::new();
    let mut id = 0u32;
    while let Some(k) = engine.series_key(id) {
        out.push(k);
        id += 1;
    }
    out
}

/// The labels of a series key as Prometheus shows them, `__name__` first.
pub fn labels_of(key: &SeriesKey) -> Labels {
    let mut l: Labels = key
        .labels()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("__name__".into(), key.name().to_string());
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_up_to_whole_minutes() {
        assert_eq!(ceil_to(120_000, MINUTE_MS), 120_000);
        assert_eq!(ceil_to(120_001, MINUTE_MS), 180_000);
        assert_eq!(ceil_to(-1, MINUTE_MS), 0);
        assert_eq!(gcd(300_000, 3_600_000), 300_000);
        assert_eq!(gcd(7_200_000, 3_600_000), 3_600_000);
    }

    #[test]
    fn unsupported_constructs_are_bad_data() {
        let grid = Grid {
            start: 0,
            step: 60_000,
            points: 1,
            instant: true,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(
            dir.path(),
            storage::Options {
                background: false,
                ..storage::Options::default()
            },
        )
        .expect("open");
        for (q, needle) in [
            ("histogram_quantile(0.9, x)", "not supported"),
            ("x offset 5m", "offset"),
            ("x[5m]", "range selector"),
            ("x / x", "two vectors"),
            ("{a=\"b\"}", "metric name is required"),
            ("x > 1", "not supported"),
        ] {
            let e = eval(&engine, &parse(q).expect(q), &grid).expect_err(q);
            assert!(
                matches!(&e, QueryError::BadData(m) if m.contains(needle)),
                "{q}: {e:?}"
            );
        }
        assert_eq!(
            eval(&engine, &parse("2 * 3 + 1").expect("parse"), &grid),
            Ok(Value::Scalar(vec![7.0]))
        );
        assert!(matches!(parse("sum(("), Err(QueryError::BadData(_))));
        assert!(matches!(parse("nosuchfn(x)"), Err(QueryError::BadData(_))));
    }
}
