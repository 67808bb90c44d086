//! One Byzantine `bftd` process of four, for each kind a process can play (test-only Cargo
//! feature `byzantine`, `[faults] byzantine = "<kind>"` in node 3's config). For every kind:
//! - the client library (and `bftctl`) returns exactly the values and versions written: each
//!   key is written once with a distinct value and read back with a linearizable get;
//! - the three honest nodes agree: the same state digest at the same applied height;
//! - the cluster keeps committing: a second round of writes commits and the honest nodes
//!   agree again, higher.
//!
//! The kinds that attack a lagging node (`forge-sync`, `forge-snapshot`) stop an honest node,
//! advance the cluster without it (past the retained blocks, for the snapshot) and restart it:
//! it must catch up to the honest state, never to a forged one.

#[path = "cluster_support.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bftd::client::{Client, ClientError, VerifiedReadOptions};
use bftd::types::NodeId;
use support::*;

const NODES: usize = 4;
/// The Byzantine member.
const BYZ: usize = 3;
const HONEST: [usize; 3] = [0, 1, 2];
/// The honest node the lagging-node tests stop and restart.
const LAGGING: usize = 2;
/// Round timeouts short enough that the rounds a Byzantine or stopped leader wastes cost
/// little (the same values as the crash tests).
const FAST_ROUNDS: &str = "round_timeout_base_ms = 100\nround_timeout_max_ms = 400";

/// A 4-node testnet whose node `BYZ` plays `kind`, with every node serving `/metrics`.
fn byzantine_testnet(kind: &str, consensus: &str, node: &str) -> Testnet {
    let net = Testnet::new(NODES, consensus, node);
    serve_metrics(&net);
    let path = net.config(BYZ);
    let mut text = std::fs::read_to_string(&path).expect("read node config");
    text.push_str(&format!("\n[faults]\nbyzantine = \"{kind}\"\n"));
    std::fs::write(&path, text).expect("write node config");
    net
}

/// The sum of every sample of metric `name` (all label sets) on node `i`'s `/metrics`, or
/// `None` if the node does not answer.
fn metric(net: &Testnet, i: usize, name: &str) -> Option<f64> {
    metric_sum(metrics_base(net)?, i, name)
}

/// The sum of `name` over the honest nodes.
fn honest_metric(net: &Testnet, name: &str) -> f64 {
    HONEST.iter().filter_map(|&i| metric(net, i, name)).sum()
}

/// Every node runs `bftd-byzantine` (the only binary that may play a Byzantine member; the
/// honest ones have no `[faults] byzantine` and behave as `bftd`).
fn start_all(net: &Testnet) -> Vec<Option<NodeProc>> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bftd-byzantine"));
    (0..net.nodes)
        .map(|i| Some(NodeProc::start_with(net, i, &bin)))
        .collect()
}

/// The ordinary `bftd`, although this test build compiled the `byzantine` feature into the
/// library, refuses a config that names a Byzantine kind, saying which binary would play it.
#[test]
fn plain_bftd_refuses_a_byzantine_config() {
    let net = byzantine_testnet("equivocate", "", "");
    let mut child = Command::new(bftd_bin())
        .arg("--config")
        .arg(net.config(BYZ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bftd");
    // A bftd that wrongly accepted the config would run on: give it a deadline, then kill it.
    let started = std::time::Instant::now();
    let mut exited = false;
    while !exited && started.elapsed() < Duration::from_secs(30) {
        exited = child.try_wait().expect("try_wait").is_some();
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect bftd's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited,
        "bftd started with [faults] byzantine; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("bftd-byzantine"), "stderr: {stderr}");
}

/// Writes `count` fresh keys `{prefix}{n}`, each once with its own value, then reads every
/// one back. Every answer must be the truth: version 1 on write, the value written and
/// version 1 on read. Returns the keys.
fn write_and_read_back(client: &Client, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|n| format!("{prefix}{n}")).collect();
    for key in &keys {
        let version = client
            .put(key.as_bytes(), value_of(key).as_bytes())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        assert_eq!(version, 1, "{key}: wrong version for a first write");
    }
    for key in &keys {
        let got = client
            .get(key.as_bytes())
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .unwrap_or_else(|| panic!("{key}: written, but read as absent"));
        assert_eq!(got.value, value_of(key).into_bytes(), "{key}: wrong value");
        assert_eq!(got.version, 1, "{key}: wrong version");
    }
    keys
}

/// Waits until the honest nodes report the same state digest at the same applied height;
/// returns that height.
fn honest_agree(client: &Client) -> u64 {
    agree(client, &HONEST)
}

/// What every kind must satisfy: right answers, honest agreement, commits that continue.
fn right_answers_agreement_and_progress(client: &Client, rounds: &[&str]) {
    let mut last_height = 0;
    for prefix in rounds {
        write_and_read_back(client, prefix, 15);
        let height = honest_agree(client);
        assert!(
            height > last_height,
            "the cluster stopped committing at height {last_height}"
        );
        last_height = height;
    }
}

/// Runs the common checks with node `BYZ` playing `kind`; returns the testnet and processes
/// for kind-specific checks.
fn run_kind(kind: &str) -> (Testnet, Vec<Option<NodeProc>>, Client) {
    let net = byzantine_testnet(kind, FAST_ROUNDS, "");
    let procs = start_all(&net);
    let client = library_client(&net);
    right_answers_agreement_and_progress(&client, &["a-", "b-"]);
    let log = std::fs::read_to_string(net.log_path(BYZ)).unwrap_or_default();
    assert!(
        log.contains(&format!("plays '{kind}'")),
        "node {BYZ} does not say it is Byzantine:\n{log}"
    );
    (net, procs, client)
}

/// Honest nodes see the conflicting proposals (counted), and vote for one of them only.
#[test]
fn equivocating_leader() {
    let (net, _procs, _client) = run_kind("equivocate");
    wait_for("an honest node counts an equivocation", DEADLINE, || {
        honest_metric(&net, "bftd_equivocations_seen_total") > 0.0
    });
}

/// The next leaders get two votes of one round from node `BYZ` (counted), and count one.
#[test]
fn double_voter() {
    let (net, _procs, _client) = run_kind("double-vote");
    wait_for(
        "an honest node counts an equivocating vote",
        DEADLINE,
        || honest_metric(&net, "bftd_equivocations_seen_total") > 0.0,
    );
}

#[test]
fn silent_member() {
    run_kind("silent");
}

/// The liar does lie (its own stale read is wrong), yet neither the library nor `bftctl`
/// ever passes a lie on.
#[test]
fn node_that_lies_to_clients() {
    let (net, _procs, client) = run_kind("lie-to-clients");
    let key = "a-0";
    let told = client
        .get_stale_from(NodeId(BYZ as u16), key.as_bytes())
        .expect("stale read from the liar");
    assert_ne!(
        told.value.map(|v| v.value),
        Some(value_of(key).into_bytes()),
        "the liar told the truth: the Byzantine mode is not active"
    );
    client.shutdown();
    let out = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(net.client_config())
        .args(["--json", "get", key])
        .output()
        .expect("run bftctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(r#""value":"{}","version":1"#, value_of(key))),
        "{text}"
    );
}

/// A member that answers read-barrier probes with a forged far-future QC, the genesis QC and
/// garbage: the honest nodes drop the forged and garbled answers (counted), the gets still
/// return what was written, and they are answered by read barrier, not by the ordered
/// fallback (a forged round the chain never reaches would stall every barrier).
#[test]
fn member_that_lies_to_read_probes() {
    let (net, _procs, client) = run_kind("lie-to-probes");
    assert!(
        honest_metric(&net, "bftd_barrier_reads_total") > 0.0,
        "no read was answered by barrier"
    );
    // Gets wait for the honest barrier, so one more round of reads must not fall back.
    let before = client.barrier_fallbacks();
    write_and_read_back(&client, "c-", 10);
    assert_eq!(
        client.barrier_fallbacks(),
        before,
        "barrier reads fell back to ordered reads"
    );
    wait_for(
        "an honest node drops a forged probe answer",
        DEADLINE,
        || honest_metric(&net, "bftd_barrier_answers_invalid_total") > 0.0,
    );
}

/// Stops honest node `LAGGING`, writes `count` keys without it, restarts it and waits until
/// it agrees with the other honest nodes; then checks its own copy of some keys.
fn lagging_node_catches_up(net: &Testnet, procs: &mut [Option<NodeProc>], client: &Client) {
    if let Some(p) = procs[LAGGING].take() {
        p.kill();
    }
    let keys = write_and_read_back(client, "while-down-", 60);
    procs[LAGGING] = Some(NodeProc::start(net, LAGGING));
    honest_agree(client);
    for key in [&keys[0], &keys[keys.len() - 1]] {
        let own = client
            .get_stale_from(NodeId(LAGGING as u16), key.as_bytes())
            .expect("stale read from the node that caught up");
        assert_eq!(
            own.value.map(|v| v.value),
            Some(value_of(key).into_bytes()),
            "{key} on the node that caught up"
        );
    }
}

/// The restarted node fetches blocks from its peers; node `BYZ` answers with re-authored
/// blocks the chain's QCs do not certify. It catches up anyway, to the honest state.
#[test]
fn forged_sync_blocks() {
    let (net, mut procs, client) = run_kind("forge-sync");
    lagging_node_catches_up(&net, &mut procs, &client);
    let rejected = metric(
        &net,
        LAGGING,
        "bftd_peer_rejected_messages_total{peer=\"3\"}",
    );
    eprintln!("messages from node {BYZ} the restarted node rejected: {rejected:?}");
    right_answers_agreement_and_progress(&client, &["after-"]);
}

/// The restarted node is behind the blocks its peers keep, so it must install a snapshot.
/// Node `BYZ` offers the honest snapshot (so it counts among the `f + 1` identical offers)
/// but serves a forged file whose checksum is valid: the lagging node must end with the
/// honest state. Whether it happened to download from the forger first is up to its choice
/// of source; when it did, its log shows the refusal.
#[test]
fn forged_snapshot_chunks() {
    let net = byzantine_testnet(
        "forge-snapshot",
        &format!("{FAST_ROUNDS}\ncommitted_blocks_retained = 60"),
        "snapshot_interval_blocks = 20\nstate_transfer_after_ms = 1000",
    );
    let mut procs = start_all(&net);
    let client = library_client(&net);
    right_answers_agreement_and_progress(&client, &["a-"]);
    lagging_node_catches_up(&net, &mut procs, &client);
    let log = std::fs::read_to_string(net.log_path(LAGGING)).unwrap_or_default();
    assert!(
        log.contains("installed snapshot"),
        "expected the lagging node to catch up by snapshot:\n{log}"
    );
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not installed"))
        .collect();
    for line in &refusals {
        // The checksum passed (the forger recomputed it): only the recomputed digest tells.
        assert!(line.contains("state digest does not match"), "{line}");
    }
    let refused = refusals.len();
    let forger = std::fs::read_to_string(net.log_path(BYZ)).unwrap_or_default();
    let served = forger.contains("serving a forged snapshot");
    eprintln!(
        "node {BYZ} served a forged snapshot: {served}; forged downloads the lagging node refused: {refused}"
    );
    right_answers_agreement_and_progress(&client, &["after-"]);
}

/// Puts `count` fresh keys one at a time (each acknowledged); returns how long they took.
fn timed_puts(client: &Client, prefix: &str, count: usize) -> Duration {
    let start = std::time::Instant::now();
    for n in 0..count {
        let key = format!("{prefix}{n}");
        client
            .put(key.as_bytes(), value_of(&key).as_bytes())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    start.elapsed()
}

/// Node `BYZ` floods every other member with costly requests (sync requests from height 0,
/// `SyncInfo` with the genesis QC, replays of an old timeout, snapshot chunk requests) once
/// it has seen block `FLOOD_FROM_HEIGHT`. The per-peer limits drop the excess before any
/// signature check or disk read, counted on each victim's `/metrics`, and honest commits go
/// on at about the pace they had before the flood (issue 13 item 8).
#[test]
fn flood_of_costly_requests() {
    const LIMITED: &str = "bftd_peer_requests_limited_total";
    let net = byzantine_testnet(
        "flood-requests",
        FAST_ROUNDS,
        "snapshot_interval_blocks = 20",
    );
    let _procs = start_all(&net);
    let client = library_client(&net);
    // Before the flood: well below the height it starts at (about 3 blocks a put).
    let before = timed_puts(&client, "calm-", 8);
    let calm_height = honest_agree(&client);
    assert!(
        calm_height < bftd::adversary::messages::FLOOD_FROM_HEIGHT,
        "the baseline ran into the flood (height {calm_height})"
    );
    assert_eq!(
        honest_metric(&net, LIMITED),
        0.0,
        "honest traffic was limited"
    );
    // Commit until the victims see the flood.
    let mut n = 0;
    wait_for("the victims count limited requests", DEADLINE, || {
        n += 1;
        timed_puts(&client, &format!("start-{n}-"), 1);
        HONEST
            .iter()
            .all(|&i| metric(&net, i, LIMITED).is_some_and(|v| v > 0.0))
    });
    let during = timed_puts(&client, "flood-", 8);
    let dropped = honest_metric(&net, LIMITED);
    let sync_requests = honest_metric(&net, &format!("{LIMITED}{{kind=\"sync_request\"}}"));
    let chunks = honest_metric(&net, &format!("{LIMITED}{{kind=\"state_request\"}}"));
    eprintln!(
        "8 puts: {before:?} before the flood, {during:?} during it; requests the honest nodes \
         dropped: {dropped} (sync {sync_requests}, snapshot {chunks})"
    );
    assert!(sync_requests > 0.0 && chunks > 0.0, "every kind is limited");
    assert!(
        during < before * 4 + Duration::from_secs(2),
        "the flood slowed commits: {during:?} against {before:?}"
    );
    right_answers_agreement_and_progress(&client, &["after-"]);
}

/// A liar serving a backup (`bftctl snapshot save --node 3`, every chunk with a flipped
/// byte): the download does not verify, the liar is dropped, the file comes from honest
/// members, and it restores.
#[test]
fn backup_served_by_a_liar_is_refused_and_fetched_from_honest_nodes() {
    let net = byzantine_testnet(
        "lie-to-clients",
        FAST_ROUNDS,
        "snapshot_interval_blocks = 20",
    );
    let _procs = start_all(&net);
    let client = library_client(&net);
    write_and_read_back(&client, "a-", 15);
    let newest = |i: usize| {
        std::fs::read_dir(net.data_dir(i).join("snapshots"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".offer"))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until("every node, the liar too, has a snapshot", || {
        (0..NODES).all(|i| newest(i) > 0)
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.bak");
    let out = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(net.client_config())
        .args(["--json", "snapshot", "save", "--node", "3"])
        .arg(&file)
        .output()
        .expect("run bftctl");
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from = json
        .split("\"downloaded_from\":[")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_else(|| panic!("downloaded_from in {json}"));
    assert!(!from.is_empty() && !from.contains('3'), "{json}");
    assert!(json.contains("\"distrusted\":[3]"), "{json}");
    let restored = Command::new(bftd_bin())
        .args(["snapshot", "restore", "--data-dir"])
        .arg(dir.path().join("fresh"))
        .arg(&file)
        .output()
        .expect("run bftd snapshot restore");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
}

/// Verified reads (one node, a proof and a certificate): node `BYZ` answers them with wrong
/// values dressed up two ways (the honest proof with a changed value; a made-up root with a
/// proof that matches it). The client rejects both, naming the liar; the honest nodes' answers
/// are the values written, at a height at or above the write's; and `bftctl get --verified`
/// says so in text and JSON over TCP.
#[test]
fn node_that_lies_to_verified_reads() {
    let (net, _procs, client) = run_kind("lie-verified-reads");
    let key = "a-0";
    let written = client
        .get(key.as_bytes())
        .expect("linearizable get")
        .expect("written by run_kind");
    let least = written.mod_height;
    for i in HONEST {
        let read = verified_at_least(&client, i, key, least);
        assert_eq!(read.node, NodeId(i as u16));
        assert!(read.height >= least, "height {} below {least}", read.height);
        let value = read.value.expect("present");
        assert_eq!(value.value, value_of(key).into_bytes(), "from node {i}");
        assert_eq!((value.version, value.mod_height), (1, least));
    }
    // Monotonic: never below what this client already read.
    assert!(client.verified_height_seen() >= least);
    let absent = verified_at_least(&client, 0, "never-written", 0);
    assert_eq!(absent.value, None, "an absent key proven absent");

    // The liar: each way of lying is rejected, with the node named.
    let liar = VerifiedReadOptions {
        node: Some(NodeId(BYZ as u16)),
        min_height: 0,
    };
    let mut reasons: Vec<String> = Vec::new();
    wait_for(
        "both of the liar's verified reads rejected",
        DEADLINE,
        || {
            match client.get_verified_with(key.as_bytes(), &liar) {
                Ok(read) => panic!("accepted a verified read from the liar: {read:?}"),
                Err(ClientError::Unverified { node, reason }) => {
                    assert_eq!(node, NodeId(BYZ as u16));
                    reasons.push(reason);
                }
                Err(e) => eprintln!("the liar did not answer yet: {e}"),
            }
            reasons.len() >= 2
        },
    );
    eprintln!("the liar's verified reads were rejected: {reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("proof")),
        "the changed value under the honest proof: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("certificate")),
        "the made-up root: {reasons:?}"
    );
    let seen = client.verified_height_seen();
    client.shutdown();

    // bftctl over TCP: JSON and text from an honest node, refusal from the liar.
    let bftctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bftctl"))
            .arg("--config")
            .arg(net.client_config())
            .args(args)
            .output()
            .expect("run bftctl")
    };
    let min = seen.to_string();
    let out = bftctl(&[
        "--json",
        "get",
        key,
        "--verified",
        "--node",
        "1",
        "--min-height",
        &min,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        format!(r#""value":"{}","version":1"#, value_of(key)),
        r#""verified":true"#.to_string(),
        r#""node":1"#.to_string(),
        r#""linearizable":false"#.to_string(),
    ] {
        assert!(text.contains(&want), "{want} in {text}");
    }
    let height: u64 = text
        .split(r#""height":"#)
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("a height in {text}"));
    assert!(height >= seen, "height {height} below --min-height {seen}");
    let out = bftctl(&["get", key, "--verified", "--node", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{key} = {}", value_of(key)))
            && text.contains("verified read from node2 at height"),
        "{text}"
    );
    let out = bftctl(&["get", key, "--verified", "--node", &BYZ.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bftctl accepted the liar's answer");
    assert!(
        err.contains(&format!("verified read from node{BYZ} rejected")),
        "{err}"
    );
}

/// A watch passes on exactly the committed changes although one node falsifies every watch
/// frame it sends (values altered, deletes turned into puts).
#[test]
fn a_watch_passes_on_no_lie() {
    let (net, _procs, client) = run_kind("lie-to-clients");
    let mut watch = client.watch(b"wz/", true, None).expect("start the watch");
    client.put(b"wz/a", b"1").expect("put");
    client.put(b"wz/b", b"2").expect("put");
    client.delete(b"wz/a").expect("delete");
    let mut got = Vec::new();
    while got.len() < 3 {
        let batch = watch
            .next(DEADLINE)
            .expect("the watch runs")
            .expect("changes within the deadline");
        for event in batch.events {
            got.push((event.key, event.value.map(|v| (v.value, v.version))));
        }
    }
    let expected = vec![
        (b"wz/a".to_vec(), Some((b"1".to_vec(), 1))),
        (b"wz/b".to_vec(), Some((b"2".to_vec(), 1))),
        (b"wz/a".to_vec(), None),
    ];
    assert_eq!(got, expected);
    // The liar does lie on watches: its own frame for the delete is not a delete.
    let mut raw = RawClient::connect(&net, BYZ).expect("connect to the liar");
    raw.send(&bftd::wire::ClientFrame::Watch {
        id: 7,
        key: b"wz/".to_vec(),
        prefix: true,
        from_height: watch.last_height(),
    })
    .expect("send a watch");
    match raw.recv().expect("the liar answers") {
        bftd::wire::NodeFrame::WatchEvents { events, .. } => {
            assert!(events.iter().all(|e| e.value.is_some()), "{events:?}")
        }
        other => panic!("expected watch events, got {other:?}"),
    }
}
