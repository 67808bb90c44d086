//! Block sync between real `bftd` processes when blocks are large (issue 13 item 6): a node
//! that was down while the cluster committed megabytes of blocks catches up by blocks, from
//! the peers' on-disk block stores (their memory keeps only a few MiB of committed blocks),
//! in responses bounded by bytes, without a snapshot.

#[path = "cluster_support.rs"]
mod support;

use std::time::Instant;

use bftd::kv::{OpReply, OpResult, Reply};
use support::*;

/// Bytes of each value written while the node is down: one request, about one block.
const VALUE_BYTES: usize = 600 * 1024;
/// Writes while the node is down: ~18 MiB of blocks, far over what memory keeps (2 MiB) and
/// over one 16 MiB frame, in blocks far over the 256 KiB average that the old count bound
/// (64 blocks a response) could carry.
const WRITES_WHILE_DOWN: usize = 30;
const DOWN: usize = 3;

fn write(all: &mut AllNodes, seq: &mut u64, key: &str, value: &[u8]) {
    *seq += 1;
    let value = String::from_utf8_lossy(value).into_owned();
    let start = Instant::now();
    loop {
        match all.try_submit(*seq, &[put(key, &value)]) {
            Ok(Reply::Done(ops))
                if matches!(ops.first(), Some(OpReply::Simple(OpResult::Put { .. }))) =>
            {
                return;
            }
            Ok(other) => panic!("{key}: {other:?}"),
            Err(e) => assert!(start.elapsed() < DEADLINE, "{key} never committed: {e}"),
        }
    }
}

#[test]
fn a_node_behind_large_blocks_catches_up_from_the_peers_block_stores() {
    let net = Testnet::new(
        4,
        // 2 MiB of committed blocks in memory (at least f of them whatever their size).
        "round_timeout_base_ms = 100\nround_timeout_max_ms = 400\n\
         committed_bytes_retained = 2097152",
        "",
    );
    let metrics_base = serve_metrics(&net);
    let mut procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    let mut seq = 0;
    for n in 0..5 {
        write(&mut all, &mut seq, &format!("early-{n}"), b"small");
    }
    if let Some(p) = procs[DOWN].take() {
        p.kill();
    }
    for n in 0..WRITES_WHILE_DOWN {
        let value = vec![b'a' + (n % 26) as u8; VALUE_BYTES];
        write(&mut all, &mut seq, &format!("large-{n}"), &value);
    }
    let target = status_of(&net, 0).expect("status of node 0").applied_height;
    procs[DOWN] = Some(NodeProc::start(&net, DOWN));
    wait_for(
        "the restarted node reaches the others' height",
        DEADLINE * 2,
        || status_of(&net, DOWN).is_some_and(|s| s.applied_height >= target),
    );
    wait_for("every node has one state digest", DEADLINE, || {
        let s: Vec<_> = (0..4).filter_map(|i| status_of(&net, i)).collect();
        s.len() == 4
            && s.iter().all(|x| {
                x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
            })
    });
    let log = std::fs::read_to_string(net.log_path(DOWN)).unwrap_or_default();
    assert!(
        !log.contains("installed snapshot"),
        "expected block sync, not a snapshot:\n{log}"
    );
    let served: f64 = (0..3)
        .filter_map(|i| metric_sum(metrics_base, i, "bftd_sync_blocks_served_from_store_total"))
        .sum();
    eprintln!("blocks served to the restarted node from the peers' block stores: {served}");
    assert!(
        served > 0.0,
        "the peers' memory could not hold the blocks; the disk must have served them"
    );
    // The node that caught up answers from its own state.
    let mut alone = RawClient::connect(&net, DOWN).expect("connect to the restarted node");
    let last = format!("large-{}", WRITES_WHILE_DOWN - 1);
    let value = alone.stale_get(&last).expect("stale read");
    assert_eq!(
        value.map(|v| v.len()),
        Some(VALUE_BYTES),
        "{last} on the node that caught up"
    );
}
