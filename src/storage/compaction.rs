//! Compaction: merges a contiguous run of SSTables into one, in a background thread.
//!
//! The background compactor picks runs size-tiered ([`super::compaction_policy`]);
//! [`super::Engine::compact`] merges the oldest tables (up to `compaction_inputs_max`). Inputs
//! are always contiguous in the newest-first list, so the output takes their place and the
//! newest-first order stays valid while flushes keep prepending tables. Shadowed versions are
//! dropped; a tombstone is dropped only when the inputs include the oldest live table, because
//! only then can no older table still hold the key it hides.
//!
//! Readers are never blocked: the merge reads mmapped inputs through an `Arc` snapshot of the
//! view, and the swap replaces the view under a short write lock. Inputs are unlinked after
//! the new manifest is durable; readers still holding them keep valid mappings.

use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::compaction_policy::pick_run;
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
        // One merge may complete the next tier: repeat while there is work. Bounded: each
        // compaction removes at least one table.
        loop {
            match compact_once(inner, Choice::Tiered) {
                Ok(true) if !inner.background.lock().shutdown => continue,
                Ok(_) => break,
                Err(error) => {
                    inner.poison(&error);
                    return;
                }
            }
        }
    }
}

/// How [`compact_once`] chooses its inputs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Choice {
    /// Background policy: the newest full size tier.
    Tiered,
    /// The oldest tables, up to `compaction_inputs_max`, if at least two are live.
    Oldest,
}

fn choose(inner: &Inner, tables: &[Arc<SsTable>], choice: Choice) -> Option<Range<usize>> {
    let inputs_max = inner.options.compaction_inputs_max.max(2);
    match choice {
        Choice::Tiered => {
            let sizes: Vec<u64> = tables.iter().map(|t| t.file_len_bytes()).collect();
            pick_run(&sizes, inner.options.compaction_trigger_tables, inputs_max)
        }
        Choice::Oldest => {
            (tables.len() >= 2).then(|| tables.len().saturating_sub(inputs_max)..tables.len())
        }
    }
}

/// Runs one compaction if `choice` finds inputs. Returns whether it did.
pub(super) fn compact_once(inner: &Inner, choice: Choice) -> Result<bool> {
    let _compacting = inner.compaction_lock.lock();
    inner.check_poisoned()?;
    let tables = inner.view.read().tables.clone();
    let Some(run) = choose(inner, &tables, choice) else {
        return Ok(false);
    };
    let inputs: Vec<Arc<SsTable>> = tables[run.clone()].to_vec();
    // Only new tables can appear (at the front), so "includes the oldest" stays true.
    let includes_oldest = run.end == tables.len();
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

/// Where the contiguous `inputs` sit in `ids` (newest first). Panics if they are not there
/// contiguously: only compaction removes tables and it runs under `compaction_lock`.
fn run_position(ids: &[u64], inputs: &[Arc<SsTable>]) -> Range<usize> {
    let start = ids
        .iter()
        .position(|&id| id == inputs[0].id())
        .unwrap_or(ids.len());
    let run = start..start + inputs.len();
    let found = ids
        .get(run.clone())
        .is_some_and(|window| window.iter().zip(inputs).all(|(&id, t)| id == t.id()));
    assert!(found, "compaction inputs must still be live and contiguous");
    run
}

/// Replaces the `inputs` run by `output` in the manifest, then in the view.
fn install_output(
    inner: &Inner,
    inputs: &[Arc<SsTable>],
    output: Option<Arc<SsTable>>,
) -> Result<()> {
    let mut meta = inner.meta.lock();
    let mut next = meta.clone();
    let run = run_position(&next.table_ids, inputs);
    next.table_ids.splice(run, output.as_ref().map(|t| t.id()));
    next.store(&inner.fs, &inner.dir)?;
    *meta = next;
    let mut view = inner.view.write();
    let ids: Vec<u64> = view.tables.iter().map(|t| t.id()).collect();
    let run = run_position(&ids, inputs);
    let mut tables = view.tables.clone();
    tables.splice(run, output);
    *view = Arc::new(View {
        frozen: view.frozen.clone(),
        tables,
    });
    Ok(())
}
