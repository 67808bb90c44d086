//! Replies: what applying a request produced, and their encoding (an rkyv archive of
//! [`Reply`], validated on decode like the ops).
//!
//! Replies are part of the replicated state (the exactly-once table stores their encoding),
//! so they contain only deterministic data: no node ids, no times, no error strings from
//! libraries.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize, rancor};

/// A key's stored value with its metadata.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VersionedValue {
    pub value: Vec<u8>,
    /// Times the key was written since it was (re)created; 1 after the first put.
    pub version: u64,
    /// Height of the block that last wrote the key.
    pub mod_height: u64,
    /// Consensus time (ms since the Unix epoch) at which the key expires, if it was put with
    /// a TTL: the first block whose timestamp reaches it deletes the key.
    pub expires_at_ms: Option<u64>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: VersionedValue,
}

/// Result of one simple operation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Put {
        version: u64,
    },
    Get {
        found: Option<VersionedValue>,
    },
    Delete {
        existed: bool,
    },
    /// `more` is true if entries beyond `limit` exist in the range.
    Range {
        entries: Vec<KeyValue>,
        more: bool,
    },
    /// `deleted` keys were removed; `more` is true if keys remain in the range (one delete
    /// removes at most `RANGE_LIMIT_MAX`).
    DeleteRange {
        deleted: u64,
        more: bool,
    },
    /// A put with a TTL: the key's new version, and the consensus time at which it expires
    /// (the block's timestamp plus the TTL).
    PutTtl {
        version: u64,
        expires_at_ms: u64,
    },
    /// A lease was granted (`id` is the one the state machine picked when the request said 0)
    /// or kept alive: it now expires at `expires_at_ms`, consensus time.
    Lease {
        id: u64,
        ttl_ms: u64,
        expires_at_ms: u64,
    },
    /// A lease was revoked with the `deleted` keys attached to it.
    LeaseRevoke {
        id: u64,
        deleted: u64,
    },
    /// A lease's state at the block that read it (`expires_at_ms` is consensus time; the
    /// client subtracts the block time it knows, see `block_time_ms`). Boxed so the archived
    /// `OpResult` keeps the size it had before leases (stored replies keep decoding).
    LeaseTimeToLive(Box<LeaseStatus>),
    /// The ids of all leases, ascending.
    LeaseList {
        ids: Vec<u64>,
    },
}

/// What `LeaseTimeToLive` reports about one lease.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: u64,
    /// The TTL the lease was granted with (each keep-alive extends it by this much).
    pub ttl_ms: u64,
    pub expires_at_ms: u64,
    /// The timestamp of the block that answered: `expires_at_ms - block_time_ms` is what
    /// was left then.
    pub block_time_ms: u64,
    pub key_count: u64,
    /// The attached keys in key order, if they were asked for.
    pub keys: Option<Vec<Vec<u8>>>,
}

/// Result of one operation of a request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum OpReply {
    Simple(OpResult),
    Txn {
        succeeded: bool,
        results: Vec<OpResult>,
    },
    /// The operation (or the whole transaction) failed and changed nothing.
    Failed(OpError),
}

/// Why one operation failed, decided by the state in the block that ran it (so every node
/// gives the same answer). The other operations of the request still run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// No lease with this id (never granted, revoked, or expired).
    LeaseNotFound { id: u64 },
    /// A grant asked for an id that is taken.
    LeaseExists { id: u64 },
    /// A grant would exceed `LEASES_MAX` leases.
    TooManyLeases,
    /// A put would attach more than `LEASE_KEYS_MAX` keys to the lease.
    LeaseFull { id: u64 },
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::ops::{LEASE_KEYS_MAX, LEASES_MAX};
        match self {
            OpError::LeaseNotFound { id } => {
                write!(
                    f,
                    "lease {id} not found (never granted, revoked or expired)"
                )
            }
            OpError::LeaseExists { id } => write!(f, "lease {id} already exists"),
            OpError::TooManyLeases => {
                write!(f, "the cluster holds the limit of {LEASES_MAX} leases")
            }
            OpError::LeaseFull { id } => write!(
                f,
                "lease {id} already has the limit of {LEASE_KEYS_MAX} keys attached"
            ),
        }
    }
}

impl std::error::Error for OpError {}

/// Why a request was not executed. Deterministic: decided by the request and the state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The ops bytes are not a valid encoding.
    Malformed,
    /// No ops, or more ops / compares than the limits allow.
    TooManyOps,
    KeyTooLarge,
    ValueTooLarge,
    /// The seq is below its session's exactly-once window; its reply is no longer kept.
    SeqTooOld,
    /// The session was evicted from the exactly-once table (too many sessions) after this seq
    /// may have run: whether it did is no longer known.
    SessionExpired,
    /// A request with different operations already used this `(client, session, seq)`.
    SeqReused,
    /// A put, get, delete or compare named the empty key (a range may start at it).
    EmptyKey,
    /// A put's TTL is zero or above `TTL_MS_MAX`.
    TtlOutOfRange,
    /// A lease id above `LEASE_ID_MAX`, or 0 where an existing lease is named.
    LeaseIdOutOfRange,
}

impl std::fmt::Display for Rejection {
    /// A sentence with the limit in it, for people.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::ops::{KEY_BYTES_MAX, OPS_PER_REQUEST_MAX, TXN_ITEMS_MAX, VALUE_BYTES_MAX};
        match self {
            Rejection::Malformed => f.write_str("the request's operations do not decode"),
            Rejection::TooManyOps => write!(
                f,
                "a request carries 1 to {OPS_PER_REQUEST_MAX} operations, and a transaction \
                 at most {TXN_ITEMS_MAX} compares and {TXN_ITEMS_MAX} operations per branch"
            ),
            Rejection::KeyTooLarge => {
                write!(f, "a key is longer than the limit of {KEY_BYTES_MAX} bytes")
            }
            Rejection::ValueTooLarge => write!(
                f,
                "a value is larger than the limit of {VALUE_BYTES_MAX} bytes ({} MiB)",
                VALUE_BYTES_MAX >> 20
            ),
            Rejection::SeqTooOld => f.write_str(
                "the request's sequence number is below this client's exactly-once window; \
                 its reply is no longer kept",
            ),
            Rejection::SessionExpired => f.write_str(
                "this client's session was evicted from the exactly-once table; whether the \
                 request ran is no longer known",
            ),
            Rejection::SeqReused => f.write_str(
                "another request with different operations already used this sequence number",
            ),
            Rejection::EmptyKey => f.write_str("the key is empty; keys need at least one byte"),
            Rejection::TtlOutOfRange => write!(
                f,
                "a TTL must be between 1 ms and {} ms ({} days)",
                super::ops::TTL_MS_MAX,
                super::ops::TTL_MS_MAX / 86_400_000
            ),
            Rejection::LeaseIdOutOfRange => write!(
                f,
                "a lease id must be between 1 and {} (0 only asks a grant to pick one)",
                super::ops::LEASE_ID_MAX
            ),
        }
    }
}

/// The reply to one request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// All ops executed, one entry per op, in order.
    Done(Vec<OpReply>),
    Rejected(Rejection),
}

/// Why reply bytes could not be decoded (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyDecodeError;

impl std::fmt::Display for ReplyDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reply bytes are not a valid encoded reply")
    }
}

impl std::error::Error for ReplyDecodeError {}

pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    // See `encode_ops`: only a bug or allocation failure makes this fail.
    rkyv::to_bytes::<rancor::Error>(reply)
        .expect("encoding a reply cannot fail")
        .into_vec()
}

pub fn decode_reply(bytes: &[u8]) -> Result<Reply, ReplyDecodeError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Reply, rancor::Error>(&aligned).map_err(|_| ReplyDecodeError)
}

/// The reply the runtime sends to `client` for its request `(session, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvReply {
    pub client: [u8; 32],
    pub session: u64,
    pub seq: u64,
    /// The digest of the ops this reply answers (the client checks it).
    pub ops_digest: [u8; 32],
    pub reply: Reply,
    /// True when the reply came from the exactly-once table (a retried request).
    pub from_cache: bool,
}
#[cfg(test)]
mod layout_tests {
    /// Variants are appended and none is larger than the largest older one, so the archived
    /// sizes (the stride of archived vectors of them) stay those of the encodings written
    /// before leases: stored replies (exactly-once table), blocks' ops and watch records decode.
    #[test]
    fn archived_sizes_are_those_from_before_leases() {
        assert_eq!(std::mem::size_of::<super::ArchivedOpResult>(), 56);
        assert_eq!(std::mem::size_of::<super::ArchivedOpReply>(), 64);
        assert_eq!(std::mem::size_of::<super::super::ops::ArchivedOp>(), 32);
        assert_eq!(std::mem::size_of::<super::super::ops::ArchivedTxnOp>(), 32);
        assert_eq!(std::mem::size_of::<super::ArchivedVersionedValue>(), 40);
    }
}
