//! Model-based tests of the storage engine.
//!
//! 1. [`engine_matches_model`]: random operations (batches with late, too-old,
//!    future and duplicate events, producer retries, clock moves, flushes,
//!    compactions, clean restarts and power losses) against an engine on
//!    [`FaultFs`], compared after every step with a plain in-memory model:
//!    totals, ranges, top-k, and the rollup invariant read through the engine.
//! 2. [`flush_survives_a_fault_at_every_step`] and
//!    [`compaction_survives_a_fault_at_every_step`]: the Nth write, sync,
//!    rename or create of a flush / compaction fails, then the power goes (or
//!    the process goes on and restarts cleanly); every count must still be
//!    exact, and the next flush / compaction must work.
//! 3. [`failed_wal_fsync_poisons_writes_but_not_reads`].
//! 4. [`concurrent_writers_read_their_writes_and_share_fsyncs`]: group commit
//!    on a real directory.
//!
//! Batches are strict (all or nothing) or per event (bad events refused one by
//! one); timestamps include ones before the minimum event time (zero, negative,
//! the year 1000, seconds sent as milliseconds) and deltas near `i64::MAX` and
//! `i64::MIN`, so that batches that could overflow a cell are refused whole.
//!
//! The model keeps every acknowledged event `(series, ts, delta)`. Because a
//! tier's retention only shrinks as the clock moves forward, every tier that
//! covers a bucket *now* also covered it when any event of that bucket was
//! accepted; so whatever tier the planner picks for a piece of a query, the
//! exact answer is the sum of the model's events inside that piece.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use tallydb_storage::compaction::CompactionOptions;
use tallydb_storage::fs::{DirLock, FileSystem, Mapped, OsFs, WritableFile};
use tallydb_storage::query::{clamp_time, plan, Plan};
use tallydb_storage::testing::FaultFs;
use tallydb_storage::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use tallydb_storage::{
    Agg, Batch, Engine, Error, Event, EventId, FsyncPolicy, ManualClock, Matcher, Options,
    ProducerSeq, RangeQuery, Reason, Retention, Selector, Step, Tier, TopQuery, Value,
    DEFAULT_MIN_EVENT_MS,
};

// ---------------------------------------------------------------------------
// Configuration

const MINUTE_RET: i64 = 2 * HOUR_MS;
const HOUR_RET: i64 = 2 * DAY_MS;
const DAY_RET: i64 = 10 * DAY_MS;
const SKEW: i64 = 10 * MINUTE_MS;
const DEDUP_WINDOW: i64 = HOUR_MS;
const DIR: &str = "db";

fn retention() -> Retention {
    Retention {
        minute_ms: Some(MINUTE_RET),
        hour_ms: Some(HOUR_RET),
        day_ms: Some(DAY_RET),
    }
}

fn options(fs: Arc<dyn FileSystem>, clock: &ManualClock) -> Options {
    Options {
        background: false,
        fsync: FsyncPolicy::Always,
        clock: Arc::new(clock.clone()),
        fs,
        retention: retention(),
        max_future_skew_ms: SKEW,
        dedup_window_ms: DEDUP_WINDOW,
        // Producers never expire inside a test case, so the model needs no rule
        // for the engine's lazy expiry.
        producer_idle_ms: 365 * DAY_MS,
        compaction: CompactionOptions {
            min_merge: 2,
            max_segments: 4,
            max_merge: 16,
        },
        ..Options::default()
    }
}

/// A series of the test universe. `base` series are interned at every open;
/// the others only when a batch first uses them (so the dictionary grows
/// between flushes and unlogged ids are lost on restart).
struct S {
    key: &'static str,
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    base: bool,
}

const SERIES: [S; 8] = [
    S {
        key: "hits",
        name: "hits",
        labels: &[],
        base: true,
    },
    S {
        key: "hits{ad=a1}",
        name: "hits",
        labels: &[("ad", "a1")],
        base: true,
    },
    S {
        key: "hits{ad=a2,country=US}",
        name: "hits",
        labels: &[("ad", "a2"), ("country", "US")],
        base: true,
    },
    S {
        key: "hits{country=DE}",
        name: "hits",
        labels: &[("country", "DE")],
        base: false,
    },
    S {
        key: "hits{ad=a1,country=US}",
        name: "hits",
        labels: &[("ad", "a1"), ("country", "US")],
        base: false,
    },
    S {
        key: "app.web.views{ad=a1}",
        name: "app.web.views",
        labels: &[("ad", "a1")],
        base: true,
    },
    S {
        key: "app.api.calls",
        name: "app.api.calls",
        labels: &[],
        base: false,
    },
    S {
        key: "apple",
        name: "apple",
        labels: &[],
        base: true,
    },
];

fn label_of(s: usize, l: &str) -> Option<&'static str> {
    SERIES[s]
        .labels
        .iter()
        .find(|(k, _)| *k == l)
        .map(|(_, v)| *v)
}

fn metric(name: &str, matchers: Vec<Matcher>, group_by: &[&str]) -> Selector {
    Selector::Metric {
        name: name.into(),
        matchers,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
    }
}

fn eq(l: &str, v: &str) -> Matcher {
    Matcher::Eq(l.into(), v.into())
}

fn ne(l: &str, v: &str) -> Matcher {
    Matcher::Ne(l.into(), v.into())
}

/// Selectors over several series, for totals.
fn selectors() -> Vec<Selector> {
    vec![
        metric("hits", vec![], &[]),
        metric("hits", vec![eq("ad", "a1")], &[]),
        metric("hits", vec![ne("ad", "a1")], &[]),
        metric("hits", vec![eq("country", "US"), ne("ad", "a2")], &[]),
        metric("hits", vec![ne("country", "DE")], &[]),
        metric("app.web.views", vec![], &[]),
        Selector::Prefix("app".into()),
        Selector::Prefix("app.web".into()),
        Selector::Prefix("ap".into()),
    ]
}

/// True if series `s` is selected (by key, labels and name, like the engine's
/// label index but computed from the static table).
fn selects(sel: &Selector, s: usize) -> bool {
    let ser = &SERIES[s];
    match sel {
        Selector::Exact(k) => k == ser.key,
        Selector::Metric { name, matchers, .. } => {
            name == ser.name
                && matchers.iter().all(|m| match m {
                    Matcher::Eq(l, v) => label_of(s, l) == Some(v.as_str()),
                    Matcher::Ne(l, v) => label_of(s, l).unwrap_or("") != v,
                })
        }
        Selector::Prefix(p) | Selector::PrefixBy { prefix: p, .. } => {
            ser.name == p
                || (ser.name.starts_with(p.as_str())
                    && (p.ends_with('.') || ser.name[p.len()..].starts_with('.')))
        }
    }
}

// ---------------------------------------------------------------------------
// The model

#[derive(Debug, Clone, Copy)]
struct Ev {
    series: usize,
    ts: i64,
    delta: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProducerModel {
    last_seq: u64,
    applied: u32,
    duplicates: u32,
}

#[derive(Debug, Default)]
struct Model {
    events: Vec<Ev>,
    /// Event id -> expiry.
    ids: HashMap<u64, i64>,
    producers: HashMap<u64, ProducerModel>,
    /// Acknowledged (producer, seq) pairs, for retries.
    acked: Vec<(u64, u64)>,
    /// Series whose key reached the WAL (they survive restarts).
    logged: BTreeSet<usize>,
    /// Series the engine's dictionary holds now.
    interned: BTreeSet<usize>,
    /// Per series and UTC day: the sums of the positive deltas and of the
    /// magnitudes of the negative deltas applied, and whether the engine's
    /// bound may exceed them (the day mixed signs, or skipped duplicate ids).
    mass: HashMap<(usize, i64), DayMass>,
}

#[derive(Debug, Clone, Copy, Default)]
struct DayMass {
    pos: u128,
    neg: u128,
    loose: bool,
}

/// How a batch's valid events relate to the overflow bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fits {
    /// No cell can overflow: the engine must apply the batch.
    Yes,
    /// A cell would overflow: the engine must refuse the batch whole.
    No,
    /// The engine's bound is looser than the model's: either outcome is right.
    Maybe,
}

/// What the model says `apply` must answer.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    TooOld(usize),
    TooEarly(usize),
    TooFarInFuture(usize),
    Overflow,
    Retry {
        last: Option<ProducerModel>,
    },
    Applied {
        applied: u32,
        duplicates: u32,
        logged: bool,
        /// Indices refused one by one (per-event validation).
        refused: Vec<usize>,
        /// The engine may also refuse the batch whole with an overflow.
        may_overflow: bool,
    },
}

fn covers(tier: Tier, ts: i64, now: i64) -> bool {
    let ret = match tier {
        Tier::Minute => MINUTE_RET,
        Tier::Hour => HOUR_RET,
        Tier::Day => DAY_RET,
    };
    ts.div_euclid(tier.bucket_ms()) >= (now - ret).div_euclid(tier.bucket_ms())
}

/// Start of the oldest bucket `tier` retains at `now`.
fn kept_from(tier: Tier, now: i64) -> i64 {
    let ret = match tier {
        Tier::Minute => MINUTE_RET,
        Tier::Hour => HOUR_RET,
        Tier::Day => DAY_RET,
    };
    tier.start_of(tier.bucket_of(now - ret))
}

impl Model {
    /// Decides the outcome of a batch, without recording it.
    fn decide(
        &self,
        now: i64,
        producer: Option<ProducerSeq>,
        events: &[(usize, i64, i64, Option<u64>)],
        per_event: bool,
    ) -> Expect {
        if let Some(p) = producer {
            if let Some(st) = self.producers.get(&p.id) {
                if p.seq <= st.last_seq {
                    let last = (p.seq == st.last_seq).then_some(*st);
                    return Expect::Retry { last };
                }
            }
        }
        let mut refused = Vec::new();
        for (i, (_, ts, _, _)) in events.iter().enumerate() {
            let bad = if *ts > now + SKEW {
                Some(Expect::TooFarInFuture(i))
            } else if *ts < DEFAULT_MIN_EVENT_MS {
                Some(Expect::TooEarly(i))
            } else if !Tier::ALL.iter().any(|t| covers(*t, *ts, now)) {
                Some(Expect::TooOld(i))
            } else {
                None
            };
            match bad {
                Some(e) if !per_event => return e,
                Some(_) => refused.push(i),
                None => {}
            }
        }
        let valid: Vec<(usize, i64, i64, Option<u64>)> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(i))
            .map(|(_, e)| *e)
            .collect();
        let fits = self.fits(&valid);
        if fits == Fits::No {
            return Expect::Overflow;
        }
        let (mut applied, mut duplicates) = (0u32, 0u32);
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        for (_, _, _, id) in &valid {
            if let Some(id) = id {
                let known = self.ids.get(id).is_some_and(|exp| *exp > now);
                if known || !seen.insert(*id) {
                    duplicates += 1;
                    continue;
                }
            }
            applied += 1;
        }
        Expect::Applied {
            applied,
            duplicates,
            logged: applied > 0 || producer.is_some(),
            refused,
            may_overflow: fits == Fits::Maybe,
        }
    }

    /// Whether the valid events of a batch fit the overflow bound of their
    /// days (the engine counts every valid event, duplicates included).
    fn fits(&self, valid: &[(usize, i64, i64, Option<u64>)]) -> Fits {
        let mut days: HashMap<(usize, i64), DayMass> = HashMap::new();
        for (s, ts, delta, _) in valid {
            let key = (*s, Tier::Day.bucket_of(*ts));
            let m = days
                .entry(key)
                .or_insert_with(|| self.mass.get(&key).copied().unwrap_or_default());
            if *delta >= 0 {
                m.pos += u128::from(delta.unsigned_abs());
            } else {
                m.neg += u128::from(delta.unsigned_abs());
            }
        }
        let mut fits = Fits::Yes;
        for m in days.values() {
            if m.pos > i64::MAX as u128 || m.neg > 1u128 << 63 {
                return Fits::No;
            }
            if m.loose && (m.pos > 0 || m.neg > 0) {
                fits = Fits::Maybe;
            }
        }
        fits
    }

    /// Records a batch the engine applied.
    fn record(
        &mut self,
        now: i64,
        producer: Option<ProducerSeq>,
        events: &[(usize, i64, i64, Option<u64>)],
        refused: &[usize],
    ) {
        if events.iter().any(|e| e.3.is_some()) {
            self.ids.retain(|_, exp| *exp > now);
        }
        let (mut applied, mut duplicates) = (0u32, 0u32);
        for (i, (s, ts, delta, id)) in events.iter().enumerate() {
            if refused.contains(&i) {
                continue;
            }
            let m = self.mass.entry((*s, Tier::Day.bucket_of(*ts))).or_default();
            if let Some(id) = id {
                if self.ids.contains_key(id) {
                    duplicates += 1;
                    // The engine's bound counts it; the model's does not.
                    m.loose = true;
                    continue;
                }
                self.ids.insert(*id, now + DEDUP_WINDOW);
            }
            if *delta >= 0 {
                m.pos += u128::from(delta.unsigned_abs());
            } else {
                m.neg += u128::from(delta.unsigned_abs());
            }
            if m.pos > 0 && m.neg > 0 {
                m.loose = true;
            }
            applied += 1;
            self.events.push(Ev {
                series: *s,
                ts: *ts,
                delta: *delta,
            });
        }
        let logged = applied > 0 || producer.is_some();
        if logged {
            self.logged.extend(self.interned.iter().copied());
        }
        if let Some(p) = producer {
            self.producers.insert(
                p.id,
                ProducerModel {
                    last_seq: p.seq,
                    applied,
                    duplicates,
                },
            );
            self.acked.push((p.id, p.seq));
        }
    }

    fn next_seq(&self, producer: u64) -> u64 {
        self.producers.get(&producer).map_or(1, |p| p.last_seq + 1)
    }

    /// Sum and count of the selected series' events in `from..to`, exact.
    fn total(&self, sel: &Selector, from: i64, to: i64) -> (i128, u64) {
        let mut acc = (0i128, 0u64);
        for e in &self.events {
            if e.ts >= from && e.ts < to && selects(sel, e.series) {
                acc.0 += i128::from(e.delta);
                acc.1 += 1;
            }
        }
        acc
    }
}

/// The plan must be contiguous pieces from `from` to `to`, each served by a
/// tier that retains it now.
fn check_plan(p: &Plan, now: i64) -> Result<(), TestCaseError> {
    let mut at = p.from;
    for piece in &p.pieces {
        prop_assert_eq!(piece.tier.start_of(piece.from_bucket), at, "gap in {:?}", p);
        prop_assert!(
            piece.to_bucket > piece.from_bucket,
            "empty piece in {:?}",
            p
        );
        prop_assert!(
            covers(piece.tier, piece.tier.start_of(piece.from_bucket), now),
            "piece {:?} not retained at {}",
            piece,
            now
        );
        at = piece.tier.start_of(piece.to_bucket);
    }
    prop_assert_eq!(at, p.to, "plan {:?} does not reach its end", p);
    Ok(())
}

fn fail(e: Error) -> TestCaseError {
    TestCaseError::fail(format!("engine error: {e}"))
}

/// A model range point: exact sum, count, min, max.
type WidePoint = (i128, i64, i64, i64);

/// Range answer groups: labels and points.
type Groups = Vec<(Vec<(String, String)>, Vec<(i64, Value)>)>;

// ---------------------------------------------------------------------------
// The harness: an engine on a FaultFs plus the model

struct Harness {
    fs: FaultFs,
    clock: ManualClock,
    engine: Option<Engine>,
    ids: HashMap<usize, u32>,
    model: Model,
    opened: usize,
}

impl Harness {
    fn new(start: i64) -> Harness {
        let mut h = Harness {
            fs: FaultFs::new(),
            clock: ManualClock::new(start),
            engine: None,
            ids: HashMap::new(),
            model: Model::default(),
            opened: 0,
        };
        h.open().unwrap();
        h
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    fn now(&self) -> i64 {
        use tallydb_storage::Clock;
        self.clock.now_ms()
    }

    fn open(&mut self) -> Result<(), TestCaseError> {
        let opts = options(Arc::new(self.fs.clone()), &self.clock);
        let engine = Engine::open(DIR, opts).map_err(fail)?;
        self.opened += 1;
        self.ids.clear();
        self.model.interned = self.model.logged.clone();
        for (i, s) in SERIES.iter().enumerate() {
            if s.base {
                self.ids.insert(i, engine.series_id(s.key).map_err(fail)?);
                self.model.interned.insert(i);
            }
        }
        self.engine = Some(engine);
        Ok(())
    }

    /// Close cleanly and open again.
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        if let Some(e) = self.engine.take() {
            e.close().map_err(fail)?;
        }
        self.open()
    }

    /// Power loss, then open again. The engine is dropped after the crash so
    /// that everything its `Drop` (which calls `close`) tries to write goes to
    /// dead handles.
    fn crash(&mut self) -> Result<(), TestCaseError> {
        self.fs.crash();
        drop(self.engine.take());
        self.fs.clear_faults();
        self.open()
    }

    fn sid(&mut self, s: usize) -> Result<u32, TestCaseError> {
        if let Some(id) = self.ids.get(&s) {
            return Ok(*id);
        }
        let id = self.engine().series_id(SERIES[s].key).map_err(fail)?;
        self.ids.insert(s, id);
        self.model.interned.insert(s);
        Ok(id)
    }

    fn resolve_ts(&self, ts: TsSpec) -> Option<i64> {
        let now = self.now();
        match ts {
            TsSpec::Now => None,
            TsSpec::Back(ms) => Some(now - ms),
            TsSpec::Ahead(ms) => Some(now + ms),
            TsSpec::Edge(tier, off) => Some(kept_from(tier, now) + off),
            TsSpec::Abs(ts) => Some(ts),
            TsSpec::SecondsAsMs => Some(now / 1000),
        }
    }

    /// Applies a batch to engine and model and compares the outcomes.
    fn apply(&mut self, spec: &BatchSpec) -> Result<(), TestCaseError> {
        let now = self.now();
        let producer = match spec.producer {
            PSpec::None => None,
            PSpec::Next(p) => Some(ProducerSeq {
                id: p,
                seq: self.model.next_seq(p),
            }),
            PSpec::Retry(i) => {
                if self.model.acked.is_empty() {
                    None
                } else {
                    let (id, seq) = self.model.acked[i % self.model.acked.len()];
                    Some(ProducerSeq { id, seq })
                }
            }
        };
        let mut batch = Batch {
            producer,
            events: Vec::new(),
        };
        let mut model_events = Vec::new();
        for e in &spec.events {
            let series = self.sid(e.series)?;
            let ts = self.resolve_ts(e.ts);
            let id = e.id.map(|k| 0x9E37_79B9_0000_0000 | u64::from(k));
            batch.events.push(Event {
                series,
                delta: e.delta,
                ts,
                id: id.map(EventId),
            });
            model_events.push((e.series, ts.unwrap_or(now), e.delta, id));
        }
        let expect = self
            .model
            .decide(now, producer, &model_events, spec.per_event);
        let got = if spec.per_event {
            self.engine().apply_each(&batch)
        } else {
            self.engine().apply(&batch).map(|o| (o, Vec::new()))
        };
        match (&expect, got) {
            (Expect::TooOld(i), Err(Error::TooOld { index, .. })) => prop_assert_eq!(*i, index),
            (Expect::TooEarly(i), Err(Error::TooEarly { index, min_ms, .. })) => {
                prop_assert_eq!(*i, index);
                prop_assert_eq!(min_ms, DEFAULT_MIN_EVENT_MS);
            }
            (Expect::TooFarInFuture(i), Err(Error::TooFarInFuture { index, .. })) => {
                prop_assert_eq!(*i, index)
            }
            (Expect::Overflow, Err(Error::CellOverflow { tier, .. })) => {
                prop_assert_eq!(tier, "day");
            }
            (
                Expect::Applied {
                    may_overflow: true, ..
                },
                Err(Error::CellOverflow { .. }),
            ) => {}
            (Expect::Retry { last }, Ok((out, _))) => {
                prop_assert!(out.duplicate_batch, "retry not flagged: {:?}", out);
                if let Some(last) = last {
                    prop_assert_eq!(
                        (out.applied, out.duplicates),
                        (last.applied, last.duplicates)
                    );
                }
            }
            (
                Expect::Applied {
                    applied,
                    duplicates,
                    logged,
                    refused,
                    ..
                },
                Ok((out, got_refused)),
            ) => {
                prop_assert!(!out.duplicate_batch);
                prop_assert_eq!((out.applied, out.duplicates), (*applied, *duplicates));
                prop_assert_eq!(out.refused as usize, refused.len());
                prop_assert_eq!(
                    out.applied + out.duplicates + out.refused,
                    spec.events.len() as u32,
                    "applied + duplicates + refused = sent"
                );
                let indices: Vec<usize> = got_refused.iter().map(|r| r.index).collect();
                prop_assert_eq!(&indices, refused);
                for r in &got_refused {
                    let (_, ts, _, _) = model_events[r.index];
                    let want_early = ts < DEFAULT_MIN_EVENT_MS && ts <= now + SKEW;
                    prop_assert_eq!(
                        matches!(r.reason, Reason::TooEarly { .. }),
                        want_early,
                        "{:?}",
                        r
                    );
                }
                prop_assert_eq!(out.lsn > 0, *logged, "lsn {}", out.lsn);
                let refused = refused.clone();
                self.model.record(now, producer, &model_events, &refused);
            }
            (e, g) => {
                return Err(TestCaseError::fail(format!(
                    "batch {batch:?} at {now}: model expects {e:?}, engine answered {g:?}"
                )))
            }
        }
        Ok(())
    }

    // -- checks ------------------------------------------------------------

    fn check_all(&self) -> Result<(), TestCaseError> {
        self.check_totals()?;
        self.check_ranges()?;
        self.check_top()?;
        self.check_rollups()?;
        Ok(())
    }

    fn total_windows(&self) -> Vec<(i64, i64)> {
        let now = self.now();
        let m0 = kept_from(Tier::Minute, now);
        vec![
            (now - 5 * MINUTE_MS, now + MINUTE_MS),
            (now - 2 * HOUR_MS + 90_001, now - 30 * MINUTE_MS + 7),
            (m0, now + SKEW + MINUTE_MS),
            (m0 - 1, now),
            (now - DAY_MS - 17 * MINUTE_MS, now + 5 * MINUTE_MS),
            (now - 3 * DAY_MS - 1, now + HOUR_MS),
            (now - 12 * DAY_MS, now + DAY_MS),
        ]
    }

    fn check_total(&self, sel: &Selector, from: i64, to: i64) -> Result<(), TestCaseError> {
        let now = self.now();
        let p = plan(from, to, None, &retention(), now);
        check_plan(&p, now)?;
        let exact = self.model.total(sel, p.from, p.to);
        let r = match self.engine().total(sel, from, to) {
            // A total past i64 is an error, never a wrapped number.
            Err(Error::TotalOverflow { value, .. }) => {
                prop_assert!(i64::try_from(exact.0).is_err(), "{} fits", exact.0);
                prop_assert_eq!(value, exact.0);
                return Ok(());
            }
            r => r.map_err(fail)?,
        };
        let pv = r.provenance;
        prop_assert_eq!((pv.from, pv.to), (p.from, p.to), "provenance of total");
        prop_assert_eq!(pv.tiers, p.tiers());
        let lo = from.max(kept_from(Tier::Day, now));
        prop_assert!(
            pv.from <= lo && pv.from > lo - DAY_MS,
            "from {} for {}",
            pv.from,
            from
        );
        prop_assert!(
            pv.to >= to && pv.to < to + DAY_MS,
            "to {} for {}",
            pv.to,
            to
        );
        let want = self.model.total(sel, pv.from, pv.to);
        prop_assert_eq!(
            (i128::from(r.sum), r.count),
            want,
            "total {:?} over {}..{} (covered {}..{}, now {})",
            sel,
            from,
            to,
            pv.from,
            pv.to,
            now
        );
        Ok(())
    }

    fn check_totals(&self) -> Result<(), TestCaseError> {
        let windows = self.total_windows();
        for (from, to) in &windows {
            for s in SERIES.iter() {
                self.check_total(&Selector::Exact(s.key.into()), *from, *to)?;
            }
        }
        for (from, to) in windows.iter().step_by(2) {
            for sel in selectors() {
                self.check_total(&sel, *from, *to)?;
            }
        }
        Ok(())
    }

    /// The model's answer to a range query: (covered from, to, groups).
    /// `None` when some point's sum does not fit `i64` (the engine must then
    /// answer `TotalOverflow`).
    fn model_range(
        &self,
        q: &RangeQuery,
        step: i64,
    ) -> Result<(Plan, Option<Groups>), TestCaseError> {
        let now = self.now();
        let grid_from = clamp_time(q.from).div_euclid(step) * step;
        let p = plan(grid_from, q.to, Some(step), &retention(), now);
        check_plan(&p, now)?;
        let start = p.from.div_euclid(step) * step;
        let points = ((p.to - start + step - 1) / step).max(0) as usize;
        let group_by = q.selector.group_by();
        let labels_of = |s: usize| -> Vec<(String, String)> {
            group_by
                .iter()
                .map(|l| (l.clone(), label_of(s, l).unwrap_or("").to_string()))
                .collect()
        };
        let mut groups: BTreeMap<Vec<(String, String)>, Vec<Option<WidePoint>>> = BTreeMap::new();
        if group_by.is_empty() {
            groups.insert(Vec::new(), vec![None; points]);
        }
        for s in &self.model.interned {
            if selects(&q.selector, *s) {
                groups
                    .entry(labels_of(*s))
                    .or_insert_with(|| vec![None; points]);
            }
        }
        for e in &self.model.events {
            if !selects(&q.selector, e.series) {
                continue;
            }
            let Some(piece) = p.pieces.iter().find(|x| {
                x.tier.start_of(x.from_bucket) <= e.ts && e.ts < x.tier.start_of(x.to_bucket)
            }) else {
                continue;
            };
            let bucket_start = piece.tier.start_of(piece.tier.bucket_of(e.ts));
            let k = (bucket_start - start).div_euclid(step);
            if k < 0 || k as usize >= points {
                continue;
            }
            let slots = groups.get_mut(&labels_of(e.series)).ok_or_else(|| {
                TestCaseError::fail(format!("event of uninterned series {}", e.series))
            })?;
            // (exact sum, count, min, max)
            match &mut slots[k as usize] {
                Some(c) => {
                    c.0 += i128::from(e.delta);
                    c.1 += 1;
                    c.2 = c.2.min(e.delta);
                    c.3 = c.3.max(e.delta);
                }
                slot => *slot = Some((i128::from(e.delta), 1, e.delta, e.delta)),
            }
        }
        let mut out = Vec::new();
        for (labels, cells) in groups {
            let mut pts = Vec::new();
            for (k, c) in cells.iter().enumerate() {
                let t = start + k as i64 * step;
                let v = match (q.agg, c) {
                    (Agg::Sum, c) => match i64::try_from(c.map_or(0, |c| c.0)) {
                        Ok(v) => Value::Int(v),
                        Err(_) => return Ok((p, None)),
                    },
                    (Agg::Count, c) => Value::Int(c.map_or(0, |c| c.1)),
                    (Agg::Min, Some(c)) => Value::Int(c.2),
                    (Agg::Max, Some(c)) => Value::Int(c.3),
                    _ => continue,
                };
                pts.push((t, v));
            }
            out.push((labels, pts));
        }
        Ok((p, Some(out)))
    }

    fn check_range(&self, q: &RangeQuery) -> Result<(), TestCaseError> {
        let Step::Fixed(step) = q.step else {
            unreachable!("fixed steps only")
        };
        let (p, want) = self.model_range(q, step)?;
        let r = match (self.engine().range(q), want) {
            (Err(Error::TotalOverflow { .. }), None) => return Ok(()),
            (r, None) => {
                return Err(TestCaseError::fail(format!(
                    "range {q:?}: a point does not fit i64, the engine answered {r:?}"
                )))
            }
            (r, Some(w)) => (r.map_err(fail)?, w),
        };
        let (r, want) = r;
        prop_assert_eq!(r.step, step);
        prop_assert_eq!(
            (r.provenance.from, r.provenance.to, r.provenance.tiers),
            (p.from.div_euclid(step) * step, p.to, p.tiers())
        );
        let got: Groups = r.groups.into_iter().map(|g| (g.labels, g.points)).collect();
        prop_assert_eq!(got, want, "range {:?} at now {}", q, self.now());
        Ok(())
    }

    fn check_ranges(&self) -> Result<(), TestCaseError> {
        let now = self.now();
        let windows = [
            (now - 3 * HOUR_MS, now + MINUTE_MS, MINUTE_MS),
            (now - 90 * MINUTE_MS + 1, now, 5 * MINUTE_MS),
            (now - 3 * DAY_MS - 7 * MINUTE_MS, now + HOUR_MS, HOUR_MS),
            (now - 12 * DAY_MS, now + DAY_MS, DAY_MS),
        ];
        let sels = [
            metric("hits", vec![], &["ad"]),
            Selector::Prefix("app".into()),
            metric("hits", vec![ne("ad", "a2")], &["country", "ad"]),
        ];
        for (from, to, step) in windows {
            for (i, sel) in sels.iter().enumerate() {
                let aggs: &[Agg] = if i == 0 {
                    &[Agg::Sum, Agg::Count, Agg::Min, Agg::Max]
                } else {
                    &[Agg::Sum]
                };
                for agg in aggs {
                    self.check_range(&RangeQuery {
                        selector: sel.clone(),
                        from,
                        to,
                        step: Step::Fixed(step),
                        agg: *agg,
                    })?;
                }
            }
        }
        Ok(())
    }

    fn check_top(&self) -> Result<(), TestCaseError> {
        let now = self.now();
        let windows = [
            (now - HOUR_MS, now + MINUTE_MS),
            (now - 3 * DAY_MS, now + HOUR_MS),
            (now - 12 * DAY_MS, now + DAY_MS),
        ];
        let queries = [
            (metric("hits", vec![], &[]), None),
            (metric("hits", vec![], &[]), Some("ad")),
            (
                metric("hits", vec![ne("country", "DE")], &[]),
                Some("country"),
            ),
            (Selector::Prefix("app".into()), None),
        ];
        for (from, to) in windows {
            for (sel, by) in &queries {
                for n in [1, 2, 10] {
                    let q = TopQuery {
                        selector: sel.clone(),
                        from,
                        to,
                        n,
                        by_label: by.map(str::to_string),
                    };
                    let p = plan(from, to, None, &retention(), now);
                    let mut sums: BTreeMap<String, (i128, u64)> = BTreeMap::new();
                    for e in &self.model.events {
                        if e.ts < p.from || e.ts >= p.to || !selects(sel, e.series) {
                            continue;
                        }
                        let name = match by {
                            None => SERIES[e.series].key.to_string(),
                            Some(l) => label_of(e.series, l).unwrap_or("").to_string(),
                        };
                        let acc = sums.entry(name).or_default();
                        acc.0 += i128::from(e.delta);
                        acc.1 += 1;
                    }
                    let mut exact: Vec<(String, i128, u64)> =
                        sums.into_iter().map(|(n, (s, c))| (n, s, c)).collect();
                    exact.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    exact.truncate(n);
                    let fits = exact.iter().all(|e| i64::try_from(e.1).is_ok());
                    let r = match self.engine().top(&q) {
                        Err(Error::TotalOverflow { .. }) if !fits => continue,
                        r => r.map_err(fail)?,
                    };
                    prop_assert!(fits, "top {:?}: an entry past i64 was answered", q);
                    prop_assert_eq!((r.provenance.from, r.provenance.to), (p.from, p.to));
                    let want: Vec<(String, i64, u64)> = exact
                        .into_iter()
                        .map(|(n, s, c)| (n, s as i64, c))
                        .collect();
                    let got: Vec<(String, i64, u64)> = r
                        .entries
                        .into_iter()
                        .map(|e| (e.name, e.sum, e.count))
                        .collect();
                    prop_assert_eq!(got, want, "top {:?} at now {}", q, now);
                }
            }
        }
        Ok(())
    }

    /// Rollups read through the engine: an hour equals its minutes wherever
    /// the minute tier retains the whole hour; a day equals its hours wherever
    /// the hour tier retains the whole day.
    fn check_rollups(&self) -> Result<(), TestCaseError> {
        let now = self.now();
        let sel = metric("hits", vec![], &["ad"]);
        let pairs = [
            (Tier::Hour, Tier::Minute, kept_from(Tier::Minute, now)),
            (Tier::Day, Tier::Hour, kept_from(Tier::Hour, now)),
        ];
        for (coarse, fine, kept) in pairs {
            let w = coarse.bucket_ms();
            let first = kept.div_euclid(w) * w + if kept.rem_euclid(w) == 0 { 0 } else { w };
            let mut b = first;
            while b <= now {
                for agg in [Agg::Sum, Agg::Count, Agg::Min, Agg::Max] {
                    let q = |step: i64| RangeQuery {
                        selector: sel.clone(),
                        from: b,
                        to: b + w,
                        step: Step::Fixed(step),
                        agg,
                    };
                    // Points past i64 are errors; check_ranges checks when.
                    let (big, small) = match (
                        self.engine().range(&q(w)),
                        self.engine().range(&q(fine.bucket_ms())),
                    ) {
                        (Err(Error::TotalOverflow { .. }), _)
                        | (_, Err(Error::TotalOverflow { .. })) => continue,
                        (big, small) => (big.map_err(fail)?, small.map_err(fail)?),
                    };
                    prop_assert_eq!(big.provenance.tiers, coarse.bit());
                    prop_assert_eq!(small.provenance.tiers, fine.bit());
                    prop_assert_eq!(big.groups.len(), small.groups.len());
                    for (g, f) in big.groups.iter().zip(&small.groups) {
                        let ints = f.points.iter().filter_map(|(_, v)| match v {
                            Value::Int(i) => Some(*i),
                            Value::Float(_) => None,
                        });
                        let folded = match agg {
                            Agg::Sum | Agg::Count => Some(ints.sum::<i64>()),
                            Agg::Min => ints.min(),
                            _ => ints.max(),
                        };
                        let want: Vec<(i64, Value)> = match (agg, folded) {
                            (Agg::Min | Agg::Max, None) => vec![],
                            (_, v) => vec![(b, Value::Int(v.unwrap_or(0)))],
                        };
                        prop_assert_eq!(
                            &g.points,
                            &want,
                            "{} {:?} of {} at {} vs its {}s",
                            coarse,
                            agg,
                            b,
                            now,
                            fine
                        );
                    }
                }
                b += w;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy)]
enum TsSpec {
    /// No timestamp: the engine's clock.
    Now,
    /// This many ms in the past.
    Back(i64),
    /// This many ms in the future.
    Ahead(i64),
    /// Offset from the start of the oldest bucket a tier retains.
    Edge(Tier, i64),
    /// This absolute time (before the minimum event time).
    Abs(i64),
    /// The clock's seconds sent as milliseconds.
    SecondsAsMs,
}

#[derive(Debug, Clone, Copy)]
struct EvSpec {
    series: usize,
    delta: i64,
    ts: TsSpec,
    id: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
enum PSpec {
    None,
    /// The next sequence of producer `p`.
    Next(u64),
    /// Resend an acknowledged (producer, seq), picked by index.
    Retry(usize),
}

#[derive(Debug, Clone)]
struct BatchSpec {
    producer: PSpec,
    events: Vec<EvSpec>,
    /// Per-event validation instead of all or nothing.
    per_event: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Apply(BatchSpec),
    Advance(i64),
    Flush,
    Compact,
    Reopen,
    Crash,
    /// Flush (or compact) with the `n`-th call of a kind failing, then lose
    /// power or carry on.
    Faulty {
        fault: Fault,
        n: u64,
        compact: bool,
        crash: bool,
    },
}

fn ts_strategy() -> impl Strategy<Value = TsSpec> {
    prop_oneof![
        4 => Just(TsSpec::Now),
        4 => (0..MINUTE_RET).prop_map(TsSpec::Back),
        // Older than the minute retention: hour and day only.
        2 => (MINUTE_RET + MINUTE_MS..HOUR_RET - HOUR_MS).prop_map(TsSpec::Back),
        // Older than the hour retention: day only.
        1 => (HOUR_RET + HOUR_MS..DAY_RET - DAY_MS).prop_map(TsSpec::Back),
        // Older than every tier.
        1 => (DAY_RET + DAY_MS..3 * DAY_RET).prop_map(TsSpec::Back),
        1 => (0..=SKEW).prop_map(TsSpec::Ahead),
        1 => (SKEW + 1..2 * HOUR_MS).prop_map(TsSpec::Ahead),
        2 => (
            prop_oneof![Just(Tier::Minute), Just(Tier::Hour), Just(Tier::Day)],
            -1i64..=0
        )
            .prop_map(|(t, off)| TsSpec::Edge(t, off)),
        // Before the minimum event time: zero, negative, the year 1000,
        // far before 1970, seconds sent as milliseconds.
        1 => prop_oneof![
            Just(TsSpec::Abs(0)),
            Just(TsSpec::Abs(-1)),
            Just(TsSpec::Abs(-30_610_224_000_000)),
            Just(TsSpec::Abs(i64::MIN)),
            Just(TsSpec::Abs(DEFAULT_MIN_EVENT_MS - 1)),
            Just(TsSpec::SecondsAsMs),
        ],
    ]
}

fn event_strategy() -> impl Strategy<Value = EvSpec> {
    (
        0..SERIES.len(),
        prop_oneof![
            16 => 1i64..=5,
            4 => -5i64..=-1,
            4 => Just(0i64),
            4 => -1000i64..1000,
            // Near the ends of i64: a second one in a day overflows.
            1 => prop_oneof![
                Just(i64::MAX),
                Just(i64::MAX / 2 + 1),
                Just(i64::MIN),
                Just(i64::MIN / 2),
            ],
        ],
        ts_strategy(),
        prop::option::weighted(0.4, 0u8..6),
    )
        .prop_map(|(series, delta, ts, id)| EvSpec {
            series,
            delta,
            ts,
            id,
        })
}

fn batch_strategy() -> impl Strategy<Value = BatchSpec> {
    (
        prop_oneof![
            3 => Just(PSpec::None),
            3 => (1u64..=3).prop_map(PSpec::Next),
            1 => any::<usize>().prop_map(PSpec::Retry),
        ],
        prop::collection::vec(event_strategy(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(producer, events, per_event)| BatchSpec {
            producer,
            events,
            per_event,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => batch_strategy().prop_map(Op::Apply),
        2 => (1i64..120).prop_map(|s| Op::Advance(s * 1000)),
        2 => (1i64..180).prop_map(|m| Op::Advance(m * MINUTE_MS)),
        1 => (1i64..30).prop_map(|h| Op::Advance(h * HOUR_MS)),
        2 => Just(Op::Flush),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        2 => Just(Op::Crash),
        2 => (
            prop_oneof![
                Just(Fault::Write),
                Just(Fault::TornWrite),
                Just(Fault::Sync),
                Just(Fault::Rename),
                Just(Fault::Create),
            ],
            1u64..16,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(fault, n, compact, crash)| Op::Faulty {
                fault,
                n,
                compact,
                crash,
            }),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

fn run_ops(start: i64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(start);
    h.check_all()?;
    for op in ops {
        match op {
            Op::Apply(b) => h.apply(b)?,
            Op::Advance(ms) => h.clock.advance(*ms),
            Op::Flush => {
                h.engine().flush().map_err(fail)?;
            }
            Op::Compact => {
                h.engine().compact().map_err(fail)?;
            }
            Op::Reopen => h.reopen()?,
            Op::Crash => h.crash()?,
            Op::Faulty {
                fault,
                n,
                compact,
                crash,
            } => {
                fault.arm(&h.fs, *n);
                let res = if *compact {
                    h.engine().compact().map(drop)
                } else {
                    h.engine().flush().map(drop)
                };
                h.fs.clear_faults();
                match res {
                    Ok(()) | Err(Error::Io { .. }) => {}
                    // A failed fsync is never retried: writes stop until a restart.
                    Err(Error::Poisoned { .. }) if *fault == Fault::Sync => {
                        if !*crash {
                            h.reopen()?;
                        }
                    }
                    Err(e) => return Err(fail(e)),
                }
                if *crash {
                    h.crash()?;
                }
            }
        }
        h.check_all()?;
    }
    // And everything survives one last power loss.
    h.crash()?;
    h.check_all()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_model(
        start in (20_000 * DAY_MS)..(20_001 * DAY_MS),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        run_ops(start, &ops)?;
    }
}

// ---------------------------------------------------------------------------
// Faults at every step of flush and compaction

/// A small deterministic generator for fixture batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn fixture_batch(rng: &mut Rng, producer: u64) -> BatchSpec {
    let n = 1 + rng.next(6) as usize;
    let events = (0..n)
        .map(|_| EvSpec {
            series: rng.next(SERIES.len() as u64) as usize,
            delta: rng.next(11) as i64 - 3,
            ts: match rng.next(5) {
                0 => TsSpec::Now,
                1 | 2 => TsSpec::Back(rng.next(MINUTE_RET as u64) as i64),
                3 => TsSpec::Back(MINUTE_RET + MINUTE_MS + rng.next(DAY_MS as u64) as i64),
                _ => TsSpec::Back(HOUR_RET + HOUR_MS + rng.next(5 * DAY_MS as u64) as i64),
            },
            id: (rng.next(3) == 0).then(|| rng.next(40) as u8),
        })
        .collect();
    BatchSpec {
        producer: if rng.next(2) == 0 {
            PSpec::Next(producer)
        } else {
            PSpec::None
        },
        events,
        per_event: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Write,
    /// A failed write that leaves the first half of its bytes behind.
    TornWrite,
    Sync,
    Rename,
    Create,
}

impl Fault {
    fn count(self, fs: &FaultFs) -> u64 {
        match self {
            Fault::Write | Fault::TornWrite => fs.writes(),
            Fault::Sync => fs.syncs(),
            Fault::Rename => fs.renames(),
            Fault::Create => fs.creates(),
        }
    }
    fn arm(self, fs: &FaultFs, n: u64) {
        match self {
            Fault::Write => fs.fail_nth_write(n),
            Fault::TornWrite => {
                fs.set_torn_writes(true);
                fs.fail_nth_write(n);
            }
            Fault::Sync => fs.fail_nth_sync(n),
            Fault::Rename => fs.fail_nth_rename(n),
            Fault::Create => fs.fail_nth_create(n),
        }
    }
}

const START: i64 = 20_000 * DAY_MS + 13 * HOUR_MS + 17 * MINUTE_MS + 4_321;

/// Data in every tier, one flushed checkpoint, and newer data (with series the
/// dictionary file does not hold yet) waiting in the memtable.
fn flush_fixture() -> Harness {
    let mut h = Harness::new(START);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for i in 0..6 {
        h.apply(&fixture_batch(&mut rng, 1 + i % 2)).unwrap();
        h.clock.advance(7 * MINUTE_MS);
    }
    h.engine().flush().unwrap();
    for i in 0..6 {
        h.apply(&fixture_batch(&mut rng, 1 + i % 2)).unwrap();
        h.clock.advance(3 * MINUTE_MS);
    }
    h.check_all().unwrap();
    h
}

/// Several segments per tier, some partly or wholly past retention.
fn compaction_fixture() -> Harness {
    let mut h = Harness::new(START);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..4 {
        for i in 0..3 {
            h.apply(&fixture_batch(&mut rng, 1 + (round + i) % 2))
                .unwrap();
            h.clock.advance(11 * MINUTE_MS);
        }
        h.engine().flush().unwrap();
        h.clock.advance(40 * MINUTE_MS);
    }
    h.clock.advance(HOUR_MS);
    h.check_all().unwrap();
    h
}

/// What happens after the failed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Power loss.
    Crash,
    /// The process goes on and retries, then restarts cleanly.
    Retry,
    /// The process shuts down cleanly at once.
    Restart,
}

/// Runs `op` with the `n`-th call of kind `fault` failing; returns whether the
/// fault fired. Then loses power, or goes on (and retries the operation), or
/// restarts cleanly; every count must be exact throughout, and a later run of
/// the operation must succeed.
fn fault_round(
    fixture: fn() -> Harness,
    op: fn(&Engine) -> Result<(), Error>,
    fault: Fault,
    n: u64,
    after: After,
) -> bool {
    let mut h = fixture();
    let before = fault.count(&h.fs);
    fault.arm(&h.fs, n);
    let res = op(h.engine());
    let fired = fault.count(&h.fs) - before >= n;
    h.fs.clear_faults();
    let ctx = format!("{fault:?} #{n}, then {after:?}: first run gave {res:?}");
    if !fired {
        assert!(res.is_ok(), "{ctx}");
    }
    if after == After::Restart {
        h.reopen()
            .unwrap_or_else(|e| panic!("{ctx}: clean reopen: {e}"));
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after reopen: {e}"));
        op(h.engine()).unwrap_or_else(|e| panic!("{ctx}: run after reopen: {e}"));
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after rerun: {e}"));
    } else if after == After::Crash {
        h.crash().unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after crash: {e}"));
        op(h.engine()).unwrap_or_else(|e| panic!("{ctx}: run after crash: {e}"));
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after rerun: {e}"));
    } else {
        // Reads right after the failure are exact.
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after failure: {e}"));
        match op(h.engine()) {
            Ok(()) | Err(Error::Poisoned { .. }) => {}
            Err(e) => panic!("{ctx}: retry in process failed: {e}"),
        }
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after retry: {e}"));
        h.reopen()
            .unwrap_or_else(|e| panic!("{ctx}: clean reopen: {e}"));
        h.check_all()
            .unwrap_or_else(|e| panic!("{ctx}: after reopen: {e}"));
        op(h.engine()).unwrap_or_else(|e| panic!("{ctx}: run after reopen: {e}"));
    }
    // Whatever happened, one more power loss keeps everything.
    let mut rng = Rng(n + 7);
    h.apply(&fixture_batch(&mut rng, 3)).unwrap();
    h.crash()
        .unwrap_or_else(|e| panic!("{ctx}: final reopen: {e}"));
    h.check_all()
        .unwrap_or_else(|e| panic!("{ctx}: final: {e}"));
    fired
}

/// Fails every step of `op` in turn with every kind of fault, followed by each
/// kind of recovery; returns how many faults fired (all survived).
fn every_step(fixture: fn() -> Harness, op: fn(&Engine) -> Result<(), Error>) -> u64 {
    let mut fired = 0;
    for fault in [
        Fault::Write,
        Fault::TornWrite,
        Fault::Sync,
        Fault::Rename,
        Fault::Create,
    ] {
        for after in [After::Crash, After::Retry, After::Restart] {
            let mut n = 1;
            while fault_round(fixture, op, fault, n, after) {
                n += 1;
                assert!(n < 500, "{fault:?}: the operation never completes");
            }
            assert!(n > 1 || fault == Fault::Rename, "{fault:?} never fired");
            fired += n - 1;
        }
    }
    fired
}

#[test]
fn flush_survives_a_fault_at_every_step() {
    let fired = every_step(flush_fixture, |e| e.flush().map(drop));
    println!("flush: {fired} faults injected, all survived");
}

#[test]
fn compaction_survives_a_fault_at_every_step() {
    // The fixture really gives compaction work to do.
    let h = compaction_fixture();
    let out = h.engine().compact().unwrap();
    assert!(out.tasks >= 2 && out.segments_in >= 3, "{out:?}");
    let fired = every_step(compaction_fixture, |e| e.compact().map(drop));
    println!("compaction: {fired} faults injected, all survived");
}

#[test]
fn failed_wal_fsync_poisons_writes_but_not_reads() {
    for crash in [true, false] {
        let mut h = Harness::new(START);
        let mut rng = Rng(99);
        for i in 0..4 {
            h.apply(&fixture_batch(&mut rng, 1 + i % 2)).unwrap();
        }
        let acked = h
            .model
            .total(&metric("hits", vec![], &[]), i64::MIN, i64::MAX);
        let id = h.engine().series_id("hits").unwrap();
        let one = |delta| Batch {
            producer: None,
            events: vec![Event {
                series: id,
                delta,
                ts: None,
                id: None,
            }],
        };
        h.fs.fail_nth_sync(1);
        let e = h.engine().apply(&one(1000)).unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
        let e = h.engine().apply(&one(1)).unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
        assert!(h.engine().stats().poisoned);
        assert!(matches!(h.engine().flush(), Err(Error::Poisoned { .. })));
        // Reads work, and see at least everything acknowledged.
        let now = h.now();
        let t = h
            .engine()
            .total(&metric("hits", vec![], &[]), now - DAY_MS, now + HOUR_MS)
            .unwrap();
        let want = h.model.total(
            &metric("hits", vec![], &[]),
            t.provenance.from,
            t.provenance.to,
        );
        assert!(
            (i128::from(t.sum), t.count) == want
                || (i128::from(t.sum), t.count) == (want.0 + 1000, want.1 + 1),
            "{t:?} vs {want:?}"
        );
        assert!(acked.1 > 0);
        if crash {
            // The unsynced batch is gone; the acknowledged ones are all there.
            h.crash().unwrap();
            h.check_all().unwrap();
        } else {
            // A clean restart may or may not find the failed batch in the WAL
            // (its outcome was unknown); either way the engine takes writes again.
            h.engine.take();
            let opts = options(Arc::new(h.fs.clone()), &h.clock);
            let e = Engine::open(DIR, opts).unwrap();
            e.apply(&one(1)).unwrap();
        }
    }
}

#[test]
fn failed_wal_write_poisons_and_a_torn_record_is_cut_at_restart() {
    for (torn, crash) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut h = Harness::new(START);
        let mut rng = Rng(5);
        for i in 0..3 {
            h.apply(&fixture_batch(&mut rng, 1 + i % 2)).unwrap();
        }
        let id = h.engine().series_id("hits").unwrap();
        let batch = Batch {
            producer: Some(ProducerSeq { id: 9, seq: 1 }),
            events: vec![Event {
                series: id,
                delta: 1000,
                ts: None,
                id: None,
            }],
        };
        h.fs.set_torn_writes(torn);
        h.fs.fail_nth_write(1);
        let e = h.engine().apply(&batch).unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
        assert!(matches!(
            h.engine().apply(&batch),
            Err(Error::Poisoned { .. })
        ));
        h.fs.clear_faults();
        // Nothing of the failed batch reached the file whole: whatever the
        // restart, it is not counted, and its producer sequence is free.
        if crash {
            h.crash().unwrap();
        } else {
            h.reopen().unwrap();
            assert_eq!(h.engine().recovery().torn_tails.len(), usize::from(torn));
        }
        h.check_all().unwrap();
        let id = h.engine().series_id("hits").unwrap();
        let batch = Batch {
            events: vec![Event {
                series: id,
                ..batch.events[0]
            }],
            ..batch
        };
        let out = h.engine().apply(&batch).unwrap();
        assert!(!out.duplicate_batch && out.applied == 1, "{out:?}");
    }
}

// ---------------------------------------------------------------------------
// Group commit on a real directory

/// [`OsFs`] with slow fsyncs, so concurrent writers reliably pile up behind one.
#[derive(Debug)]
struct SlowSync(OsFs);

#[derive(Debug)]
struct SlowFile(Box<dyn WritableFile>);

impl WritableFile for SlowFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.0.sync()
    }
}

impl FileSystem for SlowSync {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(SlowFile(self.0.create(path)?)))
    }
    fn append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(SlowFile(self.0.append(path)?)))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.0.read(path)
    }
    fn map(&self, path: &Path) -> std::io::Result<Mapped> {
        self.0.map(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove_file(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.0.truncate(path, len)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.0.sync_dir(path)
    }
    fn list(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.0.list(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }
    fn len(&self, path: &Path) -> std::io::Result<u64> {
        self.0.len(path)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn DirLock>> {
        self.0.lock(path)
    }
}

#[test]
fn concurrent_writers_read_their_writes_and_share_fsyncs() {
    const THREADS: usize = 8;
    const BATCHES: usize = 40;
    const EVENTS: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("db");
    let clock = ManualClock::new(START);
    for (fs, strict) in [
        (Arc::new(OsFs) as Arc<dyn FileSystem>, false),
        (Arc::new(SlowSync(OsFs)) as Arc<dyn FileSystem>, true),
    ] {
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Arc::new(Engine::open(&dir, options(Arc::clone(&fs), &clock)).unwrap());
        let now = START;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = Arc::clone(&engine);
                std::thread::spawn(move || {
                    let key = format!("conc{{thread=t{t}}}");
                    let sel = Selector::Exact(key.clone());
                    let mut sum = 0i64;
                    for b in 0..BATCHES {
                        let id = engine.series_id(&key).unwrap();
                        let events: Vec<Event> = (0..EVENTS)
                            .map(|i| Event {
                                series: id,
                                delta: (b * EVENTS + i) as i64 % 7 + 1,
                                ts: None,
                                id: None,
                            })
                            .collect();
                        sum += events.iter().map(|e| e.delta).sum::<i64>();
                        let out = engine
                            .apply(&Batch {
                                producer: Some(ProducerSeq {
                                    id: t as u64,
                                    seq: b as u64 + 1,
                                }),
                                events,
                            })
                            .unwrap();
                        assert_eq!(out.applied as usize, EVENTS);
                        // Read-your-writes: this thread's series holds exactly
                        // what it has been acknowledged.
                        let r = engine.total(&sel, now - HOUR_MS, now + HOUR_MS).unwrap();
                        assert_eq!((r.sum, r.count), (sum, ((b + 1) * EVENTS) as u64));
                    }
                    sum
                })
            })
            .collect();
        let sums: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let all = metric("conc", vec![], &[]);
        let total = engine.total(&all, now - HOUR_MS, now + HOUR_MS).unwrap();
        let batches = (THREADS * BATCHES) as u64;
        assert_eq!(total.sum, sums.iter().sum::<i64>());
        assert_eq!(total.count, batches * EVENTS as u64);
        let stats = engine.stats();
        assert_eq!(stats.batches_applied, batches);
        assert!(stats.wal_syncs <= batches, "{stats:?}");
        if strict {
            assert!(stats.wal_syncs < batches, "no fsync was shared: {stats:?}");
        }
        // And it is all on disk.
        Arc::try_unwrap(engine).unwrap().close().unwrap();
        let engine = Engine::open(&dir, options(Arc::clone(&fs), &clock)).unwrap();
        let again = engine.total(&all, now - HOUR_MS, now + HOUR_MS).unwrap();
        assert_eq!((again.sum, again.count), (total.sum, total.count));
    }
}
