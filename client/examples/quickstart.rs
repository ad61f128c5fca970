//! Quickstart: increment a few counters, then read them back.
//!
//! Start a server first (it listens on 127.0.0.1:7411 with data in ./tally-data):
//!
//! ```text
//! cargo run --release -p tallydb-server --bin tallyd
//! ```
//!
//! then, in another terminal:
//!
//! ```text
//! cargo run -p tallydb-client --example quickstart
//! TALLY_SERVER=10.0.0.5:7411 cargo run -p tallydb-client --example quickstart
//! ```

use tallydb_client::{
    now_ms, Client, Function, MetricSelector, RangeQuery, Selector, Step, TopQuery, DEFAULT_ADDR,
};

#[tokio::main]
async fn main() -> Result<(), tallydb_client::Error> {
    let addr = std::env::var("TALLY_SERVER").unwrap_or_else(|_| DEFAULT_ADDR.to_string());
    let client = Client::connect(addr.as_str()).await?;
    if let Some(info) = client.server_info() {
        println!(
            "connected to {addr}: {} ({:?})",
            info.server_version, info.role
        );
    }

    // One increment at a time...
    client.incr("page_hits{page=/}").await?;
    client.incr_by("page_hits{page=/pricing}", 3).await?;
    // ...or many in one exactly-once batch.
    let result = client
        .batch()
        .add("ad_clicks{ad=ad001,country=US}", 5)
        .add("ad_clicks{ad=ad002,country=US}", 2)
        .add("ad_clicks{ad=ad003,country=FR}", 9)
        .send()
        .await?;
    println!("batch: {} events applied", result.applied);

    let now = now_ms();
    let hour_ago = now - 3_600_000;

    let total = client
        .total(
            &Selector::Exact("page_hits{page=/}"),
            hour_ago,
            now + 60_000,
        )
        .await?;
    println!(
        "page_hits{{page=/}}: sum {} over {} events (tiers {:#x}, closed until {})",
        total.sum, total.count, total.tiers.0, total.closed_until_ms
    );

    let range = client
        .range(&RangeQuery {
            selector: Selector::Prefix("page_hits"),
            from_ms: hour_ago,
            to_ms: now + 60_000,
            step: Step::Millis(60_000),
            function: Function::Sum,
        })
        .await?;
    println!("page_hits per minute (step {} ms):", range.step_ms);
    for group in &range.groups {
        for p in group.points.iter().filter(|p| p.value.as_f64() != 0.0) {
            println!("  {} {}", p.ts_ms, p.value);
        }
    }

    let top = client
        .top(&TopQuery {
            selector: Selector::Metric(MetricSelector {
                name: "ad_clicks",
                matchers: vec![],
                group_by: vec![],
            }),
            from_ms: hour_ago,
            to_ms: now + 60_000,
            n: 3,
            group_by: None,
        })
        .await?;
    println!("top ads:");
    for e in &top.entries {
        println!("  {:40} {:>6} ({} events)", e.name, e.sum, e.count);
    }
    Ok(())
}
