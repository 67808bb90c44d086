//! Quorum certificates (q votes for one block in one round) and timeout certificates
//! (q timeouts for one round).
//!
//! Canonical form, checked by the verifier: signers strictly ascending by node id, so a
//! certificate has exactly one encoding per signer set and a signer cannot be counted twice.

use rkyv::{Archive, Deserialize, Serialize};

use super::{BlockId, ClusterId, NodeId, Round, Sig};

/// One signer's signature inside a certificate.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct SignerSig {
    pub node: NodeId,
    pub sig: Sig,
}

/// Proof that a quorum voted for `block_id` in `round`.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct QuorumCert {
    pub block_id: BlockId,
    pub round: Round,
    pub votes: Vec<SignerSig>,
}

impl QuorumCert {
    /// The fixed certificate of the genesis block: round 0, no signatures.
    pub fn genesis(cluster: &ClusterId) -> Self {
        Self {
            block_id: genesis_block_id(cluster),
            round: 0,
            votes: Vec::new(),
        }
    }

    pub fn is_genesis(&self) -> bool {
        self.round == 0
    }
}

/// The genesis block's id: fixed per cluster, not the hash of any header.
pub fn genesis_block_id(cluster: &ClusterId) -> BlockId {
    let mut h = blake3::Hasher::new();
    h.update(b"bftd/genesis/v1");
    h.update(&cluster.0);
    BlockId(*h.finalize().as_bytes())
}

/// One signer's timeout inside a timeout certificate: it signed `(round, high_qc_round)`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct TimeoutSig {
    pub node: NodeId,
    pub high_qc_round: Round,
    pub sig: Sig,
}

/// Proof that a quorum timed out in `round`. `high_qc` is the highest QC any of them reported,
/// and its round equals the maximum `high_qc_round` among the signers.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct TimeoutCert {
    pub round: Round,
    pub high_qc: QuorumCert,
    pub timeouts: Vec<TimeoutSig>,
}

impl TimeoutCert {
    /// The highest QC round reported by the signers (what the voting rule compares against).
    pub fn max_high_qc_round(&self) -> Round {
        self.timeouts
            .iter()
            .map(|t| t.high_qc_round)
            .max()
            .unwrap_or(0)
    }
}
