//! An in-memory, write-through cache of state tree nodes, so the per-block tree update
//! (`kv::state_tree`) reads the nodes on its paths from memory instead of doing an engine
//! point lookup (memtables, then SSTables) for each.
//!
//! Invariant: every cached node equals the node the engine holds under the same key. It is
//! kept by changing the cache only in [`NodeCache::commit`], which `KvStore::apply_nowait`
//! calls after the engine accepted the block's batch, with the nodes the update read from
//! the engine (the state before the block) and the node writes of that same batch (which
//! override them). Anything else that replaces tree nodes (snapshot install) or a failed
//! write calls [`NodeCache::clear`]. Tree nodes are written only by those two paths of
//! `KvStore`; a reopened store starts with an empty cache.
//!
//! Bound: at most [`TREE_CACHE_BYTES_MAX`] bytes of entries (an estimate per entry, see
//! [`ENTRY_BYTES`]). When full, new nodes are not admitted (cached ones are still updated or
//! removed by writes). The upper levels, which every block reads, are admitted first, so a
//! store larger than the cache still saves the reads of the shared part of the paths.

use std::collections::HashMap;

use super::state_tree::Node;

/// Memory the cache may use, estimated as [`ENTRY_BYTES`] per node (64 MiB: about 520,000
/// nodes, the whole tree of a store of about 260,000 entries).
pub const TREE_CACHE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Estimated bytes per cached node: the key (35), the node (65), and the hash table's
/// control bytes and spare capacity.
pub const ENTRY_BYTES: usize = 128;
/// Longest node key (`state_tree::node_key` at depth 256).
const KEY_BYTES: usize = 3 + 32;

/// A node key, zero-padded: keys of different lengths have different depths (bytes 1..3),
/// so padding never makes two keys equal.
type CacheKey = [u8; KEY_BYTES];

fn cache_key(engine_key: &[u8]) -> Option<CacheKey> {
    let mut key = [0; KEY_BYTES];
    key.get_mut(..engine_key.len())?.copy_from_slice(engine_key);
    Some(key)
}

pub struct NodeCache {
    nodes: HashMap<CacheKey, Node>,
    entries_max: usize,
}

impl NodeCache {
    /// An empty cache holding at most `bytes_max / ENTRY_BYTES` nodes.
    pub fn new(bytes_max: usize) -> NodeCache {
        NodeCache {
            nodes: HashMap::new(),
            entries_max: bytes_max / ENTRY_BYTES,
        }
    }

    /// The cached node under engine key `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Node> {
        self.nodes.get(&cache_key(key)?).copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    #[cfg(test)]
    /// Every cached node with its engine key (for checks against the engine).
    pub fn entries(&self) -> impl Iterator<Item = (Vec<u8>, Node)> + '_ {
        self.nodes
            .iter()
            .filter_map(|(key, node)| Some((key[..node_key_len(key)?].to_vec(), *node)))
    }

    /// Records a block whose batch the engine accepted: `filled`, nodes the update read from
    /// the engine before the block, then `written`, the batch's node writes (`None`: deleted),
    /// which override them. The caller passes only nodes the engine holds now.
    pub fn commit(
        &mut self,
        filled: impl IntoIterator<Item = (Vec<u8>, Node)>,
        written: impl IntoIterator<Item = (Vec<u8>, Option<Node>)>,
    ) {
        for (key, node) in filled {
            self.admit(&key, node);
        }
        for (key, node) in written {
            match node {
                Some(node) => self.admit(&key, node),
                None => {
                    if let Some(key) = cache_key(&key) {
                        self.nodes.remove(&key);
                    }
                }
            }
        }
    }

    /// Forgets every node (after the engine's tree nodes were replaced, or a failed write).
    pub fn clear(&mut self) {
        self.nodes = HashMap::new();
    }

    fn admit(&mut self, key: &[u8], node: Node) {
        let Some(key) = cache_key(key) else {
            return;
        };
        if let Some(slot) = self.nodes.get_mut(&key) {
            *slot = node;
        } else if self.nodes.len() < self.entries_max {
            self.nodes.insert(key, node);
        }
    }
}

#[cfg(test)]
/// The length of the node key a padded cache key holds (from its depth field).
fn node_key_len(key: &CacheKey) -> Option<usize> {
    let depth = u16::from_be_bytes([key[1], key[2]]) as usize;
    let len = 3 + depth.div_ceil(8);
    (len <= KEY_BYTES).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::state_tree::node_key;

    fn leaf(byte: u8) -> Node {
        Node::Leaf {
            path: [byte; 32],
            value_hash: [byte; 32],
        }
    }

    #[test]
    fn writes_override_fills_and_deletes_remove() {
        let mut cache = NodeCache::new(10 * ENTRY_BYTES);
        let (a, b) = (node_key(3, &[0xFF; 32]), node_key(9, &[0x0F; 32]));
        cache.commit([(a.clone(), leaf(1)), (b.clone(), leaf(2))], []);
        assert_eq!(cache.get(&a), Some(leaf(1)));
        cache.commit([], [(a.clone(), Some(leaf(3))), (b.clone(), None)]);
        assert_eq!(cache.get(&a), Some(leaf(3)));
        assert_eq!(cache.get(&b), None);
        let entries: Vec<_> = cache.entries().collect();
        assert_eq!(entries, vec![(a, leaf(3))]);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_admits_nothing_new_but_still_updates() {
        let mut cache = NodeCache::new(2 * ENTRY_BYTES);
        let keys: Vec<_> = (0..3u8).map(|i| node_key(8, &[i; 32])).collect();
        cache.commit(keys.iter().map(|k| (k.clone(), leaf(1))), []);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&keys[2]), None);
        cache.commit([], [(keys[0].clone(), Some(leaf(7)))]);
        assert_eq!(cache.get(&keys[0]), Some(leaf(7)));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn keys_of_different_depths_never_collide() {
        let mut cache = NodeCache::new(10 * ENTRY_BYTES);
        // Depth 8 on path 0x00.. and depth 16 on path 0x00 0x00..: same bytes once padded,
        // but the depth field differs.
        let (short, long) = (node_key(8, &[0; 32]), node_key(16, &[0; 32]));
        cache.commit([(short.clone(), leaf(1))], []);
        assert_eq!(cache.get(&long), None);
        assert_eq!(cache.get(b"too long a key for any tree node at all"), None);
    }
}
