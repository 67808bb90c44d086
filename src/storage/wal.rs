//! The write-ahead log: generic, group-committed, segmented.
//!
//! Records are opaque bytes with a caller-chosen `kind` (the engine uses one kind for KV write
//! batches; the node runtime uses others for safety state and blocks). Each record gets a log
//! sequence number (LSN), starting at 1 and increasing by one per record.
//!
//! Group commit: [`Wal::append`] encodes the record into a shared pending buffer and returns its
//! LSN at once. One committer thread repeatedly takes the whole pending buffer, writes it to the
//! active segment and calls `fdatasync` once; while it syncs, producers fill the next buffer.
//! A record is durable once [`Wal::durable_lsn`] reaches its LSN; [`Wal::wait_durable`] blocks
//! until then. The pending buffer is bounded by `queue_bytes_max` (producers wait for space).
//!
//! Invariants: `durable_lsn <= last assigned LSN`; records reach the file in LSN order; a
//! segment is synced before the next is created. Any write or sync failure poisons the WAL:
//! no later record is ever reported durable (a failed fsync may have dropped dirty pages, so
//! retrying it could report data durable that is not).
//!
//! Each group commit starts with a batch marker (see `segment.rs`): proof, for replay after a
//! power cut, that everything written before it was synced. Bad bytes after the last marker
//! are a torn tail; bad bytes before it are corruption.
//!
//! Numbering after a power cut: [`Wal::open_above`] takes the highest LSN the caller has
//! captured elsewhere (the engine's `flushed_lsn`) and never numbers a new record at or below
//! it, so a record acknowledged after the restart is never mistaken for a captured one.
//!
//! Segments roll at `segment_bytes_max` (checked per batch, so a segment may exceed it by one
//! batch) and are deleted by [`Wal::purge_before`] once the caller says everything in them is
//! captured elsewhere (SSTable + manifest, or snapshot).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::error::{Result, StorageError};
use super::fs::Fs;
use super::record::{RECORD_PAYLOAD_BYTES_MAX, encode_record, framed_len};
use super::segment::{
    BATCH_MARKER_KIND, MARKER_FRAMED_BYTES, SegmentInfo, encode_batch_marker,
    parse_segment_file_name, scan_segment, segment_file_name,
};

/// Log sequence number of a record. 0 means "no record".
pub type Lsn = u64;

/// Largest segment file replay will read into memory.
const SEGMENT_READ_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Roll to a new segment once the active one would pass this size.
    pub segment_bytes_max: u64,
    /// Bound on bytes queued for the next group commit; producers block beyond it.
    pub queue_bytes_max: usize,
    pub fs: Fs,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            queue_bytes_max: 16 * 1024 * 1024,
            fs: Fs::default(),
        }
    }
}

struct WalState {
    pending: Vec<u8>,
    /// LSN the next appended record gets.
    next_lsn: Lsn,
    durable_lsn: Lsn,
    poisoned: Option<String>,
    shutdown: bool,
    /// Threads blocked in `wait_durable` (diagnostics and tests).
    durable_waiters: usize,
    /// The committer is parked on `work_ready` (so appends know whether to wake it: a futex
    /// wake per append would cost more than the append under many writers).
    committer_idle: bool,
    /// Live segments, oldest first; the last one is the active segment.
    segments: VecDeque<SegmentInfo>,
}

struct WalShared {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<WalState>,
    /// Signalled when the pending buffer gets data or shutdown is requested.
    work_ready: Condvar,
    /// Signalled after each commit (durability advanced, space freed) or poisoning.
    progress: Condvar,
}

/// The write-ahead log handle. Appends may come from any number of threads (`&self`).
pub struct Wal {
    shared: Arc<WalShared>,
    committer: Option<JoinHandle<()>>,
}

/// What [`Wal::open`] found while replaying.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    pub records: u64,
    pub segments: u64,
    pub torn_tail_bytes: u64,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, passing every record to `visit(lsn, kind, body)` in
    /// LSN order, truncating a torn tail, and starting a fresh active segment.
    pub fn open(
        dir: &Path,
        options: WalOptions,
        visit: impl FnMut(Lsn, u8, &[u8]) -> Result<()>,
    ) -> Result<(Wal, ReplayStats)> {
        Wal::open_above(dir, options, 0, visit)
    }

    /// [`Wal::open`] for a caller that has captured every record up to `captured_lsn`
    /// elsewhere: LSNs in `(end of the log, captured_lsn]` may be missing (a power cut took
    /// them after the caller captured them), and new records are numbered above
    /// `captured_lsn`, never at or below it.
    pub fn open_above(
        dir: &Path,
        options: WalOptions,
        captured_lsn: Lsn,
        mut visit: impl FnMut(Lsn, u8, &[u8]) -> Result<()>,
    ) -> Result<(Wal, ReplayStats)> {
        let fs = options.fs.clone();
        fs.create_dir_all(dir)?;
        let mut segments = list_segments(&fs, dir)?;
        let mut stats = ReplayStats::default();
        let mut next_lsn: Lsn = segments.front().map_or(1, |s| s.first_lsn);
        if let Some(first) = segments.front().filter(|s| s.first_lsn == 0) {
            return Err(StorageError::corrupt(
                &first.path,
                0,
                "segment named with LSN 0 (LSNs start at 1)",
            ));
        }
        let count = segments.len();
        for (index, segment) in segments.iter().enumerate() {
            // A segment may start above the expected LSN only where every LSN skipped is
            // captured (the previous open renumbered above `captured_lsn`).
            if segment.first_lsn > next_lsn && segment.first_lsn <= captured_lsn + 1 {
                next_lsn = segment.first_lsn;
            }
            if segment.first_lsn != next_lsn {
                let reason = format!(
                    "segment starts at LSN {} but LSN {next_lsn} was expected (missing segment?)",
                    segment.first_lsn
                );
                return Err(StorageError::corrupt(&segment.path, 0, reason));
            }
            let (records, torn) =
                replay_segment(&fs, segment, next_lsn, index + 1 == count, &mut visit)?;
            next_lsn += records;
            stats.records += records;
            stats.torn_tail_bytes += torn;
            stats.segments += 1;
        }
        if next_lsn <= captured_lsn {
            log::warn!(
                "{}: the log ends at LSN {} but LSNs up to {captured_lsn} are captured; \
                 numbering resumes at {}",
                dir.display(),
                next_lsn - 1,
                captured_lsn + 1
            );
            next_lsn = captured_lsn + 1;
        }
        // Start a fresh segment so a truncated tail is never appended to in place.
        if segments.back().is_some_and(|s| s.first_lsn == next_lsn) {
            segments.pop_back(); // empty segment: `create` below truncates and reuses its name
        }
        let active = SegmentInfo {
            first_lsn: next_lsn,
            path: dir.join(segment_file_name(next_lsn)),
        };
        let file = fs.create(&active.path)?;
        fs.sync_dir(dir)?;
        segments.push_back(active);
        let state = WalState {
            pending: Vec::with_capacity(64 * 1024),
            next_lsn,
            durable_lsn: next_lsn - 1,
            poisoned: None,
            shutdown: false,
            durable_waiters: 0,
            committer_idle: false,
            segments,
        };
        let shared = Arc::new(WalShared {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(state),
            work_ready: Condvar::new(),
            progress: Condvar::new(),
        });
        let committer = spawn_committer(Arc::clone(&shared), file)?;
        Ok((
            Wal {
                shared,
                committer: Some(committer),
            },
            stats,
        ))
    }

    /// Queues a record and returns its LSN. The record is durable only once
    /// [`Wal::wait_durable`] returns `Ok` for this LSN (or a later one).
    pub fn append(&self, kind: u8, body: &[u8]) -> Result<Lsn> {
        if kind == BATCH_MARKER_KIND {
            return Err(StorageError::invalid(format!(
                "WAL record kind {kind} is reserved for batch markers"
            )));
        }
        let record_len = framed_len(body.len());
        if body.len() + 1 > RECORD_PAYLOAD_BYTES_MAX
            || record_len > self.shared.options.queue_bytes_max
        {
            return Err(StorageError::invalid(format!(
                "WAL record of {} bytes exceeds the limit",
                body.len()
            )));
        }
        let mut state = self.shared.state.lock();
        loop {
            if let Some(reason) = &state.poisoned {
                return Err(StorageError::Poisoned {
                    reason: reason.clone(),
                });
            }
            if state.pending.is_empty()
                || state.pending.len() + record_len <= self.shared.options.queue_bytes_max
            {
                break;
            }
            self.shared.progress.wait(&mut state);
        }
        encode_record(&mut state.pending, kind, body);
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        if state.committer_idle {
            self.shared.work_ready.notify_one();
        }
        Ok(lsn)
    }

    /// Blocks until every record up to `lsn` is durable, or the WAL is poisoned.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let mut state = self.shared.state.lock();
        assert!(
            lsn < state.next_lsn,
            "waiting for LSN {lsn} that was never assigned"
        );
        loop {
            if state.durable_lsn >= lsn {
                return Ok(());
            }
            if let Some(reason) = &state.poisoned {
                return Err(StorageError::Poisoned {
                    reason: reason.clone(),
                });
            }
            state.durable_waiters += 1;
            self.shared.progress.wait(&mut state);
            state.durable_waiters -= 1;
        }
    }

    /// Threads blocked in [`Wal::wait_durable`] right now (diagnostics and tests).
    pub fn durable_waiters(&self) -> usize {
        self.shared.state.lock().durable_waiters
    }

    /// `append` then `wait_durable`.
    pub fn append_durable(&self, kind: u8, body: &[u8]) -> Result<Lsn> {
        let lsn = self.append(kind, body)?;
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Highest LSN known durable (every record at or below it is on disk).
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.state.lock().durable_lsn
    }

    /// LSN of the most recently appended record (0 if none ever).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.state.lock().next_lsn - 1
    }

    /// The poison reason, if a write or sync has failed.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.state.lock().poisoned.clone()
    }

    /// Deletes every non-active segment whose records all have LSN `< floor_lsn`.
    /// Returns how many segments were deleted.
    pub fn purge_before(&self, floor_lsn: Lsn) -> Result<usize> {
        let mut doomed = Vec::new();
        {
            let mut state = self.shared.state.lock();
            while state.segments.len() >= 2 && state.segments[1].first_lsn <= floor_lsn {
                if let Some(segment) = state.segments.pop_front() {
                    doomed.push(segment);
                }
            }
        }
        let fs = &self.shared.options.fs;
        for segment in &doomed {
            fs.remove_file(&segment.path)?;
        }
        if !doomed.is_empty() {
            fs.sync_dir(&self.shared.dir)?;
        }
        Ok(doomed.len())
    }

    /// Bytes of the live segment files on disk: one `stat` per segment (there are a few; the
    /// active one grows between calls). A segment deleted meanwhile counts 0.
    pub fn disk_bytes(&self) -> u64 {
        let paths: Vec<PathBuf> = {
            let state = self.shared.state.lock();
            state.segments.iter().map(|s| s.path.clone()).collect()
        };
        paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Number of segment files currently live (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.shared.state.lock().segments.len()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.state.lock().shutdown = true;
        self.shared.work_ready.notify_all();
        if let Some(handle) = self.committer.take()
            && handle.join().is_err()
        {
            log::error!("WAL committer thread panicked");
        }
    }
}

fn list_segments(fs: &Fs, dir: &Path) -> Result<VecDeque<SegmentInfo>> {
    let mut segments: Vec<SegmentInfo> = fs
        .list_dir(dir)?
        .into_iter()
        .filter_map(|name| {
            parse_segment_file_name(&name).map(|first_lsn| SegmentInfo {
                first_lsn,
                path: dir.join(name),
            })
        })
        .collect();
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments.into())
}

/// Replays one segment; returns (records replayed, torn bytes dropped).
fn replay_segment(
    fs: &Fs,
    segment: &SegmentInfo,
    first_lsn: Lsn,
    is_last: bool,
    visit: &mut impl FnMut(Lsn, u8, &[u8]) -> Result<()>,
) -> Result<(u64, u64)> {
    let bytes = fs.read_file(&segment.path, SEGMENT_READ_BYTES_MAX)?;
    let scan = scan_segment(&bytes, &segment.path, first_lsn, is_last)?;
    for (index, record) in scan.records.iter().enumerate() {
        visit(first_lsn + index as u64, record.kind, record.body)?;
    }
    let torn_bytes = bytes.len() as u64 - scan.valid_len_bytes;
    if let Some(reason) = scan.torn_reason {
        log::warn!(
            "{}: torn tail at byte offset {} ({reason}); truncating {torn_bytes} bytes",
            segment.path.display(),
            scan.valid_len_bytes
        );
        let file = fs.open_rw(&segment.path)?;
        fs.set_len(&file, &segment.path, scan.valid_len_bytes)?;
        fs.sync_data(&file, &segment.path)?;
    }
    Ok((scan.records.len() as u64, torn_bytes))
}

fn spawn_committer(shared: Arc<WalShared>, file: File) -> Result<JoinHandle<()>> {
    let dir = shared.dir.clone();
    std::thread::Builder::new()
        .name("wal-commit".into())
        .spawn(move || committer_loop(&shared, file))
        .map_err(|e| StorageError::io(&dir, "spawn WAL committer", e))
}

/// The committer's view of the active segment.
struct ActiveSegment {
    file: File,
    path: PathBuf,
    len_bytes: u64,
    /// The next batch marker, encoded here (reused: no allocation per group commit).
    marker: Vec<u8>,
}

fn committer_loop(shared: &WalShared, file: File) {
    let path = shared
        .state
        .lock()
        .segments
        .back()
        .map(|s| s.path.clone())
        .unwrap_or_default();
    let mut active = ActiveSegment {
        file,
        path,
        len_bytes: 0,
        marker: Vec::with_capacity(MARKER_FRAMED_BYTES),
    };
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let (batch_first_lsn, last_lsn) = {
            let mut state = shared.state.lock();
            while state.pending.is_empty() && !state.shutdown {
                state.committer_idle = true;
                shared.work_ready.wait(&mut state);
                state.committer_idle = false;
            }
            if state.pending.is_empty() {
                return; // shutdown with nothing left to write
            }
            std::mem::swap(&mut state.pending, &mut spare);
            (state.durable_lsn + 1, state.next_lsn - 1)
        };
        let outcome = write_batch(shared, &mut active, &spare, batch_first_lsn);
        spare.clear();
        let mut state = shared.state.lock();
        match outcome {
            Ok(()) => state.durable_lsn = last_lsn,
            Err(error) => {
                log::error!("WAL poisoned: {error}");
                state.poisoned = Some(error.to_string());
            }
        }
        shared.progress.notify_all();
        if state.poisoned.is_some() {
            return;
        }
    }
}

/// Writes one group-commit batch behind its marker (rolling first if the segment is full)
/// and syncs it. The previous batch was synced before this one is written: that is what the
/// marker certifies.
fn write_batch(
    shared: &WalShared,
    active: &mut ActiveSegment,
    batch: &[u8],
    first_lsn: Lsn,
) -> Result<()> {
    let fs = &shared.options.fs;
    let batch_bytes = (MARKER_FRAMED_BYTES + batch.len()) as u64;
    if active.len_bytes > 0 && active.len_bytes + batch_bytes > shared.options.segment_bytes_max {
        // The current segment was synced by the previous batch, so it is complete on disk.
        let info = SegmentInfo {
            first_lsn,
            path: shared.dir.join(segment_file_name(first_lsn)),
        };
        let file = fs.create(&info.path)?;
        fs.sync_dir(&shared.dir)?;
        active.file = file;
        active.path = info.path.clone();
        active.len_bytes = 0;
        shared.state.lock().segments.push_back(info);
    }
    active.marker.clear();
    encode_batch_marker(&mut active.marker, active.len_bytes, first_lsn);
    fs.write_all(&mut active.file, &active.path, &active.marker)?;
    fs.write_all(&mut active.file, &active.path, batch)?;
    active.len_bytes += batch_bytes;
    fs.sync_data(&active.file, &active.path)
}
