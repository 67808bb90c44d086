//! Client operations and their encoding: what a signed request carries as opaque bytes.
//!
//! Encoding: an rkyv archive of `Vec<Op>` (see FORMAT.md). Decoding copies the bytes into a
//! 16-byte-aligned buffer, validates them with bytecheck, deserialises, then checks the
//! limits below. Every failure is a [`Rejection`], decided only by the bytes, so every node
//! gives the same answer; nothing here panics on input.
//!
//! A transaction cannot contain a transaction ([`TxnOp`] has no `Txn` variant), which keeps
//! the types non-recursive and the work per request bounded.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize, rancor};

use super::reply::Rejection;

/// Operations one request may carry.
pub const OPS_PER_REQUEST_MAX: usize = 256;
/// Compares plus branch operations one transaction may carry (each of the three lists).
pub const TXN_ITEMS_MAX: usize = 64;
pub const KEY_BYTES_MAX: usize = 4 * 1024;
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Entries one range returns at most; a larger `limit` is clamped to it.
pub const RANGE_LIMIT_MAX: u32 = 1000;
/// The longest TTL a put may ask for (10 years), so `block time + ttl` never nears overflow.
pub const TTL_MS_MAX: u64 = 10 * 365 * 86_400_000;
/// The highest lease id (etcd's ids are signed 64-bit; 0 asks the state machine to pick one).
pub const LEASE_ID_MAX: u64 = i64::MAX as u64;
/// Leases the state holds at most: bounds the lease table and a `LeaseList` reply.
pub const LEASES_MAX: usize = 10_000;
/// Keys one lease carries at most: bounds a revoke's deletes (one block) and a
/// `LeaseTimeToLive` reply.
pub const LEASE_KEYS_MAX: usize = 1_000;

/// One operation of a request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Keys in `start <= key < end` (`end = None`: no upper bound), at most `limit`.
    Range {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
    },
    Txn(Txn),
    /// Deletes the keys in `start <= key < end` (`end = None`: no upper bound), the first
    /// `RANGE_LIMIT_MAX` of them at most, atomically; the result says whether more remain.
    DeleteRange {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
    /// A put whose key expires `ttl_ms` after the committing block's timestamp (consensus
    /// time, see README "Keys with a TTL"). A later put without a TTL makes the key permanent.
    PutTtl {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
    },
    /// Creates lease `id` (0: the state machine picks the lowest free id at or above its
    /// counter, deterministically) expiring `ttl_ms` after the block's timestamp. Refused
    /// (`OpError::LeaseExists`) if `id` is taken, `OpError::TooManyLeases` at `LEASES_MAX`.
    LeaseGrant {
        id: u64,
        ttl_ms: u64,
    },
    /// Moves lease `id`'s expiry to the block's timestamp plus its granted TTL.
    LeaseKeepAlive {
        id: u64,
    },
    /// Deletes lease `id` and every key attached to it, in this block.
    LeaseRevoke {
        id: u64,
    },
    /// A put that attaches `key` to lease `lease` (which must exist): the key is deleted when
    /// the lease is revoked or expires. A later plain put or delete of the key detaches it.
    PutLease {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
    /// Lease `id`'s granted TTL, expiry and attached key count; with `keys`, the attached
    /// keys too (at most `LEASE_KEYS_MAX`).
    LeaseTimeToLive {
        id: u64,
        keys: bool,
    },
    /// The ids of all leases (at most `LEASES_MAX`), ascending.
    LeaseList,
}

/// An operation allowed inside a transaction branch. Lease grants, keep-alives, revokes and
/// lease reads are not: they are refused in a transaction by construction (no variant), which
/// keeps a branch free of operations that can fail; `PutLease` is allowed, and the whole
/// transaction fails with no effect if its lease is missing or full (`kv::execute`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Range {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
    },
    DeleteRange {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
    PutTtl {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
    },
    PutLease {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
}

/// If every compare holds, run `success`, else `failure`; all atomically.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// `key`'s current `target` compared with `op` against the given operand.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a compare looks at. A missing key has version 0 and no value: every value compare
/// on a missing key is false (whatever the operator), which keeps "absent" distinct from
/// "empty value".
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(u64),
    Exists(bool),
}

/// An operation that is neither a key operation nor a transaction: the lease table's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    Grant { id: u64, ttl_ms: u64 },
    KeepAlive { id: u64 },
    Revoke { id: u64 },
    TimeToLive { id: u64, keys: bool },
    List,
}

/// What [`Op::into_simple`] returns for an op that has no single key-operation form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSimple {
    Txn(Txn),
    Lease(LeaseOp),
}

impl Op {
    /// The single-operation form, for key operations (everything but `Txn` and the lease
    /// table's operations).
    pub fn into_simple(self) -> Result<TxnOp, NotSimple> {
        match self {
            Op::Put { key, value } => Ok(TxnOp::Put { key, value }),
            Op::Get { key } => Ok(TxnOp::Get { key }),
            Op::Delete { key } => Ok(TxnOp::Delete { key }),
            Op::Range { start, end, limit } => Ok(TxnOp::Range { start, end, limit }),
            Op::DeleteRange { start, end } => Ok(TxnOp::DeleteRange { start, end }),
            Op::PutTtl { key, value, ttl_ms } => Ok(TxnOp::PutTtl { key, value, ttl_ms }),
            Op::PutLease { key, value, lease } => Ok(TxnOp::PutLease { key, value, lease }),
            Op::Txn(txn) => Err(NotSimple::Txn(txn)),
            Op::LeaseGrant { id, ttl_ms } => Err(NotSimple::Lease(LeaseOp::Grant { id, ttl_ms })),
            Op::LeaseKeepAlive { id } => Err(NotSimple::Lease(LeaseOp::KeepAlive { id })),
            Op::LeaseRevoke { id } => Err(NotSimple::Lease(LeaseOp::Revoke { id })),
            Op::LeaseTimeToLive { id, keys } => {
                Err(NotSimple::Lease(LeaseOp::TimeToLive { id, keys }))
            }
            Op::LeaseList => Err(NotSimple::Lease(LeaseOp::List)),
        }
    }
}

/// Encodes a request's operations (client side).
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    // Serialising in-memory values into a Vec only fails on allocation failure or on
    // archives past 4 GiB, which the limits above exclude: a failure is a bug.
    rkyv::to_bytes::<rancor::Error>(&ops.to_vec())
        .expect("encoding ops cannot fail")
        .into_vec()
}

/// Decodes and checks a request's operations. Never panics; the error is deterministic.
pub fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, Rejection> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let ops =
        rkyv::from_bytes::<Vec<Op>, rancor::Error>(&aligned).map_err(|_| Rejection::Malformed)?;
    check_ops(&ops)?;
    Ok(ops)
}

/// The limits of [`decode_ops`], for a client to check before it signs and sends: the same
/// answer the nodes would give.
pub fn check_ops(ops: &[Op]) -> Result<(), Rejection> {
    if ops.is_empty() || ops.len() > OPS_PER_REQUEST_MAX {
        return Err(Rejection::TooManyOps);
    }
    for op in ops {
        match op {
            Op::Txn(txn) => check_txn(txn)?,
            Op::Put { key, value } => check_put(key, value)?,
            Op::PutTtl { key, value, ttl_ms } => check_put_ttl(key, value, *ttl_ms)?,
            Op::PutLease { key, value, lease } => check_put_lease(key, value, *lease)?,
            Op::LeaseGrant { id, ttl_ms } => {
                if *id > LEASE_ID_MAX {
                    return Err(Rejection::LeaseIdOutOfRange);
                }
                check_ttl(*ttl_ms)?
            }
            Op::LeaseKeepAlive { id } | Op::LeaseRevoke { id } | Op::LeaseTimeToLive { id, .. } => {
                check_lease_id(*id)?
            }
            Op::LeaseList => {}
            Op::Get { key } | Op::Delete { key } => check_key(key)?,
            Op::Range { start, end, .. } | Op::DeleteRange { start, end } => {
                check_range(start, end.as_deref())?
            }
        }
    }
    Ok(())
}

fn check_txn(txn: &Txn) -> Result<(), Rejection> {
    if [txn.compare.len(), txn.success.len(), txn.failure.len()]
        .iter()
        .any(|&n| n > TXN_ITEMS_MAX)
    {
        return Err(Rejection::TooManyOps);
    }
    for compare in &txn.compare {
        check_key(&compare.key)?;
        if let CompareTarget::Value(value) = &compare.target {
            check_value(value)?;
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put { key, value } => check_put(key, value)?,
            TxnOp::PutTtl { key, value, ttl_ms } => check_put_ttl(key, value, *ttl_ms)?,
            TxnOp::PutLease { key, value, lease } => check_put_lease(key, value, *lease)?,
            TxnOp::Get { key } | TxnOp::Delete { key } => check_key(key)?,
            TxnOp::Range { start, end, .. } | TxnOp::DeleteRange { start, end } => {
                check_range(start, end.as_deref())?
            }
        }
    }
    Ok(())
}

/// A key that names one entry: not empty (as etcd), at most `KEY_BYTES_MAX`. A range's
/// bounds may be empty (`start = ""` is the first key), so they use [`check_bound`].
fn check_key(key: &[u8]) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(Rejection::EmptyKey);
    }
    check_bound(key)
}

fn check_bound(key: &[u8]) -> Result<(), Rejection> {
    if key.len() > KEY_BYTES_MAX {
        Err(Rejection::KeyTooLarge)
    } else {
        Ok(())
    }
}

fn check_value(value: &[u8]) -> Result<(), Rejection> {
    if value.len() > VALUE_BYTES_MAX {
        Err(Rejection::ValueTooLarge)
    } else {
        Ok(())
    }
}

fn check_put(key: &[u8], value: &[u8]) -> Result<(), Rejection> {
    check_key(key)?;
    check_value(value)
}

fn check_put_ttl(key: &[u8], value: &[u8], ttl_ms: u64) -> Result<(), Rejection> {
    check_put(key, value)?;
    check_ttl(ttl_ms)
}

fn check_ttl(ttl_ms: u64) -> Result<(), Rejection> {
    if ttl_ms == 0 || ttl_ms > TTL_MS_MAX {
        return Err(Rejection::TtlOutOfRange);
    }
    Ok(())
}

/// A lease named by an existing-lease operation: 1 to `LEASE_ID_MAX` (0 only asks a grant to
/// pick one).
fn check_lease_id(id: u64) -> Result<(), Rejection> {
    if id == 0 || id > LEASE_ID_MAX {
        return Err(Rejection::LeaseIdOutOfRange);
    }
    Ok(())
}

fn check_put_lease(key: &[u8], value: &[u8], lease: u64) -> Result<(), Rejection> {
    check_put(key, value)?;
    check_lease_id(lease)
}

fn check_range(start: &[u8], end: Option<&[u8]>) -> Result<(), Rejection> {
    check_bound(start)?;
    end.map_or(Ok(()), check_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage_is_rejected_not_panicking() {
        let ops = vec![
            Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Op::Txn(Txn {
                compare: vec![Compare {
                    key: b"k".to_vec(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(1),
                }],
                success: vec![TxnOp::Delete { key: b"k".to_vec() }],
                failure: vec![TxnOp::Range {
                    start: vec![],
                    end: None,
                    limit: 5,
                }],
            }),
        ];
        let bytes = encode_ops(&ops);
        assert_eq!(decode_ops(&bytes).unwrap(), ops);
        assert_eq!(decode_ops(&bytes[1..]).unwrap_err(), Rejection::Malformed);
        assert_eq!(decode_ops(&[]).unwrap_err(), Rejection::Malformed);
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0xff;
            let _ = decode_ops(&flipped); // must not panic; may decode to other valid ops
        }
        assert_eq!(
            decode_ops(&encode_ops(&[])).unwrap_err(),
            Rejection::TooManyOps
        );
        let big = vec![Op::Get {
            key: vec![0; KEY_BYTES_MAX + 1],
        }];
        assert_eq!(
            decode_ops(&encode_ops(&big)).unwrap_err(),
            Rejection::KeyTooLarge
        );
    }

    #[test]
    fn empty_keys_are_refused_but_an_empty_range_start_is_the_first_key() {
        let empty = |op: Op| decode_ops(&encode_ops(&[op])).map(|_| ());
        assert_eq!(
            empty(Op::Put {
                key: vec![],
                value: b"v".to_vec()
            }),
            Err(Rejection::EmptyKey)
        );
        assert_eq!(empty(Op::Get { key: vec![] }), Err(Rejection::EmptyKey));
        assert_eq!(empty(Op::Delete { key: vec![] }), Err(Rejection::EmptyKey));
        let in_txn = Op::Txn(Txn {
            compare: vec![],
            success: vec![TxnOp::Put {
                key: vec![],
                value: vec![],
            }],
            failure: vec![],
        });
        assert_eq!(empty(in_txn), Err(Rejection::EmptyKey));
        let range = Op::Range {
            start: vec![],
            end: None,
            limit: 1,
        };
        assert_eq!(empty(range), Ok(()));
    }
}
