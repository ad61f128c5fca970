//! The write-ahead log: segmented append-only files of checksummed records, one
//! record per batch so that a batch is applied all or nothing.
//!
//! File: `header(24) | record*`. Record: `crc32(4) | len(4) | type(1) | payload(len)`
//! where the CRC covers `len`, `type` and the payload, so a zero-filled tail never
//! passes. Recovery accepts only a torn tail: damage followed by a valid record is
//! corruption and is reported with file and offset.
//!
//! [`commit`] holds group commit: how buffered records become written and
//! fsynced, and the durability contract of each fsync policy.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::coding::{
    crc32, put_bytes, put_i64, put_ivarint, put_u32, put_u64, put_uvarint, DecodeFault, Reader,
};
use crate::dedup::EventId;
use crate::error::{Error, Result};
use crate::format::{self, FileKind};
use crate::fs::{FileSystem, WritableFile};
use crate::series::MAX_KEY_LEN;

pub mod commit;

pub use crate::format::WAL_MAGIC;
/// WAL format version written by this build.
pub const WAL_VERSION: u16 = FileKind::Wal.current().number();
/// File header size.
pub const WAL_HEADER_LEN: usize = 24;
/// Record header size: crc, len, type.
pub const RECORD_HEADER_LEN: usize = 9;
/// Largest record payload accepted when reading.
pub const MAX_RECORD_LEN: u32 = 256 << 20;
/// Record type of a batch of events.
pub const RECORD_BATCH: u8 = 1;

const FLAG_PRODUCER: u8 = 1;
const FLAG_ID_EXPIRY: u8 = 2;
const EVENT_COVERAGE_MASK: u8 = 0b0111;
const EVENT_HAS_ID: u8 = 0b1000;

/// File name of WAL file number `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// Parses a name made by [`file_name`].
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The producer part of a batch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerMark {
    /// Producer id.
    pub id: u64,
    /// Sequence of the batch.
    pub seq: u64,
    /// Events the batch counted.
    pub applied: u32,
    /// Events skipped as duplicate ids.
    pub duplicates: u32,
}

/// One counted event as logged: time already resolved, tiers already chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Series id.
    pub series: u32,
    /// Event time (ms).
    pub ts: i64,
    /// The increment.
    pub delta: i64,
    /// Tiers the event is counted in (bitmask of `Tier::bit`).
    pub coverage: u8,
    /// Event id digest, if the event carried one.
    pub id: Option<EventId>,
}

/// Header fields of a batch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Log sequence number, increasing by one per record.
    pub lsn: u64,
    /// When the engine accepted the batch (ms).
    pub accepted_at: i64,
    /// The producer sequence, if the batch had one.
    pub producer: Option<ProducerMark>,
    /// Expiry time of the event ids in this batch.
    pub id_expiry: Option<i64>,
}

/// A decoded batch record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Header fields.
    pub header: BatchHeader,
    /// Series first defined by this record: `(id, canonical key)`.
    pub new_series: Vec<(u32, String)>,
    /// Counted events.
    pub events: Vec<LoggedEvent>,
}

/// Appends one framed batch record to `out`.
pub fn encode_batch<'a>(
    out: &mut Vec<u8>,
    header: &BatchHeader,
    new_series: impl ExactSizeIterator<Item = (u32, &'a str)>,
    events: &[LoggedEvent],
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    put_u64(out, header.lsn);
    put_i64(out, header.accepted_at);
    let flags = if header.producer.is_some() {
        FLAG_PRODUCER
    } else {
        0
    } | if header.id_expiry.is_some() {
        FLAG_ID_EXPIRY
    } else {
        0
    };
    out.push(flags);
    if let Some(p) = header.producer {
        put_u64(out, p.id);
        put_u64(out, p.seq);
        put_u32(out, p.applied);
        put_u32(out, p.duplicates);
    }
    if let Some(e) = header.id_expiry {
        put_i64(out, e);
    }
    put_uvarint(out, new_series.len() as u64);
    for (id, key) in new_series {
        put_uvarint(out, u64::from(id));
        put_bytes(out, key.as_bytes());
    }
    put_uvarint(out, events.len() as u64);
    for e in events {
        put_uvarint(out, u64::from(e.series));
        let has_id = e.id.is_some();
        out.push((e.coverage & EVENT_COVERAGE_MASK) | if has_id { EVENT_HAS_ID } else { 0 });
        put_ivarint(out, e.ts.wrapping_sub(header.accepted_at));
        put_ivarint(out, e.delta);
        if let Some(id) = e.id {
            put_u64(out, id.0);
        }
    }
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8] = RECORD_BATCH;
    let crc = crc32(&[&out[start + 4..]]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the payload of a batch record.
pub fn decode_batch(payload: &[u8]) -> std::result::Result<BatchRecord, DecodeFault> {
    let mut r = Reader::new(payload);
    let lsn = r.u64()?;
    let accepted_at = r.i64()?;
    let flags = r.u8()?;
    let producer = if flags & FLAG_PRODUCER != 0 {
        Some(ProducerMark {
            id: r.u64()?,
            seq: r.u64()?,
            applied: r.u32()?,
            duplicates: r.u32()?,
        })
    } else {
        None
    };
    let id_expiry = if flags & FLAG_ID_EXPIRY != 0 {
        Some(r.i64()?)
    } else {
        None
    };
    let n = r.count(2)?;
    let mut new_series = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.uvarint32()?;
        let key = r.str(MAX_KEY_LEN)?;
        new_series.push((id, key.to_string()));
    }
    let n = r.count(4)?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let series = r.uvarint32()?;
        let f = r.u8()?;
        let ts = accepted_at.wrapping_add(r.ivarint()?);
        let delta = r.ivarint()?;
        let id = if f & EVENT_HAS_ID != 0 {
            Some(EventId(r.u64()?))
        } else {
            None
        };
        events.push(LoggedEvent {
            series,
            ts,
            delta,
            coverage: f & EVENT_COVERAGE_MASK,
            id,
        });
    }
    if !r.is_empty() {
        return Err(DecodeFault::BadLength);
    }
    Ok(BatchRecord {
        header: BatchHeader {
            lsn,
            accepted_at,
            producer,
            id_expiry,
        },
        new_series,
        events,
    })
}

/// The header of WAL file `seq`.
pub fn file_header(seq: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(WAL_HEADER_LEN);
    format::put_prefix(&mut h, FileKind::Wal, [0, 0]);
    put_u64(&mut h, seq);
    format::seal(&mut h);
    h
}

/// An open WAL file being appended to.
#[derive(Debug)]
pub struct WalFile {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    seq: u64,
    len: u64,
}

impl WalFile {
    /// Creates WAL file `seq` in `dir` with its header, durably (file and directory).
    ///
    /// A file of that number holding no record can only be left by an earlier
    /// attempt that failed half-way (records go only to files whose creation
    /// succeeded): it is replaced, so that a failed WAL rotation can be retried.
    /// A failed attempt removes what it created.
    pub fn create(fs: &dyn FileSystem, dir: &Path, seq: u64) -> Result<WalFile> {
        let path = dir.join(file_name(seq));
        if fs.exists(&path) && fs.len(&path).is_ok_and(|len| len <= WAL_HEADER_LEN as u64) {
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove unused wal", &path, e))?;
        }
        let mut file = fs
            .create(&path)
            .map_err(|e| Error::io("create wal", &path, e))?;
        let header = file_header(seq);
        let written = file
            .write_all(&header)
            .and_then(|_| file.sync())
            .map_err(|e| Error::io("write wal", &path, e))
            .and_then(|_| {
                fs.sync_dir(dir)
                    .map_err(|e| Error::io("sync directory", dir, e))
            });
        if let Err(e) = written {
            drop(file);
            let _ = fs.remove_file(&path);
            return Err(e);
        }
        Ok(WalFile {
            file,
            path,
            seq,
            len: header.len() as u64,
        })
    }

    /// Appends encoded records (one `write` call).
    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Makes every appended byte durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync()
    }

    /// File number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len <= WAL_HEADER_LEN as u64
    }
}

/// What a scan of one WAL file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileScan {
    /// Payload ranges of the valid records, in order.
    pub records: Vec<Range<usize>>,
    /// Bytes of valid data (header plus records).
    pub valid_len: u64,
    /// Offset where an invalid tail starts, if the file has one.
    pub torn_at: Option<u64>,
}

fn record_at(bytes: &[u8], at: usize) -> Option<Range<usize>> {
    let head = bytes.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
    let stored = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD_LEN || head[8] != RECORD_BATCH {
        return None;
    }
    let end = at
        .checked_add(RECORD_HEADER_LEN)?
        .checked_add(len as usize)?;
    let covered = bytes.get(at + 4..end)?;
    (crc32(&[covered]) == stored).then_some(at + RECORD_HEADER_LEN..end)
}

/// Scans a WAL file image. A damaged or incomplete tail is reported in
/// [`FileScan::torn_at`]; damage followed by any valid record is an error.
pub fn scan_file(path: &Path, bytes: &[u8], expected_seq: u64) -> Result<FileScan> {
    if bytes.len() < WAL_HEADER_LEN {
        return Ok(FileScan {
            records: Vec::new(),
            valid_len: 0,
            torn_at: Some(0),
        });
    }
    let header = &bytes[..WAL_HEADER_LEN];
    if format::check_seal(header).is_err() {
        // A header that never reached the disk intact is a torn file, unless
        // records follow it.
        if find_any_record(bytes, WAL_HEADER_LEN).is_some() {
            return Err(Error::corrupt(path, 0, "WAL header checksum mismatch"));
        }
        return Ok(FileScan {
            records: Vec::new(),
            valid_len: 0,
            torn_at: Some(0),
        });
    }
    format::read_prefix(header, FileKind::Wal).map_err(|f| f.at(path))?;
    let seq = u64::from_le_bytes([
        header[12], header[13], header[14], header[15], header[16], header[17], header[18],
        header[19],
    ]);
    if seq != expected_seq {
        return Err(Error::corrupt(
            path,
            12,
            format!("file number {seq} does not match its name ({expected_seq})"),
        ));
    }
    let mut records = Vec::new();
    let mut at = WAL_HEADER_LEN;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some(r) => {
                at = r.end;
                records.push(r);
            }
            None => {
                if let Some(next) = find_any_record(bytes, at + 1) {
                    return Err(Error::corrupt(
                        path,
                        at as u64,
                        format!("damaged WAL record followed by a valid record at offset {next}"),
                    ));
                }
                return Ok(FileScan {
                    records,
                    valid_len: at as u64,
                    torn_at: Some(at as u64),
                });
            }
        }
    }
    Ok(FileScan {
        records,
        valid_len: at as u64,
        torn_at: None,
    })
}

/// Offset of the first valid record at or after `from`, if any.
fn find_any_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(RECORD_HEADER_LEN - 1))
        .find(|&at| record_at(bytes, at).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lsn: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let events = [
            LoggedEvent {
                series: 0,
                ts: 1_000,
                delta: 1,
                coverage: 7,
                id: None,
            },
            LoggedEvent {
                series: 1,
                ts: 900,
                delta: -5,
                coverage: 6,
                id: Some(EventId(99)),
            },
        ];
        encode_batch(
            &mut out,
            &BatchHeader {
                lsn,
                accepted_at: 1_000,
                producer: Some(ProducerMark {
                    id: 3,
                    seq: 4,
                    applied: 2,
                    duplicates: 0,
                }),
                id_expiry: Some(5_000),
            },
            [(1u32, "b{x=y}")].into_iter(),
            &events,
        );
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = sample(7);
        let rec = decode_batch(&bytes[RECORD_HEADER_LEN..]).expect("decodes");
        assert_eq!(rec.header.lsn, 7);
        assert_eq!(rec.new_series, vec![(1, "b{x=y}".to_string())]);
        assert_eq!(rec.events[1].ts, 900);
        assert_eq!(rec.events[1].id, Some(EventId(99)));
        assert_eq!(rec.events[1].coverage, 6);
    }

    #[test]
    fn zero_tail_is_torn_and_mid_file_damage_is_corruption() {
        let p = Path::new("w.wal");
        let mut file = file_header(1);
        file.extend(sample(1));
        let first_end = file.len();
        file.extend(sample(2));
        let mut zeros = file.clone();
        zeros.extend([0u8; 64]);
        let scan = scan_file(p, &zeros, 1).expect("torn tail is fine");
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.torn_at, Some(file.len() as u64));
        let mut damaged = file.clone();
        damaged[WAL_HEADER_LEN + 12] ^= 1;
        match scan_file(p, &damaged, 1) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, WAL_HEADER_LEN as u64),
            other => panic!("expected corruption, got {other:?}"),
        }
        let mut last_damaged = file.clone();
        last_damaged[first_end + 12] ^= 1;
        let scan = scan_file(p, &last_damaged, 1).expect("damaged last record is a torn tail");
        assert_eq!(scan.records.len(), 1);
        assert!(
            scan_file(p, &file, 2).is_err(),
            "wrong file number must be refused"
        );
    }
}
