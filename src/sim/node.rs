//! One simulated copy of a node: the [`crate::replica::Replica`] that production runs (absent
//! while crashed), its durable disk image, the persist batches in flight, and its replicated
//! state ([`super::state::StateStore`]).
//!
//! Invariant: `durable` holds exactly what a real disk would hold after the reported syncs
//! (plus, after a crash mid-sync, possibly a prefix of the batch being written). A restarted
//! replica sees only `durable`.

use std::collections::{BTreeMap, VecDeque};

use super::state::StateStore;
use crate::consensus::{DurableState, PersistItem, SafetyData, TimeMs};
use crate::replica::Replica;
use crate::types::{Block, BlockHeader, BlockId, ClusterId};

/// What survives a crash.
pub struct DurableStore {
    safety: Option<SafetyData>,
    blocks: BTreeMap<BlockId, Block>,
    /// The committed chain by height (the node's block store keeps this index too).
    committed_ids: BTreeMap<u64, BlockId>,
    committed: BlockHeader,
    cluster: ClusterId,
    /// Committed blocks kept below the tip: `consensus.committed_blocks_retained`, as the
    /// node's block store keeps.
    kept: u64,
}

impl DurableStore {
    pub fn new(cluster: ClusterId, kept: u64) -> Self {
        Self {
            safety: None,
            blocks: BTreeMap::new(),
            committed_ids: BTreeMap::new(),
            committed: Block::genesis_header(&cluster),
            cluster,
            kept,
        }
    }

    /// The committed blocks of heights `from ..= to` on "disk", ascending, bounded as
    /// `Action::ServeCommitted` says; stops at the first height missing.
    pub fn committed_range(
        &self,
        from: u64,
        to: u64,
        blocks_max: usize,
        bytes_max: usize,
    ) -> Vec<Block> {
        let mut out: Vec<Block> = Vec::new();
        // What the node's block store holds: the newest `kept` committed blocks (this image
        // prunes lazily, every 64 heights, but serves no more than the node would).
        if from <= self.committed.height.saturating_sub(self.kept) {
            return out;
        }
        let mut bytes = 0usize;
        for h in from..=to {
            let Some(b) = self
                .committed_ids
                .get(&h)
                .and_then(|id| self.blocks.get(id))
            else {
                break;
            };
            bytes = bytes.saturating_add(crate::consensus::sync_bytes(b));
            if out.len() >= blocks_max || (out.len() >= 2 && bytes > bytes_max) {
                break;
            }
            out.push(b.clone());
        }
        out
    }

    pub fn apply(&mut self, items: &[PersistItem]) {
        for item in items {
            self.apply_one(item);
        }
    }

    fn apply_one(&mut self, item: &PersistItem) {
        match item {
            PersistItem::Safety(s) => self.safety = Some(s.clone()),
            PersistItem::Block { id, block } => {
                self.blocks.insert(*id, block.clone());
            }
        }
    }

    /// The state machine applied `block` durably. Recent committed blocks stay on "disk", as a
    /// real node keeps them in its block store to serve peers that sync.
    pub fn on_commit(&mut self, id: BlockId, block: &Block) {
        self.committed = block.header(id);
        self.committed_ids.insert(block.height, id);
        let keep_from = self.committed.height.saturating_sub(self.kept);
        if self.committed.height.is_multiple_of(64) {
            self.blocks.retain(|_, b| b.height > keep_from);
            self.committed_ids = self.committed_ids.split_off(&(keep_from + 1));
        }
    }

    /// A snapshot was installed: the state is after `header`.
    pub fn on_install(&mut self, header: BlockHeader) {
        self.committed = header;
    }

    pub fn to_state(&self) -> DurableState {
        DurableState {
            safety: self
                .safety
                .clone()
                .unwrap_or_else(|| SafetyData::genesis(&self.cluster)),
            blocks: self.blocks.iter().map(|(id, b)| (*id, b.clone())).collect(),
            committed: self.committed,
        }
    }
}

/// One running copy of a node (twins have two).
pub struct NodeCopy {
    pub replica: Option<Replica>,
    pub durable: DurableStore,
    pub state: StateStore,
    /// Persist batches handed to the "disk", not yet reported durable.
    pub pending: VecDeque<(u64, Vec<PersistItem>)>,
    /// When the last scheduled sync completes (syncs complete in order).
    pub last_sync_done: TimeMs,
    /// Bumped on every crash so events for a dead incarnation are ignored.
    pub epoch: u64,
    /// The one live wake-up scheduled for the replica (earlier ones are stale).
    pub wake_at: Option<TimeMs>,
    /// Snapshots installed into `state`, over all incarnations.
    pub installs: u64,
}

impl NodeCopy {
    pub fn new(replica: Replica, cluster: ClusterId, state: StateStore, kept: u64) -> Self {
        Self {
            replica: Some(replica),
            durable: DurableStore::new(cluster, kept),
            state,
            pending: VecDeque::new(),
            last_sync_done: 0,
            epoch: 0,
            wake_at: None,
            installs: 0,
        }
    }

    /// Makes every batch up to `ticket` durable.
    pub fn complete_sync(&mut self, ticket: u64) {
        while let Some((t, _)) = self.pending.front() {
            if *t > ticket {
                break;
            }
            if let Some((_, items)) = self.pending.pop_front() {
                self.durable.apply(&items);
            }
        }
    }

    /// Crash: the replica is gone; a sync in progress may have written a prefix of its batch.
    pub fn crash(&mut self, torn_prefix: Option<usize>) {
        self.replica = None;
        self.epoch += 1;
        self.wake_at = None;
        if let (Some(n), Some((_, items))) = (torn_prefix, self.pending.front()) {
            let n = n.min(items.len());
            let prefix: Vec<PersistItem> = items[..n].to_vec();
            self.durable.apply(&prefix);
        }
        self.pending.clear();
    }
}
