//! Small mechanisms shared by several layers that belong to none of them.
//!
//! - [`rng`]: the one seeded random stream (SplitMix64), for the simulator, the adversary
//!   behaviours and the node's injected network faults.
//!
//! Invariant: nothing here does I/O, reads a clock or spawns a thread, so every layer
//! (the consensus core included) may import it.

pub mod rng;
