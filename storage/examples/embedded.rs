//! Writes a few increments through the storage engine into `./tally-data` (or the
//! directory given as the first argument) and reads them back.
//!
//! Run: `cargo run --release -p tallydb-storage --example embedded`

use tallydb_storage::{Agg, Batch, Engine, Event, Options, RangeQuery, Selector, Step, TopQuery};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tally-data".to_string());
    let engine = Engine::open(&dir, Options::default())?;
    let report = engine.recovery();
    println!(
        "opened {dir}: replayed {} WAL records ({} events) in {:?}",
        report.records_replayed, report.events_replayed, report.replay_time
    );

    let ads = ["ad001", "ad002", "ad003"];
    let mut batch = Batch::default();
    for (i, ad) in ads.iter().enumerate() {
        let id = engine.series_id(&format!("ad_clicks{{ad={ad},country=US}}"))?;
        for _ in 0..=i {
            batch.events.push(Event {
                series: id,
                delta: 1,
                ts: None,
                id: None,
            });
        }
    }
    let outcome = engine.apply(&batch)?;
    println!(
        "applied {} increments durably (WAL record {})",
        outcome.applied, outcome.lsn
    );

    let now = engine.options().clock.now_ms();
    let all = Selector::Metric {
        name: "ad_clicks".into(),
        matchers: vec![],
        group_by: vec![],
    };
    let total = engine.total(&all, now - 3_600_000, now + 60_000)?;
    println!(
        "ad_clicks over the last hour: {} (from {} events)",
        total.sum, total.count
    );

    let top = engine.top(&TopQuery {
        selector: all.clone(),
        from: now - 3_600_000,
        to: now + 60_000,
        n: 3,
        by_label: Some("ad".into()),
    })?;
    for e in &top.entries {
        println!("  top ad {:>6}: {}", e.name, e.sum);
    }

    let range = engine.range(&RangeQuery {
        selector: all,
        from: now - 5 * 60_000,
        to: now + 60_000,
        step: Step::Fixed(60_000),
        agg: Agg::Sum,
    })?;
    for g in &range.groups {
        for (t, v) in &g.points {
            println!("  minute {t}: {v:?}");
        }
    }
    engine.close()?;
    Ok(())
}
