//! The engine-wide cache of decoded segment blocks ([`BlockCache`]):
//! decompressed, verified payloads indexed by series run
//! (`segment::BlockRuns`), shared by every query, so that repeated queries over
//! the same recent data skip the checksum, the decompression and the column
//! scan. Generic over what a decoded block is, so this module knows nothing
//! of the segment format; a query reaches it through its
//! `segment::BlockScratch`.
//!
//! Bounded in bytes and split into shards, each a FIFO queue with a second
//! chance for entries read since they were last considered for eviction
//! (CLOCK). Keys are `(segment id, block index)`; segment ids are never reused,
//! so entries of deleted segments are never hit again and simply age out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

/// Shards: independent locks, so concurrent queries rarely wait on each other.
const SHARDS: usize = 16;

type Key = (u64, usize);

/// What the cache holds: something that knows its size in memory.
pub trait Weigh {
    /// Bytes held, for the cache's bound.
    fn approx_bytes(&self) -> usize;
}

#[derive(Debug)]
struct Shard<V> {
    map: FxHashMap<Key, (Arc<V>, bool)>,
    queue: VecDeque<Key>,
    bytes: usize,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard {
            map: FxHashMap::default(),
            queue: VecDeque::new(),
            bytes: 0,
        }
    }
}

/// Decoded blocks shared by all queries of an engine, bounded in bytes, keyed
/// by `(segment id, block index)`.
#[derive(Debug)]
pub struct BlockCache<V> {
    shard_bytes: usize,
    shards: Vec<Mutex<Shard<V>>>,
}

impl<V: Weigh> BlockCache<V> {
    /// A cache holding at most about `capacity` bytes; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        BlockCache {
            shard_bytes: capacity / SHARDS,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard<V>> {
        let h = key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (key.1 as u64);
        let i = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached block `key`, marking it recently used.
    pub fn get(&self, key: Key) -> Option<Arc<V>> {
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
    pub fn insert(&self, key: Key, runs: Arc<V>) {
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

    /// A stand-in for a decoded block: its number and its size.
    #[derive(Debug, PartialEq, Eq)]
    struct Block(usize, usize);

    impl Weigh for Block {
        fn approx_bytes(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn stays_within_its_bound_and_keeps_blocks_in_use() {
        let one = 1000;
        let blocks = 300;
        // Room for about four blocks per shard.
        let cache = BlockCache::new(one * 4 * SHARDS + SHARDS);
        for i in 0..blocks {
            cache.insert((3, i), Arc::new(Block(i, one)));
            assert!(cache.get((3, 0)).is_some(), "block 0 evicted at {i}");
            assert!(cache.bytes() <= one * 4 * SHARDS + SHARDS);
        }
        let held = (0..blocks).filter(|i| cache.get((3, *i)).is_some()).count();
        assert!(held < blocks, "nothing was evicted");
        assert!(held >= 2 * SHARDS, "too little kept: {held}");
        assert_eq!(*cache.get((3, 0)).expect("block 0"), Block(0, one));
        // A block larger than a shard's share is not cached.
        cache.insert((4, 0), Arc::new(Block(0, one * 5)));
        assert!(cache.get((4, 0)).is_none());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = BlockCache::new(0);
        cache.insert((3, 0), Arc::new(Block(0, 1)));
        assert!(cache.get((3, 0)).is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
