//! Encode and decode of the protocol's hot messages: `INCR` (full keys and aliases,
//! 1 and 1,000 events; with [`IncrBuilder`] as clients stream it and with
//! `encode_request` of a built [`Incr`]), `INCR_OK`, and a one-day `RANGE_OK` (1,440
//! points). Decoding uses `decode_frame_with_limits`, the server's path.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench -p tallydb-benches --bench protocol`

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tallydb_protocol::{
    decode_frame, decode_frame_with_limits, encode_request, encode_response, Event, Group, Incr,
    IncrBuilder, IncrOk, Limits, Message, Point, Producer, RangeGroups, RangeOk, Request, Response,
    SeriesRef, Tiers,
};

const LIMITS: Limits = Limits {
    max_frame: 16 * 1024 * 1024,
    max_batch_events: 100_000,
    max_aliases: 65_536,
};
const PRODUCER: Producer = Producer {
    id: 0x0102_0304_0506_0708,
    sequence: 42,
};

/// Keys like tally-bench's: `bench_0123456789ab{s=000042}`.
fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("bench_0123456789ab{{s={:06}}}", (i * 7919) % 100_000))
        .collect()
}

/// The events of one batch: unit increments at receive time, by key or by alias.
fn events(keys: &[String], aliases: bool) -> Vec<Event<'_>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            Event::unit(if aliases {
                SeriesRef::Alias(((i * 7919) % 65_536) as u32)
            } else {
                SeriesRef::Key(k)
            })
        })
        .collect()
}

fn incr(c: &mut Criterion) {
    let mut g = c.benchmark_group("incr");
    for n in [1usize, 1_000] {
        let ks = keys(n);
        for (form, aliases) in [("keys", false), ("aliases", true)] {
            let evs = events(&ks, aliases);
            let id = format!("{form}/{n}");
            g.throughput(Throughput::Elements(n as u64));
            let mut out = BytesMut::with_capacity(64 * 1024);
            g.bench_function(BenchmarkId::new("encode_builder", &id), |b| {
                b.iter(|| {
                    out.clear();
                    let mut w = IncrBuilder::new(&mut out, 7, Some(PRODUCER));
                    for e in &evs {
                        w.push(e);
                    }
                    black_box(out.len())
                })
            });
            let req = Request::Incr(Incr {
                producer: Some(PRODUCER),
                events: evs.clone(),
                per_event: false,
            });
            g.bench_function(BenchmarkId::new("encode_request", &id), |b| {
                b.iter(|| {
                    out.clear();
                    encode_request(7, black_box(&req), &mut out);
                    black_box(out.len())
                })
            });
            out.clear();
            encode_request(7, &req, &mut out);
            let frame = out.clone().freeze();
            g.bench_function(BenchmarkId::new("decode", &id), |b| {
                b.iter(
                    || match decode_frame_with_limits(black_box(&frame), &LIMITS) {
                        Ok(Some((f, used))) => {
                            assert_eq!(used, frame.len());
                            match f.message {
                                Message::Request(Request::Incr(i)) => black_box(i.events.len()),
                                _ => panic!("not an INCR"),
                            }
                        }
                        other => panic!("decode failed: {other:?}"),
                    },
                )
            });
        }
    }
    g.finish();
}

fn incr_ok(c: &mut Criterion) {
    let mut g = c.benchmark_group("incr_ok");
    let ok = Response::IncrOk(IncrOk {
        applied: 1_000,
        duplicates: 0,
        duplicate_batch: false,
    });
    let mut out = BytesMut::with_capacity(64);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_response(7, black_box(&ok), &mut out);
            black_box(out.len())
        })
    });
    out.clear();
    encode_response(7, &ok, &mut out);
    let frame = out.clone().freeze();
    g.bench_function("decode", |b| {
        b.iter(|| match decode_frame(black_box(&frame), LIMITS.max_frame) {
            Ok(Some((f, _))) => match f.message {
                Message::Response(Response::IncrOk(o)) => black_box(o.applied),
                _ => panic!("not an INCR_OK"),
            },
            other => panic!("decode failed: {other:?}"),
        })
    });
    g.finish();
}

fn range_ok(c: &mut Criterion) {
    const POINTS: i64 = 1_440;
    let base = 1_700_000_000_000 / 60_000 * 60_000;
    let ok = Response::RangeOk(RangeOk {
        tiers: Tiers::MINUTE,
        closed_until_ms: base + POINTS * 60_000,
        step_ms: 60_000,
        groups: RangeGroups::Int(vec![Group {
            labels: Vec::new(),
            points: (0..POINTS)
                .map(|k| Point {
                    ts_ms: base + k * 60_000,
                    value: 1 + k % 9,
                })
                .collect(),
        }]),
    });
    let mut g = c.benchmark_group("range_ok");
    g.throughput(Throughput::Elements(POINTS as u64));
    let mut out = BytesMut::with_capacity(64 * 1024);
    g.bench_function(BenchmarkId::new("encode", "1440_points"), |b| {
        b.iter(|| {
            out.clear();
            encode_response(7, black_box(&ok), &mut out);
            black_box(out.len())
        })
    });
    out.clear();
    encode_response(7, &ok, &mut out);
    let frame = out.clone().freeze();
    g.bench_function(BenchmarkId::new("decode", "1440_points"), |b| {
        b.iter(|| match decode_frame(black_box(&frame), LIMITS.max_frame) {
            Ok(Some((f, _))) => match f.message {
                Message::Response(Response::RangeOk(r)) => match r.groups {
                    RangeGroups::Int(gs) => black_box(gs.first().map_or(0, |g| g.points.len())),
                    RangeGroups::Float(_) => panic!("floats"),
                },
                _ => panic!("not a RANGE_OK"),
            },
            other => panic!("decode failed: {other:?}"),
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = incr, incr_ok, range_ok
}
criterion_main!(benches);
