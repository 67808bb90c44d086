//! The replicated key-value state machine.
//!
//! - [`ops`] and [`reply`]: what clients send and get back, with their rkyv encodings
//!   (`encode_ops`/`decode_ops`, `encode_reply`/`decode_reply`);
//! - [`state_machine`]: [`KvStore`], which applies committed blocks atomically and
//!   deterministically and keeps the exactly-once table ([`exactly_once`]) and the
//!   incrementally maintained state digest ([`digest`]);
//! - [`snapshot`]: point-in-time snapshots, saved to a checksummed file and installed on a
//!   node that fell behind.
//!
//! The state lives in the storage engine's key space as laid out in [`keys`]. This module
//! does not import `consensus`, `types` or `sim`.

pub mod digest;
pub mod exactly_once;
mod execute;
pub mod keys;
pub mod ops;
mod overlay;
pub mod reply;
pub mod snapshot;
pub mod state_machine;

pub use ops::{Compare, CompareOp, CompareTarget, Op, Txn, TxnOp, decode_ops, encode_ops};
pub use reply::{
    KeyValue, KvReply, OpReply, OpResult, Rejection, Reply, ReplyDecodeError, VersionedValue,
    decode_reply, encode_reply,
};
pub use snapshot::SnapshotInfo;
pub use state_machine::{KvRequest, KvStore};

#[cfg(test)]
mod tests;
