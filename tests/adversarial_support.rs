//! Helpers for the adversarial cluster tests: editing a testnet's `[limits]` and client
//! allow-list, an honest client load that needs only `f + 1` nodes to answer, hostile remotes
//! (raw bytes, half-finished and unauthorised handshakes, garbage from an allowed client), and
//! a lock that keeps these CPU-hungry tests from running clusters side by side.
//!
//! Included by `cluster_adversarial.rs` with `#[path]`; it brings `cluster_support.rs` along
//! as `support` (so it also compiles alone, as cargo does with every file here). No tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use bftd::config::{ClientConfig, LoadedClientConfig};
use bftd::kv::{Op, Reply, decode_reply};
use bftd::net::frame::FrameDecoder;
use bftd::net::generate_static_keypair;
use bftd::net::noise::{HANDSHAKE_MESSAGE_BYTES_MAX, Handshake, NoiseLink, sealed_len};
use bftd::types::ClientRequest;
use bftd::wire::client::{decode_node_frame, encode_client_frame};
use bftd::wire::{ClientFrame, NodeFrame, NodeStatus};

#[path = "cluster_support.rs"]
pub mod support;

use support::{DEADLINE, RawClient, Testnet, put, wait_for};

/// One cluster at a time: each test starts 4 to 7 node processes plus attackers, and the
/// machine may have two cores. Run side by side they would test the scheduler, not the node.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long an attacker waits for the node to close a connection it must close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Testnet edits (before the nodes start)

/// Adds `lines` to the `[limits]` table of every node config.
pub fn set_limits(net: &Testnet, lines: &str) {
    edit_node_configs(net, |text| {
        text.replace("[limits]\n", &format!("[limits]\n{lines}\n"))
    });
}

fn edit_node_configs(net: &Testnet, edit: impl Fn(&str) -> String) {
    for i in 0..net.nodes {
        let path = net.config(i);
        let text = std::fs::read_to_string(&path).expect("read node config");
        let edited = edit(&text);
        assert_ne!(
            edited,
            text,
            "the edit of {} changed nothing",
            path.display()
        );
        std::fs::write(&path, edited).expect("write node config");
    }
}

/// Makes a new client key pair `name`, allows it on every node, and writes `name.toml`
/// (a copy of `client.toml` with the new key files). Returns the loaded client config.
pub fn add_client(net: &Testnet, name: &str) -> LoadedClientConfig {
    add_clients(net, &[name]).remove(0)
}

/// [`add_client`] for many names with one rewrite of each node config.
pub fn add_clients(net: &Testnet, names: &[&str]) -> Vec<LoadedClientConfig> {
    let dir = net.dir.path();
    let mut entries = String::new();
    for name in names {
        let keys = bftd::cli::keygen::write_key_pair(dir, name).expect("write client keys");
        entries.push_str(&format!(
            "    {{ signing_public_key = \"{}\", noise_public_key = \"{}\" }},\n",
            bftd::keys_file::to_hex(&keys.signing),
            bftd::keys_file::to_hex(&keys.noise),
        ));
        let client_toml = std::fs::read_to_string(net.client_config()).expect("client.toml");
        let own = client_toml
            .replace("client.signing.key", &format!("{name}.signing.key"))
            .replace("client.noise.key", &format!("{name}.noise.key"));
        std::fs::write(dir.join(format!("{name}.toml")), own).expect("write client config");
    }
    edit_node_configs(net, |text| {
        text.replace("allow = [\n", &format!("allow = [\n{entries}"))
    });
    names
        .iter()
        .map(|name| ClientConfig::load(&dir.join(format!("{name}.toml"))).expect("load client"))
        .collect()
}

/// The testnet's honest client config.
pub fn honest_client(net: &Testnet) -> LoadedClientConfig {
    ClientConfig::load(&net.client_config()).expect("load client.toml")
}

/// Node `i`'s Noise static secret, read from its key file.
pub fn node_noise_secret(net: &Testnet, i: usize) -> [u8; 32] {
    let path = net.dir.path().join(format!("node{i}.noise.key"));
    let hex = std::fs::read_to_string(path).expect("node noise key");
    let hex = hex.trim();
    assert_eq!(hex.len(), 64, "a noise key file holds 64 hex characters");
    let mut key = [0u8; 32];
    for (k, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).expect("hex");
    }
    key
}

// ---------------------------------------------------------------------------------------------
// Cluster checks

/// Status of node `i` asked with `observer`'s key, or `None` if it does not answer. Not
/// `status_of`: that uses the honest client's key, and a node keeps one link per client key,
/// so asking with it would replace (close) the honest load's link.
pub fn observe(net: &Testnet, observer: &LoadedClientConfig, i: usize) -> Option<NodeStatus> {
    RawClient::connect_with(observer.clone(), net.addr(i))
        .ok()?
        .status()
        .ok()
}

/// The highest applied height among the nodes in `which` that answer.
pub fn highest_applied(net: &Testnet, observer: &LoadedClientConfig, which: &[usize]) -> u64 {
    which
        .iter()
        .filter_map(|&i| observe(net, observer, i))
        .map(|s| s.applied_height)
        .max()
        .unwrap_or(0)
}

/// Waits until the nodes in `which` answer status with the same applied height and state
/// digest, at or above `height_min`; returns that status.
pub fn wait_converged(
    net: &Testnet,
    observer: &LoadedClientConfig,
    which: &[usize],
    height_min: u64,
) -> NodeStatus {
    let mut agreed = None;
    wait_for(
        &format!("nodes {which:?} agree on one state at height >= {height_min}"),
        DEADLINE,
        || {
            let s: Vec<_> = which
                .iter()
                .filter_map(|&i| observe(net, observer, i))
                .collect();
            let same = s.len() == which.len()
                && s.iter().all(|x| {
                    x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
                })
                && s[0].applied_height >= height_min;
            if same {
                agreed = Some(s[0].clone());
            }
            same
        },
    );
    agreed.expect("set when the wait ends")
}

// ---------------------------------------------------------------------------------------------
// Honest load

/// What one node's worker saw.
#[derive(Default)]
pub struct WorkerStats {
    pub replies: AtomicU64,
    pub refusals: AtomicU64,
    /// Connections made after the first (each one means the previous link broke).
    pub reconnects: AtomicU64,
    pub link_errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// One client connection per node, each in its own thread; a request goes to every node and
/// its reply counts once `f + 1` nodes gave identical reply bytes. A node that is slow, stopped
/// or dead only loses its copy of requests (its queue is short and full means skip).
struct Submitter {
    to_nodes: Vec<Sender<ClientRequest>>,
    replies: Receiver<(usize, u64, Vec<u8>)>,
    pub stats: Vec<Arc<WorkerStats>>,
    signer_client: LoadedClientConfig,
    f: usize,
}

/// Requests a node's worker may have queued before it is skipped.
const WORKER_QUEUE_MAX: usize = 4;
/// A request without `f + 1` agreeing replies after this is sent again (same seq: the
/// exactly-once table answers a repeat with the stored reply).
const RESEND_AFTER: Duration = Duration::from_secs(3);

impl Submitter {
    fn start(net: &Testnet, cfg: &LoadedClientConfig, stop: &Arc<AtomicBool>) -> Self {
        let f = (net.nodes - 1) / 3;
        let (reply_tx, replies) = unbounded();
        let mut to_nodes = Vec::new();
        let mut stats = Vec::new();
        for i in 0..net.nodes {
            let (tx, rx) = bounded(WORKER_QUEUE_MAX);
            let s = Arc::new(WorkerStats::default());
            let (cfg, addr, stop, reply_tx) =
                (cfg.clone(), net.addr(i), stop.clone(), reply_tx.clone());
            let s2 = s.clone();
            std::thread::spawn(move || worker(i, cfg, addr, rx, reply_tx, s2, stop));
            to_nodes.push(tx);
            stats.push(s);
        }
        Self {
            to_nodes,
            replies,
            stats,
            signer_client: cfg.clone(),
            f,
        }
    }

    fn submit(&self, seq: u64, ops: &[Op]) -> Result<Reply, String> {
        let req = request(&self.signer_client, seq, ops);
        let start = Instant::now();
        let mut votes: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        loop {
            for tx in &self.to_nodes {
                let _ = tx.try_send(req.clone());
            }
            let resend_at = Instant::now() + RESEND_AFTER;
            loop {
                match self.replies.recv_deadline(resend_at) {
                    Ok((_, s, bytes)) if s == seq => {
                        let n = votes.entry(bytes.clone()).or_default();
                        *n += 1;
                        if *n > self.f {
                            return decode_reply(&bytes).map_err(|e| format!("{e}"));
                        }
                    }
                    Ok(_) => {} // a late reply to an earlier request
                    Err(_) => break,
                }
            }
            if start.elapsed() > DEADLINE {
                return Err(format!(
                    "request {seq}: no f+1 agreement within {DEADLINE:?}: {votes:?}"
                ));
            }
        }
    }
}

/// The session of the hand-made requests of these tests.
const RAW_SESSION: u64 = 1;

fn request(cfg: &LoadedClientConfig, seq: u64, ops: &[Op]) -> ClientRequest {
    let signer = cfg.signer();
    let client = bftd::types::ClientKey(signer.public_key());
    let ops = bftd::kv::encode_ops(ops);
    let signature = signer.sign(
        bftd::crypto::domain::REQUEST,
        &bftd::crypto::domain::request_body(&client, RAW_SESSION, seq, &ops),
    );
    ClientRequest {
        client,
        session: RAW_SESSION,
        seq,
        ops,
        signature,
    }
}

fn worker(
    node: usize,
    cfg: LoadedClientConfig,
    addr: SocketAddr,
    requests: Receiver<ClientRequest>,
    replies: Sender<(usize, u64, Vec<u8>)>,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<RawClient> = None;
    let mut connected_once = false;
    while !stop.load(Ordering::Relaxed) {
        let req = match requests.recv_timeout(Duration::from_millis(100)) {
            Ok(req) => req,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if conn.is_none() {
            conn = RawClient::connect_with(cfg.clone(), addr).ok();
            if conn.is_some() && connected_once {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            connected_once |= conn.is_some();
        }
        let Some(c) = conn.as_mut() else {
            continue; // this node misses the request; the others answer it
        };
        match exchange(c, &req) {
            Ok(Some(bytes)) => {
                stats.replies.fetch_add(1, Ordering::Relaxed);
                let _ = replies.send((node, req.seq, bytes));
            }
            Ok(None) => {
                stats.refusals.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.link_errors.fetch_add(1, Ordering::Relaxed);
                *stats.last_error.lock().unwrap() = Some(format!("request {}: {e}", req.seq));
                conn = None;
            }
        }
    }
}

/// Sends `req` and waits for this node's reply (`Some`) or refusal (`None`).
fn exchange(c: &mut RawClient, req: &ClientRequest) -> std::io::Result<Option<Vec<u8>>> {
    c.send(&ClientFrame::Submit(req.clone()))?;
    loop {
        match c.recv()? {
            NodeFrame::Reply { seq, reply, .. } if seq == req.seq => return Ok(Some(reply)),
            NodeFrame::Refused { seq, .. } if seq == req.seq => return Ok(None),
            _ => {}
        }
    }
}

/// An honest client writing fresh keys one request at a time, in a background thread, until
/// stopped. Every write must be answered `Done` by `f + 1` identical replies.
pub struct HonestLoad {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    pub stats: Vec<Arc<WorkerStats>>,
    driver: Option<JoinHandle<Result<(), String>>>,
}

impl HonestLoad {
    pub fn start(net: &Testnet) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let submitter = Submitter::start(net, &honest_client(net), &stop);
        let stats = submitter.stats.clone();
        let (stop2, committed2) = (stop.clone(), committed.clone());
        let driver = std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                seq += 1;
                let reply = submitter.submit(seq, &[put(&format!("h{seq}"), "v")])?;
                if !matches!(reply, Reply::Done(_)) {
                    return Err(format!("request {seq} was not done: {reply:?}"));
                }
                committed2.store(seq, Ordering::Relaxed);
            }
            Ok(())
        });
        Self {
            stop,
            committed,
            stats,
            driver: Some(driver),
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests committed; panics if the load failed.
    pub fn wait_more(&self, more: u64, what: &str) {
        let target = self.committed() + more;
        wait_for(&format!("{more} honest commits {what}"), DEADLINE, || {
            assert!(
                !self.driver.as_ref().is_some_and(|d| d.is_finished()),
                "the honest load stopped early"
            );
            self.committed() >= target
        });
    }

    /// Stops the load and returns how many requests committed; panics on a load failure.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let driver = self.driver.take().expect("not finished twice");
        driver
            .join()
            .expect("load thread panicked")
            .expect("honest load");
        self.committed()
    }

    pub fn reconnects(&self, node: usize) -> u64 {
        self.stats[node].reconnects.load(Ordering::Relaxed)
    }

    pub fn replies(&self, node: usize) -> u64 {
        self.stats[node].replies.load(Ordering::Relaxed)
    }
}

impl Drop for HonestLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile remotes

/// Deterministic bytes from `seed` (xorshift64*), so a failure replays.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Connects with a read timeout of [`CLOSE_WAIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(CLOSE_WAIT)).expect("timeout");
    s
}

/// Reads until the node closes the connection; false if it is still open after
/// [`CLOSE_WAIT`] (a connection the node should have dropped but kept).
pub fn closed_by_remote(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

/// Reads one frame (handshake size) or `None` if the node closed the connection first.
pub fn read_handshake_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut decoder = FrameDecoder::new(HANDSHAKE_MESSAGE_BYTES_MAX);
    let mut buf = [0u8; 1];
    loop {
        match s.read(&mut buf) {
            Ok(1) => {
                let mut input: &[u8] = &buf;
                if let Some(f) = decoder.feed(&mut input).ok()? {
                    return Some(f);
                }
            }
            _ => return None,
        }
    }
}

/// Sends the first XX message with `secret` and reads the node's answer. `None`: refused.
pub fn start_handshake(addr: SocketAddr, secret: &[u8; 32], prologue: &[u8]) -> Option<Started> {
    let mut stream = connect(addr);
    let mut hs = Handshake::initiator(secret, prologue).expect("initiator");
    let mut out = Vec::new();
    hs.write_message(&mut out).expect("msg1");
    stream.write_all(&out).ok()?;
    let msg2 = read_handshake_frame(&mut stream)?;
    hs.read_message(&msg2).ok()?;
    Some(Started { stream, hs })
}

/// A handshake after the node's answer, our last message not yet sent.
pub struct Started {
    pub stream: TcpStream,
    pub hs: Handshake,
}

impl Started {
    /// Sends the last message: a link whose key the node has now seen.
    pub fn finish(mut self) -> Option<Link> {
        let mut out = Vec::new();
        self.hs.write_message(&mut out).expect("msg3");
        self.stream.write_all(&out).ok()?;
        Some(Link {
            stream: self.stream,
            link: self.hs.into_link().expect("link"),
            pending: Vec::new(),
            decoder: FrameDecoder::new(sealed_len(64 << 20)),
        })
    }
}

/// An established link as a client, to send anything sealed.
pub struct Link {
    pub stream: TcpStream,
    pub link: NoiseLink,
    pending: Vec<u8>,
    decoder: FrameDecoder,
}

impl Link {
    pub fn send_plain(&mut self, plain: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.link
            .seal(plain, &mut out)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&out)
    }

    pub fn send(&mut self, frame: &ClientFrame) -> std::io::Result<()> {
        self.send_plain(&encode_client_frame(frame))
    }

    pub fn recv(&mut self) -> std::io::Result<NodeFrame> {
        loop {
            let mut input: &[u8] = &self.pending;
            let fed = self.decoder.feed(&mut input);
            let used = self.pending.len() - input.len();
            self.pending.drain(..used);
            match fed {
                Ok(Some(f)) => {
                    let plain = self.link.open(&f).map_err(std::io::Error::other)?;
                    return decode_node_frame(&plain).map_err(std::io::Error::other);
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e}"))),
            }
            let mut buf = [0u8; 64 * 1024];
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Asks for status and waits for it: the link is alive and served.
    pub fn status(&mut self, id: u64) -> std::io::Result<NodeStatus> {
        self.send(&ClientFrame::Status { id })?;
        loop {
            if let NodeFrame::Status { id: got, status } = self.recv()?
                && got == id
            {
                return Ok(status);
            }
        }
    }
}

/// Completes a handshake as the allowed client `cfg`.
pub fn client_link(cfg: &LoadedClientConfig, addr: SocketAddr) -> Option<Link> {
    start_handshake(addr, cfg.noise_secret(), &cfg.cluster.0)?.finish()
}

/// A fresh Noise key the cluster has never heard of.
pub fn stranger_secret() -> [u8; 32] {
    generate_static_keypair().expect("keypair").private
}

/// A request signed by `cfg` but with its signature broken.
pub fn badly_signed(cfg: &LoadedClientConfig, seq: u64) -> ClientRequest {
    let mut req = request(cfg, seq, &[put("evil", "x")]);
    req.signature.0[0] ^= 1;
    req
}

pub fn signed_request(cfg: &LoadedClientConfig, seq: u64, ops: &[Op]) -> ClientRequest {
    request(cfg, seq, ops)
}
