//! The authenticated state: a binary sparse Merkle tree over every state entry, stored as
//! nodes in the engine's key space and updated once per block.
//!
//! Why this shape: a sparse Merkle tree keyed by `blake3(engine key)` has one canonical shape
//! per set of entries (so every node computes the same root whatever order it applied writes
//! in, and `bftd inspect` or a snapshot install can recompute it from the entries alone), and
//! it proves absence as easily as presence. Plain 256-level trees cost 256 hashes per write;
//! with the Diem/Aptos Jellyfish "leaf shortcut" a leaf sits at the shallowest depth where its
//! path prefix is unique, so a write costs O(log n) node reads and hashes. We keep it binary
//! (Jellyfish uses 16-ary nodes to save reads; binary proofs are simpler and smaller and our
//! node reads are engine point lookups). The hashing lives in [`crate::api::proof`], shared
//! with the client's verifier.
//!
//! Storage: one engine entry per non-empty node (keys under [`TREE_PREFIX`], see [`node_key`]):
//! the root at depth 0 and every non-empty child of an internal node. Invariants, which the
//! update keeps and [`prove`] checks while walking:
//! - a node is internal iff its subtree holds >= 2 leaves; a subtree with one leaf is that leaf,
//!   stored at the subtree's top; nothing is stored below a leaf or an empty subtree;
//! - an internal node stores its children's hashes, and each child stored below it hashes to
//!   the value its parent holds.
//!
//! [`TreeUpdate::apply`] takes a block's changed leaves (sorted by path) and rewrites only the
//! nodes on their paths, deleting the ones a removal or a move makes obsolete; its writes go
//! into the block's one engine batch, so the tree is always the tree of the applied state.

use std::collections::BTreeMap;

use super::keys::TREE_PREFIX;
use crate::api::proof::{
    EMPTY_SUBTREE_HASH, ProofTerminal, StateProof, leaf_hash, node_hash, path_bit,
};
use crate::storage::StorageError;

const LEAF_TAG: u8 = b'L';
const INTERNAL_TAG: u8 = b'I';
const NODE_BYTES: usize = 1 + 32 + 32;
const PATH_BITS: usize = 256;

/// A leaf: its path and the hash of its entry's value.
pub type Leaf = ([u8; 32], [u8; 32]);
/// A stored node: its engine key and encoding.
pub type NodeEntry = (Vec<u8>, Vec<u8>);

/// One leaf change of a block: the leaf's path and its new value hash (`None`: removed).
pub type Change = ([u8; 32], Option<[u8; 32]>);

/// A stored node.
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

    pub fn encode(&self) -> Vec<u8> {
        let (tag, a, b) = match self {
            Node::Leaf { path, value_hash } => (LEAF_TAG, path, value_hash),
            Node::Internal { left, right } => (INTERNAL_TAG, left, right),
        };
        let mut out = Vec::with_capacity(NODE_BYTES);
        out.push(tag);
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        out
    }

    pub fn decode(bytes: &[u8], key: &[u8]) -> Result<Node, StorageError> {
        let bad = || StorageError::invalid(format!("state tree node {key:02x?} is malformed"));
        if bytes.len() != NODE_BYTES {
            return Err(bad());
        }
        let a: [u8; 32] = bytes[1..33].try_into().map_err(|_| bad())?;
        let b: [u8; 32] = bytes[33..65].try_into().map_err(|_| bad())?;
        match bytes[0] {
            LEAF_TAG => Ok(Node::Leaf {
                path: a,
                value_hash: b,
            }),
            INTERNAL_TAG => Ok(Node::Internal { left: a, right: b }),
            _ => Err(bad()),
        }
    }
}

fn sub_hash(node: &Option<Node>) -> [u8; 32] {
    node.as_ref().map_or(EMPTY_SUBTREE_HASH, Node::hash)
}

/// The engine key of the node at `depth` on `path`:
/// `'t' ++ u16 BE depth ++ the first ceil(depth / 8) bytes of path, bits past depth zeroed`.
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

/// One side of an internal node during an update.
enum Side {
    /// No change below: the hash the parent holds.
    Untouched([u8; 32]),
    Changed {
        old: Option<Node>,
        new: Option<Node>,
    },
}

/// Node reads and writes of one tree update.
pub struct TreeUpdate<'r> {
    read: &'r dyn Fn(&[u8]) -> Option<Vec<u8>>,
    /// Node writes (`None`: delete), or `None` when only the root is wanted.
    writes: Option<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<'r> TreeUpdate<'r> {
    /// An update over the nodes `read` returns, recording its node writes.
    pub fn new(read: &'r dyn Fn(&[u8]) -> Option<Vec<u8>>) -> Self {
        TreeUpdate {
            read,
            writes: Some(BTreeMap::new()),
        }
    }

    /// Applies `changes` (sorted by path, each path once) and returns the new root hash.
    pub fn apply(&mut self, changes: &[Change]) -> Result<[u8; 32], StorageError> {
        debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        let root_key = node_key(0, &[0; 32]);
        let old = self.read_node(&root_key)?;
        if changes.is_empty() {
            return Ok(sub_hash(&old));
        }
        let new = self.update(0, &changes[0].0, old, changes)?;
        self.write(root_key, &old, &new);
        Ok(sub_hash(&new))
    }

    /// The node writes, in key order (`None`: delete).
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.writes.unwrap_or_default()
    }

    fn read_node(&self, key: &[u8]) -> Result<Option<Node>, StorageError> {
        (self.read)(key)
            .map(|bytes| Node::decode(&bytes, key))
            .transpose()
    }

    fn write(&mut self, key: Vec<u8>, old: &Option<Node>, new: &Option<Node>) {
        let Some(writes) = self.writes.as_mut() else {
            return;
        };
        if old == new {
            return;
        }
        match new {
            Some(node) => writes.insert(key, Some(node.encode())),
            None => writes.insert(key, None),
        };
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
        let keys = paths.map(|p| node_key(depth + 1, &p));
        let [left_key, right_key] = keys;
        let empty = |side: &Side| match side {
            Side::Untouched(hash) => *hash == EMPTY_SUBTREE_HASH,
            Side::Changed { new, .. } => new.is_none(),
        };
        // One side empty: if the other holds a single leaf, that leaf moves up to here.
        let lone = match (empty(&left_side), empty(&right_side)) {
            (true, true) => Some((None, None)),
            (false, true) => Some((Some(self.resolve(&left_key, &left_side)?), None)),
            (true, false) => Some((None, Some(self.resolve(&right_key, &right_side)?))),
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
            for (key, side) in [(left_key, &left_side), (right_key, &right_side)] {
                let old = match side {
                    Side::Untouched(hash) if *hash == EMPTY_SUBTREE_HASH => None,
                    Side::Untouched(_) => self.read_node(&key)?,
                    Side::Changed { old, .. } => *old,
                };
                self.write(key, &old, &None);
            }
            return Ok(top);
        }
        let hashes = [&left_side, &right_side].map(|side| match side {
            Side::Untouched(hash) => *hash,
            Side::Changed { new, .. } => sub_hash(new),
        });
        for (key, side) in [(left_key, left_side), (right_key, right_side)] {
            if let Side::Changed { old, new } = side {
                self.write(key, &old, &new);
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
        let old = self.child(depth, path, hash)?;
        let new = self.update(depth, path, old, changes)?;
        Ok(Side::Changed { old, new })
    }

    /// The node an internal node's child hash `hash` names, checked against the hash.
    fn child(
        &self,
        depth: usize,
        path: &[u8; 32],
        hash: [u8; 32],
    ) -> Result<Option<Node>, StorageError> {
        read_child(self.read, depth, path, hash)
    }

    /// The content of a non-empty side (read from the engine if untouched).
    fn resolve(&self, key: &[u8], side: &Side) -> Result<Option<Node>, StorageError> {
        match side {
            Side::Untouched(hash) => {
                let node = self.read_node(key)?;
                if sub_hash(&node) != *hash {
                    return Err(inconsistent(key));
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
                let children = [self.build(depth + 1, left), self.build(depth + 1, right)];
                for (child, path) in children.iter().zip(paths) {
                    if child.is_some() {
                        self.write(node_key(depth + 1, &path), &None, child);
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

fn inconsistent(key: &[u8]) -> StorageError {
    StorageError::invalid(format!(
        "state tree node {key:02x?} does not match the hash its parent holds"
    ))
}

fn read_child(
    read: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    depth: usize,
    path: &[u8; 32],
    hash: [u8; 32],
) -> Result<Option<Node>, StorageError> {
    if hash == EMPTY_SUBTREE_HASH {
        return Ok(None);
    }
    let key = node_key(depth, path);
    let node = read(&key)
        .map(|bytes| Node::decode(&bytes, &key))
        .transpose()?;
    if sub_hash(&node) != hash {
        return Err(inconsistent(&key));
    }
    Ok(node)
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

/// The root of the tree holding exactly `leaves` (any order), computed from scratch.
pub fn root_from_leaves(leaves: &mut [Leaf]) -> [u8; 32] {
    leaves.sort_unstable_by_key(|a| a.0);
    let none = |_: &[u8]| None;
    let mut tree = TreeUpdate {
        read: &none,
        writes: None,
    };
    sub_hash(&tree.build(0, leaves))
}

/// The nodes (engine key, encoded node) and root of the tree holding exactly `leaves`.
pub fn build_from_leaves(leaves: &mut [Leaf]) -> (Vec<NodeEntry>, [u8; 32]) {
    leaves.sort_unstable_by_key(|a| a.0);
    let none = |_: &[u8]| None;
    let mut tree = TreeUpdate::new(&none);
    let top = tree.build(0, leaves);
    tree.write(node_key(0, &[0; 32]), &None, &top);
    let nodes = tree
        .into_writes()
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect();
    (nodes, sub_hash(&top))
}

/// The hash of the stored root node (what the meta entry's root must equal).
pub fn stored_root(read: &dyn Fn(&[u8]) -> Option<Vec<u8>>) -> Result<[u8; 32], StorageError> {
    let key = node_key(0, &[0; 32]);
    let node = read(&key)
        .map(|bytes| Node::decode(&bytes, &key))
        .transpose()?;
    Ok(sub_hash(&node))
}

/// Walks from the root towards `path`: the siblings and where the path ends. For the key's
/// own leaf, `entry` must return the entry's bytes, which are checked against the leaf.
pub fn prove(
    read: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    root: &[u8; 32],
    path: &[u8; 32],
    entry: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<StateProof, StorageError> {
    let mut siblings = Vec::new();
    let mut node = read_child(read, 0, path, *root)?;
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
                node = read_child(read, depth + 1, path, next)?;
            }
        }
    };
    Ok(StateProof { siblings, terminal })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::api::proof::{ProofError, key_path, value_hash};
    use crate::util::rng::SimRng;

    /// A node store in memory, driven like the engine: one batch of writes per block.
    struct MemTree {
        nodes: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
        root: [u8; 32],
    }

    impl MemTree {
        fn new() -> Self {
            MemTree {
                nodes: RefCell::new(BTreeMap::new()),
                root: EMPTY_SUBTREE_HASH,
            }
        }

        fn apply(&mut self, changes: &[Change]) {
            let nodes = &self.nodes;
            let read = |k: &[u8]| nodes.borrow().get(k).cloned();
            let mut update = TreeUpdate::new(&read);
            self.root = update.apply(changes).expect("consistent tree");
            let writes = update.into_writes();
            let mut nodes = self.nodes.borrow_mut();
            for (key, value) in writes {
                match value {
                    Some(v) => nodes.insert(key, v),
                    None => nodes.remove(&key),
                };
            }
        }

        fn prove(&self, model: &BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8]) -> StateProof {
            let read = |k: &[u8]| self.nodes.borrow().get(k).cloned();
            prove(&read, &self.root, &key_path(key), || {
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

    fn scratch(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> ([u8; 32], usize) {
        let mut leaves: Vec<_> = model
            .iter()
            .map(|(k, v)| (key_path(k), value_hash(v)))
            .collect();
        let (nodes, root) = build_from_leaves(&mut leaves);
        (root, nodes.len())
    }

    #[test]
    fn model_test_against_a_btreemap() {
        for seed in 0..8u64 {
            let mut rng = SimRng::new(seed);
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut tree = MemTree::new();
            for _block in 0..60 {
                let mut block = BTreeMap::new();
                for _ in 0..rng.range(0, 11) {
                    let key = format!("k{}", rng.range(0, 149)).into_bytes();
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
                let (root, node_count) = scratch(&model);
                assert_eq!(tree.root, root, "seed {seed}");
                // Exactly the canonical nodes are stored: nothing stale is left behind.
                assert_eq!(tree.nodes.borrow().len(), node_count, "seed {seed}");
                for probe in 0..20 {
                    let key = format!("k{}", probe * 7).into_bytes();
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
    fn empty_tree_and_no_op_deletes() {
        let mut tree = MemTree::new();
        tree.apply(&[(key_path(b"x"), None)]);
        assert_eq!(tree.root, EMPTY_SUBTREE_HASH);
        assert!(tree.nodes.borrow().is_empty());
        tree.apply(&[(key_path(b"x"), Some(value_hash(b"1")))]);
        tree.apply(&[(key_path(b"x"), None)]);
        assert_eq!(tree.root, EMPTY_SUBTREE_HASH);
        assert!(
            tree.nodes.borrow().is_empty(),
            "the last leaf's node is deleted"
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
    fn a_stored_node_that_disagrees_with_its_parent_is_reported() {
        let mut tree = MemTree::new();
        let block: BTreeMap<_, _> = (0..8)
            .map(|i| (format!("k{i}").into_bytes(), Some(b"v".to_vec())))
            .collect();
        tree.apply(&changes_of(&block));
        let victim = tree
            .nodes
            .borrow()
            .keys()
            .find(|k| k.len() > 3)
            .cloned()
            .expect("a non-root node");
        tree.nodes
            .borrow_mut()
            .insert(victim, vec![b'L'; NODE_BYTES]);
        let read = |k: &[u8]| tree.nodes.borrow().get(k).cloned();
        let failures = (0..8)
            .filter(|i| {
                let path = key_path(format!("k{i}").as_bytes());
                prove(&read, &tree.root, &path, || Some(b"v".to_vec())).is_err()
            })
            .count();
        assert!(failures > 0);
    }

    #[test]
    fn node_keys_mask_bits_past_the_depth() {
        let path = [0xFF; 32];
        assert_eq!(node_key(0, &path), vec![TREE_PREFIX, 0, 0]);
        assert_eq!(node_key(3, &path), vec![TREE_PREFIX, 0, 3, 0xE0]);
        assert_eq!(node_key(8, &path), vec![TREE_PREFIX, 0, 8, 0xFF]);
        assert_eq!(node_key(256, &path).len(), 3 + 32);
    }
}
