//! `bftctl` as a process against four fake nodes (see `client_support.rs`): a `client.toml`
//! and key files are written for the fakes' real (port-0) addresses, then the binary runs.

#[path = "client_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bftd::crypto::Signer;
use bftd::keys_file::{to_hex, write_secret};
use bftd::types::ClusterId;
use support::FakeCluster;

fn write_client_toml(cluster: &FakeCluster, dir: &Path) -> PathBuf {
    write_secret(
        &dir.join("client.signing.key"),
        &cluster.client_signing_secret,
    )
    .unwrap();
    write_secret(&dir.join("client.noise.key"), &cluster.client_noise.private).unwrap();
    let mut text = String::from(
        "cluster_name = \"client-test\"\nf = 1\nsigning_key_path = \"client.signing.key\"\n\
         noise_key_path = \"client.noise.key\"\n",
    );
    for (i, addr) in cluster.addrs.iter().enumerate() {
        let signing = Signer::new([i as u8 + 1; 32], ClusterId::ZERO).public_key();
        text.push_str(&format!(
            "\n[[members]]\nid = {i}\naddr = \"{addr}\"\nsigning_public_key = \"{}\"\n\
             noise_public_key = \"{}\"\n",
            to_hex(&signing),
            to_hex(&cluster.keys[i].public)
        ));
    }
    let path = dir.join("client.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn bftctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn commands_print_text_and_json() {
    let cluster = FakeCluster::start(4);
    let dir = tempfile::tempdir().unwrap();
    let config = write_client_toml(&cluster, dir.path());
    let put = bftctl(&config, &["put", "k", "v"]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert_eq!(stdout(&put).trim(), "OK (version 1)");
    let get = bftctl(&config, &["--json", "get", "k"]);
    assert!(get.status.success(), "{}", stderr(&get));
    let text = stdout(&get);
    assert!(
        text.contains(r#""found":true,"value":"v","version":1"#),
        "{text}"
    );
    assert!(text.contains(r#""linearizable":true"#), "{text}");
    let stale = bftctl(&config, &["get", "k", "--stale"]);
    assert!(
        stdout(&stale).contains("[stale read from node"),
        "{}",
        stdout(&stale)
    );
    let txn = bftctl(
        &config,
        &[
            "txn",
            "--if",
            "version(k) = 1",
            "--then",
            "put k w; get k",
            "--else",
            "get k",
        ],
    );
    assert!(txn.status.success(), "{}", stderr(&txn));
    assert!(
        stdout(&txn).starts_with("succeeded: the --then branch ran"),
        "{}",
        stdout(&txn)
    );
    let range = bftctl(&config, &["range", "a", "--limit", "5", "--json"]);
    assert!(
        stdout(&range).contains(r#""key":"k","value":"w","version":2"#),
        "{}",
        stdout(&range)
    );
    let del = bftctl(&config, &["del", "k"]);
    assert_eq!(stdout(&del).trim(), "deleted");
    let status = bftctl(&config, &["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(stdout(&status).matches(r#""reachable":true"#).count(), 4);
    // Each root next to the height it belongs to: the applied height's own root, then the
    // highest certified height and its certified root (the fakes report 0xab.. and 0xcd..).
    let json = stdout(&status);
    assert!(
        json.contains(&format!(r#""applied_root":"{}""#, "ab".repeat(32))),
        "{json}"
    );
    assert!(
        json.contains(&format!(r#""certified_root":"{}""#, "cd".repeat(32))),
        "{json}"
    );
    let text = stdout(&bftctl(&config, &["status"]));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "node",
            "addr",
            "reachable",
            "round",
            "committed",
            "applied",
            "root",
            "certified",
            "root",
            "leader",
            "uptime"
        ],
        "{text}"
    );
    for row in &rows[1..] {
        assert_eq!((row[6], row[8]), ("abababab", "cdcdcdcd"), "{text}");
        assert_eq!(
            row[5], row[7],
            "the fakes certify their applied height: {text}"
        );
    }
    let bench = bftctl(&config, &["bench", "--ops", "200", "--concurrency", "8"]);
    assert!(bench.status.success(), "{}", stderr(&bench));
    assert!(stdout(&bench).contains("throughput:"), "{}", stdout(&bench));
    assert!(stdout(&bench).contains("p99"), "{}", stdout(&bench));
}

#[test]
fn snapshot_save_without_a_snapshot_says_how_to_get_one() {
    let cluster = FakeCluster::start(4);
    let dir = tempfile::tempdir().unwrap();
    let config = write_client_toml(&cluster, dir.path());
    let file = dir.path().join("backup.bak");
    let out = bftctl(&config, &["snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.starts_with("bftctl: no snapshot to save yet"), "{err}");
    assert!(err.contains("snapshot_interval_blocks"), "{err}");
    assert!(err.contains("node0: no snapshot yet"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!file.exists());
    assert!(!dir.path().join("backup.bak.tmp").exists());
    // Usage mistakes exit 2.
    let out = bftctl(&config, &["snapshot", "save"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn failures_are_one_line_with_a_nonzero_exit() {
    let mut cluster = FakeCluster::start(4);
    let dir = tempfile::tempdir().unwrap();
    let config = write_client_toml(&cluster, dir.path());
    cluster.stop(3);
    let status = bftctl(&config, &["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert_eq!(
        stderr(&status).trim(),
        "bftctl: 1 of 4 nodes did not answer"
    );
    assert!(stdout(&status).contains("node3"), "{}", stdout(&status));
    assert!(stdout(&status).contains("no: "), "{}", stdout(&status));
    for i in 0..3 {
        cluster.set(i, support::Behaviour::NotAuthorised);
    }
    let put = bftctl(&config, &["put", "k", "v"]);
    assert_eq!(put.status.code(), Some(1));
    let err = stderr(&put);
    assert!(err.starts_with("bftctl: not authorised"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let usage = bftctl(&config, &["put", "k"]);
    assert_eq!(usage.status.code(), Some(2));
    let missing = bftctl(&dir.path().join("nope.toml"), &["status"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("cannot read config file"),
        "{}",
        stderr(&missing)
    );
    let help = bftctl(&config, &["--help"]);
    assert!(help.status.success() && stdout(&help).contains("./bftd-dev/client.toml"));
}
