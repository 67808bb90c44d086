//! The sans-I/O consensus core: chained HotStuff with a 2-chain commit (Jolteon family).
//!
//! [`Core::handle`] takes the time and one [`Event`] and returns [`Action`]s. The core does no
//! I/O, reads no clock, spawns no thread and draws no randomness: the same code runs in the
//! daemon and in the deterministic simulator. It imports only `types`, `crypto` and `codec`.
//!
//! Safety rests on three rules, each in one place:
//! - voting ([`safety`]): vote once per round, only for a block whose QC (or TC) justifies it;
//! - committing ([`Core`]): a QC for `B` commits `B`'s parent when their rounds are consecutive;
//! - leaders ([`leader`]): a proposal counts only if its author is the leader the schedule names
//!   for its round and parent, a pure function of the chain that every honest node computes
//!   alike;
//! - state roots ([`roots`]): a block carries the state roots of heights its ancestry
//!   committed; a node votes for it only if each equals its own root of that height, and a
//!   node whose own root differs from a certified one is diverged: it stops voting and
//!   proposing until its state is replaced and matches the chain again;
//! - idling ([`Core`]): the cluster proposes while requests wait, while an uncommitted block
//!   holds a payload, and, with empty blocks, until a certified block carries the state root
//!   of the last committed payload height (so a verified read can prove the last write);
//!   then it stops, timers asleep (`Core::root_pending` says why that ends);
//! - persist before speaking: a vote, timeout or proposal leaves only after the runtime
//!   reported the safety state it implies durable ([`Event::Persisted`]).

mod block_tree;
mod config;
mod core;
mod events;
pub mod leader;
mod mempool;
mod pacemaker;
pub mod roots;
mod safety;
mod stats;
mod sync;
mod timeouts;
mod votes;

pub use self::core::Core;
pub use block_tree::{BlockTree, Segment, sync_bytes};
pub use config::{
    BLOCK_TIME_AHEAD_MAX_MS, BLOCK_TIME_AHEAD_MIN_MS, CoreConfig, ROOT_LINGER_TIMEOUT_SHARE,
};
pub use events::{Action, DurableState, Event, PersistItem, RejectReason};
pub use leader::LeaderDecision;
pub use roots::{Divergence, RootBook, RootCheck};
pub use safety::SafetyData;
pub use stats::CoreStats;

/// Milliseconds on the runtime's monotonic clock (the simulator's clock in `bftd sim`).
pub type TimeMs = u64;
