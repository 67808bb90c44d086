//! The net thread: one `mio::Poll` for the listener, every connection and the waker.
//!
//! Invariants: the loop never blocks except in `poll`, and never parses past a frame header
//! (payloads go out unread). Every close goes through [`EventLoop::close`], which deregisters
//! the socket, forgets the connection in every table and counts why. Accepts are refused (and
//! counted) beyond `connections_max` non-peer connections (plus one slot per peer that dials
//! us and has no link, which a client finishing its handshake cannot keep) or when
//! [`Admission`] has no handshake slot for the source address (members' addresses have a pool
//! of their own, so outsiders cannot shut a peer out), and an unfinished handshake dies at
//! `handshake_timeout_ms`,
//! so a flood of connections costs a bounded number of fds and bytes. A connection that
//! stopped reading because the inbound channel was full, or because it spent its read budget,
//! sits in `resume` and is pumped again after a short poll timeout (edge-triggered readiness
//! would not report it again).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::types::NodeId;

use super::admission::Admission;
use super::auth::KeyDirectory;
use super::config::{NetLimits, TransportConfig};
use super::connection::{Close, Connection, PumpCtx, Pumped};
use super::envelope::{ClientId, Inbound, Outbound, Remote};
use super::inbound_queue::InboundQueue;
use super::noise::{Handshake, KEY_BYTES};
use super::outbound_bytes::OutboundBytes;
use super::peers::PeerTable;
use super::stats::{NetCounters, RejectReason, bump};

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
const FIRST_CONN_TOKEN: usize = 2;
/// Links one client key may hold at once (processes sharing a key, each with one link per
/// node); beyond it the oldest is closed, which is also how a reconnect replaces a stale link.
const CLIENT_KEY_LINKS_MAX: usize = 64;
/// Readiness events taken per `poll`.
const EVENTS_PER_POLL_MAX: usize = 1024;
/// One socket read; shared by all connections.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Outbound requests handled per loop turn, so sockets get their turn under a send storm.
const OUTBOUND_PER_TURN_MAX: usize = 4096;
/// Connections accepted per loop turn, so a connection flood cannot starve established links.
const ACCEPTS_PER_TURN_MAX: usize = 256;
/// Poll timeout while a connection waits for room in the inbound channel or a retry to accept.
const RETRY_MS: u64 = 1;

/// The channel ends and shared state the loop runs with.
pub(crate) struct LoopIo {
    pub poll: Poll,
    pub listener: TcpListener,
    pub inbound_tx: Sender<Inbound>,
    pub outbound_rx: Receiver<Outbound>,
    /// Released as frames leave `outbound_rx`; closed when the loop ends.
    pub outbound_bytes: Arc<OutboundBytes>,
    pub counters: Arc<NetCounters>,
    pub shutdown: Arc<AtomicBool>,
}

pub(crate) struct EventLoop {
    io: LoopIo,
    self_private_key: [u8; KEY_BYTES],
    prologue: Vec<u8>,
    limits: NetLimits,
    keys: KeyDirectory,
    peers: PeerTable,
    /// "link lost" lines: at most one a second (a flapping link must not flood the log).
    link_lost_log: crate::util::RateLimit,
    /// Handshake slots of unfinished inbound connections, by source address.
    admission: Admission,
    /// Bounded by `connections_max`: one entry per established client connection.
    clients: HashMap<ClientId, Token>,
    /// Bounded by `connections_max` plus one per peer.
    conns: HashMap<Token, Connection>,
    next_token: usize,
    /// Connections to pump again without a new readiness event.
    resume: HashSet<Token>,
    /// The listener may still hold connections and edge-triggered readiness will not say so
    /// again: `accept_more` when the per-turn budget ran out (retry at once), `accept_retry`
    /// after an error such as running out of fds (retry after `RETRY_MS`).
    accept_more: bool,
    accept_retry: bool,
    scratch: Vec<u8>,
    /// The inbound channel's sender, bounded in bytes.
    inbound: InboundQueue,
    /// Bytes of partly received client frames, charged by each connection (see `Connection`).
    partial_bytes: usize,
}

impl EventLoop {
    pub(crate) fn new(config: &TransportConfig, io: LoopIo) -> Self {
        let peer_addrs: Vec<_> = config.peers.iter().map(|p| (p.id, p.addr)).collect();
        let limits = config.limits.clone();
        let inbound = InboundQueue::new(io.inbound_tx.clone(), limits.inbound_channel_bytes_max);
        let member_ips = config
            .peers
            .iter()
            .filter(|p| p.id != config.self_id)
            .map(|p| p.addr.ip());
        let admission = Admission::new(
            member_ips,
            limits.handshakes_max,
            limits.handshakes_per_addr_max,
        );
        let peers = PeerTable::new(
            config.self_id,
            &peer_addrs,
            limits.reconnect_backoff_ms_min,
            limits.reconnect_backoff_ms_max,
            Instant::now(),
        );
        Self {
            io,
            self_private_key: config.static_private_key,
            prologue: config.prologue.clone(),
            keys: KeyDirectory::new(config),
            peers,
            link_lost_log: crate::util::RateLimit::new(Duration::from_secs(1)),
            admission,
            clients: HashMap::new(),
            conns: HashMap::new(),
            next_token: FIRST_CONN_TOKEN,
            resume: HashSet::new(),
            accept_more: false,
            accept_retry: false,
            scratch: vec![0; READ_CHUNK_BYTES],
            partial_bytes: 0,
            inbound,
            limits,
        }
    }

    /// Runs until shutdown is requested. Sockets close when `self` drops.
    pub(crate) fn run(mut self) {
        // However the loop ends (shutdown, a poll error, a panic), senders waiting for room
        // in the outbound channel must not wait forever.
        let _close = CloseOnDrop(Arc::clone(&self.io.outbound_bytes));
        let mut events = Events::with_capacity(EVENTS_PER_POLL_MAX);
        while !self.io.shutdown.load(Ordering::Acquire) {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.io.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("net: poll failed, transport stops: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {} // outbound is drained below on every turn
                    token => self.on_conn_event(token, event.is_writable()),
                }
            }
            if self.accept_more || self.accept_retry {
                self.accept_all();
            }
            self.drain_outbound();
            self.resume_paused();
            let now = Instant::now();
            self.expire_deadlines(now);
            self.dial_due(now);
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.io.outbound_rx.is_empty() || self.accept_more {
            return Duration::ZERO;
        }
        let frame_timeout = Duration::from_millis(self.limits.frame_timeout_ms);
        let deadlines = self
            .conns
            .values()
            .filter_map(|c| earliest(c.handshake_deadline(), c.frame_deadline(frame_timeout)));
        let next = deadlines.chain(self.peers.next_dial_at()).min();
        let mut timeout = next.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
        if !self.resume.is_empty() || self.accept_retry {
            timeout = timeout.min(Duration::from_millis(RETRY_MS));
        }
        timeout
    }

    fn take_token(&mut self) -> Token {
        // Tokens are never reused while the loop runs (a usize does not wrap in practice),
        // so a late event for a closed connection can never hit a new one.
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn accept_all(&mut self) {
        self.accept_more = false;
        self.accept_retry = false;
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            match self.io.listener.accept() {
                Ok((stream, addr)) => self.on_accept(stream, addr.ip()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("net: accept failed, retrying: {e}");
                    self.accept_retry = true;
                    return;
                }
            }
        }
        self.accept_more = true;
    }

    fn on_accept(&mut self, stream: TcpStream, source: IpAddr) {
        bump(&self.io.counters.connections_accepted, 1);
        let peer_conns = self.peers.iter().filter(|s| s.conn.is_some()).count();
        // A peer that dials us comes in as an unfinished handshake, so clients filling
        // `connections_max` must not shut it out: keep one slot per such peer without a link.
        // Those slots are not room for more clients (`on_established` checks).
        let peers_to_accept = self
            .peers
            .iter()
            .filter(|s| !s.we_dial && s.conn.is_none())
            .count();
        let non_peer_max = self.limits.connections_max + peers_to_accept;
        if self.conns.len().saturating_sub(peer_conns) >= non_peer_max {
            self.io.counters.reject(RejectReason::TooManyConnections);
            return; // dropping the stream closes it
        }
        let token = self.take_token();
        if let Err(why) = self.admission.admit(token, source) {
            log::debug!("net: no handshake slot for {source}: {why:?}");
            self.io.counters.reject(RejectReason::TooManyConnections);
            return;
        }
        let Ok(hs) = Handshake::responder(&self.self_private_key, &self.prologue) else {
            self.admission.release(token);
            self.io.counters.reject(RejectReason::HandshakeFailed);
            return;
        };
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + Duration::from_millis(self.limits.handshake_timeout_ms);
        match Connection::new(stream, hs, None, deadline) {
            Ok(conn) => self.register(token, conn),
            Err(close) => {
                self.admission.release(token);
                self.count_close(&close);
            }
        }
    }

    fn register(&mut self, token: Token, mut conn: Connection) {
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .io
            .poll
            .registry()
            .register(&mut conn.stream, token, interest)
        {
            log::warn!("net: cannot register a connection: {e}");
            self.admission.release(token);
            if let Some(id) = conn.dialled() {
                self.peers.closed(id, token, Instant::now());
            }
            return;
        }
        self.conns.insert(token, conn);
    }

    fn dial_due(&mut self, now: Instant) {
        for id in self.peers.due(now) {
            self.dial(id, now);
        }
    }

    fn dial(&mut self, id: NodeId, now: Instant) {
        let Some(addr) = self.peers.get(id).map(|s| s.addr) else {
            return;
        };
        bump(&self.io.counters.dials_started, 1);
        let token = self.take_token();
        self.peers.dialling(id, token);
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!("net: dialling {id} at {addr}: {e}");
                self.peers.closed(id, token, now);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let deadline = now + Duration::from_millis(self.limits.handshake_timeout_ms);
        let conn = Handshake::initiator(&self.self_private_key, &self.prologue)
            .map_err(|_| Close::Reject(RejectReason::HandshakeFailed))
            .and_then(|hs| Connection::new(stream, hs, Some(id), deadline));
        match conn {
            Ok(conn) => self.register(token, conn),
            Err(close) => {
                self.count_close(&close);
                self.peers.closed(id, token, now);
            }
        }
    }

    fn on_conn_event(&mut self, token: Token, writable: bool) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return; // a late event for a connection already closed
        };
        if (writable || conn.connecting)
            && let Err(close) = conn.confirm_connect().and_then(|()| conn.flush())
        {
            self.close(token, close);
            return;
        }
        self.pump(token);
    }

    /// Reads and handles what `token` has, registering a link when its handshake finishes.
    fn pump(&mut self, token: Token) {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let mut ctx = PumpCtx {
                scratch: &mut self.scratch,
                keys: &self.keys,
                inbound: &mut self.inbound,
                counters: &self.io.counters,
                max_frame_bytes: self.limits.max_frame_bytes,
                client_frame_bytes_max: self.limits.client_frame_bytes_max,
                read_bytes_per_event_max: self.limits.read_bytes_per_event_max,
                partial_bytes: &mut self.partial_bytes,
                partial_bytes_max: self.limits.client_partial_frames_bytes_max,
            };
            let pumped = conn.pump(&mut ctx);
            // Handshake replies were queued while pumping.
            if let Err(close) = conn.flush() {
                self.close(token, close);
                return;
            }
            match pumped {
                Pumped::Drained => {
                    self.resume.remove(&token);
                    return;
                }
                Pumped::BudgetSpent | Pumped::Paused => {
                    self.resume.insert(token);
                    return;
                }
                Pumped::Established(remote) => self.on_established(token, remote),
                Pumped::Closed(close) => {
                    self.close(token, close);
                    return;
                }
            }
        }
    }

    fn on_established(&mut self, token: Token, remote: Remote) {
        self.admission.release(token);
        let replaced = match remote {
            Remote::Peer(id) => {
                if let Some(p) = self.io.counters.peer(id) {
                    bump(&p.links_established, 1);
                    p.link_up.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let replaced = self.peers.established(id, token);
                if replaced.is_none() {
                    log::info!("net: link to {id} up");
                }
                replaced
            }
            Remote::Client(client) => {
                if self.clients.len() >= self.limits.connections_max {
                    self.close(token, Close::Reject(RejectReason::TooManyConnections));
                    return;
                }
                // Each link of a client key is its own route (processes may share a key).
                let client = ClientId(client.0, token.0 as u64);
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.set_remote(Remote::Client(client));
                }
                bump(&self.io.counters.client_links_established, 1);
                self.clients.insert(client, token);
                self.oldest_link_beyond_key_limit(&client.0)
            }
        };
        log::debug!("net: link to {remote:?} established");
        if let Some(old) = replaced {
            self.close(old, Close::Replaced);
        }
    }

    /// The oldest link of client key `key` when it holds more than `CLIENT_KEY_LINKS_MAX`:
    /// a client that reconnects replaces its stale links this way.
    fn oldest_link_beyond_key_limit(&self, key: &[u8; KEY_BYTES]) -> Option<Token> {
        let mut links: Vec<(u64, Token)> = self
            .clients
            .iter()
            .filter(|(c, _)| c.0 == *key)
            .map(|(c, t)| (c.1, *t))
            .collect();
        if links.len() <= CLIENT_KEY_LINKS_MAX {
            return None;
        }
        links.sort_unstable();
        links.first().map(|(_, t)| *t)
    }

    fn resume_paused(&mut self) {
        let tokens: Vec<Token> = self.resume.iter().copied().collect();
        for token in tokens {
            self.pump(token);
        }
    }

    /// Closes unfinished handshakes and frames whose time is up.
    fn expire_deadlines(&mut self, now: Instant) {
        let frame_timeout = Duration::from_millis(self.limits.frame_timeout_ms);
        let expired: Vec<(Token, RejectReason)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| {
                if c.handshake_deadline().is_some_and(|d| d <= now) {
                    Some((*t, RejectReason::HandshakeTimeout))
                } else if c.frame_deadline(frame_timeout).is_some_and(|d| d <= now) {
                    Some((*t, RejectReason::FrameTimeout))
                } else {
                    None
                }
            })
            .collect();
        for (token, reason) in expired {
            self.close(token, Close::Reject(reason));
        }
    }

    fn count_close(&self, close: &Close) {
        match close {
            Close::Reject(reason) => self.io.counters.reject(*reason),
            Close::Eof => bump(&self.io.counters.disconnects, 1),
            Close::Io(e) => {
                log::debug!("net: connection error: {e}");
                bump(&self.io.counters.disconnects, 1);
            }
            Close::Replaced | Close::ReceiverGone => {}
        }
    }

    /// The one way a connection ends: deregister, forget it everywhere, count why.
    pub(super) fn close(&mut self, token: Token, close: Close) {
        self.admission.release(token);
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.io.poll.registry().deregister(&mut conn.stream);
        self.resume.remove(&token);
        self.partial_bytes -= conn.charged_bytes();
        let dial_failed = conn.dialled().is_some()
            && matches!(
                close,
                Close::Eof | Close::Io(_) | Close::Reject(RejectReason::HandshakeTimeout)
            );
        if dial_failed {
            bump(&self.io.counters.dial_failures, 1);
        } else {
            self.count_close(&close);
        }
        log::debug!("net: closing {:?}: {close:?}", conn.remote());
        let now = Instant::now();
        match conn.remote() {
            Some(Remote::Peer(id)) => {
                let current = self.peers.get(id).is_some_and(|s| s.conn == Some(token));
                if current && let Some(p) = self.io.counters.peer(id) {
                    p.link_up.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                if current
                    && let Some(why) = lost_reason(&close)
                    && let Some(left_out) = self.link_lost_log.allow(now)
                {
                    let also = match left_out {
                        0 => String::new(),
                        n => format!(" ({n} more links lost since the last such line)"),
                    };
                    log::warn!("net: link to {id} lost: {why}; redialling{also}");
                }
                self.peers.closed(id, token, now)
            }
            Some(Remote::Client(client)) => {
                if self.clients.get(&client) == Some(&token) {
                    self.clients.remove(&client);
                }
            }
            None => {
                if let Some(id) = conn.dialled() {
                    self.peers.closed(id, token, now);
                }
            }
        }
    }

    pub(super) fn conns_mut(&mut self) -> &mut HashMap<Token, Connection> {
        &mut self.conns
    }

    pub(super) fn parts(&mut self) -> OutboundParts<'_> {
        OutboundParts {
            conns: &mut self.conns,
            peers: &self.peers,
            clients: &self.clients,
            counters: &self.io.counters,
            limits: &self.limits,
            outbound_rx: &self.io.outbound_rx,
            outbound_bytes: &self.io.outbound_bytes,
        }
    }

    fn drain_outbound(&mut self) {
        let to_flush = self.parts().send_batch(OUTBOUND_PER_TURN_MAX);
        for token in to_flush {
            let Some(conn) = self.conns_mut().get_mut(&token) else {
                continue;
            };
            if let Err(close) = conn.flush() {
                self.close(token, close);
            }
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The fields the outbound path touches, borrowed apart from the rest of the loop.
pub(super) struct OutboundParts<'a> {
    pub conns: &'a mut HashMap<Token, Connection>,
    pub peers: &'a PeerTable,
    pub clients: &'a HashMap<ClientId, Token>,
    pub counters: &'a NetCounters,
    pub limits: &'a NetLimits,
    pub outbound_rx: &'a Receiver<Outbound>,
    pub outbound_bytes: &'a OutboundBytes,
}

/// Closes the outbound byte gauge when the loop's `run` returns or unwinds.
struct CloseOnDrop(Arc<OutboundBytes>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Why an established peer link ended, for the log; `None` when it ended for a reason that is
/// not news (replaced by a newer link, or the node shutting down).
fn lost_reason(close: &Close) -> Option<String> {
    match close {
        Close::Eof => Some("closed by the peer".into()),
        Close::Io(e) => Some(e.to_string()),
        Close::Reject(r) => Some(format!("closed by us: {r}")),
        Close::Replaced | Close::ReceiverGone => None,
    }
}
