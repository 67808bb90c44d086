//! The docker compose localnet (tools/docker): an image built FROM scratch out of this build's
//! own binaries, four containers on a private network, a client on the host. Writes and reads
//! through it, disconnects one container from the network (the others keep committing),
//! reconnects it and checks that it catches up to the same state digest.
//!
//! Skipped, with a message saying why, where no Docker engine or docker-compose runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bftd::client::{Client, ClientOptions};
use bftd::config::ClientConfig;

const PROJECT: &str = "bftd-test-localnet";
const NET_PREFIX: &str = "172.30.7";
const DEADLINE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a docker command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops and removes the containers and network even when the test fails.
struct Localnet {
    dir: tempfile::TempDir,
}

impl Localnet {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", PROJECT, "-f"])
            .arg(repo().join("tools/docker/docker-compose.yml"))
            .env("BFTD_LOCALNET_DIR", self.dir.path())
            .env("BFTD_NET_PREFIX", NET_PREFIX)
            .env("BFTD_IMAGE", "bftd:test");
        c
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.compose().args(["logs", "--tail", "30"]).status();
        }
        let _ = self.compose().args(["down", "-t", "5"]).output();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn digests(client: &Client) -> Vec<Option<(u64, [u8; 32])>> {
    client
        .status()
        .map(|all| {
            all.into_iter()
                .map(|r| r.status.ok().map(|s| (s.applied_height, s.state_digest)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn docker_localnet_serves_survives_a_disconnect_and_catches_up() {
    if !works("docker", &["info"]) || !works("docker-compose", &["version"]) {
        eprintln!("SKIPPED docker_localnet: no Docker engine or docker-compose on this machine");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bftd"))
        .parent()
        .expect("binary dir")
        .to_path_buf();
    run(Command::new(repo().join("tools/docker/build-image.sh"))
        .arg(&bin_dir)
        .env("BFTD_IMAGE", "bftd:test"));
    let net = Localnet {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let hosts: Vec<String> = (0..4).map(|i| format!("{NET_PREFIX}.1{i}")).collect();
    run(Command::new(env!("CARGO_BIN_EXE_bftd"))
        .args([
            "testnet",
            "--nodes",
            "4",
            "--force",
            "--base-port",
            "7000",
            "--hosts",
        ])
        .arg(hosts.join(","))
        .arg("--dir")
        .arg(net.dir.path()));
    // Leftovers of an interrupted earlier run would hold the network's subnet.
    let _ = net.compose().args(["down", "-t", "1"]).output();
    run(net.compose().args(["up", "-d"]));

    let cfg = ClientConfig::load(&net.dir.path().join("client.toml")).expect("client.toml");
    let client = Client::connect(&cfg, ClientOptions::default()).expect("client");
    let start = Instant::now();
    let version = loop {
        match client.put(b"greeting", b"hello") {
            Ok(v) => break v,
            Err(e) => assert!(start.elapsed() < DEADLINE, "first put never committed: {e}"),
        }
    };
    assert_eq!(version, 1);
    let got = client.get(b"greeting").expect("get").expect("present");
    assert_eq!(got.value, b"hello");

    // Cut node3 off: the other three keep committing.
    let network = format!("{}_localnet", PROJECT.replace('-', ""));
    let network = if works("docker", &["network", "inspect", &network]) {
        network
    } else {
        format!("{PROJECT}_localnet")
    };
    let container = format!("{PROJECT}_node3_1");
    run(Command::new("docker").args(["network", "disconnect", &network, &container]));
    for i in 0..5 {
        let key = format!("while-cut-{i}");
        let start = Instant::now();
        loop {
            match client.put(key.as_bytes(), b"v") {
                Ok(_) => break,
                Err(e) => assert!(start.elapsed() < DEADLINE, "{key} never committed: {e}"),
            }
        }
    }
    let cut = digests(&client);
    assert!(
        cut[3].is_none(),
        "node3 still answers while disconnected: {cut:?}"
    );

    // Back on the network: it catches up to the others' state.
    run(Command::new("docker").args([
        "network",
        "connect",
        "--ip",
        &format!("{NET_PREFIX}.13"),
        &network,
        &container,
    ]));
    wait_for("node3 catches up to the same state digest", || {
        let d = digests(&client);
        d.len() == 4 && d.iter().all(|x| x.is_some() && *x == d[0])
    });
    let stale = client
        .get_stale_from(bftd::types::NodeId(3), b"while-cut-4")
        .expect("stale read from node3");
    assert!(stale.value.is_some(), "node3 has the writes it missed");
    client.shutdown();
}
