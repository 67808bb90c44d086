//! The replicated key-value state machine.
//!
//! - [`ops`] and [`reply`]: what clients send and get back, with their rkyv encodings; they
//!   live in [`crate::api`] (the client's vocabulary, which the client library uses without
//!   this module) and are re-exported here;
//! - [`state_machine`]: [`KvStore`], which applies committed blocks atomically and
//!   deterministically and keeps the exactly-once table ([`exactly_once`]) and the
//!   authenticated state ([`state_tree`], a sparse Merkle tree updated per block, whose root
//!   the state digest commits to and against which [`KvStore::prove`] proves entries; its
//!   nodes are read through `node_cache`, a bounded write-through cache; [`leaves`] says
//!   which entries each leaf covers);
//! - [`watch_log`]: the committed changes of recent heights, written in each block's batch
//!   but outside the state (not in the tree, the digest or snapshots), which watches read;
//! - [`root_memory`]: the state digests of the last heights applied, written in each block's
//!   batch outside the state, so a restarted node still knows the roots it would vote on;
//! - [`snapshot`]: point-in-time snapshots, saved to a checksummed file and installed on a
//!   node that fell behind.
//!
//! The state lives in the storage engine's key space as laid out in [`keys`]. This module
//! does not import `consensus`, `types` or `sim`.

mod audit;
pub mod exactly_once;
mod execute;
pub mod expiry;
pub mod history;
pub mod keys;
pub mod lease;
pub mod leaves;
mod node_cache;
pub use crate::api::ops;
mod overlay;
pub use crate::api::reply;
pub mod root_memory;
pub mod snapshot;
pub mod state_machine;
pub mod state_tree;
pub mod watch_log;

pub use crate::api::{
    Compare, CompareOp, CompareTarget, KeyValue, KvReply, LeaseStatus, Op, OpError, OpReply,
    OpResult, Rejection, Reply, ReplyDecodeError, Txn, TxnOp, VersionedValue, WatchEvent,
    decode_ops, decode_reply, encode_ops, encode_reply,
};
pub use audit::TreeAudit;
pub use snapshot::SnapshotInfo;
pub use state_machine::{KvRequest, KvStore, ReadAsOfError};
pub use watch_log::WatchRetention;

#[cfg(test)]
mod expiry_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod root_memory_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
#[cfg(test)]
mod watch_log_tests;
