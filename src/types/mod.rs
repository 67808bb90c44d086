//! types (being built).
