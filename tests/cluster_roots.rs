//! Certified state roots with real `bftd` processes (issue 12, items 2 and 3):
//! - a node whose state was damaged on disk with valid checksums (a value rewritten inside a
//!   state WAL record, the record's CRC fixed) detects it once a root of its differs from a
//!   certified one: `/health` 503 with the reason, `bftd_state_diverged 1`, stale reads
//!   refused; it repairs itself from a peer snapshot whose root the chain certified and ends
//!   with the others' state, healthy again;
//! - a lagging node that must catch up by snapshot, offered a forged file by the first source
//!   it asks (node 0 plays `forge-snapshot`), refuses the file (counted and logged), bans that
//!   source for that snapshot and installs the honest state from another;
//! - after one write on an idle cluster, and no other write, every node proves the value with
//!   a verified read at a height at or above the write's (the cluster goes on with empty
//!   blocks until a certified block carries that height's root).
//!
//! Every wait has a generous deadline and polls a condition; nothing sleeps and hopes.

#[path = "cluster_support.rs"]
mod support;

use std::path::{Path, PathBuf};

use bftd::client::{Client, ClientError};
use bftd::types::NodeId;
use support::*;

const NODES: usize = 4;
/// Round timeouts short enough that the rounds a stopped or refused leader wastes cost little.
const FAST_ROUNDS: &str = "round_timeout_base_ms = 100\nround_timeout_max_ms = 400";

/// A testnet whose nodes serve `/metrics` and `/health`; node `byz` (if any) plays `kind`.
fn testnet(consensus: &str, node: &str, byz: Option<(usize, &str)>) -> Testnet {
    let net = Testnet::new(NODES, consensus, node);
    serve_metrics(&net);
    if let Some((b, kind)) = byz {
        let path = net.config(b);
        let mut text = std::fs::read_to_string(&path).expect("read node config");
        text.push_str(&format!("\n[faults]\nbyzantine = \"{kind}\"\n"));
        std::fs::write(&path, text).expect("write node config");
    }
    net
}

/// `GET path` on node `i`'s metrics server: `(status code, body)`, or `None` if it does not
/// answer.
fn http_get(net: &Testnet, i: usize, path: &str) -> Option<(u16, String)> {
    metrics_get(metrics_base(net)?, i, path)
}

/// The sum of every sample of metric `name` on node `i`, or `None` if it does not answer.
fn metric(net: &Testnet, i: usize, name: &str) -> Option<f64> {
    metric_sum(metrics_base(net)?, i, name)
}

fn put(client: &Client, key: &str, value: &str) {
    client
        .put(key.as_bytes(), value.as_bytes())
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// The value node `i` holds for `key` in its own state (a stale read from it alone).
fn own_value(client: &Client, i: usize, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
    client
        .get_stale_from(NodeId(i as u16), key.as_bytes())
        .map(|r| r.value.map(|v| v.value))
}

/// The state WAL segments of node `i`, in log order.
fn state_wal_segments(net: &Testnet, i: usize) -> Vec<PathBuf> {
    let dir = net.data_dir(i).join("state");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".log"))
        })
        .collect();
    segs.sort();
    segs
}

/// Rewrites every occurrence of `from` (inside a record's payload) with `to` (same length) in
/// the WAL segment at `path`, and recomputes the CRC of each record it changed, so the file
/// is well formed (`storage/FORMAT.md`: `u32 len, u32 crc32 of the payload, payload`).
/// Returns how many records it changed.
fn rewrite_in_wal(path: &Path, from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).expect("read WAL segment");
    let mut at = 0usize;
    let mut changed = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break; // the end of the written records
        }
        let payload = at + 8..at + 8 + len;
        let mut hit = false;
        let mut i = payload.start;
        while i + from.len() <= payload.end {
            if bytes[i..i + from.len()] == *from {
                bytes[i..i + from.len()].copy_from_slice(to);
                hit = true;
                i += from.len();
            } else {
                i += 1;
            }
        }
        if hit {
            let crc = crc32fast::hash(&bytes[payload.clone()]);
            bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            changed += 1;
        }
        at = payload.end;
    }
    std::fs::write(path, &bytes).expect("write WAL segment");
    changed
}

/// Node `DAMAGED`'s state is rewritten on disk while it is down; once a key it holds wrongly
/// is written again, its state root differs from the certified one: it must notice, stop
/// voting and serving reads, repair itself by snapshot and end with the honest state.
#[test]
fn a_node_with_a_damaged_state_detects_it_stops_serving_and_repairs_itself() {
    const DAMAGED: usize = 2;
    const OTHERS: [usize; 3] = [0, 1, 3];
    let net = testnet(
        &format!("{FAST_ROUNDS}\ncommitted_blocks_retained = 400"),
        // Long enough that a certified snapshot above the damaged node's state rarely exists
        // the moment it detects the damage (then it repairs before it can be looked at).
        "snapshot_interval_blocks = 25",
        None,
    );
    let mut procs = start_all(&net);
    let client = library_client(&net);
    for key in ["touched", "kept"] {
        put(&client, key, &value_of(key));
    }
    for n in 0..5 {
        let key = format!("pad-{n}");
        put(&client, &key, &value_of(&key));
    }
    agree(&client, &[0, 1, 2, 3]);

    // Damage: the values of "touched" and "kept" in node 2's state WAL, CRCs fixed.
    if let Some(p) = procs[DAMAGED].take() {
        p.kill();
    }
    let mut changed = 0;
    for seg in state_wal_segments(&net, DAMAGED) {
        changed += rewrite_in_wal(&seg, b"value-of-touched", b"VALUE-OF-TOUCHED");
        changed += rewrite_in_wal(&seg, b"value-of-kept", b"VALUE-OF-KEPT");
    }
    assert!(
        changed >= 2,
        "the values were not found in node {DAMAGED}'s state WAL"
    );
    procs[DAMAGED] = Some(NodeProc::start(&net, DAMAGED));
    wait_for("the damaged node answers status", DEADLINE, || {
        status_of(&net, DAMAGED).is_some()
    });
    // The damage is real: the node serves the rewritten value (nothing can tell yet: the
    // root is maintained incrementally and the key was not touched since).
    wait_for("the damaged node serves its own state", DEADLINE, || {
        matches!(own_value(&client, DAMAGED, "kept"), Ok(Some(_)))
    });
    assert_eq!(
        own_value(&client, DAMAGED, "kept").expect("stale read"),
        Some(b"VALUE-OF-KEPT".to_vec())
    );

    // Writing the damaged key again makes the damaged node's root differ. A few more writes
    // get the block carrying that height's root certified; stop as soon as it noticed, so
    // no peer snapshot above its state exists yet and the diverged state can be looked at.
    put(&client, "touched", "second");
    let mut writes = 0;
    wait_for("the damaged node detects its divergence", DEADLINE, || {
        if metric(&net, DAMAGED, "bftd_state_divergences_total").unwrap_or(0.0) >= 1.0 {
            return true;
        }
        writes += 1;
        let key = format!("after-{writes}");
        put(&client, &key, &value_of(&key));
        false
    });
    eprintln!("divergence detected after {writes} more writes");
    let log = std::fs::read_to_string(net.log_path(DAMAGED)).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("state diverged at height")),
        "no error log of the divergence:\n{log}"
    );
    let (code, body) = http_get(&net, DAMAGED, "/health").expect("health answers");
    if code == 503 {
        assert!(body.contains("state diverged at height"), "{body}");
        assert_eq!(metric(&net, DAMAGED, "bftd_state_diverged"), Some(1.0));
        match own_value(&client, DAMAGED, "kept") {
            Err(ClientError::Unavailable { reason, .. }) => {
                assert!(reason.contains("diverged"), "{reason}")
            }
            other => panic!("a diverged node answered a stale read: {other:?}"),
        }
        assert!(metric(&net, DAMAGED, "bftd_stale_reads_refused_total").unwrap_or(0.0) >= 1.0);
    } else {
        // Only if a peer snapshot above its state was already certified: it repaired at once.
        eprintln!("the damaged node repaired before the diverged state could be looked at");
    }

    // Repair: more blocks bring a certified snapshot above its state; it installs it and
    // catches up. The others never stopped.
    wait_for(
        "the damaged node is repaired, healthy and agrees with the others",
        DEADLINE,
        || {
            writes += 1;
            let key = format!("after-{writes}");
            put(&client, &key, &value_of(&key));
            let healthy = http_get(&net, DAMAGED, "/health").is_some_and(|(c, _)| c == 200);
            healthy && metric(&net, DAMAGED, "bftd_state_diverged") == Some(0.0)
        },
    );
    let height = agree(&client, &[0, 1, 2, 3]);
    assert!(metric(&net, DAMAGED, "bftd_snapshots_installed_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        own_value(&client, DAMAGED, "kept").expect("stale read after the repair"),
        Some(value_of("kept").into_bytes())
    );
    assert_eq!(
        own_value(&client, DAMAGED, "touched").expect("stale read after the repair"),
        Some(b"second".to_vec())
    );
    for i in OTHERS {
        assert_eq!(metric(&net, i, "bftd_state_divergences_total"), Some(0.0));
    }
    // Rejoined: it votes again (its vote counter moves with new blocks).
    let votes = metric(&net, DAMAGED, "bftd_votes_total").unwrap_or(0.0);
    wait_for("the repaired node votes again", DEADLINE, || {
        writes += 1;
        let key = format!("after-{writes}");
        put(&client, &key, &value_of(&key));
        metric(&net, DAMAGED, "bftd_votes_total").unwrap_or(0.0) > votes
    });
    eprintln!("all four agree at height {height}");
}

/// Node 0 offers the honest snapshot but serves a forged file with a valid checksum. While
/// node 3 is down, node 0 and node 1 are the only `f + 1` offers the lagging node can get, so
/// it downloads from node 0 (the lowest id) first: it must refuse the file, count and log it
/// and not ask node 0 again for that snapshot; once node 3 is back it installs the honest
/// state from the others.
#[test]
fn a_forged_snapshot_is_never_installed() {
    const FORGER: usize = 0;
    const LAGGING: usize = 2;
    const OTHER: usize = 3;
    let net = testnet(
        &format!("{FAST_ROUNDS}\ncommitted_blocks_retained = 20"),
        "snapshot_interval_blocks = 10\nstate_transfer_after_ms = 1000",
        Some((FORGER, "forge-snapshot")),
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bftd-byzantine"));
    let mut procs: Vec<Option<NodeProc>> = (0..NODES)
        .map(|i| Some(NodeProc::start_with(&net, i, &bin)))
        .collect();
    let client = library_client(&net);
    for n in 0..5 {
        let key = format!("a-{n}");
        put(&client, &key, &value_of(&key));
    }
    agree(&client, &[1, 2, 3]);
    if let Some(p) = procs[LAGGING].take() {
        p.kill();
    }
    // Past the blocks the others retain, so the lagging node must take a snapshot.
    for n in 0..60 {
        let key = format!("down-{n}");
        put(&client, &key, &value_of(&key));
    }
    if let Some(p) = procs[OTHER].take() {
        p.kill();
    }
    procs[LAGGING] = Some(NodeProc::start_with(&net, LAGGING, &bin));
    wait_for("the lagging node refuses the forged file", DEADLINE, || {
        metric(&net, LAGGING, "bftd_snapshots_rejected_total").unwrap_or(0.0) >= 1.0
    });
    assert_eq!(
        metric(&net, LAGGING, "bftd_snapshots_installed_total"),
        Some(0.0),
        "installed a snapshot with only the forger and one honest node offering"
    );
    let forger_log = std::fs::read_to_string(net.log_path(FORGER)).unwrap_or_default();
    assert!(
        forger_log.contains("serving a forged snapshot"),
        "node {FORGER} never served its forgery:\n{forger_log}"
    );
    // The counter can be seen before the log line that goes with it is written.
    let log = || std::fs::read_to_string(net.log_path(LAGGING)).unwrap_or_default();
    wait_for(
        "the lagging node logs the refusal and the ban",
        DEADLINE,
        || {
            let log = log();
            log.contains("rejected") && log.contains("node0 served a bad snapshot file")
        },
    );
    procs[OTHER] = Some(NodeProc::start_with(&net, OTHER, &bin));
    wait_for("the lagging node installs a snapshot", DEADLINE, || {
        metric(&net, LAGGING, "bftd_snapshots_installed_total").unwrap_or(0.0) >= 1.0
    });
    // Its state is the honest one, and it keeps up.
    for n in [0, 59] {
        let key = format!("down-{n}");
        wait_for("the lagging node serves the honest value", DEADLINE, || {
            own_value(&client, LAGGING, &key).ok().flatten() == Some(value_of(&key).into_bytes())
        });
    }
    put(&client, "after", "x");
    agree(&client, &[1, 2, 3]);
    let rejected = metric(&net, LAGGING, "bftd_snapshots_rejected_total").unwrap_or(0.0);
    eprintln!("forged snapshots the lagging node rejected: {rejected}");
}

/// Issue 12, liveness of verified reads: one put on an idle cluster, then no write at all (no
/// filler, no linearizable read: those are ordered like writes). Each node must come to prove
/// the value with a verified read at a height at or above the put's, which needs a certified
/// block carrying the put height's root: the cluster makes those blocks by itself.
#[test]
fn one_write_on_an_idle_cluster_becomes_provable_from_every_node_without_more_writes() {
    let net = testnet(FAST_ROUNDS, "", None);
    let _procs = start_all(&net);
    let client = library_client(&net);
    let key = "the-only-write";
    put(&client, key, &value_of(key));
    // The put's height, from node 0's own state (a stale read: no block, no consensus).
    let mut mod_height = 0;
    wait_for("node 0 applied the put", DEADLINE, || {
        match client.get_stale_from(NodeId(0), key.as_bytes()) {
            Ok(read) => read.value.is_some_and(|v| {
                mod_height = v.mod_height;
                true
            }),
            Err(_) => false,
        }
    });
    assert!(mod_height > 0);
    for i in 0..NODES {
        let read = verified_at_least(&client, i, key, mod_height);
        assert_eq!(read.node, NodeId(i as u16));
        assert!(
            read.height >= mod_height,
            "height {} below {mod_height}",
            read.height
        );
        let value = read.value.expect("the put's value, proven present");
        assert_eq!(value.value, value_of(key).into_bytes(), "from node {i}");
        assert_eq!((value.version, value.mod_height), (1, mod_height));
    }
}
