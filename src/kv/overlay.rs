//! The writes of the block being applied, layered over the engine.
//!
//! Operations of a block see the effects of earlier operations of the same block; nothing
//! reaches the engine until the whole block becomes one write batch (atomic in the WAL).
//! The state entries a block wrote become the block's leaf changes for the state tree
//! ([`BlockOverlay::tree_changes`], leaves as `kv::leaves` defines them), applied once per
//! block, not once per write.
//!
//! The overlay remembers what the engine held for each data entry it read (every put and
//! delete reads its key first), so the undo log and the key-count delta of the block take the
//! old values from there instead of a second engine lookup per written key.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::keys::{DATA_PREFIX, is_covered_prefix};
use super::leaves;
use super::state_tree::Change;
use crate::storage::{Engine, WriteBatch};

/// A key and what the engine held under it before the block (`None`: absent).
pub type OldEntry = (Vec<u8>, Option<Vec<u8>>);

pub struct BlockOverlay<'e> {
    engine: &'e Engine,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What the engine held for the data entries read so far (before the block).
    engine_data: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<'e> BlockOverlay<'e> {
    pub fn new(engine: &'e Engine) -> Self {
        BlockOverlay {
            engine,
            writes: BTreeMap::new(),
            engine_data: RefCell::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(slot) => slot.clone(),
            None if key.first() == Some(&DATA_PREFIX) => self.engine_before(key),
            None => self.engine.get(key),
        }
    }

    /// Whether `key` holds a value as of the block so far (no copy of the value is made).
    pub fn contains(&self, key: &[u8]) -> bool {
        match self.writes.get(key) {
            Some(slot) => slot.is_some(),
            None if key.first() == Some(&DATA_PREFIX) => self.engine_before(key).is_some(),
            None => self.engine.get_with(key, |value| value.is_some()),
        }
    }

    /// What the engine holds under data key `key` (the state before the block), read once.
    fn engine_before(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(old) = self.engine_data.borrow().get(key) {
            return old.clone();
        }
        let old = self.engine.get(key);
        self.engine_data
            .borrow_mut()
            .insert(key.to_vec(), old.clone());
        old
    }

    /// Writes a state entry.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        debug_assert!(key.first().is_some_and(|b| is_covered_prefix(*b)));
        self.writes.insert(key, Some(value));
    }

    /// Deletes a state entry (no-op if absent).
    pub fn delete(&mut self, key: Vec<u8>) {
        if self.contains(&key) {
            self.writes.insert(key, None);
        }
    }

    /// Writes (`None`: deletes) an entry outside the state: a meta entry or a tree node.
    pub fn set_derived(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        debug_assert!(!key.first().is_some_and(|b| is_covered_prefix(*b)));
        self.writes.insert(key, value);
    }

    /// The state tree's leaf changes of the writes so far, sorted by path (`kv::leaves`: one
    /// per written entry, one per reply group the block touched, rehashed from the group's
    /// replies after the block). An entry written back to its old value, or created and
    /// deleted within the block, is a harmless no-op change for the tree.
    pub fn tree_changes(&self) -> Vec<Change> {
        let writes = self
            .writes
            .iter()
            .map(|(key, slot)| (key.as_slice(), slot.as_deref()));
        leaves::changes(writes, |group| {
            let range = leaves::group_range(group);
            let replies = self.range(&range.start, &range.end, usize::MAX);
            leaves::group_value_hash(replies.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        })
    }

    /// How the block's writes change the number of user keys (`d` entries): +1 for each key
    /// it creates, -1 for each it deletes, against the engine (which the block has not
    /// reached yet). A key written back and forth within the block counts once, by outcome.
    pub fn data_keys_delta(&self) -> i64 {
        self.writes
            .iter()
            .filter(|(key, _)| key.first() == Some(&DATA_PREFIX))
            .map(|(key, slot)| {
                let before = self.engine_before(key).is_some();
                i64::from(slot.is_some()) - i64::from(before)
            })
            .sum()
    }

    /// The block's writes to data entries so far, in key order: the stored key and the new
    /// stored value (`None`: deleted). The watch log is built from these.
    pub fn data_writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let start = [DATA_PREFIX];
        let end = [DATA_PREFIX + 1];
        self.writes
            .range::<[u8], _>((Bound::Included(&start[..]), Bound::Excluded(&end[..])))
            .map(|(key, slot)| (key.as_slice(), slot.as_deref()))
    }

    /// Up to `limit` live entries with `start <= key < end`, overlay over engine.
    pub fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        if start >= end || limit == 0 {
            return Vec::new();
        }
        let bounds = (Bound::Included(start), Bound::Excluded(end));
        let overlay: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
            self.writes.range::<[u8], _>(bounds).collect();
        // Each overlay entry hides at most one engine entry, so this many suffice.
        let engine_rows = self
            .engine
            .range(start, Some(end), limit.saturating_add(overlay.len()));
        let mut out = Vec::with_capacity(limit.min(engine_rows.len() + overlay.len()));
        let (mut o, mut e) = (
            overlay.into_iter().peekable(),
            engine_rows.into_iter().peekable(),
        );
        while out.len() < limit {
            let take_overlay = match (o.peek(), e.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some((ek, _))) => ok.as_slice() <= ek.as_slice(),
            };
            if take_overlay {
                let Some((key, slot)) = o.next() else { break };
                if e.peek().is_some_and(|(ek, _)| ek == key) {
                    e.next(); // shadowed by the overlay
                }
                if let Some(value) = slot {
                    out.push((key.clone(), value.clone()));
                }
            } else if let Some(row) = e.next() {
                out.push(row);
            }
        }
        out
    }

    /// The block's writes as one batch.
    pub fn into_batch(self) -> WriteBatch {
        self.into_batch_and_undo().0
    }

    /// The block's writes as one batch, and for each data entry it writes, what the engine
    /// held before (`None`: absent), in key order.
    pub fn into_batch_and_undo(self) -> (WriteBatch, Vec<OldEntry>) {
        let mut batch = WriteBatch::new();
        let mut undo = Vec::new();
        let mut before = self.engine_data.into_inner();
        for (key, slot) in self.writes {
            if key.first() == Some(&DATA_PREFIX) {
                let old = before.remove(&key).unwrap_or_else(|| self.engine.get(&key));
                undo.push((key.clone(), old));
            }
            match slot {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        (batch, undo)
    }
}
