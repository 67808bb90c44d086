//! One simulated node copy's replicated state: a real [`KvStore`] in a temporary directory
//! (on tmpfs when there is one), the snapshots it saved, and the snapshot it is downloading.
//!
//! It does what the node's storage thread does with committed blocks and snapshots, minus
//! the waiting: apply each committed block once, in height order, save a snapshot every
//! `SNAPSHOT_INTERVAL_BLOCKS`, serve offers and chunks, and install a downloaded snapshot
//! after checking it against the offer the cluster agreed on. The state outlives crashes of
//! the copy's core (as the node's synced `state/` does: a reply leaves only once durable).
//!
//! Bounded: at most `SNAPSHOTS_KEPT` snapshots in memory, a download no larger than the
//! agreed size (the replica enforces it), chunks of at most the replica's chunk limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::kv::{KvStore, encode_reply};
use crate::replica::CHUNK_BYTES_MAX;
use crate::storage::EngineOptions;
use crate::types::{Block, BlockHeader, BlockId};
use crate::wire::{SnapshotOffer, StateMsg};

/// A snapshot every this many committed blocks.
pub const SNAPSHOT_INTERVAL_BLOCKS: u64 = 16;
/// Newest snapshots kept to serve peers.
const SNAPSHOTS_KEPT: usize = 2;

/// Distinguishes the temp dirs of runs in one process (sweeps run seeds on many threads).
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// The reply of one applied request, as the checker compares them.
pub struct AppliedReply {
    pub client: [u8; 32],
    pub seq: u64,
    pub bytes: Vec<u8>,
}

pub struct StateStore {
    dir: PathBuf,
    kv: Option<KvStore>,
    snapshots: Vec<(SnapshotOffer, Vec<u8>)>,
    download: Vec<u8>,
}

impl StateStore {
    pub fn open() -> Result<Self, String> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("bftd-sim-{}-{n}", std::process::id()));
        let kv_dir = dir.join("state");
        let options = EngineOptions {
            caller_pins_wal: false,
            background_compaction: false,
            ..EngineOptions::default()
        };
        let kv = KvStore::open(&kv_dir, options)
            .map_err(|e| format!("simulated state in {}: {e}", kv_dir.display()))?;
        Ok(Self {
            dir,
            kv: Some(kv),
            snapshots: Vec::new(),
            download: Vec::new(),
        })
    }

    fn kv(&self) -> &KvStore {
        match &self.kv {
            Some(kv) => kv,
            None => unreachable!("the store is only taken in Drop"),
        }
    }

    fn kv_mut(&mut self) -> &mut KvStore {
        match &mut self.kv {
            Some(kv) => kv,
            None => unreachable!("the store is only taken in Drop"),
        }
    }

    pub fn applied_height(&self) -> u64 {
        self.kv().applied_height()
    }

    /// Keys the last applied block expired (see `KvStore::expired_last_block`).
    pub fn expired_last_block(&self) -> usize {
        self.kv().expired_last_block()
    }

    /// The earliest key expiry of the state (see `KvStore::next_expiry_ms`).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.kv().next_expiry_ms()
    }

    pub fn digest(&self) -> [u8; 32] {
        self.kv().state_digest()
    }

    /// The roots the state remembers of its recent heights (`KvStore::recent_roots`).
    pub fn recent_roots(&self) -> Result<Vec<(u64, [u8; 32])>, String> {
        self.kv().recent_roots().map_err(|e| e.to_string())
    }

    /// Applies a committed block once (a restarted core re-commits what the state has: those
    /// give `None`). A gap is a bug in the replica or the simulator.
    pub fn apply(
        &mut self,
        id: BlockId,
        block: &Block,
    ) -> Result<Option<Vec<AppliedReply>>, String> {
        let applied = self.applied_height();
        if block.height <= applied {
            return Ok(None);
        }
        if block.height != applied + 1 {
            return Err(format!(
                "commit of height {} but the state is at {applied}",
                block.height
            ));
        }
        let requests = crate::replica::kv_requests(block);
        let (replies, _lsn) = self
            .kv_mut()
            .apply_nowait(block.height, block.timestamp_ms, &requests, &[])
            .map_err(|e| e.to_string())?;
        if block.height.is_multiple_of(SNAPSHOT_INTERVAL_BLOCKS) {
            self.save_snapshot(block.header(id))?;
        }
        Ok(Some(
            replies
                .into_iter()
                .map(|r| AppliedReply {
                    client: r.client,
                    seq: r.seq,
                    bytes: encode_reply(&r.reply),
                })
                .collect(),
        ))
    }

    fn save_snapshot(&mut self, header: BlockHeader) -> Result<(), String> {
        let path = self.dir.join("snap.tmp");
        let info = self
            .kv()
            .save_snapshot(&path)
            .map_err(|e| format!("saving a snapshot: {e}"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("reading a snapshot: {e}"))?;
        let offer = SnapshotOffer {
            height: header.height,
            block_id: header.id,
            parent_id: header.parent,
            round: header.round,
            state_digest: info.state_digest,
            file_bytes: bytes.len() as u64,
        };
        self.snapshots.push((offer, bytes));
        if self.snapshots.len() > SNAPSHOTS_KEPT {
            self.snapshots.remove(0);
        }
        Ok(())
    }

    /// A peer's state-transfer request; `None` for messages that are not requests.
    pub fn serve(&self, msg: &StateMsg) -> Option<StateMsg> {
        match msg {
            StateMsg::OfferRequest => Some(StateMsg::Offer(
                self.snapshots.last().map(|(o, _)| o.clone()),
            )),
            StateMsg::ChunkRequest {
                height,
                offset,
                len,
            } => {
                let bytes = self
                    .snapshots
                    .iter()
                    .find(|(o, _)| o.height == *height)
                    .map(|(_, b)| {
                        let start = (*offset as usize).min(b.len());
                        let end = start
                            .saturating_add((*len).min(CHUNK_BYTES_MAX) as usize)
                            .min(b.len());
                        b[start..end].to_vec()
                    })
                    .unwrap_or_default();
                Some(StateMsg::Chunk {
                    height: *height,
                    offset: *offset,
                    bytes,
                })
            }
            StateMsg::Offer(_) | StateMsg::Chunk { .. } => None,
        }
    }

    pub fn download_begin(&mut self) {
        self.download.clear();
    }

    pub fn download_append(&mut self, offset: u64, bytes: &[u8]) -> bool {
        if offset != self.download.len() as u64 {
            return false;
        }
        self.download.extend_from_slice(bytes);
        true
    }

    /// Checks the download against `offer` and installs it; the state is then after the
    /// offer's block.
    pub fn install(&mut self, offer: &SnapshotOffer) -> Result<BlockHeader, String> {
        let applied = self.applied_height();
        if offer.height <= applied {
            return Err(format!(
                "the state is at {applied} already, not below the snapshot at {}",
                offer.height
            ));
        }
        let path = self.dir.join("incoming.part");
        std::fs::write(&path, &self.download).map_err(|e| format!("writing the download: {e}"))?;
        self.download = Vec::new();
        let info = self
            .kv_mut()
            .install_snapshot(&path)
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&path);
        if info.applied_height != offer.height || info.state_digest != offer.state_digest {
            return Err("the installed snapshot is not the one the peers agreed on".into());
        }
        Ok(BlockHeader {
            id: offer.block_id,
            parent: offer.parent_id,
            round: offer.round,
            height: offer.height,
        })
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        // Close the engine before its directory goes.
        drop(self.kv.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
