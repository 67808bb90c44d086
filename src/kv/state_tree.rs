//! The authenticated state: a binary sparse Merkle tree over every state entry, stored in
//! chunks of four binary levels in the engine's key space and updated once per block.
//!
//! Why this shape: a sparse Merkle tree keyed by `blake3(engine key)` has one canonical shape
//! per set of entries (so every node computes the same root whatever order it applied writes
//! in, and `bftd inspect` or a snapshot install can recompute it from the entries alone), and
//! it proves absence as easily as presence. Plain 256-level trees cost 256 hashes per write;
//! with the Diem/Aptos Jellyfish "leaf shortcut" a leaf sits at the shallowest depth where its
//! path prefix is unique, so a write costs O(log n) node reads and hashes. The tree (hashes,
//! root, proofs) is binary: binary proofs are simpler and smaller, and the client's verifier
//! in [`crate::api::proof`] shares the hashing.
//!
//! Storage: Jellyfish-style, several binary levels per engine entry. One entry per binary
//! node cost a put about 17 engine writes (WAL bytes, memtable inserts of long shared key
//! prefixes, flush and compaction volume, undo log entries); a [`Chunk`] holds the nodes at
//! depths `c .. c + 4` under one path prefix (`c` a multiple of [`CHUNK_LEVELS`]), so a put
//! writes about a quarter as many entries. A chunk is stored under [`node_key`]`(c, prefix)`
//! (keys under [`TREE_PREFIX`]) iff one of its nodes exists; it stores its leaves and the child
//! hashes of its bottom-level internal nodes, and the hashes of its upper internal nodes are
//! recomputed when it is decoded (at most 7 hashes, once per engine read: the store caches
//! decoded chunks, `kv::node_cache`). Invariants, which the update keeps and [`prove`] checks
//! while walking:
//! - a node is internal iff its subtree holds >= 2 leaves; a subtree with one leaf is that leaf,
//!   stored at the subtree's top; nothing is stored below a leaf or an empty subtree;
//! - an internal node holds its children's hashes, and each child stored below it hashes to
//!   the value its parent holds (inside a chunk by construction, across chunks checked).
//!
//! [`TreeUpdate::apply`] takes a block's changed leaves (sorted by path) and rewrites only the
//! nodes on their paths, deleting the ones a removal or a move makes obsolete; the chunks that
//! hold them ([`TreeUpdate::into_writes`]) go into the block's one engine batch, so the tree is
//! always the tree of the applied state.

use std::collections::HashMap;
use std::sync::Arc;

use super::keys::TREE_PREFIX;
use crate::api::proof::{
    EMPTY_SUBTREE_HASH, ProofTerminal, StateProof, leaf_hash, node_hash, path_bit, same_prefix,
};
use crate::storage::StorageError;

const LEAF_TAG: u8 = b'L';
const INTERNAL_TAG: u8 = b'I';
/// First byte of a stored chunk (the chunk layout; one-node-per-entry stores had none).
const CHUNK_TAG: u8 = b'C';
/// Binary levels per stored chunk.
pub const CHUNK_LEVELS: usize = 4;
/// Node positions in a chunk: 1 + 2 + 4 + 8.
const CHUNK_SLOTS: usize = (1 << CHUNK_LEVELS) - 1;
const PATH_BITS: usize = 256;

/// A leaf: its path and the hash of its entry's value.
pub type Leaf = ([u8; 32], [u8; 32]);
/// A stored chunk: its engine key and encoding.
pub type NodeEntry = (Vec<u8>, Vec<u8>);

/// One leaf change of a block: the leaf's path and its new value hash (`None`: removed).
pub type Change = ([u8; 32], Option<[u8; 32]>);

/// A node of the binary tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Leaf {
        path: [u8; 32],
        value_hash: [u8; 32],
    },
    Internal {
        left: [u8; 32],
        right: [u8; 32],
    },
}

impl Node {
    pub fn hash(&self) -> [u8; 32] {
        match self {
            Node::Leaf { path, value_hash } => leaf_hash(path, value_hash),
            Node::Internal { left, right } => node_hash(left, right),
        }
    }
}

fn sub_hash(node: &Option<Node>) -> [u8; 32] {
    node.as_ref().map_or(EMPTY_SUBTREE_HASH, Node::hash)
}

/// The level of a chunk slot inside its chunk (slot 0: the top, level 0; slots 7..15: level 3).
fn slot_level(slot: usize) -> usize {
    (usize::BITS - 1 - (slot + 1).leading_zeros()) as usize
}

/// The chunk (its depth) and slot that hold the node at `depth` on `path`.
fn locate(depth: usize, path: &[u8; 32]) -> (usize, usize) {
    let top = depth - depth % CHUNK_LEVELS;
    let level = depth - top;
    let bits = (top..depth).fold(0, |acc, d| acc << 1 | usize::from(path_bit(path, d)));
    (top, (1 << level) - 1 + bits)
}

/// The nodes at depths `c .. c + CHUNK_LEVELS` under one path prefix, by slot (heap order:
/// slot `s` has children `2s + 1` and `2s + 2`). Only the slots that hold a node are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Bit `s`: slot `s` holds a node.
    present: u16,
    /// One node per set bit of `present`, in slot order.
    nodes: Vec<Node>,
}

impl Chunk {
    /// The node in `slot`, if any.
    pub fn get(&self, slot: usize) -> Option<Node> {
        let bit = 1u16 << slot;
        if self.present & bit == 0 {
            return None;
        }
        self.nodes
            .get((self.present & (bit - 1)).count_ones() as usize)
            .copied()
    }

    /// Puts `node` in `slot` (tests forge chunks with it; updates build new chunks whole).
    #[cfg(test)]
    fn set(&mut self, slot: usize, node: Option<Node>) {
        let bit = 1u16 << slot;
        let at = (self.present & (bit - 1)).count_ones() as usize;
        match (self.present & bit != 0, node) {
            (true, Some(node)) => self.nodes[at] = node,
            (true, None) => {
                self.nodes.remove(at);
                self.present &= !bit;
            }
            (false, Some(node)) => {
                self.nodes.insert(at, node);
                self.present |= bit;
            }
            (false, None) => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Nodes held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Memory the decoded chunk takes (for the node cache's bound).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Chunk>() + self.nodes.capacity() * std::mem::size_of::<Node>()
    }

    /// `'C' ++ u16 LE slot bitmap ++ per held slot, in order: 'L' ++ [32] path ++ [32] value
    /// hash, or 'I' (++ [32] left ++ [32] right at the bottom level only)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.nodes.len() * 65);
        out.push(CHUNK_TAG);
        out.extend_from_slice(&self.present.to_le_bytes());
        let slots = (0..CHUNK_SLOTS).filter(|s| self.present & (1 << s) != 0);
        for (slot, node) in slots.zip(&self.nodes) {
            match node {
                Node::Leaf { path, value_hash } => {
                    out.push(LEAF_TAG);
                    out.extend_from_slice(path);
                    out.extend_from_slice(value_hash);
                }
                Node::Internal { left, right } => {
                    out.push(INTERNAL_TAG);
                    if slot_level(slot) == CHUNK_LEVELS - 1 {
                        out.extend_from_slice(left);
                        out.extend_from_slice(right);
                    }
                }
            }
        }
        out
    }

    /// Decodes the chunk stored under engine key `key`, validating its structure (every node
    /// below an internal node of the chunk, leaves on the path of their slot, no trailing
    /// bytes) and recomputing the hashes of its upper internal nodes.
    pub fn decode(bytes: &[u8], key: &[u8]) -> Result<Chunk, StorageError> {
        let bad = |why: &str| {
            StorageError::invalid(format!("state tree chunk {key:02x?} is malformed: {why}"))
        };
        let (top, prefix) = parse_chunk_key(key).ok_or_else(|| bad("not a chunk key"))?;
        let [tag, lo, hi, body @ ..] = bytes else {
            return Err(bad("too short"));
        };
        let mut rest: &[u8] = body;
        if *tag != CHUNK_TAG {
            return Err(bad("not the chunk layout"));
        }
        let present = u16::from_le_bytes([*lo, *hi]);
        if present == 0 || present >> CHUNK_SLOTS != 0 {
            return Err(bad("bad slot bitmap"));
        }
        let mut slots = [None; CHUNK_SLOTS];
        let mut internal = [false; CHUNK_SLOTS];
        let take = |rest: &mut &[u8]| -> Result<[u8; 32], StorageError> {
            let (head, tail) = rest.split_at_checked(32).ok_or_else(|| bad("truncated"))?;
            *rest = tail;
            head.try_into().map_err(|_| bad("truncated"))
        };
        for slot in (0..CHUNK_SLOTS).filter(|s| present & (1 << s) != 0) {
            if slot > 0 && !internal[(slot - 1) / 2] {
                return Err(bad("a node below a leaf or an empty slot"));
            }
            let level = slot_level(slot);
            let (&tag, tail) = rest.split_first().ok_or_else(|| bad("truncated"))?;
            rest = tail;
            // A node sits at most at depth 256 (a leaf), and an internal one splits on the bit
            // of its depth, so it sits above 256: a stored chunk saying otherwise is damage
            // (and would index past the path below).
            let depth = top + level;
            if depth > PATH_BITS || (tag == INTERNAL_TAG && depth >= PATH_BITS) {
                return Err(bad("a node below the tree's last level"));
            }
            match tag {
                LEAF_TAG => {
                    let path = take(&mut rest)?;
                    let value_hash = take(&mut rest)?;
                    let bits = slot + 1 - (1 << level);
                    let on_path = prefix_matches(&path, top, prefix)
                        && (0..level).all(|i| {
                            path_bit(&path, top + i) == (bits >> (level - 1 - i) & 1 == 1)
                        });
                    if !on_path {
                        return Err(bad("a leaf off its slot's path"));
                    }
                    slots[slot] = Some(Node::Leaf { path, value_hash });
                }
                INTERNAL_TAG => {
                    internal[slot] = true;
                    if level == CHUNK_LEVELS - 1 {
                        let left = take(&mut rest)?;
                        let right = take(&mut rest)?;
                        slots[slot] = Some(Node::Internal { left, right });
                    }
                }
                _ => return Err(bad("unknown node tag")),
            }
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        // Children have higher slots than their parents: fill the upper hashes bottom up.
        for slot in (0..CHUNK_SLOTS / 2).rev() {
            if internal[slot] {
                let (left, right) = (slots[2 * slot + 1], slots[2 * slot + 2]);
                if left.is_none() && right.is_none() {
                    return Err(bad("an internal node without children"));
                }
                slots[slot] = Some(Node::Internal {
                    left: sub_hash(&left),
                    right: sub_hash(&right),
                });
            }
        }
        Ok(Chunk {
            present,
            nodes: slots.into_iter().flatten().collect(),
        })
    }
}

/// The depth and path prefix bytes of a chunk key, if `key` is one.
fn parse_chunk_key(key: &[u8]) -> Option<(usize, &[u8])> {
    let [prefix, hi, lo, path @ ..] = key else {
        return None;
    };
    let depth = u16::from_be_bytes([*hi, *lo]) as usize;
    let ok = *prefix == TREE_PREFIX
        && depth.is_multiple_of(CHUNK_LEVELS)
        && depth <= PATH_BITS
        && path.len() == depth.div_ceil(8);
    ok.then_some((depth, path))
}

/// Whether the first `depth` bits of `path` are the (masked) prefix bytes `prefix`.
fn prefix_matches(path: &[u8; 32], depth: usize, prefix: &[u8]) -> bool {
    let mut padded = [0u8; 32];
    padded[..prefix.len()].copy_from_slice(prefix);
    same_prefix(path, &padded, depth)
}

/// The engine key of the chunk whose top is at `depth` on `path` (and of the root chunk,
/// depth 0): `'t' ++ u16 BE depth ++ the first ceil(depth / 8) bytes of path, bits past depth
/// zeroed`.
pub fn node_key(depth: usize, path: &[u8; 32]) -> Vec<u8> {
    debug_assert!(depth <= PATH_BITS);
    let bytes = depth.div_ceil(8);
    let mut key = Vec::with_capacity(3 + bytes);
    key.push(TREE_PREFIX);
    key.extend_from_slice(&(depth as u16).to_be_bytes());
    key.extend_from_slice(&path[..bytes]);
    if !depth.is_multiple_of(8)
        && let Some(last) = key.last_mut()
    {
        *last &= 0xFFu8 << (8 - depth % 8);
    }
    key
}

/// A chunk's engine key ([`node_key`] of its top) held inline: the update and proof walks
/// look chunks up per node, and an allocation per lookup showed in profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ChunkKey {
    len: u8,
    bytes: [u8; 3 + 32],
}

impl ChunkKey {
    fn new(depth: usize, path: &[u8; 32]) -> Self {
        debug_assert!(depth <= PATH_BITS && depth.is_multiple_of(CHUNK_LEVELS));
        let len = depth.div_ceil(8);
        let mut bytes = [0; 3 + 32];
        bytes[0] = TREE_PREFIX;
        bytes[1..3].copy_from_slice(&(depth as u16).to_be_bytes());
        bytes[3..3 + len].copy_from_slice(&path[..len]);
        if !depth.is_multiple_of(8) {
            bytes[2 + len] &= 0xFFu8 << (8 - depth % 8);
        }
        ChunkKey {
            len: (3 + len) as u8,
            bytes,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// `path` with bit `depth` set to `bit`.
fn with_bit(path: &[u8; 32], depth: usize, bit: bool) -> [u8; 32] {
    let mut out = *path;
    let mask = 0x80u8 >> (depth % 8);
    if bit {
        out[depth / 8] |= mask;
    } else {
        out[depth / 8] &= !mask;
    }
    out
}

/// Reads a chunk by engine key: the decoded chunk, or `None` if none is stored.
pub type ChunkRead<'r> = dyn Fn(&[u8]) -> Result<Option<Arc<Chunk>>, StorageError> + 'r;

/// A [`ChunkRead`] over a reader of stored bytes (the engine, an undo log), decoding each read.
pub fn decoding<'a>(
    bytes: &'a dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> impl Fn(&[u8]) -> Result<Option<Arc<Chunk>>, StorageError> + 'a {
    move |key| {
        bytes(key)
            .map(|b| Chunk::decode(&b, key).map(Arc::new))
            .transpose()
    }
}

/// The chunks one walk or update reads, each read once.
struct Chunks<'r> {
    read: &'r ChunkRead<'r>,
    memo: HashMap<ChunkKey, Option<Arc<Chunk>>>,
}

impl<'r> Chunks<'r> {
    fn new(read: &'r ChunkRead<'r>) -> Self {
        Chunks {
            read,
            memo: HashMap::new(),
        }
    }

    fn chunk(&mut self, key: &ChunkKey) -> Result<Option<Arc<Chunk>>, StorageError> {
        if let Some(chunk) = self.memo.get(key) {
            return Ok(chunk.clone());
        }
        let chunk = (self.read)(key.as_slice())?;
        self.memo.insert(*key, chunk.clone());
        Ok(chunk)
    }

    /// The stored node at `depth` on `path`.
    fn node(&mut self, depth: usize, path: &[u8; 32]) -> Result<Option<Node>, StorageError> {
        let (top, slot) = locate(depth, path);
        let key = ChunkKey::new(top, path);
        if let Some(chunk) = self.memo.get(&key) {
            return Ok(chunk.as_ref().and_then(|chunk| chunk.get(slot)));
        }
        let chunk = (self.read)(key.as_slice())?;
        let node = chunk.as_ref().and_then(|chunk| chunk.get(slot));
        self.memo.insert(key, chunk);
        Ok(node)
    }

    /// The node an internal node's child hash `hash` names, checked against the hash where
    /// the child is the top of a chunk. Inside a chunk the check is redundant: a decoded
    /// chunk's inner hashes are recomputed from its nodes, and an update writes each parent
    /// from its new children, so only the hashes across chunks can disagree.
    fn child(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        hash: [u8; 32],
    ) -> Result<Option<Node>, StorageError> {
        if hash == EMPTY_SUBTREE_HASH {
            return Ok(None);
        }
        let node = self.node(depth, path)?;
        let inside_chunk = !depth.is_multiple_of(CHUNK_LEVELS) && node.is_some();
        if !inside_chunk && sub_hash(&node) != hash {
            return Err(inconsistent(depth, path));
        }
        Ok(node)
    }
}

/// One side of an internal node during an update.
enum Side {
    /// No change below: the hash the parent holds.
    Untouched([u8; 32]),
    Changed {
        old: Option<Node>,
        new: Option<Node>,
    },
}

/// One chunk a tree update changes: its key, what the engine held (`None`: nothing) and what
/// the block's batch writes (`None`: delete).
#[derive(Debug)]
pub struct ChunkWrite {
    pub key: Vec<u8>,
    pub old: Option<Arc<Chunk>>,
    pub new: Option<Arc<Chunk>>,
}

/// Node writes of one update: per chunk written, its key and whether it is known to be absent
/// from the store (its top lies below a subtree being built, under which nothing is stored,
/// so it need not be read); and every node write in order, `(chunk index, slot, node)`. A
/// flat list: a slot array per chunk (about 1 KiB) cost an allocation, or moved memory,
/// per edited chunk in profiles, and a chunk gets only a few writes per block.
#[derive(Default)]
struct Edits {
    index: HashMap<ChunkKey, u32>,
    chunks: Vec<(ChunkKey, bool)>,
    writes: Vec<(u32, u8, Option<Node>)>,
}

/// Node reads and writes of one tree update.
pub struct TreeUpdate<'r> {
    chunks: Chunks<'r>,
    /// Node writes by chunk, or `None` when only the root is wanted.
    edits: Option<Edits>,
}

impl<'r> TreeUpdate<'r> {
    /// An update over the chunks `read` returns, recording its node writes.
    pub fn new(read: &'r ChunkRead<'r>) -> Self {
        TreeUpdate {
            chunks: Chunks::new(read),
            edits: Some(Edits::default()),
        }
    }

    /// Applies `changes` (sorted by path, each path once) and returns the new root hash.
    pub fn apply(&mut self, changes: &[Change]) -> Result<[u8; 32], StorageError> {
        debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        let old = self.chunks.node(0, &[0; 32])?;
        if changes.is_empty() {
            return Ok(sub_hash(&old));
        }
        let new = self.update(0, &changes[0].0, old, changes)?;
        self.write(0, &[0; 32], &old, &new);
        Ok(sub_hash(&new))
    }

    /// The chunks the update changes, in key order, with what each held before.
    pub fn into_writes(mut self) -> Result<Vec<ChunkWrite>, StorageError> {
        let mut edits = self.edits.take().unwrap_or_default();
        // By chunk, each chunk's writes in the order made (the sort is stable): a later write
        // of a slot overrides an earlier one.
        edits.writes.sort_by_key(|(chunk, _, _)| *chunk);
        let mut writes = Vec::with_capacity(edits.chunks.len());
        for run in edits.writes.chunk_by(|a, b| a.0 == b.0) {
            let (key, absent) = edits.chunks[run[0].0 as usize];
            let mut slots: [Option<Option<Node>>; CHUNK_SLOTS] = [None; CHUNK_SLOTS];
            for (_, slot, node) in run {
                slots[usize::from(*slot)] = Some(*node);
            }
            let old = if absent {
                debug_assert!(matches!(self.chunks.chunk(&key), Ok(None)));
                None
            } else {
                self.chunks.chunk(&key)?
            };
            let held = |slot: usize| old.as_ref().and_then(|chunk| chunk.get(slot));
            // A node written back to what it held (moved away and back) changes nothing.
            let changed = slots
                .iter()
                .enumerate()
                .any(|(slot, node)| node.is_some_and(|node| node != held(slot)));
            if !changed {
                continue;
            }
            let nodes: [Option<Node>; CHUNK_SLOTS] =
                std::array::from_fn(|slot| slots[slot].unwrap_or_else(|| held(slot)));
            let present = (0..CHUNK_SLOTS)
                .filter(|slot| nodes[*slot].is_some())
                .fold(0u16, |bits, slot| bits | 1 << slot);
            let new = (present != 0).then(|| {
                let mut held = Vec::with_capacity(present.count_ones() as usize);
                held.extend(nodes.iter().flatten());
                Arc::new(Chunk {
                    present,
                    nodes: held,
                })
            });
            let key = key.as_slice().to_vec();
            writes.push(ChunkWrite { key, old, new });
        }
        writes.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(writes)
    }

    fn write(&mut self, depth: usize, path: &[u8; 32], old: &Option<Node>, new: &Option<Node>) {
        self.write_edit(depth, path, old, new, false);
    }

    /// Records the node at `depth` on `path` (which held `old`) as `new`; `absent`: its chunk
    /// is known not to be stored.
    fn write_edit(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        old: &Option<Node>,
        new: &Option<Node>,
        absent: bool,
    ) {
        let Some(edits) = self.edits.as_mut() else {
            return;
        };
        if old == new {
            return;
        }
        let (top, slot) = locate(depth, path);
        let key = ChunkKey::new(top, path);
        let chunk = *edits.index.entry(key).or_insert_with(|| {
            edits.chunks.push((key, absent));
            (edits.chunks.len() - 1) as u32
        });
        edits.writes.push((chunk, slot as u8, *new));
    }

    /// The subtree at (`depth`, prefix of `path`) whose stored top is `old`, after `changes`
    /// (non-empty, all under it). Rewrites the nodes strictly below; returns the new top,
    /// which the caller stores.
    fn update(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        old: Option<Node>,
        changes: &[Change],
    ) -> Result<Option<Node>, StorageError> {
        match old {
            Some(Node::Internal { left, right }) => {
                self.update_internal(depth, path, (left, right), changes)
            }
            leaf_or_empty => {
                // Nothing is stored below a leaf or an empty subtree: rebuild it.
                let leaves = merge_leaf(leaf_or_empty, changes);
                Ok(self.build(depth, &leaves))
            }
        }
    }

    fn update_internal(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        (left, right): ([u8; 32], [u8; 32]),
        changes: &[Change],
    ) -> Result<Option<Node>, StorageError> {
        let split = changes.partition_point(|c| !path_bit(&c.0, depth));
        let (left_changes, right_changes) = changes.split_at(split);
        let paths = [with_bit(path, depth, false), with_bit(path, depth, true)];
        let left_side = self.side(depth + 1, &paths[0], left, left_changes)?;
        let right_side = self.side(depth + 1, &paths[1], right, right_changes)?;
        let empty = |side: &Side| match side {
            Side::Untouched(hash) => *hash == EMPTY_SUBTREE_HASH,
            Side::Changed { new, .. } => new.is_none(),
        };
        // One side empty: if the other holds a single leaf, that leaf moves up to here.
        let lone = match (empty(&left_side), empty(&right_side)) {
            (true, true) => Some((None, None)),
            (false, true) => Some((Some(self.resolve(depth + 1, &paths[0], &left_side)?), None)),
            (true, false) => Some((None, Some(self.resolve(depth + 1, &paths[1], &right_side)?))),
            (false, false) => None,
        };
        let moved_up = match lone {
            Some((Some(Some(leaf @ Node::Leaf { .. })), _))
            | Some((_, Some(Some(leaf @ Node::Leaf { .. })))) => Some(Some(leaf)),
            Some((None, None)) => Some(None),
            _ => None,
        };
        if let Some(top) = moved_up {
            // Both child positions become empty.
            for (path, side) in [(&paths[0], &left_side), (&paths[1], &right_side)] {
                let old = match side {
                    Side::Untouched(hash) if *hash == EMPTY_SUBTREE_HASH => None,
                    Side::Untouched(_) => self.chunks.node(depth + 1, path)?,
                    Side::Changed { old, .. } => *old,
                };
                self.write(depth + 1, path, &old, &None);
            }
            return Ok(top);
        }
        let hashes = [&left_side, &right_side].map(|side| match side {
            Side::Untouched(hash) => *hash,
            Side::Changed { new, .. } => sub_hash(new),
        });
        for (path, side) in [(&paths[0], left_side), (&paths[1], right_side)] {
            if let Side::Changed { old, new } = side {
                self.write(depth + 1, path, &old, &new);
            }
        }
        Ok(Some(Node::Internal {
            left: hashes[0],
            right: hashes[1],
        }))
    }

    /// The new content of one child position (`depth`, prefix of `path`) that held `hash`.
    fn side(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        hash: [u8; 32],
        changes: &[Change],
    ) -> Result<Side, StorageError> {
        if changes.is_empty() {
            return Ok(Side::Untouched(hash));
        }
        let old = self.chunks.child(depth, path, hash)?;
        let new = self.update(depth, path, old, changes)?;
        Ok(Side::Changed { old, new })
    }

    /// The content of a non-empty side (read from the engine if untouched).
    fn resolve(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        side: &Side,
    ) -> Result<Option<Node>, StorageError> {
        match side {
            Side::Untouched(hash) => {
                let node = self.chunks.node(depth, path)?;
                if sub_hash(&node) != *hash {
                    return Err(inconsistent(depth, path));
                }
                Ok(node)
            }
            Side::Changed { new, .. } => Ok(*new),
        }
    }

    /// The subtree at `depth` holding exactly `leaves` (sorted, distinct paths, all sharing
    /// the first `depth` bits), with nothing stored below it yet. Writes the nodes strictly
    /// below; returns the top.
    pub fn build(&mut self, depth: usize, leaves: &[Leaf]) -> Option<Node> {
        self.build_below(depth, depth, leaves)
    }

    /// [`TreeUpdate::build`] of the part at `depth` of a subtree whose top is at `top` (nothing
    /// is stored below `top`, so a chunk whose top is deeper than `top` is not stored).
    fn build_below(&mut self, top: usize, depth: usize, leaves: &[Leaf]) -> Option<Node> {
        match leaves {
            [] => None,
            [(path, value_hash)] => Some(Node::Leaf {
                path: *path,
                value_hash: *value_hash,
            }),
            [(first, _), ..] => {
                assert!(depth < PATH_BITS, "distinct paths split above depth 256");
                let split = leaves.partition_point(|(p, _)| !path_bit(p, depth));
                let (left, right) = leaves.split_at(split);
                let paths = [with_bit(first, depth, false), with_bit(first, depth, true)];
                let children = [
                    self.build_below(top, depth + 1, left),
                    self.build_below(top, depth + 1, right),
                ];
                let chunk_top = (depth + 1) - (depth + 1) % CHUNK_LEVELS;
                for (child, path) in children.iter().zip(paths) {
                    if child.is_some() {
                        self.write_edit(depth + 1, &path, &None, child, chunk_top > top);
                    }
                }
                Some(Node::Internal {
                    left: sub_hash(&children[0]),
                    right: sub_hash(&children[1]),
                })
            }
        }
    }
}

fn inconsistent(depth: usize, path: &[u8; 32]) -> StorageError {
    let (top, slot) = locate(depth, path);
    StorageError::invalid(format!(
        "state tree chunk {:02x?} slot {slot} does not match the hash its parent holds",
        node_key(top, path)
    ))
}

/// The leaves of a subtree that held at most `old` (a leaf or nothing) after `changes`.
fn merge_leaf(old: Option<Node>, changes: &[Change]) -> Vec<Leaf> {
    let mut leaves: Vec<Leaf> = changes
        .iter()
        .filter_map(|(path, value)| value.map(|v| (*path, v)))
        .collect();
    if let Some(Node::Leaf { path, value_hash }) = old
        && changes.binary_search_by(|c| c.0.cmp(&path)).is_err()
    {
        let at = leaves.partition_point(|(p, _)| *p < path);
        leaves.insert(at, (path, value_hash));
    }
    leaves
}

fn no_chunks(_: &[u8]) -> Result<Option<Arc<Chunk>>, StorageError> {
    Ok(None)
}

/// The root of the tree holding exactly `leaves` (any order), computed from scratch.
pub fn root_from_leaves(leaves: &mut [Leaf]) -> [u8; 32] {
    leaves.sort_unstable_by_key(|a| a.0);
    let mut tree = TreeUpdate {
        chunks: Chunks::new(&no_chunks),
        edits: None,
    };
    sub_hash(&tree.build(0, leaves))
}

/// The chunks (engine key, encoding) and root of the tree holding exactly `leaves`.
pub fn build_from_leaves(leaves: &mut [Leaf]) -> (Vec<NodeEntry>, [u8; 32]) {
    leaves.sort_unstable_by_key(|a| a.0);
    let mut tree = TreeUpdate::new(&no_chunks);
    let top = tree.build(0, leaves);
    tree.write(0, &[0; 32], &None, &top);
    // Nothing is read: building from nothing cannot fail.
    let chunks = tree
        .into_writes()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|w| w.new.map(|chunk| (w.key, chunk.encode())))
        .collect();
    (chunks, sub_hash(&top))
}

/// The hash of the stored root node (what the meta entry's root must equal).
pub fn stored_root(read: &ChunkRead<'_>) -> Result<[u8; 32], StorageError> {
    Ok(sub_hash(&Chunks::new(read).node(0, &[0; 32])?))
}

/// Walks from the root towards `path`: the siblings and where the path ends. For the key's
/// own leaf, `entry` must return the entry's bytes, which are checked against the leaf.
pub fn prove(
    read: &ChunkRead<'_>,
    root: &[u8; 32],
    path: &[u8; 32],
    entry: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<StateProof, StorageError> {
    let mut chunks = Chunks::new(read);
    let mut siblings = Vec::new();
    let mut node = chunks.child(0, path, *root)?;
    let terminal = loop {
        match node {
            None => break ProofTerminal::Empty,
            Some(Node::Leaf {
                path: leaf_path,
                value_hash,
            }) if leaf_path != *path => {
                break ProofTerminal::OtherLeaf {
                    path: leaf_path,
                    value_hash,
                };
            }
            Some(Node::Leaf { value_hash, .. }) => {
                let bytes = entry().filter(|e| crate::api::proof::value_hash(e) == value_hash);
                let bytes = bytes.ok_or_else(|| {
                    StorageError::invalid("state tree leaf does not match the stored entry")
                })?;
                break ProofTerminal::Entry(bytes);
            }
            Some(Node::Internal { left, right }) => {
                let depth = siblings.len();
                if depth >= PATH_BITS {
                    return Err(StorageError::invalid("state tree deeper than 256 levels"));
                }
                let (next, sibling) = if path_bit(path, depth) {
                    (right, left)
                } else {
                    (left, right)
                };
                siblings.push(sibling);
                node = chunks.child(depth + 1, path, next)?;
            }
        }
    };
    Ok(StateProof { siblings, terminal })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::proof::{ProofError, key_path, value_hash};
    use crate::util::rng::SimRng;

    /// A chunk store in memory, driven like the engine: one batch of writes per block.
    struct MemTree {
        chunks: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
        root: [u8; 32],
    }

    impl MemTree {
        fn new() -> Self {
            MemTree {
                chunks: RefCell::new(BTreeMap::new()),
                root: EMPTY_SUBTREE_HASH,
            }
        }

        fn apply(&mut self, changes: &[Change]) {
            let chunks = &self.chunks;
            let bytes = |k: &[u8]| chunks.borrow().get(k).cloned();
            let read = decoding(&bytes);
            let mut update = TreeUpdate::new(&read);
            self.root = update.apply(changes).expect("consistent tree");
            let writes = update.into_writes().expect("consistent tree");
            let mut chunks = self.chunks.borrow_mut();
            for write in writes {
                let stored = chunks
                    .get(&write.key)
                    .map(|b| Chunk::decode(b, &write.key).expect("stored chunks decode"));
                assert_eq!(
                    stored.as_ref(),
                    write.old.as_deref(),
                    "old is the stored chunk"
                );
                match write.new {
                    Some(chunk) => {
                        let bytes = chunk.encode();
                        let decoded = Chunk::decode(&bytes, &write.key).expect("decodes");
                        assert_eq!(&decoded, &*chunk, "a written chunk decodes to itself");
                        chunks.insert(write.key, bytes)
                    }
                    None => chunks.remove(&write.key),
                };
            }
        }

        fn prove(&self, model: &BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8]) -> StateProof {
            let bytes = |k: &[u8]| self.chunks.borrow().get(k).cloned();
            prove(&decoding(&bytes), &self.root, &key_path(key), || {
                model.get(key).cloned()
            })
            .expect("proof of a consistent tree")
        }
    }

    fn changes_of(block: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Vec<Change> {
        let mut changes: Vec<Change> = block
            .iter()
            .map(|(k, v)| (key_path(k), v.as_deref().map(value_hash)))
            .collect();
        changes.sort_unstable_by_key(|a| a.0);
        changes
    }

    fn scratch(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> ([u8; 32], Vec<NodeEntry>) {
        let mut leaves: Vec<_> = model
            .iter()
            .map(|(k, v)| (key_path(k), value_hash(v)))
            .collect();
        let (chunks, root) = build_from_leaves(&mut leaves);
        (root, chunks)
    }

    /// Random blocks of inserts and deletes over `keys` keys: after each, the root and every
    /// stored chunk equal a from-scratch build, and proofs of present and absent keys verify.
    fn model_test(seeds: std::ops::Range<u64>, keys: u64, blocks: usize, block_ops: u64) {
        for seed in seeds {
            let mut rng = SimRng::new(seed);
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut tree = MemTree::new();
            for _block in 0..blocks {
                let mut block = BTreeMap::new();
                for _ in 0..rng.range(0, block_ops) {
                    let key = format!("k{}", rng.range(0, keys - 1)).into_bytes();
                    let value = if rng.range(0, 3) == 0 {
                        None
                    } else {
                        Some(format!("v{}", rng.range(0, 999)).into_bytes())
                    };
                    block.insert(key, value);
                }
                for (key, value) in &block {
                    match value {
                        Some(v) => model.insert(key.clone(), v.clone()),
                        None => model.remove(key),
                    };
                }
                tree.apply(&changes_of(&block));
                let (root, chunks) = scratch(&model);
                assert_eq!(tree.root, root, "seed {seed}");
                // Exactly the canonical chunks are stored: nothing stale is left behind.
                let stored: Vec<NodeEntry> = tree.chunks.borrow().clone().into_iter().collect();
                assert!(
                    stored == chunks,
                    "seed {seed}: stored chunks are the scratch build"
                );
                for probe in 0..20 {
                    let key = format!("k{}", probe * keys / 20).into_bytes();
                    let proof = tree.prove(&model, &key);
                    let path = key_path(&key);
                    assert_eq!(
                        proof.verify_path(&tree.root, &path),
                        Ok(model.get(&key).cloned()),
                        "seed {seed} key {probe}"
                    );
                }
            }
        }
    }

    #[test]
    fn model_test_against_a_btreemap() {
        model_test(0..8, 150, 60, 11);
    }

    #[test]
    fn model_test_with_deep_trees_and_large_blocks() {
        // Thousands of leaves: paths reach the third and fourth chunk levels, and blocks
        // create and empty whole chunks.
        model_test(100..103, 4000, 12, 900);
    }

    #[test]
    fn empty_tree_and_no_op_deletes() {
        let mut tree = MemTree::new();
        tree.apply(&[(key_path(b"x"), None)]);
        assert_eq!(tree.root, EMPTY_SUBTREE_HASH);
        assert!(tree.chunks.borrow().is_empty());
        tree.apply(&[(key_path(b"x"), Some(value_hash(b"1")))]);
        tree.apply(&[(key_path(b"x"), None)]);
        assert_eq!(tree.root, EMPTY_SUBTREE_HASH);
        assert!(
            tree.chunks.borrow().is_empty(),
            "the last leaf's chunk is deleted"
        );
        let proof = tree.prove(&BTreeMap::new(), b"x");
        assert_eq!(proof.terminal, ProofTerminal::Empty);
        assert_eq!(proof.verify_path(&tree.root, &key_path(b"x")), Ok(None));
    }

    #[test]
    fn tampered_proofs_are_rejected() {
        let mut model = BTreeMap::new();
        let mut block = BTreeMap::new();
        for i in 0..64 {
            let (k, v) = (format!("k{i}").into_bytes(), format!("v{i}").into_bytes());
            model.insert(k.clone(), v.clone());
            block.insert(k, Some(v));
        }
        let mut tree = MemTree::new();
        tree.apply(&changes_of(&block));
        let key = b"k5".to_vec();
        let path = key_path(&key);
        let proof = tree.prove(&model, &key);
        assert!(!proof.siblings.is_empty());
        assert_eq!(
            proof.verify_path(&tree.root, &path),
            Ok(Some(b"v5".to_vec()))
        );
        let mut flipped = proof.clone();
        flipped.siblings[0][3] ^= 1;
        assert_eq!(
            flipped.verify_path(&tree.root, &path),
            Err(ProofError::RootMismatch)
        );
        let mut wrong_value = proof.clone();
        wrong_value.terminal = ProofTerminal::Entry(b"v6".to_vec());
        assert_eq!(
            wrong_value.verify_path(&tree.root, &path),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            proof.verify_path(&tree.root, &key_path(b"k6")),
            Err(ProofError::RootMismatch),
            "a proof for one key does not prove another"
        );
        let mut truncated = proof.clone();
        truncated.siblings.pop();
        assert_eq!(
            truncated.verify_path(&tree.root, &path),
            Err(ProofError::RootMismatch)
        );
        let mut hidden = proof.clone();
        hidden.terminal = ProofTerminal::Empty;
        assert_eq!(
            hidden.verify_path(&tree.root, &path),
            Err(ProofError::RootMismatch),
            "a present key cannot be proven absent"
        );
        // Absent keys: both kinds of non-membership proof verify, and cannot claim a value.
        let mut kinds = (false, false);
        for i in 100..400 {
            let key = format!("k{i}").into_bytes();
            let proof = tree.prove(&model, &key);
            assert_eq!(proof.verify_path(&tree.root, &key_path(&key)), Ok(None));
            match &proof.terminal {
                ProofTerminal::Empty => kinds.0 = true,
                ProofTerminal::OtherLeaf { .. } => kinds.1 = true,
                ProofTerminal::Entry(_) => panic!("absent key proven present"),
            }
            let mut forged = proof.clone();
            forged.terminal = ProofTerminal::Entry(b"v1".to_vec());
            assert!(forged.verify_path(&tree.root, &key_path(&key)).is_err());
        }
        assert_eq!(kinds, (true, true), "both non-membership kinds exercised");
    }

    #[test]
    fn a_stored_chunk_that_disagrees_with_its_parent_is_reported() {
        let mut tree = MemTree::new();
        let block: BTreeMap<_, _> = (0..64)
            .map(|i| (format!("k{i}").into_bytes(), Some(b"v".to_vec())))
            .collect();
        tree.apply(&changes_of(&block));
        // A well-formed chunk below the root chunk, with one leaf's value hash changed.
        let (victim, forged) = tree
            .chunks
            .borrow()
            .iter()
            .filter(|(k, _)| k.len() > 3)
            .find_map(|(key, bytes)| {
                let mut chunk = Chunk::decode(bytes, key).unwrap();
                let slot =
                    (0..CHUNK_SLOTS).find(|s| matches!(chunk.get(*s), Some(Node::Leaf { .. })))?;
                let Some(Node::Leaf { path, .. }) = chunk.get(slot) else {
                    return None;
                };
                chunk.set(
                    slot,
                    Some(Node::Leaf {
                        path,
                        value_hash: [9; 32],
                    }),
                );
                Some((key.clone(), chunk.encode()))
            })
            .expect("a non-root chunk with a leaf");
        tree.chunks.borrow_mut().insert(victim, forged);
        let bytes = |k: &[u8]| tree.chunks.borrow().get(k).cloned();
        let read = decoding(&bytes);
        let failures = (0..64)
            .filter(|i| {
                let path = key_path(format!("k{i}").as_bytes());
                prove(&read, &tree.root, &path, || Some(b"v".to_vec())).is_err()
            })
            .count();
        assert!(failures > 0);
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let mut tree = MemTree::new();
        let block: BTreeMap<_, _> = (0..40)
            .map(|i| (format!("k{i}").into_bytes(), Some(b"v".to_vec())))
            .collect();
        tree.apply(&changes_of(&block));
        let root_key = node_key(0, &[0; 32]);
        let good = tree.chunks.borrow()[&root_key].clone();
        assert!(Chunk::decode(&good, &root_key).is_ok());
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push((root_key.clone(), trailing));
        cases.push((root_key.clone(), good[..good.len() - 1].to_vec()));
        let mut bad_tag = good.clone();
        bad_tag[0] = b'I';
        cases.push((root_key.clone(), bad_tag));
        cases.push((root_key.clone(), vec![CHUNK_TAG, 0, 0]));
        cases.push((root_key.clone(), vec![CHUNK_TAG, 0, 0x80]));
        // Slot 1 without slot 0: a node with no parent.
        let mut orphan = vec![CHUNK_TAG, 2, 0, LEAF_TAG];
        orphan.extend_from_slice(&[0; 64]);
        cases.push((root_key.clone(), orphan));
        // A leaf in slot 1 (left of the root) whose path starts with a 1 bit.
        let mut off_path = vec![CHUNK_TAG, 3, 0, INTERNAL_TAG, LEAF_TAG];
        off_path.extend_from_slice(&[0xFF; 64]);
        cases.push((root_key.clone(), off_path));
        // A valid chunk under a key that is not a chunk key (depth not a multiple of 4).
        cases.push((node_key(3, &[0; 32]), good.clone()));
        // An internal node with no children inside the chunk.
        cases.push((root_key.clone(), vec![CHUNK_TAG, 1, 0, INTERNAL_TAG]));
        // Chunks at depth 256, the tree's last level: an internal node there (it would split
        // on bit 256), and a leaf below it (depth 257). Decoding used to index past the path.
        let deepest = node_key(256, &[0; 32]);
        let mut internal_at_256 = vec![CHUNK_TAG, 7, 0, INTERNAL_TAG, LEAF_TAG];
        internal_at_256.extend_from_slice(&[0; 64]);
        internal_at_256.push(LEAF_TAG);
        internal_at_256.extend_from_slice(&[0; 64]);
        cases.push((deepest.clone(), internal_at_256));
        cases.push((deepest.clone(), vec![CHUNK_TAG, 1, 0, INTERNAL_TAG]));
        for (key, bytes) in cases {
            assert!(
                Chunk::decode(&bytes, &key).is_err(),
                "{key:02x?} {bytes:02x?}"
            );
        }
    }

    #[test]
    fn node_keys_mask_bits_past_the_depth() {
        let path = [0xFF; 32];
        assert_eq!(node_key(0, &path), vec![TREE_PREFIX, 0, 0]);
        assert_eq!(node_key(3, &path), vec![TREE_PREFIX, 0, 3, 0xE0]);
        assert_eq!(node_key(8, &path), vec![TREE_PREFIX, 0, 8, 0xFF]);
        assert_eq!(node_key(256, &path).len(), 3 + 32);
        assert_eq!(locate(0, &path), (0, 0));
        assert_eq!(locate(3, &path), (0, 14));
        assert_eq!(locate(4, &path), (4, 0));
        assert_eq!(locate(6, &[0b0000_1100; 32]), (4, 6));
        assert_eq!(slot_level(0), 0);
        assert_eq!(slot_level(2), 1);
        assert_eq!(slot_level(14), 3);
    }
}
