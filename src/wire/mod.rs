//! What travels inside the transport's frames, after the Noise layer has authenticated the
//! remote: [`peer`] frames between members, [`client`] frames between a client and a node.
//!
//! Both are rkyv archives decoded with [`crate::codec::decode`] (validated, bounded). The
//! transport says who sent a frame (peer or client), so each side knows which type to expect;
//! a frame that does not decode as that type is counted and dropped.

pub mod client;
pub mod peer;

pub use client::{ClientFrame, NodeFrame, NodeStatus, Refusal};
pub use peer::{PeerFrame, SnapshotOffer, StateMsg};
