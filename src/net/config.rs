//! Configuration of one node's transport: who we are, whom we talk to, and every limit.
//!
//! Invariants checked by [`TransportConfig::validate`]: peer ids and peer keys are unique, no
//! client key is also a peer key, and every limit is non-zero and within what the frame layout
//! can carry. Every buffer, queue and map of the net thread is bounded by a field of
//! [`NetLimits`].

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::types::NodeId;

use super::noise::{KEY_BYTES, sealed_len};

/// One other member of the committee.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// The peer's X25519 static public key (Noise), from the cluster config.
    pub static_public_key: [u8; KEY_BYTES],
}

/// Which clients may connect.
#[derive(Clone, Debug)]
pub enum ClientAccess {
    /// Development mode: any client key that completes a handshake.
    Any,
    /// Only these X25519 static public keys.
    AllowList(Vec<[u8; KEY_BYTES]>),
}

/// Every limit of the net thread. Defaults suit a LAN cluster of a handful of nodes. Read from a
/// node's `[limits]` table: every field optional, an unknown one is an error.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetLimits {
    /// Largest application frame (plaintext), both directions, on peer links.
    pub max_frame_bytes: usize,
    /// Largest frame a client may send: the largest valid request. Not read from the file:
    /// the node derives it from its request limits (`wire::client::submit_frame_bytes_max`).
    #[serde(skip)]
    pub client_frame_bytes_max: usize,
    /// Bytes of partly received client frames held across all connections, beyond the first
    /// `frame::BODY_RESERVE_BYTES_MAX` of each (which `connections_max` bounds); a client
    /// whose frame would pass it is closed. Peer links (one per member) are not counted.
    pub client_partial_frames_bytes_max: usize,
    /// A frame begun and not finished within this closes the connection (a sender that
    /// stalls mid-frame must not pin its buffer).
    pub frame_timeout_ms: u64,
    /// Per-connection bytes queued for the socket; a frame that would exceed it is dropped
    /// and counted (not the connection: consensus recovers a lost message, a reconnect costs more).
    pub write_buffer_bytes_max: usize,
    /// Concurrent inbound connections that have not finished their handshake, from outsiders'
    /// addresses; connections from the members' addresses have a pool of this size of their
    /// own (see `admission`), so a flood from elsewhere cannot shut a peer out.
    pub handshakes_max: usize,
    /// Unfinished inbound handshakes from one source address (an IPv6 /64) that is not a
    /// member's, so filling `handshakes_max` takes many addresses.
    pub handshakes_per_addr_max: usize,
    /// Concurrent connections other than peer links (clients and unfinished inbound
    /// handshakes). Peer links (at most one per peer) come on top, so clients can never take
    /// the room a peer needs to get back in; so does one unfinished handshake per peer that
    /// dials us and has no link (a client that finishes one there is closed).
    pub connections_max: usize,
    /// A handshake not finished within this closes the connection.
    pub handshake_timeout_ms: u64,
    /// First and largest delay before redialling a peer; doubles per failure.
    pub reconnect_backoff_ms_min: u64,
    pub reconnect_backoff_ms_max: u64,
    /// Capacity of the channel of received frames (to the verifier pool).
    pub inbound_channel_frames_max: usize,
    /// Bytes of received frames in that channel; a frame that would pass it waits (its
    /// connection stops reading) unless the channel is empty.
    pub inbound_channel_bytes_max: usize,
    /// Capacity of the channel of frames to send.
    pub outbound_channel_frames_max: usize,
    /// Bytes of frames in that channel; a sender waits (or `try_send` is refused) beyond it,
    /// unless the channel is empty.
    pub outbound_channel_bytes_max: usize,
    /// Bytes read from one connection per readiness event before others get a turn.
    pub read_bytes_per_event_max: usize,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            // One MiB of ops (`VerifierLimits::default`) plus the frame around them.
            client_frame_bytes_max: (1 << 20) + 1024,
            client_partial_frames_bytes_max: 64 << 20,
            frame_timeout_ms: 30_000,
            write_buffer_bytes_max: 64 << 20,
            handshakes_max: 64,
            handshakes_per_addr_max: 8,
            connections_max: 1024,
            handshake_timeout_ms: 5_000,
            reconnect_backoff_ms_min: 50,
            reconnect_backoff_ms_max: 5_000,
            inbound_channel_frames_max: 4096,
            inbound_channel_bytes_max: 256 << 20,
            outbound_channel_frames_max: 4096,
            outbound_channel_bytes_max: 256 << 20,
            read_bytes_per_event_max: 1 << 20,
        }
    }
}

/// Everything a [`super::Transport`] needs to start.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub self_id: NodeId,
    /// Where peers and clients connect (port 0 picks a free port; see `Transport::local_addr`).
    pub listen_addr: SocketAddr,
    /// Our X25519 static private key.
    pub static_private_key: [u8; KEY_BYTES],
    /// The other members; an entry with `self_id` is ignored.
    pub peers: Vec<PeerConfig>,
    pub clients: ClientAccess,
    /// Bound into every handshake (e.g. the cluster id), so links never cross clusters.
    pub prologue: Vec<u8>,
    /// Sent (sealed, best effort) to an inbound link whose key is not allowed, right before
    /// it is closed, so the remote learns why; empty: closed without a word. Opaque here (the
    /// node puts an encoded `NodeFrame::LinkRefused` in it): the transport parses no frames.
    pub refusal_notice: Vec<u8>,
    pub limits: NetLimits,
}

impl TransportConfig {
    /// Checks the invariants in the module doc; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for p in self.peers.iter().filter(|p| p.id != self.self_id) {
            if !ids.insert(p.id) {
                return Err(format!("peers: {} is listed twice", p.id));
            }
            if !keys.insert(p.static_public_key) {
                return Err(format!("peers: {} reuses another peer's static key", p.id));
            }
        }
        if let ClientAccess::AllowList(list) = &self.clients
            && list.iter().any(|k| keys.contains(k))
        {
            return Err("clients: a client key is also a peer key".into());
        }
        self.limits.validate()
    }
}

impl NetLimits {
    fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("client_frame_bytes_max", self.client_frame_bytes_max as u64),
            (
                "client_partial_frames_bytes_max",
                self.client_partial_frames_bytes_max as u64,
            ),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("handshakes_max", self.handshakes_max as u64),
            (
                "handshakes_per_addr_max",
                self.handshakes_per_addr_max as u64,
            ),
            ("connections_max", self.connections_max as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("reconnect_backoff_ms_min", self.reconnect_backoff_ms_min),
            (
                "inbound_channel_frames_max",
                self.inbound_channel_frames_max as u64,
            ),
            (
                "inbound_channel_bytes_max",
                self.inbound_channel_bytes_max as u64,
            ),
            (
                "outbound_channel_frames_max",
                self.outbound_channel_frames_max as u64,
            ),
            (
                "outbound_channel_bytes_max",
                self.outbound_channel_bytes_max as u64,
            ),
            (
                "read_bytes_per_event_max",
                self.read_bytes_per_event_max as u64,
            ),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits: {name} must be above zero"));
        }
        if sealed_len(self.max_frame_bytes.max(self.client_frame_bytes_max)) > u32::MAX as usize {
            return Err("limits: max_frame_bytes does not fit a u32 length prefix".into());
        }
        if self.write_buffer_bytes_max < 4 + sealed_len(self.max_frame_bytes) {
            return Err("limits: write_buffer_bytes_max must hold one largest frame".into());
        }
        if self.reconnect_backoff_ms_max < self.reconnect_backoff_ms_min {
            return Err(
                "limits: reconnect_backoff_ms_max is below reconnect_backoff_ms_min".into(),
            );
        }
        Ok(())
    }
}
