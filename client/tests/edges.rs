//! End-to-end tests of the edges of a billing-grade counter, each against a real
//! `tallyd`: no silent arithmetic (two increments of `i64::MAX`), a minimum event time
//! (zero, negative, year 1000, seconds sent as milliseconds), per-event validation
//! (one bad event no longer sinks its batch, a `Recorder` batch with one invalid key),
//! a refused batch creates no series, and the documented answer to a producer
//! sequence that goes backwards.
//!
//! The binary is found as in `client.rs` (`TALLYD_BIN` or next to the test binary);
//! each test skips visibly when it is not built.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use tallydb_client::{now_ms, Client, ErrorCode, Selector};
use tallydb_e2e::{tallyd_bin_or_fail, Tallyd};
use tallydb_protocol::{Event, Incr, Producer, Request, Response, SeriesQuery, SeriesRef};
use tempfile::TempDir;

const DAY: i64 = 86_400_000;

struct Env {
    dir: TempDir,
    bin: PathBuf,
}

impl Env {
    fn new(test: &str) -> Env {
        let bin = tallyd_bin_or_fail(test);
        Env {
            dir: tempfile::tempdir().unwrap(),
            bin,
        }
    }

    fn start(&self) -> Tallyd {
        let data = self.dir.path().join("data");
        Tallyd::start(&self.bin, self.dir.path(), &data, &[])
    }
}

async fn total(client: &Client, key: &str) -> (i64, u64) {
    let now = now_ms();
    let t = client
        .total(&Selector::Exact(key), now - DAY, now + DAY)
        .await
        .unwrap();
    (t.sum, t.count)
}

async fn series_count(client: &Client, prefix: &str) -> usize {
    client
        .series(&Selector::Prefix(prefix), 1000)
        .await
        .unwrap()
        .keys
        .len()
}

/// Old behaviour: the second increment was acknowledged and the total read back as
/// `-2` after wrapping. Now the batch that could overflow is refused whole with
/// `OVERFLOW`, naming the series and the tier, and the total stays `i64::MAX`.
#[tokio::test]
async fn two_increments_of_i64_max_do_not_wrap() {
    let env = Env::new("two_increments_of_i64_max_do_not_wrap");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    client.incr_by("big.counter", i64::MAX).await.unwrap();
    let err = client.incr_by("big.counter", i64::MAX).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overflow), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("big.counter") && msg.contains("day"), "{msg}");
    // A batch that could overflow is refused whole, even with valid events in it.
    let err = client
        .batch()
        .add("big.other", 1)
        .add("big.counter", 1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overflow), "{err}");
    assert_eq!(total(&client, "big.counter").await, (i64::MAX, 1));
    assert_eq!(total(&client, "big.other").await, (0, 0));
    // Negative deltas down to the other end stay exact too.
    client.incr_by("big.debit", i64::MIN).await.unwrap();
    let err = client.incr_by("big.debit", -1).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overflow), "{err}");
    assert_eq!(total(&client, "big.debit").await, (i64::MIN, 1));
}

/// Old behaviour: all these were acknowledged into the day tier (and events far before
/// 1970 were acknowledged but could not all be read back). Now each is refused, alone,
/// naming the minimum event time, and the valid event beside them is applied.
#[tokio::test]
async fn timestamps_before_the_minimum_are_refused_one_by_one() {
    let env = Env::new("timestamps_before_the_minimum_are_refused_one_by_one");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let now = now_ms();
    let year_1000 = -30_610_224_000_000; // 1000-01-01T00:00Z
    let seconds_as_ms = now / 1000;
    let bad = [
        0,
        -1,
        year_1000,
        seconds_as_ms,
        i64::MIN,
        -1_100_000_000_000_000,
    ];
    let mut batch = client.batch();
    for ts in bad {
        batch.add_at("early.hits", 1, ts);
    }
    batch.add_at("early.hits", 1, now);
    let r = batch.send().await.unwrap();
    assert_eq!(
        (r.applied, r.duplicates, r.refused_count),
        (1, 0, 6),
        "{r:?}"
    );
    let indices: Vec<u32> = r.refused.iter().map(|f| f.index).collect();
    assert_eq!(indices, vec![0, 1, 2, 3, 4, 5]);
    for f in &r.refused {
        assert_eq!(f.code, ErrorCode::TooOld.code(), "{f:?}");
        assert!(f.message.contains("minimum event time"), "{}", f.message);
        assert!(f.message.contains("2000-01-01"), "{}", f.message);
    }
    // Nothing of them was counted anywhere, whatever range is asked.
    let t = client
        .total(&Selector::Exact("early.hits"), i64::MIN / 2, now + DAY)
        .await
        .unwrap();
    assert_eq!((t.sum, t.count), (1, 1));
    // A lone event gets the refusal as its error.
    let err = client.incr_at("early.hits", 1, 0).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooOld), "{err}");
}

/// Old behaviour: one event 30 days ahead refused its whole batch (`TOO_FAR_IN_FUTURE`)
/// and none of the other events was counted. Now only that event is refused.
#[tokio::test]
async fn one_future_event_does_not_sink_its_batch() {
    let env = Env::new("one_future_event_does_not_sink_its_batch");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let now = now_ms();
    let r = client
        .batch()
        .add("future.a", 2)
        .add_at("future.a", 5, now + 30 * DAY)
        .add("future.b", 3)
        .send()
        .await
        .unwrap();
    assert_eq!((r.applied, r.refused_count), (2, 1), "{r:?}");
    assert_eq!(r.refused[0].index, 1);
    assert_eq!(r.refused[0].code, ErrorCode::TooFarInFuture.code());
    assert_eq!(total(&client, "future.a").await, (2, 1));
    assert_eq!(total(&client, "future.b").await, (3, 1));
    // The refused event defined the new key's alias on the connection; the valid
    // event after it that names the alias is applied, and so are later batches.
    let r = client
        .batch()
        .add_at("future.c", 1, now + 30 * DAY)
        .add("future.c", 4)
        .send()
        .await
        .unwrap();
    assert_eq!((r.applied, r.refused_count), (1, 1), "{r:?}");
    // A batch of one refused event fails with its refusal, like `incr`.
    let err = client
        .batch()
        .add_at("future.d", 1, now + 30 * DAY)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooFarInFuture), "{err}");
    client.incr("future.c").await.unwrap();
    client.incr("future.d").await.unwrap();
    assert_eq!(total(&client, "future.c").await, (5, 2));
    assert_eq!(total(&client, "future.d").await, (1, 1));
    // A strict client keeps all or nothing.
    let strict = Client::builder(server.addr.to_string())
        .strict(true)
        .connect()
        .await
        .unwrap();
    let err = strict
        .batch()
        .add("future.a", 2)
        .add_at("future.a", 5, now + 30 * DAY)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooFarInFuture), "{err}");
    assert_eq!(total(&client, "future.a").await, (2, 1));
}

/// Old behaviour: a `Recorder` batch with one invalid key was rejected whole, so every
/// increment flushed with it was lost (`rejected` counted them all).
#[tokio::test]
async fn a_recorder_batch_with_one_invalid_key_keeps_the_others() {
    let env = Env::new("a_recorder_batch_with_one_invalid_key_keeps_the_others");
    let server = env.start();
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let recorder = client
        .recorder()
        .flush_interval(Duration::from_secs(3600))
        .start();
    for _ in 0..10 {
        recorder.incr("rec.good", 1);
    }
    recorder.incr("not a valid key!", 1);
    for _ in 0..10 {
        recorder.incr("rec.good", 1);
    }
    let report = recorder.shutdown().await;
    assert_eq!(
        (report.recorded, report.sent, report.rejected),
        (21, 20, 1),
        "{report:?}"
    );
    assert_eq!(total(&client, "rec.good").await, (20, 20));
    // The invalid key did not leave a broken alias behind on the connection.
    let err = client.incr("not a valid key!").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSeries), "{err}");
    client.incr("rec.good").await.unwrap();
    assert_eq!(total(&client, "rec.good").await, (21, 21));
}

/// Old behaviour: a batch refused for an event's time (or a refused event) still
/// created the series of its valid keys, which then showed in `SERIES`.
#[tokio::test]
async fn refused_batches_and_events_create_no_series() {
    let env = Env::new("refused_batches_and_events_create_no_series");
    let server = env.start();
    let now = now_ms();
    let strict = Client::builder(server.addr.to_string())
        .strict(true)
        .connect()
        .await
        .unwrap();
    let err = strict
        .batch()
        .add("ghost.a", 1)
        .add_at("ghost.b", 1, now + 30 * DAY)
        .add("not a valid key!", 1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSeries), "{err}");
    let err = strict
        .batch()
        .add("ghost.a", 1)
        .add_at("ghost.b", 1, now + 30 * DAY)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooFarInFuture), "{err}");
    assert_eq!(series_count(&strict, "ghost.").await, 0);
    // Per event: the refused event's key is not created, the applied one is.
    let client = Client::connect(server.addr.to_string()).await.unwrap();
    let r = client
        .batch()
        .add("ghost.c", 1)
        .add_at("ghost.d", 1, 0)
        .send()
        .await
        .unwrap();
    assert_eq!((r.applied, r.refused_count), (1, 1), "{r:?}");
    let keys = client
        .series(&Selector::Prefix("ghost."), 1000)
        .await
        .unwrap()
        .keys;
    assert_eq!(keys, vec!["ghost.c".to_string()]);
}

/// A producer sequence that goes backwards inside the remembered window was never
/// applied (the server remembers each applied one), so it is applied once, as
/// PROTOCOL.md §6.3 says; a retry of it is a duplicate; one older than every
/// remembered sequence is refused with `OUT_OF_ORDER`.
#[test]
fn a_backwards_producer_sequence_behaves_as_documented() {
    let env = Env::new("a_backwards_producer_sequence_behaves_as_documented");
    let server = env.start();
    let mut c = server.client();
    let batch = |seq: u64| {
        Request::Incr(Incr {
            producer: Some(Producer {
                id: 77,
                sequence: seq,
            }),
            events: vec![Event {
                series: SeriesRef::Key("seq.hits"),
                delta: 1,
                timestamp_ms: None,
                event_id: None,
            }],
            per_event: false,
        })
    };
    let applied = |c: &mut tallydb_e2e::Client, seq: u64| match c.call(&batch(seq)).response() {
        Response::IncrOk(ok) => (ok.applied, ok.duplicate_batch),
        other => panic!("sequence {seq}: {other:?}"),
    };
    assert_eq!(applied(&mut c, 10), (1, false));
    // Backwards inside the window: never applied, so applied now, once.
    assert_eq!(applied(&mut c, 5), (1, false));
    assert_eq!(applied(&mut c, 5), (1, true));
    assert_eq!(applied(&mut c, 10), (1, true));
    // Push the window past 5, then go below it: refused, nothing counted.
    for seq in 100..164 {
        assert_eq!(applied(&mut c, seq), (1, false));
    }
    let reply = c.call(&batch(6));
    let err = reply.error().expect("refused");
    assert!(err.is(tallydb_protocol::ErrorCode::OutOfOrder), "{err:?}");
    assert_eq!(c.total("seq.hits"), 66);
    let listed = c.call(&Request::Series(SeriesQuery {
        selector: tallydb_protocol::Selector::Prefix("seq."),
        limit: 10,
    }));
    assert!(matches!(listed.response(), Response::SeriesOk(_)));
}
