//! The replicated key-value state machine.
