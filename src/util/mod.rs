//! Small mechanisms shared by several layers, each in one place: [`rng`], the one seeded RNG
//! (the simulator's runs and the node's fault injector both draw from it), and
//! [`rate_limit`] (and [`keyed_rate_limit`], one per remote key), for log lines about events
//! that can repeat fast.
//!
//! Leaf module: imports nothing from the rest of the crate.

pub mod keyed_rate_limit;
pub mod rate_limit;
pub mod rng;

pub use keyed_rate_limit::KeyedRateLimit;
pub use rate_limit::RateLimit;
pub use rng::SimRng;
