//! The LSM engine: WAL + active memtable + frozen memtables + SSTables, with a background
//! flusher and compactor.
//!
//! Read path: active memtable, frozen memtables newest first, SSTables newest first; the first
//! slot found wins (a tombstone means "absent"). Readers take the active memtable's read lock
//! and clone an `Arc<View>` (frozen + tables) while holding it; writers freeze under the
//! active write lock and then swap the view, so a reader never misses an entry that is moving
//! from the active table to a frozen one. Flush and compaction swap the view atomically; old
//! views stay valid for readers that still hold them.
//!
//! Lock order: `write_lock` → `compaction_lock` → `active` → `meta` → `background` → `view`.
//!
//! Durability: a write batch is one WAL record; it is applied to the active memtable right
//! after it is queued (so it is visible before it is durable) and [`Engine::write`] returns
//! only after the record is durable. The WAL is the source of truth for a memtable until its
//! SSTable and a manifest naming it are durable; only then may WAL segments be deleted.
//!
//! Fail-stop: a failed WAL sync, flush, compaction or manifest write poisons the engine; every
//! later write returns `Poisoned`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use super::batch::{WRITE_BATCH_KIND, WriteBatch};
use super::error::{Result, StorageError};
use super::fs::Fs;
use super::manifest::Manifest;
use super::memtable::{MemTable, SlotRef};
use super::merge::{MergeIter, SourceIter};
use super::recovery::recover;
use super::sstable::SsTable;
use super::wal::{Lsn, Wal, WalOptions};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Freeze and flush the active memtable once it holds this many (approximate) bytes.
    pub flush_threshold_bytes: usize,
    /// Frozen memtables waiting for flush; a writer that would exceed it waits (backpressure).
    pub frozen_memtables_max: usize,
    /// Background compaction merges a run of this many tables of one size class
    /// (see `compaction_policy`).
    pub compaction_trigger_tables: usize,
    /// At most this many tables are merged by one compaction.
    pub compaction_inputs_max: usize,
    /// Run compaction in the background (tests may turn it off and call `compact`).
    pub background_compaction: bool,
    /// When true, WAL segments are kept until the caller releases them with
    /// [`Engine::release_wal_before`] (needed when the caller logs its own record kinds).
    pub caller_pins_wal: bool,
    pub wal: WalOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            flush_threshold_bytes: 4 * 1024 * 1024,
            frozen_memtables_max: 2,
            compaction_trigger_tables: 4,
            compaction_inputs_max: 8,
            background_compaction: true,
            caller_pins_wal: true,
            wal: WalOptions::default(),
        }
    }
}

/// The read structure besides the active memtable. Immutable; replaced as a whole.
#[derive(Debug, Default)]
pub struct View {
    /// Frozen memtables waiting for flush, newest first.
    pub frozen: Vec<Arc<MemTable>>,
    /// Live SSTables, newest first.
    pub tables: Vec<Arc<SsTable>>,
}

/// Background-work signalling.
#[derive(Debug, Default)]
pub(super) struct Background {
    pub shutdown: bool,
    pub compaction_wanted: bool,
}

pub(super) struct Inner {
    pub dir: PathBuf,
    pub options: EngineOptions,
    pub fs: Fs,
    pub wal: Wal,
    pub write_lock: Mutex<()>,
    pub compaction_lock: Mutex<()>,
    pub active: RwLock<MemTable>,
    pub view: RwLock<Arc<View>>,
    /// The manifest as last stored; held while a new one is written.
    pub meta: Mutex<Manifest>,
    pub background: Mutex<Background>,
    /// Signalled on: frozen memtable added or flushed, compaction wanted, shutdown.
    pub background_changed: Condvar,
    pub poisoned: Mutex<Option<String>>,
    /// First WAL LSN the caller still needs (see `caller_pins_wal`).
    pub caller_floor_lsn: AtomicU64,
    /// The locked `LOCK` file; dropping it releases the data directory.
    pub _dir_lock: std::fs::File,
}

/// The storage engine handle. All methods take `&self`; it is `Send + Sync`.
pub struct Engine {
    pub(super) inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Opens or creates the engine in `dir`. WAL records of kinds other than the engine's are
    /// passed to `on_record(lsn, kind, body)` in LSN order.
    pub fn open(
        dir: &Path,
        options: EngineOptions,
        on_record: impl FnMut(Lsn, u8, &[u8]) -> Result<()>,
    ) -> Result<Engine> {
        let recovered = recover(dir, &options, on_record)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            fs: options.wal.fs.clone(),
            options,
            wal: recovered.wal,
            write_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            active: RwLock::new(recovered.memtable),
            view: RwLock::new(Arc::new(View {
                frozen: Vec::new(),
                tables: recovered.tables,
            })),
            meta: Mutex::new(recovered.manifest),
            background: Mutex::new(Background::default()),
            background_changed: Condvar::new(),
            poisoned: Mutex::new(None),
            caller_floor_lsn: AtomicU64::new(0),
            _dir_lock: recovered.lock,
        });
        let mut workers = vec![super::flush::spawn_flusher(Arc::clone(&inner))?];
        if inner.options.background_compaction {
            workers.push(super::compaction::spawn_compactor(Arc::clone(&inner))?);
        }
        let engine = Engine { inner, workers };
        {
            let _writer = engine.inner.write_lock.lock();
            engine.inner.maybe_freeze()?; // replay may have filled the memtable
        }
        Ok(engine)
    }

    /// Applies `batch` atomically and returns once it is durable.
    pub fn write(&self, batch: &WriteBatch) -> Result<Lsn> {
        let lsn = self.write_nowait(batch)?;
        self.inner.wal.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Queues `batch` in the WAL and applies it to the memtable; durable once
    /// [`Engine::wait_durable`] returns for the LSN.
    pub fn write_nowait(&self, batch: &WriteBatch) -> Result<Lsn> {
        self.write_owned_nowait(batch.clone())
    }

    /// [`Engine::write_nowait`] of a batch the caller gives up: its keys and values move into
    /// the memtable instead of being copied (the per-block state batch is the storage thread's
    /// largest, and the copy and the later free of the original showed in its profile).
    pub fn write_owned_nowait(&self, batch: WriteBatch) -> Result<Lsn> {
        self.inner.check_poisoned()?;
        let _writer = self.inner.write_lock.lock();
        let lsn = self.inner.wal.append(WRITE_BATCH_KIND, &batch.encode())?;
        {
            let mut active = self.inner.active.write();
            for (key, slot) in batch.ops {
                active.apply(key, slot, lsn);
            }
        }
        self.inner.maybe_freeze()?;
        Ok(lsn)
    }

    /// Appends a caller record (any kind but the engine's) to the shared WAL, not waiting.
    pub fn append_record(&self, kind: u8, body: &[u8]) -> Result<Lsn> {
        if kind == WRITE_BATCH_KIND {
            return Err(StorageError::invalid(format!(
                "WAL record kind {kind} is reserved for the engine"
            )));
        }
        self.inner.check_poisoned()?;
        self.inner.wal.append(kind, body)
    }

    /// Blocks until every WAL record up to `lsn` is durable.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.inner.wal.wait_durable(lsn)
    }

    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Tells the engine the caller no longer needs its WAL records below `lsn`.
    pub fn release_wal_before(&self, lsn: Lsn) -> Result<()> {
        self.inner.caller_floor_lsn.fetch_max(lsn, Ordering::SeqCst);
        self.inner.purge_wal()
    }

    /// Calls `read` with the newest value of `key` (`None` if absent), borrowed in place: an
    /// SSTable hit neither copies nor allocates.
    pub fn get_with<R>(&self, key: &[u8], read: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let active = self.inner.active.read();
        if let Some(slot) = active.get(key) {
            return read(put_value(slot));
        }
        let view = Arc::clone(&self.inner.view.read());
        drop(active);
        for frozen in &view.frozen {
            if let Some(slot) = frozen.get(key) {
                return read(put_value(slot));
            }
        }
        for table in &view.tables {
            if let Some(slot) = table.get(key) {
                return read(put_value(slot));
            }
        }
        read(None)
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with(key, |value| value.map(<[u8]>::to_vec))
    }

    /// Visits live entries with `start <= key < end` in key order until `visit` returns false.
    /// Holds the active memtable's read lock meanwhile (writers wait), so keep `visit` short.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) {
        if end.is_some_and(|end| end <= start) {
            return; // empty range (and BTreeMap::range would panic on start > end)
        }
        let active = self.inner.active.read();
        let view = Arc::clone(&self.inner.view.read());
        let mut sources: Vec<SourceIter<'_>> = vec![Box::new(active.range(start, end))];
        sources.extend(
            view.frozen
                .iter()
                .map(|m| Box::new(m.range(start, end)) as SourceIter<'_>),
        );
        sources.extend(
            view.tables
                .iter()
                .map(|t| Box::new(t.range(start, end)) as SourceIter<'_>),
        );
        for (key, slot) in MergeIter::new(sources) {
            if let SlotRef::Put(value) = slot
                && !visit(key, value)
            {
                break;
            }
        }
    }

    /// Up to `limit` live entries with `start <= key < end`, copied out.
    pub fn range(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.scan(start, end, |key, value| {
            out.push((key.to_vec(), value.to_vec()));
            out.len() < limit
        });
        out
    }

    /// Freezes the active memtable and waits until every frozen memtable is an SSTable.
    pub fn flush(&self) -> Result<()> {
        {
            let _writer = self.inner.write_lock.lock();
            self.inner.freeze(true)?;
        }
        self.inner.wait_frozen_below(1)
    }

    /// Merges the oldest tables (up to `compaction_inputs_max`) now, if at least two are live;
    /// returns whether it did. The background compactor uses the size-tiered policy instead.
    pub fn compact(&self) -> Result<bool> {
        super::compaction::compact_once(&self.inner, super::compaction::Choice::Oldest)
    }

    /// Number of live SSTables (tests and metrics).
    /// Bytes this engine holds on disk: its WAL segments and live SSTables (the SSTable sizes
    /// are known; the WAL costs a `stat` per segment). Cheap enough for every metrics scrape.
    pub fn disk_bytes(&self) -> u64 {
        let tables: u64 = self
            .inner
            .view
            .read()
            .tables
            .iter()
            .map(|t| t.file_len_bytes())
            .sum();
        tables + self.inner.wal.disk_bytes()
    }

    pub fn table_count(&self) -> usize {
        self.inner.view.read().tables.len()
    }

    /// The file-system handle (with its fault plan, if any).
    pub fn fs(&self) -> &Fs {
        &self.inner.fs
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The poison reason, if the engine has stopped acknowledging writes.
    pub fn poisoned(&self) -> Option<String> {
        self.inner
            .poisoned
            .lock()
            .clone()
            .or_else(|| self.inner.wal.poisoned())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.background.lock().shutdown = true;
        self.inner.background_changed.notify_all();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("storage background thread panicked");
            }
        }
    }
}

fn put_value(slot: SlotRef<'_>) -> Option<&[u8]> {
    match slot {
        SlotRef::Put(value) => Some(value),
        SlotRef::Delete => None,
    }
}

impl Inner {
    pub fn check_poisoned(&self) -> Result<()> {
        if let Some(reason) = self.poisoned.lock().clone().or_else(|| self.wal.poisoned()) {
            return Err(StorageError::Poisoned { reason });
        }
        Ok(())
    }

    pub fn poison(&self, error: &StorageError) {
        log::error!("storage engine poisoned: {error}");
        self.poisoned
            .lock()
            .get_or_insert_with(|| error.to_string());
        // Notify under the lock so a waiter between its check and its wait cannot miss it.
        let _signal = self.background.lock();
        self.background_changed.notify_all();
    }

    /// Caller holds `write_lock`. Freezes the active memtable if it passed the threshold.
    pub fn maybe_freeze(&self) -> Result<()> {
        if self.active.read().approx_bytes() >= self.options.flush_threshold_bytes {
            self.freeze(false)?;
        }
        Ok(())
    }

    /// Caller holds `write_lock`. Moves the active memtable to the frozen list (waiting for
    /// room below `frozen_memtables_max`) and wakes the flusher.
    pub fn freeze(&self, even_if_small: bool) -> Result<()> {
        if self.active.read().is_empty() {
            return Ok(());
        }
        self.wait_frozen_below(self.options.frozen_memtables_max)?;
        let mut active = self.active.write();
        if !even_if_small && active.approx_bytes() < self.options.flush_threshold_bytes {
            return Ok(());
        }
        let frozen = Arc::new(std::mem::take(&mut *active));
        let mut view = self.view.write();
        let mut frozen_list = vec![frozen];
        frozen_list.extend(view.frozen.iter().cloned());
        *view = Arc::new(View {
            frozen: frozen_list,
            tables: view.tables.clone(),
        });
        drop(view);
        drop(active);
        let _signal = self.background.lock();
        self.background_changed.notify_all();
        Ok(())
    }

    /// Waits until fewer than `count` frozen memtables remain, or the engine is poisoned.
    pub fn wait_frozen_below(&self, count: usize) -> Result<()> {
        let mut background = self.background.lock();
        loop {
            self.check_poisoned()?;
            if self.view.read().frozen.len() < count {
                return Ok(());
            }
            self.background_changed.wait(&mut background);
        }
    }

    /// Deletes WAL segments everything in which is captured by durable tables + manifest
    /// (and, if the caller pins the WAL, released by the caller).
    pub fn purge_wal(&self) -> Result<()> {
        let mut floor = self.meta.lock().flushed_lsn + 1;
        if self.options.caller_pins_wal {
            floor = floor.min(self.caller_floor_lsn.load(Ordering::SeqCst));
        }
        self.wal.purge_before(floor).map(|_| ())
    }
}
