//! The properties checked by the fuzz targets in `protocol/fuzz/` and by the corpus
//! replay test `protocol/tests/fuzz_corpus.rs`: one copy of the logic, so a corpus file
//! that passes `cargo test` passes the fuzzer and the other way round.
//!
//! Each check takes arbitrary bytes and panics (with the input's story) when a property
//! does not hold. Not part of the crate's API: compiled into `tallydb-protocol` as the
//! hidden module `fuzzing` only with the cargo feature `fuzzing`, and free to change.

use bytes::BytesMut;

use crate::frame::{FrameHeader, LENGTH_FIELD_LEN, MIN_FRAME_LEN};
use crate::request::Request;
use crate::response::{ErrorReply, Limits, Response};
use crate::{
    decode_frame, decode_frame_with_limits, encode_frame, encode_response, DecodeError, ErrorCode,
    Frame, Hello, Message, Opcode, HANDSHAKE_MAX_FRAME, HEADER_LEN, MAX_CLIENT_NAME_LEN,
    MAX_TOKEN_LEN, PROTOCOL_VERSION,
};

type Decoded<'a> = Result<Option<(Frame<'a>, usize)>, DecodeError>;

/// Frame limits every input is decoded under, besides the ones derived from its own
/// length field.
const FRAME_LIMITS: [u32; 5] = [MIN_FRAME_LEN, 64, HANDSHAKE_MAX_FRAME, 1 << 20, u32::MAX];
/// `max_batch_events` values every input is decoded under.
const BATCH_LIMITS: [u32; 4] = [0, 1, 3, u32::MAX];

/// Target `decode_frame`: `data` is what a peer sent.
///
/// Checks, for [`decode_frame`] and [`decode_frame_with_limits`] under several limits:
///
/// - the frame limit only ever turns a result into [`DecodeError::FrameTooLarge`], decided
///   from the length field alone; the batch limit only ever turns a result into
///   [`DecodeError::BatchTooLarge`], for an `INCR` declaring more events than allowed;
/// - `Ok(None)` only when the frame is really incomplete, and every strict prefix of a
///   decoded frame is `Ok(None)`; the bytes after a frame do not change its decoding;
/// - an error that keeps framing names a frame that is wholly in the buffer, and the
///   `ERROR` answer to any error fits the handshake limit and decodes back;
/// - a decoded frame re-encodes to at most as many bytes as it used (the encoding is
///   canonical), and those bytes decode, under the same limits, to the same message and
///   re-encode to themselves.
pub fn check_decode_frame(data: &[u8]) {
    let reference = decode_frame(data, u32::MAX);
    check_framing(data, &reference);

    let declared = data
        .first_chunk::<LENGTH_FIELD_LEN>()
        .map(|b| u32::from_le_bytes(*b));
    let mut limits = FRAME_LIMITS.to_vec();
    if let Some(d) = declared {
        limits.extend([d, d.saturating_sub(1)]);
    }
    for max_frame in limits {
        let got = decode_frame(data, max_frame);
        match declared {
            Some(d) if d > max_frame => assert_eq!(
                got,
                Err(DecodeError::FrameTooLarge {
                    declared: d,
                    max: max_frame
                }),
                "length {d} over the limit {max_frame}"
            ),
            _ => assert_same(&got, &reference, "a frame limit at or above the length"),
        }
        if let Ok(Some((frame, _))) = &got {
            check_reencoding(frame, max_frame, u32::MAX);
        }
        for max_batch_events in BATCH_LIMITS {
            let limited = Limits {
                max_frame,
                max_batch_events,
                max_aliases: 0,
            };
            let with_limits = decode_frame_with_limits(data, &limited);
            check_batch_limit(data, &got, &with_limits, max_batch_events);
            if let Ok(Some((frame, _))) = &with_limits {
                check_reencoding(frame, max_frame, max_batch_events);
            }
        }
    }
}

/// Target `handshake`: `data` read two ways before `HELLO_OK`, both under
/// [`HANDSHAKE_MAX_FRAME`].
///
/// 1. As the payload of a `HELLO` frame: a payload too large for the handshake limit is
///    refused from the length field; a version other than [`PROTOCOL_VERSION`] is refused
///    with [`DecodeError::UnsupportedVersion`] whatever follows it; an accepted `HELLO`
///    respects the name and token limits and round-trips.
/// 2. As the first bytes a client sends: the server loop of `docs/PROTOCOL.md` §4 decodes
///    frame after frame until `HELLO`, an error that loses framing, a failed `HELLO`, or
///    the end of the bytes, skipping (and answering) frames that fail but keep framing.
///    Every answer fits the handshake limit, and the loop always makes progress.
pub fn check_handshake(data: &[u8]) {
    check_hello_payload(data);
    check_handshake_stream(data);
}

fn check_hello_payload(payload: &[u8]) {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .saturating_add(MIN_FRAME_LEN);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(Opcode::Hello as u8);
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(payload);

    let got = decode_frame(&buf, HANDSHAKE_MAX_FRAME);
    if len > HANDSHAKE_MAX_FRAME {
        assert_eq!(
            got,
            Err(DecodeError::FrameTooLarge {
                declared: len,
                max: HANDSHAKE_MAX_FRAME
            })
        );
        return;
    }
    let version = payload.first_chunk::<2>().map(|v| u16::from_le_bytes(*v));
    match version {
        None => assert!(
            matches!(got, Err(DecodeError::Truncated { .. })),
            "HELLO payload of {} bytes: {got:?}",
            payload.len()
        ),
        Some(v) if v != PROTOCOL_VERSION => assert_eq!(
            got,
            Err(DecodeError::UnsupportedVersion {
                client: v,
                server: PROTOCOL_VERSION
            }),
            "the version is checked before the rest of HELLO"
        ),
        Some(_) => {}
    }
    match &got {
        Ok(Some((frame, used))) => {
            assert_eq!(*used, buf.len());
            let Message::Request(Request::Hello(hello)) = &frame.message else {
                panic!("a HELLO frame decoded as {frame:?}");
            };
            check_hello(hello);
        }
        Ok(None) => panic!("a whole HELLO frame needs more bytes"),
        Err(e) => check_error_answer(e, 1),
    }
}

fn check_hello(hello: &Hello<'_>) {
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert!(hello.client_name.len() <= MAX_CLIENT_NAME_LEN);
    assert!(hello.token.len() <= MAX_TOKEN_LEN);
    let rebuilt = Hello::new(hello.client_name, hello.token);
    assert_eq!(&rebuilt, hello);
}

fn check_handshake_stream(data: &[u8]) {
    let mut rest = data;
    loop {
        let got = decode_frame(rest, HANDSHAKE_MAX_FRAME);
        check_framing(rest, &got);
        match got {
            Ok(None) => return,
            Ok(Some((frame, used))) => {
                assert!(
                    (HEADER_LEN..=LENGTH_FIELD_LEN + HANDSHAKE_MAX_FRAME as usize).contains(&used)
                );
                check_reencoding(&frame, HANDSHAKE_MAX_FRAME, u32::MAX);
                match &frame.message {
                    Message::Request(Request::Hello(hello)) => {
                        // Handshake done: the negotiated limits apply from here on.
                        check_hello(hello);
                        return;
                    }
                    // Any other request before HELLO_OK: ERROR 5 UNAUTHENTICATED. A
                    // response sent by a client: ERROR 3 UNKNOWN_OPCODE. The frame is
                    // skipped either way.
                    Message::Request(_) | Message::Response(_) => {
                        let reply = ErrorReply::new(ErrorCode::Unauthenticated, "no HELLO");
                        check_answer(frame.request_id, &Response::Error(reply));
                    }
                }
                rest = &rest[used..];
            }
            Err(e) => {
                let header = FrameHeader::peek(rest, HANDSHAKE_MAX_FRAME);
                let request_id = match &header {
                    Ok(Some(h)) if e.keeps_framing() => h.request_id,
                    _ => 0,
                };
                check_error_answer(&e, request_id);
                if !e.keeps_framing() {
                    return; // framing is lost: answer with request id 0 and close
                }
                let Ok(Some(h)) = header else {
                    panic!("{e:?} keeps framing but the header is {header:?}");
                };
                if h.opcode == Opcode::Hello as u8 {
                    return; // a failed HELLO closes the connection
                }
                // check_framing made sure the whole frame is buffered.
                rest = &rest[h.frame_len()..];
            }
        }
    }
}

/// Properties of one decoding of `buf` that hold whatever the limits: completeness,
/// prefixes, trailing bytes, and where errors are reported.
fn check_framing(buf: &[u8], got: &Decoded<'_>) {
    let header = FrameHeader::peek(buf, u32::MAX);
    match got {
        Ok(None) => match header {
            Ok(None) => assert!(buf.len() < HEADER_LEN),
            Ok(Some(h)) => assert!(h.frame_len() > buf.len(), "whole frame {h:?} not decoded"),
            Err(e) => panic!("Ok(None) for a buffer whose header fails with {e:?}"),
        },
        Ok(Some((frame, used))) => {
            let Ok(Some(h)) = header else {
                panic!("a frame decoded from a buffer whose header is {header:?}");
            };
            assert_eq!(*used, h.frame_len());
            assert!(*used <= buf.len());
            assert_eq!(frame.request_id, h.request_id);
            assert_eq!(frame.message.opcode() as u8, h.opcode);
            // The decoding depends on the frame's bytes alone, and needs all of them.
            let exact = decode_frame(&buf[..*used], u32::MAX);
            assert_same(&exact, got, "bytes after the frame");
            for cut in 0..*used {
                assert_eq!(
                    decode_frame(&buf[..cut], u32::MAX),
                    Ok(None),
                    "prefix of {cut} bytes"
                );
            }
        }
        Err(
            DecodeError::FrameTooLarge { declared, .. } | DecodeError::FrameTooSmall { declared },
        ) => {
            assert_eq!(buf.first_chunk::<4>(), Some(&declared.to_le_bytes()));
        }
        Err(e) => {
            // Errors inside the frame are reported only once it is whole.
            assert!(e.keeps_framing(), "{e:?}");
            let Ok(Some(h)) = header else {
                panic!("{e:?} for a buffer whose header is {header:?}");
            };
            assert!(
                h.frame_len() <= buf.len(),
                "{e:?} before the frame is whole"
            );
            let known = Opcode::from_u8(h.opcode).is_some();
            assert_eq!(matches!(e, DecodeError::UnknownOpcode(_)), !known, "{e:?}");
            if let DecodeError::UnsupportedVersion { server, .. } = e {
                assert_eq!(h.opcode, Opcode::Hello as u8);
                assert_eq!(*server, PROTOCOL_VERSION);
            }
            if let DecodeError::TrailingBytes { extra } = e {
                assert!(*extra > 0 && *extra <= h.frame_len() - HEADER_LEN);
            }
        }
    }
    if let Err(e) = got {
        let request_id = match header {
            Ok(Some(h)) if e.keeps_framing() => h.request_id,
            _ => 0,
        };
        check_error_answer(e, request_id);
    }
}

/// `with_limits` is `base` (decoded with the same frame limit) except that an `INCR`
/// declaring more than `max_events` events is refused as such.
fn check_batch_limit(data: &[u8], base: &Decoded<'_>, with_limits: &Decoded<'_>, max_events: u32) {
    if let Err(DecodeError::BatchTooLarge { declared, max }) = with_limits {
        assert_eq!(*max, max_events);
        assert!(*declared > max_events);
        assert_eq!(data.get(4), Some(&(Opcode::Incr as u8)));
        match base {
            Err(_) => {} // the count is read before whatever is wrong further on
            Ok(Some((frame, _))) => {
                let Message::Request(Request::Incr(incr)) = &frame.message else {
                    panic!("BatchTooLarge for {frame:?}");
                };
                assert_eq!(incr.events.len(), *declared as usize);
            }
            Ok(None) => panic!("BatchTooLarge for an incomplete frame"),
        }
        return;
    }
    if let Ok(Some((frame, _))) = base {
        if let Message::Request(Request::Incr(incr)) = &frame.message {
            assert!(
                incr.events.len() <= max_events as usize,
                "an INCR of {} events passed max_batch_events {max_events}",
                incr.events.len()
            );
        }
    }
    assert_same(with_limits, base, "a batch limit the frame respects");
}

/// Re-encodes a decoded frame and checks that it decodes, under the limits it was
/// decoded with, to the same message, and that the encoding is a fixed point.
fn check_reencoding(frame: &Frame<'_>, max_frame: u32, max_batch_events: u32) {
    let once = encode(frame);
    let limits = Limits {
        max_frame,
        max_batch_events,
        max_aliases: 0,
    };
    let again = match decode_frame_with_limits(&once, &limits) {
        Ok(Some((again, used))) => {
            assert_eq!(used, once.len(), "re-encoded {frame:?}");
            again
        }
        other => panic!("{frame:?} re-encodes to {once:02x?}, which decodes to {other:?}"),
    };
    assert!(
        same_frame(&again, frame),
        "{frame:?} came back as {again:?}"
    );
    assert_eq!(
        encode(&again),
        once,
        "the encoding of {frame:?} is not a fixed point"
    );
}

/// The `ERROR` a server answers `e` with fits the handshake limit and decodes back.
fn check_error_answer(e: &DecodeError, request_id: u32) {
    let reply = ErrorReply::from_decode_error(e);
    assert_eq!(reply.error_code(), Some(e.error_code()));
    check_answer(request_id, &Response::Error(reply));
}

fn check_answer(request_id: u32, response: &Response<'_>) {
    let mut out = BytesMut::new();
    encode_response(request_id, response, &mut out);
    match decode_frame(&out, HANDSHAKE_MAX_FRAME) {
        Ok(Some((frame, used))) => {
            assert_eq!(used, out.len());
            assert_eq!(frame.request_id, request_id);
            assert_eq!(&frame.message, &Message::Response(response.clone()));
        }
        other => panic!("the answer {response:?} decodes to {other:?}"),
    }
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(frame, &mut out);
    out.to_vec()
}

/// Equal frames, where a NaN point value (which never equals itself) counts as equal to
/// a NaN with the same bits.
fn same_frame(a: &Frame<'_>, b: &Frame<'_>) -> bool {
    #[allow(clippy::eq_op)] // deliberately: a frame holding a NaN is not equal to itself
    let has_nan = a != a;
    a == b || (has_nan && encode(a) == encode(b))
}

fn assert_same(got: &Decoded<'_>, expected: &Decoded<'_>, context: &str) {
    let same = match (got, expected) {
        (Ok(Some((a, used_a))), Ok(Some((b, used_b)))) => used_a == used_b && same_frame(a, b),
        _ => got == expected,
    };
    assert!(same, "{context}: got {got:?}, expected {expected:?}");
}

/// Valid frames of every opcode (several for the richer messages), encoded: seeds for
/// both fuzz targets' corpora. Written out by `cargo run -p tallydb-protocol --example
/// fuzz_seeds`.
pub fn seed_frames() -> Vec<(&'static str, Vec<u8>)> {
    seeds::all()
        .into_iter()
        .map(|(name, frame)| (name, encode(&frame)))
        .collect()
}

/// `HELLO` payloads (not frames) for the `handshake` corpus: valid, another version,
/// names and tokens at their limits.
pub fn seed_hello_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let name = "n".repeat(MAX_CLIENT_NAME_LEN);
    let token = vec![0xAB; MAX_TOKEN_LEN];
    let hellos = [
        ("hello-payload", Hello::new("web-1", b"s3cr3t")),
        ("hello-payload-empty", Hello::new("", b"")),
        ("hello-payload-max", Hello::new(&name, &token)),
        (
            "hello-payload-version-2",
            Hello {
                protocol_version: 2,
                ..Hello::new("web-1", b"")
            },
        ),
    ];
    hellos
        .into_iter()
        .map(|(label, hello)| {
            let frame = encode(&Frame {
                request_id: 1,
                message: Message::Request(Request::Hello(hello)),
            });
            (label, frame[HEADER_LEN..].to_vec())
        })
        .collect()
}

mod seeds {
    use std::borrow::Cow;

    use crate::*;

    fn req(request_id: u32, r: Request<'static>) -> Frame<'static> {
        Frame {
            request_id,
            message: Message::Request(r),
        }
    }

    fn resp(request_id: u32, r: Response<'static>) -> Frame<'static> {
        Frame {
            request_id,
            message: Message::Response(r),
        }
    }

    fn metric() -> Selector<'static> {
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

    const FROM: i64 = 1_700_000_000_000;
    const TO: i64 = 1_700_086_400_000;

    pub(super) fn all() -> Vec<(&'static str, Frame<'static>)> {
        vec![
            (
                "hello",
                req(1, Request::Hello(Hello::new("web-1", b"s3cr3t"))),
            ),
            ("ping", req(2, Request::Ping)),
            (
                "incr-producer",
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
                                timestamp_ms: Some(FROM),
                                event_id: Some(b"evt-0001"),
                            },
                        ],
                        per_event: false,
                    }),
                ),
            ),
            (
                "incr-empty",
                req(
                    4,
                    Request::Incr(Incr {
                        producer: None,
                        events: vec![],
                        per_event: false,
                    }),
                ),
            ),
            (
                "incr-aliases",
                req(
                    5,
                    Request::Incr(Incr {
                        producer: None,
                        events: (0..8).map(|a| Event::unit(SeriesRef::Alias(a))).collect(),
                        per_event: false,
                    }),
                ),
            ),
            (
                "range-metric",
                req(
                    6,
                    Request::Range(RangeQuery {
                        selector: metric(),
                        from_ms: FROM,
                        to_ms: TO,
                        step: Step::Millis(3_600_000),
                        function: Function::Sum,
                    }),
                ),
            ),
            (
                "range-exact-auto",
                req(
                    7,
                    Request::Range(RangeQuery {
                        selector: Selector::Exact("ad_clicks{ad=ad001}"),
                        from_ms: FROM,
                        to_ms: TO,
                        step: Step::Auto,
                        function: Function::Rate,
                    }),
                ),
            ),
            (
                "total-prefix",
                req(
                    8,
                    Request::Total(TotalQuery {
                        selector: Selector::Prefix("com.amazon."),
                        from_ms: FROM,
                        to_ms: TO,
                    }),
                ),
            ),
            (
                "top-group-by",
                req(
                    9,
                    Request::Top(TopQuery {
                        selector: metric(),
                        from_ms: FROM,
                        to_ms: TO,
                        n: 10,
                        group_by: Some("country"),
                    }),
                ),
            ),
            (
                "top",
                req(
                    10,
                    Request::Top(TopQuery {
                        selector: Selector::Prefix(""),
                        from_ms: 0,
                        to_ms: -1,
                        n: 0,
                        group_by: None,
                    }),
                ),
            ),
            (
                "series",
                req(
                    11,
                    Request::Series(SeriesQuery {
                        selector: Selector::Prefix("ad_"),
                        limit: 100,
                    }),
                ),
            ),
            ("stats", req(12, Request::Stats)),
            ("flush", req(13, Request::Flush)),
            ("compact", req(14, Request::Compact)),
            (
                "snapshot",
                req(
                    15,
                    Request::Snapshot(Snapshot {
                        target_dir: "/backups/2024-01-01",
                    }),
                ),
            ),
            (
                "hello-ok",
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
                        role: Role::Write,
                    }),
                ),
            ),
            ("pong", resp(2, Response::Pong)),
            (
                "incr-ok",
                resp(
                    3,
                    Response::IncrOk(IncrOk {
                        applied: 2,
                        duplicates: 1,
                        duplicate_batch: false,
                    }),
                ),
            ),
            (
                "range-ok-int",
                resp(
                    6,
                    Response::RangeOk(RangeOk {
                        tiers: Tiers::MINUTE | Tiers::HOUR,
                        closed_until_ms: TO,
                        step_ms: 3_600_000,
                        groups: RangeGroups::Int(vec![Group {
                            labels: vec![Label {
                                name: "ad",
                                value: "ad001",
                            }],
                            points: vec![
                                Point {
                                    ts_ms: FROM,
                                    value: 5,
                                },
                                Point {
                                    ts_ms: FROM + 3_600_000,
                                    value: -2,
                                },
                            ],
                        }]),
                    }),
                ),
            ),
            (
                "range-ok-float",
                resp(
                    7,
                    Response::RangeOk(RangeOk {
                        tiers: Tiers::DAY,
                        closed_until_ms: TO,
                        step_ms: 60_000,
                        groups: RangeGroups::Float(vec![
                            Group {
                                labels: vec![],
                                points: vec![Point {
                                    ts_ms: FROM,
                                    value: 0.5,
                                }],
                            },
                            Group {
                                labels: vec![],
                                points: vec![Point {
                                    ts_ms: FROM,
                                    value: f64::NAN,
                                }],
                            },
                        ]),
                    }),
                ),
            ),
            (
                "total-ok",
                resp(
                    8,
                    Response::TotalOk(TotalOk {
                        sum: 42,
                        count: 40,
                        from_ms: FROM,
                        to_ms: TO,
                        tiers: Tiers::HOUR,
                        closed_until_ms: TO,
                    }),
                ),
            ),
            (
                "top-ok",
                resp(
                    9,
                    Response::TopOk(TopOk {
                        tiers: Tiers::MINUTE,
                        closed_until_ms: TO,
                        entries: vec![
                            TopEntry {
                                name: "US",
                                sum: 100,
                                count: 90,
                            },
                            TopEntry {
                                name: "FR",
                                sum: 7,
                                count: 7,
                            },
                        ],
                    }),
                ),
            ),
            (
                "series-ok",
                resp(
                    11,
                    Response::SeriesOk(SeriesOk {
                        keys: vec!["ad_clicks{ad=ad001}", "ad_views{ad=ad001}"],
                        truncated: true,
                    }),
                ),
            ),
            (
                "stats-ok",
                resp(
                    12,
                    Response::StatsOk(StatsOk {
                        entries: vec![
                            Stat {
                                name: "wal.fsyncs",
                                value: 12,
                            },
                            Stat {
                                name: "series",
                                value: 3,
                            },
                        ],
                    }),
                ),
            ),
            (
                "admin-ok",
                resp(13, Response::AdminOk(AdminOk::new("flushed 3 series"))),
            ),
            (
                "error",
                resp(
                    1,
                    Response::Error(ErrorReply {
                        code: ErrorCode::UnsupportedVersion.code(),
                        retryable: false,
                        message: Cow::Borrowed("unsupported protocol version 2"),
                    }),
                ),
            ),
            (
                "error-unknown-code",
                resp(
                    0,
                    Response::Error(ErrorReply {
                        code: 999,
                        retryable: true,
                        message: Cow::Borrowed(""),
                    }),
                ),
            ),
        ]
    }
}
