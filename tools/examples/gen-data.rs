//! Builds a large data directory for measuring `tally-admin` speed: `--series`
//! series, one event per series per minute over `--minutes` minutes ending now,
//! random deltas (so cells are of the general shape and compress poorly),
//! flushed as the engine flushes by itself, then compacted.
//!
//! `CARGO_TARGET_DIR=/work/target-admin cargo run --release -p tallydb-tools --example gen-data -- DIR SERIES MINUTES`

use std::error::Error;
use std::time::Instant;

use tallydb_storage::time::MINUTE_MS;
use tallydb_storage::{Batch, Clock, Engine, Event, Options, SystemClock};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, series, minutes] = &args[..] else {
        return Err("usage: gen-data DIR SERIES MINUTES".into());
    };
    let (series, minutes): (u32, i64) = (series.parse()?, minutes.parse()?);
    let started = Instant::now();
    let e = Engine::open(
        dir,
        Options {
            background: false,
            fsync: tallydb_storage::FsyncPolicy::Never,
            ..Options::default()
        },
    )?;
    let ids: Vec<u32> = (0..series)
        .map(|i| e.series_id(&format!("hits{{page=p{i:07},region=r{}}}", i % 17)))
        .collect::<Result<_, _>>()?;
    let now = SystemClock.now_ms();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut events = Vec::with_capacity(ids.len());
    for m in (0..minutes).rev() {
        events.clear();
        for id in &ids {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            events.push(Event {
                series: *id,
                delta: (x % 1000) as i64 - 100,
                ts: Some(now - m * MINUTE_MS - (x % 60_000) as i64),
                id: None,
            });
        }
        e.apply(&Batch {
            producer: None,
            events: events.clone(),
        })?;
        if e.stats().memtable_bytes > 256 << 20 {
            e.flush()?;
        }
    }
    e.flush()?;
    let c = e.compact()?;
    e.close()?;
    println!(
        "{} events in {:.1} s; compaction: {} tasks",
        u64::from(series) * minutes as u64,
        started.elapsed().as_secs_f64(),
        c.tasks
    );
    Ok(())
}
