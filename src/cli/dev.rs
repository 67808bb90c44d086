//! `bftd dev`: a local cluster for newcomers, in one command. Writes a testnet into a
//! directory (or reuses the one there), starts every node in this process (each with its own
//! threads and data dir, talking over real TCP on 127.0.0.1), prints where clients connect and
//! where each node serves `/metrics` and `/health`, and serves until Ctrl-C.
//!
//! Invariant: a reused directory keeps its ports; a `--base-port` that contradicts them is
//! refused with the port the directory was written for, never silently ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lexopt::prelude::*;

use super::testnet::{TestnetSpec, metrics_addr, metrics_base, write_testnet};
use crate::config::{LoadedConfig, NodeConfig};
use crate::consensus::ROOT_LINGER_TIMEOUT_SHARE;
use crate::node::Node;
use crate::node::settings::FaultSettings;

const HELP: &str = "\
bftd dev: run a local cluster on 127.0.0.1 until Ctrl-C

USAGE:
    bftd dev [OPTIONS]

OPTIONS:
    --nodes N          Cluster size [default: 4]
    --faults F         Byzantine members tolerated [default: (N - 1) / 3]
    --dir DIR          Where configs, keys and data live [default: ./bftd-dev]
    --base-port P      Node i listens on 127.0.0.1:(P + i) [default: 7100; a reused DIR
                       keeps the ports it was written with]
    --metrics-base-port M
                       Node i serves /metrics and /health on 127.0.0.1:(M + i); 0 for none
                       [default: P + 1000]
    --timeout-ms MS    First round timeout (consensus.round_timeout_base_ms) [default: 500]
    --lossy [SHARE]    Drop, delay and duplicate SHARE of node-to-node frames, to watch view
                       changes happen, e.g. --lossy 0.5 [default SHARE when given: 0.1]
    --fresh            Delete DIR first and start a new cluster
    -h, --help         Print this help

An existing DIR from an earlier run is reused with its data (same nodes, same keys), so
what you wrote is still there. Clients use DIR/client.toml, which bftctl reads by default.
";

struct DevSpec {
    nodes: usize,
    faults: Option<usize>,
    dir: PathBuf,
    /// `None`: 7100 for a new directory, the directory's own ports for a reused one.
    base_port: Option<u16>,
    metrics_base_port: Option<u16>,
    timeout_ms: Option<u64>,
    lossy: Option<f64>,
    fresh: bool,
}

fn value<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let raw = parser.value().map_err(|e| e.to_string())?;
    raw.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{flag}: '{}' is not a valid value", raw.to_string_lossy()))
}

fn parse(args: Vec<OsString>) -> Result<Option<DevSpec>, String> {
    let mut spec = DevSpec {
        nodes: 4,
        faults: None,
        dir: PathBuf::from("./bftd-dev"),
        base_port: None,
        metrics_base_port: None,
        timeout_ms: None,
        lossy: None,
        fresh: false,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("nodes") => spec.nodes = value(&mut parser, "--nodes")?,
            Long("faults") => spec.faults = Some(value(&mut parser, "--faults")?),
            Long("dir") => spec.dir = parser.value().map_err(|e| e.to_string())?.into(),
            Long("base-port") => spec.base_port = Some(value(&mut parser, "--base-port")?),
            Long("metrics-base-port") => {
                spec.metrics_base_port = Some(value(&mut parser, "--metrics-base-port")?)
            }
            Long("timeout-ms") => spec.timeout_ms = Some(value(&mut parser, "--timeout-ms")?),
            Long("lossy") => {
                // `--lossy=0.5`, or `--lossy 0.5` when the next word is a number (the help's
                // spelling); a following option or nothing means the default share.
                let given = match parser.optional_value() {
                    Some(v) => Some(v),
                    None => parser
                        .raw_args()
                        .map_err(|e| e.to_string())?
                        .next_if(|a| a.to_str().is_some_and(|s| s.parse::<f64>().is_ok())),
                };
                let share = match given {
                    Some(v) => v
                        .to_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .filter(|s| (0.0..=1.0).contains(s))
                        .ok_or(
                            "--lossy: SHARE must be a number in 0.0 ..= 1.0; see 'bftd dev --help'",
                        )?,
                    None => 0.1,
                };
                spec.lossy = Some(share);
            }
            Long("fresh") => spec.fresh = true,
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            other => return Err(format!("{}; see 'bftd dev --help'", other.unexpected())),
        }
    }
    if spec.timeout_ms == Some(0) {
        return Err("--timeout-ms must be above zero; see 'bftd dev --help'".into());
    }
    Ok(Some(spec))
}

fn node_config_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node{i}.toml"))
}

/// The port node 0 of the cluster in `dir` listens on.
fn written_base_port(dir: &Path) -> Result<u16, String> {
    let cfg = NodeConfig::load(&node_config_path(dir, 0)).map_err(|e| e.to_string())?;
    Ok(cfg.listen_addr.port())
}

/// Writes a new testnet, or checks that the one in `dir` matches the request; returns the
/// base port the cluster uses.
fn prepare(spec: &DevSpec) -> Result<u16, String> {
    let shown = spec.dir.display();
    if spec.fresh && spec.dir.exists() {
        std::fs::remove_dir_all(&spec.dir).map_err(|e| format!("{shown}: {e}"))?;
    }
    if spec.dir.join("client.toml").exists() {
        let existing = (0..)
            .take_while(|i| node_config_path(&spec.dir, *i).exists())
            .count();
        if existing != spec.nodes {
            return Err(format!(
                "{shown} holds a {existing}-node cluster; use --nodes {existing}, another --dir, or --fresh"
            ));
        }
        let written = written_base_port(&spec.dir)?;
        if spec.base_port.is_some_and(|p| p != written) {
            return Err(format!(
                "{shown} holds a cluster on ports {written}.. (written with --base-port \
                 {written}); use --base-port {written}, another --dir, or --fresh"
            ));
        }
        println!("bftd dev: reusing the cluster in {shown} (--fresh starts over)");
        return Ok(written);
    }
    let base_port = spec.base_port.unwrap_or(7100);
    let faults = spec.faults.unwrap_or((spec.nodes.max(1) - 1) / 3);
    if spec.nodes == 0 || spec.nodes < 3 * faults + 1 {
        return Err(format!(
            "--nodes {} is too few for --faults {faults}: it needs at least {}; see 'bftd dev \
             --help'",
            spec.nodes,
            3 * faults + 1
        ));
    }
    if usize::from(base_port) + spec.nodes - 1 > usize::from(u16::MAX) {
        return Err(format!(
            "--base-port {base_port}: ports for {} nodes do not fit; see 'bftd dev --help'",
            spec.nodes
        ));
    }
    write_testnet(&TestnetSpec {
        nodes: spec.nodes,
        faults,
        dir: spec.dir.clone(),
        base_port,
        force: true,
    })?;
    println!(
        "bftd dev: wrote a {}-node cluster (f = {faults}) to {shown}",
        spec.nodes
    );
    Ok(base_port)
}

/// Node `i`'s config, with what the command line asks: metrics on `metrics_base + i` (`None`:
/// off), the round timeout, lossy links.
fn load(spec: &DevSpec, i: usize, metrics_base: Option<u16>) -> Result<LoadedConfig, String> {
    let mut cfg = NodeConfig::load(&node_config_path(&spec.dir, i)).map_err(|e| e.to_string())?;
    cfg.raw.node.metrics_addr = metrics_base.map(|base| metrics_addr(base, i, None));
    if let Some(ms) = spec.timeout_ms {
        cfg.raw.consensus.round_timeout_base_ms = ms;
        let max = &mut cfg.raw.consensus.round_timeout_max_ms;
        *max = (*max).max(ms);
        // The file was checked against its own timeout: keep the linger within the new one.
        let linger = &mut cfg.raw.consensus.root_linger_ms;
        *linger = (*linger).min(ms / ROOT_LINGER_TIMEOUT_SHARE);
    }
    if let Some(share) = spec.lossy {
        cfg.raw.faults = FaultSettings {
            drop_share: share,
            duplicate_share: share / 2.0,
            delay_share: share,
            delay_ms_max: cfg.raw.consensus.round_timeout_base_ms,
            ..FaultSettings::default()
        };
    }
    Ok(cfg)
}

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let Some(spec) = parse(args)? else {
        return Ok(());
    };
    let base_port = prepare(&spec)?;
    let metrics = metrics_base(spec.metrics_base_port, base_port, spec.nodes, "dev")?;
    let stop = super::start::stop_flag()?;
    let mut nodes = Vec::with_capacity(spec.nodes);
    let mut addrs = Vec::new();
    for i in 0..spec.nodes {
        let cfg = load(&spec, i, metrics)?;
        let node = Node::start(&cfg).map_err(|e| {
            format!("node {i}: {e} (another bftd dev running? try --base-port or stop it)")
        })?;
        addrs.push(node.local_addr());
        nodes.push(node);
    }
    let client = spec.dir.join("client.toml");
    println!(
        "bftd dev: {} nodes serving clients on {}",
        nodes.len(),
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  client config: {}", client.display());
    let served: Vec<String> = nodes
        .iter()
        .filter_map(Node::metrics_addr)
        .map(|a| format!("http://{a}"))
        .collect();
    if !served.is_empty() {
        println!(
            "  metrics:       {} (/metrics and /health)",
            served.join(", ")
        );
    }
    // bftctl reads ./bftd-dev/client.toml by default.
    let flag = if spec.dir == Path::new("./bftd-dev") {
        String::new()
    } else {
        format!("--config {} ", client.display())
    };
    println!("  try:           bftctl {flag}put hello world");
    println!("                 bftctl {flag}get hello");
    println!("                 bftctl {flag}status");
    if spec.lossy.is_some() {
        println!("  --lossy: node-to-node frames are dropped, delayed and duplicated");
    }
    println!(
        "  Ctrl-C stops the cluster; its data stays in {}",
        spec.dir.display()
    );
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some((i, _)) = nodes.iter().enumerate().find(|(_, n)| n.has_failed()) {
            let why = nodes[i].failure().unwrap_or_else(|| "stopped".into());
            return Err(format!("node {i} failed: {why}"));
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!("{}", progress_line(&nodes));
        }
    }
    println!("bftd dev: stopping");
    let mut failures = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        if let Err(e) = node.shutdown() {
            failures.push(format!("node {i}: {e}"));
        }
    }
    if failures.is_empty() {
        println!("bftd dev: stopped cleanly");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// One line per report: each node's committed height and round, and whether the state
/// digests of the nodes at the same height agree.
fn progress_line(nodes: &[Node]) -> String {
    let status: Vec<_> = nodes.iter().map(Node::status).collect();
    let parts: Vec<String> = status
        .iter()
        .map(|s| format!("n{}: h{} r{}", s.node_id, s.applied_height, s.round))
        .collect();
    let top = status.iter().map(|s| s.applied_height).max().unwrap_or(0);
    let digests: std::collections::HashSet<_> = status
        .iter()
        .filter(|s| s.applied_height == top)
        .map(|s| s.state_digest)
        .collect();
    let agree = if digests.len() == 1 {
        "digests agree"
    } else {
        "DIGESTS DIFFER"
    };
    format!("bftd dev: {} | {agree}", parts.join("  "))
}
