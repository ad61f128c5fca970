//! A failed fsync during a flush or a compaction poisons the engine: writes are
//! refused with a reason, reads go on, and everything acknowledged before is
//! there after a clean restart and after power loss. Compaction runs until the
//! policy chooses nothing (well past 64 tasks), and a policy that never
//! converges stops with an error instead of looping.

use std::sync::Arc;

use super::*;
use crate::compaction::{choose, CompactionOptions, CompactionTask};
use crate::query::Selector;
use crate::segment::SegmentMeta;
use crate::testing::FaultFs;
use crate::time::{Clock, ManualClock, DAY_MS, HOUR_MS, MINUTE_MS};

const DIR: &str = "db";
const START: i64 = 20_000 * DAY_MS + 13 * HOUR_MS + 7 * MINUTE_MS;

fn options(fs: &FaultFs, clock: &ManualClock, compaction: CompactionOptions) -> Options {
    Options {
        background: false,
        fs: Arc::new(fs.clone()),
        clock: Arc::new(clock.clone()),
        compaction,
        ..Options::default()
    }
}

fn hits() -> Selector {
    Selector::Metric {
        name: "hits".into(),
        matchers: Vec::new(),
        group_by: Vec::new(),
    }
}

/// Sum and count of every `hits` series, over every tier's time.
fn total(engine: &Engine, clock: &ManualClock) -> (i64, u64) {
    let now = clock.now_ms();
    let t = engine
        .total(&hits(), now - 3 * DAY_MS, now + HOUR_MS)
        .expect("total");
    (t.sum, t.count)
}

/// Applies one event of `delta` to `hits{page=p<page>}`, acknowledged.
fn hit(engine: &Engine, page: u32, delta: i64, seq: u64) -> Result<ApplyOutcome> {
    let id = engine.series_id(&format!("hits{{page=p{page}}}"))?;
    engine.apply(&Batch {
        producer: Some(ProducerSeq { id: 7, seq }),
        events: vec![Event {
            series: id,
            delta,
            ts: None,
            id: None,
        }],
    })
}

/// A flushed checkpoint, then acknowledged batches (some on series the
/// dictionary file does not hold yet) waiting in the memtable. Returns the
/// engine and the acknowledged sum and count.
fn flush_fixture(fs: &FaultFs, clock: &ManualClock) -> (Engine, (i64, u64)) {
    let engine = Engine::open(DIR, options(fs, clock, CompactionOptions::default())).expect("open");
    let mut acked = (0, 0);
    for round in 0..2u32 {
        for i in 0..5u32 {
            let delta = i64::from(i + 1);
            hit(&engine, round * 3 + i, delta, u64::from(round * 10 + i)).expect("apply");
            acked = (acked.0 + delta, acked.1 + 1);
            clock.advance(MINUTE_MS);
        }
        if round == 0 {
            engine.flush().expect("first flush");
        }
    }
    assert_eq!(total(&engine, clock), acked);
    (engine, acked)
}

/// Checks a poisoned engine: writes, flushes and compactions are refused,
/// reads see what was acknowledged; then a clean restart and a power loss both
/// keep all of it, and the engine takes writes again.
fn check_poisoned(engine: Engine, fs: &FaultFs, clock: &ManualClock, acked: (i64, u64), ctx: &str) {
    let refused = |r: Result<()>| matches!(r, Err(Error::Poisoned { .. }));
    assert!(engine.stats().poisoned, "{ctx}");
    assert!(
        refused(hit(&engine, 1, 1, 100).map(drop)),
        "{ctx}: a write was taken"
    );
    assert!(refused(engine.flush().map(drop)), "{ctx}: a flush ran");
    assert!(
        refused(engine.compact().map(drop)),
        "{ctx}: a compaction ran"
    );
    assert_eq!(
        total(&engine, clock),
        acked,
        "{ctx}: reads after the failure"
    );
    drop(engine);
    let opts = || options(fs, clock, CompactionOptions::default());
    let engine = Engine::open(DIR, opts()).expect("clean reopen");
    assert_eq!(total(&engine, clock), acked, "{ctx}: after a clean restart");
    drop(engine);
    fs.crash();
    let engine = Engine::open(DIR, opts()).expect("reopen after power loss");
    assert_eq!(total(&engine, clock), acked, "{ctx}: after power loss");
    hit(&engine, 1, 1, 101).expect("writes after the restart");
    engine.flush().expect("flush after the restart");
}

#[test]
fn a_failed_fsync_during_flush_poisons_writes_and_keeps_acknowledged_data() {
    let syncs = {
        let (fs, clock) = (FaultFs::new(), ManualClock::new(START));
        let (engine, _) = flush_fixture(&fs, &clock);
        let before = fs.syncs();
        engine.flush().expect("flush");
        fs.syncs() - before
    };
    assert!(syncs >= 6, "a flush fsyncs only {syncs} times");
    let mut poisoned = Vec::new();
    for n in 1..=syncs {
        let (fs, clock) = (FaultFs::new(), ManualClock::new(START));
        let (engine, acked) = flush_fixture(&fs, &clock);
        fs.fail_nth_sync(n);
        let res = engine.flush();
        fs.clear_faults();
        let ctx = format!("sync {n} of {syncs} failed: {res:?}");
        match res {
            Err(Error::Poisoned { reason }) => {
                assert!(reason.contains("fsync"), "{ctx}");
                poisoned.push((n, reason));
                check_poisoned(engine, &fs, &clock, acked, &ctx);
            }
            // A segment file's own fsync is part of writing it: that segment is
            // removed, never named, and the flush can run again.
            Err(Error::Io { .. }) => {
                assert!(!engine.stats().poisoned, "{ctx}");
                engine.flush().expect("flush again");
                hit(&engine, 1, 1, 100).expect("writes go on");
            }
            other => panic!("{ctx}: the fault did not fail the flush: {other:?}"),
        }
    }
    // The manifest is published last: its file fsync, then its directory's.
    let last: Vec<u64> = poisoned.iter().map(|(n, _)| *n).collect();
    assert!(last.ends_with(&[syncs - 1, syncs]), "{poisoned:?}");
    for (_, reason) in &poisoned[poisoned.len() - 2..] {
        assert!(reason.contains("manifest"), "{reason}");
    }
    assert!(
        poisoned
            .iter()
            .any(|(_, r)| r.contains("directory") && r.contains(SEGMENTS_DIR)),
        "the segment directory's fsync did not poison: {poisoned:?}"
    );
}

/// Four flushes, so each tier has segments for compaction to merge.
fn compaction_fixture(fs: &FaultFs, clock: &ManualClock) -> (Engine, (i64, u64)) {
    let engine = Engine::open(DIR, options(fs, clock, CompactionOptions::default())).expect("open");
    let mut acked = (0, 0);
    for round in 0..4u32 {
        for i in 0..3u32 {
            hit(&engine, i, 2, u64::from(round * 10 + i)).expect("apply");
            acked = (acked.0 + 2, acked.1 + 1);
            clock.advance(MINUTE_MS);
        }
        engine.flush().expect("flush");
    }
    (engine, acked)
}

#[test]
fn a_failed_manifest_fsync_during_compaction_poisons_writes() {
    let policy = |s: &Shared| {
        let retention = s.opts.retention;
        let opts = s.opts.compaction;
        move |metas: &[SegmentMeta], now| choose(metas, &retention, &opts, now)
    };
    let syncs = {
        let (fs, clock) = (FaultFs::new(), ManualClock::new(START));
        let (engine, _) = compaction_fixture(&fs, &clock);
        let before = fs.syncs();
        let step = engine.shared.compact_once(policy(&engine.shared));
        assert!(step.expect("compaction").is_some(), "nothing to compact");
        fs.syncs() - before
    };
    for (n, what) in [(syncs - 1, "manifest"), (syncs, "manifest")] {
        let (fs, clock) = (FaultFs::new(), ManualClock::new(START));
        let (engine, acked) = compaction_fixture(&fs, &clock);
        fs.fail_nth_sync(n);
        let res = engine.compact();
        fs.clear_faults();
        let ctx = format!("sync {n} of {syncs} failed: {res:?}");
        match res {
            Err(Error::Poisoned { reason }) => assert!(reason.contains(what), "{ctx}"),
            other => panic!("{ctx}: not poisoned: {other:?}"),
        }
        check_poisoned(engine, &fs, &clock, acked, &ctx);
    }
}

#[test]
fn compact_runs_until_the_policy_chooses_nothing() {
    // Pairwise merges down to one segment per tier: one task per segment but
    // one, many more than 64.
    let pairwise = CompactionOptions {
        min_merge: 2,
        max_segments: 2,
        max_merge: 2,
    };
    let (fs, clock) = (FaultFs::new(), ManualClock::new(START));
    let engine = Engine::open(DIR, options(&fs, &clock, pairwise)).expect("open");
    let mut acked = (0, 0);
    for i in 0..40u32 {
        hit(&engine, i % 7, 3, u64::from(i)).expect("apply");
        acked = (acked.0 + 3, acked.1 + 1);
        clock.advance(MINUTE_MS);
        engine.flush().expect("flush");
    }
    let segments = engine.stats().segments.iter().sum::<u64>();
    assert_eq!(segments, 120, "one segment per tier per flush");
    let out = engine.compact().expect("compact");
    assert_eq!(out.tasks, 117, "{out:?}");
    let metas: Vec<SegmentMeta> = read(&engine.shared.tables)
        .version
        .segments
        .iter()
        .map(|s| *s.meta())
        .collect();
    assert_eq!(metas.len(), 3, "{metas:?}");
    let s = &engine.shared;
    assert_eq!(
        choose(
            &metas,
            &s.opts.retention,
            &s.opts.compaction,
            clock.now_ms()
        ),
        None
    );
    assert_eq!(total(&engine, &clock), acked);
}

#[test]
fn a_policy_that_never_converges_stops_with_an_error() {
    let (fs, clock) = (FaultFs::new(), ManualClock::new(START));
    let (engine, acked) = compaction_fixture(&fs, &clock);
    let live = engine.stats().segments.iter().sum::<u64>();
    // Rewrites the first segment as it is, for ever.
    let endless = |metas: &[SegmentMeta], _now| {
        metas.first().map(|m| CompactionTask {
            tier: m.tier,
            inputs: vec![m.id],
            keep_from_bucket: i64::MIN,
            cold_before_bucket: i64::MIN,
        })
    };
    match engine.shared.compact_until_done(endless) {
        Err(Error::CompactionRunaway { tasks }) => {
            assert_eq!(tasks as u64, 4 * live + 16);
        }
        other => panic!("the run did not stop: {other:?}"),
    }
    // Every task it ran was whole: nothing lost, nothing doubled.
    assert_eq!(total(&engine, &clock), acked);
    assert!(!engine.stats().poisoned);
    hit(&engine, 0, 1, 1_000).expect("writes go on");
}
