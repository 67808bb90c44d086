//! Byzantine behaviours, shared by the simulator and the test-only Byzantine `bftd` daemon
//! (Cargo feature `byzantine`, `[faults] byzantine = "<kind>"`): what a malicious member does
//! instead of what its honest code would.
//!
//! - [`kind`]: the kinds, their names, which ones the simulator and a process can play;
//! - [`messages`]: the consensus-message behaviours ([`ByzState`]), a transform of what the
//!   honest core sends and receives;
//! - [`replies`] and [`snapshot`] (feature `byzantine` only): lies to clients and a forged
//!   snapshot file, for the daemon (the simulator has neither clients nor snapshot files).
//!
//! Invariants: this module imports nothing from `net`, `node` or `sim`, starts no thread and
//! reads no clock; its only randomness is a seeded [`crate::util::rng::SimRng`], so the
//! simulator replays a Byzantine member from the seed. Every behaviour signs with the
//! member's real key: it attacks the protocol, not the signature scheme.

pub mod kind;
pub mod messages;
#[cfg(feature = "byzantine")]
pub mod replies;
#[cfg(feature = "byzantine")]
pub mod snapshot;

pub use kind::ByzKind;
pub use messages::ByzState;
