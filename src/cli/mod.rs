//! Command-line front ends of the `bftd` binary, one module per subcommand. Each parses its
//! own arguments with `lexopt` and returns `Err(message)` for a one-line, actionable error.

pub mod dev;
pub mod entry;
pub mod inspect;
pub mod keygen;
pub mod sd_notify;
pub mod show_keys;
pub mod sim;
pub mod snapshot;
pub mod start;
pub mod testnet;

pub const HELP: &str = "\
bftd: a Byzantine-fault-tolerant replicated key-value store

USAGE:
    bftd --config FILE        Run one node (same as 'bftd start --config FILE')
    bftd <COMMAND> [OPTIONS]

COMMANDS:
    start      Run one node in the foreground (see 'bftd start --help')
    dev        Run a local cluster on 127.0.0.1 until Ctrl-C (see 'bftd dev --help')
    inspect    Report a data dir's contents and verify every checksum (see 'bftd inspect --help')
    snapshot   Offline backup and restore of a node's state (see 'bftd snapshot --help')
    sim        Run the deterministic consensus simulator (see 'bftd sim --help')
    keygen     Make one key pair: signing (Ed25519) and Noise (X25519) (see 'bftd keygen --help')
    show-keys  Print the public keys of existing key files (see 'bftd show-keys --help')
    testnet    Write configs and keys for a local cluster (see 'bftd testnet --help')
    help       Print this help

Set RUST_LOG (error, warn, info, debug) to change how much the node logs, and
BFTD_LOG_FORMAT=json for one JSON object per line (ts, level, target, msg).
Exit status: 0 on success, 1 on failure, 2 for a usage mistake.
";

/// Whether a subcommand's error is a usage mistake: by convention every such message points
/// at the help (`...; see 'bftd X --help'`), and nothing else does.
pub fn is_usage_mistake(message: &str) -> bool {
    message.contains("--help'")
}
