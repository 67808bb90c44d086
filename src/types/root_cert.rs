//! The certificate of a state root, as a node sends it with a verified read: the compact
//! header of the block B that carries `(height, root)` in its `state_roots`, and the QC over B.
//!
//! The header holds every field [`super::Block::compute_id`] hashes, with the payload as its
//! request digests (what the id hashes anyway), so a client recomputes B's id from the header
//! alone and needs neither the requests nor the block's signature. Both `compute_id` and
//! [`CertifiedHeader::compute_id`] go through [`hash_block_id`], so the two cannot drift.
//!
//! Invariant of a certificate a node builds: `qc.block_id == header.compute_id()` and
//! `header.state_roots` holds the certified `(height, root)`. A client checks all of it
//! (`crypto::root_cert`) and trusts nothing the node says.

use rkyv::{Archive, Deserialize, Serialize};

use super::{Block, BlockId, Height, NodeId, QuorumCert, Round};

/// The signer set of a timeout certificate, as the block id hashes it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct TcSummary {
    pub round: Round,
    pub high_qc_round: Round,
    pub signers: Vec<NodeId>,
}

/// Every field of a block its id covers, payload as request digests.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct CertifiedHeader {
    pub round: Round,
    pub height: Height,
    pub timestamp_ms: u64,
    pub author: NodeId,
    pub parent: BlockId,
    pub parent_qc_round: Round,
    pub parent_qc_signers: Vec<NodeId>,
    pub tc: Option<TcSummary>,
    pub roots_after: Height,
    pub state_roots: Vec<(Height, [u8; 32])>,
    pub payload_digests: Vec<[u8; 32]>,
}

/// What certifies `(height, root)`: the carrying block's header and a QC over it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RootCertificate {
    pub height: Height,
    /// The root the chain certifies for `height`, as blocks carry it: the state digest
    /// `state_digest(height, tree root)` (`api::proof`).
    pub root: [u8; 32],
    pub header: CertifiedHeader,
    pub qc: QuorumCert,
}

impl CertifiedHeader {
    pub fn from_block(block: &Block) -> Self {
        Self {
            round: block.round,
            height: block.height,
            timestamp_ms: block.timestamp_ms,
            author: block.author,
            parent: block.qc.block_id,
            parent_qc_round: block.qc.round,
            parent_qc_signers: block.qc.votes.iter().map(|v| v.node).collect(),
            tc: block.tc.as_ref().map(|tc| TcSummary {
                round: tc.round,
                high_qc_round: tc.high_qc.round,
                signers: tc.timeouts.iter().map(|t| t.node).collect(),
            }),
            roots_after: block.roots_after,
            state_roots: block.state_roots.clone(),
            payload_digests: block.payload.iter().map(|r| r.digest().0).collect(),
        }
    }

    /// The id of the block this header describes (the same hash as `Block::compute_id`).
    pub fn compute_id(&self) -> BlockId {
        hash_block_id(&BlockIdFields {
            round: self.round,
            height: self.height,
            timestamp_ms: self.timestamp_ms,
            author: self.author,
            parent: &self.parent,
            parent_qc_round: self.parent_qc_round,
            parent_qc_signers: &self.parent_qc_signers,
            tc: self
                .tc
                .as_ref()
                .map(|tc| (tc.round, tc.high_qc_round, tc.signers.as_slice())),
            roots_after: self.roots_after,
            state_roots: &self.state_roots,
            payload_digests: self.payload_digests.iter().copied(),
        })
    }

    /// The root this header carries for `height`, if any.
    pub fn carried_root(&self, height: Height) -> Option<[u8; 32]> {
        self.state_roots
            .iter()
            .find(|(h, _)| *h == height)
            .map(|(_, r)| *r)
    }

    /// Bytes of the encoded header, roughly (for bounds and logs).
    pub fn size_bytes(&self) -> usize {
        128 + 2 * self.parent_qc_signers.len()
            + self.tc.as_ref().map_or(0, |tc| 16 + 2 * tc.signers.len())
            + 40 * self.state_roots.len()
            + 32 * self.payload_digests.len()
    }
}

/// The fields a block id covers, borrowed from a block or a header.
pub(super) struct BlockIdFields<'a, P> {
    pub round: Round,
    pub height: Height,
    pub timestamp_ms: u64,
    pub author: NodeId,
    pub parent: &'a BlockId,
    pub parent_qc_round: Round,
    pub parent_qc_signers: &'a [NodeId],
    /// `(round, high QC round, signers)` of the block's TC.
    pub tc: Option<(Round, Round, &'a [NodeId])>,
    pub roots_after: Height,
    pub state_roots: &'a [(Height, [u8; 32])],
    pub payload_digests: P,
}

/// The block id hash (layout `bftd/block-id/v4`, see `Block::compute_id`; v4 added the
/// timestamp).
pub(super) fn hash_block_id<P>(f: &BlockIdFields<'_, P>) -> BlockId
where
    P: ExactSizeIterator<Item = [u8; 32]> + Clone,
{
    let mut h = blake3::Hasher::new();
    h.update(b"bftd/block-id/v4");
    h.update(&f.round.to_le_bytes());
    h.update(&f.height.to_le_bytes());
    h.update(&f.timestamp_ms.to_le_bytes());
    h.update(&f.author.0.to_le_bytes());
    h.update(&f.parent.0);
    h.update(&f.parent_qc_round.to_le_bytes());
    hash_signers(&mut h, f.parent_qc_signers);
    match f.tc {
        Some((round, high_qc_round, signers)) => {
            h.update(&[1]);
            h.update(&round.to_le_bytes());
            h.update(&high_qc_round.to_le_bytes());
            hash_signers(&mut h, signers);
        }
        None => {
            h.update(&[0]);
        }
    }
    h.update(&f.roots_after.to_le_bytes());
    h.update(&(f.state_roots.len() as u64).to_le_bytes());
    for (height, root) in f.state_roots {
        h.update(&height.to_le_bytes());
        h.update(root);
    }
    let digests = f.payload_digests.clone();
    h.update(&(digests.len() as u64).to_le_bytes());
    for d in digests {
        h.update(&d);
    }
    BlockId(*h.finalize().as_bytes())
}

/// A signer list as its length and the node ids in order (the verifier makes them canonical:
/// strictly ascending), so distinct lists never hash alike.
fn hash_signers(h: &mut blake3::Hasher, nodes: &[NodeId]) {
    h.update(&(nodes.len() as u64).to_le_bytes());
    for node in nodes {
        h.update(&node.0.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientKey, ClientRequest, Sig, SignerSig, TimeoutCert, TimeoutSig};

    fn block(tc: bool) -> Block {
        let qc = QuorumCert {
            block_id: BlockId([4; 32]),
            round: 6,
            votes: [0u16, 2, 3]
                .iter()
                .map(|&n| SignerSig {
                    node: NodeId(n),
                    sig: Sig([n as u8; 64]),
                })
                .collect(),
        };
        Block {
            round: 8,
            height: 5,
            timestamp_ms: 1_700_000_000_123,
            tc: tc.then(|| TimeoutCert {
                round: 7,
                high_qc: qc.clone(),
                timeouts: [1u16, 2, 3]
                    .iter()
                    .map(|&n| TimeoutSig {
                        node: NodeId(n),
                        high_qc_round: 6,
                        sig: Sig([9; 64]),
                    })
                    .collect(),
            }),
            qc,
            roots_after: 1,
            state_roots: vec![(2, [2; 32]), (3, [3; 32])],
            payload: (0..3u8)
                .map(|i| ClientRequest {
                    client: ClientKey([i; 32]),
                    session: 1,
                    seq: u64::from(i),
                    ops: vec![i; 10],
                    signature: Sig([i; 64]),
                })
                .collect(),
            author: NodeId(1),
            signature: Sig([1; 64]),
        }
    }

    #[test]
    fn a_header_hashes_to_its_block_id() {
        for tc in [false, true] {
            let b = block(tc);
            let header = CertifiedHeader::from_block(&b);
            assert_eq!(header.compute_id(), b.compute_id(), "tc {tc}");
            assert_eq!(header.carried_root(3), Some([3; 32]));
            assert_eq!(header.carried_root(4), None);
            // Every field counts: the payload, then the carried roots.
            let mut other = b.clone();
            other.payload.pop();
            assert_ne!(
                CertifiedHeader::from_block(&other).compute_id(),
                b.compute_id()
            );
            let mut other = b.clone();
            other.state_roots[1].1[0] ^= 1;
            assert_ne!(other.compute_id(), b.compute_id());
            let mut other = b.clone();
            other.timestamp_ms += 1;
            assert_ne!(other.compute_id(), b.compute_id());
            assert_ne!(
                CertifiedHeader::from_block(&other).compute_id(),
                header.compute_id()
            );
        }
    }
}
