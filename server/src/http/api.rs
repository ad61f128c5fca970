//! The Prometheus HTTP API subset (`/api/v1/...`) over TallyDB's counters, with
//! Prometheus' response and error shapes:
//!
//! - success: `{"status":"success","data":...}`;
//! - errors: `{"status":"error","errorType":"bad_data","error":"..."}` with HTTP 400 for
//!   a bad parameter or query, 422 (`execution`) when a valid query fails while running,
//!   503 (`timeout` or `unavailable`) when it runs too long or the engine cannot serve,
//!   401/403 (`unauthorized`/`forbidden`) when the credentials are refused.
//!
//! Parameters come from the URL query and, for POST, from an
//! `application/x-www-form-urlencoded` body, as in Prometheus. Times are unix seconds
//! (fractions allowed) or RFC 3339; durations are seconds or PromQL durations (`1m`).
//! Every engine call runs on tokio's blocking pool under [`super::QUERY_TIMEOUT`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};
use tallydb_storage::SeriesKey;

use super::promql::{self, Grid, QueryError, Series, Value};
use super::{HttpState, QUERY_TIMEOUT};
use crate::cmd::Shared;

/// Most points per series a range query may ask for (Prometheus' limit).
pub const MAX_POINTS: i64 = 11_000;

/// A Prometheus error response.
pub fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": error_type, "error": message})),
    )
        .into_response()
}

pub(super) fn bad_data(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_data", message)
}

pub(super) fn success(data: Json) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"status": "success", "data": data})),
    )
        .into_response()
}

fn query_error(e: &QueryError) -> Response {
    match e {
        QueryError::BadData(m) => bad_data(m),
        QueryError::Execution(m) => error(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
        QueryError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
    }
}

/// Parameters of one request, in order (repeated keys such as `match[]` kept).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Authorizes the request, checks readiness and collects its parameters.
pub(super) fn prelude(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &Bytes,
) -> Result<(Arc<Shared>, Params), Response> {
    state.authorize(peer, headers)?;
    let Some(shared) = state.shared().cloned() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the storage engine is still opening (WAL replay)",
        ));
    };
    let mut params: Vec<(String, String)> = match raw.as_deref() {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| bad_data(&format!("invalid URL query: {e}")))?,
        None => Vec::new(),
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form && !body.is_empty() {
        let text = std::str::from_utf8(body).map_err(|_| bad_data("the form body is not UTF-8"))?;
        let more: Vec<(String, String)> = serde_urlencoded::from_str(text)
            .map_err(|e| bad_data(&format!("invalid form body: {e}")))?;
        params.extend(more);
    }
    Ok((shared, Params(params)))
}

/// Unix milliseconds of a time parameter: the shared reading of
/// [`tallydb_protocol::text::time`] (as `tally` and `tally-admin` read times), and
/// beyond it the other Prometheus forms (seconds with an exponent, RFC 3339 as chrono
/// reads it).
pub fn parse_time(name: &str, s: &str) -> Result<i64, String> {
    let invalid =
        || format!("invalid parameter \"{name}\": cannot parse \"{s}\" to a valid timestamp");
    if let Ok(ms) = tallydb_protocol::text::parse_time(s, now_ms()) {
        return Ok(ms);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 1e13 {
            return Err(invalid());
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid())
}

/// Milliseconds of a Prometheus duration parameter.
pub fn parse_duration(name: &str, s: &str) -> Result<i64, String> {
    let invalid =
        || format!("invalid parameter \"{name}\": cannot parse \"{s}\" to a valid duration");
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 1e13 {
            return Err(invalid());
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(s)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(invalid)
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A timestamp as Prometheus writes it: seconds, fractional only when needed.
fn ts_json(ms: i64) -> Json {
    if ms % 1000 == 0 {
        Json::from(ms / 1000)
    } else {
        Json::from(ms as f64 / 1000.0)
    }
}

/// A sample value as Prometheus writes it (Go's `FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn sample(ms: i64, v: f64) -> Json {
    json!([ts_json(ms), format_value(v)])
}

/// Runs `f` on the blocking pool under the query timeout.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::time::timeout(QUERY_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!(
                "query timed out in expression evaluation after {}s",
                QUERY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        )),
        Ok(Ok(Err(e))) => Err(query_error(&e)),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

fn metric_json(s: &Series) -> Json {
    Json::Object(
        s.labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
            .collect(),
    )
}

/// `GET|POST /api/v1/query`: an instant query (`query`, optional `time`).
pub async fn query(
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
    let t = match params.get("time").filter(|s| !s.is_empty()) {
        None => now_ms(),
        Some(s) => match parse_time("time", s) {
            Ok(t) => t,
            Err(m) => return bad_data(&m),
        },
    };
    let expr = match promql::parse(params.get("query").unwrap_or("")) {
        Ok(e) => e,
        Err(e) => return query_error(&e),
    };
    let grid = Grid {
        start: t,
        step: promql::MINUTE_MS,
        points: 1,
        instant: true,
    };
    let value = match blocking(move || promql::eval(&shared.engine, &expr, &grid)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match value {
        Value::Scalar(v) => success(json!({
            "resultType": "scalar",
            "result": sample(t, v.first().copied().unwrap_or(f64::NAN)),
        })),
        Value::Vector(series) => {
            let result: Vec<Json> = series
                .iter()
                .filter_map(|s| {
                    let v = s.values.first().copied().flatten()?;
                    Some(json!({"metric": metric_json(s), "value": sample(t, v)}))
                })
                .collect();
            success(json!({"resultType": "vector", "result": result}))
        }
    }
}

/// `GET|POST /api/v1/query_range`: `query`, `start`, `end`, `step`.
pub async fn query_range(
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
    let start = match parse_time("start", params.get("start").unwrap_or("")) {
        Ok(t) => t,
        Err(m) => return bad_data(&m),
    };
    let end = match parse_time("end", params.get("end").unwrap_or("")) {
        Ok(t) => t,
        Err(m) => return bad_data(&m),
    };
    if end < start {
        return bad_data("invalid parameter \"end\": end timestamp must not be before start time");
    }
    let step = match parse_duration("step", params.get("step").unwrap_or("")) {
        Ok(s) => s,
        Err(m) => return bad_data(&m),
    };
    if step <= 0 {
        return bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        );
    }
    if (end - start) / step >= MAX_POINTS {
        return bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        );
    }
    let expr = match promql::parse(params.get("query").unwrap_or("")) {
        Ok(e) => e,
        Err(e) => return query_error(&e),
    };
    let grid = Grid {
        start,
        step,
        points: usize::try_from((end - start) / step + 1).unwrap_or(1),
        instant: false,
    };
    let value = match blocking(move || promql::eval(&shared.engine, &expr, &grid)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let series = match value {
        Value::Scalar(v) => vec![Series {
            labels: Default::default(),
            values: v.into_iter().map(Some).collect(),
        }],
        Value::Vector(s) => s,
    };
    let mut result: Vec<(Json, Json)> = series
        .iter()
        .filter_map(|s| {
            let values: Vec<Json> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| sample(grid.at(i), v)))
                .collect();
            (!values.is_empty()).then(|| (metric_json(s), Json::from(values)))
        })
        .collect();
    result.sort_by_key(|(m, _)| m.to_string());
    let result: Vec<Json> = result
        .into_iter()
        .map(|(metric, values)| json!({"metric": metric, "values": values}))
        .collect();
    success(json!({"resultType": "matrix", "result": result}))
}

/// The series selected by the `match[]` parameters, or every series when there are none
/// and `all_when_empty`.
fn matched_series(
    shared: &Shared,
    matches: &[String],
    all_when_empty: bool,
) -> Result<Vec<SeriesKey>, QueryError> {
    if matches.is_empty() {
        return Ok(if all_when_empty {
            promql::all_series(&shared.engine)
        } else {
            Vec::new()
        });
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in matches {
        for k in promql::series_of_match(&shared.engine, m)? {
            if seen.insert(k.as_str().to_string()) {
                out.push(k);
            }
        }
    }
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(out)
}

/// [`prelude`] for the series metadata endpoints: also checks `start` and `end`
/// and returns the `match[]` selectors.
fn series_prelude(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &Bytes,
) -> Result<(Arc<Shared>, Vec<String>), Response> {
    let (shared, params) = prelude(state, peer, headers, raw, body)?;
    check_range(&params)?;
    let matches = params
        .all("match[]")
        .into_iter()
        .map(String::from)
        .collect();
    Ok((shared, matches))
}

fn check_range(params: &Params) -> Result<(), Response> {
    for name in ["start", "end"] {
        if let Some(s) = params.get(name).filter(|s| !s.is_empty()) {
            parse_time(name, s).map_err(|m| bad_data(&m))?;
        }
    }
    Ok(())
}

/// `GET|POST /api/v1/labels`: label names (of the `match[]` series, or all).
/// `start` and `end` are checked but do not narrow the answer: TallyDB does not keep
/// per-series time bounds.
pub async fn labels(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let (shared, matches) = match series_prelude(&state, peer, &headers, raw, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let names = blocking(move || {
        let keys = matched_series(&shared, &matches, true)?;
        let mut names: BTreeSet<String> = keys
            .iter()
            .flat_map(|k| k.labels().map(|(l, _)| l.to_string()).collect::<Vec<_>>())
            .collect();
        if !keys.is_empty() {
            names.insert("__name__".into());
        }
        Ok(names)
    })
    .await;
    match names {
        Ok(n) => success(json!(n)),
        Err(r) => r,
    }
}

/// `GET /api/v1/label/<name>/values`: the values of one label (`__name__`: metric
/// names), of the `match[]` series or all.
pub async fn label_values(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let (shared, matches) = match series_prelude(&state, peer, &headers, raw, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let values = blocking(move || {
        let keys = matched_series(&shared, &matches, true)?;
        let values: BTreeSet<String> = keys
            .iter()
            .filter_map(|k| {
                if name == "__name__" {
                    Some(k.name().to_string())
                } else {
                    k.label(&name).map(|v| v.into_owned())
                }
            })
            .collect();
        Ok(values)
    })
    .await;
    match values {
        Ok(v) => success(json!(v)),
        Err(r) => r,
    }
}

/// `GET|POST /api/v1/series`: the label sets of the series matching any `match[]`.
pub async fn series(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let (shared, matches) = match series_prelude(&state, peer, &headers, raw, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if matches.is_empty() {
        return bad_data("no match[] parameter provided");
    }
    let keys = blocking(move || matched_series(&shared, &matches, false)).await;
    match keys {
        Ok(keys) => success(Json::from(
            keys.iter()
                .map(|k| json!(promql::labels_of(k)))
                .collect::<Vec<_>>(),
        )),
        Err(r) => r,
    }
}

/// `GET /api/v1/metadata`: every metric is a counter of increments.
pub async fn metadata(
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
    let limit = match params.get("limit").filter(|s| !s.is_empty()) {
        None => usize::MAX,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n <= 0 => usize::MAX,
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(_) => {
                return bad_data(&format!(
                    "invalid parameter \"limit\": {s:?} is not a number"
                ))
            }
        },
    };
    let only = params
        .get("metric")
        .filter(|s| !s.is_empty())
        .map(String::from);
    let names = blocking(move || {
        Ok(promql::all_series(&shared.engine)
            .iter()
            .map(|k| k.name().to_string())
            .filter(|n| only.as_ref().is_none_or(|o| o == n))
            .collect::<BTreeSet<String>>())
    })
    .await;
    match names {
        Ok(names) => {
            let data: serde_json::Map<String, Json> = names
                .into_iter()
                .take(limit)
                .map(|n| {
                    (
                        n,
                        json!([{
                            "type": "counter",
                            "help": "TallyDB counter: queries return increments per window, not a cumulative total",
                            "unit": ""
                        }]),
                    )
                })
                .collect();
            success(Json::Object(data))
        }
        Err(r) => r,
    }
}

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = state.authorize(peer, &headers) {
        return r;
    }
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "tallyd",
    }))
}

/// Anything else: Prometheus' 404 shape.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; TallyDB serves /-/healthy, /-/ready, /metrics and /api/v1/{query,query_range,labels,label/<name>/values,series,metadata,status/buildinfo}",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_durations_and_values_parse_and_print_as_prometheus_does() {
        assert_eq!(parse_time("t", "1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("t", "1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("start", "yesterday"),
            Err(
                "invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"
                    .into()
            )
        );
        assert_eq!(parse_duration("step", "60"), Ok(60_000));
        assert_eq!(parse_duration("step", "1m30s"), Ok(90_000));
        assert!(parse_duration("step", "soon").is_err());
        assert_eq!(format_value(5.0), "5");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(ts_json(1_700_000_000_000), json!(1_700_000_000));
        assert_eq!(ts_json(1_700_000_000_500), json!(1_700_000_000.5));
    }
}
