//! The deterministic simulator (`bftd sim`): `n` consensus cores in one thread, on a simulated
//! clock, over a seeded faulty network, with crashes, restarts and Byzantine members, checked
//! for agreement, chain consistency and liveness after every step.
//!
//! It drives the production [`crate::replica::Replica`] (and through it the real core), the
//! real codec, the real verifier and a real `KvStore` per node; only the clock, the network
//! and the consensus disk are simulated. Honest nodes must produce identical replies and equal
//! state digests at equal heights, also after installing a snapshot. A failing run prints the one command
//! that replays it ([`SimConfig::repro_command`]).

mod checker;
mod config;
mod node;
mod runner;
mod state;
mod trace;

pub use crate::util::SimRng;
pub use config::{ByzKind, Scenario, SimConfig};
pub use runner::{SimReport, run};
