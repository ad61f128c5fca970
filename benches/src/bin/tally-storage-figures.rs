//! Prints the storage engine's non-criterion figures: bytes on disk per cell
//! after compaction, WAL replay speed at open, query latency percentiles over
//! 100,000 series, and compaction throughput.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo run --release -p tallydb-benches --bin tally-storage-figures`
//! Flags, with their defaults: `--only bytes,replay,queries,compaction`
//! (sections to run), `--series 10000`, `--minutes 1440`, `--max-count 8`
//! (increments per minute cell, uniform in 1..=N), `--replay-events 5000000`,
//! `--replay-series 100000`, `--query-series 100000`, `--query-max-count 3`
//! (increments per series and minute of the query dataset's last hour, uniform
//! in 1..=N), `--query-max-delta 1` (their deltas, uniform in 1..=N; 1 = unit
//! increments), `--history-series 1000`,
//! `--history-every-ms 60000`, `--group-size 1000`, `--compaction-series 100000`.

use std::error::Error;
use std::time::Instant;

use std::time::Duration;

use tallydb_benches::{
    build_minute_day, build_query_dataset, create_series, measure, options, query_exact,
    replay_options, tempdir, write_wal_only, QueryShape, Rng, BASE_MS, QUERY_HISTORY_DAYS,
};
use tallydb_storage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::{
    Agg, Batch, Engine, Event, FsyncPolicy, ManualClock, Matcher, RangeQuery, Selector, Step, Tier,
    TopQuery,
};

struct Args {
    only: Vec<String>,
    query_series: usize,
    query_max_count: u64,
    query_max_delta: u64,
    history_series: usize,
    history_every_ms: i64,
    group_size: usize,
    compaction_series: usize,
    series: usize,
    minutes: usize,
    max_count: u64,
    replay_events: usize,
    replay_series: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        only: ["bytes", "replay", "queries", "compaction"]
            .map(String::from)
            .to_vec(),
        query_series: 100_000,
        query_max_count: 3,
        query_max_delta: 1,
        history_series: 1_000,
        history_every_ms: MINUTE_MS,
        group_size: 1_000,
        compaction_series: 100_000,
        series: 10_000,
        minutes: 1_440,
        max_count: 8,
        replay_events: 5_000_000,
        replay_series: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .replace('_', "");
        match flag.as_str() {
            "--only" => a.only = value.split(',').map(String::from).collect(),
            "--query-series" => a.query_series = value.parse()?,
            "--query-max-count" => a.query_max_count = value.parse()?,
            "--query-max-delta" => a.query_max_delta = value.parse()?,
            "--history-series" => a.history_series = value.parse()?,
            "--history-every-ms" => a.history_every_ms = value.parse()?,
            "--group-size" => a.group_size = value.parse()?,
            "--compaction-series" => a.compaction_series = value.parse()?,
            "--series" => a.series = value.parse()?,
            "--minutes" => a.minutes = value.parse()?,
            "--max-count" => a.max_count = value.parse()?,
            "--replay-events" => a.replay_events = value.parse()?,
            "--replay-series" => a.replay_series = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.series == 0
        || a.minutes == 0
        || a.max_count == 0
        || a.replay_series == 0
        || a.query_series == 0
        || a.query_max_count == 0
        || a.query_max_delta == 0
        || a.history_series == 0
        || a.history_series > a.query_series
        || a.history_every_ms < 1
        || a.group_size == 0
        || a.group_size > a.query_series
        || a.compaction_series == 0
    {
        return Err("sizes must be positive".into());
    }
    Ok(a)
}

fn dir_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(path)? {
        n += e?.metadata()?.len();
    }
    Ok(n)
}

fn main() -> Result<(), Box<dyn Error>> {
    let a = parse_args()?;
    let cmd = format!(
        "CARGO_TARGET_DIR=/work/target-bench cargo run --release -p tallydb-benches --bin tally-storage-figures -- --only {} --series {} --minutes {} --max-count {} --replay-events {} --replay-series {} --query-series {} --query-max-count {} --query-max-delta {} --history-series {} --history-every-ms {} --group-size {} --compaction-series {}",
        a.only.join(","), a.series, a.minutes, a.max_count, a.replay_events, a.replay_series,
        a.query_series, a.query_max_count, a.query_max_delta, a.history_series, a.history_every_ms, a.group_size, a.compaction_series
    );
    let mut rows: Vec<(String, String)> = Vec::new();
    let runs = |s: &str| a.only.iter().any(|o| o == s);
    if runs("bytes") {
        bytes_per_cell(&a, &mut rows)?;
    }
    if runs("replay") {
        replay(&a, &mut rows)?;
    }
    if runs("queries") {
        queries(&a, &mut rows)?;
    }
    if runs("compaction") {
        compaction(&a, &mut rows)?;
    }

    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    println!("TallyDB storage figures");
    println!("reproduce: {cmd}");
    println!();
    println!("| {:w$} | value |", "figure");
    println!("|{}|-------|", "-".repeat(w + 2));
    for (k, v) in &rows {
        println!("| {k:w$} | {v} |");
    }
    Ok(())
}

type Rows = Vec<(String, String)>;

/// Bytes on disk per cell after flush and compaction.
fn bytes_per_cell(a: &Args, rows: &mut Rows) -> Result<(), Box<dyn Error>> {
    // 1. Bytes on disk per cell after flush and compaction.
    let started = Instant::now();
    let ds = build_minute_day(a.series, a.minutes, a.max_count, 7)?;
    let build = started.elapsed();
    let st = ds.engine.stats();
    let m = Tier::Minute.index();
    rows.push((
        "dataset".into(),
        format!(
            "{} series x {} minutes, 1..={} unit increments per cell: {} increments, {} minute cells",
            a.series, a.minutes, a.max_count, ds.events, ds.minute_cells
        ),
    ));
    rows.push((
        "dataset build (apply + hourly flush + compact)".into(),
        format!(
            "{:.1} s, {:.0} increments/s",
            build.as_secs_f64(),
            ds.events as f64 / build.as_secs_f64()
        ),
    ));
    if st.segment_cells[m] != ds.minute_cells {
        return Err(format!(
            "minute tier holds {} cells, expected {}",
            st.segment_cells[m], ds.minute_cells
        )
        .into());
    }
    for tier in Tier::ALL {
        let i = tier.index();
        let per = st.segment_bytes[i] as f64 / st.segment_cells[i].max(1) as f64;
        rows.push((
            format!("{tier} tier on disk"),
            format!(
                "{} segments, {} cells, {} bytes = {:.3} bytes/cell",
                st.segments[i], st.segment_cells[i], st.segment_bytes[i], per
            ),
        ));
    }
    let total_bytes: u64 = st.segment_bytes.iter().sum();
    rows.push((
        "all tiers per increment".into(),
        format!(
            "{:.4} bytes/increment",
            total_bytes as f64 / ds.events as f64
        ),
    ));
    drop(ds);
    Ok(())
}

/// WAL replay speed at open.
fn replay(a: &Args, rows: &mut Rows) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let dir = write_wal_only(a.replay_series, a.replay_events, 5)?;
    let write = started.elapsed();
    let wal_bytes = dir_bytes(&dir.path().join("wal"))?;
    rows.push((
        "WAL written (fsync never, no flush)".into(),
        format!(
            "{} increments over {} series in {:.2} s ({:.0}/s), {} WAL bytes = {:.2} bytes/increment",
            a.replay_events,
            a.replay_series,
            write.as_secs_f64(),
            a.replay_events as f64 / write.as_secs_f64(),
            wal_bytes,
            wal_bytes as f64 / a.replay_events.max(1) as f64
        ),
    ));
    let mut best = f64::INFINITY;
    let mut best_replay = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let e = Engine::open(dir.path(), replay_options())?;
        let open = started.elapsed().as_secs_f64();
        let rep = e.recovery().clone();
        e.close()?;
        drop(e);
        if rep.events_replayed != a.replay_events as u64 {
            return Err(format!(
                "replayed {} events, expected {}",
                rep.events_replayed, a.replay_events
            )
            .into());
        }
        best = best.min(open);
        best_replay = best_replay.min(rep.replay_time.as_secs_f64());
    }
    rows.push((
        "Engine::open with WAL replay (best of 3)".into(),
        format!(
            "{:.3} s = {:.0} increments/s ({:.3} s in replay = {:.0} increments/s)",
            best,
            a.replay_events as f64 / best,
            best_replay,
            a.replay_events as f64 / best_replay
        ),
    ));
    Ok(())
}

/// Query latency percentiles over the dataset of [`build_query_dataset`].
fn queries(a: &Args, rows: &mut Rows) -> Result<(), Box<dyn Error>> {
    let shape = QueryShape {
        series: a.query_series,
        history_series: a.history_series,
        history_every_ms: a.history_every_ms,
        max_count: a.query_max_count,
        max_delta: a.query_max_delta,
        group_size: a.group_size,
    };
    let started = Instant::now();
    let (ds, now, hour_events) = build_query_dataset(&shape, 17)?;
    let st = ds.engine.stats();
    rows.push((
        "query dataset".into(),
        format!(
            "{} series with the last hour of minutes ({} increments, 1..={} per minute cell, deltas 1..={}), {} of them with {} days of history (one event per {} ms); built in {:.1} s; segments per tier {:?}, segment cells {:?}, memtable cells {}",
            a.query_series,
            hour_events,
            a.query_max_count,
            a.query_max_delta,
            a.history_series,
            QUERY_HISTORY_DAYS,
            a.history_every_ms,
            started.elapsed().as_secs_f64(),
            st.segments,
            st.segment_cells,
            st.memtable_cells
        ),
    ));
    let e = &ds.engine;
    let mut rng = Rng::new(5);
    let hist = a.history_series as u64;
    let groups = (a.query_series / a.group_size).max(1) as u64;
    let one = Duration::from_secs(5);
    let big = Duration::from_secs(10);

    let l = measure(20, 2_000, one, |_| {
        let s = rng.below(hist) as usize;
        e.range(&RangeQuery {
            selector: query_exact(s, &shape),
            from: now - DAY_MS,
            to: now,
            step: Step::Fixed(MINUTE_MS),
            agg: Agg::Sum,
        })
        .map(|r| {
            std::hint::black_box(r);
        })
    })?;
    rows.push(("range, one series, last day at 1 m".into(), l.to_string()));

    let l = measure(20, 2_000, one, |_| {
        let s = rng.below(hist) as usize;
        e.total(&query_exact(s, &shape), now - 30 * DAY_MS, now)
            .map(|t| {
                std::hint::black_box(t);
            })
    })?;
    rows.push(("total, one series, 30 days".into(), l.to_string()));

    let metric = |matchers: Vec<Matcher>| Selector::Metric {
        name: "bench_q".into(),
        matchers,
        group_by: Vec::new(),
    };
    let mut counts = Vec::new();
    for label in ["g", "c"] {
        let l = measure(5, 1_000, one, |_| {
            let v = format!("{:04}", rng.below(groups));
            e.total(
                &metric(vec![Matcher::Eq(label.into(), v)]),
                now - HOUR_MS,
                now,
            )
            .map(|t| counts.push((t.provenance.series, t.count)))
        })?;
        let how = if label == "g" {
            "spread over all blocks"
        } else {
            "consecutive ids"
        };
        rows.push((
            format!(
                "total, {} series by label {label} ({how}), last hour",
                a.group_size
            ),
            l.to_string(),
        ));
    }
    if let Some((n, c)) = counts
        .iter()
        .find(|(n, c)| *n != a.group_size || *c < 60 * *n as u64)
    {
        return Err(format!("a label total matched {n} series counting {c} increments").into());
    }

    let all = metric(Vec::new());
    let mut wrong = None;
    let l = measure(2, 200, big, |_| {
        e.total(&all, now - HOUR_MS, now).map(|t| {
            if t.count != hour_events {
                wrong = Some(t.count);
            }
        })
    })?;
    if let Some(c) = wrong {
        return Err(format!("total over all series counted {c}, expected {hour_events}").into());
    }
    rows.push((
        format!("total, all {} series, last hour", a.query_series),
        l.to_string(),
    ));

    let l = measure(2, 200, big, |_| {
        e.top(&TopQuery {
            selector: all.clone(),
            from: now - HOUR_MS,
            to: now,
            n: 10,
            by_label: None,
        })
        .map(|t| {
            std::hint::black_box(t);
        })
    })?;
    rows.push((
        format!("top 10, all {} series, last hour", a.query_series),
        l.to_string(),
    ));
    Ok(())
}

/// Compaction throughput: four flushes of 15 minutes of `compaction_series`
/// series (one increment per series and minute) merged by `Engine::compact`.
fn compaction(a: &Args, rows: &mut Rows) -> Result<(), Box<dyn Error>> {
    let dir = tempdir()?;
    let clock = ManualClock::new(BASE_MS);
    let engine = Engine::open(dir.path(), options(FsyncPolicy::Never, false, Some(&clock)))?;
    let ids = create_series(&engine, a.compaction_series)?;
    let mut batch = Batch::default();
    for m in 0..60i64 {
        let start = BASE_MS + m * MINUTE_MS;
        clock.set(start + MINUTE_MS - 1);
        batch.events.clear();
        batch.events.extend(ids.iter().map(|id| Event {
            series: *id,
            delta: 1,
            ts: Some(start),
            id: None,
        }));
        engine.apply(&batch)?;
        if m % 15 == 14 {
            engine.flush()?;
        }
    }
    clock.set(BASE_MS + HOUR_MS + MINUTE_MS);
    let before = engine.stats();
    let started = Instant::now();
    let out = engine.compact()?;
    let took = started.elapsed().as_secs_f64();
    rows.push((
        "compaction (Engine::compact)".into(),
        format!(
            "{} series x 4 flushes of 15 min: segments per tier {:?} -> {:?}; {} tasks, {} cells in, {} out, {:.3} s = {:.0} cells in/s",
            a.compaction_series,
            before.segments,
            engine.stats().segments,
            out.tasks,
            out.cells_in,
            out.cells_out,
            took,
            out.cells_in as f64 / took
        ),
    ));
    engine.close()?;
    Ok(())
}
