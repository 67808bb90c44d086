//! Checking the stored state tree against the entries, from scratch (`bftd inspect`, tests).
//!
//! The incremental tree is only as good as the code and the disk under it, so an operator can
//! recompute the root from the state entries alone and compare it with the root the store
//! publishes (the meta entry) and with the stored root node. Memory: 64 bytes per entry (the
//! leaves, sorted to build the tree); nothing is written.
//!
//! A node also does this when it opens its state ([`KvStore::realign_tree`]): entries changed
//! outside the state machine (a disk that returns other bytes with valid checksums, an edited
//! WAL) leave the incrementally kept tree describing the old entries, so the node would keep
//! publishing the honest root over a damaged state. Rebuilding the tree from the entries makes
//! the published roots describe what the node really holds; the first certified root of a
//! height it applies then differs from its own, and consensus marks it diverged and repairs it.

use super::keys::{META_KEY, TREE_PREFIX, is_covered_prefix};
use super::leaves::LeafFolder;
use super::state_machine::{KvStore, encode_meta};
use super::state_tree::{build_from_leaves, decoding, root_from_leaves, stored_root};
use crate::api::proof::state_digest;
use crate::storage::{Engine, StorageError, WriteBatch};

/// What the recomputation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeAudit {
    pub applied_height: u64,
    /// The root the meta entry records (what `state_digest()` publishes).
    pub published_root: [u8; 32],
    /// The hash of the stored root node.
    pub stored_node_root: [u8; 32],
    /// The root of the tree of the state entries, computed from scratch.
    pub recomputed_root: [u8; 32],
    pub entry_count: u64,
}

impl TreeAudit {
    pub fn consistent(&self) -> bool {
        self.published_root == self.recomputed_root && self.stored_node_root == self.recomputed_root
    }

    /// The digest the entries give at the applied height.
    pub fn recomputed_digest(&self) -> [u8; 32] {
        state_digest(self.applied_height, &self.recomputed_root)
    }
}

impl KvStore {
    /// Recomputes the state tree root from a full scan of the state entries.
    pub fn audit_tree(&self) -> Result<TreeAudit, StorageError> {
        let mut folder = LeafFolder::new();
        let mut entry_count = 0u64;
        self.engine.scan(&[], None, |key, value| {
            if key.first().is_some_and(|b| is_covered_prefix(*b)) {
                entry_count += 1;
                folder.push(key, value);
            }
            true
        });
        let mut leaves = folder.finish();
        let bytes = |key: &[u8]| self.engine.get(key);
        Ok(TreeAudit {
            applied_height: self.applied_height,
            published_root: self.tree_root,
            stored_node_root: stored_root(&decoding(&bytes))?,
            recomputed_root: root_from_leaves(&mut leaves),
            entry_count,
        })
    }
}

impl KvStore {
    /// Recomputes the tree from the state entries; if the stored tree or the published root
    /// disagree with it, replaces every tree chunk and the published root by the recomputed ones
    /// in one durable batch and returns what was found (the caller says so loudly). `None`:
    /// the stored tree matched the entries. Cost: one scan of the state and one tree build.
    pub fn realign_tree(&mut self) -> Result<Option<TreeAudit>, StorageError> {
        let audit = self.audit_tree()?;
        if audit.consistent() {
            return Ok(None);
        }
        let (batch, tree_root) = tree_rebuild_batch(&self.engine);
        let mut batch = batch;
        batch.put(
            META_KEY.to_vec(),
            encode_meta(self.applied_height, &tree_root),
        );
        // The remembered roots of earlier heights belong to the tree that was just found
        // wrong: the memory restarts with the realigned root (`kv::root_memory`).
        for (height, _) in super::root_memory::stored(&self.engine)? {
            batch.delete(super::root_memory::root_key(height));
        }
        batch.put(
            super::root_memory::root_key(self.applied_height),
            crate::api::proof::state_digest(self.applied_height, &tree_root).to_vec(),
        );
        // Tree chunks written behind `apply_nowait`: the cache must not keep old ones.
        self.tree_cache.clear();
        // The tree of earlier heights is not what the log's old chunks belong to any more.
        self.undo.clear();
        let written = self.engine.write(&batch);
        self.tree_cache.clear();
        written?;
        self.tree_root = tree_root;
        Ok(Some(audit))
    }
}

/// A batch replacing every stored tree entry by the chunks of the tree of the state entries
/// (deleting the stored ones it does not rewrite), and that tree's root.
fn tree_rebuild_batch(engine: &Engine) -> (WriteBatch, [u8; 32]) {
    let mut folder = LeafFolder::new();
    let mut old_nodes = Vec::new();
    engine.scan(&[], None, |key, value| {
        match key.first() {
            Some(&TREE_PREFIX) => old_nodes.push(key.to_vec()),
            _ => folder.push(key, value),
        }
        true
    });
    let (nodes, tree_root) = build_from_leaves(&mut folder.finish());
    let mut batch = WriteBatch::default();
    let kept: std::collections::HashSet<&[u8]> = nodes.iter().map(|(k, _)| &k[..]).collect();
    for key in old_nodes.iter().filter(|k| !kept.contains(&k[..])) {
        batch.delete(key.clone());
    }
    for (key, value) in nodes {
        batch.put(key, value);
    }
    (batch, tree_root)
}
