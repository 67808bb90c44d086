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

/// A testnet whose node `i` serves metrics on `127.0.0.1:(metrics_base + i)`; `node` are extra
/// lines for the `[node]` table.
fn testnet_with_metrics(n: usize, node: &str) -> (Testnet, u16) {
    let net = Testnet::new(n, "", node);
    let metrics_base = serve_metrics(&net);
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
    // A snapshot every 2 blocks, so the snapshot gauges have one to show.
    let (net, base) = testnet_with_metrics(4, "snapshot_interval_blocks = 2");
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

    storage_gauges_follow_the_state(&mut clients, addr, &mut seq);
    let (_, text) = get(addr, "/metrics");
    every_dashboard_metric_is_exported(&text);

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
    let (net, base) = testnet_with_metrics(4, "");
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

/// Every put of the test was acknowledged by `f + 1` nodes, so node 0 applies them all: its
/// key count is then exactly the number of keys written, its stores have bytes on disk, a
/// snapshot was saved (every 2 blocks), and the chain certified a state root.
fn storage_gauges_follow_the_state(clients: &mut AllNodes, addr: SocketAddr, seq: &mut u64) {
    let mut m = HashMap::new();
    wait_for("node 0's storage gauges", DEADLINE, || {
        m = parse_metrics(&get(addr, "/metrics").1);
        let ready = value(&m, "bftd_state_keys") == *seq as f64
            && value(&m, "bftd_snapshot_height") >= 2.0
            && value(&m, "bftd_certified_height") >= 1.0
            && value(&m, "bftd_storage_bytes{engine=\"snapshots\"}") > 0.0;
        let progressed =
            value(&m, "bftd_snapshot_height") >= 2.0 && value(&m, "bftd_certified_height") >= 1.0;
        if !progressed {
            // Blocks (and the roots they certify) come with requests: more until they did.
            *seq += 1;
            clients.submit(*seq, &[put(&format!("k{seq}"), "v")]);
        }
        ready
    });
    assert!(value(&m, "bftd_storage_bytes{engine=\"state\"}") > 0.0);
    assert!(value(&m, "bftd_storage_bytes{engine=\"consensus\"}") > 0.0);
    let age = value(&m, "bftd_snapshot_age_seconds");
    assert!((0.0..600.0).contains(&age), "snapshot age {age}");
    assert!(value(&m, "bftd_certified_height") <= value(&m, "bftd_applied_height") + 64.0);
    for queue in ["verify", "consensus", "storage"] {
        value(&m, &format!("bftd_queue_depth{{queue=\"{queue}\"}}"));
    }
    // Overwriting a key adds none; deleting one takes one away.
    let before = value(&m, "bftd_state_keys");
    *seq += 1;
    clients.submit(*seq, &[put("k1", "again")]);
    *seq += 1;
    clients.submit(
        *seq,
        &[bftd::kv::Op::Delete {
            key: b"k2".to_vec(),
        }],
    );
    wait_for("node 0 counts the delete", DEADLINE, || {
        m = parse_metrics(&get(addr, "/metrics").1);
        value(&m, "bftd_state_keys") == before - 1.0
    });
}

/// The dashboard in tools/grafana/bftd.json names only metrics a node exports: every metric
/// name in every panel expression is a series in node 0's scrape (a `_bucket`, `_sum` or
/// `_count` name also needs its base declared a histogram).
fn every_dashboard_metric_is_exported(scrape: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/grafana/bftd.json");
    let dashboard = std::fs::read_to_string(path).expect("read the dashboard");
    let exprs = json_string_values(&dashboard, "expr");
    assert!(exprs.len() >= 16, "panel expressions found: {exprs:?}");
    let series: std::collections::HashSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let histograms: std::collections::HashSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();
    let mut checked = std::collections::BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(
                series.contains(name.as_str()),
                "{name} (in {expr}) is not exported"
            );
            if let Some(base) = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
            {
                assert!(
                    histograms.contains(base),
                    "{name}: {base} is not a histogram"
                );
            }
            checked.insert(name);
        }
    }
    for wanted in [
        "bftd_state_keys",
        "bftd_storage_bytes",
        "bftd_certified_height",
        "bftd_state_diverged",
        "bftd_queue_depth",
        "bftd_commit_latency_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(checked.contains(wanted), "the dashboard shows no {wanted}");
    }
}

/// The values of every `"key": "..."` string member in a JSON text (escapes decoded).
fn json_string_values(json: &str, key: &str) -> Vec<String> {
    let needle = format!("\"{key}\"");
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find(&needle) {
        rest = rest[at + needle.len()..].trim_start();
        let Some(after_colon) = rest.strip_prefix(':') else {
            continue;
        };
        let Some(body) = after_colon.trim_start().strip_prefix('"') else {
            continue;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(e) => value.push(e), // \" \\ \/ (no \u in our dashboard)
                    None => break,
                },
                c => value.push(c),
            }
        }
        out.push(value);
        rest = &body[end..];
    }
    out
}

/// Metric names in a PromQL expression: the identifiers that are not functions (followed by
/// `(`), aggregations or keywords, label names or values (inside `{}`), grouping labels
/// (`by (..)`, `without (..)`, `on (..)`, `ignoring (..)`, `group_left (..)`), durations
/// (inside `[]`), strings, numbers or Grafana variables (`$x`, `${x}`, `$__rate_interval`).
fn metric_names(expr: &str) -> Vec<String> {
    const NOT_METRICS: [&str; 20] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let (mut braces, mut brackets, mut parens) = (0usize, 0usize, 0usize);
    let mut grouping_at: Option<usize> = None;
    let mut grouping_next = false;
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '"' | '\'' | '`' => {
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '(' => {
                parens += 1;
                if std::mem::take(&mut grouping_next) {
                    grouping_at = Some(parens);
                }
            }
            ')' => {
                if grouping_at == Some(parens) {
                    grouping_at = None;
                }
                parens = parens.saturating_sub(1);
            }
            '$' => {
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i - 1;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if braces > 0 || brackets > 0 || grouping_at.is_some() {
                    continue;
                }
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    grouping_next = true;
                    continue;
                }
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if NOT_METRICS.contains(&lower.as_str()) || next == Some(&'(') {
                    continue;
                }
                names.push(word);
            }
            _ => {}
        }
    }
    names
}

#[test]
fn promql_metric_names_are_told_from_functions_labels_and_durations() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, engine) (rate(bftd_wal_fsync_seconds_bucket\
             {instance=~\"$instance\", engine!=\"x y\"}[$__rate_interval])))"
        ),
        ["bftd_wal_fsync_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "max by (instance) (a_total) / on (instance) group_left (job) b offset 5m > 0.5"
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        metric_names("rate(x_sum[1m]) / rate(x_count{a=\"b\"}[${win}]) and sum(c) without (d)"),
        ["x_sum", "x_count", "c"]
    );
    let values = json_string_values(r#"{"expr": "a{b=\"c\"}", "x": 1, "expr":"d"}"#, "expr");
    assert_eq!(values, ["a{b=\"c\"}", "d"]);
}
