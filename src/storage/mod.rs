//! The crash-safe storage engine: WAL, memtable, SSTables, manifest, compaction.
//!
//! Layering (each file has its own `//!` doc with its invariants; byte formats are in
//! `FORMAT.md`):
//! - [`fs`]: every file-system call, with fault injection for tests;
//! - [`power_cut`]: the durable image a power cut would leave, rebuilt from `fs`'s log;
//! - [`record`], [`segment`], [`wal`]: the generic group-committed write-ahead log;
//! - [`memtable`], [`sstable`], [`bloom`], [`merge`]: the in-memory and on-disk sorted tables;
//! - [`manifest`], [`batch`], [`engine`], [`flush`], [`compaction`], [`recovery`], [`replace`]:
//!   the LSM engine tying them together.
//!
//! This module never imports `consensus`, `types` or `sim`: it stores opaque bytes.

pub mod batch;
pub mod bloom;
mod compaction;
pub mod compaction_policy;
pub mod engine;
pub mod error;
mod flush;
pub mod fs;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod power_cut;
pub mod record;
mod recovery;
mod replace;
pub mod segment;
pub mod sstable;
pub mod wal;

pub use batch::{WRITE_BATCH_KIND, WriteBatch};
pub use engine::{Engine, EngineOptions};
pub use error::{Result, StorageError};
pub use fs::Fs;
pub use memtable::{Slot, SlotRef};
pub use wal::{Lsn, ReplayStats, Wal, WalOptions};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod wal_tests;
