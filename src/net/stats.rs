//! Counters of the net thread, written with relaxed atomics and readable from any thread.
//!
//! Invariant: every connection the net thread closes for a reason that is the remote's fault
//! bumps exactly one `rejected` counter; every frame dropped on the way out bumps one `dropped`
//! counter. Counters only grow. A snapshot is not atomic across counters (each is exact).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::types::NodeId;

/// Why a connection was closed by us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The handshake carried a static key that is neither a peer's nor an allowed client's,
    /// or (when we dialled) not the key of the peer we dialled.
    UnknownKey,
    /// The Noise handshake failed (bad message, DH failure, unexpected payload).
    HandshakeFailed,
    /// The handshake did not finish within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// A length prefix above the limit (handshake or application frame).
    OversizeFrame,
    /// A frame that did not decrypt or did not fit the chunk layout.
    Garbage,
    /// Refused at accept: too many connections, or no handshake slot (the pool, or the
    /// source address's share of it, is full).
    TooManyConnections,
    /// A peer dialled us although the lower id dials (see `event_loop`).
    WrongDirection,
    /// A frame begun and not finished within `frame_timeout_ms`.
    FrameTimeout,
    /// A client frame that would take the partly received client frames past
    /// `client_partial_frames_bytes_max`.
    MemoryBudget,
}

impl std::fmt::Display for RejectReason {
    /// Words for a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RejectReason::UnknownKey => "its key is not in the config",
            RejectReason::HandshakeFailed => "the handshake failed",
            RejectReason::HandshakeTimeout => "the handshake timed out",
            RejectReason::OversizeFrame => "a frame over the size limit",
            RejectReason::Garbage => "a frame that did not decrypt",
            RejectReason::TooManyConnections => "too many connections",
            RejectReason::WrongDirection => "it dialled though the lower id dials",
            RejectReason::FrameTimeout => "a frame left unfinished too long",
            RejectReason::MemoryBudget => "over the memory budget for partial frames",
        })
    }
}

/// Per-peer traffic. Bytes are application (plaintext) bytes.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub links_established: AtomicU64,
    /// An authenticated link to this peer is up now (set when one is established, cleared
    /// when the current one closes).
    pub link_up: AtomicBool,
}

/// All counters of one transport.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Indexed by `NodeId::index()`; sized to the largest configured id.
    pub peers: Vec<PeerCounters>,
    pub client_frames_in: AtomicU64,
    pub client_bytes_in: AtomicU64,
    pub client_frames_out: AtomicU64,
    pub client_bytes_out: AtomicU64,
    pub client_links_established: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub dials_started: AtomicU64,
    /// Dials that ended before the handshake finished: refused, reset, or timed out. An
    /// unreachable peer is not hostile, so these are not counted as rejections.
    pub dial_failures: AtomicU64,
    /// Links lost to EOF or an I/O error (not our rejection).
    pub disconnects: AtomicU64,
    pub rejected_unknown_key: AtomicU64,
    pub rejected_handshake_failed: AtomicU64,
    pub rejected_handshake_timeout: AtomicU64,
    pub rejected_oversize_frame: AtomicU64,
    pub rejected_garbage: AtomicU64,
    pub rejected_too_many_connections: AtomicU64,
    pub rejected_wrong_direction: AtomicU64,
    pub rejected_frame_timeout: AtomicU64,
    pub rejected_memory_budget: AtomicU64,
    /// Outbound frames dropped: write buffer full, no link to the remote, or above the limit.
    pub dropped_backlog: AtomicU64,
    pub dropped_not_connected: AtomicU64,
    pub dropped_oversize: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl NetCounters {
    pub fn new(peer_slots: usize) -> Self {
        Self {
            peers: (0..peer_slots).map(|_| PeerCounters::default()).collect(),
            ..Self::default()
        }
    }

    pub fn peer(&self, id: NodeId) -> Option<&PeerCounters> {
        self.peers.get(id.index())
    }

    pub(crate) fn reject(&self, reason: RejectReason) {
        let c = match reason {
            RejectReason::UnknownKey => &self.rejected_unknown_key,
            RejectReason::HandshakeFailed => &self.rejected_handshake_failed,
            RejectReason::HandshakeTimeout => &self.rejected_handshake_timeout,
            RejectReason::OversizeFrame => &self.rejected_oversize_frame,
            RejectReason::Garbage => &self.rejected_garbage,
            RejectReason::TooManyConnections => &self.rejected_too_many_connections,
            RejectReason::WrongDirection => &self.rejected_wrong_direction,
            RejectReason::FrameTimeout => &self.rejected_frame_timeout,
            RejectReason::MemoryBudget => &self.rejected_memory_budget,
        };
        bump(c, 1);
    }

    /// A plain copy of every counter.
    pub fn snapshot(&self) -> NetStats {
        NetStats {
            peers: self.peers.iter().map(PeerStats::from).collect(),
            client_frames_in: get(&self.client_frames_in),
            client_bytes_in: get(&self.client_bytes_in),
            client_frames_out: get(&self.client_frames_out),
            client_bytes_out: get(&self.client_bytes_out),
            client_links_established: get(&self.client_links_established),
            connections_accepted: get(&self.connections_accepted),
            dials_started: get(&self.dials_started),
            dial_failures: get(&self.dial_failures),
            disconnects: get(&self.disconnects),
            rejected_unknown_key: get(&self.rejected_unknown_key),
            rejected_handshake_failed: get(&self.rejected_handshake_failed),
            rejected_handshake_timeout: get(&self.rejected_handshake_timeout),
            rejected_oversize_frame: get(&self.rejected_oversize_frame),
            rejected_garbage: get(&self.rejected_garbage),
            rejected_too_many_connections: get(&self.rejected_too_many_connections),
            rejected_wrong_direction: get(&self.rejected_wrong_direction),
            rejected_frame_timeout: get(&self.rejected_frame_timeout),
            rejected_memory_budget: get(&self.rejected_memory_budget),
            dropped_backlog: get(&self.dropped_backlog),
            dropped_not_connected: get(&self.dropped_not_connected),
            dropped_oversize: get(&self.dropped_oversize),
        }
    }
}

/// Snapshot of one peer's [`PeerCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub frames_dropped: u64,
    pub links_established: u64,
    pub link_up: bool,
}

impl From<&PeerCounters> for PeerStats {
    fn from(c: &PeerCounters) -> Self {
        Self {
            frames_in: get(&c.frames_in),
            bytes_in: get(&c.bytes_in),
            frames_out: get(&c.frames_out),
            bytes_out: get(&c.bytes_out),
            frames_dropped: get(&c.frames_dropped),
            links_established: get(&c.links_established),
            link_up: c.link_up.load(Ordering::Relaxed),
        }
    }
}

/// Snapshot of [`NetCounters`]; field meanings are documented there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub peers: Vec<PeerStats>,
    pub client_frames_in: u64,
    pub client_bytes_in: u64,
    pub client_frames_out: u64,
    pub client_bytes_out: u64,
    pub client_links_established: u64,
    pub connections_accepted: u64,
    pub dials_started: u64,
    pub dial_failures: u64,
    pub disconnects: u64,
    pub rejected_unknown_key: u64,
    pub rejected_handshake_failed: u64,
    pub rejected_handshake_timeout: u64,
    pub rejected_oversize_frame: u64,
    pub rejected_garbage: u64,
    pub rejected_too_many_connections: u64,
    pub rejected_wrong_direction: u64,
    pub rejected_frame_timeout: u64,
    pub rejected_memory_budget: u64,
    pub dropped_backlog: u64,
    pub dropped_not_connected: u64,
    pub dropped_oversize: u64,
}

impl NetStats {
    /// Connections closed for any [`RejectReason`].
    pub fn rejected_total(&self) -> u64 {
        self.rejected_unknown_key
            + self.rejected_handshake_failed
            + self.rejected_handshake_timeout
            + self.rejected_oversize_frame
            + self.rejected_garbage
            + self.rejected_too_many_connections
            + self.rejected_wrong_direction
            + self.rejected_frame_timeout
            + self.rejected_memory_budget
    }
}
