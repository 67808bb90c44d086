//! Every file-system call the engine makes, as small functions over an [`Fs`] handle.
//!
//! Keeping all I/O here does two things: each error carries the path and the operation, and
//! tests can inject faults (a failing `fdatasync`, a full disk) through [`FaultPlan`] without
//! touching the real disk's behaviour. A handle without a plan costs one atomic load per call.
//!
//! With [`Fs::with_power_log`] every mutating call is also logged for the power-cut model
//! ([`super::power_cut`]), which rebuilds the durable image a power cut would leave.
//!
//! Durability rule (STYLE rule 8): a new file is durable only after write, `sync_data`,
//! rename into place, and `sync_dir` on the parent directory; [`Fs::write_file_durably`] does
//! exactly that sequence.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Result, StorageError};
use super::power_cut::FsOp;

/// Injected faults, shared by all clones of one [`Fs`]. `u64::MAX` means "never".
#[derive(Debug)]
pub struct FaultPlan {
    /// Number of successful syncs still allowed; the next one fails with EIO.
    syncs_left: AtomicU64,
    /// Number of bytes that may still be written; past it writes fail with "storage full".
    write_bytes_left: AtomicU64,
    /// Length of each file at its last successful `sync_data`: the "durable image" a power
    /// cut would leave (tests copy files truncated to these lengths).
    synced_len_bytes: parking_lot::Mutex<std::collections::HashMap<PathBuf, u64>>,
    /// The power-cut model's operation log, when enabled. Its lock is held across each real
    /// call so the log order is the order the calls took effect.
    power_log: Option<parking_lot::Mutex<Vec<FsOp>>>,
    /// `sync_data` of a file whose name starts with this waits until it is cleared (tests
    /// hold the WAL's fsync to open a race window deterministically).
    held_sync_prefix: parking_lot::Mutex<Option<String>>,
    held_sync_released: parking_lot::Condvar,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            syncs_left: AtomicU64::new(u64::MAX),
            write_bytes_left: AtomicU64::new(u64::MAX),
            synced_len_bytes: parking_lot::Mutex::new(std::collections::HashMap::new()),
            power_log: None,
            held_sync_prefix: parking_lot::Mutex::new(None),
            held_sync_released: parking_lot::Condvar::new(),
        }
    }
}

/// The file-system handle. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Fs {
    faults: Option<Arc<FaultPlan>>,
}

impl Fs {
    /// A handle with a fault plan attached (tests only need this).
    pub fn with_faults() -> Self {
        Fs {
            faults: Some(Arc::new(FaultPlan::default())),
        }
    }

    /// A handle with a fault plan that also logs every mutating call for the power-cut model
    /// (tests only: the log keeps every byte written).
    pub fn with_power_log() -> Self {
        Fs {
            faults: Some(Arc::new(FaultPlan {
                power_log: Some(parking_lot::Mutex::new(Vec::new())),
                ..FaultPlan::default()
            })),
        }
    }

    /// [`Fs::with_power_log`] over a directory that already holds data, which counts as
    /// durable (what a restart after a power cut finds on the disk).
    pub fn with_power_log_over(root: &Path) -> Result<Self> {
        let baseline = super::power_cut::baseline_ops(root)
            .map_err(|e| StorageError::io(root, "read tree", e))?;
        Ok(Fs {
            faults: Some(Arc::new(FaultPlan {
                power_log: Some(parking_lot::Mutex::new(baseline)),
                ..FaultPlan::default()
            })),
        })
    }

    /// With a power log: appends a test's note (e.g. what was just acknowledged).
    pub fn note(&self, note: impl Into<String>) {
        if let Some(log) = self.faults.as_ref().and_then(|p| p.power_log.as_ref()) {
            log.lock().push(FsOp::Note(note.into()));
        }
    }

    /// With a power log: a copy of the operations logged so far.
    pub fn power_log(&self) -> Vec<FsOp> {
        self.faults
            .as_ref()
            .and_then(|p| p.power_log.as_ref())
            .map(|log| log.lock().clone())
            .unwrap_or_default()
    }

    /// Runs `call`; with a power log, under the log's lock, logging `op()` if it succeeded.
    fn logged<T>(&self, op: impl FnOnce() -> FsOp, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(log) = self.faults.as_ref().and_then(|p| p.power_log.as_ref()) else {
            return call();
        };
        let mut log = log.lock();
        let out = call()?;
        log.push(op());
        Ok(out)
    }

    /// From now on, `sync_data` of files whose name starts with `name_prefix` blocks until
    /// [`Fs::release_syncs`].
    pub fn hold_syncs(&self, name_prefix: &str) {
        if let Some(plan) = &self.faults {
            *plan.held_sync_prefix.lock() = Some(name_prefix.to_string());
        }
    }

    /// Lets held syncs proceed.
    pub fn release_syncs(&self) {
        if let Some(plan) = &self.faults {
            *plan.held_sync_prefix.lock() = None;
            plan.held_sync_released.notify_all();
        }
    }

    fn wait_while_held(&self, path: &Path) {
        let Some(plan) = &self.faults else {
            return;
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mut held = plan.held_sync_prefix.lock();
        while held
            .as_deref()
            .is_some_and(|prefix| name.starts_with(prefix))
        {
            plan.held_sync_released.wait(&mut held);
        }
    }

    /// After `count` more successful syncs, every sync fails (EIO).
    pub fn fail_syncs_after(&self, count: u64) {
        if let Some(plan) = &self.faults {
            plan.syncs_left.store(count, Ordering::SeqCst);
        }
    }

    /// After `bytes` more written bytes, every write fails as if the disk were full.
    pub fn fail_writes_after_bytes(&self, bytes: u64) {
        if let Some(plan) = &self.faults {
            plan.write_bytes_left.store(bytes, Ordering::SeqCst);
        }
    }

    fn check_sync(&self, path: &Path, op: &'static str) -> Result<()> {
        let Some(plan) = &self.faults else {
            return Ok(());
        };
        let taken = plan
            .syncs_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            });
        match taken {
            Ok(_) => Ok(()),
            Err(_) => Err(StorageError::io(
                path,
                op,
                io::Error::other("injected sync failure (EIO)"),
            )),
        }
    }

    fn check_write(&self, path: &Path, len_bytes: usize) -> Result<()> {
        let Some(plan) = &self.faults else {
            return Ok(());
        };
        let len = len_bytes as u64;
        let taken =
            plan.write_bytes_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    if left == u64::MAX {
                        Some(left)
                    } else {
                        left.checked_sub(len)
                    }
                });
        match taken {
            Ok(_) => Ok(()),
            Err(_) => Err(StorageError::io(
                path,
                "write",
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected: no space left on device",
                ),
            )),
        }
    }

    /// Creates (or truncates) a file for writing.
    pub fn create(&self, path: &Path) -> Result<File> {
        self.logged(
            || FsOp::Create(path.to_path_buf()),
            || {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
                    .map_err(|e| StorageError::io(path, "create", e))
            },
        )
    }

    /// Opens an existing file read-only.
    pub fn open_read(&self, path: &Path) -> Result<File> {
        File::open(path).map_err(|e| StorageError::io(path, "open", e))
    }

    /// Opens an existing file for reading and writing (to truncate a torn tail).
    pub fn open_rw(&self, path: &Path) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io(path, "open", e))
    }

    /// Writes at the file's cursor; every caller writes its files front to back.
    pub fn write_all(&self, file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
        self.check_write(path, bytes.len())?;
        self.logged(
            || FsOp::Write(path.to_path_buf(), bytes.to_vec()),
            || {
                file.write_all(bytes)
                    .map_err(|e| StorageError::io(path, "write", e))
            },
        )
    }

    /// `fdatasync`: the file's data (not necessarily its metadata such as mtime) is durable.
    pub fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        self.wait_while_held(path);
        self.check_sync(path, "fdatasync")?;
        self.logged(
            || FsOp::SyncData(path.to_path_buf()),
            || {
                file.sync_data()
                    .map_err(|e| StorageError::io(path, "fdatasync", e))
            },
        )?;
        if let Some(plan) = &self.faults {
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(path, "stat", e))?
                .len();
            plan.synced_len_bytes.lock().insert(path.to_path_buf(), len);
        }
        Ok(())
    }

    /// With a fault plan: every file synced so far and its length at its last sync.
    pub fn synced_lengths(&self) -> Vec<(PathBuf, u64)> {
        let Some(plan) = &self.faults else {
            return Vec::new();
        };
        let mut files: Vec<(PathBuf, u64)> = plan
            .synced_len_bytes
            .lock()
            .iter()
            .map(|(p, l)| (p.clone(), *l))
            .collect();
        files.sort();
        files
    }

    /// Makes a directory's entries (creates, renames, deletes) durable.
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.check_sync(dir, "fsync(dir)")?;
        self.logged(
            || FsOp::SyncDir(dir.to_path_buf()),
            || {
                let handle = File::open(dir).map_err(|e| StorageError::io(dir, "open(dir)", e))?;
                handle
                    .sync_all()
                    .map_err(|e| StorageError::io(dir, "fsync(dir)", e))
            },
        )
    }

    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.logged(
            || FsOp::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            },
            || fs::rename(from, to).map_err(|e| StorageError::io(to, "rename", e)),
        )
    }

    pub fn remove_file(&self, path: &Path) -> Result<()> {
        self.logged(
            || FsOp::Remove(path.to_path_buf()),
            || fs::remove_file(path).map_err(|e| StorageError::io(path, "remove", e)),
        )
    }

    pub fn set_len(&self, file: &File, path: &Path, len_bytes: u64) -> Result<()> {
        self.logged(
            || FsOp::SetLen(path.to_path_buf(), len_bytes),
            || {
                file.set_len(len_bytes)
                    .map_err(|e| StorageError::io(path, "truncate", e))
            },
        )
    }

    /// Creates `dir` and any missing parents, and makes each new entry durable (fsync of the
    /// directory it was created in): a data directory that a power cut could unlink would
    /// take the WAL, the manifest and the safety record with it.
    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .collect();
        for new_dir in missing.iter().rev() {
            self.logged(
                || FsOp::Mkdir(new_dir.to_path_buf()),
                || match fs::create_dir(new_dir) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        Err(StorageError::io(new_dir, "create_dir", e))
                    }
                    _ => Ok(()),
                },
            )?;
            self.sync_dir(parent_dir(new_dir))?;
        }
        Ok(())
    }

    /// Reads a whole file, refusing files above `len_bytes_max` (a corrupt or hostile file
    /// must not make us allocate without bound).
    pub fn read_file(&self, path: &Path, len_bytes_max: u64) -> Result<Vec<u8>> {
        let mut file = self.open_read(path)?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, "stat", e))?
            .len();
        if len > len_bytes_max {
            return Err(StorageError::corrupt(
                path,
                0,
                format!("file is {len} bytes, limit {len_bytes_max}"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| StorageError::io(path, "read", e))?;
        Ok(bytes)
    }

    /// Takes an exclusive advisory lock on `dir/LOCK` for as long as the returned file is
    /// open, so two engines (two processes, or a misconfigured second node) never share a
    /// data directory. The kernel drops the lock when the process dies.
    pub fn lock_dir(&self, dir: &Path) -> Result<File> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, "open", e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::invalid(format!(
                "{}: data directory is in use by another engine",
                dir.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io(&path, "flock", e)),
        }
    }

    /// Lists the file names in `dir` (not recursive).
    pub fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, "read_dir", e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, "read_dir", e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Write `bytes` to `path` crash-atomically: temp file, `sync_data`, rename, `sync_dir`.
    /// After a crash the path holds either the old content or the new, never a mix.
    pub fn write_file_durably(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = tmp_path(path);
        let mut file = self.create(&tmp)?;
        self.write_all(&mut file, &tmp, bytes)?;
        self.sync_data(&file, &tmp)?;
        drop(file);
        self.rename(&tmp, path)?;
        self.sync_dir(parent_dir(path))
    }
}

/// The temporary name a file is written under before its rename.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
