//! Prints heap bytes per active series, measured exactly with a counting global
//! allocator: the memtable alone, the series dictionary (keys, key lookup and
//! label index) alone, and a whole storage engine.
//!
//! An active series has received an increment in the current minute, so it holds
//! a minute, an hour and a day cell in the memtable. The engine figure adds
//! everything else the engine keeps, at one series against `--series`. Keys are the benchmark keys
//! `bench_hits{s=000042}`; every increment is a unit increment at the engine's
//! clock time.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo run --release -p tallydb-benches --bin tally-memory-figures`
//! Flags, with their defaults: `--series 100000`, `--increments 1` (per series).

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};

use tallydb_benches::{options, series_key, tempdir, BASE_MS};
use tallydb_storage::dict::{DictBytes, SeriesDict};
use tallydb_storage::memtable::Memtable;
use tallydb_storage::time::MINUTE_MS;
use tallydb_storage::{Batch, Engine, Event, FsyncPolicy, ManualClock, SeriesKey};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// The one unsafe item of this binary: a global allocator is an unsafe trait.
// SAFETY: every call forwards to `System` with the same arguments; the counter
// only observes sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

struct Args {
    series: usize,
    increments: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        series: 100_000,
        increments: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .replace('_', "");
        match flag.as_str() {
            "--series" => a.series = value.parse()?,
            "--increments" => a.increments = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.series < 2 || a.increments == 0 {
        return Err("--series must be at least 2 and --increments positive".into());
    }
    Ok(a)
}

fn per_series(bytes: usize, series: usize) -> f64 {
    bytes as f64 / series as f64
}

/// Heap bytes of a memtable holding `n` active series.
fn memtable(n: usize, increments: usize, now: i64) -> usize {
    let before = live();
    let mut m = Memtable::new();
    for _ in 0..increments {
        for id in 0..n {
            m.add(id as u32, now, 1, 0b111);
        }
    }
    let bytes = live() - before;
    assert_eq!(m.cells(), 3 * n, "one cell per tier and series");
    drop(m);
    bytes
}

/// Heap bytes of a dictionary of `n` benchmark keys, and its own account of
/// them by part.
fn dict(n: usize) -> Result<(usize, DictBytes), Box<dyn Error>> {
    let before = live();
    let mut d = SeriesDict::new();
    for i in 0..n {
        d.intern(SeriesKey::parse(&series_key(i))?);
    }
    let bytes = live() - before;
    let parts = d.heap_bytes();
    drop(d);
    Ok((bytes, parts))
}

/// Heap bytes an engine adds going from 1 active series to `n`.
fn engine(n: usize, increments: usize, now: i64) -> Result<(usize, usize), Box<dyn Error>> {
    let dir = tempdir()?;
    let clock = ManualClock::new(now);
    // fsync always: each batch's WAL bytes go out at once, so the WAL buffer
    // (a fixed 1 MiB, not per series) does not grow into the figure.
    let engine = Engine::open(
        dir.path(),
        options(FsyncPolicy::Always, false, Some(&clock)),
    )?;
    let mut ids = Vec::with_capacity(n);
    let batch = |ids: &[u32]| Batch {
        producer: None,
        events: ids
            .iter()
            .map(|&series| Event {
                series,
                delta: 1,
                ts: None,
                id: None,
            })
            .collect(),
    };
    ids.push(engine.series_id(&series_key(0))?);
    engine.apply(&batch(&ids))?;
    let one = live();
    // New series arrive with the batches that first use them, as from clients.
    for from in (1..n).step_by(1_000) {
        let to = (from + 1_000).min(n);
        for i in from..to {
            ids.push(engine.series_id(&series_key(i))?);
        }
        engine.apply(&batch(&ids[from..to]))?;
    }
    for _ in 1..increments {
        for chunk in ids[1..].chunks(1_000) {
            engine.apply(&batch(chunk))?;
        }
    }
    let all = live();
    let memtable_cells = engine.stats().memtable_cells;
    drop(ids);
    engine.close()?;
    Ok((all - one, memtable_cells as usize))
}

fn main() -> Result<(), Box<dyn Error>> {
    let a = parse_args()?;
    // Mid-minute, so every increment of a run lands in the same minute.
    let now = BASE_MS + 30 * MINUTE_MS / 60;
    let n = a.series;
    println!(
        "heap bytes per active series ({n} series, {} unit increment(s) each, minute+hour+day cells)",
        a.increments
    );
    let m = memtable(n, a.increments, now);
    println!(
        "memtable alone:        {m:>12} bytes  {:>8.1} bytes/series",
        per_series(m, n)
    );
    let (d, parts) = dict(n)?;
    println!(
        "series dict alone:     {d:>12} bytes  {:>8.1} bytes/series  (keys {} bytes each)",
        per_series(d, n),
        series_key(n - 1).len()
    );
    for (part, bytes) in [
        ("key text + offsets", parts.keys),
        ("key -> id table", parts.lookup),
        ("metric names", parts.names),
        ("label index", parts.labels),
    ] {
        println!(
            "  {part:<20} {bytes:>12} bytes  {:>8.1} bytes/series",
            per_series(bytes, n)
        );
    }
    let other = d as i64 - (parts.keys + parts.lookup + parts.names + parts.labels) as i64;
    println!(
        "  {:<20} {other:>12} bytes  (tree nodes, label names)",
        "not itemized"
    );
    let (e, cells) = engine(n, a.increments, now)?;
    println!(
        "engine, 1 -> {n} series: {e:>10} bytes  {:>8.1} bytes/series  ({cells} memtable cells)",
        per_series(e, n - 1)
    );
    Ok(())
}
