//! WAL replay: the records after the checkpoint re-applied in LSN order, into a
//! memtable, the series dictionary and (for an engine) the dedup state. Shared by
//! recovery at open ([`crate::engine::Engine::open`]) and the read-only operator
//! tools ([`crate::offline`]), so both see exactly the same data.

use std::path::Path;

use crate::dedup::{AppliedSeq, DedupState};
use crate::dict::SeriesDict;
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::wal;

/// What one WAL file held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalFileInfo {
    /// Path relative to the data directory (`wal/<seq>.wal`).
    pub name: String,
    /// File number.
    pub seq: u64,
    /// File size.
    pub bytes: u64,
    /// Valid records in the file.
    pub records: u64,
    /// Records after the checkpoint (replayed).
    pub replayed: u64,
    /// Events in the replayed records.
    pub events: u64,
    /// LSN of the first and last valid record.
    pub lsns: Option<(u64, u64)>,
    /// A torn tail: offset where it starts and bytes after it.
    pub torn: Option<(u64, u64)>,
}

/// The WAL replayed into memory: what recovery does at open, and what the
/// operator tools read.
#[derive(Debug, Default)]
pub struct Replay {
    /// Dedup state brought up to date by the records, when replaying for an
    /// engine: producer sequences and event ids, with the producer idle time.
    pub dedup: Option<(DedupState, i64)>,
    /// Series: the committed dictionary plus definitions from the WAL.
    pub dict: SeriesDict,
    /// Cells of the records after the checkpoint.
    pub memtable: Memtable,
    /// The last LSN seen (the checkpoint if nothing follows it).
    pub last_lsn: u64,
    /// Records replayed.
    pub records: u64,
    /// Events replayed.
    pub events: u64,
    /// Largest `accepted_at` of any replayed record (the writer's clock).
    pub max_accepted_at: i64,
}

/// Valid tier masks: retention never shrinks from finer to coarser tiers, so an
/// event counted in a tier is counted in every coarser one.
pub fn coverage_is_valid(coverage: u8) -> bool {
    matches!(coverage, 0b111 | 0b110 | 0b100)
}

impl Replay {
    /// Starts from the committed dictionary at the checkpoint.
    pub fn new(dict: SeriesDict, checkpoint_lsn: u64) -> Replay {
        Replay {
            dict,
            last_lsn: checkpoint_lsn,
            max_accepted_at: i64::MIN,
            ..Replay::default()
        }
    }

    /// Also replays producer sequences and event ids into `dedup` (the checkpoint's
    /// state), expiring as the engine did when it accepted each batch.
    pub fn with_dedup(mut self, dedup: DedupState, producer_idle_ms: i64) -> Replay {
        self.dedup = Some((dedup, producer_idle_ms));
        self
    }

    /// Checks and replays one WAL file image. `rel` names it in errors and in the
    /// result; `last` says whether it is the newest file (only there is a torn
    /// tail normal). Any other damage is [`Error::Corrupt`] with the offset.
    pub fn file(
        &mut self,
        rel: &str,
        bytes: &[u8],
        seq: u64,
        checkpoint_lsn: u64,
        last: bool,
    ) -> Result<WalFileInfo> {
        let path = Path::new(rel);
        let mut info = WalFileInfo {
            name: rel.to_string(),
            seq,
            bytes: bytes.len() as u64,
            ..WalFileInfo::default()
        };
        let scan = wal::scan_file(path, bytes, seq)?;
        for range in &scan.records {
            let at = (range.start - wal::RECORD_HEADER_LEN) as u64;
            let rec = wal::decode_batch(&bytes[range.clone()])
                .map_err(|e| Error::corrupt(path, at, format!("undecodable batch record: {e}")))?;
            let lsn = rec.header.lsn;
            info.records += 1;
            info.lsns = Some(info.lsns.map_or((lsn, lsn), |(f, _)| (f, lsn)));
            if lsn <= checkpoint_lsn {
                continue;
            }
            if lsn != self.last_lsn + 1 {
                return Err(Error::corrupt(
                    path,
                    at,
                    format!(
                        "record LSN {lsn} follows {}: records are missing",
                        self.last_lsn
                    ),
                ));
            }
            self.last_lsn = lsn;
            for (id, key) in &rec.new_series {
                self.dict
                    .define(*id, key)
                    .map_err(|why| Error::corrupt(path, at, why))?;
            }
            for e in &rec.events {
                if e.series >= self.dict.len() {
                    return Err(Error::corrupt(
                        path,
                        at,
                        format!("event of undefined series {}", e.series),
                    ));
                }
                if !coverage_is_valid(e.coverage) {
                    return Err(Error::corrupt(
                        path,
                        at,
                        format!(
                            "event counted in tiers {:#05b}: a tier is skipped while a finer one counts it",
                            e.coverage
                        ),
                    ));
                }
                self.memtable.add(e.series, e.ts, e.delta, e.coverage);
            }
            if let Some((dedup, idle)) = &mut self.dedup {
                if let Some(exp) = rec.header.id_expiry {
                    // As `apply` did before deduplicating this batch: an id whose
                    // window had passed was forgotten, and is remembered again
                    // with this record's (later) expiry.
                    dedup.expire(rec.header.accepted_at, *idle);
                    for id in rec.events.iter().filter_map(|e| e.id) {
                        dedup.remember(id, exp);
                    }
                }
                if let Some(p) = rec.header.producer {
                    let applied = AppliedSeq {
                        seq: p.seq,
                        applied: p.applied,
                        duplicates: p.duplicates,
                    };
                    dedup.record_producer(p.id, applied, rec.header.accepted_at);
                }
            }
            self.max_accepted_at = self.max_accepted_at.max(rec.header.accepted_at);
            self.records += 1;
            self.events += rec.events.len() as u64;
            info.replayed += 1;
            info.events += rec.events.len() as u64;
        }
        if let Some(at) = scan.torn_at {
            if !last {
                return Err(Error::corrupt(
                    path,
                    at,
                    "damaged record in a WAL file that is not the last one",
                ));
            }
            info.torn = Some((at, bytes.len() as u64 - scan.valid_len));
        }
        Ok(info)
    }
}
