//! Node-to-node consensus messages.

use rkyv::{Archive, Deserialize, Serialize};

use super::{Block, BlockId, Height, NodeId, QuorumCert, Round, Sig, TimeoutCert};

/// A signed vote for `block_id` in `round`, sent to the leader of `round + 1`.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Vote {
    pub block_id: BlockId,
    pub round: Round,
    pub voter: NodeId,
    pub signature: Sig,
}

/// A signed statement "I give up on `round`", carrying the sender's highest QC. The signature
/// covers `(round, high_qc.round)`.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Timeout {
    pub round: Round,
    pub high_qc: QuorumCert,
    pub author: NodeId,
    pub signature: Sig,
}

/// The certificates a node has: sent to lagging peers, and broadcast by a leader the moment a
/// QC completes a 2-chain (fast commit). Unsigned: every certificate inside is self-proving.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct SyncInfo {
    pub high_qc: QuorumCert,
    pub high_tc: Option<TimeoutCert>,
}

/// "Send me the chain ending at `target`, down to (not including) height `committed_height`."
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct SyncRequest {
    pub target: BlockId,
    pub committed_height: Height,
    pub max_blocks: u32,
}

/// Blocks in ascending height order; each one's id is certified by the next one's QC, and the
/// last one is the requested target.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct SyncResponse {
    pub blocks: Vec<Block>,
}

/// Everything one node sends another.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum Message {
    Proposal(Block),
    Vote(Vote),
    Timeout(Timeout),
    SyncInfo(SyncInfo),
    SyncRequest(SyncRequest),
    SyncResponse(SyncResponse),
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Proposal(_) => "proposal",
            Message::Vote(_) => "vote",
            Message::Timeout(_) => "timeout",
            Message::SyncInfo(_) => "sync_info",
            Message::SyncRequest(_) => "sync_request",
            Message::SyncResponse(_) => "sync_response",
        }
    }

    /// The round a message speaks for, if it has one (sync traffic has none).
    pub fn round(&self) -> Option<Round> {
        match self {
            Message::Proposal(b) => Some(b.round),
            Message::Vote(v) => Some(v.round),
            Message::Timeout(t) => Some(t.round),
            _ => None,
        }
    }
}
