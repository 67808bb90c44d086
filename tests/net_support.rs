//! Helpers shared by the `net_*` tests: a local cluster of transports on 127.0.0.1, a blocking
//! Noise client, and waiting for conditions with generous deadlines (never for luck).
//!
//! Included by the other `net_*` test files with `#[path]`; compiled alone it holds no tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bftd::net::frame::{FrameDecoder, encode_frame};
use bftd::net::noise::{HANDSHAKE_MESSAGE_BYTES_MAX, Handshake, NoiseLink, sealed_len};
use bftd::net::{
    ClientAccess, Inbound, NetLimits, NetStats, Outbound, PeerConfig, Remote, StaticKeypair,
    Transport, TransportConfig, generate_static_keypair,
};
use bftd::types::NodeId;

pub const PROLOGUE: &[u8] = b"bftd-net-test";
/// Generous: a loaded 2-core machine running another engineer's build must not fail a test.
pub const DEADLINE: Duration = Duration::from_secs(30);
pub const MAX_FRAME_BYTES: usize = 4 << 20;

pub fn test_limits() -> NetLimits {
    NetLimits {
        max_frame_bytes: MAX_FRAME_BYTES,
        client_frame_bytes_max: MAX_FRAME_BYTES,
        client_partial_frames_bytes_max: 64 << 20,
        frame_timeout_ms: 30_000,
        write_buffer_bytes_max: 32 << 20,
        handshakes_max: 16,
        handshakes_per_addr_max: 4,
        connections_max: 256,
        handshake_timeout_ms: 500,
        reconnect_backoff_ms_min: 20,
        reconnect_backoff_ms_max: 400,
        inbound_channel_frames_max: 1024,
        inbound_channel_bytes_max: 64 << 20,
        outbound_channel_frames_max: 1024,
        outbound_channel_bytes_max: 64 << 20,
        read_bytes_per_event_max: 1 << 20,
    }
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub struct Cluster {
    pub keys: Vec<StaticKeypair>,
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<Option<Transport>>,
    pub clients: ClientAccess,
    pub limits: NetLimits,
}

impl Cluster {
    /// Starts `n` nodes, highest id first: a node only dials higher ids, so each one's config
    /// can carry the real (port-0-assigned) addresses of every node it will dial.
    pub fn start(n: usize, clients: ClientAccess) -> Self {
        Self::start_with(n, clients, test_limits())
    }

    pub fn start_with(n: usize, clients: ClientAccess, limits: NetLimits) -> Self {
        let keys: Vec<_> = (0..n).map(|_| generate_static_keypair().unwrap()).collect();
        let unbound: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut cluster = Self {
            keys,
            addrs: vec![unbound; n],
            nodes: (0..n).map(|_| None).collect(),
            clients,
            limits,
        };
        for i in (0..n).rev() {
            cluster.start_node(i, unbound);
        }
        cluster
    }

    pub fn config(&self, i: usize, listen_addr: SocketAddr) -> TransportConfig {
        let peers = (0..self.keys.len())
            .map(|j| PeerConfig {
                id: NodeId(j as u16),
                addr: self.addrs[j],
                static_public_key: self.keys[j].public,
            })
            .collect();
        TransportConfig {
            self_id: NodeId(i as u16),
            listen_addr,
            static_private_key: self.keys[i].private,
            peers,
            clients: self.clients.clone(),
            prologue: PROLOGUE.to_vec(),
            refusal_notice: Vec::new(),
            limits: self.limits.clone(),
        }
    }

    pub fn start_node(&mut self, i: usize, listen_addr: SocketAddr) {
        let t = Transport::start(self.config(i, listen_addr)).unwrap();
        self.addrs[i] = t.local_addr();
        self.nodes[i] = Some(t);
    }

    pub fn node(&self, i: usize) -> &Transport {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn stats(&self, i: usize) -> NetStats {
        self.node(i).stats()
    }

    /// Waits until node `i` has had at least `links` links with each other node.
    pub fn wait_links(&self, i: usize, links: u64) {
        for j in (0..self.keys.len()).filter(|j| *j != i) {
            wait_until(
                &format!("node {i} linked to node {j} {links} time(s)"),
                || self.stats(i).peers[j].links_established >= links,
            );
        }
    }

    /// Waits until node `i` has had at least `links` links with node `j`.
    pub fn wait_link(&self, i: usize, j: usize, links: u64) {
        wait_until(
            &format!("node {i} linked to node {j} {links} time(s)"),
            || self.stats(i).peers[j].links_established >= links,
        );
    }

    pub fn wait_all_linked(&self) {
        for i in 0..self.keys.len() {
            self.wait_links(i, 1);
        }
    }

    /// Sends `bytes` from `from` to `to` until `to` receives them (a send racing a link change
    /// may be dropped, as the transport documents); other frames received meanwhile are ignored.
    pub fn deliver(&self, from: usize, to: usize, bytes: &[u8]) {
        let expected = Inbound {
            from: Remote::Peer(NodeId(from as u16)),
            bytes: bytes.to_vec(),
        };
        let start = Instant::now();
        loop {
            let msg = Outbound::ToPeer(NodeId(to as u16), bytes.to_vec());
            self.node(from).send(msg).unwrap();
            let resend_at = Instant::now() + Duration::from_millis(200);
            while let Ok(got) = self.node(to).inbound().recv_deadline(resend_at) {
                if got == expected {
                    return;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "frame of {} bytes from {from} never reached {to}",
                bytes.len()
            );
        }
    }
}

/// Reads whole frames from a blocking stream, keeping bytes that arrive after a frame.
pub struct FrameReader {
    pub decoder: FrameDecoder,
    buffered: Vec<u8>,
}

impl FrameReader {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            decoder: FrameDecoder::new(limit_bytes),
            buffered: Vec::new(),
        }
    }

    pub fn read_frame(&mut self, stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let mut input = &self.buffered[..];
            let fed = self.decoder.feed(&mut input).unwrap();
            let used = self.buffered.len() - input.len();
            self.buffered.drain(..used);
            if let Some(frame) = fed {
                return Ok(frame);
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffered.extend_from_slice(&buf[..n]);
        }
    }
}

/// A blocking client speaking the transport's wire format, for tests that play the remote.
pub struct NoiseClient {
    pub stream: TcpStream,
    pub link: NoiseLink,
    reader: FrameReader,
}

impl NoiseClient {
    /// Runs the XX handshake as initiator; fails if the node closes the connection.
    pub fn connect(addr: SocketAddr, key: &StaticKeypair) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        let mut hs = Handshake::initiator(&key.private, PROLOGUE).unwrap();
        let mut reader = FrameReader::new(HANDSHAKE_MESSAGE_BYTES_MAX);
        let mut out = Vec::new();
        hs.write_message(&mut out).unwrap();
        stream.write_all(&out)?;
        let msg2 = reader.read_frame(&mut stream)?;
        hs.read_message(&msg2).unwrap();
        out.clear();
        hs.write_message(&mut out).unwrap();
        stream.write_all(&out)?;
        reader.decoder.set_limit_bytes(sealed_len(MAX_FRAME_BYTES));
        Ok(Self {
            stream,
            link: hs.into_link().unwrap(),
            reader,
        })
    }

    pub fn send(&mut self, plain: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.link.seal(plain, &mut out).unwrap();
        self.stream.write_all(&out)
    }

    pub fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        let frame = self.reader.read_frame(&mut self.stream)?;
        Ok(self.link.open(&frame).unwrap())
    }
}

/// True once the remote has closed `stream` (EOF or reset); waits up to [`DEADLINE`].
pub fn closed_by_remote(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. the node's handshake reply
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Frames a raw payload, for tests that send bytes outside any Noise session.
pub fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out);
    out
}

/// Deterministic pseudo-random bytes (xorshift64), so a failing run replays exactly.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
