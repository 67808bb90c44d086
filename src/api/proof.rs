//! Proofs of the authenticated state: the hashing of the state tree and the pure verifier a
//! client runs against a state root, without the state machine or the storage engine.
//!
//! The state is a binary sparse Merkle tree over 256-bit paths (`kv::state_tree` keeps it).
//! Every state entry (engine key `k`, entry bytes `v`) is a leaf at path `blake3(k)`, placed at
//! the shallowest depth where its path prefix is unique among the leaves ("leaf shortcut");
//! a subtree with no leaf hashes to [`EMPTY_SUBTREE_HASH`]. So:
//!
//! ```text
//! leaf     = blake3_keyed(LEAF_KEY, path(32) ++ blake3(v))
//! internal = blake3_keyed(NODE_KEY, left(32) ++ right(32))   (bit 0 left, bit 1 right)
//! empty    = 32 zero bytes
//! state digest at height h = blake3("bftd/kv-state/v2" ++ h (u64 LE) ++ tree root)
//! ```
//!
//! `blake3_keyed` is BLAKE3's keyed mode; the two keys are the ASCII strings
//! `"bftd state tree leaf hash key v2"` and `"bftd state tree node hash key v2"` (32 bytes
//! each). Why keyed mode and not a domain prefix: a node's input is then exactly one 64-byte
//! BLAKE3 block, one compression per hash instead of two (tree hashing was about a tenth of
//! the storage thread's time under load), and the key separates leaves from internal nodes
//! and both from every other hash of the system as a prefix did.
//!
//! Path bits are read most significant bit of byte 0 first. A node is internal exactly when
//! its subtree holds two leaves or more, so the tree's shape (and its root) depends only on the
//! set of entries, never on the order they were written.
//!
//! A [`StateProof`] for a key lists the sibling hashes from the root down to where the key's
//! path ends: at the key's own leaf (membership: the proof carries the entry bytes), at an empty
//! subtree, or at another key's leaf whose path shares the prefix (both non-membership). The
//! verifier folds the siblings back up and compares with the root. Invariants: at most
//! [`PROOF_SIBLINGS_MAX`] siblings; a decoded proof was validated by bytecheck.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize, rancor};

/// The first byte of a data entry's engine key (`kv::keys` uses the same constant).
pub const DATA_PREFIX: u8 = b'd';
/// Hash of a subtree that holds no entry.
pub const EMPTY_SUBTREE_HASH: [u8; 32] = [0; 32];
pub const LEAF_KEY: &[u8; 32] = b"bftd state tree leaf hash key v2";
pub const NODE_KEY: &[u8; 32] = b"bftd state tree node hash key v2";
pub const STATE_DOMAIN: &[u8; 16] = b"bftd/kv-state/v2";
/// Paths are 256 bits, so no leaf lies deeper than this.
pub const PROOF_SIBLINGS_MAX: usize = 256;
/// Largest encoded proof [`decode_proof`] accepts: the siblings plus an entry of the largest
/// key and value a client may write, with room for the archive's framing.
pub const PROOF_BYTES_MAX: usize = PROOF_SIBLINGS_MAX * 32 + 2 * 1024 * 1024;

/// A leaf's path: the hash of the entry's engine key.
pub fn key_path(engine_key: &[u8]) -> [u8; 32] {
    *blake3::hash(engine_key).as_bytes()
}

/// The path of the data entry of user key `key`.
pub fn data_path(key: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[DATA_PREFIX]);
    hasher.update(key);
    *hasher.finalize().as_bytes()
}

pub fn value_hash(entry: &[u8]) -> [u8; 32] {
    *blake3::hash(entry).as_bytes()
}

pub fn leaf_hash(path: &[u8; 32], value_hash: &[u8; 32]) -> [u8; 32] {
    keyed_pair_hash(LEAF_KEY, path, value_hash)
}

pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    keyed_pair_hash(NODE_KEY, left, right)
}

/// `blake3_keyed(key, a ++ b)`: one 64-byte block, so one compression.
fn keyed_pair_hash(key: &[u8; 32], a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(a);
    block[32..].copy_from_slice(b);
    *blake3::keyed_hash(key, &block).as_bytes()
}

/// The digest a node publishes after applying block `height` with state tree root `tree_root`.
pub fn state_digest(height: u64, tree_root: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(STATE_DOMAIN);
    hasher.update(&height.to_le_bytes());
    hasher.update(tree_root);
    *hasher.finalize().as_bytes()
}

/// Bit `depth` of `path` (most significant bit of byte 0 is bit 0); `depth < 256`.
pub fn path_bit(path: &[u8; 32], depth: usize) -> bool {
    path[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// Whether the first `bits` bits of `a` and `b` are equal (`bits <= 256`).
pub fn same_prefix(a: &[u8; 32], b: &[u8; 32], bits: usize) -> bool {
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[whole] ^ b[whole]) & (0xFF00u16 >> rest) as u8 == 0
}

/// Where a proof's path ends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ProofTerminal {
    /// An empty subtree: the key is absent.
    Empty,
    /// The key's own leaf, with its entry bytes (for a data entry: version u64 LE, mod height
    /// u64 LE, value).
    Entry(Vec<u8>),
    /// The leaf of another key whose path shares the prefix: the key is absent.
    OtherLeaf {
        path: [u8; 32],
        value_hash: [u8; 32],
    },
}

/// A membership or non-membership proof for one key against a state tree root.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StateProof {
    /// Sibling hashes from the root's children down to the terminal's level.
    pub siblings: Vec<[u8; 32]>,
    pub terminal: ProofTerminal,
}

/// Why a proof does not show what it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The encoding is not a valid proof archive (or too large).
    Malformed,
    TooManySiblings(usize),
    /// The other leaf of a non-membership proof is the key itself, or not on its path.
    OtherLeafInvalid,
    /// The siblings and terminal hash to another root.
    RootMismatch,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofError::Malformed => f.write_str("proof bytes are not a valid encoded proof"),
            ProofError::TooManySiblings(n) => write!(
                f,
                "proof has {n} siblings, at most {PROOF_SIBLINGS_MAX} are possible"
            ),
            ProofError::OtherLeafInvalid => {
                f.write_str("non-membership proof names a leaf that is not on the key's path")
            }
            ProofError::RootMismatch => f.write_str("proof does not hash to the expected root"),
        }
    }
}

impl std::error::Error for ProofError {}

impl StateProof {
    /// Checks the proof for user key `key` against the state tree `root`: the key's entry
    /// bytes (version, mod height, value) if present, `None` if absent.
    pub fn verify(&self, root: &[u8; 32], key: &[u8]) -> Result<Option<Vec<u8>>, ProofError> {
        self.verify_path(root, &data_path(key))
    }

    /// [`StateProof::verify`] for the leaf at `path` (any state entry, e.g. the exactly-once
    /// table's, whose path is `key_path(engine_key)`).
    pub fn verify_path(
        &self,
        root: &[u8; 32],
        path: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, ProofError> {
        let depth = self.siblings.len();
        if depth > PROOF_SIBLINGS_MAX {
            return Err(ProofError::TooManySiblings(depth));
        }
        let (mut hash, found) = match &self.terminal {
            ProofTerminal::Empty => (EMPTY_SUBTREE_HASH, None),
            ProofTerminal::Entry(entry) => (leaf_hash(path, &value_hash(entry)), Some(entry)),
            ProofTerminal::OtherLeaf {
                path: other,
                value_hash,
            } => {
                if other == path || !same_prefix(other, path, depth) {
                    return Err(ProofError::OtherLeafInvalid);
                }
                (leaf_hash(other, value_hash), None)
            }
        };
        for (level, sibling) in self.siblings.iter().enumerate().rev() {
            hash = if path_bit(path, level) {
                node_hash(sibling, &hash)
            } else {
                node_hash(&hash, sibling)
            };
        }
        if &hash != root {
            return Err(ProofError::RootMismatch);
        }
        Ok(found.cloned())
    }
}

pub fn encode_proof(proof: &StateProof) -> Vec<u8> {
    // Like `encode_ops`: only a bug or allocation failure makes this fail.
    rkyv::to_bytes::<rancor::Error>(proof)
        .expect("encoding a proof cannot fail")
        .into_vec()
}

/// Decodes and validates (bytecheck, size and sibling bounds) a proof from untrusted bytes.
pub fn decode_proof(bytes: &[u8]) -> Result<StateProof, ProofError> {
    if bytes.len() > PROOF_BYTES_MAX {
        return Err(ProofError::Malformed);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let archived = rkyv::access::<ArchivedStateProof, rancor::Error>(&aligned)
        .map_err(|_| ProofError::Malformed)?;
    if archived.siblings.len() > PROOF_SIBLINGS_MAX {
        return Err(ProofError::TooManySiblings(archived.siblings.len()));
    }
    rkyv::deserialize::<StateProof, rancor::Error>(archived).map_err(|_| ProofError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_prefixes() {
        let mut a = [0u8; 32];
        a[0] = 0b1010_0000;
        assert!(path_bit(&a, 0) && !path_bit(&a, 1) && path_bit(&a, 2));
        let mut b = a;
        b[0] = 0b1011_0000;
        assert!(same_prefix(&a, &b, 3) && !same_prefix(&a, &b, 4));
        assert!(same_prefix(&a, &b, 0));
        b[31] ^= 1;
        b[0] = a[0];
        assert!(same_prefix(&a, &b, 255) && !same_prefix(&a, &b, 256));
    }

    #[test]
    fn hashes_are_domain_separated() {
        let x = [7u8; 32];
        assert_ne!(leaf_hash(&x, &x), node_hash(&x, &x));
        assert_ne!(state_digest(1, &x), state_digest(2, &x));
        assert_eq!(data_path(b"k"), key_path(b"dk"));
    }

    #[test]
    fn a_single_leaf_tree_proves_its_key_and_the_absence_of_others() {
        let entry = b"entry bytes".to_vec();
        let path = data_path(b"k");
        let root = leaf_hash(&path, &value_hash(&entry));
        let member = StateProof {
            siblings: vec![],
            terminal: ProofTerminal::Entry(entry.clone()),
        };
        assert_eq!(member.verify(&root, b"k"), Ok(Some(entry)));
        assert_eq!(member.verify(&root, b"j"), Err(ProofError::RootMismatch));
        let absent = StateProof {
            siblings: vec![],
            terminal: ProofTerminal::OtherLeaf {
                path,
                value_hash: value_hash(b"entry bytes"),
            },
        };
        assert_eq!(absent.verify(&root, b"j"), Ok(None));
        assert_eq!(
            absent.verify(&root, b"k"),
            Err(ProofError::OtherLeafInvalid)
        );
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let proof = StateProof {
            siblings: vec![[1; 32], [2; 32]],
            terminal: ProofTerminal::Entry(b"v".to_vec()),
        };
        let bytes = encode_proof(&proof);
        assert_eq!(decode_proof(&bytes), Ok(proof));
        assert_eq!(
            decode_proof(&bytes[..bytes.len() - 3]),
            Err(ProofError::Malformed)
        );
        assert_eq!(decode_proof(&[0xFF; 7]), Err(ProofError::Malformed));
        let long = StateProof {
            siblings: vec![[0; 32]; PROOF_SIBLINGS_MAX + 1],
            terminal: ProofTerminal::Empty,
        };
        assert_eq!(
            decode_proof(&encode_proof(&long)),
            Err(ProofError::TooManySiblings(PROOF_SIBLINGS_MAX + 1))
        );
        assert_eq!(
            long.verify(&[0; 32], b"k"),
            Err(ProofError::TooManySiblings(PROOF_SIBLINGS_MAX + 1))
        );
    }
}
