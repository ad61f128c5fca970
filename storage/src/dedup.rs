//! Exactly-once state: the last sequence applied per producer, and the event ids
//! seen inside the dedup window.
//!
//! Event ids are remembered as 64-bit xxh3 digests with their expiry time: about
//! 40 bytes of memory per remembered id (hash-set slot plus expiry-queue entry,
//! measured in docs/STORAGE.md). Both maps are rebuilt from the checkpoint file
//! and the WAL after a crash.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::coding::{crc32, put_i64, put_u16, put_u32, put_u64, Reader};
use crate::format::{self, FileKind, PREFIX_LEN};

/// A 64-bit digest of a client's event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u64);

impl EventId {
    /// Digests the id bytes a client sent (xxh3-64, stable across versions).
    pub fn from_bytes(id: &[u8]) -> EventId {
        EventId(xxhash_rust::xxh3::xxh3_64(id))
    }
}

/// How many of a producer's most recent sequences are remembered with their
/// outcomes. A retry of one of them is answered as a duplicate; an unknown
/// sequence above the oldest of them was never applied and is applied now; one
/// below them is refused, since it can no longer be told apart.
pub const RECENT_SEQUENCES: usize = 64;

/// One applied batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppliedSeq {
    /// The batch's sequence.
    pub seq: u64,
    /// Events it counted.
    pub applied: u32,
    /// Events it skipped as duplicate ids.
    pub duplicates: u32,
}

/// What the engine remembers of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerState {
    /// When the producer was last heard from (ms).
    pub last_seen: i64,
    /// The most recent applied sequences, ascending, at most [`RECENT_SEQUENCES`].
    pub recent: VecDeque<AppliedSeq>,
}

/// How a producer's batch relates to what was applied before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not applied before: apply it.
    New,
    /// Applied before with this outcome: acknowledge again, count nothing.
    Duplicate(AppliedSeq),
    /// Older than every remembered sequence: cannot tell, refuse it.
    TooOld {
        /// The oldest sequence still remembered.
        oldest: u64,
    },
}

impl ProducerState {
    /// Classifies sequence `seq`.
    pub fn check(&self, seq: u64) -> SeqCheck {
        match self.recent.binary_search_by_key(&seq, |a| a.seq) {
            Ok(i) => SeqCheck::Duplicate(self.recent[i]),
            Err(0) if self.recent.len() >= RECENT_SEQUENCES => SeqCheck::TooOld {
                oldest: self.recent[0].seq,
            },
            Err(_) => SeqCheck::New,
        }
    }

    fn record(&mut self, applied: AppliedSeq, seen: i64) {
        self.last_seen = self.last_seen.max(seen);
        match self.recent.binary_search_by_key(&applied.seq, |a| a.seq) {
            Ok(i) => self.recent[i] = applied,
            Err(i) => self.recent.insert(i, applied),
        }
        while self.recent.len() > RECENT_SEQUENCES {
            self.recent.pop_front();
        }
    }
}

/// Producer sequences and the event-id window.
#[derive(Debug, Clone, Default)]
pub struct DedupState {
    producers: FxHashMap<u64, ProducerState>,
    ids: FxHashSet<u64>,
    expiry: VecDeque<(i64, u64)>,
}

impl DedupState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// State of a producer, if remembered.
    pub fn producer(&self, id: u64) -> Option<&ProducerState> {
        self.producers.get(&id)
    }

    /// Records that `producer` applied a batch at time `seen` (ms).
    pub fn record_producer(&mut self, producer: u64, applied: AppliedSeq, seen: i64) {
        self.producers
            .entry(producer)
            .or_default()
            .record(applied, seen);
    }

    /// Forgets event ids whose window has passed and producers idle too long.
    pub fn expire(&mut self, now: i64, producer_idle_ms: i64) {
        while let Some(&(exp, h)) = self.expiry.front() {
            if exp > now {
                break;
            }
            self.expiry.pop_front();
            self.ids.remove(&h);
        }
        if !self.producers.is_empty() {
            self.producers
                .retain(|_, p| p.last_seen.saturating_add(producer_idle_ms) > now);
        }
    }

    /// True if `id` was seen inside the window.
    #[inline]
    pub fn seen(&self, id: EventId) -> bool {
        self.ids.contains(&id.0)
    }

    /// Remembers `id` until `expires` (ms). Returns false if it was already known.
    #[inline]
    pub fn remember(&mut self, id: EventId, expires: i64) -> bool {
        if !self.ids.insert(id.0) {
            return false;
        }
        // Keep the queue ordered even if a replayed record carries an older time.
        match self.expiry.back() {
            Some(&(last, _)) if last > expires => {
                let at = self.expiry.partition_point(|(e, _)| *e <= expires);
                self.expiry.insert(at, (expires, id.0));
            }
            _ => self.expiry.push_back((expires, id.0)),
        }
        true
    }

    /// Remembered event ids.
    pub fn event_ids(&self) -> usize {
        self.ids.len()
    }

    /// Remembered producers.
    pub fn producers(&self) -> usize {
        self.producers.len()
    }

    /// Approximate memory held.
    pub fn approx_bytes(&self) -> usize {
        self.ids.capacity() * 9
            + self.expiry.capacity() * 16
            + self.producers.capacity() * (8 + std::mem::size_of::<ProducerState>() + 1)
            + self
                .producers
                .values()
                .map(|p| p.recent.capacity() * 16)
                .sum::<usize>()
    }

    /// Serialises the state into a checkpoint file image.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.producers.len() * 40 + self.expiry.len() * 16);
        format::put_prefix(&mut out, FileKind::DedupCheckpoint, [0, 0]);
        put_u64(&mut out, self.producers.len() as u64);
        let mut producers: Vec<_> = self.producers.iter().collect();
        producers.sort_unstable_by_key(|(id, _)| **id);
        for (id, p) in producers {
            put_u64(&mut out, *id);
            put_i64(&mut out, p.last_seen);
            put_u16(&mut out, p.recent.len() as u16);
            for a in &p.recent {
                put_u64(&mut out, a.seq);
                put_u32(&mut out, a.applied);
                put_u32(&mut out, a.duplicates);
            }
        }
        put_u64(&mut out, self.expiry.len() as u64);
        for (exp, h) in &self.expiry {
            put_i64(&mut out, *exp);
            put_u64(&mut out, *h);
        }
        let crc = crc32(&[&out]);
        put_u32(&mut out, crc);
        out
    }

    /// Parses a checkpoint file image; the error names the offset and the fault.
    pub fn decode(bytes: &[u8]) -> Result<DedupState, (u64, String)> {
        if bytes.len() < 16 + 4 {
            return Err((0, "file too short".into()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let crc = crc32(&[body]);
        if crc != stored {
            return Err((
                body.len() as u64,
                format!("checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        format::read_prefix(body, FileKind::DedupCheckpoint)
            .map_err(|f| (f.offset(), f.to_string()))?;
        let mut r = Reader::new(&body[8..]);
        let e = |r: &Reader<'_>, f: crate::coding::DecodeFault| {
            ((8 + r.position()) as u64, f.to_string())
        };
        r.take(PREFIX_LEN - 8).map_err(|f| e(&r, f))?;
        let mut s = DedupState::new();
        let n = r.u64().map_err(|f| e(&r, f))?;
        if n.saturating_mul(34) > r.remaining() as u64 {
            return Err((
                (8 + r.position()) as u64,
                "producer count exceeds the file".into(),
            ));
        }
        for _ in 0..n {
            let at = (8 + r.position()) as u64;
            let id = r.u64().map_err(|f| e(&r, f))?;
            let last_seen = r.i64().map_err(|f| e(&r, f))?;
            let k = r.u16().map_err(|f| e(&r, f))? as usize;
            if k == 0 || k > RECENT_SEQUENCES || k * 16 > r.remaining() {
                return Err((at, format!("producer {id} has {k} remembered sequences")));
            }
            let mut p = ProducerState {
                last_seen,
                recent: VecDeque::with_capacity(k),
            };
            for _ in 0..k {
                let a = AppliedSeq {
                    seq: r.u64().map_err(|f| e(&r, f))?,
                    applied: r.u32().map_err(|f| e(&r, f))?,
                    duplicates: r.u32().map_err(|f| e(&r, f))?,
                };
                if p.recent.back().is_some_and(|b| b.seq >= a.seq) {
                    return Err((at, format!("producer {id}: sequences not ascending")));
                }
                p.recent.push_back(a);
            }
            if s.producers.insert(id, p).is_some() {
                return Err((at, format!("producer {id} appears twice")));
            }
        }
        let n = r.u64().map_err(|f| e(&r, f))?;
        if n.saturating_mul(16) != r.remaining() as u64 {
            return Err((
                (8 + r.position()) as u64,
                "event id count disagrees with the file size".into(),
            ));
        }
        for _ in 0..n {
            let exp = r.i64().map_err(|f| e(&r, f))?;
            let h = r.u64().map_err(|f| e(&r, f))?;
            s.remember(EventId(h), exp);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_expires_in_order_and_survives_encoding() {
        let mut s = DedupState::new();
        assert!(s.remember(EventId::from_bytes(b"a"), 100));
        assert!(!s.remember(EventId::from_bytes(b"a"), 150));
        assert!(s.remember(EventId::from_bytes(b"b"), 200));
        let a = |seq, applied| AppliedSeq {
            seq,
            applied,
            duplicates: 0,
        };
        s.record_producer(7, a(3, 10), 50);
        s.record_producer(7, a(2, 1), 60);
        let p = s.producer(7).expect("remembered");
        assert_eq!(p.check(3), SeqCheck::Duplicate(a(3, 10)));
        assert_eq!(p.check(2), SeqCheck::Duplicate(a(2, 1)));
        assert_eq!(p.check(1), SeqCheck::New, "never applied: not a duplicate");
        assert_eq!(p.last_seen, 60);
        let copy = DedupState::decode(&s.encode()).expect("round trip");
        assert!(copy.seen(EventId::from_bytes(b"a")));
        assert_eq!(copy.producer(7), s.producer(7));
        let mut s = copy;
        s.expire(100, 1000);
        assert!(!s.seen(EventId::from_bytes(b"a")));
        assert!(s.seen(EventId::from_bytes(b"b")));
        s.expire(2000, 1000);
        assert_eq!(s.producers(), 0);
        assert_eq!(s.event_ids(), 0);
    }

    #[test]
    fn only_the_recent_window_is_remembered() {
        let mut s = DedupState::new();
        let n = RECENT_SEQUENCES as u64;
        for seq in (1..=n + 10).filter(|q| q % 2 == 0 || *q > 20) {
            s.record_producer(
                1,
                AppliedSeq {
                    seq,
                    applied: 1,
                    duplicates: 0,
                },
                0,
            );
        }
        let p = s.producer(1).expect("remembered").clone();
        assert_eq!(p.recent.len(), RECENT_SEQUENCES);
        let oldest = p.recent[0].seq;
        assert_eq!(p.check(oldest - 1), SeqCheck::TooOld { oldest });
        assert!(matches!(p.check(n + 10), SeqCheck::Duplicate(_)));
        assert_eq!(p.check(n + 11), SeqCheck::New);
        let copy = DedupState::decode(&s.encode()).expect("round trip");
        assert_eq!(copy.producer(1), Some(&p));
    }

    #[test]
    fn damaged_checkpoints_are_refused() {
        let mut s = DedupState::new();
        s.remember(EventId(1), 5);
        let bytes = s.encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(DedupState::decode(&b).is_err(), "flip at {i} not caught");
        }
        assert!(DedupState::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
