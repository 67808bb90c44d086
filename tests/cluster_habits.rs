//! `bftctl` as an etcdctl user would drive it, against real `bftd` processes: errors that say
//! what happened and come at once, values from files and stdin, raw values for scripts,
//! prefixes, pagination past the 1000-key cap with a cursor, and one atomic range delete.

#[path = "cluster_support.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Generous: each "fails fast" case takes well under a second; the request timeout is 10 s.
const FAST: Duration = Duration::from_secs(5);

fn bftctl(config: &Path, args: &[&str]) -> Output {
    bftctl_in(config, args, None)
}

fn bftctl_in(config: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bftctl");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).expect("write bftctl's stdin");
    }
    child.wait_with_output().expect("bftctl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "bftctl failed: {}", stderr(o));
    stdout(o)
}

/// A copy of the cluster's `client.toml` with `edit` applied, next to it (so the relative key
/// paths still resolve).
fn client_variant(net: &Testnet, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(net.client_config()).expect("read client.toml");
    let path = net.dir.path().join(name);
    std::fs::write(&path, edit(&text)).expect("write client variant");
    path
}

/// Runs `bftctl` and checks that it fails with status 1 within [`FAST`]; returns stderr.
fn fails_fast(config: &Path, args: &[&str]) -> String {
    let started = Instant::now();
    let out = bftctl(config, args);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    assert!(took < FAST, "{args:?} took {took:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn a_cluster_that_is_not_running_fails_at_once() {
    let net = Testnet::new(4, "", "");
    let err = fails_fast(&net.client_config(), &["put", "k", "v"]);
    assert!(err.starts_with("bftctl: cluster unreachable"), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    let err = fails_fast(&net.client_config(), &["get", "k", "--stale", "--json"]);
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn errors_say_what_happened_and_come_fast() {
    let net = Testnet::new(4, "round_timeout_base_ms = 500", "");
    let _procs = start_all(&net);
    let config = net.client_config();
    ok(&bftctl(&config, &["put", "k", "v"]));

    // A client key the nodes do not allow: "not authorised", not a 10 s timeout.
    let other = tempfile::tempdir().expect("tempdir");
    let made = Command::new(bftd_bin())
        .args(["testnet", "--force", "--dir"])
        .arg(other.path())
        .stdout(Stdio::null())
        .status()
        .expect("bftd testnet");
    assert!(made.success());
    let stranger = client_variant(&net, "stranger.toml", |t| {
        let keys = other.path().display();
        t.replace(
            "signing_key_path = \"client.signing.key\"",
            &format!("signing_key_path = \"{keys}/client.signing.key\""),
        )
        .replace(
            "noise_key_path = \"client.noise.key\"",
            &format!("noise_key_path = \"{keys}/client.noise.key\""),
        )
    });
    let err = fails_fast(&stranger, &["put", "k", "v"]);
    assert!(err.starts_with("bftctl: not authorised"), "{err}");
    assert!(err.contains("allow-list"), "{err}");
    // Said by the nodes (a `LinkRefused` frame), not inferred from closed sessions.
    assert!(err.contains("refused this client's noise key"), "{err}");
    // A node logs the refused key once, however often the client retried within a minute
    // (which nodes the client reached before it gave up depends on timing: any will do).
    let refused = "net: refused a link with noise key ";
    let log = |i: usize| std::fs::read_to_string(net.log_path(i)).unwrap_or_default();
    let logged_once = |line: &str| {
        let counts: Vec<usize> = (0..4).map(|i| log(i).matches(line).count()).collect();
        assert!(counts.iter().all(|c| *c <= 1), "{line}: {counts:?}");
        counts.contains(&1)
    };
    wait_until("a node logs the refused key", || logged_once(refused));
    let _ = fails_fast(&stranger, &["get", "k"]);
    assert!(logged_once(refused));
    assert!((0..4).any(|i| log(i).contains("client's noise_public_key in [clients] allow")));
    // The node says so before it closes: one `LinkRefused` frame right after the handshake.
    let stranger_cfg = bftd::config::ClientConfig::load(&stranger).expect("stranger.toml");
    let mut raw = RawClient::connect_with(stranger_cfg, net.addr(0)).expect("handshake");
    match raw.recv() {
        Ok(bftd::wire::NodeFrame::LinkRefused { reason }) => {
            assert_eq!(reason, bftd::wire::Refusal::NotAuthorised)
        }
        other => panic!("expected a LinkRefused frame, got {other:?}"),
    }
    assert!(raw.recv().is_err(), "and the link is closed");
    // An allowed noise key with a signing key outside the allow-list: the link stands, each
    // request is refused, and each node logs the signing key once a minute at most.
    let signer = client_variant(&net, "signer.toml", |t| {
        let keys = other.path().display();
        t.replace(
            "signing_key_path = \"client.signing.key\"",
            &format!("signing_key_path = \"{keys}/client.signing.key\""),
        )
    });
    let err = fails_fast(&signer, &["put", "k", "v"]);
    assert!(err.starts_with("bftctl: not authorised"), "{err}");
    let refused = "refused a request signed by client key ";
    wait_until("a node logs the refused signing key", || {
        logged_once(refused)
    });
    let _ = fails_fast(&signer, &["put", "k", "w"]);
    assert!(logged_once(refused));

    // Nodes of another cluster (another name, so another prologue): said so, at once.
    let foreign = client_variant(&net, "foreign.toml", |t| {
        t.replace("cluster_name = \"testnet\"", "cluster_name = \"elsewhere\"")
    });
    let err = fails_fast(&foreign, &["get", "k"]);
    assert!(err.starts_with("bftctl: wrong cluster"), "{err}");
    assert!(err.contains("belongs to another cluster"), "{err}");

    // f = 0 with 4 members would accept one node's word: refused with the fix in the message.
    let weak = client_variant(&net, "weak.toml", |t| t.replace("f = 1\n", "f = 0\n"));
    let err = fails_fast(&weak, &["get", "k"]);
    assert!(err.contains("set f = 1"), "{err}");

    // Limits as sentences with the limit in them; nothing is sent.
    let long_key = "k".repeat(5000);
    let err = fails_fast(&config, &["put", &long_key, "v"]);
    assert!(err.contains("limit of 4096 bytes"), "{err}");
    let err = fails_fast(&config, &["--json", "get", &long_key]);
    assert!(err.contains("limit of 4096 bytes"), "{err}");

    // Usage mistakes exit 2, empty keys included.
    for args in [
        &["put", "", "v"][..],
        &["get", ""],
        &["del", "", "--prefix"],
        &["put", "k"],
        &["get", "k", "--keys-only"],
        &["status", "--timeout-ms", "0"],
        &["frob"],
    ] {
        let out = bftctl(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }

    // A reader that goes away ('bftctl ... | head') ends the output quietly, no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(&config)
        .args(["status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bftctl");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("bftctl runs");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn values_from_files_and_stdin_and_raw_values_out() {
    let net = Testnet::new(4, "round_timeout_base_ms = 500", "");
    let _procs = start_all(&net);
    let config = net.client_config();
    let dir = tempfile::tempdir().expect("tempdir");

    // A value of about 1 MiB, not UTF-8, from a file: stored and read back byte for byte.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).expect("write value file");
    let put = ok(&bftctl(
        &config,
        &[
            "--json",
            "put",
            "blob",
            "--file",
            file.to_str().expect("utf-8 path"),
        ],
    ));
    assert!(put.contains(r#""value_bytes":1000000"#), "{put}");
    let got = bftctl(&config, &["get", "blob", "--print-value-only"]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(got.stdout == big, "the raw value differs from the file");

    // Over the value limit: a clear error naming it, before anything is sent.
    let huge = dir.path().join("huge.bin");
    std::fs::write(&huge, vec![1u8; (1 << 20) + 1]).expect("write huge file");
    let err = fails_fast(
        &config,
        &["put", "x", "--file", huge.to_str().expect("utf-8")],
    );
    assert!(err.contains("limit of 1048576 bytes"), "{err}");
    // Exactly 1 MiB of value does not fit one request with its key and framing: said so.
    let err = stderr(&bftctl_in(
        &config,
        &["put", "x", "-"],
        Some(&vec![2u8; 1 << 20]),
    ));
    assert!(
        err.contains("over the nodes' limit of 1048576 bytes"),
        "{err}"
    );

    // From stdin, text and JSON out.
    let put = ok(&bftctl_in(
        &config,
        &["put", "greeting", "-"],
        Some(b"hello\nworld"),
    ));
    assert_eq!(put.trim(), "OK (version 1)");
    let raw = bftctl(&config, &["get", "greeting", "--print-value-only"]);
    assert_eq!(raw.stdout, b"hello\nworld");
    let json = ok(&bftctl(&config, &["get", "greeting", "--json"]));
    assert!(
        json.contains(r#""value":"hello\nworld","version":1"#),
        "{json}"
    );
    // A missing key prints nothing and fails, so a script can tell it from an empty value.
    let missing = bftctl(&config, &["get", "nope", "--print-value-only"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert!(
        stderr(&missing).contains("nope: not found"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn prefixes_pages_past_the_cap_and_one_atomic_range_delete() {
    let net = Testnet::new(4, "round_timeout_base_ms = 500", "");
    let _procs = start_all(&net);
    let config = net.client_config();
    let loaded = bftd::config::ClientConfig::load(&config).expect("client config");
    let client = bftd::client::Client::connect(&loaded, bftd::client::ClientOptions::default())
        .expect("client");
    let keys: Vec<String> = (0..1200).map(|i| format!("p/{i:04}")).collect();
    for chunk in keys.chunks(200) {
        let ops = chunk
            .iter()
            .map(|k| bftd::api::Op::Put {
                key: k.as_bytes().to_vec(),
                value: b"v".to_vec(),
            })
            .collect();
        client.batch(ops).expect("batch of puts");
    }
    client.put(b"q/1", b"other").expect("put q/1");
    client.put(b"p", b"not under p/").expect("put p");

    // --limit above the 1000 cap pages through, and the prefix stops at its end.
    let listed = ok(&bftctl(
        &config,
        &["get", "p/", "--prefix", "--keys-only", "--limit", "5000"],
    ));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1200, "every p/ key, nothing else");
    assert_eq!((lines[0], lines[1199]), ("p/0000", "p/1199"));
    let json = ok(&bftctl(
        &config,
        &["--json", "get", "p/", "--prefix", "--limit", "1500"],
    ));
    assert!(json.contains(r#""count":1200,"more":false"#), "{json}");

    // A cut listing prints its cursor, and --after resumes from it.
    let page = ok(&bftctl(
        &config,
        &["--json", "range", "p/", "--limit", "5", "--keys-only"],
    ));
    assert!(
        page.contains(r#""more":true,"next_after":"p/0004""#),
        "{page}"
    );
    let text = ok(&bftctl(&config, &["range", "p/", "--limit", "2"]));
    assert!(text.contains("continue with --after 'p/0001'"), "{text}");
    let next = ok(&bftctl(
        &config,
        &[
            "range",
            "p/",
            "--after",
            "p/0004",
            "--limit",
            "2",
            "--keys-only",
        ],
    ));
    assert_eq!(next.lines().collect::<Vec<_>>(), vec!["p/0005", "p/0006"]);
    let from = ok(&bftctl(
        &config,
        &["get", "q/", "--from-key", "--keys-only"],
    ));
    assert_eq!(from.trim(), "q/1");

    // One delete per 1000 keys, each atomic; the neighbours survive.
    let del = ok(&bftctl(&config, &["del", "p/", "--prefix"]));
    assert_eq!(
        del.trim(),
        "deleted 1200 keys in 2 atomic steps of at most 1000 keys"
    );
    let left = ok(&bftctl(&config, &["get", "p/", "--prefix"]));
    assert_eq!(left.trim(), "(no keys in range)");
    let del = ok(&bftctl(&config, &["--json", "del", "q/", "--prefix"]));
    assert_eq!(del.trim(), r#"{"prefix":"q/","deleted":1,"steps":1}"#);
    assert!(
        client.get(b"p").expect("get p").is_some(),
        "p is not under p/"
    );
}

fn bftd(args: &[&str]) -> Output {
    Command::new(bftd_bin())
        .args(args)
        .output()
        .expect("bftd runs")
}

/// Every file under `dir` with its length and content hash, to show nothing was written.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, [u8; 32])> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.push((path, bytes.len() as u64, *blake3::hash(&bytes).as_bytes()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn inspect_writes_nothing_and_refuses_a_running_node() {
    let net = Testnet::new(4, "round_timeout_base_ms = 500", "");
    let procs = start_all(&net);
    ok(&bftctl(&net.client_config(), &["put", "k", "v"]));
    let data = net.data_dir(0);
    let data_arg = data.to_str().expect("utf-8 path");
    let busy = bftd(&["inspect", "--data-dir", data_arg]);
    assert_eq!(busy.status.code(), Some(1), "{}", stdout(&busy));
    assert!(
        stderr(&busy).contains("in use by a running node"),
        "{}",
        stderr(&busy)
    );
    for p in procs.into_iter().flatten() {
        assert_eq!(p.terminate(), Some(0));
    }
    let before = tree(&data);
    let report = bftd(&["inspect", "--data-dir", data_arg]);
    assert!(
        report.status.success(),
        "{}{}",
        stdout(&report),
        stderr(&report)
    );
    let text = stdout(&report);
    assert!(text.contains("all checksums verified"), "{text}");
    assert!(text.contains("applied height"), "{text}");
    assert_eq!(tree(&data), before, "inspect changed the data dir");
}

#[test]
fn show_keys_prints_the_public_keys_of_key_files() {
    let net = Testnet::new(4, "", "");
    let dir = net.dir.path();
    let signing = dir.join("node2.signing.key");
    let noise = dir.join("node2.noise.key");
    let (s, n) = (
        signing.to_str().expect("utf-8"),
        noise.to_str().expect("utf-8"),
    );
    let client = std::fs::read_to_string(net.client_config()).expect("client.toml");
    let member = &client[client.find("id = 2").expect("member 2")..];
    let text = stdout(&bftd(&["show-keys", s, n]));
    for (i, line) in text.lines().enumerate() {
        let (_, field) = line.split_once(": ").expect("FILE: field = \"hex\"");
        assert!(
            member.contains(field),
            "line {i}: {field} not in member 2 of client.toml"
        );
    }
    assert_eq!(text.lines().count(), 2, "{text}");
    let json = stdout(&bftd(&["show-keys", "--json", n]));
    assert!(
        json.contains(r#""field":"noise_public_key","public_key":""#),
        "{json}"
    );
    // The kind comes from the name or a flag; a bare name is a usage mistake.
    let plain = dir.join("plain.key");
    std::fs::copy(&signing, &plain).expect("copy key");
    let p = plain.to_str().expect("utf-8");
    assert_eq!(bftd(&["show-keys", p]).status.code(), Some(2));
    assert_eq!(bftd(&["show-keys"]).status.code(), Some(2));
    let forced = stdout(&bftd(&["show-keys", "--signing", p]));
    let field = |line: &str| line.split_once(": ").map(|(_, f)| f.trim_end().to_string());
    assert_eq!(field(&forced), text.lines().next().and_then(field));
    assert_eq!(bftd(&["testnet", "--nodes", "0"]).status.code(), Some(2));
}

#[test]
fn testnet_writes_metrics_addrs_and_dev_serves_them_and_keeps_its_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, metrics) = (free_port_range(4), free_port_range(4));
    let (b, m) = (base.to_string(), metrics.to_string());
    let net_dir = dir.path().join("net");
    let out = bftd(&[
        "testnet",
        "--dir",
        net_dir.to_str().expect("utf-8"),
        "--base-port",
        &b,
        "--metrics-base-port",
        &m,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("http://127.0.0.1:{}", metrics + 3)));
    for i in 0..4u16 {
        let cfg = bftd::config::NodeConfig::load(&net_dir.join(format!("node{i}.toml")))
            .expect("node config loads");
        assert_eq!(
            cfg.raw.node.metrics_addr,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], metrics + i)))
        );
    }

    // `bftd dev` serves every node's /metrics and says where; `--lossy 0.5` as the help spells it.
    let dev_dir = dir.path().join("dev");
    let d = dev_dir.to_str().expect("utf-8");
    let child = Command::new(bftd_bin())
        .args([
            "dev",
            "--dir",
            d,
            "--base-port",
            &b,
            "--metrics-base-port",
            &m,
            "--lossy",
            "0.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bftd dev");
    let mut dev = NodeProc { child, index: 0 };
    let lines = {
        let pipe = dev.child.stdout.take().expect("dev stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !seen.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("bftd dev did not come up ({e}): {seen:?}"),
        }
    }
    let text = seen.join("\n");
    let urls: Vec<String> = (0..4)
        .map(|i| format!("http://127.0.0.1:{}", metrics + i))
        .collect();
    assert!(
        text.contains(&format!("metrics:       {}", urls.join(", "))),
        "{text}"
    );
    assert!(
        text.contains("--lossy: node-to-node frames are dropped"),
        "{text}"
    );
    for i in 0..4u16 {
        let body = http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], metrics + i)),
            "/metrics",
        );
        assert!(
            body.starts_with("HTTP/1.") && body.contains(" 200 "),
            "{body}"
        );
        assert!(body.contains("bftd_"), "node {i}: {body}");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "bftd_build_info{version=\"",
        ] {
            assert!(body.contains(&format!("\n{name}")), "node {i} lacks {name}");
        }
    }
    assert_eq!(dev.terminate(), Some(0));

    // The directory keeps its ports: another --base-port is refused with the one it has.
    let other = (base + 10).to_string();
    let out = bftd(&["dev", "--dir", d, "--base-port", &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("use --base-port {base}")),
        "{}",
        stderr(&out)
    );
}

/// One HTTP/1.0 GET; the whole response as text.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read response");
    body
}

/// Whether `line` starts with an RFC 3339 UTC timestamp such as `2026-11-29T17:30:04.123Z`.
fn stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[23] == b'Z'
        && b[..4].iter().all(u8::is_ascii_digit)
}

#[test]
fn logs_have_timestamps_link_and_view_change_lines_and_json_on_request() {
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    let mut procs = start_all(&net);
    let config = net.client_config();
    let log = |i: usize| std::fs::read_to_string(net.log_path(i)).unwrap_or_default();
    wait_until("node 0 logs its links to the others", || {
        (1..4).all(|p| log(0).contains(&format!("net: link to node{p} up")))
    });
    // Node 1 dies before anything is ordered: node 0 says the link is lost, and round 1, which
    // node 1 leads (genesis rounds go round robin), ends in a view change once a request
    // waits. Later rounds need not: the leader schedule leaves out members that stopped
    // signing, so a member killed mid-run may never be picked again.
    if let Some(p) = procs[1].take() {
        p.kill();
    }
    wait_until("node 0 logs the lost link and a view change", || {
        let _ = bftctl(&config, &["--timeout-ms", "3000", "put", "k", "again"]);
        let text = log(0);
        text.contains("net: link to node1 lost") && text.contains("view change: round ")
    });
    let text = log(0);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().all(|l| stamped(l)),
        "every line has a timestamp: {text}"
    );
    assert!(!text.contains("Some("), "no Debug dumps: {text}");

    // BFTD_LOG_FORMAT=json: one JSON object per line.
    let lone = Testnet::new(1, "", "");
    let mut child = Command::new(bftd_bin())
        .arg("--config")
        .arg(lone.config(0))
        .env("RUST_LOG", "info")
        .env("BFTD_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bftd");
    let stderr = child.stderr.take().expect("stderr");
    let first = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stderr)
            .read_line(&mut line)
            .expect("read a log line");
        line
    };
    let _ = child.kill();
    let _ = child.wait();
    let first = first.trim_end();
    assert!(
        first.starts_with("{\"ts\":\"") && first.ends_with("\"}"),
        "{first}"
    );
    assert!(
        first.contains("\"level\":\"INFO\",\"target\":\"bftd"),
        "{first}"
    );
    assert!(stamped(&first[7..]), "{first}");
}

#[test]
fn quorum_lost_and_regained_are_logged_once_each_and_status_shows_certified_roots() {
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    let mut procs = start_all(&net);
    let config = net.client_config();
    let log = |i: usize| std::fs::read_to_string(net.log_path(i)).unwrap_or_default();
    wait_until("node 0 reaches a quorum", || {
        log(0).contains("quorum reached: ")
    });
    for i in 1..=3 {
        ok(&bftctl(&config, &["put", &format!("q{i}"), "v"]));
    }
    // Status: each root next to its own height, the certified one as the chain certified it.
    let mut json = String::new();
    wait_until("node 0 reports a certified root", || {
        json = ok(&bftctl(&config, &["status", "--json"]));
        !json.contains(r#""certified_height":0"#)
    });
    assert!(json.contains(r#""applied_root":""#), "{json}");
    assert!(json.contains(r#""certified_root":""#), "{json}");
    let text = ok(&bftctl(&config, &["status"]));
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("applied root") && h.contains("certified root")),
        "{text}"
    );

    // Two of four die (SIGKILL): the survivors cannot form a quorum of 3, and say so once.
    for i in [2, 3] {
        if let Some(p) = procs[i].take() {
            p.kill();
        }
    }
    wait_until("node 0 logs the quorum lost", || {
        log(0).contains("quorum lost: ")
    });
    let text = log(0);
    assert!(
        text.contains(
            "quorum lost: 2 of 4 members reachable (this node included), a quorum needs 3"
        ),
        "{text}"
    );
    assert!(text.contains("(unreachable: node2, node3)"), "{text}");
    // One comes back: quorum regained, once.
    procs[2] = Some(NodeProc::start(&net, 2));
    wait_until("node 0 logs the quorum regained", || {
        log(0).contains("quorum regained: 3 of 4 members reachable")
    });
    let text = log(0);
    assert_eq!(text.matches("quorum lost: ").count(), 1, "{text}");
    assert_eq!(text.matches("quorum regained: ").count(), 1, "{text}");
    assert!(!text.contains("Some("), "no Debug dumps: {text}");
}
