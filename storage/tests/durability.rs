//! What each fsync policy promises across a power loss, and what a full disk does.
//!
//! - `interval:<ms>`: a power loss (every byte not fsynced is lost, through
//!   [`FaultFs::crash`]) loses only batches acknowledged inside the last interval
//!   (plus the time one fsync takes); what survives is a prefix of what was
//!   acknowledged.
//! - `always`: async waiters ([`Engine::durable`]) are answered only after the
//!   group commit; a power loss loses none of them.
//! - A full disk stalls the WAL: batches already accepted wait for space (their
//!   outcome never becomes ambiguous), new ones are refused with
//!   [`Error::DiskFull`], reads go on, bytes a refused write left behind are cut,
//!   and writes resume by themselves once space is freed.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use tallydb_storage::testing::FaultFs;
use tallydb_storage::time::{DAY_MS, HOUR_MS};
use tallydb_storage::{
    Batch, Engine, Error, Event, FsyncPolicy, ManualClock, Options, ProducerSeq, Selector,
};

const DIR: &str = "db";
const START: i64 = 20_000 * DAY_MS + 13 * HOUR_MS + 4_321;

fn options(fs: &FaultFs, fsync: FsyncPolicy, background: bool) -> Options {
    Options {
        background,
        fsync,
        clock: Arc::new(ManualClock::new(START)),
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

/// One unit increment of `key` as batch `seq` of `producer`.
fn unit(engine: &Engine, key: &str, producer: u64, seq: u64) -> Batch {
    Batch {
        producer: Some(ProducerSeq { id: producer, seq }),
        events: vec![Event {
            series: engine.series_id(key).unwrap(),
            delta: 1,
            ts: None,
            id: None,
        }],
    }
}

/// Sum and count of `key` around the test's fixed clock.
fn total(engine: &Engine, key: &str) -> (i64, u64) {
    let sel = Selector::Exact(key.to_string());
    let t = engine.total(&sel, START - DAY_MS, START + DAY_MS).unwrap();
    (t.sum, t.count)
}

struct Unpark(thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread (parks between polls).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn interval_policy_loses_only_the_last_interval() {
    const INTERVAL_MS: u64 = 50;
    // The promise is one interval plus one fsync; the slack absorbs a loaded CI
    // machine descheduling the WAL thread.
    let window = Duration::from_millis(INTERVAL_MS + 250);
    let mut worst_loss = Duration::ZERO;
    for round in 0..3u64 {
        let fs = FaultFs::new();
        let engine =
            Engine::open(DIR, options(&fs, FsyncPolicy::Interval(INTERVAL_MS), true)).unwrap();
        let acked: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
        let crashed = AtomicBool::new(false);
        let crash_at = thread::scope(|scope| {
            scope.spawn(|| {
                for seq in 1..=1_000_000 {
                    if crashed.load(Ordering::Acquire) {
                        break;
                    }
                    match engine.apply(&unit(&engine, "hits", 1, seq)) {
                        Ok(_) => acked.lock().unwrap().push(Instant::now()),
                        Err(_) => break,
                    }
                }
            });
            thread::sleep(Duration::from_millis(300 + 97 * round));
            fs.crash();
            let at = Instant::now();
            crashed.store(true, Ordering::Release);
            at
        });
        drop(engine);
        fs.clear_faults();
        let acked = acked.into_inner().unwrap();
        let engine =
            Engine::open(DIR, options(&fs, FsyncPolicy::Interval(INTERVAL_MS), false)).unwrap();
        let (sum, count) = total(&engine, "hits");
        let kept = count as usize;
        assert_eq!(sum, count as i64);
        // Acknowledged batches were logged in order: what survives is a prefix.
        assert!(
            kept <= acked.len() + 1,
            "{kept} kept of {} acked",
            acked.len()
        );
        // Everything acknowledged before the window survived.
        let must = acked.iter().filter(|t| **t + window <= crash_at).count();
        assert!(
            kept >= must,
            "round {round}: {kept} kept, but {must} were acknowledged more than {window:?} before the power loss"
        );
        if let Some(first_lost) = acked.get(kept) {
            worst_loss = worst_loss.max(crash_at.saturating_duration_since(*first_lost));
        }
        assert!(acked.len() > 100, "the writer barely ran: {}", acked.len());
        println!(
            "interval:{INTERVAL_MS}: round {round}: {} acknowledged, {kept} kept, {} lost",
            acked.len(),
            acked.len().saturating_sub(kept)
        );
    }
    println!(
        "interval:{INTERVAL_MS}: oldest lost acknowledgement {worst_loss:?} before the power loss"
    );
}

#[test]
fn always_policy_async_waiters_lose_nothing_on_power_loss() {
    const WRITERS: u64 = 4;
    for round in 0..3u64 {
        let fs = FaultFs::new();
        let engine = Engine::open(DIR, options(&fs, FsyncPolicy::Always, true)).unwrap();
        let acked: Vec<u64> = thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let engine = &engine;
                    scope.spawn(move || {
                        let key = format!("hits{{w=w{w}}}");
                        let mut acked = 0;
                        for seq in 1..=100_000 {
                            let Ok(p) = engine.submit(&unit(engine, &key, w, seq)) else {
                                break;
                            };
                            if block_on(engine.durable(p)).is_err() {
                                break;
                            }
                            acked += 1;
                        }
                        acked
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(150 + 70 * round));
            fs.crash();
            writers.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let syncs = engine.stats().wal_syncs;
        drop(engine);
        fs.clear_faults();
        let engine = Engine::open(DIR, options(&fs, FsyncPolicy::Always, false)).unwrap();
        for (w, acked) in acked.iter().enumerate() {
            let (_, kept) = total(&engine, &format!("hits{{w=w{w}}}"));
            // Nothing acknowledged is lost; at most the one batch in flight
            // at the crash may have reached the disk unacknowledged.
            assert!(
                kept >= *acked && kept <= acked + 1,
                "writer {w}: {acked} acknowledged, {kept} kept"
            );
        }
        let all: u64 = acked.iter().sum();
        assert!(all > 20, "the writers barely ran: {acked:?}");
        assert!(
            syncs < all,
            "no fsync was shared: {syncs} fsyncs for {all} batches"
        );
    }
}

/// Fills the disk, checks that an accepted batch waits, that new ones are refused
/// and reads go on, frees space, and checks that everything resumed exactly.
fn full_disk_round(background: bool, torn: bool) {
    let fs = FaultFs::new();
    let engine = Engine::open(DIR, options(&fs, FsyncPolicy::Always, background)).unwrap();
    for seq in 1..=5 {
        engine.apply(&unit(&engine, "hits", 1, seq)).unwrap();
    }
    fs.set_torn_writes(torn);
    fs.set_space_limit(Some(fs.total_bytes() + 10));
    thread::scope(|scope| {
        let stuck = scope.spawn(|| {
            let p = engine.submit(&unit(&engine, "hits", 1, 6))?;
            if background {
                block_on(engine.durable(p))
            } else {
                engine.wait(p)
            }
        });
        wait_until("the stall", || engine.stats().disk_full);
        // Through at least one retry, still full.
        thread::sleep(Duration::from_millis(450));
        assert!(
            !stuck.is_finished(),
            "an accepted batch must wait for space, not fail"
        );
        let e = engine.apply(&unit(&engine, "hits", 2, 1)).unwrap_err();
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        assert!(e.is_disk_full());
        assert!(e.to_string().contains("disk is full"), "{e}");
        assert!(matches!(engine.flush(), Err(Error::DiskFull { .. })));
        assert!(matches!(engine.sync(), Err(Error::DiskFull { .. })));
        // Reads go on, and see what was accepted.
        assert_eq!(total(&engine, "hits"), (6, 6));
        fs.set_space_limit(None);
        let out = stuck.join().unwrap().unwrap();
        assert_eq!((out.applied, out.duplicate_batch), (1, false));
    });
    assert!(!engine.stats().disk_full);
    // The refused batch was never counted: its retry is new, and counts once.
    engine.apply(&unit(&engine, "hits", 2, 1)).unwrap();
    assert!(
        engine
            .apply(&unit(&engine, "hits", 2, 1))
            .unwrap()
            .duplicate_batch
    );
    engine.flush().unwrap();
    engine.apply(&unit(&engine, "hits", 2, 2)).unwrap();
    assert_eq!(total(&engine, "hits"), (8, 8));
    // A power loss keeps all of it, and finds no torn record: the bytes the
    // refused write left behind were cut before the retry.
    fs.crash();
    drop(engine);
    fs.clear_faults();
    let engine = Engine::open(DIR, options(&fs, FsyncPolicy::Always, false)).unwrap();
    assert_eq!(engine.recovery().torn_tails, vec![]);
    assert_eq!(total(&engine, "hits"), (8, 8));
}

#[test]
fn a_full_disk_stalls_writes_until_space_returns() {
    for background in [false, true] {
        for torn in [false, true] {
            full_disk_round(background, torn);
        }
    }
}

#[test]
fn closing_while_the_disk_is_full_does_not_hang() {
    let fs = FaultFs::new();
    let engine = Engine::open(DIR, options(&fs, FsyncPolicy::Interval(20), true)).unwrap();
    engine.apply(&unit(&engine, "hits", 1, 1)).unwrap();
    fs.set_space_limit(Some(fs.total_bytes()));
    engine.apply(&unit(&engine, "hits", 1, 2)).unwrap();
    wait_until("the stall", || engine.stats().disk_full);
    let e = engine.close().unwrap_err();
    assert!(e.is_disk_full(), "{e}");
}
