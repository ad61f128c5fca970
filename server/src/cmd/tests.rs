//! The dispatcher's tests: frame limits on answers, roles, storage error codes.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;
use crate::config::AuthConfig;
use tallydb_protocol::{decode_frame, IncrOk};
use tallydb_protocol::{encode_request, SeriesQuery};

fn shared(dir: &Path, max_frame: u32) -> Shared {
    let opts = storage::Options {
        background: false,
        ..storage::Options::default()
    };
    Shared {
        engine: Arc::new(Engine::open(dir, opts).unwrap()),
        limits: proto::Limits {
            max_frame,
            max_batch_events: 100,
            max_aliases: 16,
        },
        auth: Authenticator::new(&AuthConfig::default()),
        stats: ServerStats::default(),
        started: Instant::now(),
    }
}

fn answer(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Vec<u8> {
    let mut frame = BytesMut::new();
    encode_request(3, req, &mut frame);
    let mut out = BytesMut::new();
    handle_frame(shared, session, &frame, &mut out);
    out.to_vec()
}

fn error_of(bytes: &[u8]) -> (u32, u16, String) {
    let (frame, used) = decode_frame(bytes, u32::MAX).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "exactly one response frame");
    match frame.message {
        Message::Response(Response::Error(e)) => (frame.request_id, e.code, e.message.to_string()),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

#[test]
fn answers_too_large_for_the_frame_become_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path(), 4096);
    for i in 0..300 {
        shared
            .engine
            .series_id(&format!("a_rather_long_metric_name{{label=value{i:05}}}"))
            .unwrap();
    }
    let mut session = Session::new(Role::Read, AliasTable::new(16));
    let query = Request::Series(SeriesQuery {
        selector: proto::Selector::Prefix("a_rather_long_metric_name"),
        limit: 1000,
    });
    let (id, code, msg) = error_of(&answer(&shared, &mut session, &query));
    assert_eq!((id, code), (3, ErrorCode::InvalidArgument.code()));
    assert!(msg.contains("frame limit of 4096"), "{msg}");
    let small = Request::Series(SeriesQuery {
        selector: proto::Selector::Prefix("a_rather_long_metric_name"),
        limit: 3,
    });
    let out = answer(&shared, &mut session, &small);
    let (frame, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
    assert!(matches!(
        frame.message,
        Message::Response(Response::SeriesOk(ref s)) if s.keys.len() == 3 && s.truncated
    ));
}

#[test]
fn roles_are_enforced_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path(), 1 << 20);
    let mut session = Session::new(Role::Read, AliasTable::new(16));
    let incr = Request::Incr(proto::Incr {
        producer: None,
        events: vec![proto::Event::unit(proto::SeriesRef::Key("x"))],
        per_event: false,
    });
    let (_, code, msg) = error_of(&answer(&shared, &mut session, &incr));
    assert_eq!(code, ErrorCode::Forbidden.code());
    assert!(msg.contains("INCR requires the write role"), "{msg}");
    session.role = Role::Write;
    let (_, code, _) = error_of(&answer(&shared, &mut session, &Request::Compact));
    assert_eq!(code, ErrorCode::Forbidden.code());
    let out = answer(&shared, &mut session, &incr);
    let (frame, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
    assert!(matches!(
        frame.message,
        Message::Response(Response::IncrOk(IncrOk { applied: 1, .. }))
    ));
    assert_eq!(shared.stats.request_errors.load(Ordering::Relaxed), 2);
}

#[test]
fn storage_errors_map_to_protocol_codes() {
    let cases: Vec<(StorageError, ErrorCode)> = vec![
        (
            StorageError::TooOld {
                index: 0,
                ts: 0,
                oldest: 1,
            },
            ErrorCode::TooOld,
        ),
        (
            StorageError::TooFarInFuture {
                index: 0,
                ts: 9,
                now: 0,
                skew_ms: 1,
            },
            ErrorCode::TooFarInFuture,
        ),
        (
            StorageError::InvalidQuery("x".into()),
            ErrorCode::InvalidArgument,
        ),
        (
            StorageError::BatchTooLarge { events: 2, max: 1 },
            ErrorCode::BatchTooLarge,
        ),
        (
            StorageError::Poisoned {
                reason: "disk".into(),
            },
            ErrorCode::StorageUnavailable,
        ),
        (
            StorageError::io("write", "/x", std::io::Error::other("full")),
            ErrorCode::StorageUnavailable,
        ),
        (
            StorageError::DiskFull {
                reason: "write: no space".into(),
            },
            ErrorCode::StorageUnavailable,
        ),
        (StorageError::Closed, ErrorCode::ShuttingDown),
        (StorageError::corrupt("/x", 0, "bad"), ErrorCode::Internal),
    ];
    for (err, code) in cases {
        let reply = storage_error(&err);
        assert_eq!(reply.code, code.code(), "{err}");
        assert_eq!(reply.retryable, code.is_retryable());
        assert_eq!(reply.message, err.to_string());
    }
}
