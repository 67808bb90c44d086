//! A read one node answers with a proof, and its check on the client side.
//!
//! The node replies with the key's entry (or its absence) as a [`StateProof`] against the state
//! tree root after block `height`, and that root. The client trusts the reply only if
//! - the proof verifies against `tree_root` for the key it asked for;
//! - `state_digest(height, tree_root)` equals a state digest it has from a certificate (the QC
//!   over the block that carries that height's root; checking the certificate's signatures
//!   against the committee is the caller's part, done before calling [`VerifiedRead::verify`]);
//! - `height` is not below the least height the caller accepts (monotonic reads: a client
//!   never goes back to an older state than one it has seen).
//!
//! Such a read is one round trip to one node and no consensus: it is the state at `height`,
//! which may be stale, so it is not linearizable. Encoded with rkyv and validated (bytecheck,
//! size bound) on decode, like every reply.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize, rancor};

use super::proof::{PROOF_BYTES_MAX, ProofError, StateProof, state_digest};
use super::reply::VersionedValue;

/// Largest encoded verified read [`decode_verified_read`] accepts (a proof plus framing).
pub const VERIFIED_READ_BYTES_MAX: usize = PROOF_BYTES_MAX + 1024;

/// What a node returns for a verified read of one key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRead {
    /// The height whose state the proof is against.
    pub height: u64,
    /// The state tree root after `height`.
    pub tree_root: [u8; 32],
    pub proof: StateProof,
}

/// Why a verified read was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedReadError {
    Malformed,
    /// The reply is at a height below the least one the caller accepts.
    TooOld {
        height: u64,
        min_height: u64,
    },
    /// The height and root do not give the certified state digest.
    DigestMismatch,
    Proof(ProofError),
    /// The proven entry bytes are not a versioned value.
    BadEntry,
}

impl std::fmt::Display for VerifiedReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifiedReadError::Malformed => f.write_str("verified read bytes do not decode"),
            VerifiedReadError::TooOld { height, min_height } => write!(
                f,
                "the reply is the state at height {height}, older than the least accepted \
                 ({min_height})"
            ),
            VerifiedReadError::DigestMismatch => {
                f.write_str("the reply's height and root do not give the certified state digest")
            }
            VerifiedReadError::Proof(e) => write!(f, "the proof is invalid: {e}"),
            VerifiedReadError::BadEntry => f.write_str("the proven entry is not a stored value"),
        }
    }
}

impl std::error::Error for VerifiedReadError {}

impl VerifiedRead {
    /// Checks the reply for `key` against `certified_digest` (the state digest of `height`
    /// taken from a checked certificate) and `min_height`: the value, or `None` if the key is
    /// absent, in the state at `self.height`.
    pub fn verify(
        &self,
        key: &[u8],
        certified_digest: &[u8; 32],
        min_height: u64,
    ) -> Result<Option<VersionedValue>, VerifiedReadError> {
        if self.height < min_height {
            return Err(VerifiedReadError::TooOld {
                height: self.height,
                min_height,
            });
        }
        if &state_digest(self.height, &self.tree_root) != certified_digest {
            return Err(VerifiedReadError::DigestMismatch);
        }
        let entry = self
            .proof
            .verify(&self.tree_root, key)
            .map_err(VerifiedReadError::Proof)?;
        entry
            .map(|bytes| decode_entry(&bytes).ok_or(VerifiedReadError::BadEntry))
            .transpose()
    }
}

/// Set in a data entry's version field when the entry carries an expiry time.
pub const ENTRY_EXPIRES_FLAG: u64 = 1 << 63;
/// Set in a data entry's version field when the key is attached to a lease.
pub const ENTRY_LEASE_FLAG: u64 = 1 << 62;

/// A data entry's bytes (as `kv::keys` stores it): `u64 LE version, u64 LE mod_height, value`;
/// for a key with a TTL, `u64 LE expires_at_ms` follows `mod_height` and `ENTRY_EXPIRES_FLAG`
/// is set in the version field; for a key attached to a lease, `u64 LE lease id` follows
/// (after the expiry, if any) and `ENTRY_LEASE_FLAG` is set. Versions stay far below bit 62
/// (one per write), so entries written before TTLs or leases existed decode unchanged, and
/// the tree's leaf hash (over these bytes) covers the expiry and the lease.
pub fn decode_entry(bytes: &[u8]) -> Option<VersionedValue> {
    decode_entry_with_lease(bytes).map(|(value, _)| value)
}

/// Like [`decode_entry`], with the lease the key is attached to, if any.
pub fn decode_entry_with_lease(bytes: &[u8]) -> Option<(VersionedValue, Option<u64>)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let tagged = word(0)?;
    let mod_height = word(8)?;
    let mut value_at = 16;
    let mut expires_at_ms = None;
    if tagged & ENTRY_EXPIRES_FLAG != 0 {
        expires_at_ms = Some(word(value_at)?);
        value_at += 8;
    }
    let mut lease = None;
    if tagged & ENTRY_LEASE_FLAG != 0 {
        lease = Some(word(value_at)?);
        value_at += 8;
    }
    let value = VersionedValue {
        value: bytes.get(value_at..)?.to_vec(),
        version: tagged & !(ENTRY_EXPIRES_FLAG | ENTRY_LEASE_FLAG),
        mod_height,
        expires_at_ms,
    };
    Some((value, lease))
}

/// Encodes a data entry without a lease (see [`decode_entry`]).
pub fn encode_entry(
    version: u64,
    mod_height: u64,
    expires_at_ms: Option<u64>,
    value: &[u8],
) -> Vec<u8> {
    encode_entry_with_lease(version, mod_height, expires_at_ms, None, value)
}

/// Encodes a data entry (see [`decode_entry`]).
pub fn encode_entry_with_lease(
    version: u64,
    mod_height: u64,
    expires_at_ms: Option<u64>,
    lease: Option<u64>,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + value.len());
    let mut tagged = version;
    if expires_at_ms.is_some() {
        tagged |= ENTRY_EXPIRES_FLAG;
    }
    if lease.is_some() {
        tagged |= ENTRY_LEASE_FLAG;
    }
    out.extend_from_slice(&tagged.to_le_bytes());
    out.extend_from_slice(&mod_height.to_le_bytes());
    for word in expires_at_ms.into_iter().chain(lease) {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

pub fn encode_verified_read(read: &VerifiedRead) -> Vec<u8> {
    // Like `encode_ops`: only a bug or allocation failure makes this fail.
    rkyv::to_bytes::<rancor::Error>(read)
        .expect("encoding a verified read cannot fail")
        .into_vec()
}

/// Decodes and validates a verified read from untrusted bytes.
pub fn decode_verified_read(bytes: &[u8]) -> Result<VerifiedRead, VerifiedReadError> {
    if bytes.len() > VERIFIED_READ_BYTES_MAX {
        return Err(VerifiedReadError::Malformed);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let read = rkyv::from_bytes::<VerifiedRead, rancor::Error>(&aligned)
        .map_err(|_| VerifiedReadError::Malformed)?;
    if read.proof.siblings.len() > super::proof::PROOF_SIBLINGS_MAX {
        return Err(VerifiedReadError::Proof(ProofError::TooManySiblings(
            read.proof.siblings.len(),
        )));
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::super::proof::{
        EMPTY_SUBTREE_HASH, ProofTerminal, data_path, leaf_hash, node_hash, path_bit, value_hash,
    };
    use super::*;

    fn entry(version: u64, mod_height: u64, value: &[u8]) -> Vec<u8> {
        let mut out = version.to_le_bytes().to_vec();
        out.extend_from_slice(&mod_height.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    /// A key whose path splits from "a"'s at the root.
    fn b() -> Vec<u8> {
        let a_bit = path_bit(&data_path(b"a"), 0);
        (b'b'..=b'z')
            .map(|c| vec![c])
            .find(|k| path_bit(&data_path(k), 0) != a_bit)
            .expect("a key on the other side")
    }

    /// A two-leaf tree holding "a" and [`b`]: a reply for `key` and the certified digest.
    fn reply_for(key: &[u8], height: u64) -> (VerifiedRead, [u8; 32]) {
        let (a, b_entry) = (entry(1, 3, b"va"), entry(2, 4, b"vb"));
        let (pa, pb) = (data_path(b"a"), data_path(&b()));
        let (ha, hb) = (
            leaf_hash(&pa, &value_hash(&a)),
            leaf_hash(&pb, &value_hash(&b_entry)),
        );
        let root = if path_bit(&pa, 0) {
            node_hash(&hb, &ha)
        } else {
            node_hash(&ha, &hb)
        };
        let (terminal, sibling) = if key == b"a" {
            (ProofTerminal::Entry(a), hb)
        } else {
            (ProofTerminal::Entry(b_entry), ha)
        };
        let read = VerifiedRead {
            height,
            tree_root: root,
            proof: StateProof {
                siblings: vec![sibling],
                terminal,
            },
        };
        (read, state_digest(height, &root))
    }

    #[test]
    fn a_correct_reply_gives_the_value_at_its_height() {
        let (read, digest) = reply_for(b"a", 9);
        let decoded = decode_verified_read(&encode_verified_read(&read)).unwrap();
        assert_eq!(decoded, read);
        let value = decoded.verify(b"a", &digest, 5).unwrap().unwrap();
        assert_eq!(
            (value.value.as_slice(), value.version, value.mod_height),
            (&b"va"[..], 1, 3)
        );
    }

    #[test]
    fn replies_that_lie_are_rejected() {
        let (read, digest) = reply_for(b"a", 9);
        assert_eq!(
            read.verify(b"a", &digest, 10),
            Err(VerifiedReadError::TooOld {
                height: 9,
                min_height: 10
            })
        );
        let (_, other_digest) = reply_for(b"a", 8);
        assert_eq!(
            read.verify(b"a", &other_digest, 0),
            Err(VerifiedReadError::DigestMismatch),
            "a root certified for another height"
        );
        // Another key's proof, a changed value, and a root with a matching digest but a
        // forged proof all fail.
        assert_eq!(
            read.verify(&b(), &digest, 0),
            Err(VerifiedReadError::Proof(ProofError::RootMismatch))
        );
        let (b_read, _) = reply_for(&b(), 9);
        assert_eq!(
            b_read.verify(&b(), &digest, 0).unwrap().unwrap().value,
            b"vb"
        );
        let mut changed = read.clone();
        changed.proof.terminal = ProofTerminal::Entry(entry(1, 3, b"forged"));
        assert!(matches!(
            changed.verify(b"a", &digest, 0),
            Err(VerifiedReadError::Proof(_))
        ));
        let mut hidden = read.clone();
        hidden.proof.terminal = ProofTerminal::Empty;
        assert!(
            hidden.verify(b"a", &digest, 0).is_err(),
            "a present key hidden"
        );
        let forged_root = VerifiedRead {
            height: 9,
            tree_root: EMPTY_SUBTREE_HASH,
            proof: StateProof {
                siblings: vec![],
                terminal: ProofTerminal::Empty,
            },
        };
        assert_eq!(
            forged_root.verify(b"a", &digest, 0),
            Err(VerifiedReadError::DigestMismatch)
        );
        let bytes = encode_verified_read(&read);
        assert_eq!(
            decode_verified_read(&bytes[..bytes.len() / 2]),
            Err(VerifiedReadError::Malformed)
        );
    }

    #[test]
    fn entry_bytes_shorter_than_the_header_are_refused() {
        assert_eq!(decode_entry(&[0; 15]), None);
        assert_eq!(
            decode_entry(&entry(7, 8, b"")),
            Some(VersionedValue {
                value: vec![],
                version: 7,
                mod_height: 8,
                expires_at_ms: None,
            })
        );
    }
}
