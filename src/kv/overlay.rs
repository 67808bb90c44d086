//! The writes of the block being applied, layered over the engine.
//!
//! Operations of a block see the effects of earlier operations of the same block; nothing
//! reaches the engine until the whole block becomes one write batch (atomic in the WAL).
//! Every data/client/reply write also updates the digest accumulator, using the value it
//! replaces (read from the overlay or the engine).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::digest::DigestAccumulator;
use crate::storage::{Engine, WriteBatch};

pub struct BlockOverlay<'e> {
    engine: &'e Engine,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    accumulator: DigestAccumulator,
}

impl<'e> BlockOverlay<'e> {
    pub fn new(engine: &'e Engine, accumulator: DigestAccumulator) -> Self {
        BlockOverlay {
            engine,
            writes: BTreeMap::new(),
            accumulator,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(slot) => slot.clone(),
            None => self.engine.get(key),
        }
    }

    /// Writes a digest-covered entry.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if let Some(old) = self.get(&key) {
            self.accumulator.remove(&key, &old);
        }
        self.accumulator.add(&key, &value);
        self.writes.insert(key, Some(value));
    }

    /// Deletes a digest-covered entry (no-op if absent).
    pub fn delete(&mut self, key: Vec<u8>) {
        if let Some(old) = self.get(&key) {
            self.accumulator.remove(&key, &old);
            self.writes.insert(key, None);
        }
    }

    /// Writes an entry the digest does not cover (the meta entry).
    pub fn put_uncovered(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn accumulator(&self) -> DigestAccumulator {
        self.accumulator
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

    /// The block's writes as one batch, and the accumulator after them.
    pub fn into_batch(self) -> (WriteBatch, DigestAccumulator) {
        let mut batch = WriteBatch::new();
        for (key, slot) in self.writes {
            match slot {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        (batch, self.accumulator)
    }
}
