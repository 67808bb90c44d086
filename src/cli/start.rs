//! `bftd --config FILE` (alias `bftd start --config FILE`): run one node in the foreground
//! until SIGTERM or SIGINT, then stop cleanly (every queued persist synced, files closed).
//! Under systemd it reports readiness and stopping through [`super::sd_notify`].
//!
//! Exit status: 0 after a clean stop; 1 with a one-line reason when the node cannot start
//! (bad config, port in use, damaged data dir) or when it stopped on a storage failure.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lexopt::prelude::*;

use super::sd_notify;
use crate::config::NodeConfig;
use crate::node::Node;

const HELP: &str = "\
bftd start: run one node in the foreground

USAGE:
    bftd --config FILE
    bftd start --config FILE

OPTIONS:
    -c, --config FILE   The node's config file (see 'bftd testnet' and the README)
    -h, --help          Print this help

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more. SIGTERM or SIGINT stops the
node cleanly: it finishes the WAL sync in flight and closes its files. Under systemd
(NOTIFY_SOCKET set) it reports READY=1 once it listens and STOPPING=1 when it stops.
";

fn parse(args: Vec<OsString>) -> Result<Option<PathBuf>, String> {
    let mut config = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                config = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            other => return Err(format!("{}; see 'bftd start --help'", other.unexpected())),
        }
    }
    config
        .map(Some)
        .ok_or_else(|| "--config FILE is required; see 'bftd start --help'".into())
}

/// Registers SIGTERM and SIGINT to raise the returned flag.
pub fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    Ok(flag)
}

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let Some(path) = parse(args)? else {
        return Ok(());
    };
    let cfg = NodeConfig::load(&path).map_err(|e| e.to_string())?;
    let stop = stop_flag()?;
    let node = Node::start(&cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    log::info!(
        "node {} of cluster '{}' is up on {}",
        cfg.node_id,
        cfg.raw.cluster_name,
        node.local_addr()
    );
    // WALs replayed, port open, threads running: ready for systemd (Type=notify).
    sd_notify::notify_logged("READY=1");
    while !stop.load(Ordering::Relaxed) && !node.has_failed() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if stop.load(Ordering::Relaxed) {
        log::info!("stopping on signal");
    }
    sd_notify::notify_logged("STOPPING=1");
    node.shutdown()?;
    log::info!("stopped cleanly");
    Ok(())
}
