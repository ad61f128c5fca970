//! Cross-module tests: a round trip per message kind, properties over arbitrary messages
//! and arbitrary bytes, framing limits, and the hex examples of `docs/PROTOCOL.md`.

use std::borrow::Cow;
use std::collections::HashSet;

use bytes::BytesMut;
use proptest::prelude::*;

use crate::*;

const MAX: u32 = 1 << 20;

fn encode(frame: &Frame<'_>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(frame, &mut out);
    out
}

fn req<'a>(request_id: u32, r: Request<'a>) -> Frame<'a> {
    Frame {
        request_id,
        message: Message::Request(r),
    }
}

fn resp<'a>(request_id: u32, r: Response<'a>) -> Frame<'a> {
    Frame {
        request_id,
        message: Message::Response(r),
    }
}

/// Asserts that `frame` survives encode → decode, that the decoder reports the exact
/// length, that every strict prefix is "need more bytes", and that a payload cut short
/// (with the length field adjusted) is an error, never another message.
fn check_round_trip(frame: &Frame<'_>) {
    let bytes = encode(frame);
    let (decoded, used) = decode_frame(&bytes, MAX).unwrap().unwrap();
    assert_eq!(&decoded, frame);
    assert_eq!(used, bytes.len());
    for cut in 0..bytes.len() {
        assert_eq!(decode_frame(&bytes[..cut], MAX), Ok(None), "prefix {cut}");
    }
    for cut in HEADER_LEN..bytes.len() {
        let mut short = bytes[..cut].to_vec();
        let len = u32::try_from(cut - 4).unwrap();
        short[..4].copy_from_slice(&len.to_le_bytes());
        assert!(
            decode_frame(&short, MAX).is_err(),
            "payload cut at {cut} of {frame:?}"
        );
    }
    // Two frames back to back decode one at a time.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let (first, used) = decode_frame(&two, MAX).unwrap().unwrap();
    assert_eq!((&first, used), (frame, bytes.len()));
}

fn metric_selector() -> Selector<'static> {
    Selector::Metric(MetricSelector {
        name: "ad_clicks",
        matchers: vec![
            Matcher {
                label: "country",
                op: MatchOp::Eq,
                value: "US",
            },
            Matcher {
                label: "ad",
                op: MatchOp::NotEq,
                value: "ad002",
            },
        ],
        group_by: vec!["ad"],
    })
}

/// One frame per opcode (several for the richer ones).
fn samples() -> Vec<Frame<'static>> {
    vec![
        req(1, Request::Hello(Hello::new("web-1", b"s3cr3t"))),
        req(2, Request::Ping),
        req(
            3,
            Request::Incr(Incr {
                producer: Some(Producer {
                    id: u64::MAX,
                    sequence: 17,
                }),
                events: vec![
                    Event::unit(SeriesRef::Define {
                        key: "ad_clicks{ad=ad001,country=US}",
                        alias: 1,
                    }),
                    Event::unit(SeriesRef::Alias(1)),
                    Event {
                        series: SeriesRef::Key("video_views{id=42}"),
                        delta: -3,
                        timestamp_ms: Some(1_700_000_000_000),
                        event_id: Some(b"evt-0001"),
                    },
                ],
                per_event: false,
            }),
        ),
        req(
            4,
            Request::Incr(Incr {
                producer: None,
                events: vec![],
                per_event: false,
            }),
        ),
        req(
            5,
            Request::Range(RangeQuery {
                selector: metric_selector(),
                from_ms: 1_700_000_000_000,
                to_ms: 1_700_086_400_000,
                step: Step::Millis(3_600_000),
                function: Function::Avg,
            }),
        ),
        req(
            6,
            Request::Range(RangeQuery {
                selector: Selector::Prefix("com.amazon."),
                from_ms: -5,
                to_ms: 0,
                step: Step::Auto,
                function: Function::Rate,
            }),
        ),
        req(
            7,
            Request::Total(TotalQuery {
                selector: Selector::Exact("page_hits{page=/home}"),
                from_ms: 0,
                to_ms: i64::MAX,
            }),
        ),
        req(
            8,
            Request::Top(TopQuery {
                selector: metric_selector(),
                from_ms: 1,
                to_ms: 2,
                n: 100,
                group_by: Some("ad"),
            }),
        ),
        req(
            9,
            Request::Top(TopQuery {
                selector: Selector::Prefix(""),
                from_ms: 1,
                to_ms: 2,
                n: 10,
                group_by: None,
            }),
        ),
        req(
            10,
            Request::Series(SeriesQuery {
                selector: Selector::Prefix("ad_"),
                limit: 1000,
            }),
        ),
        req(11, Request::Stats),
        req(12, Request::Flush),
        req(13, Request::Compact),
        req(
            14,
            Request::Snapshot(Snapshot {
                target_dir: "/backups/2024-01-01",
            }),
        ),
        resp(
            1,
            Response::HelloOk(HelloOk {
                protocol_version: PROTOCOL_VERSION,
                server_version: "tallyd 0.1.0",
                limits: Limits {
                    max_frame: 1 << 20,
                    max_batch_events: 10_000,
                    max_aliases: 65_536,
                },
                role: Role::Admin,
            }),
        ),
        resp(2, Response::Pong),
        resp(
            3,
            Response::IncrOk(IncrOk {
                applied: 2,
                duplicates: 1,
                duplicate_batch: false,
            }),
        ),
        resp(
            4,
            Response::IncrReport(IncrReport {
                applied: 2,
                duplicates: 0,
                duplicate_batch: false,
                refused_count: 1,
                refused: vec![Refusal {
                    index: 1,
                    code: ErrorCode::TooFarInFuture.code(),
                    message: "event 1: too far ahead".into(),
                }],
            }),
        ),
        resp(
            5,
            Response::RangeOk(RangeOk {
                tiers: Tiers::MINUTE | Tiers::HOUR,
                closed_until_ms: 1_700_003_540_000,
                step_ms: 60_000,
                groups: RangeGroups::Int(vec![
                    Group {
                        labels: vec![Label {
                            name: "ad",
                            value: "ad001",
                        }],
                        points: vec![
                            Point {
                                ts_ms: 1_700_000_000_000,
                                value: 5,
                            },
                            Point {
                                ts_ms: 1_700_000_060_000,
                                value: -7,
                            },
                        ],
                    },
                    Group {
                        labels: vec![],
                        points: vec![],
                    },
                ]),
            }),
        ),
        resp(
            6,
            Response::RangeOk(RangeOk {
                tiers: Tiers::DAY,
                closed_until_ms: 0,
                step_ms: 86_400_000,
                groups: RangeGroups::Float(vec![Group {
                    labels: vec![],
                    points: vec![Point {
                        ts_ms: 0,
                        value: 0.25,
                    }],
                }]),
            }),
        ),
        resp(
            7,
            Response::TotalOk(TotalOk {
                sum: -1,
                count: 3,
                from_ms: 0,
                to_ms: 60_000,
                tiers: Tiers::MINUTE,
                closed_until_ms: 60_000,
            }),
        ),
        resp(
            8,
            Response::TopOk(TopOk {
                tiers: Tiers::HOUR,
                closed_until_ms: 3_600_000,
                entries: vec![
                    TopEntry {
                        name: "ad001",
                        sum: 900,
                        count: 800,
                    },
                    TopEntry {
                        name: "ad002",
                        sum: 10,
                        count: 10,
                    },
                ],
            }),
        ),
        resp(
            10,
            Response::SeriesOk(SeriesOk {
                keys: vec!["ad_clicks{ad=ad001}", "ad_views"],
                truncated: true,
            }),
        ),
        resp(
            11,
            Response::StatsOk(StatsOk {
                entries: vec![
                    Stat {
                        name: "wal.fsyncs",
                        value: 12,
                    },
                    Stat {
                        name: "series",
                        value: u64::MAX,
                    },
                ],
            }),
        ),
        resp(12, Response::AdminOk(AdminOk::new("flushed 3 segments"))),
        resp(
            13,
            Response::Error(ErrorReply::new(ErrorCode::Busy, "write queue full")),
        ),
        resp(
            14,
            Response::TotalGroupsOk(crate::total_groups::TotalGroupsOk {
                from_ms: 0,
                to_ms: 60_000,
                tiers: Tiers(1),
                closed_until_ms: 0,
                groups: vec![crate::total_groups::TotalGroup {
                    labels: vec![Label {
                        name: "__child__",
                        value: "music",
                    }],
                    sum: 5,
                    count: 1,
                }],
            }),
        ),
        req(
            15,
            Request::Total(TotalQuery {
                selector: Selector::PrefixBy(crate::PrefixSelector {
                    prefix: "com.example.",
                    group_by: vec!["__child__", "country"],
                }),
                from_ms: 0,
                to_ms: 1,
            }),
        ),
    ]
}

#[test]
fn every_message_kind_round_trips() {
    let samples = samples();
    let covered: HashSet<u8> = samples.iter().map(|f| f.message.opcode() as u8).collect();
    let all: HashSet<u8> = Opcode::ALL.iter().map(|op| *op as u8).collect();
    assert_eq!(covered, all, "a message kind has no round-trip sample");
    for frame in &samples {
        check_round_trip(frame);
    }
}

#[test]
fn encode_request_and_response_match_encode_frame() {
    for frame in samples() {
        let mut out = BytesMut::from(&b"xy"[..]);
        match &frame.message {
            Message::Request(r) => encode_request(frame.request_id, r, &mut out),
            Message::Response(r) => encode_response(frame.request_id, r, &mut out),
        }
        assert_eq!(&out[2..], &encode(&frame)[..]);
    }
}

#[test]
fn oversized_length_is_refused_from_the_length_field_alone() {
    // Only the 4-byte length is present: the error comes before waiting for (or
    // allocating) the declared 4 GiB.
    assert_eq!(
        decode_frame(&[0xff, 0xff, 0xff, 0xff], 1024),
        Err(DecodeError::FrameTooLarge {
            declared: u32::MAX,
            max: 1024
        })
    );
    assert_eq!(
        decode_frame(&[0x01, 0x04, 0x00, 0x00], 1024),
        Err(DecodeError::FrameTooLarge {
            declared: 1025,
            max: 1024
        })
    );
    // Exactly at the limit is fine (and incomplete here).
    assert_eq!(decode_frame(&[0x00, 0x04, 0x00, 0x00], 1024), Ok(None));
    let err = DecodeError::FrameTooLarge {
        declared: 1025,
        max: 1024,
    };
    assert!(!err.keeps_framing());
    assert_eq!(
        err.to_string(),
        "frame too large: declares 1025 bytes, the limit is 1024"
    );
}

#[test]
fn frame_length_below_header_is_invalid() {
    let err = decode_frame(&[0x04, 0, 0, 0, 0x02, 0, 0, 0], MAX).unwrap_err();
    assert_eq!(err, DecodeError::FrameTooSmall { declared: 4 });
    assert_eq!(err.error_code(), ErrorCode::Malformed);
    assert!(!err.keeps_framing());
}

#[test]
fn unknown_opcode_keeps_framing_and_header_names_request() {
    let buf = [0x06, 0, 0, 0, 0x7e, 0x2a, 0, 0, 0, 0xaa, 0x02];
    let err = decode_frame(&buf, MAX).unwrap_err();
    assert_eq!(err, DecodeError::UnknownOpcode(0x7e));
    assert!(err.keeps_framing());
    assert_eq!(err.error_code(), ErrorCode::UnknownOpcode);
    let header = FrameHeader::peek(&buf, MAX).unwrap().unwrap();
    assert_eq!(header.request_id, 42);
    assert_eq!(header.frame_len(), 10);
}

#[test]
fn batch_limit_is_checked_before_reading_events() {
    let limits = Limits {
        max_frame: MAX,
        max_batch_events: 2,
        max_aliases: 16,
    };
    let batch = |n: usize| {
        encode(&req(
            1,
            Request::Incr(Incr {
                producer: None,
                events: vec![Event::unit(SeriesRef::Alias(1)); n],
                per_event: false,
            }),
        ))
    };
    assert!(decode_frame_with_limits(&batch(2), &limits)
        .unwrap()
        .is_some());
    let err = decode_frame_with_limits(&batch(3), &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BatchTooLarge {
            declared: 3,
            max: 2
        }
    );
    assert_eq!(err.error_code(), ErrorCode::BatchTooLarge);
    assert!(err.keeps_framing());
    // The count alone decides: a huge declared count with no events behind it.
    let mut huge = batch(0);
    huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode_frame_with_limits(&huge, &limits),
        Err(DecodeError::BatchTooLarge {
            declared: u32::MAX,
            max: 2
        })
    );
    // Frame size limits apply too.
    let small = Limits {
        max_frame: 8,
        ..limits
    };
    assert_eq!(
        decode_frame_with_limits(&batch(1), &small),
        Err(DecodeError::FrameTooLarge {
            declared: 12,
            max: 8
        })
    );
}

#[test]
fn required_roles() {
    assert_eq!(Request::Ping.required_role(), Role::Read);
    assert_eq!(
        Request::Incr(Incr {
            producer: None,
            events: vec![],
            per_event: false,
        })
        .required_role(),
        Role::Write
    );
    assert_eq!(Request::Compact.required_role(), Role::Admin);
    assert!(Role::Admin > Role::Write && Role::Write > Role::Read);
}

#[test]
fn trailing_bytes_are_refused() {
    // PING with one payload byte.
    let buf = [0x06, 0, 0, 0, 0x02, 1, 0, 0, 0, 0x00];
    assert_eq!(
        decode_frame(&buf, MAX),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn hello_with_another_version_is_refused_before_reading_the_rest() {
    // Version 2, followed by bytes in a layout this version does not know.
    let buf = [0x08, 0, 0, 0, 0x01, 1, 0, 0, 0, 0x02, 0x00, 0xff];
    let err = decode_frame(&buf, MAX).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnsupportedVersion {
            client: 2,
            server: 1
        }
    );
    let reply = ErrorReply::from_decode_error(&err);
    assert_eq!(reply, ErrorReply::unsupported_version(2));
    assert_eq!(reply.error_code(), Some(ErrorCode::UnsupportedVersion));
    assert!(!reply.retryable);
    assert!(reply.message.contains("version 2"), "{}", reply.message);
    assert!(reply.message.contains("version 1"), "{}", reply.message);
}

#[test]
fn reserved_and_enum_bytes_are_checked() {
    // INCR batch flags with a reserved bit.
    let buf = [0x0a, 0, 0, 0, 0x10, 1, 0, 0, 0, 0x04, 0, 0, 0, 0];
    assert_eq!(
        decode_frame(&buf, MAX),
        Err(DecodeError::Invalid {
            what: "batch flags",
            reason: "reserved bits 2-7 must be zero"
        })
    );
    // INCR_OK with duplicate_batch = 2.
    let buf = [0x0e, 0, 0, 0, 0x90, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    assert_eq!(
        decode_frame(&buf, MAX),
        Err(DecodeError::Invalid {
            what: "duplicate batch",
            reason: "boolean must be 0 or 1"
        })
    );
}

#[test]
fn series_key_limit_is_enforced() {
    let at_limit = "k".repeat(MAX_SERIES_KEY_LEN);
    let over = "k".repeat(MAX_SERIES_KEY_LEN + 1);
    let frame = |key| {
        encode(&req(
            1,
            Request::Incr(Incr {
                producer: None,
                events: vec![Event::unit(SeriesRef::Key(key))],
                per_event: false,
            }),
        ))
    };
    assert!(decode_frame(&frame(&at_limit), MAX).unwrap().is_some());
    assert_eq!(
        decode_frame(&frame(&over), MAX),
        Err(DecodeError::Invalid {
            what: "series key",
            reason: "longer than its limit"
        })
    );
}

#[test]
fn unknown_error_codes_are_accepted() {
    let reply = ErrorReply {
        code: 999,
        retryable: true,
        message: Cow::Borrowed("from the future"),
    };
    check_round_trip(&resp(1, Response::Error(reply.clone())));
    assert_eq!(reply.error_code(), None);
}

// ---------------------------------------------------------------------------------------
// Documented examples: the hex dumps in docs/PROTOCOL.md are parsed and compared with the
// encoder's output, so the specification cannot drift from the code.

const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

/// The bytes of the ```` ```hex ```` block after `<!-- example: NAME -->`. Each line holds
/// hex bytes, optionally followed by `#` and a comment.
fn documented(name: &str) -> Vec<u8> {
    let marker = format!("<!-- example: {name} -->");
    let start = PROTOCOL_MD
        .find(&marker)
        .unwrap_or_else(|| panic!("no example {name} in docs/PROTOCOL.md"));
    let rest = &PROTOCOL_MD[start + marker.len()..];
    let open = rest.find("```hex\n").unwrap() + "```hex\n".len();
    let body = &rest[open..];
    let body = &body[..body.find("```").unwrap()];
    body.lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
        .map(|tok| {
            u8::from_str_radix(tok, 16)
                .unwrap_or_else(|_| panic!("example {name}: bad hex byte {tok:?}"))
        })
        .collect()
}

fn check_documented(name: &str, frame: &Frame<'_>) {
    let doc = documented(name);
    let encoded = encode(frame);
    let hex: Vec<String> = encoded.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        &encoded[..],
        &doc[..],
        "example {name}: docs/PROTOCOL.md differs from the encoder's output {}",
        hex.join(" ")
    );
    let (decoded, used) = decode_frame(&doc, MAX).unwrap().unwrap();
    assert_eq!((&decoded, used), (frame, doc.len()), "example {name}");
}

const AD001: &str = "ad_clicks{ad=ad001,country=US}";

#[test]
fn doc_example_hello() {
    check_documented(
        "hello",
        &req(1, Request::Hello(Hello::new("web-1", b"s3cr3t"))),
    );
}

#[test]
fn doc_example_hello_ok() {
    check_documented(
        "hello-ok",
        &resp(
            1,
            Response::HelloOk(HelloOk {
                protocol_version: 1,
                server_version: "tallyd 0.1.0",
                limits: Limits {
                    max_frame: 1 << 20,
                    max_batch_events: 10_000,
                    max_aliases: 65_536,
                },
                role: Role::Write,
            }),
        ),
    );
}

#[test]
fn doc_example_incr_define() {
    check_documented(
        "incr-define",
        &req(
            2,
            Request::Incr(Incr {
                producer: Some(Producer {
                    id: 0x0102_0304_0506_0708,
                    sequence: 1,
                }),
                events: vec![
                    Event::unit(SeriesRef::Define {
                        key: AD001,
                        alias: 1,
                    }),
                    Event {
                        series: SeriesRef::Key("page_hits{page=/}"),
                        delta: 3,
                        timestamp_ms: Some(1_700_000_000_000),
                        event_id: Some(b"e-1"),
                    },
                ],
                per_event: false,
            }),
        ),
    );
}

#[test]
fn doc_example_incr_alias() {
    check_documented(
        "incr-alias",
        &req(
            3,
            Request::Incr(Incr {
                producer: None,
                events: vec![
                    Event::unit(SeriesRef::Alias(1)),
                    Event {
                        delta: 5,
                        ..Event::unit(SeriesRef::Alias(1))
                    },
                ],
                per_event: false,
            }),
        ),
    );
}

#[test]
fn doc_example_total() {
    check_documented(
        "total",
        &req(
            4,
            Request::Total(TotalQuery {
                selector: Selector::Exact(AD001),
                from_ms: 1_700_000_000_000,
                to_ms: 1_700_003_600_000,
            }),
        ),
    );
}

#[test]
fn doc_example_total_ok() {
    check_documented(
        "total-ok",
        &resp(
            4,
            Response::TotalOk(TotalOk {
                sum: 1234,
                count: 1000,
                from_ms: 1_700_000_000_000,
                to_ms: 1_700_003_600_000,
                tiers: Tiers::MINUTE | Tiers::HOUR,
                closed_until_ms: 1_700_003_580_000,
            }),
        ),
    );
}

#[test]
fn doc_example_error() {
    check_documented(
        "error",
        &resp(1, Response::Error(ErrorReply::unsupported_version(2))),
    );
}

// ---------------------------------------------------------------------------------------
// Properties.

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak_bytes(b: Vec<u8>) -> &'static [u8] {
    Box::leak(b.into_boxed_slice())
}

/// Any UTF-8 string of at most 16 chars (64 bytes): within every string limit.
fn text() -> impl Strategy<Value = &'static str> {
    ".{0,16}".prop_map(leak_str)
}

fn id_bytes() -> impl Strategy<Value = &'static [u8]> {
    prop::collection::vec(any::<u8>(), 0..=MAX_EVENT_ID_LEN).prop_map(leak_bytes)
}

fn selector() -> impl Strategy<Value = Selector<'static>> {
    let matcher = (text(), any::<bool>(), text()).prop_map(|(label, ne, value)| Matcher {
        label,
        op: if ne { MatchOp::NotEq } else { MatchOp::Eq },
        value,
    });
    prop_oneof![
        text().prop_map(Selector::Exact),
        text().prop_map(Selector::Prefix),
        (
            text(),
            prop::collection::vec(matcher, 0..4),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(
                |(name, matchers, group_by)| Selector::Metric(MetricSelector {
                    name,
                    matchers,
                    group_by
                })
            ),
    ]
}

fn event() -> impl Strategy<Value = Event<'static>> {
    let series = prop_oneof![
        any::<u32>().prop_map(SeriesRef::Alias),
        text().prop_map(SeriesRef::Key),
        (text(), any::<u32>()).prop_map(|(key, alias)| SeriesRef::Define { key, alias }),
    ];
    (
        series,
        prop_oneof![Just(1i64), any::<i64>()],
        proptest::option::of(any::<i64>()),
        proptest::option::of(id_bytes()),
    )
        .prop_map(|(series, delta, timestamp_ms, event_id)| Event {
            series,
            delta,
            timestamp_ms,
            event_id,
        })
}

fn function() -> impl Strategy<Value = Function> {
    prop::sample::select(vec![
        Function::Sum,
        Function::Count,
        Function::Avg,
        Function::Min,
        Function::Max,
        Function::Rate,
    ])
}

fn request() -> impl Strategy<Value = Request<'static>> {
    let producer = proptest::option::of(
        (any::<u64>(), any::<u64>()).prop_map(|(id, sequence)| Producer { id, sequence }),
    );
    let step = prop_oneof![Just(Step::Auto), any::<u64>().prop_map(Step::Millis)];
    prop_oneof![
        (text(), id_bytes()).prop_map(|(n, t)| Request::Hello(Hello::new(n, t))),
        Just(Request::Ping),
        Just(Request::Stats),
        Just(Request::Flush),
        Just(Request::Compact),
        text().prop_map(|target_dir| Request::Snapshot(Snapshot { target_dir })),
        (producer, prop::collection::vec(event(), 0..20)).prop_map(|(producer, events)| {
            Request::Incr(Incr {
                producer,
                events,
                per_event: false,
            })
        }),
        (selector(), any::<i64>(), any::<i64>(), step, function()).prop_map(
            |(selector, from_ms, to_ms, step, function)| Request::Range(RangeQuery {
                selector,
                from_ms,
                to_ms,
                step,
                function
            })
        ),
        (selector(), any::<i64>(), any::<i64>()).prop_map(|(selector, from_ms, to_ms)| {
            Request::Total(TotalQuery {
                selector,
                from_ms,
                to_ms,
            })
        }),
        (
            selector(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            proptest::option::of(text())
        )
            .prop_map(
                |(selector, from_ms, to_ms, n, group_by)| Request::Top(TopQuery {
                    selector,
                    from_ms,
                    to_ms,
                    n,
                    group_by
                })
            ),
        (selector(), any::<u32>())
            .prop_map(|(selector, limit)| Request::Series(SeriesQuery { selector, limit })),
    ]
}

fn labels() -> impl Strategy<Value = Vec<Label<'static>>> {
    prop::collection::vec(
        (text(), text()).prop_map(|(name, value)| Label { name, value }),
        0..3,
    )
}

fn range_groups() -> impl Strategy<Value = RangeGroups<'static>> {
    let int_points = prop::collection::vec(
        (any::<i64>(), any::<i64>()).prop_map(|(ts_ms, value)| Point { ts_ms, value }),
        0..8,
    );
    // Finite floats: NaN would make `==` fail although its bits round-trip.
    let float_points = prop::collection::vec(
        (any::<i64>(), -1e15f64..1e15).prop_map(|(ts_ms, value)| Point { ts_ms, value }),
        0..8,
    );
    prop_oneof![
        prop::collection::vec(
            (labels(), int_points).prop_map(|(labels, points)| Group { labels, points }),
            0..4
        )
        .prop_map(RangeGroups::Int),
        prop::collection::vec(
            (labels(), float_points).prop_map(|(labels, points)| Group { labels, points }),
            0..4
        )
        .prop_map(RangeGroups::Float),
    ]
}

fn response() -> impl Strategy<Value = Response<'static>> {
    let role = prop::sample::select(vec![Role::Read, Role::Write, Role::Admin]);
    prop_oneof![
        (text(), any::<[u32; 3]>(), role).prop_map(|(server_version, l, role)| {
            Response::HelloOk(HelloOk {
                protocol_version: PROTOCOL_VERSION,
                server_version,
                limits: Limits {
                    max_frame: l[0],
                    max_batch_events: l[1],
                    max_aliases: l[2],
                },
                role,
            })
        }),
        Just(Response::Pong),
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(applied, duplicates, d)| {
            Response::IncrOk(IncrOk {
                applied,
                duplicates,
                duplicate_batch: d,
            })
        }),
        (any::<u8>(), any::<i64>(), any::<u64>(), range_groups()).prop_map(
            |(t, closed_until_ms, step_ms, groups)| Response::RangeOk(RangeOk {
                tiers: Tiers(t),
                closed_until_ms,
                step_ms,
                groups
            })
        ),
        (any::<(i64, u64, i64, i64, u8, i64)>()).prop_map(|(sum, count, f, t, tiers, c)| {
            Response::TotalOk(TotalOk {
                sum,
                count,
                from_ms: f,
                to_ms: t,
                tiers: Tiers(tiers),
                closed_until_ms: c,
            })
        }),
        (
            any::<u8>(),
            any::<i64>(),
            prop::collection::vec(
                (text(), any::<i64>(), any::<u64>()).prop_map(|(name, sum, count)| TopEntry {
                    name,
                    sum,
                    count
                }),
                0..5
            )
        )
            .prop_map(|(t, closed_until_ms, entries)| Response::TopOk(TopOk {
                tiers: Tiers(t),
                closed_until_ms,
                entries
            })),
        (prop::collection::vec(text(), 0..5), any::<bool>())
            .prop_map(|(keys, truncated)| Response::SeriesOk(SeriesOk { keys, truncated })),
        prop::collection::vec(
            (text(), any::<u64>()).prop_map(|(name, value)| Stat { name, value }),
            0..5
        )
        .prop_map(|entries| Response::StatsOk(StatsOk { entries })),
        text().prop_map(|m| Response::AdminOk(AdminOk::new(m))),
        (any::<u16>(), any::<bool>(), text()).prop_map(|(code, retryable, m)| {
            Response::Error(ErrorReply {
                code,
                retryable,
                message: Cow::Borrowed(m),
            })
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame<'static>> {
    (
        any::<u32>(),
        prop_oneof![
            request().prop_map(Message::Request),
            response().prop_map(Message::Response),
        ],
    )
        .prop_map(|(request_id, message)| Frame {
            request_id,
            message,
        })
}

proptest! {
    #[test]
    fn arbitrary_frames_round_trip(f in frame()) {
        let bytes = encode(&f);
        let (decoded, used) = decode_frame(&bytes, MAX).unwrap().unwrap();
        prop_assert_eq!(&decoded, &f);
        prop_assert_eq!(used, bytes.len());
    }

    #[test]
    fn any_prefix_of_a_frame_needs_more_bytes(f in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&f);
        let cut = cut.index(bytes.len());
        prop_assert_eq!(decode_frame(&bytes[..cut], MAX), Ok(None));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_stably(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        max in prop_oneof![Just(MAX), 0u32..300],
    ) {
        if let Ok(Some((f, used))) = decode_frame(&bytes, max) {
            prop_assert!(used <= bytes.len());
            // What decodes re-encodes to something that decodes to the same message.
            let again = encode(&f);
            let (g, _) = decode_frame(&again, MAX).unwrap().unwrap();
            prop_assert_eq!(&encode(&g)[..], &again[..]);
        }
    }

    #[test]
    fn framed_garbage_never_panics(
        opcode in prop::sample::select(Opcode::ALL.to_vec()),
        payload in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        // Random payloads behind every valid opcode reach deep into each decoder.
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&(u32::try_from(payload.len()).unwrap() + 5).to_le_bytes());
        buf.push(opcode as u8);
        buf.extend_from_slice(&9u32.to_le_bytes());
        buf.extend_from_slice(&payload);
        if let Ok(Some((f, used))) = decode_frame(&buf, MAX) {
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(f.request_id, 9);
            let again = encode(&f);
            let (g, _) = decode_frame(&again, MAX).unwrap().unwrap();
            prop_assert_eq!(&encode(&g)[..], &again[..]);
        }
    }
}

#[test]
fn opcode_names_are_one_table() {
    let names: HashSet<&str> = Opcode::ALL.iter().map(|op| op.name()).collect();
    assert_eq!(
        names.len(),
        Opcode::ALL.len(),
        "every opcode has its own name"
    );
    assert_eq!(Opcode::Incr.name(), "INCR");
    assert_eq!(Opcode::TopOk.to_string(), "TOP_OK");
    for op in Opcode::REQUESTS {
        assert!(op.is_request(), "{op}");
    }
    let requests = Opcode::ALL.iter().filter(|op| op.is_request()).count();
    assert_eq!(requests, Opcode::REQUESTS.len());
}

#[test]
fn header_accessors_read_and_patch_the_header() {
    let mut out = BytesMut::new();
    encode_request(0x0102_0304, &Request::Ping, &mut out);
    assert_eq!(opcode_of(&out), Some(Opcode::Ping as u8));
    assert_eq!(request_id_of(&out), Some(0x0102_0304));
    assert!(set_request_id(&mut out, 77));
    assert_eq!(request_id_of(&out), Some(77));
    let (frame, _) = decode_frame(&out, MAX).unwrap().unwrap();
    assert_eq!(frame.request_id, 77);
    let header = FrameHeader::peek(&out, MAX).unwrap().unwrap();
    assert_eq!(header.opcode(), Some(Opcode::Ping));
    assert_eq!(opcode_of(&out[..4]), None);
    assert_eq!(request_id_of(&out[..8]), None);
    assert!(!set_request_id(&mut out[..8], 1));
}
