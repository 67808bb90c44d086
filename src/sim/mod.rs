//! The deterministic simulator (`bftd sim`): `n` consensus cores in one thread, on a simulated
//! clock, over a seeded faulty network, with crashes, restarts and Byzantine members, checked
//! for agreement, chain consistency and liveness after every step.
//!
//! It drives the real [`crate::consensus::Core`], the real codec and the real verifier; only
//! the clock, the network and the disk are simulated. A failing run prints the one command
//! that replays it ([`SimConfig::repro_command`]).

mod checker;
mod config;
mod node;
pub mod rng;
mod runner;

pub use config::{ByzKind, Scenario, SimConfig};
pub use rng::SimRng;
pub use runner::{SimReport, run};
