//! The manifest: which segment files are live, up to which WAL position their
//! contents reach (the checkpoint), and the committed length of the series
//! dictionary. Replaced atomically (temp file, fsync, rename, fsync directory).

use std::path::Path;

use crate::coding::{crc32, put_i64, put_u32, put_u64, Reader};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, PREFIX_LEN};
use crate::fs::{write_atomic, FileSystem};
use crate::segment::SegmentMeta;
use crate::time::Tier;

/// Bytes of one segment entry.
const SEGMENT_ENTRY_LEN: usize = 8 + 1 + 8 + 8 + 8 + 8;

/// The durable description of the live data set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every WAL record with an LSN at or below this is contained in the segments.
    pub checkpoint_lsn: u64,
    /// The next segment id to issue.
    pub next_segment_id: u64,
    /// Bytes of `series.dict` that are committed.
    pub dict_len: u64,
    /// Series ids defined in those bytes.
    pub dict_count: u32,
    /// LSN naming the dedup checkpoint file (`dedup-<lsn>.state`), 0 for none.
    pub dedup_lsn: u64,
    /// Live segments.
    pub segments: Vec<SegmentMeta>,
}

impl Manifest {
    /// Serialises the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.segments.len() * SEGMENT_ENTRY_LEN);
        format::put_prefix(&mut out, FileKind::Manifest, [0, 0]);
        put_u64(&mut out, self.checkpoint_lsn);
        put_u64(&mut out, self.next_segment_id);
        put_u64(&mut out, self.dict_len);
        put_u32(&mut out, self.dict_count);
        put_u64(&mut out, self.dedup_lsn);
        put_u32(&mut out, self.segments.len() as u32);
        for s in &self.segments {
            put_u64(&mut out, s.id);
            out.push(s.tier.index() as u8);
            put_u64(&mut out, s.cells);
            put_i64(&mut out, s.min_bucket);
            put_i64(&mut out, s.max_bucket);
            put_u64(&mut out, s.bytes);
        }
        let crc = crc32(&[&out]);
        put_u32(&mut out, crc);
        out
    }

    /// Parses a manifest image; `path` is used in errors.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let bad = |at: usize, reason: String| Error::corrupt(path, at as u64, reason);
        if bytes.len() < PREFIX_LEN + 4 {
            return Err(bad(0, "file too short for a manifest".into()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let crc = crc32(&[body]);
        if crc != stored {
            return Err(bad(
                body.len(),
                format!("checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        // The checksum covers the header: an unknown version is a newer
        // file, not damage.
        format::read_prefix(body, FileKind::Manifest).map_err(|e| e.at(path))?;
        let mut r = Reader::new(body);
        let f = |r: &Reader<'_>, e: crate::coding::DecodeFault| bad(r.position(), e.to_string());
        r.take(PREFIX_LEN).map_err(|e| f(&r, e))?;
        let mut m = Manifest {
            checkpoint_lsn: r.u64().map_err(|e| f(&r, e))?,
            next_segment_id: r.u64().map_err(|e| f(&r, e))?,
            dict_len: r.u64().map_err(|e| f(&r, e))?,
            dict_count: r.u32().map_err(|e| f(&r, e))?,
            dedup_lsn: r.u64().map_err(|e| f(&r, e))?,
            segments: Vec::new(),
        };
        let n = r.u32().map_err(|e| f(&r, e))? as usize;
        if n.saturating_mul(SEGMENT_ENTRY_LEN) != r.remaining() {
            return Err(bad(
                r.position(),
                "segment count disagrees with the file size".into(),
            ));
        }
        for _ in 0..n {
            let at = r.position();
            let id = r.u64().map_err(|e| f(&r, e))?;
            let tier = Tier::from_index(r.u8().map_err(|e| f(&r, e))?)
                .ok_or_else(|| bad(at + 8, "unknown tier".into()))?;
            m.segments.push(SegmentMeta {
                id,
                tier,
                cells: r.u64().map_err(|e| f(&r, e))?,
                min_bucket: r.i64().map_err(|e| f(&r, e))?,
                max_bucket: r.i64().map_err(|e| f(&r, e))?,
                bytes: r.u64().map_err(|e| f(&r, e))?,
            });
            if id >= m.next_segment_id {
                return Err(bad(
                    at,
                    format!(
                        "segment id {id} is not below the next id {}",
                        m.next_segment_id
                    ),
                ));
            }
        }
        Ok(m)
    }

    /// Reads the manifest at `path`.
    pub fn load(fs: &dyn FileSystem, path: &Path) -> Result<Manifest> {
        let bytes = fs
            .read(path)
            .map_err(|e| Error::io("read manifest", path, e))?;
        Self::decode(path, &bytes)
    }

    /// Publishes the manifest atomically at `path`.
    pub fn store(&self, fs: &dyn FileSystem, path: &Path) -> Result<()> {
        write_atomic(fs, path, &self.encode()).map_err(|e| Error::io("write manifest", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_every_flipped_byte() {
        let m = Manifest {
            checkpoint_lsn: 42,
            next_segment_id: 9,
            dict_len: 100,
            dict_count: 3,
            dedup_lsn: 42,
            segments: vec![SegmentMeta {
                id: 4,
                tier: Tier::Hour,
                cells: 10,
                min_bucket: -3,
                max_bucket: 77,
                bytes: 4096,
            }],
        };
        let bytes = m.encode();
        let p = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(p, &bytes).expect("decodes"), m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Manifest::decode(p, &b).is_err(), "flip at {i} not caught");
        }
    }
}
