//! Command-line front ends of the `bftd` binary, one module per subcommand. Each parses its
//! own arguments with `lexopt` and returns `Err(message)` for a one-line, actionable error.

pub mod keygen;
pub mod sim;
pub mod testnet;

pub const HELP: &str = "\
bftd: a Byzantine-fault-tolerant replicated key-value store

USAGE:
    bftd <COMMAND> [OPTIONS]

COMMANDS:
    sim        Run the deterministic consensus simulator (see 'bftd sim --help')
    keygen     Make one key pair: signing (Ed25519) and Noise (X25519) (see 'bftd keygen --help')
    testnet    Write configs and keys for a local cluster (see 'bftd testnet --help')
    help       Print this help

The node daemon (bftd --config FILE) and 'bftd dev' are not built yet: they arrive with the
daemon issue. The config files 'bftd testnet' writes are the ones the daemon will read.
";
