//! The flusher thread: turns the oldest frozen memtable into an SSTable, records it in a new
//! manifest, swaps the view, then lets the WAL drop segments the manifest now covers.
//!
//! Frozen memtables are flushed oldest first, so `flushed_lsn` only grows and every WAL batch
//! at or below it is in some table. The manifest never runs ahead of the durable WAL: a
//! memtable's `max_lsn` is recorded only after the WAL is durable up to it. Writers are never blocked by a flush unless
//! `frozen_memtables_max` memtables are already waiting (backpressure).

use std::sync::Arc;
use std::thread::JoinHandle;

use super::engine::{Inner, View};
use super::error::{Result, StorageError};
use super::memtable::{MemTable, SlotRef};
use super::sstable::{SsTable, TableEntry, table_file_name, write_table};

pub(super) fn spawn_flusher(inner: Arc<Inner>) -> Result<JoinHandle<()>> {
    let dir = inner.dir.clone();
    std::thread::Builder::new()
        .name("storage-flush".into())
        .spawn(move || flusher_loop(&inner))
        .map_err(|e| StorageError::io(&dir, "spawn flusher", e))
}

fn flusher_loop(inner: &Inner) {
    loop {
        let oldest = {
            let mut background = inner.background.lock();
            loop {
                if background.shutdown || inner.check_poisoned().is_err() {
                    return;
                }
                if let Some(frozen) = inner.view.read().frozen.last().cloned() {
                    break frozen;
                }
                inner.background_changed.wait(&mut background);
            }
        };
        if let Err(error) = flush_memtable(inner, &oldest).and_then(|()| inner.purge_wal()) {
            inner.poison(&error);
            return;
        }
        let mut background = inner.background.lock();
        if inner.view.read().tables.len() >= inner.options.compaction_trigger_tables {
            background.compaction_wanted = true;
        }
        inner.background_changed.notify_all();
    }
}

/// Converts a memtable's slots into table entries (tombstones kept: older tables may hold
/// the key).
pub(super) fn memtable_entries(memtable: &MemTable) -> Vec<TableEntry> {
    memtable
        .iter()
        .map(|(key, slot)| table_entry(key, slot))
        .collect()
}

pub(super) fn table_entry(key: &[u8], slot: SlotRef<'_>) -> TableEntry {
    match slot {
        SlotRef::Put(value) => TableEntry {
            key: key.to_vec(),
            tombstone: false,
            value: value.to_vec(),
        },
        SlotRef::Delete => TableEntry {
            key: key.to_vec(),
            tombstone: true,
            value: Vec::new(),
        },
    }
}

/// Allocates a table id (persisted by the next manifest store).
pub(super) fn next_table_id(inner: &Inner) -> u64 {
    let mut meta = inner.meta.lock();
    let id = meta.next_table_id;
    meta.next_table_id += 1;
    id
}

/// Writes and opens a table from sorted entries.
pub(super) fn build_table(inner: &Inner, entries: Vec<TableEntry>) -> Result<Arc<SsTable>> {
    let id = next_table_id(inner);
    let path = inner.dir.join(table_file_name(id));
    write_table(&inner.fs, &path, entries)?;
    Ok(Arc::new(SsTable::open(&inner.fs, &path, id)?))
}

fn flush_memtable(inner: &Inner, frozen: &Arc<MemTable>) -> Result<()> {
    let table = build_table(inner, memtable_entries(frozen))?;
    // The memtable took its writes before they were durable. The manifest must not claim a
    // WAL record that a power cut could still take back: recovery would then skip the
    // records numbered after it (issue 13 item 1).
    inner.wal.wait_durable(frozen.max_lsn())?;
    let mut meta = inner.meta.lock();
    let mut next = meta.clone();
    next.table_ids.insert(0, table.id());
    next.flushed_lsn = next.flushed_lsn.max(frozen.max_lsn());
    next.store(&inner.fs, &inner.dir)?;
    *meta = next;
    let mut view = inner.view.write();
    let frozen_left = view
        .frozen
        .iter()
        .filter(|m| !Arc::ptr_eq(m, frozen))
        .cloned()
        .collect();
    let mut tables = vec![table];
    tables.extend(view.tables.iter().cloned());
    *view = Arc::new(View {
        frozen: frozen_left,
        tables,
    });
    Ok(())
}
