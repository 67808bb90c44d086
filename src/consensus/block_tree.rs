//! The blocks a node knows: the committed tip (root), the uncommitted blocks above it, and a
//! bounded window of recently committed blocks kept to serve peers that sync.
//!
//! Invariants:
//! - every stored uncommitted block's parent is stored or is the root (the tree is connected);
//! - `height == parent.height + 1` and `round > parent.round` for every stored block;
//! - after a commit, only descendants of the new root remain uncommitted (forks are pruned);
//! - at most `uncommitted_max` uncommitted and `retain` committed blocks are held, and the
//!   committed ones hold at most `retain_bytes` of payload, except that the newest
//!   `retain_min` are kept whatever their size (the leader schedule reads them).

use std::collections::{HashMap, VecDeque};

use crate::types::{Block, BlockHeader, BlockId, Height};

pub struct BlockTree {
    blocks: HashMap<BlockId, Block>,
    root: BlockHeader,
    /// Ids of retained committed blocks, ascending by height.
    committed: VecDeque<BlockId>,
    retain: usize,
    /// Payload bytes of the retained committed blocks, and their cap.
    committed_bytes: usize,
    retain_bytes: usize,
    /// Committed blocks kept even over the byte cap (at least 1: the root).
    retain_min: usize,
    uncommitted_max: usize,
}

/// What happened to a block offered to the tree.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// Already stored, or at or below the committed height.
    Known,
    MissingParent,
    Rejected(&'static str),
}

impl BlockTree {
    pub fn new(root: BlockHeader, retain: usize, uncommitted_max: usize) -> Self {
        Self {
            blocks: HashMap::new(),
            root,
            committed: VecDeque::new(),
            retain,
            committed_bytes: 0,
            retain_bytes: usize::MAX,
            retain_min: 1,
            uncommitted_max,
        }
    }

    /// Also caps the retained committed blocks by payload bytes (the newest block is kept).
    pub fn with_retained_bytes(mut self, bytes: usize) -> Self {
        self.retain_bytes = bytes;
        self
    }

    /// Keeps the newest `blocks` committed blocks even when they exceed the byte cap.
    pub fn with_retained_min(mut self, blocks: usize) -> Self {
        self.retain_min = blocks.max(1);
        self
    }

    /// Re-adopts committed history after a restart: the chain of `blocks` ending at the root,
    /// newest `retain` of it, so this node can serve peers that sync from below its tip.
    pub fn restore_committed(&mut self, blocks: &[(BlockId, Block)]) {
        let by_id: HashMap<BlockId, &Block> = blocks.iter().map(|(id, b)| (*id, b)).collect();
        let mut chain = Vec::new();
        let mut cur = self.root.id;
        while chain.len() < self.retain {
            match by_id.get(&cur) {
                Some(b) if b.height <= self.root.height => {
                    chain.push((cur, (*b).clone()));
                    cur = b.parent_id();
                }
                _ => break,
            }
        }
        for (id, block) in chain.into_iter().rev() {
            let bytes = block.payload_bytes();
            if self.blocks.insert(id, block).is_none() {
                self.committed.push_back(id);
                self.committed_bytes += bytes;
            }
        }
        self.prune();
    }

    /// The retained committed blocks, oldest first.
    pub fn committed_blocks(&self) -> impl Iterator<Item = &Block> + '_ {
        self.committed.iter().filter_map(|id| self.blocks.get(id))
    }

    pub fn root(&self) -> &BlockHeader {
        &self.root
    }

    pub fn get(&self, id: &BlockId) -> Option<&Block> {
        self.blocks.get(id)
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        *id == self.root.id || self.blocks.contains_key(id)
    }

    pub fn header(&self, id: &BlockId) -> Option<BlockHeader> {
        if *id == self.root.id {
            return Some(self.root);
        }
        self.blocks.get(id).map(|b| b.header(*id))
    }

    fn uncommitted_len(&self) -> usize {
        self.blocks.len() - self.committed.len()
    }

    pub fn insert(&mut self, id: BlockId, block: Block) -> InsertOutcome {
        if self.blocks.contains_key(&id) || block.height <= self.root.height {
            return InsertOutcome::Known;
        }
        let Some(parent) = self.header(&block.parent_id()) else {
            return InsertOutcome::MissingParent;
        };
        if block.height != parent.height + 1 {
            return InsertOutcome::Rejected("height is not parent height + 1");
        }
        if block.round <= parent.round {
            return InsertOutcome::Rejected("round not above parent round");
        }
        if parent.height < self.root.height
            || (parent.height == self.root.height && parent.id != self.root.id)
        {
            return InsertOutcome::Rejected("extends a block that is not the committed chain");
        }
        if self.uncommitted_len() >= self.uncommitted_max {
            return InsertOutcome::Rejected("too many uncommitted blocks");
        }
        self.blocks.insert(id, block);
        InsertOutcome::Inserted
    }

    /// True if `id` is stored above the root and descends from it.
    pub fn extends_root(&self, id: &BlockId) -> bool {
        let mut cur = *id;
        loop {
            if cur == self.root.id {
                return true;
            }
            match self.blocks.get(&cur) {
                Some(b) if b.height > self.root.height => cur = b.parent_id(),
                _ => return false,
            }
        }
    }

    /// Commits `target` and its uncommitted ancestors; returns them in height order.
    /// Returns nothing if `target` is not an uncommitted descendant of the root.
    pub fn commit(&mut self, target: &BlockId) -> Vec<(BlockId, Block)> {
        let mut path = Vec::new();
        let mut cur = *target;
        while cur != self.root.id {
            match self.blocks.get(&cur) {
                Some(b) if b.height > self.root.height => {
                    path.push(cur);
                    cur = b.parent_id();
                }
                _ => return Vec::new(),
            }
        }
        path.reverse();
        let mut out = Vec::with_capacity(path.len());
        for id in path {
            if let Some(b) = self.blocks.get(&id) {
                self.root = b.header(id);
                self.committed_bytes += b.payload_bytes();
                out.push((id, b.clone()));
                self.committed.push_back(id);
            }
        }
        self.prune();
        out
    }

    fn prune(&mut self) {
        while self.committed.len() > self.retain
            || (self.committed_bytes > self.retain_bytes && self.committed.len() > self.retain_min)
        {
            if let Some(old) = self.committed.pop_front()
                && let Some(b) = self.blocks.remove(&old)
            {
                self.committed_bytes = self.committed_bytes.saturating_sub(b.payload_bytes());
            }
        }
        let root = self.root;
        let stale: Vec<BlockId> = self
            .blocks
            .iter()
            .filter(|(id, b)| b.height > root.height && !self.extends_root(id))
            .map(|(id, _)| *id)
            .collect();
        // The retained committed blocks have consecutive heights, ending at the root, so the
        // committed block of height h sits at index h - (root.height + 1 - len): an O(1) test
        // (a set of all retained ids, rebuilt per commit, was a top entry of the profile).
        let first_height = (root.height + 1).saturating_sub(self.committed.len() as u64);
        let is_committed = |id: &BlockId, height: Height| {
            height >= first_height
                && self.committed.get((height - first_height) as usize) == Some(id)
        };
        let forks: Vec<BlockId> = self
            .blocks
            .iter()
            .filter(|(id, b)| b.height <= root.height && !is_committed(id, b.height))
            .map(|(id, _)| *id)
            .collect();
        for id in stale.into_iter().chain(forks) {
            self.blocks.remove(&id);
        }
    }

    /// The lowest `max` blocks of the chain ending at `target` that lie above `above_height`,
    /// ascending: a syncing peer inserts them on top of what it has and asks again. Empty if
    /// `target` is unknown or the chain does not reach down to `above_height + 1`.
    pub fn chain_segment(&self, target: &BlockId, above_height: Height, max: usize) -> Vec<Block> {
        let mut path = Vec::new();
        let mut cur = *target;
        // The walk is bounded by what the tree can hold.
        let walk_max = self.blocks.len() + 1;
        while path.len() < walk_max {
            match self.blocks.get(&cur) {
                Some(b) if b.height > above_height => {
                    path.push(cur);
                    cur = b.parent_id();
                }
                _ => break,
            }
        }
        let reaches = path
            .last()
            .and_then(|id| self.blocks.get(id))
            .is_some_and(|b| b.height == above_height + 1);
        if !reaches {
            return Vec::new();
        }
        path.iter()
            .rev()
            .take(max)
            .filter_map(|id| self.blocks.get(id).cloned())
            .collect()
    }

    /// Blocks from `tip` down to (not including) the root, tip first.
    pub fn uncommitted_ancestry(&self, tip: &BlockId) -> impl Iterator<Item = &Block> + '_ {
        let root_height = self.root.height;
        let mut cur = Some(*tip);
        std::iter::from_fn(move || {
            let id = cur?;
            let b = self.blocks.get(&id).filter(|b| b.height > root_height)?;
            cur = Some(b.parent_id());
            Some(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientKey, ClientRequest, NodeId, QuorumCert, Sig};

    fn root() -> BlockHeader {
        BlockHeader {
            id: BlockId([0; 32]),
            parent: BlockId::ZERO,
            round: 0,
            height: 0,
        }
    }

    fn child(parent: BlockId, round: u64, height: u64) -> (BlockId, Block) {
        let b = Block {
            round,
            height,
            qc: QuorumCert {
                block_id: parent,
                round: round - 1,
                votes: vec![],
            },
            tc: None,
            roots_after: 0,
            state_roots: Vec::new(),
            payload: vec![],
            author: NodeId(0),
            signature: Sig::ZERO,
        };
        (b.compute_id(), b)
    }

    #[test]
    fn commit_returns_the_path_in_order_and_prunes_forks() {
        let mut t = BlockTree::new(root(), 10, 100);
        let (a, ba) = child(root().id, 1, 1);
        let (b, bb) = child(a, 2, 2);
        let (fork, bf) = child(a, 3, 2);
        let (c, bc) = child(b, 4, 3);
        for (id, blk) in [(a, ba), (b, bb), (fork, bf), (c, bc)] {
            assert_eq!(t.insert(id, blk), InsertOutcome::Inserted);
        }
        let committed: Vec<BlockId> = t.commit(&b).into_iter().map(|(id, _)| id).collect();
        assert_eq!(committed, vec![a, b]);
        assert_eq!(t.root().id, b);
        assert!(t.get(&fork).is_none(), "fork below the root must be pruned");
        assert!(t.get(&c).is_some());
        assert!(
            t.commit(&a).is_empty(),
            "committing below the root is a no-op"
        );
    }

    #[test]
    fn refuses_missing_parents_bad_heights_and_overflow() {
        let mut t = BlockTree::new(root(), 10, 1);
        let (_, orphan) = child(BlockId([9; 32]), 2, 2);
        assert_eq!(
            t.insert(orphan.compute_id(), orphan),
            InsertOutcome::MissingParent
        );
        let (id, mut bad) = child(root().id, 1, 1);
        bad.height = 5;
        assert!(matches!(t.insert(id, bad), InsertOutcome::Rejected(_)));
        let (a, ba) = child(root().id, 1, 1);
        assert_eq!(t.insert(a, ba), InsertOutcome::Inserted);
        let (b, bb) = child(a, 2, 2);
        assert!(matches!(t.insert(b, bb), InsertOutcome::Rejected(_)));
    }

    #[test]
    fn serves_a_bounded_chain_for_sync() {
        let mut t = BlockTree::new(root(), 10, 100);
        let mut parent = root().id;
        let mut ids = vec![];
        for h in 1..=6 {
            let (id, b) = child(parent, h, h);
            t.insert(id, b);
            ids.push(id);
            parent = id;
        }
        let chain = t.chain_segment(&ids[5], 2, 10);
        assert_eq!(
            chain.iter().map(|b| b.height).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        let chain = t.chain_segment(&ids[5], 0, 2);
        assert_eq!(
            chain.iter().map(|b| b.height).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(t.chain_segment(&BlockId([7; 32]), 0, 2).is_empty());
    }

    #[test]
    fn the_byte_cap_never_drops_below_the_minimum_kept() {
        let mut t = BlockTree::new(root(), 10, 100)
            .with_retained_bytes(0)
            .with_retained_min(3);
        let mut parent = root().id;
        let mut ids = vec![];
        for h in 1..=6 {
            let (_, mut b) = child(parent, h, h);
            b.payload.push(ClientRequest {
                client: ClientKey([1; 32]),
                session: 1,
                seq: h,
                ops: vec![0; 100],
                signature: Sig::ZERO,
            });
            let id = b.compute_id();
            assert_eq!(t.insert(id, b), InsertOutcome::Inserted);
            t.commit(&id);
            ids.push(id);
            parent = id;
        }
        // Every block is over the 0-byte cap, yet the newest 3 stay (the leader schedule reads
        // the authors of up to f blocks below a parent).
        let kept: Vec<u64> = ids
            .iter()
            .filter_map(|id| t.get(id).map(|b| b.height))
            .collect();
        assert_eq!(kept, vec![4, 5, 6]);
    }
}
