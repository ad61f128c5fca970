//! The queries: `RANGE`, `TOTAL`, `TOP` and `SERIES`, from wire queries to the engine's
//! and from the engine's results to the answers, which borrow the engine's strings (no
//! copy between the result and the encoded frame).

use bytes::BytesMut;
use tallydb_protocol as proto;
use tallydb_protocol::{encode_response, ErrorCode, ErrorReply, Response};
use tallydb_storage as storage;
use tallydb_storage::Engine;

use super::{storage_error, Handled};

/// Answers a `TOTAL`: one sum and count over the range actually covered, or one per
/// group (`TOTAL_GROUPS_OK`) when the selector groups.
pub fn total(engine: &Engine, id: u32, q: &proto::TotalQuery<'_>, out: &mut BytesMut) -> Handled {
    let sel = selector(&q.selector);
    if !sel.group_by().is_empty() {
        return total_groups(engine, id, &sel, q, out);
    }
    let r = engine
        .total(&sel, q.from_ms, q.to_ms)
        .map_err(|e| storage_error(&e))?;
    let ok = proto::TotalOk {
        sum: r.sum,
        count: r.count,
        from_ms: r.provenance.from,
        to_ms: r.provenance.to,
        tiers: proto::Tiers(r.provenance.tiers),
        closed_until_ms: r.provenance.closed_until,
    };
    encode_response(id, &Response::TotalOk(ok), out);
    Ok(())
}

/// Answers a grouping `TOTAL` with `TOTAL_GROUPS_OK`.
fn total_groups(
    engine: &Engine,
    id: u32,
    sel: &storage::Selector,
    q: &proto::TotalQuery<'_>,
    out: &mut BytesMut,
) -> Handled {
    let r = engine
        .total_groups(sel, q.from_ms, q.to_ms)
        .map_err(|e| storage_error(&e))?;
    let ok = proto::total_groups::TotalGroupsOk {
        from_ms: r.provenance.from,
        to_ms: r.provenance.to,
        tiers: proto::Tiers(r.provenance.tiers),
        closed_until_ms: r.provenance.closed_until,
        groups: r
            .groups
            .iter()
            .map(|g| proto::total_groups::TotalGroup {
                labels: g
                    .labels
                    .iter()
                    .map(|(name, value)| proto::Label { name, value })
                    .collect(),
                sum: g.sum,
                count: g.count,
            })
            .collect(),
    };
    encode_response(id, &Response::TotalGroupsOk(ok), out);
    Ok(())
}

/// Answers a `TOP`: the largest sums, per series or per value of a label.
pub fn top(engine: &Engine, id: u32, q: &proto::TopQuery<'_>, out: &mut BytesMut) -> Handled {
    let tq = storage::TopQuery {
        selector: selector(&q.selector),
        from: q.from_ms,
        to: q.to_ms,
        n: q.n as usize,
        by_label: q.group_by.map(str::to_string),
    };
    let r = engine.top(&tq).map_err(|e| storage_error(&e))?;
    let ok = proto::TopOk {
        tiers: proto::Tiers(r.provenance.tiers),
        closed_until_ms: r.provenance.closed_until,
        entries: r
            .entries
            .iter()
            .map(|e| proto::TopEntry {
                name: &e.name,
                sum: e.sum,
                count: e.count,
            })
            .collect(),
    };
    encode_response(id, &Response::TopOk(ok), out);
    Ok(())
}

/// Answers a `SERIES`: up to `limit` matching keys.
pub fn series(engine: &Engine, id: u32, q: &proto::SeriesQuery<'_>, out: &mut BytesMut) -> Handled {
    let (keys, truncated) = engine
        .series(&selector(&q.selector), q.limit as usize)
        .map_err(|e| storage_error(&e))?;
    let ok = proto::SeriesOk {
        keys: keys.iter().map(String::as_str).collect(),
        truncated,
    };
    encode_response(id, &Response::SeriesOk(ok), out);
    Ok(())
}

/// Answers a `RANGE`: points of one function over a time range, per group.
pub fn range(engine: &Engine, id: u32, q: &proto::RangeQuery<'_>, out: &mut BytesMut) -> Handled {
    let step = match q.step {
        proto::Step::Auto => storage::Step::Auto,
        proto::Step::Millis(ms) => storage::Step::Fixed(i64::try_from(ms).map_err(|_| {
            ErrorReply::new(
                ErrorCode::InvalidArgument,
                format!("step {ms} ms is too large"),
            )
        })?),
    };
    let agg = match q.function {
        proto::Function::Sum => storage::Agg::Sum,
        proto::Function::Count => storage::Agg::Count,
        proto::Function::Avg => storage::Agg::Avg,
        proto::Function::Min => storage::Agg::Min,
        proto::Function::Max => storage::Agg::Max,
        proto::Function::Rate => storage::Agg::Rate,
    };
    let rq = storage::RangeQuery {
        selector: selector(&q.selector),
        from: q.from_ms,
        to: q.to_ms,
        step,
        agg,
    };
    let r = engine.range(&rq).map_err(|e| storage_error(&e))?;
    /// The engine's groups with every value converted to the reply's kind.
    fn groups<V>(
        r: &storage::RangeResult,
        value: impl Fn(&storage::Value) -> V,
    ) -> Vec<proto::Group<'_, V>> {
        r.groups
            .iter()
            .map(|g| proto::Group {
                labels: g
                    .labels
                    .iter()
                    .map(|(name, value)| proto::Label { name, value })
                    .collect(),
                points: g
                    .points
                    .iter()
                    .map(|(ts, v)| proto::Point {
                        ts_ms: *ts,
                        value: value(v),
                    })
                    .collect(),
            })
            .collect()
    }
    let groups = match q.function.value_kind() {
        proto::ValueKind::Int => proto::RangeGroups::Int(groups(&r, |v| match v {
            storage::Value::Int(i) => *i,
            storage::Value::Float(f) => *f as i64,
        })),
        proto::ValueKind::Float => proto::RangeGroups::Float(groups(&r, |v| match v {
            storage::Value::Int(i) => *i as f64,
            storage::Value::Float(f) => *f,
        })),
    };
    let ok = proto::RangeOk {
        tiers: proto::Tiers(r.provenance.tiers),
        closed_until_ms: r.provenance.closed_until,
        step_ms: u64::try_from(r.step).unwrap_or(0),
        groups,
    };
    encode_response(id, &Response::RangeOk(ok), out);
    Ok(())
}

/// The engine's selector for a wire selector.
pub fn selector(s: &proto::Selector<'_>) -> storage::Selector {
    match s {
        proto::Selector::Exact(key) => storage::Selector::Exact(key.to_string()),
        proto::Selector::Prefix(p) => storage::Selector::Prefix(p.to_string()),
        proto::Selector::PrefixBy(p) => storage::Selector::PrefixBy {
            prefix: p.prefix.to_string(),
            group_by: p.group_by.iter().map(|l| l.to_string()).collect(),
        },
        proto::Selector::Metric(m) => storage::Selector::Metric {
            name: m.name.to_string(),
            matchers: m
                .matchers
                .iter()
                .map(|x| match x.op {
                    proto::MatchOp::Eq => {
                        storage::Matcher::Eq(x.label.to_string(), x.value.to_string())
                    }
                    proto::MatchOp::NotEq => {
                        storage::Matcher::Ne(x.label.to_string(), x.value.to_string())
                    }
                })
                .collect(),
            group_by: m.group_by.iter().map(|l| l.to_string()).collect(),
        },
    }
}
