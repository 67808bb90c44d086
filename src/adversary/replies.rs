//! `lie-to-clients`: every answer a lying member gives a client is wrong, deterministically and
//! always differently from the truth (another value, version, outcome), so a test can tell a
//! lie from a right answer by comparing with what it wrote.
//!
//! `lie-verified-reads`: [`falsify_verified_read`] changes a verified read's value and
//! dresses the lie up (see there); the client's checks must catch every version of it.
//!
//! Used only by the test-only Byzantine daemon (feature `byzantine`).

use crate::api::proof::{
    ProofTerminal, StateProof, data_path, leaf_hash, state_digest, value_hash,
};
use crate::api::verified_read::{VerifiedRead, decode_entry, encode_entry};
use crate::kv::{KeyValue, OpReply, OpResult, Reply, VersionedValue};
use crate::types::RootCertificate;

/// What a liar stores in place of a missing key.
const INVENTED_VALUE: &[u8] = b"forged by a lying node";

/// A reply that differs from `reply` in every result it carries.
pub fn falsify_reply(reply: Reply) -> Reply {
    match reply {
        Reply::Done(ops) => Reply::Done(ops.into_iter().map(falsify_op).collect()),
        // A refused request reported as done: wrong too, and no result to check.
        Reply::Rejected(_) => Reply::Done(Vec::new()),
    }
}

/// Another value than `found` for a key: a changed one, or an invented one for a missing key.
pub fn falsify_found(found: Option<VersionedValue>) -> Option<VersionedValue> {
    Some(match found {
        Some(v) => falsify_value(v),
        None => VersionedValue {
            value: INVENTED_VALUE.to_vec(),
            version: 1,
            mod_height: 1,
            expires_at_ms: None,
        },
    })
}

fn falsify_op(op: OpReply) -> OpReply {
    match op {
        OpReply::Simple(r) => OpReply::Simple(falsify_result(r)),
        OpReply::Txn { succeeded, results } => OpReply::Txn {
            succeeded: !succeeded,
            results: results.into_iter().map(falsify_result).collect(),
        },
        // A failure reported as a success with no result: wrong, and nothing to check.
        OpReply::Failed(_) => OpReply::Txn {
            succeeded: true,
            results: Vec::new(),
        },
    }
}

fn falsify_result(r: OpResult) -> OpResult {
    match r {
        OpResult::Put { version } => OpResult::Put {
            version: version.wrapping_add(1),
        },
        OpResult::PutTtl {
            version,
            expires_at_ms,
        } => OpResult::PutTtl {
            version: version.wrapping_add(1),
            expires_at_ms: expires_at_ms.wrapping_add(1),
        },
        OpResult::Get { found } => OpResult::Get {
            found: falsify_found(found),
        },
        OpResult::Delete { existed } => OpResult::Delete { existed: !existed },
        OpResult::DeleteRange { deleted, more } => OpResult::DeleteRange {
            deleted: deleted.wrapping_add(1),
            more,
        },
        OpResult::Lease {
            id,
            ttl_ms,
            expires_at_ms,
        } => OpResult::Lease {
            id,
            ttl_ms,
            expires_at_ms: expires_at_ms.wrapping_add(1),
        },
        OpResult::LeaseRevoke { id, deleted } => OpResult::LeaseRevoke {
            id,
            deleted: deleted.wrapping_add(1),
        },
        OpResult::LeaseTimeToLive(mut status) => {
            status.key_count = status.key_count.wrapping_add(1);
            OpResult::LeaseTimeToLive(status)
        }
        OpResult::LeaseList { mut ids } => {
            ids.push(u64::MAX);
            OpResult::LeaseList { ids }
        }
        OpResult::Range { entries, more } => OpResult::Range {
            entries: entries
                .into_iter()
                .map(|e| KeyValue {
                    key: e.key,
                    value: falsify_value(e.value),
                })
                .collect(),
            more,
        },
    }
}

fn falsify_value(v: VersionedValue) -> VersionedValue {
    let mut value: Vec<u8> = v.value.iter().map(|b| b ^ 0x5a).collect();
    value.push(b'!');
    VersionedValue {
        value,
        version: v.version.wrapping_add(1),
        mod_height: v.mod_height.wrapping_add(1),
        expires_at_ms: v.expires_at_ms,
    }
}

/// A verified read of `key` whose value is wrong. `made_up_root`: the reply claims a state of
/// one leaf, the forged entry, whose root the proof matches, and the certificate is changed to
/// name that root (its header and QC are the honest ones, so the QC no longer signs it);
/// otherwise the honest proof and root carry a changed entry.
pub fn falsify_verified_read(
    key: &[u8],
    read: &mut VerifiedRead,
    certificate: &mut RootCertificate,
    made_up_root: bool,
) {
    let honest = match &read.proof.terminal {
        ProofTerminal::Entry(bytes) => decode_entry(bytes),
        _ => None,
    };
    let forged = falsify_found(honest).unwrap_or_else(|| VersionedValue {
        value: INVENTED_VALUE.to_vec(),
        version: 1,
        mod_height: 1,
        expires_at_ms: None,
    });
    let entry = encode_entry(
        forged.version,
        forged.mod_height,
        forged.expires_at_ms,
        &forged.value,
    );
    if made_up_root {
        let root = leaf_hash(&data_path(key), &value_hash(&entry));
        read.tree_root = root;
        read.proof = StateProof {
            siblings: Vec::new(),
            terminal: ProofTerminal::Entry(entry),
        };
        let digest = state_digest(read.height, &root);
        certificate.root = digest;
        for (h, r) in &mut certificate.header.state_roots {
            if *h == read.height {
                *r = digest;
            }
        }
    } else {
        read.proof.terminal = ProofTerminal::Entry(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_is_changed() {
        let v = VersionedValue {
            value: b"v".to_vec(),
            version: 3,
            mod_height: 9,
            expires_at_ms: None,
        };
        let honest = Reply::Done(vec![
            OpReply::Simple(OpResult::Put { version: 4 }),
            OpReply::Simple(OpResult::Get {
                found: Some(v.clone()),
            }),
            OpReply::Simple(OpResult::Get { found: None }),
            OpReply::Simple(OpResult::Delete { existed: true }),
            OpReply::Txn {
                succeeded: true,
                results: vec![OpResult::Get { found: Some(v) }],
            },
        ]);
        let Reply::Done(lies) = falsify_reply(honest.clone()) else {
            panic!("a done reply stays done");
        };
        let Reply::Done(truths) = honest else {
            unreachable!()
        };
        assert_eq!(lies.len(), truths.len());
        for (lie, truth) in lies.iter().zip(&truths) {
            assert_ne!(lie, truth);
        }
    }
}
