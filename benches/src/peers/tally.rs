//! The TallyDB side: load the [`Dataset`] over the wire protocol (one `INCR` of
//! timestamped events per [`Unit`], producer and sequence on every batch, series
//! aliases after a series' first definition) and ask the [`PeerQuery`] set.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tallydb_protocol::{
    Event, Function, Incr, MatchOp, Matcher, MetricSelector, Producer, RangeGroups, RangeQuery,
    Request, Response, Selector, Step, TopQuery, TotalQuery,
};

use super::dataset::{Dataset, Unit};
use super::error::PeersError;
use super::query::{Answer, Params, PeerQuery};
use super::LoadDone;
use crate::load::conn::{Aliases, Conn};
use crate::load::error::code_name;
use crate::load::workload::MINUTE_MS;
use crate::load::LoadError;
use crate::Rng;

/// Units sent per pipelined round on one connection.
const CHUNK: usize = 16;

fn refused(what: &str, r: &Response<'_>) -> PeersError {
    match r {
        Response::Error(e) => PeersError::Tally(LoadError::Server {
            context: what.to_string(),
            code: e.code,
            name: code_name(e.code),
            message: e.message.to_string(),
        }),
        other => PeersError::Tally(LoadError::Protocol(format!(
            "{what} answered with {:?}",
            other.opcode()
        ))),
    }
}

/// Loads every unit over `connections` connections, `pipeline` `INCR`s in flight on
/// each, stopping at `cap`.
pub async fn load(
    addr: std::net::SocketAddr,
    d: Arc<Dataset>,
    keys: Arc<Vec<String>>,
    units: Arc<Vec<Unit>>,
    connections: usize,
    pipeline: usize,
    cap: Duration,
) -> Result<LoadDone, PeersError> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        conns.push(Conn::connect(addr, b"").await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + cap;
    let mut seeds = Rng::new(start.elapsed().as_nanos() as u64 ^ u64::from(std::process::id()));
    let mut tasks = Vec::new();
    for conn in conns {
        let (d, keys, units, next, late) = (
            d.clone(),
            keys.clone(),
            units.clone(),
            next.clone(),
            late.clone(),
        );
        let producer = seeds.next_u64();
        tasks.push(tokio::spawn(async move {
            load_one(
                conn, &d, &keys, &units, &next, &late, producer, pipeline, deadline,
            )
            .await
        }));
    }
    let mut items = 0u64;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => items += n,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(PeersError::Tally(LoadError::Protocol(format!(
                    "load task failed: {e}"
                ))));
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(LoadDone {
        items,
        elapsed,
        complete: !late.load(Ordering::Relaxed),
    })
}

#[allow(clippy::too_many_arguments)]
async fn load_one(
    mut conn: Conn,
    d: &Dataset,
    keys: &[String],
    units: &[Unit],
    next: &AtomicUsize,
    late: &AtomicBool,
    producer: u64,
    pipeline: usize,
    deadline: Instant,
) -> Result<u64, PeersError> {
    let mut aliases = Aliases::new(d.series, conn.info.limits.max_aliases);
    let mut seq = 0u64;
    let mut applied = 0u64;
    loop {
        if Instant::now() >= deadline {
            late.store(true, Ordering::Relaxed);
            break;
        }
        let at = next.fetch_add(CHUNK, Ordering::Relaxed);
        let Some(chunk) = units.get(at..(at + CHUNK).min(units.len())) else {
            break;
        };
        if chunk.is_empty() {
            break;
        }
        let mut reqs = Vec::with_capacity(chunk.len());
        let mut sizes = Vec::with_capacity(chunk.len());
        for u in chunk {
            seq += 1;
            let mut events = Vec::with_capacity((u.end - u.first) as usize);
            for i in u.first..u.end {
                let key = keys.get(i as usize).map_or("", String::as_str);
                events.push(Event {
                    series: aliases.reference(i, key).0,
                    delta: d.value(i, u.ts_ms),
                    timestamp_ms: Some(u.ts_ms),
                    event_id: None,
                });
            }
            sizes.push(events.len() as u64);
            reqs.push(Request::Incr(Incr {
                producer: Some(Producer {
                    id: producer,
                    sequence: seq,
                }),
                events,
                per_event: false,
            }));
        }
        let mut bad = None;
        conn.call_many(&reqs, pipeline, |idx, r| match r {
            Response::IncrOk(ok)
                if !ok.duplicate_batch && Some(&u64::from(ok.applied)) == sizes.get(idx) =>
            {
                applied += u64::from(ok.applied);
            }
            other => {
                bad.get_or_insert_with(|| refused("INCR", &other));
            }
        })
        .await?;
        if let Some(e) = bad {
            return Err(e);
        }
    }
    Ok(applied)
}

/// Asks `FLUSH` (admin): memtables to segments.
pub async fn flush(conn: &mut Conn) -> Result<(), PeersError> {
    conn.call(&Request::Flush, |r| match r {
        Response::AdminOk(_) => Ok(()),
        other => Err(refused("FLUSH", &other)),
    })
    .await?
}

/// The `TOTAL` of the whole metric over `[from, to)`.
pub async fn metric_total(
    conn: &mut Conn,
    d: &Dataset,
    from: i64,
    to: i64,
) -> Result<i64, PeersError> {
    let q = Request::Total(TotalQuery {
        selector: Selector::Metric(MetricSelector {
            name: &d.metric,
            matchers: Vec::new(),
            group_by: Vec::new(),
        }),
        from_ms: from,
        to_ms: to,
    });
    conn.call(&q, |r| match r {
        Response::TotalOk(ok) => Ok(ok.sum),
        other => Err(refused("TOTAL", &other)),
    })
    .await?
}

/// Sends `q` with parameters `p` and reduces the answer.
pub async fn ask(
    conn: &mut Conn,
    d: &Dataset,
    keys: &[String],
    q: PeerQuery,
    p: Params,
) -> Result<Answer, PeersError> {
    let (from_ms, to_ms) = q.window(d);
    let key = keys.get(p.series as usize).map_or("", String::as_str);
    let group = Dataset::group_value(p.group);
    let metric = |matchers| {
        Selector::Metric(MetricSelector {
            name: &d.metric,
            matchers,
            group_by: Vec::new(),
        })
    };
    let total = |selector| {
        Request::Total(TotalQuery {
            selector,
            from_ms,
            to_ms,
        })
    };
    let req = match q {
        PeerQuery::DayRange => Request::Range(RangeQuery {
            selector: Selector::Exact(key),
            from_ms,
            to_ms,
            step: Step::Millis(MINUTE_MS as u64),
            function: Function::Sum,
        }),
        PeerQuery::DayTotal | PeerQuery::MonthTotal => total(Selector::Exact(key)),
        PeerQuery::GroupHourSum => total(metric(vec![Matcher {
            label: "g",
            op: MatchOp::Eq,
            value: &group,
        }])),
        PeerQuery::AllHourSum => total(metric(Vec::new())),
        PeerQuery::AllHourTop10 => Request::Top(TopQuery {
            selector: metric(Vec::new()),
            from_ms,
            to_ms,
            n: 10,
            group_by: None,
        }),
    };
    conn.call(&req, |r| match r {
        Response::RangeOk(ok) => match ok.groups {
            RangeGroups::Int(groups) => Ok(Answer::Points(
                groups
                    .iter()
                    .flat_map(|g| g.points.iter())
                    .filter(|p| p.value != 0)
                    .map(|p| (p.ts_ms, p.value))
                    .collect(),
            )),
            RangeGroups::Float(_) => Err(PeersError::Answer("RANGE sum gave floats".into())),
        },
        Response::TotalOk(ok) => Ok(Answer::Sum(ok.sum)),
        Response::TopOk(ok) => Ok(Answer::Top(ok.entries.iter().map(|e| e.sum).collect())),
        other => Err(refused(q.name(), &other)),
    })
    .await?
}
