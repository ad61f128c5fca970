//! The engine opened on a directory whose only WAL file is the fuzzed input: its
//! recovery report and every query answer against the model, across flush and reopen.

use super::*;

pub(super) fn engine_options(fs: &FaultFs) -> Options {
    Options {
        background: false,
        fs: Arc::new(fs.clone()),
        clock: Arc::new(ManualClock::new(NOW)),
        retention: Retention {
            minute_ms: None,
            hour_ms: None,
            day_ms: None,
        },
        ..Options::default()
    }
}

/// A data directory holding `FORMAT`, an empty `MANIFEST` and `data` as its WAL.
pub(super) fn directory_with_wal(data: &[u8]) -> FaultFs {
    let fs = FaultFs::new();
    let dir = Path::new(DIR);
    let manifest = Manifest {
        next_segment_id: 1,
        ..Manifest::default()
    };
    for (path, bytes) in [
        (dir.join(FORMAT_FILE), format_file_contents().into_bytes()),
        (dir.join(MANIFEST_FILE), manifest.encode()),
        (wal_path(), data.to_vec()),
    ] {
        let planted = fs.set_file(&path, &bytes);
        assert!(planted.is_ok(), "planting {}: {planted:?}", path.display());
    }
    fs
}

pub(super) fn check_engine(
    data: &[u8],
    replayed: &crate::Result<(Replay, WalFileInfo)>,
    model: Option<&Model>,
) {
    let fs = directory_with_wal(data);
    let opened = Engine::open(DIR, engine_options(&fs));
    let (engine, (replay, info), model) = match (opened, replayed, model) {
        (Err(e), Err(r), _) => {
            assert_eq!(
                e.to_string(),
                r.to_string(),
                "the engine reports the replay error"
            );
            return;
        }
        (Ok(engine), Ok(r), Some(model)) => (engine, r, model),
        (opened, replayed, _) => panic!(
            "Engine::open gave {:?} but the replay {:?}",
            opened.map(|_| ()),
            replayed.as_ref().map(|_| ())
        ),
    };
    let report = engine.recovery();
    assert_eq!(report.records_replayed, replay.records);
    assert_eq!(report.events_replayed, replay.events);
    let torn: Vec<(PathBuf, u64, u64)> = info
        .torn
        .iter()
        .map(|(at, dropped)| (wal_path(), *at, *dropped))
        .collect();
    assert_eq!(report.torn_tails, torn);
    let answers = check_answers(&engine, model);

    // Flushed to segments, the data answers the same.
    let flushed = engine.flush();
    assert!(flushed.is_ok(), "flush: {flushed:?}");
    assert_eq!(
        check_answers(&engine, model),
        answers,
        "answers changed by a flush"
    );
    let closed = engine.close();
    assert!(closed.is_ok(), "close: {closed:?}");
    drop(engine);

    // The torn tail was cut for good: a second recovery finds a clean log.
    let valid_len = data.len() as u64 - info.torn.map_or(0, |(_, dropped)| dropped);
    if valid_len == 0 {
        assert_eq!(
            fs.file(&wal_path()),
            None,
            "a WAL file with nothing valid is removed"
        );
    }
    let reopened = Engine::open(DIR, engine_options(&fs));
    let engine = match reopened {
        Ok(engine) => engine,
        Err(e) => panic!("reopening after recovery and a flush failed: {e}"),
    };
    assert!(engine.recovery().torn_tails.is_empty());
    assert_eq!(
        check_answers(&engine, model),
        answers,
        "answers changed by a reopen"
    );
}

/// Queries the engine and checks every answer against the model; returns the answers
/// so that later openings can be compared with them.
pub(super) fn check_answers(engine: &Engine, model: &Model) -> Vec<String> {
    let mut answers = Vec::new();
    for (id, key) in model.keys.iter().enumerate().take(CHECKED_SERIES) {
        let id = id as u32;
        let got = engine.total(&Selector::Exact(key.clone()), LO, HI);
        let Ok(t) = got else {
            panic!("total of {key}: {got:?}");
        };
        assert_eq!(
            (t.sum, t.count),
            model.total(|s| s == id, LO, HI),
            "total of {key}"
        );
        assert_eq!(t.provenance.tiers, Tier::Day.bit(), "{t:?}");
        answers.push(format!("{key}: {t:?}"));
    }
    let names: BTreeSet<String> = model
        .keys
        .iter()
        .filter_map(|k| SeriesKey::parse(k).ok())
        .map(|k| k.name().to_string())
        .collect();
    for name in names.iter().take(CHECKED_NAMES) {
        let ids: Vec<u32> = (0..model.keys.len() as u32)
            .filter(|id| {
                SeriesKey::parse(&model.keys[*id as usize]).is_ok_and(|k| k.name() == name)
            })
            .collect();
        let selector = Selector::Metric {
            name: name.clone(),
            matchers: Vec::new(),
            group_by: Vec::new(),
        };
        let got = engine.total(&selector, LO, HI);
        let Ok(total) = got else {
            panic!("total of {name}: {got:?}");
        };
        assert_eq!(
            (total.sum, total.count),
            model.total(|s| ids.contains(&s), LO, HI),
            "total of {name}"
        );
        let got = engine.series(&selector, usize::MAX);
        let Ok((keys, more)) = got else {
            panic!("series of {name}: {got:?}");
        };
        let mut want: Vec<String> = ids
            .iter()
            .map(|id| model.keys[*id as usize].clone())
            .collect();
        want.sort();
        assert_eq!((keys, more), (want, false), "series of {name}");
        let top = engine.top(&TopQuery {
            selector,
            from: LO,
            to: HI,
            n: ids.len(),
            by_label: None,
        });
        let Ok(top) = top else {
            panic!("top of {name}: {top:?}");
        };
        let mut count = 0u64;
        for e in &top.entries {
            let id = model.keys.iter().position(|k| *k == e.name);
            let Some(id) = id.map(|i| i as u32).filter(|i| ids.contains(i)) else {
                panic!("top of {name} ranks {}, not one of its series", e.name);
            };
            assert_eq!(
                (e.sum, e.count),
                model.total(|s| s == id, LO, HI),
                "top entry {}",
                e.name
            );
            count += e.count;
        }
        for w in top.entries.windows(2) {
            assert!(
                (w[1].sum, &w[0].name) <= (w[0].sum, &w[1].name),
                "top order {top:?}"
            );
        }
        assert_eq!(count, total.count, "top of {name} misses events");
        answers.push(format!("{name}: {total:?} {top:?}"));
    }
    // Minute cells: one hour of the first minute-tier event of a few series.
    let mut checked = 0;
    for (id, key) in model.keys.iter().enumerate() {
        if checked == CHECKED_RANGES {
            break;
        }
        let minute = Tier::Minute.index();
        let first = model
            .cells
            .range((minute, id as u32, i64::MIN)..=(minute, id as u32, i64::MAX))
            .map(|((_, _, b), _)| {
                Tier::Hour.start_of(Tier::Hour.bucket_of(Tier::Minute.start_of(*b)))
            })
            .find(|h| (-TIME_LIMIT..=TIME_LIMIT - HOUR_MS).contains(h));
        let Some(from) = first else { continue };
        checked += 1;
        for agg in [Agg::Sum, Agg::Min] {
            let q = RangeQuery {
                selector: Selector::Exact(key.clone()),
                from,
                to: from + HOUR_MS,
                step: Step::Fixed(MINUTE_MS),
                agg,
            };
            let got = engine.range(&q);
            let Ok(r) = got else {
                panic!("{q:?}: {got:?}");
            };
            let want: Vec<(i64, Value)> = (0..60)
                .map(|k| from + k * MINUTE_MS)
                .filter_map(|t| {
                    let cell = model
                        .cells
                        .get(&(minute, id as u32, Tier::Minute.bucket_of(t)));
                    match (agg, cell) {
                        (Agg::Sum, c) => Some((t, Value::Int(c.map_or(0, |c| c.sum)))),
                        (_, c) => c.map(|c| (t, Value::Int(c.min))),
                    }
                })
                .collect();
            assert_eq!(r.groups.len(), 1, "{q:?}");
            assert_eq!(r.groups[0].points, want, "{q:?}");
            answers.push(format!("{q:?}: {r:?}"));
        }
    }
    answers
}
