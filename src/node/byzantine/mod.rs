//! The hooks through which a node can be made a Byzantine member, for tests only
//! (`[faults] byzantine = "<kind>"`, Cargo feature `byzantine`).
//!
//! - [`ConsensusHook`], owned by the consensus thread: every consensus message the core sends
//!   goes through [`ConsensusHook::outbound`], every input it receives through
//!   [`ConsensusHook::on_input`] (the shared [`crate::adversary::ByzState`] decides);
//! - [`ServingHook`], shared by the threads that answer clients and peers: it encodes client
//!   frames (a liar falsifies them, a silent node sends none) and may replace snapshot
//!   answers (a forger serves a forged file).
//!
//! Built without the feature, both are empty no-ops (`inert`), a config that names a kind is
//! refused at start, and the binary contains no Byzantine behaviour at all.

#[cfg(feature = "byzantine")]
mod active;
#[cfg(not(feature = "byzantine"))]
mod inert;

#[cfg(feature = "byzantine")]
pub use active::{ConsensusHook, ServingHook, hooks, permit};
#[cfg(not(feature = "byzantine"))]
pub use inert::{ConsensusHook, ServingHook, hooks};

use crate::types::{Message, NodeId};

/// What leaves for a message the core sends.
// The honest variant is the one every send takes: boxing it would allocate on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Outgoing {
    /// The message itself, as the core meant it (an honest node, always).
    Unchanged(Message),
    /// These messages instead, each to one peer (none: the message is swallowed).
    Instead(Vec<(NodeId, Message)>),
}
