//! The committee (who the nodes are, their keys, `f` and the quorum) and the signer a node uses
//! for its own messages. Who leads a round is the consensus core's business
//! (`consensus::leader`), not the committee's.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use super::domain;
use crate::types::{ClusterId, NodeId, Sig};

/// The fixed membership of one cluster.
#[derive(Clone, Debug)]
pub struct Committee {
    cluster: ClusterId,
    keys: Vec<VerifyingKey>,
    f: usize,
}

/// Why a member list cannot form a committee; worded for the operator who wrote the config.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitteeError {
    TooSmall { n: usize, f: usize },
    TooLarge { n: usize },
    BadKey { node: usize },
    WeakKey { node: usize },
    DuplicateKey { a: usize, b: usize },
}

impl fmt::Display for CommitteeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitteeError::TooSmall { n, f: faults } => write!(
                f,
                "cluster has {n} members but f = {faults} needs at least {}",
                3 * faults + 1
            ),
            CommitteeError::TooLarge { n } => {
                write!(
                    f,
                    "cluster has {n} members; at most {} are supported",
                    u16::MAX
                )
            }
            CommitteeError::BadKey { node } => {
                write!(f, "member {node}: public key is not a valid Ed25519 point")
            }
            CommitteeError::WeakKey { node } => write!(
                f,
                "member {node}: public key is a small-order (weak) point and is refused"
            ),
            CommitteeError::DuplicateKey { a, b } => {
                write!(f, "members {a} and {b} have the same public key")
            }
        }
    }
}

impl std::error::Error for CommitteeError {}

impl Committee {
    /// Builds a committee of `keys.len()` members tolerating `f` Byzantine ones.
    pub fn new(cluster: ClusterId, keys: &[[u8; 32]], f: usize) -> Result<Self, CommitteeError> {
        let n = keys.len();
        if n < 3 * f + 1 || n == 0 {
            return Err(CommitteeError::TooSmall { n, f });
        }
        if n > usize::from(u16::MAX) {
            return Err(CommitteeError::TooLarge { n });
        }
        let mut parsed = Vec::with_capacity(n);
        for (node, bytes) in keys.iter().enumerate() {
            let key =
                VerifyingKey::from_bytes(bytes).map_err(|_| CommitteeError::BadKey { node })?;
            if key.is_weak() {
                return Err(CommitteeError::WeakKey { node });
            }
            if let Some(a) = keys[..node].iter().position(|k| k == bytes) {
                return Err(CommitteeError::DuplicateKey { a, b: node });
            }
            parsed.push(key);
        }
        Ok(Self {
            cluster,
            keys: parsed,
            f,
        })
    }

    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    pub fn n(&self) -> usize {
        self.keys.len()
    }

    pub fn f(&self) -> usize {
        self.f
    }

    /// `ceil((n + f + 1) / 2)`: any two quorums share at least `f + 1` members, so at least one
    /// honest member. Equals `2f + 1` when `n = 3f + 1`.
    pub fn quorum(&self) -> usize {
        (self.n() + self.f + 2) / 2
    }

    /// Timeouts from `f + 1` members include an honest one: enough to join their round.
    pub fn join_threshold(&self) -> usize {
        self.f + 1
    }

    pub fn key(&self, node: NodeId) -> Option<&VerifyingKey> {
        self.keys.get(node.index())
    }

    pub fn contains(&self, node: NodeId) -> bool {
        node.index() < self.n()
    }

    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.n()).map(|i| NodeId(i as u16))
    }
}

/// A node's own signing key, bound to its cluster. Ed25519 signing is deterministic, so the
/// core can sign without a source of randomness.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    cluster: ClusterId,
}

impl Signer {
    /// A client request carrying `ops` as number `seq` of `session`, signed by this key (the
    /// client key is this signer's public key).
    pub fn sign_request(
        &self,
        session: u64,
        seq: u64,
        ops: Vec<u8>,
    ) -> crate::types::ClientRequest {
        let client = crate::types::ClientKey(self.public_key());
        let signature = self.sign(
            super::domain::REQUEST,
            &super::domain::request_body(&client, session, seq, &ops),
        );
        crate::types::ClientRequest {
            client,
            session,
            seq,
            ops,
            signature,
        }
    }

    pub fn new(secret: [u8; 32], cluster: ClusterId) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
            cluster,
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    pub fn sign(&self, tag: &[u8], body: &[u8]) -> Sig {
        let msg = domain::signing_bytes(tag, &self.cluster, body);
        Sig(self.key.sign(&msg).to_bytes())
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material.
        write!(f, "Signer({:02x?}..)", &self.public_key()[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| Signer::new([i as u8 + 1; 32], ClusterId::ZERO).public_key())
            .collect()
    }

    #[test]
    fn quorum_is_2f_plus_1_for_3f_plus_1_and_intersects_in_f_plus_1() {
        for (n, f, q) in [
            (4, 1, 3),
            (7, 2, 5),
            (10, 3, 7),
            (5, 1, 4),
            (6, 1, 4),
            (1, 0, 1),
        ] {
            let c = Committee::new(ClusterId::ZERO, &keys(n), f).unwrap();
            assert_eq!(c.quorum(), q, "n={n} f={f}");
            // Two quorums overlap in 2q - n members; that must exceed f.
            assert!(
                2 * q - n > f,
                "n={n} f={f}: quorums may not intersect in an honest node"
            );
            // And a quorum must be reachable with f members silent.
            assert!(n - f >= q, "n={n} f={f}: no liveness");
        }
    }

    #[test]
    fn too_few_members_for_f_is_a_clear_error() {
        let err = Committee::new(ClusterId::ZERO, &keys(4), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster has 4 members but f = 2 needs at least 7"
        );
    }

    #[test]
    fn weak_and_duplicate_keys_are_refused() {
        let mut k = keys(4);
        // The identity point (y = 1) is small-order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        k[2] = identity;
        assert_eq!(
            Committee::new(ClusterId::ZERO, &k, 1).unwrap_err(),
            CommitteeError::WeakKey { node: 2 }
        );
        let mut k = keys(4);
        k[3] = k[1];
        assert_eq!(
            Committee::new(ClusterId::ZERO, &k, 1).unwrap_err(),
            CommitteeError::DuplicateKey { a: 1, b: 3 }
        );
    }
}
