//! The simulator's randomness: the shared seeded stream, kept under its old path.

pub use crate::util::rng::SimRng;
