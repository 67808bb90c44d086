//! Small mechanisms shared by several layers, each in one place: [`rng`], the one seeded RNG
//! (the simulator's runs and the node's fault injector both draw from it), and
//! [`rate_limit`], for log lines about events that can repeat fast.
//!
//! Leaf module: imports nothing from the rest of the crate.

pub mod rate_limit;
pub mod rng;

pub use rate_limit::RateLimit;
pub use rng::SimRng;
