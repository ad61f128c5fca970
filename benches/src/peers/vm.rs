//! A VictoriaMetrics server over its HTTP API: Prometheus-text import, instant and
//! range queries, force flush. Blocking (ureq), one keep-alive connection per
//! [`Vm`]; the load opens one per thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::dataset::{Dataset, Unit};
use super::error::PeersError;
use super::query::{Answer, Params, PeerQuery};
use super::LoadDone;

/// One HTTP connection to a VictoriaMetrics server.
#[derive(Debug, Clone)]
pub struct Vm {
    base: String,
    agent: ureq::Agent,
}

/// Seconds with millisecond precision, as the query API takes them: `1700000000.999`.
pub fn api_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

impl Vm {
    /// A client of the server at `addr` (`127.0.0.1:8428`).
    pub fn new(addr: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(1)
            .build()
            .new_agent();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    fn body(
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: u16,
    ) -> Result<String, PeersError> {
        let mut r = r.map_err(|e| PeersError::Http(format!("{what}: {e}")))?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| PeersError::Http(format!("{what}: reading the answer: {e}")))?;
        if status != ok {
            let head: String = body.chars().take(300).collect();
            return Err(PeersError::Http(format!(
                "{what}: HTTP {status} (expected {ok}): {head}"
            )));
        }
        Ok(body)
    }

    /// Whether `/health` answers `OK`.
    pub fn healthy(&self) -> bool {
        let r = self.agent.get(format!("{}/health", self.base)).call();
        Self::body("/health", r, 200).is_ok_and(|b| b.trim() == "OK")
    }

    /// `POST /api/v1/import/prometheus` of a text body (answered 204).
    pub fn import(&self, body: &str) -> Result<(), PeersError> {
        let r = self
            .agent
            .post(format!("{}/api/v1/import/prometheus", self.base))
            .header("Content-Type", "text/plain")
            .send(body.as_bytes());
        Self::body("import", r, 204).map(|_| ())
    }

    /// `GET /internal/force_flush`: makes recently imported samples searchable.
    pub fn force_flush(&self) -> Result<(), PeersError> {
        let r = self
            .agent
            .get(format!("{}/internal/force_flush", self.base))
            .call();
        Self::body("force_flush", r, 200).map(|_| ())
    }

    /// An instant query at `time_ms` (response cache bypassed); the raw JSON body.
    pub fn query(&self, q: &str, time_ms: i64) -> Result<String, PeersError> {
        let r = self
            .agent
            .get(format!("{}/api/v1/query", self.base))
            .query("query", q)
            .query("time", api_time(time_ms))
            .query("nocache", "1")
            .call();
        Self::body("/api/v1/query", r, 200)
    }

    /// A range query (response cache bypassed); the raw JSON body.
    pub fn query_range(
        &self,
        q: &str,
        start_ms: i64,
        end_ms: i64,
        step_s: u64,
    ) -> Result<String, PeersError> {
        let r = self
            .agent
            .get(format!("{}/api/v1/query_range", self.base))
            .query("query", q)
            .query("start", api_time(start_ms))
            .query("end", api_time(end_ms))
            .query("step", step_s.to_string())
            .query("nocache", "1")
            .call();
        Self::body("/api/v1/query_range", r, 200)
    }

    /// Sends `q` with parameters `p`; the raw JSON body.
    pub fn ask(&self, d: &Dataset, q: PeerQuery, p: Params) -> Result<String, PeersError> {
        let (from, to) = q.window(d);
        let m = &d.metric;
        let s = Dataset::series_value(p.series);
        let g = Dataset::group_value(p.group);
        // Instant queries look back over (t - window, t]; the data ends before the
        // anchor, so t = anchor - 1 ms covers the minutes [anchor - window, anchor).
        let at = to - 1;
        match q {
            // The point at t sums the samples of (t - 1m, t]: the minute starting at t.
            PeerQuery::DayRange => self.query_range(
                &format!("sum_over_time({m}{{s=\"{s}\"}}[1m])"),
                from,
                to - 60_000,
                60,
            ),
            PeerQuery::DayTotal => self.query(&format!("sum_over_time({m}{{s=\"{s}\"}}[1d])"), at),
            PeerQuery::MonthTotal => {
                self.query(&format!("sum_over_time({m}{{s=\"{s}\"}}[30d])"), at)
            }
            PeerQuery::GroupHourSum => {
                self.query(&format!("sum(sum_over_time({m}{{g=\"{g}\"}}[1h]))"), at)
            }
            PeerQuery::AllHourSum => self.query(&format!("sum(sum_over_time({m}[1h]))"), at),
            PeerQuery::AllHourTop10 => self.query(&format!("topk(10, sum_over_time({m}[1h]))"), at),
        }
    }

    /// The PromQL text of `q` (for the report), with placeholder parameters.
    pub fn text(d: &Dataset, q: PeerQuery) -> String {
        let m = &d.metric;
        match q {
            PeerQuery::DayRange => {
                format!("query_range sum_over_time({m}{{s=\"S\"}}[1m]) step 60 over 1 day")
            }
            PeerQuery::DayTotal => format!("sum_over_time({m}{{s=\"S\"}}[1d])"),
            PeerQuery::MonthTotal => format!("sum_over_time({m}{{s=\"S\"}}[30d])"),
            PeerQuery::GroupHourSum => format!("sum(sum_over_time({m}{{g=\"G\"}}[1h]))"),
            PeerQuery::AllHourSum => format!("sum(sum_over_time({m}[1h]))"),
            PeerQuery::AllHourTop10 => format!("topk(10, sum_over_time({m}[1h]))"),
        }
    }
}

/// Imports every unit (one request of `batch` lines each) from `connections`
/// threads, each with its own keep-alive connection, stopping at `cap`.
pub fn load(
    addr: &str,
    d: &Dataset,
    units: &[Unit],
    connections: usize,
    cap: Duration,
) -> Result<LoadDone, PeersError> {
    let next = AtomicUsize::new(0);
    let late = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<PeersError>> = Mutex::new(None);
    let start = Instant::now();
    let deadline = start + cap;
    let items: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..connections.max(1))
            .map(|_| {
                s.spawn(|| {
                    let vm = Vm::new(addr);
                    let mut body = String::with_capacity(64 * 1024);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if Instant::now() >= deadline {
                            late.store(true, Ordering::Relaxed);
                            break;
                        }
                        let Some(u) = units.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        body.clear();
                        d.prometheus_lines(*u, &mut body);
                        match vm.import(&body) {
                            Ok(()) => n += u64::from(u.end - u.first),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                if let Ok(mut slot) = first_error.lock() {
                                    slot.get_or_insert(e);
                                }
                                break;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    let elapsed = start.elapsed();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(LoadDone {
        items,
        elapsed,
        complete: !late.load(Ordering::Relaxed),
    })
}

fn number(v: &Value) -> Result<i64, PeersError> {
    let s = v
        .as_str()
        .ok_or_else(|| PeersError::Answer(format!("value {v} is not a string")))?;
    let f: f64 = s
        .parse()
        .map_err(|_| PeersError::Answer(format!("value {s:?} is not a number")))?;
    if f.fract() != 0.0 || !f.is_finite() {
        return Err(PeersError::Answer(format!("value {s} is not an integer")));
    }
    Ok(f as i64)
}

fn results(body: &str) -> Result<Vec<Value>, PeersError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| PeersError::Answer(format!("not JSON ({e}): {body:.200}")))?;
    if v["status"] != "success" {
        return Err(PeersError::Answer(format!(
            "status not success: {body:.300}"
        )));
    }
    v["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| PeersError::Answer(format!("no data.result: {body:.300}")))
}

/// Reduces a query answer to an [`Answer`].
pub fn parse_answer(q: PeerQuery, body: &str) -> Result<Answer, PeersError> {
    let res = results(body)?;
    match q {
        PeerQuery::DayRange => {
            let mut pts = Vec::new();
            for series in &res {
                let values = series["values"]
                    .as_array()
                    .ok_or_else(|| PeersError::Answer("range result without values".into()))?;
                for p in values {
                    let t = p[0]
                        .as_f64()
                        .ok_or_else(|| PeersError::Answer(format!("bad timestamp in {p}")))?;
                    pts.push(((t * 1000.0).round() as i64, number(&p[1])?));
                }
            }
            pts.sort_unstable();
            Ok(Answer::Points(pts))
        }
        PeerQuery::AllHourTop10 => {
            let mut v = res
                .iter()
                .map(|r| number(&r["value"][1]))
                .collect::<Result<Vec<_>, _>>()?;
            v.sort_unstable_by(|a, b| b.cmp(a));
            Ok(Answer::Top(v))
        }
        _ => {
            let sum = res
                .iter()
                .map(|r| number(&r["value"][1]))
                .sum::<Result<i64, _>>()?;
            Ok(Answer::Sum(sum))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_milliseconds() {
        assert_eq!(api_time(1_700_000_000_999), "1700000000.999");
        assert_eq!(api_time(1_700_000_000_000), "1700000000.000");
        assert_eq!(api_time(5), "0.005");
    }

    #[test]
    fn parses_instant_range_and_topk_answers() {
        let inst = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795951259.999,"12"]}]}}"#;
        assert_eq!(
            parse_answer(PeerQuery::AllHourSum, inst).ok(),
            Some(Answer::Sum(12))
        );
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            parse_answer(PeerQuery::DayTotal, empty).ok(),
            Some(Answer::Sum(0))
        );
        let range = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"s":"1"},"values":[[1795951200,"4"],[1795947660,"3"]]}]}}"#;
        assert_eq!(
            parse_answer(PeerQuery::DayRange, range).ok(),
            Some(Answer::Points(vec![
                (1_795_947_660_000, 3),
                (1_795_951_200_000, 4)
            ]))
        );
        let top = r#"{"status":"success","data":{"result":[{"metric":{"s":"a"},"value":[1,"5"]},{"metric":{"s":"b"},"value":[1,"9"]}]}}"#;
        assert_eq!(
            parse_answer(PeerQuery::AllHourTop10, top).ok(),
            Some(Answer::Top(vec![9, 5]))
        );
        assert!(parse_answer(PeerQuery::AllHourSum, "{\"status\":\"error\"}").is_err());
        let frac = r#"{"status":"success","data":{"result":[{"metric":{},"value":[1,"1.5"]}]}}"#;
        assert!(parse_answer(PeerQuery::AllHourSum, frac).is_err());
    }
}
