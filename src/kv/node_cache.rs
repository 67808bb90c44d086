//! An in-memory, write-through cache of decoded state tree chunks, so the per-block tree
//! update (`kv::state_tree`) and proofs read the chunks on their paths from memory instead of
//! doing an engine point lookup (memtables, then SSTables) and a decode (which recomputes up
//! to 7 hashes) for each.
//!
//! Invariant: every cached chunk equals the chunk the engine holds under the same key. It is
//! kept by changing the cache only in [`NodeCache::commit`], which `KvStore::apply_nowait`
//! calls after the engine accepted the block's batch, with the chunks the update read from
//! the engine (the state before the block) and the chunk writes of that same batch (which
//! override them). Anything else that replaces tree chunks (snapshot install, a tree rebuild)
//! or a failed write calls [`NodeCache::clear`]. Tree chunks are written only by those paths
//! of `KvStore`; a reopened store starts with an empty cache.
//!
//! Bound: at most [`TREE_CACHE_BYTES_MAX`] bytes, counted per entry as the decoded chunk's
//! memory plus [`ENTRY_OVERHEAD_BYTES`]. When full, new chunks are not admitted, and a cached
//! chunk that grows past the bound is dropped (the others are still updated or removed by
//! writes). The upper levels, which every block reads, are admitted first, so a store larger
//! than the cache still saves the reads of the shared part of the paths.

use std::collections::HashMap;
use std::sync::Arc;

use super::state_tree::Chunk;

/// Memory the cache may use (64 MiB: the whole tree of a store of about 300,000 entries).
pub const TREE_CACHE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes per cached chunk beyond the chunk itself: the padded key (35), the `Arc`'s counts,
/// the hash table's control bytes and spare capacity.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;
/// Longest chunk key (`state_tree::node_key` at depth 256).
const KEY_BYTES: usize = 3 + 32;

/// A chunk key, zero-padded: keys of different lengths have different depths (bytes 1..3),
/// so padding never makes two keys equal.
type CacheKey = [u8; KEY_BYTES];

fn cache_key(engine_key: &[u8]) -> Option<CacheKey> {
    let mut key = [0; KEY_BYTES];
    key.get_mut(..engine_key.len())?.copy_from_slice(engine_key);
    Some(key)
}

fn cost(chunk: &Chunk) -> usize {
    chunk.memory_bytes() + ENTRY_OVERHEAD_BYTES
}

pub struct NodeCache {
    chunks: HashMap<CacheKey, Arc<Chunk>>,
    bytes: usize,
    bytes_max: usize,
}

impl NodeCache {
    /// An empty cache holding at most about `bytes_max` bytes.
    pub fn new(bytes_max: usize) -> NodeCache {
        NodeCache {
            chunks: HashMap::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// The cached chunk under engine key `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Chunk>> {
        self.chunks.get(&cache_key(key)?).cloned()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    /// Every cached chunk with its engine key (for checks against the engine).
    pub fn entries(&self) -> impl Iterator<Item = (Vec<u8>, Arc<Chunk>)> + '_ {
        self.chunks
            .iter()
            .filter_map(|(key, chunk)| Some((key[..chunk_key_len(key)?].to_vec(), chunk.clone())))
    }

    /// Records a block whose batch the engine accepted: `filled`, chunks the update read from
    /// the engine before the block, then `written`, the batch's chunk writes (`None`:
    /// deleted), which override them. The caller passes only chunks the engine holds now.
    pub fn commit<'k>(
        &mut self,
        filled: impl IntoIterator<Item = (Vec<u8>, Arc<Chunk>)>,
        written: impl IntoIterator<Item = (&'k [u8], Option<Arc<Chunk>>)>,
    ) {
        for (key, chunk) in filled {
            self.admit(&key, chunk);
        }
        for (key, chunk) in written {
            match chunk {
                Some(chunk) => self.admit(key, chunk),
                None => self.remove(key),
            }
        }
    }

    /// Forgets every chunk (after the engine's tree chunks were replaced, or a failed write).
    pub fn clear(&mut self) {
        self.chunks = HashMap::new();
        self.bytes = 0;
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = cache_key(key).and_then(|key| self.chunks.remove(&key)) {
            self.bytes -= cost(&old);
        }
    }

    fn admit(&mut self, key: &[u8], chunk: Arc<Chunk>) {
        let Some(padded) = cache_key(key) else {
            return;
        };
        let old_bytes = self.chunks.get(&padded).map_or(0, |old| cost(old));
        let new_bytes = cost(&chunk);
        if self.bytes - old_bytes + new_bytes > self.bytes_max {
            // Never keep a stale chunk: a cached one that no longer fits goes.
            self.remove(key);
            return;
        }
        self.bytes = self.bytes - old_bytes + new_bytes;
        self.chunks.insert(padded, chunk);
    }
}

#[cfg(test)]
/// The length of the chunk key a padded cache key holds (from its depth field).
fn chunk_key_len(key: &CacheKey) -> Option<usize> {
    let depth = u16::from_be_bytes([key[1], key[2]]) as usize;
    let len = 3 + depth.div_ceil(8);
    (len <= KEY_BYTES).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::state_tree::{TreeUpdate, node_key};

    /// A few distinct small chunks (the root chunk of trees of one to three leaves).
    fn chunks() -> Vec<Arc<Chunk>> {
        (1..4u8)
            .map(|n| {
                let mut leaves: Vec<_> = (0..n).map(|i| ([i * 80; 32], [n; 32])).collect();
                let none = |_: &[u8]| Ok(None);
                let mut update = TreeUpdate::new(&none);
                let changes: Vec<_> = leaves.drain(..).map(|(p, v)| (p, Some(v))).collect();
                update.apply(&changes).unwrap();
                let writes = update.into_writes().unwrap();
                writes[0].new.clone().unwrap()
            })
            .collect()
    }

    #[test]
    fn writes_override_fills_and_deletes_remove() {
        let c = chunks();
        let mut cache = NodeCache::new(100_000);
        let (a, b) = (node_key(4, &[0xFF; 32]), node_key(8, &[0x0F; 32]));
        cache.commit([(a.clone(), c[0].clone()), (b.clone(), c[1].clone())], []);
        assert_eq!(cache.get(&a), Some(c[0].clone()));
        cache.commit(
            [],
            [(a.as_slice(), Some(c[2].clone())), (b.as_slice(), None)],
        );
        assert_eq!(cache.get(&a), Some(c[2].clone()));
        assert_eq!(cache.get(&b), None);
        let entries: Vec<_> = cache.entries().collect();
        assert_eq!(entries, vec![(a, c[2].clone())]);
        assert_eq!(cache.bytes(), cost(&c[2]));
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn a_full_cache_admits_nothing_new_but_still_updates() {
        let c = chunks();
        let mut cache = NodeCache::new(2 * cost(&c[0]));
        let keys: Vec<_> = (0..3u8).map(|i| node_key(8, &[i; 32])).collect();
        cache.commit(keys.iter().map(|k| (k.clone(), c[0].clone())), []);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&keys[2]), None);
        cache.commit([], [(keys[0].as_slice(), Some(c[0].clone()))]);
        assert_eq!(cache.get(&keys[0]), Some(c[0].clone()));
        assert_eq!(cache.len(), 2);
        // A cached chunk that grows past the bound is dropped, never left stale.
        cache.commit([], [(keys[1].as_slice(), Some(c[2].clone()))]);
        assert_eq!(cache.get(&keys[1]), None);
        assert!(cache.bytes() <= 2 * cost(&c[0]));
    }

    #[test]
    fn keys_of_different_depths_never_collide() {
        let c = chunks();
        let mut cache = NodeCache::new(100_000);
        // Depth 8 on path 0x00.. and depth 16 on path 0x00 0x00..: same bytes once padded,
        // but the depth field differs.
        let (short, long) = (node_key(8, &[0; 32]), node_key(16, &[0; 32]));
        cache.commit([(short.clone(), c[0].clone())], []);
        assert_eq!(cache.get(&long), None);
        assert_eq!(cache.get(b"too long a key for any tree node at all"), None);
    }
}
