//! `loadgen`: the load generator for performance runs against a running bftd cluster.
//!
//! The client library it drives is built in a later issue; until then this binary says so
//! plainly instead of pretending to measure anything.

fn main() {
    eprintln!(
        "loadgen: not built yet: it needs the bftd client library (see the README's roadmap)"
    );
    std::process::exit(2);
}
