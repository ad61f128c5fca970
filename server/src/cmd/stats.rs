//! `STATS`: server figures, the engine's then the server's, as dotted names.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tallydb_protocol as proto;
use tallydb_protocol::{encode_response, Response};

use super::{Handled, Shared};

/// Answers a `STATS`.
pub fn apply(shared: &Shared, id: u32, out: &mut BytesMut) -> Handled {
    let entries = stats(shared);
    let ok = proto::StatsOk {
        entries: entries
            .iter()
            .map(|(name, value)| proto::Stat {
                name,
                value: *value,
            })
            .collect(),
    };
    encode_response(id, &Response::StatsOk(ok), out);
    Ok(())
}

/// The `STATS` figures: the engine's, then the server's.
pub fn stats(shared: &Shared) -> Vec<(&'static str, u64)> {
    let s = shared.engine.stats();
    let st = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    vec![
        ("series", s.series),
        ("segments.minute", s.segments[0]),
        ("segments.hour", s.segments[1]),
        ("segments.day", s.segments[2]),
        ("segment_cells.minute", s.segment_cells[0]),
        ("segment_cells.hour", s.segment_cells[1]),
        ("segment_cells.day", s.segment_cells[2]),
        ("segment_bytes.minute", s.segment_bytes[0]),
        ("segment_bytes.hour", s.segment_bytes[1]),
        ("segment_bytes.day", s.segment_bytes[2]),
        ("memtable.cells", s.memtable_cells),
        ("memtable.bytes", s.memtable_bytes),
        ("wal.bytes", s.wal_bytes),
        ("wal.last_lsn", s.last_lsn),
        ("wal.synced_lsn", s.synced_lsn),
        ("wal.checkpoint_lsn", s.checkpoint_lsn),
        ("wal.fsyncs", s.wal_syncs),
        ("dedup.ids", s.dedup_ids),
        ("dedup.producers", s.producers),
        ("dedup.bytes", s.dedup_bytes),
        ("events.applied", s.events_applied),
        ("events.duplicates", s.duplicates_skipped),
        ("batches.applied", s.batches_applied),
        ("flushes", s.flushes),
        ("flush.micros", s.flush_micros),
        ("compactions", s.compactions),
        ("compaction.micros", s.compaction_micros),
        ("storage.poisoned", u64::from(s.poisoned)),
        ("storage.disk_full", u64::from(s.disk_full)),
        ("connections.open", load(&st.connections_open)),
        ("connections.total", load(&st.connections_total)),
        ("connections.refused", load(&st.connections_refused)),
        ("requests.total", load(&st.requests)),
        ("requests.errors", load(&st.request_errors)),
        ("uptime.seconds", shared.started.elapsed().as_secs()),
    ]
}
