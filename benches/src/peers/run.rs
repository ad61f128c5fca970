//! The run: compute the dataset, load TallyDB (then `FLUSH`), load VictoriaMetrics
//! (then force flush and wait until everything is searchable), let both go quiet,
//! then time every query on each, one at a time, checking every answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::dataset::Dataset;
use super::error::PeersError;
use super::query::{Answer, Params, PeerQuery};
use super::report::{LoadFigures, PeersReport, QueryFigures, QuerySide};
use super::tally;
use super::vm::{self, Vm};
use super::LoadDone;
use crate::load::conn::{new_histogram, now_ms, Conn};
use crate::load::procstat::{clock_ticks_per_sec, cpu_ticks, ProcUsage, Sampler};
use crate::load::report::Latency;
use crate::load::workload::{DAY_MS, MINUTE_MS};
use crate::load::Spawned;
use crate::Rng;

/// Everything the run needs; the binary fills it from flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// VictoriaMetrics' address (`127.0.0.1:PORT`).
    pub vm_addr: String,
    /// Its pid, for CPU figures and the settle wait.
    pub vm_pid: Option<u32>,
    /// Its version, for the report.
    pub vm_version: String,
    /// The tallyd binary to spawn.
    pub tallyd: PathBuf,
    /// `--fsync` for it.
    pub fsync: String,
    /// Parent of its temporary data directory.
    pub data_parent: Option<PathBuf>,
    /// Metric name.
    pub metric: String,
    /// Series.
    pub series: u32,
    /// Series per `g` label value.
    pub group: u32,
    /// Series per request.
    pub batch: u32,
    /// Connections of each load.
    pub connections: usize,
    /// `INCR`s in flight per TallyDB connection.
    pub pipeline: usize,
    /// Time cap of each load.
    pub load_cap: Duration,
    /// Timed repetitions of a light query (one series or one group).
    pub light_reps: u32,
    /// Timed repetitions of a query over every series.
    pub heavy_reps: u32,
    /// Time cap of one query's repetitions on one system.
    pub query_cap: Duration,
    /// Untimed repetitions before the timed ones.
    pub warmup_reps: u32,
    /// Seed of the values and of the query parameters.
    pub seed: u64,
}

/// Longest wait for VictoriaMetrics to make the load searchable.
const VISIBLE_CAP: Duration = Duration::from_secs(120);
/// Longest wait for a server's CPU to go quiet after its load.
const SETTLE_CAP: Duration = Duration::from_secs(30);
/// Quiet: less than this fraction of a core over one second.
const QUIET_CORES: f64 = 0.05;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Waits until `pid` uses less than [`QUIET_CORES`] over a second (at most
/// [`SETTLE_CAP`]); returns the seconds waited.
fn settle(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let ticks = clock_ticks_per_sec() as f64;
    let start = Instant::now();
    while start.elapsed() < SETTLE_CAP {
        let Some(a) = cpu_ticks(pid) else { break };
        std::thread::sleep(Duration::from_secs(1));
        let Some(b) = cpu_ticks(pid) else { break };
        if (b.saturating_sub(a)) as f64 / ticks < QUIET_CORES {
            break;
        }
    }
    start.elapsed().as_secs_f64()
}

/// Samples `pid` on a thread until the returned flag is set.
fn sample(pid: Option<u32>) -> (Arc<AtomicBool>, std::thread::JoinHandle<Option<ProcUsage>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let ticks = clock_ticks_per_sec();
    let h = std::thread::spawn(move || {
        let mut s = Sampler::start(pid?, ticks);
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            s.sample();
        }
        s.finish()
    });
    (stop, h)
}

fn figures(
    done: &LoadDone,
    o: &Options,
    pipeline: usize,
    server: Option<ProcUsage>,
) -> LoadFigures {
    let seconds = done.elapsed.as_secs_f64().max(1e-9);
    LoadFigures {
        items: done.items,
        seconds,
        per_second: done.items as f64 / seconds,
        complete: done.complete,
        connections: o.connections,
        pipeline,
        server,
        visible_after_s: None,
        exact: false,
        settle_s: 0.0,
    }
}

/// Times `q` with `fetch` (the timed part) and `check` (untimed, returns the
/// answer), comparing every answer with the dataset's.
fn measure<T>(
    d: &Dataset,
    q: PeerQuery,
    o: &Options,
    hour_sums: &[i64],
    mut fetch: impl FnMut(Params) -> Result<T, PeersError>,
    check: impl Fn(&T) -> Result<Answer, PeersError>,
) -> QuerySide {
    let reps = if q.is_heavy() {
        o.heavy_reps
    } else {
        o.light_reps
    };
    let mut rng = Rng::new(o.seed ^ 0x5eed);
    let mut hist: Histogram<u64> = new_histogram();
    let mut side = QuerySide {
        latency: None,
        correct: 0,
        wrong: 0,
        first_problem: None,
        sample_answer: None,
    };
    let start = Instant::now();
    for rep in 0..o.warmup_reps + reps {
        if start.elapsed() >= o.query_cap {
            break;
        }
        let p = q.params(d, &mut rng);
        let t0 = Instant::now();
        let got = fetch(p);
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        let answer = got.and_then(|t| check(&t));
        match answer {
            Ok(a) => {
                if side.sample_answer.is_none() {
                    side.sample_answer = Some(a.summary());
                }
                let want = q.expected(d, p, hour_sums);
                if a == want {
                    side.correct += 1;
                } else {
                    side.wrong += 1;
                    side.first_problem.get_or_insert_with(|| {
                        format!("expected {}, got {}", want.summary(), a.summary())
                    });
                }
                if rep >= o.warmup_reps {
                    hist.saturating_record(us.max(1));
                }
            }
            Err(e) => {
                side.wrong += 1;
                side.first_problem.get_or_insert_with(|| e.to_string());
            }
        }
    }
    side.latency = Latency::of(&hist);
    side
}

/// Runs the comparison; see the module documentation.
pub fn run(o: &Options) -> Result<PeersReport, PeersError> {
    let wall = Instant::now();
    let loadavg_start = loadavg();
    let d = Arc::new(Dataset {
        metric: o.metric.clone(),
        series: o.series,
        group: o.group,
        batch: o.batch,
        anchor_ms: now_ms().div_euclid(MINUTE_MS) * MINUTE_MS,
        seed: o.seed,
    });
    let units = Arc::new(d.units());
    let keys: Arc<Vec<String>> = Arc::new((0..d.series).map(|i| d.key(i)).collect());
    let hour_sums = d.hour_sums();
    let total = d.total();
    let samples = d.samples();
    let (all_from, all_to) = (d.anchor_ms - 2 * DAY_MS, d.anchor_ms);
    eprintln!(
        "tally-peers-vm: dataset {} series, {} samples in {} units, total {total}",
        d.series,
        samples,
        units.len()
    );

    // ------------------------------------------------------------ TallyDB load
    let mut server = Spawned::start(&o.tallyd, &o.fsync, o.data_parent.as_deref(), &[])?;
    let tally_pid = server.pid();
    eprintln!(
        "tally-peers-vm: tallyd pid {} on {}",
        tally_pid.unwrap_or(0),
        server.addr
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| PeersError::Timeout(format!("starting the async runtime: {e}")))?;
    let (stop, sampler) = sample(tally_pid);
    let done = rt.block_on(tally::load(
        server.addr,
        d.clone(),
        keys.clone(),
        units.clone(),
        o.connections,
        o.pipeline,
        o.load_cap,
    ));
    stop.store(true, Ordering::Relaxed);
    let usage = sampler.join().ok().flatten();
    let done = done?;
    let mut tally_load = figures(&done, o, o.pipeline, usage);
    eprintln!(
        "tally-peers-vm: TallyDB loaded {} events in {:.2} s ({:.0}/s)",
        done.items, tally_load.seconds, tally_load.per_second
    );
    drop(rt);

    // Queries run on a current-thread runtime: the socket is driven by the thread
    // that waits, as a blocking client would.
    let qrt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PeersError::Timeout(format!("starting the async runtime: {e}")))?;
    let mut conn = qrt.block_on(Conn::connect(server.addr, b""))?;
    let tally_version = conn.info.version.clone();
    let t_total = qrt.block_on(tally::metric_total(&mut conn, &d, all_from, all_to))?;
    tally_load.visible_after_s = Some(0.0);
    tally_load.exact = t_total == total && done.items == samples;
    if t_total != total {
        eprintln!("tally-peers-vm: TallyDB total {t_total}, expected {total}");
    }
    qrt.block_on(tally::flush(&mut conn))?;

    // ------------------------------------------------------------ VictoriaMetrics load
    let vmc = Vm::new(&o.vm_addr);
    if !vmc.healthy() {
        return Err(PeersError::Http(format!(
            "no VictoriaMetrics answering /health at {}",
            o.vm_addr
        )));
    }
    let (stop, sampler) = sample(o.vm_pid);
    let done = vm::load(&o.vm_addr, &d, &units, o.connections, o.load_cap);
    stop.store(true, Ordering::Relaxed);
    let usage = sampler.join().ok().flatten();
    let done = done?;
    let mut vm_load = figures(&done, o, 1, usage);
    eprintln!(
        "tally-peers-vm: VictoriaMetrics loaded {} samples in {:.2} s ({:.0}/s)",
        done.items, vm_load.seconds, vm_load.per_second
    );
    let loaded = Instant::now();
    let all_q = format!("sum(sum_over_time({}[2d]))", d.metric);
    let mut last = None;
    while loaded.elapsed() < VISIBLE_CAP {
        vmc.force_flush()?;
        let body = vmc.query(&all_q, d.anchor_ms - 1)?;
        let got = vm::parse_answer(PeerQuery::AllHourSum, &body)?;
        if got == Answer::Sum(total) {
            vm_load.visible_after_s = Some(loaded.elapsed().as_secs_f64());
            vm_load.exact = done.items == samples;
            break;
        }
        last = Some(got);
        std::thread::sleep(Duration::from_millis(500));
    }
    if vm_load.visible_after_s.is_none() {
        eprintln!(
            "tally-peers-vm: VictoriaMetrics total still {:?} after {VISIBLE_CAP:?}, expected {total}",
            last
        );
    }

    // ------------------------------------------------------------ queries
    tally_load.settle_s = settle(tally_pid);
    vm_load.settle_s = settle(o.vm_pid);
    let mut queries = Vec::new();
    for q in PeerQuery::ALL {
        eprintln!("tally-peers-vm: {}", q.name());
        let t = measure(
            &d,
            q,
            o,
            &hour_sums,
            |p| qrt.block_on(tally::ask(&mut conn, &d, &keys, q, p)),
            |a| Ok(a.clone()),
        );
        let v = measure(
            &d,
            q,
            o,
            &hour_sums,
            |p| vmc.ask(&d, q, p),
            |body| vm::parse_answer(q, body),
        );
        queries.push(QueryFigures {
            name: q.name().to_string(),
            promql: Vm::text(&d, q),
            target_p99_us: q.target_p99_us(),
            tally: t,
            vm: v,
        });
    }
    drop(conn);
    if !server.stop() {
        eprintln!("tally-peers-vm: tallyd did not stop within its timeout and was killed");
    }

    Ok(PeersReport {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg_start,
        loadavg_end: loadavg(),
        dataset: (*d).clone(),
        samples,
        total,
        tally_version,
        tally_fsync: o.fsync.clone(),
        vm_version: o.vm_version.clone(),
        tally_load,
        vm_load,
        queries,
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}
