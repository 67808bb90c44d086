//! Opening an engine directory: load the manifest, open and validate its tables, delete
//! leftovers of interrupted work, and replay the WAL into a fresh memtable.
//!
//! Leftovers: `*.tmp` files (a write that never reached its rename) and table files the
//! manifest does not name (a flush or compaction that crashed before its manifest became
//! durable, or a compaction input deleted late). Neither can hold data the WAL and the
//! manifest's tables do not.

use std::path::Path;
use std::sync::Arc;

use super::batch::{WRITE_BATCH_KIND, WriteBatch};
use super::engine::EngineOptions;
use super::error::Result;
use super::manifest::Manifest;
use super::memtable::MemTable;
use super::sstable::{SsTable, parse_table_file_name, table_file_name};
use super::wal::{Lsn, Wal};

pub(super) struct Recovered {
    pub wal: Wal,
    pub memtable: MemTable,
    pub tables: Vec<Arc<SsTable>>,
    pub manifest: Manifest,
    /// Holds the directory lock while open.
    pub lock: std::fs::File,
}

pub(super) fn recover(
    dir: &Path,
    options: &EngineOptions,
    mut on_record: impl FnMut(Lsn, u8, &[u8]) -> Result<()>,
) -> Result<Recovered> {
    let fs = &options.wal.fs;
    fs.create_dir_all(dir)?;
    let lock = fs.lock_dir(dir)?;
    let stored = Manifest::load(fs, dir)?;
    let manifest = stored.clone().unwrap_or(Manifest {
        next_table_id: 1,
        flushed_lsn: 0,
        table_ids: Vec::new(),
    });
    let mut tables = Vec::with_capacity(manifest.table_ids.len());
    for &id in &manifest.table_ids {
        tables.push(Arc::new(SsTable::open(
            fs,
            &dir.join(table_file_name(id)),
            id,
        )?));
    }
    remove_leftovers(options, dir, &manifest)?;
    let mut memtable = MemTable::new();
    let flushed_lsn = manifest.flushed_lsn;
    // Numbering resumes above `flushed_lsn` even if a power cut shortened the log below it.
    let (wal, stats) =
        Wal::open_above(dir, options.wal.clone(), flushed_lsn, |lsn, kind, body| {
            if kind != WRITE_BATCH_KIND {
                return on_record(lsn, kind, body);
            }
            if lsn > flushed_lsn {
                for (key, slot) in WriteBatch::decode(body, lsn)?.ops {
                    memtable.apply(key, slot, lsn);
                }
            }
            Ok(())
        })?;
    log::info!(
        "{}: opened {} tables, replayed {} WAL records from {} segments",
        dir.display(),
        tables.len(),
        stats.records,
        stats.segments
    );
    if stored.is_none() {
        manifest.store(fs, dir)?;
    }
    Ok(Recovered {
        wal,
        memtable,
        tables,
        manifest,
        lock,
    })
}

fn remove_leftovers(options: &EngineOptions, dir: &Path, manifest: &Manifest) -> Result<()> {
    let fs = &options.wal.fs;
    let mut removed = 0;
    for name in fs.list_dir(dir)? {
        let orphan_table =
            parse_table_file_name(&name).is_some_and(|id| !manifest.table_ids.contains(&id));
        if orphan_table || name.ends_with(".tmp") {
            log::warn!("{}: removing leftover file {name}", dir.display());
            fs.remove_file(&dir.join(&name))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fs.sync_dir(dir)?;
    }
    Ok(())
}
