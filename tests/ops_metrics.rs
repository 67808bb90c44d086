//! Operations: the `[node] metrics_addr` listener of real `bftd` processes. A 4-node cluster
//! commits a few requests; then node 0's `/metrics` shows them (committed height, per-peer
//! frames, accepted requests, commit-latency and fsync histograms), `/health` answers 200 with
//! a JSON body, and bad HTTP gets 400/404/405/431 without hurting the listener. With only
//! one node running, `/health` is 503 and says why.

#[path = "cluster_support.rs"]
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

/// A testnet whose node `i` serves metrics on `127.0.0.1:(metrics_base + i)`.
fn testnet_with_metrics(n: usize) -> (Testnet, u16) {
    let net = Testnet::new(n, "", "");
    let metrics_base = free_port_range(n);
    for i in 0..n {
        let path = net.config(i);
        let text = std::fs::read_to_string(&path).expect("read config");
        let text = text.replace(
            "[node]\n",
            &format!(
                "[node]\nmetrics_addr = \"127.0.0.1:{}\"\n",
                metrics_base + i as u16
            ),
        );
        std::fs::write(&path, text).expect("write config");
    }
    (net, metrics_base)
}

fn metrics_addr(base: u16, i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], base + i as u16))
}

/// Sends `raw` and returns (status code, body) of the reply.
fn http(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (431) and close before it read everything we send.
    let _ = s.write_all(raw);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let code = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// `name{labels} value` lines into a map (the key keeps the labels).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("metric {key} missing"))
}

#[test]
fn metrics_and_health_of_a_committing_cluster() {
    let (net, base) = testnet_with_metrics(4);
    let procs: Vec<NodeProc> = (0..4).map(|i| NodeProc::start(&net, i)).collect();
    // Every node must get every request, so each times it (commit latency counts arrivals).
    wait_for("every node answers status", DEADLINE, || {
        (0..4).all(|i| status_of(&net, i).is_some())
    });
    let mut clients = AllNodes::connect(&net, 1);
    for seq in 1..=5 {
        clients.submit(seq, &[put(&format!("k{seq}"), "v")]);
    }
    let addr = metrics_addr(base, 0);
    let mut m = HashMap::new();
    // Node 0 times a commit only if the client's copy reached it before it applied the block
    // (otherwise it answers from its reply cache, untimed). On a busy machine another leader
    // can order all five first, so keep sending fresh requests until one is timed.
    let mut seq = 5;
    wait_for("node 0's metrics show the commits", DEADLINE, || {
        let (code, body) = get(addr, "/metrics");
        assert_eq!(code, 200);
        m = parse_metrics(&body);
        // The consensus thread publishes the core's counters every 50 ms: wait for them too.
        let timed = value(&m, "bftd_commit_latency_seconds_count") >= 1.0;
        let committed = value(&m, "bftd_applied_height") >= 1.0
            && value(&m, "bftd_requests_committed_total") >= 5.0;
        if committed && !timed {
            seq += 1;
            clients.submit(seq, &[put(&format!("k{seq}"), "v")]);
        }
        committed && timed
    });
    assert!(value(&m, "bftd_committed_height") >= 1.0);
    assert!(value(&m, "bftd_round") >= 1.0);
    assert!(value(&m, "bftd_client_requests_total{result=\"accepted\"}") >= 5.0);
    assert!(value(&m, "bftd_requests_committed_total") >= 5.0);
    for peer in 1..4 {
        assert!(
            value(
                &m,
                &format!("bftd_peer_received_frames_total{{peer=\"{peer}\"}}")
            ) > 0.0
        );
        assert!(
            value(
                &m,
                &format!("bftd_peer_sent_bytes_total{{peer=\"{peer}\"}}")
            ) > 0.0
        );
        assert_eq!(
            value(
                &m,
                &format!("bftd_peer_invalid_signatures_total{{peer=\"{peer}\"}}")
            ),
            0.0
        );
    }
    assert!(
        !m.contains_key("bftd_peer_received_frames_total{peer=\"0\"}"),
        "not itself"
    );
    assert!(value(&m, "bftd_wal_fsync_seconds_count{engine=\"consensus\"}") > 0.0);
    assert!(value(&m, "bftd_wal_fsync_seconds_count{engine=\"state\"}") > 0.0);
    assert!(value(&m, "bftd_qc_formation_seconds_count") > 0.0);
    assert_eq!(value(&m, "bftd_rejected_total{reason=\"garbage\"}"), 0.0);
    let latency_count = value(&m, "bftd_commit_latency_seconds_count");
    assert_eq!(
        value(&m, "bftd_commit_latency_seconds_bucket{le=\"+Inf\"}"),
        latency_count
    );

    let mut health = (0, String::new());
    wait_for("node 0 healthy", DEADLINE, || {
        health = get(addr, "/health");
        health.0 == 200
    });
    assert!(health.1.contains("\"status\":\"ok\""), "{}", health.1);
    assert!(health.1.contains("\"reasons\":[]"), "{}", health.1);

    bad_requests_are_answered(addr);
    drop(procs);
}

fn bad_requests_are_answered(addr: SocketAddr) {
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(addr, b"\x00\x01garbage\r\n\r\n").0, 400);
    assert_eq!(http(addr, b"GET /metrics\r\n\r\n").0, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    assert_eq!(http(addr, huge.as_bytes()).0, 431);
    // A client that connects and says nothing costs the listener its deadline, no more.
    let idle = TcpStream::connect(addr).expect("connect");
    assert_eq!(
        get(addr, "/metrics?x=1").0,
        200,
        "still serving after all that"
    );
    drop(idle);
}

#[test]
fn health_is_503_and_says_why_without_a_quorum() {
    let (net, base) = testnet_with_metrics(4);
    let _node = NodeProc::start(&net, 0);
    let addr = metrics_addr(base, 0);
    wait_for("node 0's metrics listener", DEADLINE, || {
        TcpStream::connect(addr).is_ok()
    });
    let (code, body) = get(addr, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"status\":\"unhealthy\""), "{body}");
    assert!(body.contains("heard from 0 peers"), "{body}");
}
