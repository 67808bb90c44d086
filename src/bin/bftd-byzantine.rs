//! `bftd-byzantine`: the `bftd` program that may play a Byzantine member, for tests only.
//!
//! Built only with the Cargo feature `byzantine` (`required-features`), which no default or
//! release build enables. `cargo test` enables it for the whole crate (the crate's
//! dev-dependency on itself), so the ordinary `bftd` binary of a test or bench build contains
//! the Byzantine code too; it still refuses `[faults] byzantine`, because only this entry point
//! calls [`bftd::node::byzantine::permit`].

use std::process::ExitCode;

fn main() -> ExitCode {
    bftd::node::byzantine::permit();
    bftd::cli::entry::run()
}
