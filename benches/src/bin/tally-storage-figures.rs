//! Prints the storage engine's non-criterion figures: bytes on disk per cell
//! after compaction, and WAL replay speed at open.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo run --release -p tallydb-benches --bin tally-storage-figures`
//! Flags, with their defaults: `--series 10000`, `--minutes 1440`,
//! `--max-count 8` (increments per minute cell, uniform in 1..=N),
//! `--replay-events 5000000`, `--replay-series 100000`.

use std::error::Error;
use std::time::Instant;

use tallydb_benches::{build_minute_day, replay_options, write_wal_only};
use tallydb_storage::{Engine, Tier};

struct Args {
    series: usize,
    minutes: usize,
    max_count: u64,
    replay_events: usize,
    replay_series: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
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
            "--series" => a.series = value.parse()?,
            "--minutes" => a.minutes = value.parse()?,
            "--max-count" => a.max_count = value.parse()?,
            "--replay-events" => a.replay_events = value.parse()?,
            "--replay-series" => a.replay_series = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.series == 0 || a.minutes == 0 || a.max_count == 0 || a.replay_series == 0 {
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
        "CARGO_TARGET_DIR=/work/target-bench cargo run --release -p tallydb-benches --bin tally-storage-figures -- --series {} --minutes {} --max-count {} --replay-events {} --replay-series {}",
        a.series, a.minutes, a.max_count, a.replay_events, a.replay_series
    );
    let mut rows: Vec<(String, String)> = Vec::new();

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

    // 2. WAL replay at open.
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
