//! What a data directory holds, for `tally-admin inspect`: tiers, segments with
//! their time ranges, sizes and compression, series, WAL and checkpoint.
//! Read-only; built on [`crate::offline::DataDir`].

use crate::offline::DataDir;
use crate::segment::{Segment, BLOCK_HEADER_LEN, FOOTER_LEN, HEADER_LEN, INDEX_ENTRY_LEN};
use crate::time::{Retention, Tier};

/// Bytes a cell would take in a plain fixed-width row (series u32, bucket i64,
/// sum i64, count u64, min i64, max i64): the baseline of the compression ratio.
pub const PLAIN_CELL_BYTES: u64 = 4 + 8 * 5;

/// One segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: u64,
    /// File, relative to the data directory.
    pub file: String,
    /// Tier.
    pub tier: Tier,
    /// Cells.
    pub cells: u64,
    /// Distinct series.
    pub series: u32,
    /// Blocks, and how many of them are lz4 / zstd / uncompressed.
    pub blocks: u64,
    /// Blocks per codec: none, lz4, zstd.
    pub codecs: [u64; 3],
    /// File size.
    pub bytes: u64,
    /// Decompressed (columnar-encoded) size of the blocks.
    pub raw_bytes: u64,
    /// Start of the first bucket (ms).
    pub from_ms: i64,
    /// End of the last bucket (ms, exclusive).
    pub to_ms: i64,
}

/// Totals of one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierInfo {
    /// Tier.
    pub tier: Tier,
    /// Segments.
    pub segments: u64,
    /// Cells in segments.
    pub cells: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Decompressed block bytes.
    pub raw_bytes: u64,
    /// Cells from WAL records not yet flushed.
    pub unflushed_cells: u64,
    /// Time covered by segments: start of the oldest, end of the newest bucket.
    pub range_ms: Option<(i64, i64)>,
    /// Retention assumed (ms; `None` = forever).
    pub retention_ms: Option<i64>,
}

/// WAL figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalInfo {
    /// Files.
    pub files: u64,
    /// Bytes.
    pub bytes: u64,
    /// Valid records.
    pub records: u64,
    /// Records past the checkpoint (not yet in segments).
    pub unflushed_records: u64,
    /// Events in those.
    pub unflushed_events: u64,
    /// Last LSN found (the checkpoint if none follows it).
    pub last_lsn: u64,
    /// Torn tails: file, offset, bytes.
    pub torn_tails: Vec<(String, u64, u64)>,
}

/// The dedup checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupInfo {
    /// File name.
    pub file: String,
    /// File size.
    pub bytes: u64,
    /// Producers remembered.
    pub producers: u64,
    /// Event ids remembered.
    pub event_ids: u64,
}

/// Everything `inspect` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Checkpoint LSN.
    pub checkpoint_lsn: u64,
    /// Next segment id.
    pub next_segment_id: u64,
    /// Series known (committed plus defined in the WAL).
    pub series: u64,
    /// Series committed in `series.dict`.
    pub series_committed: u64,
    /// Committed bytes of `series.dict`.
    pub dict_bytes: u64,
    /// Per tier, finest first.
    pub tiers: Vec<TierInfo>,
    /// Every live segment, by tier then time.
    pub segments: Vec<SegmentInfo>,
    /// The WAL.
    pub wal: WalInfo,
    /// The dedup checkpoint, if any.
    pub dedup: Option<DedupInfo>,
}

impl Inspection {
    /// Total bytes of segment files.
    pub fn segment_bytes(&self) -> u64 {
        self.tiers.iter().map(|t| t.bytes).sum()
    }
    /// Total cells in segments.
    pub fn segment_cells(&self) -> u64 {
        self.tiers.iter().map(|t| t.cells).sum()
    }
}

fn segment_info(s: &Segment) -> SegmentInfo {
    let m = s.meta();
    let bytes = s.bytes();
    let mut raw = 0u64;
    let mut codecs = [0u64; 3];
    for b in s.blocks() {
        let at = b.offset as usize;
        if let Some(h) = bytes.get(at..at + BLOCK_HEADER_LEN) {
            if let Some(slot) = codecs.get_mut(h[0] as usize) {
                *slot += 1;
            }
            raw += u64::from(u32::from_le_bytes([h[1], h[2], h[3], h[4]]));
        }
    }
    SegmentInfo {
        id: m.id,
        file: format!(
            "{}/{}",
            crate::engine::SEGMENTS_DIR,
            crate::segment::file_name(m.id)
        ),
        tier: m.tier,
        cells: m.cells,
        series: s.series_count(),
        blocks: s.blocks().len() as u64,
        codecs,
        bytes: m.bytes,
        raw_bytes: raw,
        from_ms: m.tier.start_of(m.min_bucket),
        to_ms: m.tier.start_of(m.max_bucket.saturating_add(1)),
    }
}

/// Summarises a loaded data directory.
pub fn inspect(d: &DataDir, retention: &Retention) -> Inspection {
    let mut segments: Vec<SegmentInfo> = d.segments.iter().map(|s| segment_info(s)).collect();
    segments.sort_by_key(|s| (s.tier, s.from_ms, s.id));
    let tiers = Tier::ALL
        .iter()
        .map(|t| {
            let of: Vec<&SegmentInfo> = segments.iter().filter(|s| s.tier == *t).collect();
            TierInfo {
                tier: *t,
                segments: of.len() as u64,
                cells: of.iter().map(|s| s.cells).sum(),
                bytes: of.iter().map(|s| s.bytes).sum(),
                raw_bytes: of.iter().map(|s| s.raw_bytes).sum(),
                unflushed_cells: d.replay.memtable.rows(*t).len() as u64,
                range_ms: of
                    .iter()
                    .filter(|s| s.cells > 0)
                    .map(|s| (s.from_ms, s.to_ms))
                    .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))),
                retention_ms: retention.of(*t),
            }
        })
        .collect();
    let wal = WalInfo {
        files: d.wal_files.len() as u64,
        bytes: d.wal_files.iter().map(|w| w.bytes).sum(),
        records: d.wal_files.iter().map(|w| w.records).sum(),
        unflushed_records: d.replay.records,
        unflushed_events: d.replay.events,
        last_lsn: d.replay.last_lsn,
        torn_tails: d
            .wal_files
            .iter()
            .filter_map(|w| w.torn.map(|(at, n)| (w.name.clone(), at, n)))
            .collect(),
    };
    Inspection {
        checkpoint_lsn: d.manifest.checkpoint_lsn,
        next_segment_id: d.manifest.next_segment_id,
        series: u64::from(d.dict().len()),
        series_committed: u64::from(d.committed_series),
        dict_bytes: d.manifest.dict_len,
        tiers,
        segments,
        wal,
        dedup: d.dedup.as_ref().map(|(file, bytes, s)| DedupInfo {
            file: file.clone(),
            bytes: *bytes,
            producers: s.producers() as u64,
            event_ids: s.event_ids() as u64,
        }),
    }
}

/// Fixed overhead of a segment file besides its blocks' payloads: header,
/// footer, index entries and block headers.
pub fn segment_overhead(blocks: u64) -> u64 {
    (HEADER_LEN + FOOTER_LEN) as u64 + blocks * (INDEX_ENTRY_LEN + BLOCK_HEADER_LEN) as u64
}
