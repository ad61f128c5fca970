//! The engine-wide cache of decoded segment blocks: decompressed, verified
//! payloads indexed by series run ([`BlockRuns`]), shared by every query, so that
//! repeated queries over the same recent data skip the checksum, the
//! decompression and the column scan.
//!
//! Bounded in bytes and split into shards, each a FIFO queue with a second
//! chance for entries read since they were last considered for eviction
//! (CLOCK). Keys are `(segment id, block index)`; segment ids are never reused,
//! so entries of deleted segments are never hit again and simply age out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::segment::BlockRuns;

/// Shards: independent locks, so concurrent queries rarely wait on each other.
const SHARDS: usize = 16;

type Key = (u64, usize);

#[derive(Debug, Default)]
struct Shard {
    map: FxHashMap<Key, (Arc<BlockRuns>, bool)>,
    queue: VecDeque<Key>,
    bytes: usize,
}

/// Decoded blocks shared by all queries of an engine, bounded in bytes.
#[derive(Debug)]
pub struct DecodedBlocks {
    shard_bytes: usize,
    shards: Vec<Mutex<Shard>>,
}

impl DecodedBlocks {
    /// A cache holding at most about `capacity` bytes; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        DecodedBlocks {
            shard_bytes: capacity / SHARDS,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        let h = key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (key.1 as u64);
        let i = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached block `key`, marking it recently used.
    pub fn get(&self, key: Key) -> Option<Arc<BlockRuns>> {
        if self.shard_bytes == 0 {
            return None;
        }
        let mut s = self.shard(key);
        s.map.get_mut(&key).map(|(runs, used)| {
            *used = true;
            Arc::clone(runs)
        })
    }

    /// Caches block `key`, evicting the oldest unused blocks beyond the bound.
    /// A block larger than a shard's share is not cached.
    pub fn insert(&self, key: Key, runs: Arc<BlockRuns>) {
        let size = runs.approx_bytes();
        if size > self.shard_bytes {
            return;
        }
        let mut guard = self.shard(key);
        let s = &mut *guard;
        if s.map.contains_key(&key) {
            return;
        }
        s.map.insert(key, (runs, false));
        s.queue.push_back(key);
        s.bytes += size;
        while s.bytes > self.shard_bytes {
            let Some(old) = s.queue.pop_front() else {
                break;
            };
            match s.map.get_mut(&old) {
                Some((_, used)) if *used => {
                    *used = false;
                    s.queue.push_back(old);
                }
                Some(_) => {
                    if let Some((r, _)) = s.map.remove(&old) {
                        s.bytes -= r.approx_bytes();
                    }
                }
                None => {}
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Cell;
    use crate::segment::{CellRow, Segment, SegmentWriter};
    use crate::testing::FaultFs;
    use crate::time::Tier;
    use std::path::Path;

    fn blocks(n: u32) -> Arc<Segment> {
        let fs = FaultFs::new();
        let mut w = SegmentWriter::create(&fs, Path::new("c.seg"), 3, Tier::Minute, i64::MIN)
            .expect("create");
        for s in 0..n {
            for b in 0..4096 {
                w.push(CellRow {
                    series: s,
                    bucket: b,
                    cell: Cell::of(i64::from(s) + 1),
                })
                .expect("push");
            }
        }
        w.finish().expect("finish");
        Segment::open(&fs, Path::new("c.seg")).expect("open")
    }

    #[test]
    fn stays_within_its_bound_and_keeps_blocks_in_use() {
        let seg = blocks(64);
        let one = seg.block_runs(0).expect("block").approx_bytes();
        // Room for about four blocks per shard.
        let cache = DecodedBlocks::new(one * 4 * SHARDS + SHARDS);
        for i in 0..seg.blocks().len() {
            cache.insert((3, i), Arc::new(seg.block_runs(i).expect("block")));
            assert!(cache.get((3, 0)).is_some(), "block 0 evicted at {i}");
            assert!(cache.bytes() <= one * 4 * SHARDS + SHARDS);
        }
        let held = (0..seg.blocks().len())
            .filter(|i| cache.get((3, *i)).is_some())
            .count();
        assert!(held < seg.blocks().len(), "nothing was evicted");
        let r = cache.get((3, 0)).expect("block 0");
        let mut got = Vec::new();
        r.scan(0, 10, 13, &mut |b, c| got.push((b, c.sum)))
            .expect("scan");
        assert_eq!(got, vec![(10, 1), (11, 1), (12, 1)]);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let seg = blocks(1);
        let cache = DecodedBlocks::new(0);
        cache.insert((3, 0), Arc::new(seg.block_runs(0).expect("block")));
        assert!(cache.get((3, 0)).is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
