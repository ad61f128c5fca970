//! TallyDB's own read endpoint beside the Prometheus API: `GET /api/v1/tally/total`
//! (`selector`, `from`, `to`), one total per group of the selector's `by (…)`.
//! Selectors and times are read by [`tallydb_protocol::text`], so a selector or a time
//! means here exactly what it means to `tally` and `tally-admin`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value as Json};
use tallydb_protocol::text::{parse_time, ParsedSelector};

use super::api::{bad_data, blocking, now_ms, prelude, success};
use super::promql::QueryError;
use super::HttpState;
use crate::cmd::query::selector;

/// `GET|POST /api/v1/tally/total?selector=…&from=…&to=…`: `from` defaults to
/// `now-1h`, `to` to `now`. Answers `{"groups": [{"labels": {…}, "sum", "count"}],
/// "from_ms", "to_ms", "closed_until_ms", "tiers"}`.
pub async fn total(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let (shared, params) = match prelude(&state, peer, &headers, raw, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let text = params.get("selector").unwrap_or("");
    let parsed = match ParsedSelector::parse(text) {
        Ok(ParsedSelector::All) => {
            return bad_data(&format!(
                "invalid parameter \"selector\": {text:?}: name a metric, a series or a prefix"
            ))
        }
        Ok(p) => p,
        Err(e) => return bad_data(&format!("invalid parameter \"selector\": {e}")),
    };
    let Some(wire) = parsed.to_protocol() else {
        return bad_data("invalid parameter \"selector\"");
    };
    let sel = selector(&wire);
    let now = now_ms();
    let time = |name: &str, default: &str| {
        parse_time(params.get(name).unwrap_or(default), now)
            .map_err(|e| bad_data(&format!("invalid parameter \"{name}\": {e}")))
    };
    let (from, to) = match (time("from", "now-1h"), time("to", "now")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let r = match blocking(move || {
        shared
            .engine
            .total_groups(&sel, from, to)
            .map_err(QueryError::from)
    })
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let groups: Vec<Json> = r
        .groups
        .iter()
        .map(|g| {
            let labels: Map<String, Json> = g
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
                .collect();
            json!({"labels": labels, "sum": g.sum, "count": g.count})
        })
        .collect();
    let tiers: Vec<&str> = [(1u8, "minute"), (2, "hour"), (4, "day")]
        .into_iter()
        .filter(|(bit, _)| r.provenance.tiers & bit != 0)
        .map(|(_, n)| n)
        .collect();
    success(json!({
        "selector": text,
        "groups": groups,
        "from_ms": r.provenance.from,
        "to_ms": r.provenance.to,
        "closed_until_ms": r.provenance.closed_until,
        "tiers": tiers,
    }))
}
