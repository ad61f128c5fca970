//! The run itself: connect, start the [`Sampler`]s, drive every connection until the
//! deadline, merge the figures, read the server's `STATS`, check exactness.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tallydb_protocol::{MetricSelector, Request, Response, Selector, TotalQuery};

use super::conn::{new_histogram, now_ms, Conn, ConnJob, ConnStats, RunShared};
use super::error::{code_name, LoadError};
use super::procstat::{clock_ticks_per_sec, Sampler};
use super::report::{ErrorCount, Latency, Report, Verification, WorkloadSummary};
use super::workload::{series_key, KeySampler, VerifyMode, Workload, DAY_MS};
use crate::Rng;

/// Where the server is.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// Its pid, to sample CPU and memory (spawned, or `--server-pid`).
    pub pid: Option<u32>,
}

/// Most connections used for the verification queries.
const VERIFY_CONNECTIONS: usize = 8;
/// `TOTAL`s in flight per verification connection.
const VERIFY_WINDOW: usize = 64;
/// How often CPU and memory are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The server's `STATS` as a map.
pub async fn server_stats(conn: &mut Conn) -> Result<BTreeMap<String, u64>, LoadError> {
    conn.call(&Request::Stats, |r| match r {
        Response::StatsOk(ok) => Ok(ok
            .entries
            .iter()
            .map(|e| (e.name.to_string(), e.value))
            .collect()),
        Response::Error(e) => Err(LoadError::Server {
            context: "STATS".into(),
            code: e.code,
            name: code_name(e.code),
            message: e.message.to_string(),
        }),
        other => Err(LoadError::Protocol(format!(
            "STATS answered with {:?}",
            other.opcode()
        ))),
    })
    .await?
}

/// Runs `w` against `target` and returns the report.
pub async fn run(w: Workload, target: Target) -> Result<Report, LoadError> {
    w.validate()?;
    let w = Arc::new(w);
    let mut control = Conn::connect(target.addr, &w.token).await?;
    let limits = control.info.limits;
    if w.batch > limits.max_batch_events {
        return Err(LoadError::Config(format!(
            "--batch {} is above the server's max_batch_events {}",
            w.batch, limits.max_batch_events
        )));
    }
    let longest_key = series_key(&w.metric, w.series.saturating_sub(1)).len() as u64;
    // Worst case: every event defines an alias (flags, key, alias, timestamp).
    let worst = u64::from(w.batch) * (longest_key + 20) + 64;
    if worst > u64::from(limits.max_frame) {
        return Err(LoadError::Config(format!(
            "--batch {} could make frames of up to {worst} bytes, above the server's max_frame {}",
            w.batch, limits.max_frame
        )));
    }
    let mut conns = Vec::with_capacity(w.connections);
    for _ in 0..w.connections {
        conns.push(Conn::connect(target.addr, &w.token).await?);
    }
    let stats_before = server_stats(&mut control).await.ok();

    let keys: Vec<String> = (0..w.series).map(|i| series_key(&w.metric, i)).collect();
    let n = keys.len();
    let start = Instant::now();
    let start_ms = now_ms();
    let shared = Arc::new(RunShared {
        keys,
        sampler: KeySampler::new(w.series, w.keys),
        acked: (0..n).map(|_| AtomicI64::new(0)).collect(),
        unknown: (0..n).map(|_| AtomicI64::new(0)).collect(),
        touched: (0..n).map(|_| AtomicBool::new(false)).collect(),
        started: AtomicU64::new(0),
        start,
        deadline: start + w.duration,
        warm_end: start + w.warmup,
    });
    let loadavg_start = loadavg();

    // CPU and memory sampling.
    let ticks = clock_ticks_per_sec();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop_sampling.clone();
        let pid = target.pid;
        tokio::spawn(async move {
            let mut server = pid.map(|p| Sampler::start(p, ticks));
            let mut me = Sampler::start(std::process::id(), ticks);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(SAMPLE_EVERY).await;
                if let Some(s) = server.as_mut() {
                    s.sample();
                }
                me.sample();
            }
            (server.and_then(Sampler::finish), me.finish())
        })
    };

    let mut producer_rng =
        Rng::new(w.seed ^ start_ms as u64 ^ (u64::from(std::process::id()) << 32));
    let mut tasks = Vec::with_capacity(conns.len());
    for (index, conn) in conns.into_iter().enumerate() {
        let job = ConnJob {
            w: w.clone(),
            shared: shared.clone(),
            index,
            producer: producer_rng.next_u64(),
        };
        tasks.push(tokio::spawn(conn.run_load(job)));
    }
    let mut per_conn: Vec<ConnStats> = Vec::with_capacity(tasks.len());
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(s) => per_conn.push(s),
            Err(e) => failures.push(format!("a connection task failed: {e}")),
        }
    }
    stop_sampling.store(true, Ordering::Relaxed);
    let (server_usage, client_usage) = sampler.await.unwrap_or((None, None));
    let loadavg_end = loadavg();
    let stats_after = server_stats(&mut control).await.ok();

    // Merge.
    let mut write_hist = new_histogram();
    let mut write_service_hist = new_histogram();
    let mut read_hists = BTreeMap::new();
    let mut errors: BTreeMap<u16, (u64, String)> = BTreeMap::new();
    let mut last_answer = shared.warm_end;
    let sum = |f: fn(&ConnStats) -> u64| per_conn.iter().map(f).sum::<u64>();
    let sent_requests = sum(|c| c.sent_requests);
    let sent_bytes = sum(|c| c.sent_bytes);
    let sent_events = sum(|c| c.sent_events);
    let alias_definitions = sum(|c| c.alias_definitions);
    let behind = sum(|c| c.behind_schedule);
    let applied = sum(|c| c.applied);
    let duplicates = sum(|c| c.duplicates);
    let duplicate_batches = sum(|c| c.duplicate_batches);
    let refused = sum(|c| c.refused);
    let window_incr = sum(|c| c.window_incr_ok);
    let window_applied = sum(|c| c.window_applied);
    let window_query = sum(|c| c.window_query_ok);
    let unanswered = sum(|c| c.unanswered);
    for c in &per_conn {
        let _ = write_hist.add(&c.write_hist);
        let _ = write_service_hist.add(&c.write_service_hist);
        for (k, h) in &c.read_hists {
            let e = read_hists.entry(*k).or_insert_with(new_histogram);
            let _ = e.add(h);
        }
        for (code, (count, msg)) in &c.errors {
            let e = errors.entry(*code).or_insert_with(|| (0, msg.clone()));
            e.0 += count;
        }
        if let Some(t) = c.last_answer {
            last_answer = last_answer.max(t);
        }
        failures.extend(c.failures.iter().map(ToString::to_string));
    }
    let elapsed = last_answer
        .saturating_duration_since(shared.warm_end)
        .as_secs_f64()
        .max(1e-6);
    let read_latency = read_hists
        .iter()
        .filter_map(|(k, h)| Latency::of(h).map(|l| (k.name().to_string(), l)))
        .collect();
    let server_stats_delta = match (&stats_before, &stats_after) {
        (Some(a), Some(b)) => b
            .iter()
            .filter_map(|(k, v)| {
                let d = i128::from(*v) - i128::from(a.get(k).copied().unwrap_or(0));
                (d != 0).then(|| (k.clone(), d))
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let verification = match w.verify {
        VerifyMode::None => None,
        mode => Some(verify(&w, &shared, target.addr, mode, start_ms).await?),
    };
    Ok(Report {
        server: target.addr.to_string(),
        server_version: control.info.version.clone(),
        workload: WorkloadSummary {
            mode: if w.rate > 0.0 { "open" } else { "closed" }.into(),
            connections: w.connections,
            batch: w.batch,
            rate: w.rate,
            pipeline: w.pipeline,
            duration_s: w.duration.as_secs_f64(),
            warmup_s: w.warmup.as_secs_f64(),
            series: w.series,
            keys: w.keys.to_string(),
            timestamps: w.timestamps.to_string(),
            read_ratio: w.read_ratio,
            queries: w.queries.iter().map(|q| q.name().to_string()).collect(),
            aliases: w.aliases,
            metric: w.metric.clone(),
        },
        loadavg_start,
        loadavg_end,
        elapsed_s: elapsed,
        requests_sent: sent_requests,
        events_sent: sent_events,
        bytes_per_event: if sent_events > 0 {
            // Query bytes are in sent_bytes too; negligible unless reads dominate.
            sent_bytes as f64 / sent_events as f64
        } else {
            0.0
        },
        alias_definitions,
        increments_per_s: window_applied as f64 / elapsed,
        requests_per_s: (window_incr + window_query) as f64 / elapsed,
        write_requests_per_s: window_incr as f64 / elapsed,
        read_requests_per_s: window_query as f64 / elapsed,
        write_latency: Latency::of(&write_hist),
        write_service_time: if w.rate > 0.0 {
            Latency::of(&write_service_hist)
        } else {
            None
        },
        read_latency,
        acknowledged: applied,
        duplicates,
        duplicate_batches,
        refused,
        errors: errors
            .into_iter()
            .map(|(code, (count, first_message))| ErrorCount {
                code,
                name: code_name(code),
                count,
                first_message,
            })
            .collect(),
        unanswered,
        behind_schedule: behind,
        failures,
        server_usage,
        client_usage,
        server_stats_delta,
        verification,
    })
}

/// Compares the server's totals with the acknowledged increments.
async fn verify(
    w: &Workload,
    shared: &Arc<RunShared>,
    addr: SocketAddr,
    mode: VerifyMode,
    start_ms: i64,
) -> Result<Verification, LoadError> {
    // Whole days around everything written, so no bucket is cut.
    let from_ms = (start_ms - w.timestamps.max_age_ms() - 2 * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
    let to_ms = (now_ms() + 2 * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
    let acknowledged: i64 = shared.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let unknown: i64 = shared
        .unknown
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum();
    let mut v = Verification {
        mode: match mode {
            VerifyMode::Series => "series",
            _ => "metric",
        }
        .into(),
        acknowledged,
        unknown,
        ..Verification::default()
    };
    let mut conn = Conn::connect(addr, &w.token).await?;
    let metric = Request::Total(TotalQuery {
        selector: Selector::Metric(MetricSelector {
            name: &w.metric,
            matchers: Vec::new(),
            group_by: Vec::new(),
        }),
        from_ms,
        to_ms,
    });
    v.metric_total = conn
        .call(&metric, |r| match r {
            Response::TotalOk(ok) => Ok(ok.sum),
            Response::Error(e) => Err(LoadError::Server {
                context: "TOTAL of the metric".into(),
                code: e.code,
                name: code_name(e.code),
                message: e.message.to_string(),
            }),
            other => Err(LoadError::Protocol(format!(
                "TOTAL answered with {:?}",
                other.opcode()
            ))),
        })
        .await??;
    let metric_ok = v.metric_total >= acknowledged && v.metric_total <= acknowledged + unknown;
    if mode == VerifyMode::Metric {
        v.lost = (acknowledged - v.metric_total).max(0);
        v.doubled = (v.metric_total - acknowledged - unknown).max(0);
        v.exact = metric_ok;
        return Ok(v);
    }
    let touched: Vec<u32> = (0..w.series)
        .filter(|&i| {
            shared
                .touched
                .get(i as usize)
                .is_some_and(|t| t.load(Ordering::Relaxed))
        })
        .collect();
    let parts = VERIFY_CONNECTIONS.min(touched.len()).max(1);
    let chunk = touched.len().div_ceil(parts).max(1);
    let mut tasks = Vec::new();
    for part in touched.chunks(chunk) {
        let part = part.to_vec();
        let shared = shared.clone();
        let token = w.token.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr, &token).await?;
            let reqs: Vec<Request<'_>> = part
                .iter()
                .map(|&i| {
                    Request::Total(TotalQuery {
                        selector: Selector::Exact(
                            shared.keys.get(i as usize).map_or("", String::as_str),
                        ),
                        from_ms,
                        to_ms,
                    })
                })
                .collect();
            let mut found = vec![None; part.len()];
            let mut error = None;
            conn.call_many(&reqs, VERIFY_WINDOW, |i, r| match r {
                Response::TotalOk(ok) => {
                    if let Some(slot) = found.get_mut(i) {
                        *slot = Some(ok.sum);
                    }
                }
                Response::Error(e) => {
                    error.get_or_insert_with(|| LoadError::Server {
                        context: "TOTAL of a series".into(),
                        code: e.code,
                        name: code_name(e.code),
                        message: e.message.to_string(),
                    });
                }
                other => {
                    error.get_or_insert_with(|| {
                        LoadError::Protocol(format!("TOTAL answered with {:?}", other.opcode()))
                    });
                }
            })
            .await?;
            if let Some(e) = error {
                return Err(e);
            }
            Ok::<_, LoadError>(
                part.into_iter()
                    .zip(found)
                    .map(|(i, f)| (i, f.unwrap_or(0)))
                    .collect::<Vec<_>>(),
            )
        }));
    }
    for t in tasks {
        let results = t
            .await
            .map_err(|e| LoadError::Protocol(format!("a verification task failed: {e}")))??;
        for (i, found) in results {
            let acked = shared
                .acked
                .get(i as usize)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            let unk = shared
                .unknown
                .get(i as usize)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            v.series_checked += 1;
            v.found += found;
            let lost = (acked - found).max(0);
            let doubled = (found - acked - unk).max(0);
            v.lost += lost;
            v.doubled += doubled;
            v.wrong_series += u64::from(lost > 0 || doubled > 0);
        }
    }
    v.exact = metric_ok && v.lost == 0 && v.doubled == 0;
    Ok(v)
}
