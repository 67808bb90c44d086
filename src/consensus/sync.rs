//! Catching up on blocks a node does not have: which blocks it is fetching from whom, and
//! the blocks it holds while their parents are on the way.
//!
//! Sync runs forward: a request names the wanted block and the requester's committed height;
//! the answer is the next segment of the chain above that height, which the requester can
//! insert at once (each block's QC certifies its parent and may commit it). It asks again
//! until it has the target. An unanswered request is retried with the next peer.
//!
//! Invariants: at most `OUTSTANDING_MAX` targets and `orphans_max` held blocks.

use std::collections::{HashMap, VecDeque};

use super::TimeMs;
use crate::types::{Block, BlockId, NodeId};

const OUTSTANDING_MAX: usize = 8;

pub struct SyncState {
    outstanding: HashMap<BlockId, Outstanding>,
    orphans: HashMap<BlockId, Block>,
    orphan_order: VecDeque<BlockId>,
    orphans_max: usize,
    retry_ms: u64,
}

struct Outstanding {
    peer: NodeId,
    deadline: TimeMs,
    since: TimeMs,
}

impl SyncState {
    pub fn new(orphans_max: usize, retry_ms: u64) -> Self {
        Self {
            outstanding: HashMap::new(),
            orphans: HashMap::new(),
            orphan_order: VecDeque::new(),
            orphans_max: orphans_max.max(1),
            retry_ms: retry_ms.max(1),
        }
    }

    /// Records that `target` is wanted from `peer`. Returns false if it is already being
    /// fetched (and not overdue), so the caller sends nothing.
    pub fn want(&mut self, target: BlockId, peer: NodeId, now: TimeMs) -> bool {
        if let Some(o) = self.outstanding.get(&target)
            && now < o.deadline
        {
            return false;
        }
        if self.outstanding.len() >= OUTSTANDING_MAX && !self.outstanding.contains_key(&target) {
            // Forget the oldest want: newer targets supersede it in practice.
            if let Some(oldest) = self
                .outstanding
                .iter()
                .min_by_key(|(_, o)| o.since)
                .map(|(k, _)| *k)
            {
                self.outstanding.remove(&oldest);
            }
        }
        self.outstanding.insert(
            target,
            Outstanding {
                peer,
                deadline: now + self.retry_ms,
                since: now,
            },
        );
        true
    }

    /// A response made progress toward `target`: keep asking the same peer.
    pub fn progressed(&mut self, target: &BlockId, now: TimeMs) {
        if let Some(o) = self.outstanding.get_mut(target) {
            o.deadline = now + self.retry_ms;
        }
    }

    pub fn is_wanted(&self, target: &BlockId) -> bool {
        self.outstanding.contains_key(target)
    }

    pub fn done(&mut self, target: &BlockId) {
        self.outstanding.remove(target);
    }

    /// Targets whose request went unanswered, with the peer that was asked.
    pub fn overdue(&self, now: TimeMs) -> Vec<(BlockId, NodeId)> {
        let mut v: Vec<(BlockId, NodeId)> = self
            .outstanding
            .iter()
            .filter(|(_, o)| now >= o.deadline)
            .map(|(id, o)| (*id, o.peer))
            .collect();
        v.sort();
        v
    }

    /// True while some block is being fetched.
    pub fn is_fetching(&self) -> bool {
        !self.outstanding.is_empty()
    }

    pub fn next_deadline(&self) -> Option<TimeMs> {
        self.outstanding.values().map(|o| o.deadline).min()
    }

    /// Holds a block whose parent is missing. Returns false if it was already held.
    pub fn hold_orphan(&mut self, id: BlockId, block: Block) -> (bool, bool) {
        if self.orphans.contains_key(&id) {
            return (false, false);
        }
        let mut evicted = false;
        while self.orphans.len() >= self.orphans_max {
            match self.orphan_order.pop_front() {
                Some(old) => {
                    evicted |= self.orphans.remove(&old).is_some();
                }
                None => break,
            }
        }
        self.orphans.insert(id, block);
        self.orphan_order.push_back(id);
        (true, evicted)
    }

    /// Removes and returns the held blocks whose parent is `parent`.
    pub fn take_children_of(&mut self, parent: &BlockId) -> Vec<(BlockId, Block)> {
        let ids: Vec<BlockId> = self
            .orphans
            .iter()
            .filter(|(_, b)| b.parent_id() == *parent)
            .map(|(id, _)| *id)
            .collect();
        let mut out: Vec<(BlockId, Block)> = ids
            .into_iter()
            .filter_map(|id| self.orphans.remove(&id).map(|b| (id, b)))
            .collect();
        out.sort_by_key(|(id, b)| (b.round, *id));
        out
    }

    /// Drops held blocks at or below the committed height.
    pub fn prune_orphans(&mut self, committed_height: u64) {
        self.orphans.retain(|_, b| b.height > committed_height);
        let orphans = &self.orphans;
        self.orphan_order.retain(|id| orphans.contains_key(id));
    }
}
