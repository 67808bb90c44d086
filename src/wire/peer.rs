//! Node-to-node frames: consensus messages, and the state transfer that lets a node that fell
//! behind the peers' retained blocks install a snapshot.
//!
//! State transfer (see `replica::transfer`): the lagging node asks every peer for an
//! offer; it trusts an offer only when `f + 1` distinct peers offer the same
//! `(height, block header, state digest)`, so at least one honest node vouches for it. It then
//! downloads the file in chunks from one of them and installs it only if the file's own
//! checksum and recomputed state digest match the agreed digest.
//!
//! Read barriers (see `node::read_barrier`): a node with linearizable reads waiting asks
//! every member for its highest QC with a fresh nonce ([`ReadMsg::Probe`]); each answers
//! with [`ReadMsg::HighQc`], whose QC the asker verifies before it counts the answer.

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::types::{BlockId, Message, QuorumCert};

/// Largest peer frame the decoder accepts (the transport's `max_frame_bytes` may be lower).
pub const PEER_FRAME_BYTES_MAX: usize = codec::MESSAGE_BYTES_MAX;

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum PeerFrame {
    Consensus(Message),
    State(StateMsg),
    // New variants go last so the tags of the ones before stay what they were.
    Read(ReadMsg),
}

/// The read barrier's question and answer.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum ReadMsg {
    /// "What is your highest QC?" `nonce` names this barrier: only an answer with the same
    /// nonce counts, so an answer cannot be older than the question.
    Probe { nonce: u64 },
    /// The sender's highest QC when the probe `nonce` arrived.
    HighQc { nonce: u64, qc: QuorumCert },
}

/// A snapshot a node holds: the state after applying the committed block `block_id`.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct SnapshotOffer {
    pub height: u64,
    pub block_id: BlockId,
    pub parent_id: BlockId,
    pub round: u64,
    pub state_digest: [u8; 32],
    pub file_bytes: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum StateMsg {
    /// "Which snapshot do you have?"
    OfferRequest,
    /// The newest snapshot of the sender (`None`: it has none).
    Offer(Option<SnapshotOffer>),
    /// Bytes `[offset, offset + len)` of the snapshot at `height`.
    ChunkRequest { height: u64, offset: u64, len: u32 },
    /// A piece of the snapshot file; `bytes` is empty if the sender no longer has it.
    Chunk {
        height: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
}

pub fn encode_peer(frame: &PeerFrame) -> Vec<u8> {
    codec::encode(frame).into_vec()
}

pub fn encode_consensus(msg: Message) -> Vec<u8> {
    encode_peer(&PeerFrame::Consensus(msg))
}

pub fn decode_peer(bytes: &[u8]) -> Result<PeerFrame, CodecError> {
    codec::decode::<PeerFrame>(bytes, PEER_FRAME_BYTES_MAX)
}
