//! Command-line front ends of the `bftd` binary, one module per subcommand. Each parses its
//! own arguments with `lexopt` and returns `Err(message)` for a one-line, actionable error.

pub mod sim;

pub const HELP: &str = "\
bftd: a Byzantine-fault-tolerant replicated key-value store

USAGE:
    bftd <COMMAND> [OPTIONS]

COMMANDS:
    sim        Run the deterministic consensus simulator (see 'bftd sim --help')
    help       Print this help

The node daemon (bftd --config FILE), 'bftd dev', 'bftd testnet' and 'bftd keygen' are not
built yet: they arrive with the daemon issue.
";
