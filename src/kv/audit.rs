//! Checking the stored state tree against the entries, from scratch (`bftd inspect`, tests).
//!
//! The incremental tree is only as good as the code and the disk under it, so an operator can
//! recompute the root from the state entries alone and compare it with the root the store
//! publishes (the meta entry) and with the stored root node. Memory: 64 bytes per entry (the
//! leaves, sorted to build the tree); nothing is written.

use super::keys::is_covered_prefix;
use super::state_machine::KvStore;
use super::state_tree::{root_from_leaves, stored_root};
use crate::api::proof::{key_path, state_digest, value_hash};
use crate::storage::StorageError;

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
        let mut leaves = Vec::new();
        self.engine.scan(&[], None, |key, value| {
            if key.first().is_some_and(|b| is_covered_prefix(*b)) {
                leaves.push((key_path(key), value_hash(value)));
            }
            true
        });
        let entry_count = leaves.len() as u64;
        let read = |key: &[u8]| self.engine.get(key);
        Ok(TreeAudit {
            applied_height: self.applied_height,
            published_root: self.tree_root,
            stored_node_root: stored_root(&read)?,
            recomputed_root: root_from_leaves(&mut leaves),
            entry_count,
        })
    }
}
