//! `loadgen` as a process against an in-process 4-node cluster: Ctrl-C (SIGINT) ends a long
//! run early with the summary of what ran, and `-c` names the config as in `bftctl`.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bftd::cli::testnet::{TestnetSpec, write_testnet};
use bftd::config::NodeConfig;
use bftd::node::Node;
use support::{DEADLINE, free_port_range};

#[test]
fn ctrl_c_prints_the_summary_of_what_ran() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_testnet(&TestnetSpec {
        nodes: 4,
        faults: 1,
        dir: dir.path().to_path_buf(),
        base_port: free_port_range(4),
        force: true,
    })
    .expect("write testnet");
    let nodes: Vec<Node> = (0..4)
        .map(|i| {
            let path = dir.path().join(format!("node{i}.toml"));
            let mut cfg = NodeConfig::load(&path).expect("node config");
            cfg.raw.node.verifier_threads = 1;
            Node::start(&cfg).expect("start node")
        })
        .collect();
    let config = dir.path().join("client.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("-c")
        .arg(&config)
        .args(["--duration", "10m", "--clients", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    // The first progress line means the load is running.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("req/s")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no progress line from loadgen ({e}): {seen:?}"),
        }
    }
    let interrupted_at = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("loadgen exits");
    let stopped_in = interrupted_at.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text} {seen:?}");
    assert!(text.contains("Summary:"), "{text}");
    assert!(text.contains("Stopped:   interrupted"), "{text}");
    // Requests in flight finish (each well under the 10 s request timeout); not 10 minutes.
    assert!(stopped_in < Duration::from_secs(30), "took {stopped_in:?}");
    for node in nodes {
        node.shutdown().expect("node stops cleanly");
    }
}
