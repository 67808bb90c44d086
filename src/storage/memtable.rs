//! The in-memory table of recent writes: an ordered map from key to put-or-delete.
//!
//! A memtable is written only while it is the engine's *active* table; once frozen it is
//! immutable (shared behind an `Arc`) until its SSTable is durable. `approx_bytes` counts keys,
//! values and a fixed per-entry overhead, which is what the flush threshold is compared with.
//! `max_lsn` is the LSN of the last WAL record applied to it: once the table's SSTable and a
//! manifest naming it are durable, WAL records up to `max_lsn` are no longer needed for it.

use std::collections::BTreeMap;
use std::ops::Bound;

/// A value slot: a put value, or a tombstone that shadows older tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Put(Vec<u8>),
    Delete,
}

/// A borrowed view of a slot, as every source of the read path returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRef<'a> {
    Put(&'a [u8]),
    Delete,
}

impl Slot {
    pub fn as_ref(&self) -> SlotRef<'_> {
        match self {
            Slot::Put(value) => SlotRef::Put(value),
            Slot::Delete => SlotRef::Delete,
        }
    }
}

/// Bookkeeping bytes charged per entry on top of key and value (tree node share, lengths).
const ENTRY_OVERHEAD_BYTES: usize = 48;

#[derive(Debug, Default)]
pub struct MemTable {
    entries: BTreeMap<Vec<u8>, Slot>,
    approx_bytes: usize,
    max_lsn: u64,
}

impl MemTable {
    pub fn new() -> Self {
        MemTable::default()
    }

    /// Records a write made by the WAL record `lsn`.
    pub fn apply(&mut self, key: Vec<u8>, slot: Slot, lsn: u64) {
        debug_assert!(lsn >= self.max_lsn, "memtable writes arrive in LSN order");
        self.max_lsn = lsn;
        let key_len = key.len();
        let added = key_len + slot_len(&slot) + ENTRY_OVERHEAD_BYTES;
        if let Some(old) = self.entries.insert(key, slot) {
            self.approx_bytes -= key_len + slot_len(&old) + ENTRY_OVERHEAD_BYTES;
        }
        self.approx_bytes += added;
    }

    pub fn get(&self, key: &[u8]) -> Option<SlotRef<'_>> {
        self.entries.get(key).map(Slot::as_ref)
    }

    /// Entries with `start <= key < end` (`end = None` means unbounded), in key order.
    /// The caller guarantees `start < end` (an inverted range panics in `BTreeMap::range`).
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], SlotRef<'a>)> + 'a {
        let upper = match end {
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        self.entries
            .range::<Vec<u8>, _>((Bound::Included(start.to_vec()), upper))
            .map(|(key, slot)| (key.as_slice(), slot.as_ref()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SlotRef<'_>)> {
        self.entries
            .iter()
            .map(|(key, slot)| (key.as_slice(), slot.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    pub fn max_lsn(&self) -> u64 {
        self.max_lsn
    }
}

fn slot_len(slot: &Slot) -> usize {
    match slot {
        Slot::Put(value) => value.len(),
        Slot::Delete => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_adjusts_size_and_range_is_half_open() {
        let mut table = MemTable::new();
        table.apply(b"a".to_vec(), Slot::Put(vec![0; 10]), 1);
        table.apply(b"b".to_vec(), Slot::Delete, 2);
        let before = table.approx_bytes();
        table.apply(b"a".to_vec(), Slot::Put(vec![0; 4]), 3);
        assert_eq!(table.approx_bytes(), before - 6);
        assert_eq!(table.get(b"b"), Some(SlotRef::Delete));
        let keys: Vec<&[u8]> = table.range(b"a", Some(b"b")).map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&b"a"[..]]);
        assert_eq!(table.max_lsn(), 3);
    }
}
