//! Small mechanisms shared by several layers, each in one place: [`rng`], the one seeded RNG
//! (the simulator's runs and the node's fault injector both draw from it).
//!
//! Leaf module: imports nothing from the rest of the crate.

pub mod rng;

pub use rng::SimRng;
