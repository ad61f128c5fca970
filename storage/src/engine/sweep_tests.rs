//! Sweeping a source and looking each selected series up in it give the same
//! totals and top-k, on random data spread over the active memtable, frozen
//! memtables and segments of several blocks (some compacted), across retention
//! boundaries, for every kind of selector and grouping.

use std::sync::Arc;

use proptest::prelude::*;

use super::select::resolve_ids;
use super::*;
use crate::query::{Matcher, TopEntry};
use crate::testing::FaultFs;
use crate::time::Retention;
use crate::time::{Clock, ManualClock, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::FsyncPolicy;

const SERIES: u32 = 64;
const START: i64 = 1_000 * DAY_MS + 7 * HOUR_MS + 13 * MINUTE_MS;

fn key(i: u32) -> String {
    let name = ["app.hits", "app.errors", "web"][(i % 3) as usize];
    format!("{name}{{host=h{},zone=z{}}}", i % 5, i / 16)
}

/// One step of the random history.
#[derive(Debug, Clone)]
enum Op {
    /// Series `lo..hi` get one event each in each of the `minutes` minutes
    /// ending `back` minutes before now: deltas of `delta` (1 keeps memtable
    /// heads compact and segment cells unit-shaped), or, with `mixed`, varying.
    Fill {
        lo: u32,
        hi: u32,
        minutes: i64,
        back: i64,
        delta: i64,
        mixed: bool,
    },
    /// One event at any time the retention still accepts.
    Event {
        series: u32,
        back_ms: i64,
        delta: i64,
    },
    /// The clock moves forward.
    Advance(i64),
    /// The active memtable becomes a frozen one (not flushed).
    Freeze,
    /// Every memtable is written out as segments.
    Flush,
    /// Segments are merged.
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let delta = prop_oneof![
        4 => Just(1i64),
        2 => -5i64..50,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ];
    prop_oneof![
        4 => (0..SERIES, 1..=SERIES, 1i64..200, 0i64..30, delta.clone(), any::<bool>())
            .prop_map(|(a, b, minutes, back, delta, mixed)| Op::Fill {
                lo: a.min(b),
                hi: a.max(b),
                minutes,
                back,
                delta,
                mixed,
            }),
        3 => (0..SERIES, 0i64..10 * DAY_MS, delta).prop_map(|(series, back_ms, delta)| Op::Event {
            series,
            back_ms,
            delta
        }),
        2 => (1i64..3 * HOUR_MS).prop_map(Op::Advance),
        1 => Just(Op::Freeze),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
    ]
}

/// A query window: `from` this far before now, this long.
fn window() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        Just((HOUR_MS, HOUR_MS)),
        (0i64..3 * HOUR_MS, 1i64..4 * HOUR_MS),
        (0i64..14 * DAY_MS, 1i64..14 * DAY_MS),
    ]
}

fn selectors() -> Vec<(Selector, Option<String>)> {
    let metric = |name: &str, matchers: Vec<Matcher>, group_by: Vec<&str>| Selector::Metric {
        name: name.into(),
        matchers,
        group_by: group_by.into_iter().map(String::from).collect(),
    };
    vec![
        (metric("app.hits", vec![], vec![]), None),
        (metric("web", vec![], vec![]), Some("host".into())),
        (
            metric(
                "app.hits",
                vec![Matcher::Eq("zone".into(), "z1".into())],
                vec![],
            ),
            Some("zone".into()),
        ),
        (
            metric(
                "web",
                vec![Matcher::Ne("host".into(), "h2".into())],
                vec!["zone"],
            ),
            None,
        ),
        (Selector::Prefix("app".into()), None),
        (Selector::Prefix("app".into()), Some("host".into())),
        (Selector::Exact(key(7)), None),
        (Selector::Exact("nothing{a=b}".into()), None),
    ]
}

fn apply(engine: &Engine, clock: &ManualClock, ids: &[u32], op: &Op) -> Result<()> {
    let now = clock.now_ms();
    let mut batch = Batch::default();
    match *op {
        Op::Fill {
            lo,
            hi,
            minutes,
            back,
            delta,
            mixed,
        } => {
            let end = (now / MINUTE_MS - back) * MINUTE_MS;
            for m in 0..minutes {
                for s in lo..hi {
                    let d = if mixed {
                        delta.wrapping_add(i64::from(s) * m)
                    } else {
                        delta
                    };
                    batch.events.push(Event {
                        series: ids[s as usize],
                        delta: d,
                        ts: Some(end - (minutes - m) * MINUTE_MS + i64::from(s) % MINUTE_MS),
                        id: None,
                    });
                }
            }
        }
        Op::Event {
            series,
            back_ms,
            delta,
        } => batch.events.push(Event {
            series: ids[series as usize],
            delta,
            ts: Some(now - back_ms),
            id: None,
        }),
        Op::Advance(ms) => clock.set(now + ms),
        Op::Freeze => {
            engine.shared.freeze()?;
        }
        Op::Flush => {
            engine.flush()?;
        }
        Op::Compact => {
            engine.compact()?;
        }
    }
    if !batch.events.is_empty() {
        match engine.apply(&batch) {
            // Extreme deltas: a batch that could overflow a cell is refused
            // whole and changes nothing, which the comparison covers too.
            Err(crate::Error::CellOverflow { .. }) => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sweeps_equal_lookups(
        ops in prop::collection::vec(op(), 1..32),
        windows in prop::collection::vec(window(), 1..5),
        n in prop_oneof![Just(1usize), Just(3), Just(100)],
    ) {
        let clock = ManualClock::new(START);
        let opts = Options {
            background: false,
            fsync: FsyncPolicy::Never,
            clock: Arc::new(clock.clone()),
            fs: Arc::new(FaultFs::new()),
            retention: Retention {
                minute_ms: Some(2 * HOUR_MS),
                hour_ms: Some(2 * DAY_MS),
                day_ms: Some(10 * DAY_MS),
            },
            max_future_skew_ms: 10 * MINUTE_MS,
            // The clock starts in 1972.
            min_event_ms: i64::MIN,
            ..Options::default()
        };
        let engine = Engine::open("db", opts).expect("open");
        let ids: Vec<u32> = (0..SERIES)
            .map(|i| engine.series_id(&key(i)))
            .collect::<Result<_>>()
            .expect("series");
        for op in &ops {
            apply(&engine, &clock, &ids, op).expect("apply");
        }
        let now = clock.now_ms();
        let s = &engine.shared;
        for (back, len) in windows {
            let (from, to) = (now - back, now - back + len);
            for (selector, by_label) in selectors() {
                // Totals past i64 are the same error either way.
                let total = |a| s.total(&selector, from, to, a).map_err(|e| e.to_string());
                let lookup = total(Access::Lookup);
                prop_assert_eq!(total(Access::Sweep), lookup.clone());
                prop_assert_eq!(total(Access::Auto), lookup);
                let q = TopQuery { selector: selector.clone(), from, to, n, by_label: by_label.clone() };
                let top = |a| s.top(&q, a).map_err(|e| e.to_string());
                let lookup = top(Access::Lookup);
                prop_assert_eq!(&top(Access::Sweep), &lookup);
                let Ok(lookup) = lookup else {
                    // An entry past i64: the same error both ways.
                    continue;
                };
                if by_label.is_none() {
                    // The ranking: largest sums first, ties by name, from
                    // one-series totals.
                    let mut want: Vec<TopEntry> = resolve_ids(&read(&s.dict), &selector)
                        .into_iter()
                        .filter_map(|id| {
                            let name = engine.series_key(id)?.as_str().to_string();
                            let t = s.total(&Selector::Exact(name.clone()), from, to, Access::Lookup).ok()?;
                            (t.count > 0).then_some(TopEntry { name, sum: t.sum, count: t.count })
                        })
                        .collect();
                    want.sort_by(|a, b| b.sum.cmp(&a.sum).then_with(|| a.name.cmp(&b.name)));
                    want.truncate(n);
                    prop_assert_eq!(&lookup.entries, &want);
                }
            }
        }
        engine.close().expect("close");
    }
}
