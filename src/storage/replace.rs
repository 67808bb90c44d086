//! Replacing the whole engine content at once (snapshot install).
//!
//! With writers and compaction excluded and no frozen memtable pending, the new content is
//! written as one SSTable, a manifest naming only it is stored with `flushed_lsn` set to the
//! last WAL LSN (so replay skips every older write batch), and only then are the memtable and
//! the view swapped. A crash before the manifest is durable leaves the old state intact; after
//! it, the new state.

use std::sync::Arc;

use super::engine::{Engine, View};
use super::error::Result;
use super::flush::build_table;
use super::memtable::MemTable;
use super::sstable::TableEntry;

impl Engine {
    /// Atomically replaces all content by `entries` (sorted by strictly increasing key, no
    /// tombstones). Returns once the new content is durable.
    pub fn replace_all(&self, entries: Vec<TableEntry>) -> Result<()> {
        let inner = &self.inner;
        let _writer = inner.write_lock.lock();
        let _compacting = inner.compaction_lock.lock();
        inner.check_poisoned()?;
        inner.freeze(true)?;
        inner.wait_frozen_below(1)?;
        assert!(
            entries.iter().all(|e| !e.tombstone),
            "replacement content has no tombstones"
        );
        let table = if entries.is_empty() {
            None
        } else {
            Some(build_table(inner, entries)?)
        };
        // Writers are excluded, so no write batch comes after `covered_lsn`; the manifest
        // claims it only once it is durable (it never runs ahead of the WAL).
        let covered_lsn = inner.wal.last_lsn();
        inner.wal.wait_durable(covered_lsn)?;
        let old_tables = inner.view.read().tables.clone();
        let mut active = inner.active.write();
        {
            let mut meta = inner.meta.lock();
            let mut next = meta.clone();
            next.table_ids = table.iter().map(|t| t.id()).collect();
            next.flushed_lsn = covered_lsn;
            if let Err(error) = next.store(&inner.fs, &inner.dir) {
                inner.poison(&error);
                return Err(error);
            }
            *meta = next;
            *inner.view.write() = Arc::new(View {
                frozen: Vec::new(),
                tables: table.into_iter().collect(),
            });
        }
        *active = MemTable::new();
        drop(active);
        for old in &old_tables {
            inner.fs.remove_file(old.path())?;
        }
        inner.fs.sync_dir(&inner.dir)?;
        inner.purge_wal()
    }
}
