//! The client's check of a [`RootCertificate`]: that a quorum of the committee certified the
//! state root of one height. What it checks, in order (the first failure is the answer):
//! - the certificate is for the `(height, root)` the reply uses;
//! - the carrying block's header hashes to the QC's block id, and carries `(height, root)`;
//! - the QC's signers are committee members, strictly ascending (so distinct), a quorum
//!   (`2f + 1` when `n = 3f + 1`), and every vote signature verifies over exactly the bytes a
//!   vote signs (`domain::vote_body` under the `VOTE` tag and the cluster id), with the same
//!   ZIP-215 batch verifier the nodes use.
//!
//! The QC signs the block id, the id covers `state_roots`, so a node that changes the root,
//! the height or the header cannot keep the signatures valid without `2f + 1` keys.

use super::domain;
use super::keys::Committee;
use super::sig_batch::SigBatch;
use crate::types::{Height, NodeId, RootCertificate};

/// Why a root certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// The certificate is for another height or root than the reply's.
    NotForReply,
    /// The header does not hash to the block id the QC certifies.
    HeaderMismatch,
    /// The header does not carry `(height, root)` in its state roots.
    RootNotCarried {
        height: Height,
    },
    UnknownSigner(NodeId),
    SignersNotAscending,
    NoQuorum {
        signers: usize,
        quorum: usize,
    },
    /// The vote signatures of these signers do not verify.
    BadSignatures(Vec<NodeId>),
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::NotForReply => {
                f.write_str("the certificate is for another height or root than the proof")
            }
            CertError::HeaderMismatch => {
                f.write_str("the block header does not hash to the block the QC certifies")
            }
            CertError::RootNotCarried { height } => write!(
                f,
                "the certified block does not carry that root for height {height}"
            ),
            CertError::UnknownSigner(node) => write!(f, "QC signer {node} is not a member"),
            CertError::SignersNotAscending => f.write_str("QC signers not strictly ascending"),
            CertError::NoQuorum { signers, quorum } => {
                write!(f, "QC has {signers} signers, a quorum is {quorum}")
            }
            CertError::BadSignatures(nodes) => {
                write!(f, "QC vote signatures that do not verify: {nodes:?}")
            }
        }
    }
}

impl std::error::Error for CertError {}

/// Checks that `cert` shows a quorum of `committee` certified `root` as the state root after
/// `height`.
pub fn verify_root_certificate(
    committee: &Committee,
    cert: &RootCertificate,
    height: Height,
    root: &[u8; 32],
) -> Result<(), CertError> {
    if cert.height != height || &cert.root != root {
        return Err(CertError::NotForReply);
    }
    if cert.header.compute_id() != cert.qc.block_id {
        return Err(CertError::HeaderMismatch);
    }
    if cert.header.carried_root(height).as_ref() != Some(root) {
        return Err(CertError::RootNotCarried { height });
    }
    let mut prev: Option<NodeId> = None;
    for v in &cert.qc.votes {
        if !committee.contains(v.node) {
            return Err(CertError::UnknownSigner(v.node));
        }
        if prev.is_some_and(|p| p >= v.node) {
            return Err(CertError::SignersNotAscending);
        }
        prev = Some(v.node);
    }
    if cert.qc.votes.len() < committee.quorum() {
        return Err(CertError::NoQuorum {
            signers: cert.qc.votes.len(),
            quorum: committee.quorum(),
        });
    }
    let body = domain::vote_body(&cert.qc.block_id, cert.qc.round);
    let message = domain::signing_bytes(domain::VOTE, committee.cluster(), &body);
    let mut batch = SigBatch::new();
    for v in &cert.qc.votes {
        let key = committee
            .key(v.node)
            .ok_or(CertError::UnknownSigner(v.node))?;
        batch.push(message.clone(), &v.sig, *key);
    }
    batch.verify().map_err(|bad| {
        CertError::BadSignatures(bad.into_iter().map(|i| cert.qc.votes[i].node).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Signer;
    use crate::types::{
        BlockId, CertifiedHeader, ClusterId, QuorumCert, Sig, SignerSig, TcSummary,
    };

    const CLUSTER: ClusterId = ClusterId([3; 32]);

    fn signers() -> Vec<Signer> {
        (0..4u8)
            .map(|i| Signer::new([i + 1; 32], CLUSTER))
            .collect()
    }

    fn committee(signers: &[Signer]) -> Committee {
        let keys: Vec<[u8; 32]> = signers.iter().map(Signer::public_key).collect();
        Committee::new(CLUSTER, &keys, 1).unwrap()
    }

    /// A certificate of `(7, [7; 32])` signed by members 0, 1 and 3.
    fn cert(signers: &[Signer]) -> RootCertificate {
        let header = CertifiedHeader {
            round: 12,
            height: 9,
            timestamp_ms: 0,
            author: NodeId(2),
            parent: BlockId([5; 32]),
            parent_qc_round: 11,
            parent_qc_signers: vec![NodeId(0), NodeId(1), NodeId(2)],
            tc: None,
            roots_after: 6,
            state_roots: vec![(7, [7; 32])],
            payload_digests: vec![[1; 32], [2; 32]],
        };
        let id = header.compute_id();
        let body = domain::vote_body(&id, 12);
        let votes = [0u16, 1, 3]
            .iter()
            .map(|&n| SignerSig {
                node: NodeId(n),
                sig: signers[n as usize].sign(domain::VOTE, &body),
            })
            .collect();
        RootCertificate {
            height: 7,
            root: [7; 32],
            header,
            qc: QuorumCert {
                block_id: id,
                round: 12,
                votes,
            },
        }
    }

    #[test]
    fn a_quorum_certificate_is_accepted() {
        let s = signers();
        let c = committee(&s);
        assert_eq!(verify_root_certificate(&c, &cert(&s), 7, &[7; 32]), Ok(()));
    }

    #[test]
    fn tampered_certificates_are_rejected() {
        let s = signers();
        let c = committee(&s);
        let good = cert(&s);
        let check = |x: &RootCertificate| verify_root_certificate(&c, x, 7, &[7; 32]);
        assert_eq!(
            verify_root_certificate(&c, &good, 7, &[8; 32]),
            Err(CertError::NotForReply),
            "another root than the proof's"
        );
        // A made-up root for the header: the id changes, the QC no longer matches.
        let mut forged = good.clone();
        forged.root = [8; 32];
        forged.header.state_roots = vec![(7, [8; 32])];
        assert_eq!(
            verify_root_certificate(&c, &forged, 7, &[8; 32]),
            Err(CertError::HeaderMismatch)
        );
        // ... and re-pointing the QC at the new id leaves the signatures over the old one.
        forged.qc.block_id = forged.header.compute_id();
        assert!(matches!(
            verify_root_certificate(&c, &forged, 7, &[8; 32]),
            Err(CertError::BadSignatures(_))
        ));
        for tamper in [
            |x: &mut RootCertificate| x.header.payload_digests.pop().map(|_| ()).unwrap(),
            |x: &mut RootCertificate| x.header.parent_qc_signers.push(NodeId(3)),
            |x: &mut RootCertificate| {
                x.header.tc = Some(TcSummary {
                    round: 11,
                    high_qc_round: 10,
                    signers: vec![NodeId(0)],
                })
            },
            |x: &mut RootCertificate| x.header.round += 1,
        ] {
            let mut bad = good.clone();
            tamper(&mut bad);
            assert_eq!(check(&bad), Err(CertError::HeaderMismatch));
        }
        let mut not_carried = good.clone();
        not_carried.height = 6;
        assert_eq!(
            verify_root_certificate(&c, &not_carried, 6, &[7; 32]),
            Err(CertError::RootNotCarried { height: 6 })
        );
        let mut short = good.clone();
        short.qc.votes.pop();
        assert_eq!(
            check(&short),
            Err(CertError::NoQuorum {
                signers: 2,
                quorum: 3
            })
        );
        let mut twice = good.clone();
        twice.qc.votes[1] = twice.qc.votes[0];
        assert_eq!(check(&twice), Err(CertError::SignersNotAscending));
        let mut stranger = good.clone();
        stranger.qc.votes[2].node = NodeId(4);
        assert_eq!(check(&stranger), Err(CertError::UnknownSigner(NodeId(4))));
        let mut bad_sig = good.clone();
        bad_sig.qc.votes[1].sig = Sig([9; 64]);
        assert_eq!(
            check(&bad_sig),
            Err(CertError::BadSignatures(vec![NodeId(1)]))
        );
        // A vote signed for another round does not count.
        let mut other_round = good.clone();
        other_round.qc.round = 13;
        assert!(matches!(
            check(&other_round),
            Err(CertError::BadSignatures(_))
        ));
    }
}
