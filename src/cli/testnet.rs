//! `bftd testnet`: a ready local cluster in one directory — `node0.toml`..`nodeN-1.toml`, each
//! node's two key files, and `client.toml` plus the client's key files for `bftctl`/`loadgen`.
//!
//! Invariants: every written node file loads with `NodeConfig::load` (the tests check it); the
//! client's keys are on every node's allow-list; an existing non-empty directory is only written
//! into with `--force`; all paths inside the files are relative, so the directory can be moved.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

use super::keygen::{key_paths, write_key_pair};
use crate::config::render::{ClusterSpec, OwnPaths, render_client, render_node};
use crate::config::{AllowedClient, Member};
use crate::types::NodeId;

const HELP: &str = "\
bftd testnet: write the configs and keys of a local cluster

USAGE:
    bftd testnet [OPTIONS]

OPTIONS:
    --nodes N        Cluster size [default: 4]
    --faults F       Byzantine members tolerated; needs N >= 3F + 1 [default: (N - 1) / 3]
    --dir DIR        Output directory [default: ./testnet]
    --base-port P    Node i listens on 127.0.0.1:(P + i) [default: 7000]
    --hosts IPS      Comma-separated IPs, one per node: node i listens on IPS[i]:P instead
                     (for machines or containers of their own, e.g. the docker localnet)
    --metrics-base-port M
                     Node i serves /metrics and /health on 127.0.0.1:(M + i), or IPS[i]:M
                     with --hosts ([node] metrics_addr); 0 writes none [default: P + 1000]
    --force          Write into DIR even if it is not empty (replaces files of the same name)
    -h, --help       Print this help

Writes nodeI.toml, nodeI.signing.key, nodeI.noise.key for each node, and client.toml,
client.signing.key, client.noise.key; key files have mode 0600. Data goes to DIR/data/nodeI.
";

/// Largest cluster `testnet` writes; a guard against a typo filling a disk with keys.
pub const TESTNET_NODES_MAX: usize = 1000;

/// What to write.
#[derive(Debug, Clone)]
pub struct TestnetSpec {
    pub nodes: usize,
    pub faults: usize,
    pub dir: PathBuf,
    pub base_port: u16,
    pub force: bool,
}

fn value<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let raw = parser.value().map_err(|e| e.to_string())?;
    raw.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{flag}: '{}' is not a valid value", raw.to_string_lossy()))
}

fn parse_hosts(raw: &str) -> Result<Vec<IpAddr>, String> {
    raw.split(',')
        .map(|h| {
            h.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("--hosts: '{h}' is not an IP address"))
        })
        .collect()
}

/// The spec, the hosts of `--hosts` if given, and the metrics base port (`None`: no metrics).
type Parsed = (TestnetSpec, Option<Vec<IpAddr>>, Option<u16>);

/// Where node `i` serves metrics when the base is `metrics_base` (see `--metrics-base-port`).
pub fn metrics_addr(metrics_base: u16, i: usize, hosts: Option<&[IpAddr]>) -> SocketAddr {
    match hosts {
        Some(h) => SocketAddr::new(h[i], metrics_base),
        None => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics_base.saturating_add(i as u16),
        ),
    }
}

/// `--metrics-base-port`: the given port (0 = none), or `base_port + 1000`; checked to fit.
pub fn metrics_base(
    given: Option<u16>,
    base_port: u16,
    nodes: usize,
    command: &str,
) -> Result<Option<u16>, String> {
    let base = match given {
        Some(0) => return Ok(None),
        Some(p) => usize::from(p),
        None => usize::from(base_port) + 1000,
    };
    if base + nodes - 1 > usize::from(u16::MAX) {
        return Err(format!(
            "metrics ports from {base} for {nodes} nodes do not fit; pass \
             --metrics-base-port (0 for none); see 'bftd {command} --help'"
        ));
    }
    Ok(Some(base as u16))
}

fn parse(args: Vec<OsString>) -> Result<Option<Parsed>, String> {
    let (mut nodes, mut faults, mut force) = (4usize, None, false);
    let mut hosts: Option<Vec<IpAddr>> = None;
    let (mut dir, mut base_port) = (PathBuf::from("./testnet"), 7000u16);
    let mut metrics_port = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("nodes") => nodes = value(&mut parser, "--nodes")?,
            Long("faults") => faults = Some(value(&mut parser, "--faults")?),
            Long("dir") => dir = parser.value().map_err(|e| e.to_string())?.into(),
            Long("base-port") => base_port = value(&mut parser, "--base-port")?,
            Long("metrics-base-port") => {
                metrics_port = Some(value(&mut parser, "--metrics-base-port")?)
            }
            Long("force") => force = true,
            Long("hosts") => {
                let raw = parser.value().map_err(|e| e.to_string())?;
                hosts = Some(parse_hosts(&raw.to_string_lossy())?);
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            other => return Err(format!("{}; see 'bftd testnet --help'", other.unexpected())),
        }
    }
    if nodes == 0 || nodes > TESTNET_NODES_MAX {
        return Err(format!(
            "--nodes must be 1..={TESTNET_NODES_MAX}; see 'bftd testnet --help'"
        ));
    }
    let faults = faults.unwrap_or((nodes - 1) / 3);
    if faults > (nodes - 1) / 3 {
        return Err(format!(
            "--nodes {nodes} is too few for --faults {faults}: it needs at least {}; see \
             'bftd testnet --help'",
            3 * faults + 1
        ));
    }
    if usize::from(base_port) + nodes - 1 > usize::from(u16::MAX) || base_port == 0 {
        return Err(format!(
            "--base-port {base_port}: ports for {nodes} nodes do not fit; see 'bftd testnet --help'"
        ));
    }
    if let Some(h) = &hosts {
        if h.len() != nodes {
            return Err(format!(
                "--hosts lists {} IPs but --nodes is {nodes}; see 'bftd testnet --help'",
                h.len()
            ));
        }
        let unique: std::collections::HashSet<_> = h.iter().collect();
        if unique.len() != h.len() {
            return Err(
                "--hosts lists an IP twice; nodes on one host need --base-port instead; see \
                 'bftd testnet --help'"
                    .into(),
            );
        }
    }
    let metrics = metrics_base(metrics_port, base_port, nodes, "testnet")?;
    Ok(Some((
        TestnetSpec {
            nodes,
            faults,
            dir,
            base_port,
            force,
        },
        hosts,
        metrics,
    )))
}

/// Refuses to write into a non-empty directory unless forced.
fn prepare_dir(spec: &TestnetSpec) -> Result<(), String> {
    let shown = spec.dir.display();
    match std::fs::read_dir(&spec.dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !spec.force {
                return Err(format!(
                    "{shown}: directory is not empty; use --force to write into it"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{shown}: {e}"))
}

fn write_file(path: &Path, text: &str, written: &mut Vec<PathBuf>) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    written.push(path.to_path_buf());
    Ok(())
}

/// Writes the whole cluster on 127.0.0.1; returns every file written, in order.
pub fn write_testnet(spec: &TestnetSpec) -> Result<Vec<PathBuf>, String> {
    write_testnet_on(spec, None, None)
}

/// Writes the whole cluster; with `hosts`, node `i` listens on `hosts[i]:base_port` (one
/// host per node), else on `127.0.0.1:(base_port + i)`; with `metrics_base`, each node config
/// gets a `metrics_addr` (see [`metrics_addr`]).
pub fn write_testnet_on(
    spec: &TestnetSpec,
    hosts: Option<&[IpAddr]>,
    metrics_base: Option<u16>,
) -> Result<Vec<PathBuf>, String> {
    if hosts.is_some_and(|h| h.len() != spec.nodes) {
        return Err("one host per node is needed".into());
    }
    prepare_dir(spec)?;
    let mut written = Vec::new();
    let mut members = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes {
        let keys = write_key_pair(&spec.dir, &format!("node{i}"))?;
        let (s, n) = key_paths(&spec.dir, &format!("node{i}"));
        written.extend([s, n]);
        // Bounds checked in parse: base_port + i fits a u16, and i < TESTNET_NODES_MAX.
        let addr = match hosts {
            Some(h) => SocketAddr::new(h[i], spec.base_port),
            None => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                spec.base_port.saturating_add(i as u16),
            ),
        };
        members.push(Member {
            id: NodeId(i as u16),
            addr,
            signing_public_key: keys.signing,
            noise_public_key: keys.noise,
        });
    }
    let client = write_key_pair(&spec.dir, "client")?;
    let (s, n) = key_paths(&spec.dir, "client");
    written.extend([s, n]);
    let mut cluster = ClusterSpec {
        cluster_name: "testnet".into(),
        f: spec.faults,
        members,
        clients: vec![AllowedClient {
            signing_public_key: client.signing,
            noise_public_key: client.noise,
        }],
    };
    for i in 0..spec.nodes {
        let (s, n) = (format!("node{i}.signing.key"), format!("node{i}.noise.key"));
        let paths = OwnPaths {
            signing_key_path: Path::new(&s),
            noise_key_path: Path::new(&n),
        };
        let data_dir = PathBuf::from(format!("data/node{i}"));
        let mut text = render_node(&cluster, i, &data_dir, &paths);
        if let Some(base) = metrics_base {
            let addr = metrics_addr(base, i, hosts);
            text = text.replace(
                "\n[node]\n",
                &format!("\n[node]\nmetrics_addr = \"{addr}\"\n"),
            );
        }
        write_file(&spec.dir.join(format!("node{i}.toml")), &text, &mut written)?;
    }
    let paths = OwnPaths {
        signing_key_path: Path::new("client.signing.key"),
        noise_key_path: Path::new("client.noise.key"),
    };
    // A client always needs the most matching replies the member count allows, whatever
    // `--faults` the nodes run with (see `ClientConfig::load`).
    cluster.f = (spec.nodes - 1) / 3;
    write_file(
        &spec.dir.join("client.toml"),
        &render_client(&cluster, &paths),
        &mut written,
    )?;
    Ok(written)
}

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let Some((spec, hosts, metrics)) = parse(args)? else {
        return Ok(());
    };
    let written = write_testnet_on(&spec, hosts.as_deref(), metrics)?;
    let mut report = format!(
        "testnet: {} nodes, f = {}, in {}\n",
        spec.nodes,
        spec.faults,
        spec.dir.display()
    );
    for path in &written {
        report.push_str(&format!("wrote {}\n", path.display()));
    }
    if let Some(base) = metrics {
        let urls: Vec<String> = (0..spec.nodes)
            .map(|i| format!("http://{}", metrics_addr(base, i, hosts.as_deref())))
            .collect();
        report.push_str(&format!(
            "metrics and health (metrics_addr): {}\n",
            urls.join(", ")
        ));
    }
    // The files are written; a closed stdout (`| head`) is no reason to fail or panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes());
    Ok(())
}
