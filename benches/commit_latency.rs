//! End-to-end commit latency of one put: the client signs the request, sends it to every node
//! of an in-process cluster over real loopback TCP (Noise links), the nodes verify, order it
//! through consensus, persist it (fsync) and apply it, and the client returns once `f + 1`
//! identical replies arrived. One request in flight at a time, so this is latency, not
//! throughput.
//!
//! Each group starts one cluster (4 or 7 nodes, every node in this process with its own
//! threads, data dir in a temp dir and TCP port) and measures `Client::put` per iteration for
//! 64 B and 4 KiB values.
//!
//! `cargo bench --bench commit_latency -- --warm-up-time 2 --measurement-time 8`

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bftd::cli::testnet::{TestnetSpec, write_testnet};
use bftd::client::{Client, ClientOptions};
use bftd::config::{ClientConfig, NodeConfig};
use bftd::node::Node;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Value sizes measured, with their names in the report.
const VALUE_SIZES: [(usize, &str); 2] = [(64, "64B"), (4096, "4KiB")];
/// Distinct keys the puts cycle through (so the KV store is not one hot key only).
const KEYS_MAX: u64 = 1000;
/// A cluster that does not commit a first put within this is broken, not slow.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `n` consecutive free ports on 127.0.0.1, probed by binding them.
fn free_port_range(n: usize) -> u16 {
    let mut base = 30_000 + (std::process::id() % 1_000) as u16 * 17;
    loop {
        if (0..n as u16).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
        base = if base > 60_000 { 30_000 } else { base + 41 };
    }
}

/// An in-process cluster and a client connected to it. Dropped in field order: the client
/// first, then the nodes, then the directory.
struct Cluster {
    client: Client,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = TestnetSpec {
            nodes: n,
            faults: (n - 1) / 3,
            dir: dir.path().to_path_buf(),
            base_port: free_port_range(n),
            force: true,
        };
        write_testnet(&spec).expect("write testnet");
        let nodes = (0..n)
            .map(|i| {
                let path = dir.path().join(format!("node{i}.toml"));
                let mut cfg = NodeConfig::load(&path).expect("load node config");
                // n nodes share this machine's cores: one verifier thread each.
                cfg.raw.node.verifier_threads = 1;
                Node::start(&cfg).expect("start node")
            })
            .collect();
        let client_cfg = ClientConfig::load(&dir.path().join("client.toml")).expect("client.toml");
        let client = Client::connect(&client_cfg, ClientOptions::default()).expect("client");
        let cluster = Self {
            client,
            nodes,
            _dir: dir,
        };
        cluster.wait_ready();
        cluster
    }

    /// Waits until every link is up and a put commits (the first rounds are done).
    fn wait_ready(&self) {
        let n = self.nodes.len();
        let started = Instant::now();
        while self.client.wait_connected(n, Duration::from_secs(1)) < n {
            assert!(started.elapsed() < READY_TIMEOUT, "links did not come up");
        }
        while self.client.put(b"ready", b"ready").is_err() {
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the cluster never committed"
            );
        }
    }

    fn shutdown(self) {
        self.client.shutdown();
        for node in self.nodes {
            node.shutdown().expect("node shut down cleanly");
        }
    }
}

fn commit_latency(c: &mut Criterion) {
    for n in [4usize, 7] {
        let cluster = Cluster::start(n);
        let mut group = c.benchmark_group(format!("commit_latency_{n}_nodes"));
        group.sample_size(20);
        group.throughput(Throughput::Elements(1));
        for (size, name) in VALUE_SIZES {
            let value = vec![0xAB; size];
            let mut i = 0u64;
            group.bench_function(format!("put_{name}"), |b| {
                b.iter(|| {
                    i += 1;
                    let key = format!("bench-{}", i % KEYS_MAX);
                    cluster.client.put(key.as_bytes(), &value).expect("put")
                })
            });
        }
        group.finish();
        cluster.shutdown();
    }
}

criterion_group!(benches, commit_latency);
criterion_main!(benches);
