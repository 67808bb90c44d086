//! `bftd`: the node daemon and its tools.
fn main() {}
