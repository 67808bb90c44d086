//! The one error type of the storage engine and the KV state machine.
//!
//! Every variant that comes from the disk names the file (and the byte offset where it makes
//! sense), so an operator can act on it. `Poisoned` is terminal: once a write or sync failed the
//! engine stops acknowledging writes until it is reopened (fsync errors are never retried).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An error from the storage engine.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O call failed; `op` says which one (e.g. "fdatasync").
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// Bytes read back from disk are not what we wrote: bad magic, bad checksum, bad length,
    /// bytes that fail validation.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A previous write or sync failed; the engine no longer acknowledges writes.
    Poisoned { reason: String },
    /// The caller asked for something the engine refuses (bad argument, limit exceeded).
    Invalid { reason: String },
}

pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    pub fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        StorageError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    pub fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        StorageError::Invalid {
            reason: reason.into(),
        }
    }

    /// True for errors that mean "the disk content is wrong" (as opposed to an I/O failure).
    pub fn is_corruption(&self) -> bool {
        matches!(self, StorageError::Corrupt { .. })
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "{}: {op} failed: {source}", path.display())
            }
            StorageError::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "{}: corrupt at byte offset {offset}: {reason}",
                    path.display()
                )
            }
            StorageError::Poisoned { reason } => {
                write!(
                    f,
                    "storage is poisoned after an earlier failure ({reason}); reopen it"
                )
            }
            StorageError::Invalid { reason } => write!(f, "invalid storage request: {reason}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
