//! Compaction: merges the oldest run of SSTables into one, in a background thread.
//!
//! Inputs are always the *oldest* `k` live tables (a suffix of the newest-first list), so the
//! output takes their place at the end of the list and the newest-first order stays valid
//! while flushes keep prepending tables. Shadowed versions are dropped; a tombstone is dropped
//! only when the inputs include the oldest live table, because only then can no older table
//! still hold the key it hides.
//!
//! Readers are never blocked: the merge reads mmapped inputs through an `Arc` snapshot of the
//! view, and the swap replaces the view under a short write lock. Inputs are unlinked after
//! the new manifest is durable; readers still holding them keep valid mappings.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::engine::{Inner, View};
use super::error::{Result, StorageError};
use super::flush::{build_table, table_entry};
use super::memtable::SlotRef;
use super::merge::{MergeIter, SourceIter};
use super::sstable::{SsTable, TableEntry};

pub(super) fn spawn_compactor(inner: Arc<Inner>) -> Result<JoinHandle<()>> {
    let dir = inner.dir.clone();
    std::thread::Builder::new()
        .name("storage-compact".into())
        .spawn(move || compactor_loop(&inner))
        .map_err(|e| StorageError::io(&dir, "spawn compactor", e))
}

fn compactor_loop(inner: &Inner) {
    loop {
        {
            let mut background = inner.background.lock();
            while !background.shutdown && !background.compaction_wanted {
                inner.background_changed.wait(&mut background);
            }
            if background.shutdown {
                return;
            }
            background.compaction_wanted = false;
        }
        if let Err(error) = compact_once(inner, inner.options.compaction_trigger_tables) {
            inner.poison(&error);
            return;
        }
    }
}

/// Compacts if at least `tables_min` (and at least 2) tables are live. Returns whether it did.
pub(super) fn compact_once(inner: &Inner, tables_min: usize) -> Result<bool> {
    let _compacting = inner.compaction_lock.lock();
    inner.check_poisoned()?;
    let tables = inner.view.read().tables.clone();
    if tables.len() < tables_min.max(2) {
        return Ok(false);
    }
    let take = tables.len().min(inner.options.compaction_inputs_max.max(2));
    let inputs: Vec<Arc<SsTable>> = tables[tables.len() - take..].to_vec();
    let includes_oldest = true; // inputs are the oldest suffix of the list, by construction
    let entries = merge_inputs(&inputs, includes_oldest);
    let output = if entries.is_empty() {
        None
    } else {
        Some(build_table(inner, entries)?)
    };
    install_output(inner, &inputs, output)?;
    for input in &inputs {
        inner.fs.remove_file(input.path())?;
    }
    inner.fs.sync_dir(&inner.dir)?;
    Ok(true)
}

/// Merges tables given newest first; keeps the newest slot per key.
pub(super) fn merge_inputs(inputs: &[Arc<SsTable>], drop_tombstones: bool) -> Vec<TableEntry> {
    let sources: Vec<SourceIter<'_>> = inputs
        .iter()
        .map(|t| Box::new(t.iter()) as SourceIter<'_>)
        .collect();
    MergeIter::new(sources)
        .filter(|(_, slot)| !(drop_tombstones && *slot == SlotRef::Delete))
        .map(|(key, slot)| table_entry(key, slot))
        .collect()
}

/// Replaces `inputs` (the oldest tables) by `output` in the manifest, then in the view.
fn install_output(
    inner: &Inner,
    inputs: &[Arc<SsTable>],
    output: Option<Arc<SsTable>>,
) -> Result<()> {
    let input_ids: HashSet<u64> = inputs.iter().map(|t| t.id()).collect();
    let mut meta = inner.meta.lock();
    let mut next = meta.clone();
    let kept = next.table_ids.len() - inputs.len();
    assert!(
        next.table_ids[kept..]
            .iter()
            .all(|id| input_ids.contains(id)),
        "compaction inputs must be the oldest tables"
    );
    next.table_ids.truncate(kept);
    next.table_ids.extend(output.as_ref().map(|t| t.id()));
    next.store(&inner.fs, &inner.dir)?;
    *meta = next;
    let mut view = inner.view.write();
    let mut tables: Vec<Arc<SsTable>> = view
        .tables
        .iter()
        .filter(|t| !input_ids.contains(&t.id()))
        .cloned()
        .collect();
    tables.extend(output);
    *view = Arc::new(View {
        frozen: view.frozen.clone(),
        tables,
    });
    Ok(())
}
