//! Crash tests against real `bftd` processes: SIGKILL of the leader under load, SIGKILL of
//! every node, and a node that was down for thousands of blocks catching up by blocks and by
//! snapshot. What is checked is what clients observe: acknowledged writes stay readable and
//! every node ends at the same state digest.

#[path = "cluster_support.rs"]
mod support;

use std::time::{Duration, Instant};

use bftd::kv::{OpReply, OpResult, Reply};
use support::*;

fn is_put_ok(reply: &Reply) -> bool {
    matches!(reply, Reply::Done(ops) if matches!(ops.first(), Some(OpReply::Simple(OpResult::Put { .. }))))
}

fn values(reply: &Reply) -> Vec<Option<Vec<u8>>> {
    match reply {
        Reply::Done(ops) => ops
            .iter()
            .map(|op| match op {
                OpReply::Simple(OpResult::Get { found }) => found.as_ref().map(|v| v.value.clone()),
                _ => None,
            })
            .collect(),
        Reply::Rejected(_) => Vec::new(),
    }
}

/// Writes `count` keys `{prefix}{n}` one request at a time, retrying each with its seq until
/// acknowledged; returns the acknowledged keys.
fn write_keys(all: &mut AllNodes, seq: &mut u64, prefix: &str, count: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for n in 0..count {
        *seq += 1;
        let key = format!("{prefix}{n}");
        let start = Instant::now();
        loop {
            match all.try_submit(*seq, &[put(&key, &format!("value-{key}"))]) {
                Ok(reply) => {
                    if start.elapsed() > Duration::from_millis(500) {
                        eprintln!("{key}: {:?}", start.elapsed());
                    }
                    assert!(is_put_ok(&reply), "{key}: {reply:?}");
                    acked.push(key);
                    break;
                }
                Err(e) => assert!(start.elapsed() < DEADLINE, "{key} never committed: {e}"),
            }
        }
    }
    acked
}

/// Reads `keys` with linearizable gets (batched) and checks every value.
fn check_keys(all: &mut AllNodes, seq: &mut u64, keys: &[String]) {
    for chunk in keys.chunks(200) {
        *seq += 1;
        let ops: Vec<_> = chunk.iter().map(|k| get(k)).collect();
        let start = Instant::now();
        let reply = loop {
            match all.try_submit(*seq, &ops) {
                Ok(r) => break r,
                Err(e) => assert!(start.elapsed() < DEADLINE, "reads never committed: {e}"),
            }
        };
        let got = values(&reply);
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v,
                Some(format!("value-{k}").into_bytes()),
                "acknowledged write {k} lost"
            );
        }
    }
}

fn wait_converged(net: &Testnet, nodes: &[usize]) {
    wait_for("nodes converge on one state digest", DEADLINE, || {
        let s: Vec<_> = nodes.iter().filter_map(|&i| status_of(net, i)).collect();
        s.len() == nodes.len()
            && s.iter().all(|x| {
                x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
            })
    });
}

#[test]
fn killing_the_leader_under_load_loses_nothing_and_commits_resume() {
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    let mut procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    let mut seq = 0;
    let mut acked = write_keys(&mut all, &mut seq, "before-", 30);
    let leader = status_of(&net, 0).expect("status").leader as usize;
    if let Some(p) = procs[leader].take() {
        p.kill();
    }
    let killed_at = Instant::now();
    acked.extend(write_keys(&mut all, &mut seq, "after-", 10));
    let resumed = killed_at.elapsed();
    eprintln!("killed leader {leader}; 10 more writes committed within {resumed:?}");
    check_keys(&mut all, &mut seq, &acked);
    procs[leader] = Some(NodeProc::start(&net, leader));
    wait_converged(&net, &[0, 1, 2, 3]);
}

#[test]
fn sigkill_of_every_node_keeps_every_acknowledged_write() {
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    let mut procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    let mut seq = 0;
    let acked = write_keys(&mut all, &mut seq, "k", 100);
    for p in procs.iter_mut() {
        if let Some(p) = p.take() {
            p.kill();
        }
    }
    drop(all);
    let _procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    check_keys(&mut all, &mut seq, &acked);
    wait_converged(&net, &[0, 1, 2, 3]);
}

/// One node misses `writes` writes (about three blocks each: the block and the two that
/// certify and commit it), then comes back; returns how long it took to catch up.
fn down_node_catches_up(consensus: &str, node: &str, writes: usize) -> (Duration, String) {
    // Short round timeouts: the down node costs the others a timeout or two before the leader
    // schedule passes it over, and again whenever a timeout hands a round to round robin.
    let net = Testnet::new(
        4,
        &format!("round_timeout_base_ms = 50\nround_timeout_max_ms = 400\n{consensus}"),
        node,
    );
    let mut procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    let mut seq = 0;
    write_keys(&mut all, &mut seq, "early-", 10);
    let down = 3;
    if let Some(p) = procs[down].take() {
        p.kill();
    }
    let acked = write_keys(&mut all, &mut seq, "while-down-", writes);
    procs[down] = Some(NodeProc::start(&net, down));
    let back = Instant::now();
    wait_converged(&net, &[0, 1, 2, 3]);
    let took = back.elapsed();
    // The node that caught up answers from its own state, like the others.
    let mut alone = RawClient::connect(&net, down).expect("connect to the restarted node");
    for key in [&acked[0], &acked[acked.len() / 2], &acked[acked.len() - 1]] {
        let value = alone
            .stale_get(key)
            .expect("stale read from the restarted node");
        assert_eq!(
            value,
            Some(format!("value-{key}").into_bytes()),
            "{key} on the node that caught up"
        );
    }
    let log = std::fs::read_to_string(net.log_path(down)).unwrap_or_default();
    (took, log)
}

#[test]
fn a_node_down_for_thousands_of_blocks_catches_up_by_blocks() {
    let (took, log) = down_node_catches_up("", "", 350);
    eprintln!("caught up ~1000 blocks (350 writes) by sync in {took:?}");
    assert!(
        !log.contains("installed snapshot"),
        "expected block sync, not a snapshot"
    );
}

#[test]
fn a_node_down_beyond_the_retained_blocks_catches_up_by_snapshot() {
    let (took, log) = down_node_catches_up(
        "committed_blocks_retained = 200",
        "snapshot_interval_blocks = 100\nstate_transfer_after_ms = 1000",
        250,
    );
    eprintln!("caught up by snapshot in {took:?}");
    assert!(
        log.contains("installed snapshot"),
        "expected a snapshot install:\n{log}"
    );
}
