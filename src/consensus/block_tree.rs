//! The blocks a node knows: the committed tip (root), the uncommitted blocks above it, and a
//! bounded window of recently committed blocks kept to serve peers that sync.
//!
//! Invariants:
//! - every stored uncommitted block's parent is stored or is the root (the tree is connected);
//! - `height == parent.height + 1` and `round > parent.round` for every stored block;
//! - after a commit, only descendants of the new root remain uncommitted (forks are pruned);
//! - at most `uncommitted_max` uncommitted and `retain` committed blocks are held, and the
//!   committed ones hold at most `retain_bytes` of payload, except that the newest
//!   `retain_min` are kept whatever their size (the leader schedule reads them);
//! - every stored block is in exactly one of `committed` and `uncommitted`.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::types::{Block, BlockHeader, BlockId, Height};

pub struct BlockTree {
    blocks: HashMap<BlockId, Block>,
    root: BlockHeader,
    /// Ids of retained committed blocks, ascending by height.
    committed: VecDeque<BlockId>,
    /// Ids of the stored blocks not committed: what a commit's pruning looks at (a scan of
    /// every stored block, up to `retain` committed ones, was a top entry of the consensus
    /// thread's profile at one client).
    uncommitted: HashSet<BlockId>,
    retain: usize,
    /// Payload bytes of the retained committed blocks, and their cap.
    committed_bytes: usize,
    retain_bytes: usize,
    /// Committed blocks kept even over the byte cap (at least 1: the root).
    retain_min: usize,
    uncommitted_max: usize,
}

/// What [`BlockTree::chain_segment`] can give a syncing peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment {
    /// The lowest blocks of the chain above the peer's height, ascending.
    Blocks(Vec<Block>),
    /// The chain reaches down into committed blocks this tree no longer holds: heights from
    /// the peer's `above_height + 1` up to `top_height` (the lowest one held, committed) are
    /// on the committed chain and are served from the node's block store.
    BelowRetained { top_height: Height },
    /// `target` is not held, or its chain does not reach the peer's height.
    Unknown,
}

/// What a block counts for against a sync response's byte bound: its payload plus a fixed
/// allowance for the header and certificates (a QC or TC of up to 32 signers fits in it).
pub fn sync_bytes(block: &Block) -> usize {
    block
        .payload_bytes()
        .saturating_add(SYNC_BLOCK_OVERHEAD_BYTES)
}

/// Header, QC and TC allowance per block in a sync response (see [`sync_bytes`]).
const SYNC_BLOCK_OVERHEAD_BYTES: usize = 4096;

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
            uncommitted: HashSet::new(),
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
        self.uncommitted.len()
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
        self.uncommitted.insert(id);
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
                self.uncommitted.remove(&id);
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
        // Uncommitted blocks that do not descend from the root: forks at or below its height
        // (the committed ones left this set) and blocks above it on an abandoned branch.
        let root_height = self.root.height;
        let dropped: Vec<BlockId> = (self.uncommitted.iter())
            .filter(|id| {
                self.blocks
                    .get(id)
                    .is_none_or(|b| b.height <= root_height || !self.extends_root(id))
            })
            .copied()
            .collect();
        for id in dropped {
            self.blocks.remove(&id);
            self.uncommitted.remove(&id);
        }
    }

    /// The next segment of the chain ending at `target` above `above_height`, for a syncing
    /// peer: see [`Segment`]. A segment holds at most `max` blocks and, past its first two,
    /// at most `bytes_max` bytes (by [`sync_bytes`]); two blocks always go, because the last
    /// block of a response is certified by nothing in it and the requester keeps it only if
    /// it was the target: one block would make no progress.
    pub fn chain_segment(
        &self,
        target: &BlockId,
        above_height: Height,
        max: usize,
        bytes_max: usize,
    ) -> Segment {
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
        let Some(bottom) = path.last().and_then(|id| self.blocks.get(id)) else {
            return Segment::Unknown;
        };
        if bottom.height != above_height + 1 {
            // The chain runs on below what memory holds: from the committed chain only.
            return if bottom.height <= self.root.height + 1 {
                Segment::BelowRetained {
                    top_height: bottom.height,
                }
            } else {
                Segment::Unknown
            };
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for id in path.iter().rev().take(max) {
            let Some(b) = self.blocks.get(id) else { break };
            bytes = bytes.saturating_add(sync_bytes(b));
            if out.len() >= 2 && bytes > bytes_max {
                break;
            }
            out.push(b.clone());
        }
        Segment::Blocks(out)
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
            timestamp_ms: 0,
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

    /// A branch that forks below the new root goes whole (its blocks above the root's height
    /// too), committed blocks stay up to `retain`, and only uncommitted blocks count against
    /// `uncommitted_max` however many committed ones are retained.
    #[test]
    fn pruning_drops_abandoned_branches_and_counts_only_uncommitted_blocks() {
        let mut t = BlockTree::new(root(), 3, 3);
        let (a, ba) = child(root().id, 1, 1);
        let (x, bx) = child(root().id, 2, 1);
        let (y, by) = child(x, 3, 2);
        for (id, b) in [(a, ba), (x, bx), (y, by)] {
            assert_eq!(t.insert(id, b), InsertOutcome::Inserted);
        }
        assert_eq!(t.commit(&a).len(), 1);
        assert!(t.get(&x).is_none(), "the fork at the root's height goes");
        assert!(t.get(&y).is_none(), "and its child above the root's height");
        assert_eq!(t.uncommitted_len(), 0);
        t.uncommitted_max = 2;
        let mut tip = a;
        for round in 4..12 {
            let (id, b) = child(tip, round, round - 2);
            assert_eq!(t.insert(id, b), InsertOutcome::Inserted, "round {round}");
            assert_eq!(t.commit(&id).len(), 1);
            tip = id;
        }
        assert_eq!(
            t.committed_blocks().count(),
            3,
            "retain bounds the committed ones"
        );
        // Two uncommitted children fit, a third does not, whatever is retained.
        let (c1, b1) = child(tip, 20, t.root().height + 1);
        let (c2, b2) = child(c1, 21, t.root().height + 2);
        let (c3, b3) = child(c2, 22, t.root().height + 3);
        assert_eq!(t.insert(c1, b1), InsertOutcome::Inserted);
        assert_eq!(t.insert(c2, b2), InsertOutcome::Inserted);
        assert!(matches!(t.insert(c3, b3), InsertOutcome::Rejected(_)));
        // A sibling of c1 with a child: committing c1 drops both, c2 stays.
        let (s1, bs1) = child(tip, 23, t.root().height + 1);
        t.commit(&c1);
        assert_eq!(
            t.insert(s1, bs1),
            InsertOutcome::Known,
            "below the new root"
        );
        assert!(t.get(&c2).is_some());
        assert_eq!(t.uncommitted_len(), 1);
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
        let heights = |s: Segment| match s {
            Segment::Blocks(v) => v.iter().map(|b| b.height).collect::<Vec<_>>(),
            other => panic!("expected blocks, got {other:?}"),
        };
        assert_eq!(
            heights(t.chain_segment(&ids[5], 2, 10, usize::MAX)),
            vec![3, 4, 5, 6]
        );
        assert_eq!(
            heights(t.chain_segment(&ids[5], 0, 2, usize::MAX)),
            vec![1, 2]
        );
        assert_eq!(
            t.chain_segment(&BlockId([7; 32]), 0, 2, usize::MAX),
            Segment::Unknown
        );
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

    fn with_payload(parent: BlockId, h: u64, bytes: usize) -> (BlockId, Block) {
        let (_, mut b) = child(parent, h, h);
        b.payload.push(ClientRequest {
            client: ClientKey([1; 32]),
            session: 1,
            seq: h,
            ops: vec![0; bytes],
            signature: Sig::ZERO,
        });
        (b.compute_id(), b)
    }

    #[test]
    fn large_blocks_are_served_in_several_byte_bounded_segments() {
        // 12 blocks of 1 MiB, a 4 MiB bound: the old count bound (64) would have put all
        // 12 MiB in one response.
        let mut t = BlockTree::new(root(), 100, 100);
        let mut parent = root().id;
        for h in 1..=12 {
            let (id, b) = with_payload(parent, h, 1 << 20);
            assert_eq!(t.insert(id, b), InsertOutcome::Inserted);
            parent = id;
        }
        let target = parent;
        let mut above = 0;
        let mut responses = 0;
        while above < 12 {
            let Segment::Blocks(blocks) = t.chain_segment(&target, above, 64, 4 << 20) else {
                panic!("the chain is held");
            };
            let bytes: usize = blocks.iter().map(sync_bytes).sum();
            assert!(blocks.len() >= 2 || blocks.last().map(|b| b.height) == Some(12));
            assert!(bytes <= 4 << 20, "a response of {bytes} bytes");
            assert_eq!(blocks[0].height, above + 1);
            responses += 1;
            // The requester keeps all but the uncertified last block, unless it is the target.
            above = match blocks.last() {
                Some(b) if b.height == 12 => 12,
                _ => blocks[blocks.len() - 2].height,
            };
        }
        assert!(responses >= 4, "{responses} responses");
        // A block bigger than the bound still goes, with its successor: progress never stops.
        let Segment::Blocks(two) = t.chain_segment(&target, 0, 64, 1) else {
            panic!("the chain is held");
        };
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn a_chain_below_the_retained_blocks_is_named_for_the_block_store() {
        let mut t = BlockTree::new(root(), 3, 100);
        let mut parent = root().id;
        for h in 1..=8 {
            let (id, b) = child(parent, h, h);
            t.insert(id, b);
            t.commit(&id);
            parent = id;
        }
        let (tip, b) = child(parent, 9, 9);
        t.insert(tip, b);
        // Heights 6..=8 are retained; a peer at height 2 needs 3..=6 from disk first.
        assert_eq!(
            t.chain_segment(&tip, 2, 64, usize::MAX),
            Segment::BelowRetained { top_height: 6 }
        );
        match t.chain_segment(&tip, 5, 64, usize::MAX) {
            Segment::Blocks(v) => assert_eq!(v.first().map(|b| b.height), Some(6)),
            other => panic!("{other:?}"),
        }
    }
}
