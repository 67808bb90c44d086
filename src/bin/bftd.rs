//! `bftd`: the node daemon (`bftd --config FILE`, `bftd dev`) and its tools: `bftd sim` (the
//! deterministic simulator), `bftd keygen` and `bftd testnet` (keys and config files).

use std::process::ExitCode;

fn main() -> ExitCode {
    bftd::cli::entry::run()
}
