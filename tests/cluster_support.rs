//! Helpers for the tests that run whole clusters: a testnet directory on free 127.0.0.1
//! ports, `bftd` processes to start, kill, stop and continue, a minimal raw client speaking
//! the client wire protocol, and waiting for conditions with generous deadlines.
//!
//! Included by the cluster test files with `#[path]`; compiled alone it holds no tests.

#![allow(dead_code)]

#[path = "support/mod.rs"]
mod common;
#[allow(unused_imports)] // each test binary uses a different part
pub use common::{DEADLINE, free_port_range, wait_for, wait_until};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bftd::config::{ClientConfig, LoadedClientConfig};
use bftd::kv::{Op, Reply, decode_reply, encode_ops};
use bftd::net::frame::FrameDecoder;
use bftd::net::noise::{HANDSHAKE_MESSAGE_BYTES_MAX, Handshake, NoiseLink, sealed_len};
use bftd::types::ClientRequest;
use bftd::wire::client::{decode_node_frame, encode_client_frame};
use bftd::wire::{ClientFrame, NodeFrame, NodeStatus};

pub fn bftd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bftd"))
}

/// A testnet directory written by `bftd testnet`.
pub struct Testnet {
    pub dir: tempfile::TempDir,
    pub nodes: usize,
    pub base_port: u16,
}

impl Testnet {
    /// Writes an `n`-node testnet; `consensus` and `node` are extra TOML lines for those
    /// tables of every node config.
    pub fn new(n: usize, consensus: &str, node: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base_port = free_port_range(n);
        let status = Command::new(bftd_bin())
            .args([
                "testnet",
                "--nodes",
                &n.to_string(),
                "--base-port",
                &base_port.to_string(),
                // Tests that want metrics choose free ports themselves (see ops_metrics.rs).
                "--metrics-base-port",
                "0",
                "--force",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("run bftd testnet");
        assert!(status.success(), "bftd testnet failed");
        for i in 0..n {
            let path = dir.path().join(format!("node{i}.toml"));
            let text = std::fs::read_to_string(&path).expect("read node config");
            let text = text
                .replace("[consensus]\n", &format!("[consensus]\n{consensus}\n"))
                .replace(
                    "[node]\n",
                    &format!("[node]\nverifier_threads = 1\n{node}\n"),
                );
            std::fs::write(&path, text).expect("write node config");
        }
        Self {
            dir,
            nodes: n,
            base_port,
        }
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.toml"))
    }

    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + i as u16))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("data").join(format!("node{i}"))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }
}

/// One `bftd --config` process. Killed (SIGKILL) when dropped.
pub struct NodeProc {
    pub child: Child,
    pub index: usize,
}

impl NodeProc {
    pub fn start(net: &Testnet, i: usize) -> Self {
        Self::start_with(net, i, &bftd_bin())
    }

    /// Starts node `i` from the binary `bin` (e.g. the test-only `bftd-byzantine`).
    pub fn start_with(net: &Testnet, i: usize, bin: &std::path::Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(net.log_path(i))
            .expect("open node log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(net.config(i))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn bftd");
        Self { child, index: i }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; returns its status code.
    pub fn terminate(mut self) -> Option<i32> {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking client of one node: Noise handshake, then client frames. For tests
/// that need to see exactly what one node answers.
pub struct RawClient {
    stream: TcpStream,
    link: NoiseLink,
    decoder: FrameDecoder,
    pub cfg: LoadedClientConfig,
    pending: Vec<u8>,
}

impl RawClient {
    /// Connects to node `i` of `net` with the testnet's client keys.
    pub fn connect(net: &Testnet, i: usize) -> std::io::Result<Self> {
        let cfg = ClientConfig::load(&net.client_config()).map_err(std::io::Error::other)?;
        Self::connect_with(cfg, net.addr(i))
    }

    pub fn connect_with(cfg: LoadedClientConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut hs = Handshake::initiator(cfg.noise_secret(), &cfg.cluster.0)
            .map_err(std::io::Error::other)?;
        let mut decoder = FrameDecoder::new(HANDSHAKE_MESSAGE_BYTES_MAX);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        hs.write_message(&mut out).map_err(std::io::Error::other)?;
        stream.write_all(&out)?;
        let msg2 = read_frame(&mut stream, &mut decoder, &mut pending)?;
        hs.read_message(&msg2).map_err(std::io::Error::other)?;
        out.clear();
        hs.write_message(&mut out).map_err(std::io::Error::other)?;
        stream.write_all(&out)?;
        decoder.set_limit_bytes(sealed_len(64 << 20));
        let link = hs.into_link().map_err(std::io::Error::other)?;
        Ok(Self {
            stream,
            link,
            decoder,
            cfg,
            pending,
        })
    }

    pub fn send(&mut self, frame: &ClientFrame) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.link
            .seal(&encode_client_frame(frame), &mut out)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&out)
    }

    pub fn recv(&mut self) -> std::io::Result<NodeFrame> {
        let frame = read_frame(&mut self.stream, &mut self.decoder, &mut self.pending)?;
        let plain = self.link.open(&frame).map_err(std::io::Error::other)?;
        decode_node_frame(&plain).map_err(std::io::Error::other)
    }

    /// A signed request carrying `ops`, with sequence number `seq` (of session 1: every raw
    /// client of a test shares it, as a retrying process would).
    pub fn request(&self, seq: u64, ops: &[Op]) -> ClientRequest {
        self.cfg.signer().sign_request(1, seq, encode_ops(ops))
    }

    /// Submits `ops` as request `seq` and waits for this node's reply to it.
    pub fn submit(&mut self, seq: u64, ops: &[Op]) -> std::io::Result<Reply> {
        let req = self.request(seq, ops);
        self.send(&ClientFrame::Submit(req))?;
        loop {
            match self.recv()? {
                NodeFrame::Reply { seq: s, reply, .. } if s == seq => {
                    return decode_reply(&reply).map_err(std::io::Error::other);
                }
                NodeFrame::Refused { seq: s, reason, .. } if s == seq => {
                    return Err(std::io::Error::other(format!("refused: {reason:?}")));
                }
                _ => {}
            }
        }
    }

    /// This node's own value of `key` (a stale read: no consensus round).
    pub fn stale_get(&mut self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.send(&ClientFrame::StaleGet {
            id: 9,
            key: key.as_bytes().to_vec(),
        })?;
        loop {
            if let NodeFrame::StaleValue { value, .. } = self.recv()? {
                return Ok(value.map(|v| v.value));
            }
        }
    }

    pub fn status(&mut self) -> std::io::Result<NodeStatus> {
        self.send(&ClientFrame::Status { id: 7 })?;
        loop {
            if let NodeFrame::Status { status, .. } = self.recv()? {
                return Ok(status);
            }
        }
    }
}

/// Reads one length-prefixed frame (the transport's framing) from a blocking stream.
fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    pending: &mut Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    loop {
        let mut input: &[u8] = pending;
        let result = decoder.feed(&mut input);
        let consumed = pending.len() - input.len();
        pending.drain(..consumed);
        match result {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
        }
        let mut buf = [0u8; 64 * 1024];
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Status of node `i`, or `None` if it does not answer.
pub fn status_of(net: &Testnet, i: usize) -> Option<NodeStatus> {
    RawClient::connect(net, i).ok()?.status().ok()
}

pub fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

pub fn get(key: &str) -> Op {
    Op::Get {
        key: key.as_bytes().to_vec(),
    }
}

/// Prints the tail of every node's log (for a failing test's output).
pub fn dump_logs(net: &Testnet) {
    for i in 0..net.nodes {
        let text = std::fs::read_to_string(net.log_path(i)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        eprintln!("----- node{i}.log (last 30 lines) -----");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// Connections to every node of a testnet; submits each request to all and waits for `f + 1`
/// identical replies (what the client library does; here to test the nodes on their own).
/// Nodes that are down are skipped and reconnected before each request.
pub struct AllNodes {
    pub clients: Vec<Option<RawClient>>,
    pub f: usize,
    addrs: Vec<SocketAddr>,
    client_config: PathBuf,
}

impl AllNodes {
    pub fn connect(net: &Testnet, f: usize) -> Self {
        let mut all = Self {
            clients: (0..net.nodes).map(|_| None).collect(),
            f,
            addrs: (0..net.nodes).map(|i| net.addr(i)).collect(),
            client_config: net.client_config(),
        };
        all.reconnect();
        all
    }

    fn reconnect(&mut self) {
        for (i, slot) in self.clients.iter_mut().enumerate() {
            if slot.is_none()
                && let Ok(cfg) = ClientConfig::load(&self.client_config)
            {
                *slot = RawClient::connect_with(cfg, self.addrs[i]).ok();
            }
        }
    }

    /// Sends request `seq` to every node and returns the reply `f + 1` nodes agree on.
    pub fn submit(&mut self, seq: u64, ops: &[Op]) -> Reply {
        self.try_submit(seq, ops)
            .unwrap_or_else(|e| panic!("request {seq}: {e}"))
    }

    /// Like `submit`, but an error (no `f + 1` agreement before the nodes' read timeouts)
    /// is returned; retrying with the same `seq` is safe (exactly-once).
    pub fn try_submit(&mut self, seq: u64, ops: &[Op]) -> Result<Reply, String> {
        self.reconnect();
        let Some(req) = self
            .clients
            .iter()
            .flatten()
            .next()
            .map(|c| c.request(seq, ops))
        else {
            return Err("no node is reachable".into());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let mut handles = Vec::new();
        for (i, slot) in self.clients.iter_mut().enumerate() {
            let Some(mut c) = slot.take() else { continue };
            let req = req.clone();
            let tx = tx.clone();
            handles.push(std::thread::spawn(move || {
                let result = (|| -> std::io::Result<Vec<u8>> {
                    c.send(&ClientFrame::Submit(req))?;
                    loop {
                        match c.recv()? {
                            NodeFrame::Reply { seq: s, reply, .. } if s == seq => return Ok(reply),
                            _ => {}
                        }
                    }
                })();
                let ok = result.is_ok();
                let _ = tx.send((i, result));
                (i, ok.then_some(c))
            }));
        }
        drop(tx);
        let mut answers: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        let mut agreed = None;
        let mut errors = Vec::new();
        for (i, result) in rx.iter() {
            match result {
                Ok(bytes) => {
                    let n = answers.entry(bytes.clone()).or_default();
                    *n += 1;
                    if *n > self.f && agreed.is_none() {
                        agreed = Some(bytes);
                    }
                }
                Err(e) => errors.push(format!("node {i}: {e}")),
            }
        }
        for h in handles {
            if let Ok((i, c)) = h.join() {
                self.clients[i] = c;
            }
        }
        match agreed {
            Some(bytes) => decode_reply(&bytes).map_err(|e| e.to_string()),
            None => Err(format!(
                "no f+1 agreement: {} distinct replies, errors: {errors:?}",
                answers.len()
            )),
        }
    }
}

/// Starts every node of `net` as a process and waits until each answers a status request.
pub fn start_all(net: &Testnet) -> Vec<Option<NodeProc>> {
    let procs = (0..net.nodes)
        .map(|i| Some(NodeProc::start(net, i)))
        .collect();
    wait_for("every node answers status", DEADLINE, || {
        (0..net.nodes).all(|i| status_of(net, i).is_some())
    });
    procs
}

impl Drop for Testnet {
    /// A failing test prints the tail of every node's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(self);
        }
    }
}

/// A verified read of `key` from node `i` at a height >= `least`: retried while the node's
/// newest certified root is older, never accepting anything the client's checks reject. No
/// write drives it: the cluster itself goes on until the root of its last write's height is
/// certified.
pub fn verified_at_least(
    client: &bftd::client::Client,
    i: usize,
    key: &str,
    least: u64,
) -> bftd::client::VerifiedValue {
    let options = bftd::client::VerifiedReadOptions {
        node: Some(bftd::types::NodeId(i as u16)),
        min_height: least,
    };
    let mut found = None;
    wait_for(
        &format!("node {i} answers a verified read at height >= {least}"),
        DEADLINE,
        || match client.get_verified_with(key.as_bytes(), &options) {
            Ok(read) => {
                found = Some(read);
                true
            }
            Err(bftd::client::ClientError::Unverified { node, reason }) => {
                panic!("honest {node}'s verified read rejected: {reason}")
            }
            Err(e) => {
                eprintln!("verified read from node {i} not yet: {e}");
                false
            }
        },
    );
    found.expect("set when the wait ended")
}

/// Makes node `i` of `net` serve `/metrics` and `/health` on `127.0.0.1:(base + i)`, with
/// `base` a fresh free port range, recorded in the testnet dir (see [`metrics_base`]).
/// Returns `base`.
pub fn serve_metrics(net: &Testnet) -> u16 {
    let base = free_port_range(net.nodes);
    for i in 0..net.nodes {
        let path = net.config(i);
        let text = std::fs::read_to_string(&path).expect("read node config");
        let text = text.replace(
            "[node]\n",
            &format!("[node]\nmetrics_addr = \"127.0.0.1:{}\"\n", base + i as u16),
        );
        std::fs::write(&path, text).expect("write node config");
    }
    std::fs::write(net.dir.path().join("metrics_base"), base.to_string())
        .expect("write metrics base");
    base
}

/// The metrics port base [`serve_metrics`] chose for `net`.
pub fn metrics_base(net: &Testnet) -> Option<u16> {
    std::fs::read_to_string(net.dir.path().join("metrics_base"))
        .ok()?
        .parse()
        .ok()
}

/// `GET path` on the metrics server at `127.0.0.1:(base + i)`: `(status code, body)`, or
/// `None` if it does not answer.
pub fn metrics_get(base: u16, i: usize, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], base + i as u16));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// The sum of every sample of metric `name` (all label sets) on the metrics server at
/// `127.0.0.1:(base + i)`, or `None` if it does not answer.
pub fn metric_sum(base: u16, i: usize, name: &str) -> Option<f64> {
    let (_, body) = metrics_get(base, i, "/metrics")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Waits until `nodes` report one state digest at one applied height; returns that height.
/// Asked through the test's client: a second connection with the same client key would
/// replace the client's own.
pub fn agree(client: &bftd::client::Client, nodes: &[usize]) -> u64 {
    let mut height = 0;
    wait_for(
        &format!("nodes {nodes:?} report one state digest at one height"),
        DEADLINE,
        || {
            let Ok(reports) = client.status() else {
                return false;
            };
            let s: Vec<_> = nodes
                .iter()
                .filter_map(|&i| reports.get(i)?.status.as_ref().ok())
                .collect();
            let same = s.len() == nodes.len()
                && s.iter().all(|x| {
                    x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
                });
            if same {
                height = s[0].applied_height;
            }
            same
        },
    );
    height
}

/// The library client the cluster tests use: a request waits up to `DEADLINE`, is resent
/// every 200 ms, reconnects fast, and a status query waits 2 s per node (a silent or stopped
/// member never answers).
pub fn library_client(net: &Testnet) -> bftd::client::Client {
    let cfg = ClientConfig::load(&net.client_config()).expect("client config");
    let options = bftd::client::ClientOptions {
        request_timeout: DEADLINE,
        resend_interval: Duration::from_millis(200),
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(500),
        query_timeout: Duration::from_secs(2),
        ..bftd::client::ClientOptions::default()
    };
    bftd::client::Client::connect(&cfg, options).expect("start the client")
}

/// The value the tests write under `key`.
pub fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

/// Runs `bftctl --config CONFIG ARGS...` to completion, stdin closed.
pub fn bftctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("bftctl runs")
}

/// The stdout of a `bftctl` run that must have succeeded (its stderr in the panic otherwise).
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "bftctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The number after `"field":` in a one-line JSON object.
pub fn json_u64(json: &str, field: &str) -> Option<u64> {
    let at = json.find(&format!("\"{field}\":"))? + field.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}
