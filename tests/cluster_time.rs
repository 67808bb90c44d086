//! Consensus time and keys with a TTL with four real `bftd` processes:
//! - every node reports one block time for one applied height (the time is part of the block
//!   id, so they must), and that time follows the wall clock;
//! - `bftctl put KEY VALUE --ttl 2s` shows `expires_at_ms`, `get --json` shows it too, and the
//!   key is gone on every node after it expired without any further write (the idle cluster
//!   proposes the block that expires it), and a watch sees the expiry as a delete.
//!
//! Every wait has a generous deadline and polls a condition; nothing sleeps and hopes.

#[path = "cluster_support.rs"]
mod support;

use std::process::{Command, Stdio};

use support::*;

#[test]
fn every_node_reports_one_block_time_per_height_and_it_follows_the_wall_clock() {
    let net = Testnet::new(4, "", "");
    let _procs = start_all(&net);
    let config = net.client_config();
    let before_ms = wall_clock_ms();
    ok(bftctl(&config, &["put", "t", "1"]));
    // The idle cluster stops after the write's root is certified: all nodes end at one height.
    let mut agreed = None;
    wait_for(
        "every node applied the same height with the same block time",
        DEADLINE,
        || {
            let s: Vec<_> = (0..net.nodes).filter_map(|i| status_of(&net, i)).collect();
            let same = s.len() == net.nodes
                && s[0].applied_height > 0
                && s.iter().all(|x| {
                    x.applied_height == s[0].applied_height
                        && x.applied_block_time_ms == s[0].applied_block_time_ms
                });
            if same {
                agreed = Some((s[0].applied_height, s[0].applied_block_time_ms));
            }
            same
        },
    );
    let (height, time_ms) = agreed.expect("set when the wait ends");
    let after_ms = wall_clock_ms();
    // The nodes share this machine's clock: the last block was stamped during the test.
    assert!(
        before_ms.saturating_sub(1_000) <= time_ms && time_ms <= after_ms + 1_000,
        "height {height} has time {time_ms}, the test ran from {before_ms} to {after_ms}"
    );
}

#[test]
fn a_key_with_a_ttl_expires_on_every_node_without_further_writes() {
    let net = Testnet::new(4, "", "watch_log_heights = 400");
    let _procs = start_all(&net);
    let config = net.client_config();

    let before_ms = wall_clock_ms();
    let put = ok(bftctl(
        &config,
        &["--json", "put", "ttl/k", "v", "--ttl", "2s"],
    ));
    let expires_at_ms = json_u64(&put, "expires_at_ms").expect("expires_at_ms in put --json");
    assert!(
        expires_at_ms >= before_ms + 2_000 - 1_000
            && expires_at_ms <= wall_clock_ms() + 2_000 + 1_000,
        "{put}"
    );
    let text = ok(bftctl(&config, &["put", "ttl/plain", "p"]));
    assert!(text.starts_with("OK (version 1)"), "{text}");
    let got = ok(bftctl(&config, &["--json", "get", "ttl/k"]));
    // A linearizable read right after the put: the key is there unless it expired already
    // (on a very slow machine), and if there it shows its expiry.
    if got.contains("\"found\":true") {
        assert_eq!(
            json_u64(&got, "expires_at_ms"),
            Some(expires_at_ms),
            "{got}"
        );
    }

    // No more writes: every node's own state loses the key once a block past its time applied.
    let mut clients: Vec<RawClient> = (0..net.nodes)
        .map(|i| RawClient::connect(&net, i).expect("connect"))
        .collect();
    wait_for("the key expired on every node", DEADLINE, || {
        clients
            .iter_mut()
            .all(|c| c.stale_get("ttl/k").expect("stale get").is_none())
    });
    assert!(
        wall_clock_ms() + 1_000 >= expires_at_ms,
        "expired before its time"
    );
    for c in &mut clients {
        assert_eq!(
            c.stale_get("ttl/plain").expect("stale get").as_deref(),
            Some(&b"p"[..]),
            "a key without TTL stays"
        );
    }
    // Every node agrees on the state after the expiry.
    wait_for("every node at one state", DEADLINE, || {
        let s: Vec<_> = (0..net.nodes).filter_map(|i| status_of(&net, i)).collect();
        s.len() == net.nodes
            && s.iter().all(|x| {
                x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
            })
    });

    // A watch replaying the prefix's history sees the put, then the expiry as a delete.
    let out = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(&config)
        .args(["watch", "ttl/k", "--from-height", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bftctl watch");
    let lines = read_lines(out, 2);
    assert!(lines[0].ends_with("PUT ttl/k = v (version 1)"), "{lines:?}");
    assert!(lines[1].ends_with("DELETE ttl/k"), "{lines:?}");
}

/// The first `n` lines of a running command's stdout, then kills it.
fn read_lines(mut child: std::process::Child, n: usize) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let lines = (0..n)
        .map(|_| rx.recv_timeout(DEADLINE).expect("a watch line in time"))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    lines
}
