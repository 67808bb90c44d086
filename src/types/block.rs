//! Blocks: a round's proposal, extending the block its QC certifies.
//!
//! The parent of a block is always the block its `qc` certifies (`parent_id() == qc.block_id`),
//! so a block can never name a parent that was not certified. The block id is a blake3 hash
//! over the header fields (see [`Block::compute_id`]); it is recomputed on receipt, never read
//! from the wire.
//!
//! State roots: execution runs after commit, so a block cannot carry the root of its own
//! height. Instead each block carries the roots of some heights its ancestry already committed
//! (see [`Block::state_roots`]); a QC on the block certifies them (`consensus::roots`).

use rkyv::{Archive, Deserialize, Serialize};

use super::cert::genesis_block_id;
use super::root_cert::{BlockIdFields, hash_block_id};
use super::{
    BlockId, ClientRequest, ClusterId, Height, NodeId, QuorumCert, Round, Sig, TimeoutCert,
};

/// A proposed block, signed by its author (the leader of `round`).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Block {
    pub round: Round,
    pub height: Height,
    /// Consensus time: ms since the Unix epoch as the leader stamped it, strictly above the
    /// parent's (genesis is 0) and, for an honest voter, at most `block_time_ahead_max_ms`
    /// ahead of its own wall clock (`consensus::core`). Key expiry follows this time only.
    pub timestamp_ms: u64,
    /// Certifies the parent block.
    pub qc: QuorumCert,
    /// Present when round `round - 1` ended in a timeout rather than a QC.
    pub tc: Option<TimeoutCert>,
    /// The highest height whose state root the parent chain carries (0 at genesis). Every
    /// height in `state_roots` is above it; the voters check it equals the parent's
    /// [`Block::roots_through`], so each height is carried at most once on a chain.
    pub roots_after: Height,
    /// `(height, state root after applying that height)`, heights strictly increasing, all in
    /// `roots_after + 1 ..= ` the height this block's ancestry commits, at most
    /// [`STATE_ROOTS_MAX`] entries. A leader carries the heights it has applied and knows the
    /// root of (after a restart it may skip the heights it applied before it went down).
    pub state_roots: Vec<(Height, [u8; 32])>,
    pub payload: Vec<ClientRequest>,
    pub author: NodeId,
    pub signature: Sig,
}

/// Most state roots one block carries (the verifier rejects more).
pub const STATE_ROOTS_MAX: usize = 64;

/// A block's identity and position without its payload: what the commit log and the block
/// tree's bookkeeping need.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BlockHeader {
    pub id: BlockId,
    pub parent: BlockId,
    pub round: Round,
    pub height: Height,
}

impl Block {
    pub fn parent_id(&self) -> BlockId {
        self.qc.block_id
    }

    /// The hash that names this block. Covers everything but the signatures (the block's own,
    /// which signs it, and those inside its certificates). The certificates' signer sets are
    /// covered: the leader schedule reads them (`consensus::leader`), so two copies of a block
    /// with one id must not carry different signers.
    pub fn compute_id(&self) -> BlockId {
        // The signer lists are short (at most n); collecting them keeps one hash function
        // for blocks and certified headers.
        let qc_signers: Vec<NodeId> = self.qc.votes.iter().map(|v| v.node).collect();
        let tc_signers: Vec<NodeId> = self
            .tc
            .iter()
            .flat_map(|tc| tc.timeouts.iter().map(|t| t.node))
            .collect();
        hash_block_id(&BlockIdFields {
            round: self.round,
            height: self.height,
            timestamp_ms: self.timestamp_ms,
            author: self.author,
            parent: &self.qc.block_id,
            parent_qc_round: self.qc.round,
            parent_qc_signers: &qc_signers,
            tc: self
                .tc
                .as_ref()
                .map(|tc| (tc.round, tc.high_qc.round, tc_signers.as_slice())),
            roots_after: self.roots_after,
            state_roots: &self.state_roots,
            payload_digests: self.payload.iter().map(|r| r.digest().0),
        })
    }

    /// The highest height whose root this block's chain carries: the last carried height, or
    /// `roots_after` when it carries none.
    pub fn roots_through(&self) -> Height {
        self.state_roots
            .last()
            .map_or(self.roots_after, |(h, _)| *h)
    }

    /// Whether `state_roots` is well formed on its own: bounded, heights strictly increasing
    /// and above `roots_after`, all below the block's own height minus one (a block commits at
    /// most its grandparent). The voters check the rest against the chain.
    pub fn state_roots_well_formed(&self) -> bool {
        if self.state_roots.len() > STATE_ROOTS_MAX {
            return false;
        }
        let mut prev = self.roots_after;
        for (h, _) in &self.state_roots {
            if *h <= prev {
                return false;
            }
            prev = *h;
        }
        prev <= self.roots_after.max(self.height.saturating_sub(2))
    }

    /// The genesis block's header: round 0, height 0, a fixed id per cluster.
    pub fn genesis_header(cluster: &ClusterId) -> BlockHeader {
        BlockHeader {
            id: genesis_block_id(cluster),
            parent: BlockId::ZERO,
            round: 0,
            height: 0,
        }
    }

    pub fn header(&self, id: BlockId) -> BlockHeader {
        BlockHeader {
            id,
            parent: self.parent_id(),
            round: self.round,
            height: self.height,
        }
    }

    /// Payload bytes, for the `max_block_bytes` limit.
    pub fn payload_bytes(&self) -> usize {
        self.payload.iter().map(ClientRequest::size_bytes).sum()
    }
}
