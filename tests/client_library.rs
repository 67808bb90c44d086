//! The client library against four FAKE nodes on real sockets (the node-side transport with a
//! scripted behaviour per node): the `f + 1` rule with lying, silent, busy and refusing nodes,
//! stale reads, status with a node down, reconnecting after a restart, garbage, pipelining.
//! Nothing waits for luck: conditions are polled with generous deadlines; only tests that
//! expect a timeout use a short request timeout.

#[path = "client_support.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bftd::client::{ClientError, Said};
use bftd::kv::{Compare, CompareOp, CompareTarget, Op, OpReply, OpResult, Txn, TxnOp};
use bftd::types::NodeId;
use bftd::wire::Refusal;
use support::{Behaviour, DEADLINE, FakeCluster, wait_until};

#[test]
fn honest_cluster_serves_every_operation() {
    let cluster = FakeCluster::start(4);
    let client = cluster.client(DEADLINE);
    assert_eq!(client.put(b"a", b"1").unwrap(), 1);
    assert_eq!(client.put(b"a", b"2").unwrap(), 2);
    assert_eq!(client.put(b"b", b"3").unwrap(), 1);
    let got = client.get(b"a").unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"2"[..], 2));
    assert_eq!(client.get(b"zz").unwrap(), None);
    let range = client.range(b"a", None, 10).unwrap();
    assert_eq!(range.entries.len(), 2);
    assert!(!range.more);
    assert_eq!(client.range(b"a", Some(b"b"), 10).unwrap().entries.len(), 1);
    assert!(client.range(b"a", None, 1).unwrap().more);
    let cas = |version| Txn {
        compare: vec![Compare {
            key: b"a".to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(version),
        }],
        success: vec![TxnOp::Put {
            key: b"a".to_vec(),
            value: b"swapped".to_vec(),
        }],
        failure: vec![TxnOp::Get { key: b"a".to_vec() }],
    };
    let lost = client.txn(cas(7)).unwrap();
    assert!(!lost.succeeded);
    assert!(matches!(&lost.results[..], [OpResult::Get { found: Some(v) }] if v.version == 2));
    let won = client.txn(cas(2)).unwrap();
    assert!(won.succeeded);
    assert_eq!(won.results, vec![OpResult::Put { version: 3 }]);
    assert!(client.delete(b"b").unwrap());
    assert!(!client.delete(b"b").unwrap());
    // A batch: several ops, one signed request, applied together.
    let before = cluster.executed();
    let results = client
        .batch(vec![
            Op::Put {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
            },
            Op::Put {
                key: b"y".to_vec(),
                value: b"2".to_vec(),
            },
            Op::Get { key: b"x".to_vec() },
        ])
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(cluster.executed(), before + 1);
    assert!(matches!(
        &results[2],
        OpReply::Simple(OpResult::Get { found: Some(_) })
    ));
    assert!(matches!(client.batch(vec![]), Err(ClientError::Usage(_))));
}

#[test]
fn one_lying_node_cannot_change_the_result() {
    let cluster = FakeCluster::start(4);
    cluster.set(0, Behaviour::Lie);
    let client = cluster.client(DEADLINE);
    for i in 0..20u64 {
        let ticket = client
            .submit(vec![Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }])
            .unwrap();
        let committed = ticket.wait().unwrap();
        assert_eq!(
            committed.results,
            vec![OpReply::Simple(OpResult::Put { version: i + 1 })]
        );
        assert!(!committed.agreeing.contains(&NodeId(0)), "{committed:?}");
        assert!(committed.agreeing.len() >= 2);
    }
}

#[test]
fn two_different_lies_and_two_silent_nodes_time_out_naming_each_node() {
    let cluster = FakeCluster::start(4);
    cluster.set(0, Behaviour::Lie);
    cluster.set(1, Behaviour::Lie);
    cluster.set(2, Behaviour::Silent);
    cluster.set(3, Behaviour::Silent);
    let client = cluster.client(Duration::from_secs(3));
    assert_eq!(client.wait_connected(4, DEADLINE), 4);
    let err = client.put(b"k", b"v").unwrap_err();
    let ClientError::Timeout {
        needed, answers, ..
    } = &err
    else {
        panic!("expected a timeout, got {err}");
    };
    assert_eq!(*needed, 2);
    let fingerprints: Vec<&str> = answers[..2]
        .iter()
        .map(|a| match &a.said {
            Said::Reply { fingerprint } => fingerprint.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_ne!(fingerprints[0], fingerprints[1], "the two lies differ");
    for a in &answers[2..] {
        assert_eq!(
            a.said,
            Said::Nothing {
                link: "connected".into()
            }
        );
    }
    let text = err.to_string();
    for part in [
        "node0 replied #",
        "node1 replied #",
        "node2 no answer (connected)",
        "node3 no answer",
    ] {
        assert!(text.contains(part), "{text}");
    }
    assert!(!text.contains('\n'));
}

#[test]
fn a_silent_byzantine_node_does_not_block_progress() {
    let cluster = FakeCluster::start(4);
    cluster.set(2, Behaviour::Silent);
    let client = cluster.client(DEADLINE);
    for i in 0..10u8 {
        client.put(&[i], b"v").unwrap();
    }
    assert_eq!(client.get(&[3]).unwrap().unwrap().value, b"v");
}

#[test]
fn busy_everywhere_is_a_busy_error_after_retries() {
    let cluster = FakeCluster::start(4);
    for i in 0..4 {
        cluster.set(i, Behaviour::Busy);
    }
    let client = cluster.client(Duration::from_secs(2));
    let err = client.put(b"k", b"v").unwrap_err();
    assert!(matches!(err, ClientError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("node3 refused (busy)"), "{err}");
    // The request was resent (same seq) while the nodes said busy.
    assert!(
        cluster
            .nodes
            .iter()
            .any(|n| n.submits_seen.load(std::sync::atomic::Ordering::Relaxed) >= 2)
    );
    assert_eq!(cluster.executed(), 0);
}

#[test]
fn a_retry_after_busy_is_applied_exactly_once() {
    let cluster = FakeCluster::start(4);
    for i in 0..4 {
        cluster.set(i, Behaviour::Busy);
    }
    let client = cluster.client(DEADLINE);
    let ticket = client
        .submit(vec![Op::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }])
        .unwrap();
    wait_until("every node saw the request resent", || {
        cluster
            .nodes
            .iter()
            .all(|n| n.submits_seen.load(std::sync::atomic::Ordering::Relaxed) >= 2)
    });
    for i in 0..4 {
        cluster.set(i, Behaviour::Honest);
    }
    let committed = ticket.wait().unwrap();
    assert_eq!(
        committed.results,
        vec![OpReply::Simple(OpResult::Put { version: 1 })]
    );
    // Let more resends arrive: the nodes answer them from the stored reply, never re-execute.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cluster.executed(), 1);
}

#[test]
fn not_authorised_fails_fast_with_a_clear_error() {
    let cluster = FakeCluster::start(4);
    for i in 0..4 {
        cluster.set(i, Behaviour::NotAuthorised);
    }
    let client = cluster.client(DEADLINE);
    let start = Instant::now();
    let err = client.put(b"k", b"v").unwrap_err();
    assert!(matches!(err, ClientError::NotAuthorised { .. }), "{err}");
    assert!(err.to_string().starts_with("not authorised"), "{err}");
    assert!(
        start.elapsed() < DEADLINE / 2,
        "did not wait for the deadline"
    );
    // One refusing node alone decides nothing.
    for i in 1..4 {
        cluster.set(i, Behaviour::Honest);
    }
    client.put(b"k", b"v").unwrap();
}

#[test]
fn stale_get_reads_one_node_and_says_which() {
    let cluster = FakeCluster::start(4);
    let client = cluster.client(DEADLINE);
    client.put(b"k", b"v").unwrap();
    let read = client.get_stale(b"k").unwrap();
    assert_eq!(read.value.unwrap().value, b"v");
    assert!(read.applied_height >= 1);
    let from2 = client.get_stale_from(NodeId(2), b"missing").unwrap();
    assert_eq!((from2.node, from2.value), (NodeId(2), None));
    assert!(matches!(
        client.get_stale_from(NodeId(9), b"k"),
        Err(ClientError::Usage(_))
    ));
}

#[test]
fn status_reports_a_down_node_as_unreachable() {
    let mut cluster = FakeCluster::start(4);
    cluster.stop(2);
    let client = cluster.client(DEADLINE);
    wait_until("a dial to node 2 failed", || {
        client.links()[2].dial_failures >= 1
    });
    let reports = client.status().unwrap();
    assert_eq!(reports.len(), 4);
    for r in &reports {
        if r.node == NodeId(2) {
            let why = r.status.as_ref().unwrap_err();
            assert!(why.starts_with("unreachable: connect"), "{why}");
        } else {
            let s = r.status.as_ref().unwrap();
            assert_eq!(s.node_id, r.node.0);
        }
    }
    // Writes still commit with one node down.
    client.put(b"k", b"v").unwrap();
}

#[test]
fn the_client_reconnects_after_a_node_restarts() {
    let mut cluster = FakeCluster::start(4);
    let client = cluster.client(DEADLINE);
    client.put(b"k", b"1").unwrap();
    assert_eq!(client.wait_connected(4, DEADLINE), 4);
    cluster.stop(3);
    wait_until("the client saw node 3 go", || !client.links()[3].connected);
    client.put(b"k", b"2").unwrap();
    cluster.restart(3);
    wait_until("the client reconnected to node 3", || {
        client.links()[3].sessions >= 2
    });
    // Only nodes 2 and 3 answer now: a result needs node 3's reconnected link.
    cluster.set(0, Behaviour::Silent);
    cluster.set(1, Behaviour::Silent);
    let committed = client
        .submit(vec![Op::Put {
            key: b"k".to_vec(),
            value: b"3".to_vec(),
        }])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(committed.agreeing, vec![NodeId(2), NodeId(3)]);
}

#[test]
fn garbage_from_a_node_disconnects_it_and_is_counted() {
    let cluster = FakeCluster::start(4);
    cluster.set(0, Behaviour::Garbage);
    let client = cluster.client(DEADLINE);
    for i in 0..5u8 {
        client.put(&[i], b"v").unwrap();
    }
    wait_until("garbage counted", || client.links()[0].garbage_frames >= 1);
    let link = &client.links()[0];
    assert!(link.last_error.contains("garbage"), "{link:?}");
    // The node behaves again: the link is redialled and used.
    cluster.set(0, Behaviour::Honest);
    cluster.set(1, Behaviour::Silent);
    cluster.set(2, Behaviour::Silent);
    let committed = client
        .submit(vec![Op::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(committed.agreeing, vec![NodeId(0), NodeId(3)]);
}

#[test]
fn an_unreachable_cluster_says_so() {
    let mut cluster = FakeCluster::start(4);
    for i in 0..4 {
        cluster.stop(i);
    }
    let client = cluster.client(Duration::from_millis(800));
    let err = client.put(b"k", b"v").unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("cluster unreachable: node0 no answer"),
        "{text}"
    );
    let reports = client.status().unwrap();
    assert!(reports.iter().all(|r| r.status.is_err()));
}

#[test]
fn a_node_with_the_wrong_noise_key_is_refused() {
    let cluster = FakeCluster::start(4);
    let mut endpoints = cluster.endpoints();
    endpoints.members[1].noise_public_key = bftd::net::generate_static_keypair().unwrap().public;
    let client = bftd::client::Client::start(endpoints, support::test_options(DEADLINE)).unwrap();
    wait_until("node 1's key was checked", || {
        client.links()[1]
            .last_error
            .contains("proved another noise key")
    });
    assert_eq!(client.links()[1].sessions, 0);
    client.put(b"k", b"v").unwrap();
}

#[test]
fn many_requests_pipeline_from_many_threads_and_apply_once() {
    let cluster = FakeCluster::start(4);
    let mut options = support::test_options(DEADLINE);
    options.in_flight_max = 64;
    let client = bftd::client::Client::start(cluster.endpoints(), options).unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let tickets: Vec<_> = (0..250u32)
                    .map(|i| {
                        let key = format!("{t}/{i}").into_bytes();
                        client
                            .submit(vec![Op::Put {
                                key,
                                value: vec![t],
                            }])
                            .unwrap()
                    })
                    .collect();
                tickets
                    .into_iter()
                    .map(|tk| tk.wait().unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let seqs: HashSet<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(seqs.len(), 1000, "every request got its own seq");
    assert_eq!(
        cluster.executed(),
        1000,
        "each request applied exactly once"
    );
    assert_eq!(client.range(b"", None, 1000).unwrap().entries.len(), 1000);
}

#[test]
fn refusals_are_reported_per_node() {
    let cluster = FakeCluster::start(4);
    cluster.set(0, Behaviour::Busy);
    cluster.set(1, Behaviour::NotAuthorised);
    cluster.set(2, Behaviour::Silent);
    cluster.set(3, Behaviour::Silent);
    let client = cluster.client(Duration::from_secs(3));
    assert_eq!(client.wait_connected(4, DEADLINE), 4);
    let err = client.put(b"k", b"v").unwrap_err();
    let ClientError::Timeout { answers, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(answers[0].said, Said::Refused(Refusal::Busy));
    assert_eq!(answers[1].said, Said::Refused(Refusal::NotAuthorised));
}
