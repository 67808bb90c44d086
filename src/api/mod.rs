//! The client's vocabulary: the operations a signed request carries, the replies it gets back,
//! their rkyv encodings and the limits both sides check; and the proofs of the authenticated
//! state with their pure verifier ([`proof`]) and the check of a read one node answers with a
//! proof ([`verified_read`]); the changes a watch delivers ([`watch`]).
//!
//! Shared by the client library and the replicated state machine (`kv`), which re-exports it.
//! A leaf: it imports nothing from the rest of the crate, so the client library does not pull
//! in the storage engine (checked by `tests/layering.rs`).

pub mod ops;
pub mod proof;
pub mod reply;
pub mod verified_read;
pub mod watch;

pub use ops::{
    Compare, CompareOp, CompareTarget, LeaseOp, NotSimple, Op, Txn, TxnOp, decode_ops, encode_ops,
};
pub use proof::{ProofError, ProofTerminal, StateProof, decode_proof, encode_proof};
pub use reply::{
    KeyValue, KvReply, LeaseStatus, OpError, OpReply, OpResult, Rejection, Reply, ReplyDecodeError,
    VersionedValue, decode_reply, encode_reply,
};
pub use watch::{WatchEvent, watch_matches};

/// Seqs per client session whose replies every node keeps (the exactly-once window): a client
/// keeps at most this many requests in flight per session.
pub const CLIENT_WINDOW_SEQS: u64 = 256;
