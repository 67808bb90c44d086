//! The layout of a node's data dir, spelled once for the node and the offline tools
//! (`bftd inspect`, `bftd snapshot`):
//!
//! ```text
//! <data_dir>/state/       the replicated KV state machine (an engine; replaced by an install)
//! <data_dir>/consensus/   the safety data and the blocks the core persisted (an engine)
//! <data_dir>/snapshots/   saved snapshots and their offers, and a download in progress
//! ```
//!
//! `state/` and `consensus/` are separate engines because installing a snapshot replaces the
//! whole `state/` engine while the safety data must survive it untouched.

use std::path::{Path, PathBuf};

use crate::storage::EngineOptions;

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn consensus(&self) -> PathBuf {
        self.root.join("consensus")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
}

/// Options of both engines in a running node.
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        // The node logs no records of its own in either engine.
        caller_pins_wal: false,
        ..EngineOptions::default()
    }
}

/// Options of both engines opened by an offline tool: as the node's, without background
/// compaction (the tool reads, or writes once, and exits).
pub fn offline_engine_options() -> EngineOptions {
    EngineOptions {
        background_compaction: false,
        ..engine_options()
    }
}
