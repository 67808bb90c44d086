//! Who the client talks to ([`ClusterEndpoints`]) and every limit and timer it uses
//! ([`ClientOptions`]).
//!
//! Invariant after [`ClientOptions::validate`]: every duration and bound is non-zero, and the
//! in-flight bound fits inside the nodes' exactly-once window (see `seq`), so a request that is
//! still being retried can never fall out of that window because newer ones committed first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::CLIENT_WINDOW_SEQS;
use crate::config::LoadedClientConfig;
use crate::crypto::{Committee, Signer};
use crate::net::noise::KEY_BYTES;
use crate::types::{ClusterId, NodeId};
use crate::wire::client::CLIENT_FRAME_BYTES_MAX;

/// One cluster member as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// The X25519 static key the node must prove in the handshake.
    pub noise_public_key: [u8; KEY_BYTES],
}

/// Everything needed to reach and talk to one cluster as one client identity.
pub struct ClusterEndpoints {
    pub cluster: ClusterId,
    /// Byzantine members tolerated: a result needs `f + 1` matching replies.
    pub f: usize,
    /// Members in id order: `members[i].id == NodeId(i)`.
    pub members: Vec<Endpoint>,
    /// The client's Ed25519 key: signs every request and is its identity to the state machine.
    pub signer: Signer,
    /// The client's X25519 static secret for the Noise handshakes.
    pub noise_secret: [u8; KEY_BYTES],
    /// The members' Ed25519 keys, to check the certificates of verified reads (`None`:
    /// `Client::get_verified` refuses, having nothing to check against).
    pub committee: Option<Arc<Committee>>,
}

impl ClusterEndpoints {
    /// From a loaded `client.toml` (already checked: ids in order, keys valid, `n >= 3f + 1`).
    pub fn from_config(config: &LoadedClientConfig) -> Self {
        Self {
            cluster: config.cluster,
            f: config.committee.f(),
            members: config
                .members
                .iter()
                .map(|m| Endpoint {
                    id: m.id,
                    addr: m.addr,
                    noise_public_key: m.noise_public_key,
                })
                .collect(),
            signer: config.signer(),
            noise_secret: *config.noise_secret(),
            committee: Some(Arc::new(config.committee.clone())),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.members.is_empty() {
            return Err("the cluster has no members".into());
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.id.index() != i {
                return Err(format!(
                    "members[{i}] has id {}; ids must be 0..n in order",
                    m.id
                ));
            }
        }
        if self.members.len() < 3 * self.f + 1 {
            return Err(format!(
                "cluster has {} members but f = {} needs at least {}",
                self.members.len(),
                self.f,
                3 * self.f + 1
            ));
        }
        let f_max = (self.members.len() - 1) / 3;
        if self.f < f_max {
            return Err(format!(
                "f = {} with {} members: the cluster tolerates f = {f_max}, and a client that \
                 accepts fewer than f + 1 = {} matching replies can be fooled by one lying node",
                self.f,
                self.members.len(),
                f_max + 1
            ));
        }
        Ok(())
    }
}

/// Limits and timers of one client. `Default` suits a LAN cluster.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Give up on a request (with an error naming every node's answer) after this.
    pub request_timeout: Duration,
    /// Re-send a request to nodes that have not replied (or said busy) this often.
    pub resend_interval: Duration,
    /// Requests in flight at once, counted as the span of seqs from the oldest unfinished one;
    /// `submit` blocks while it is reached. At most the nodes' window of 256 seqs.
    pub in_flight_max: usize,
    /// Largest frame sent or accepted (plaintext bytes); a node announcing more is dropped.
    pub frame_bytes_max: usize,
    /// Frames queued per link for its writer thread; more are dropped (the resend covers it).
    pub link_queue_frames_max: usize,
    pub connect_timeout: Duration,
    /// An unfinished handshake, or a write the node does not drain, closes the link after this.
    pub io_timeout: Duration,
    /// First and largest delay before redialling a node; doubles per failure.
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// How long `status()` and `get_stale()` wait for answers.
    pub query_timeout: Duration,
    /// Fail a request at once when so many nodes refuse connections (nothing listens) that
    /// `f + 1` answers cannot come; `false` waits for them until the request timeout, which
    /// suits a long-lived client started with its cluster (calls made before a link is up are
    /// sent when it comes up). `bftctl` sets it: a person wants "connection refused" now.
    /// A node of another cluster, or one that refuses this client's key, fails a request at
    /// once either way: waiting does not change those.
    pub refused_fails_fast: bool,
    /// How `Client::get` reads: by read barrier (default) or ordered through consensus.
    pub read_mode: ReadMode,
    /// How long a barrier read waits for `f + 1` identical values before `get` falls back to
    /// an ordered read.
    pub barrier_timeout: Duration,
}

/// How a linearizable `get` is served. Both are linearizable; see README "Read modes".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Every node answers from its applied state once it passed a read barrier (a quorum's
    /// highest QC, committed); `f + 1` identical values. Falls back to `Ordered` when the
    /// barrier does not give that in `barrier_timeout` (e.g. nodes at different versions of
    /// a key under concurrent writes, or too few members up).
    #[default]
    Barrier,
    /// A signed request ordered in a block, like a write.
    Ordered,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            resend_interval: Duration::from_millis(1000),
            in_flight_max: 128,
            frame_bytes_max: 16 << 20,
            link_queue_frames_max: 1024,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            query_timeout: Duration::from_secs(3),
            refused_fails_fast: false,
            read_mode: ReadMode::Barrier,
            barrier_timeout: Duration::from_secs(2),
        }
    }
}

impl ClientOptions {
    /// Checks the invariant in the module doc; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            ("request_timeout", self.request_timeout),
            ("resend_interval", self.resend_interval),
            ("connect_timeout", self.connect_timeout),
            ("io_timeout", self.io_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("query_timeout", self.query_timeout),
            ("barrier_timeout", self.barrier_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("client options: {name} must be above zero"));
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(
                "client options: reconnect_backoff_max is below reconnect_backoff_min".into(),
            );
        }
        if self.in_flight_max == 0 || self.in_flight_max as u64 > CLIENT_WINDOW_SEQS {
            return Err(format!(
                "client options: in_flight_max must be 1..={CLIENT_WINDOW_SEQS} (the nodes' \
                 exactly-once window), not {}",
                self.in_flight_max
            ));
        }
        if self.frame_bytes_max == 0 || self.frame_bytes_max > CLIENT_FRAME_BYTES_MAX {
            return Err(format!(
                "client options: frame_bytes_max must be 1..={CLIENT_FRAME_BYTES_MAX}"
            ));
        }
        if self.link_queue_frames_max == 0 {
            return Err("client options: link_queue_frames_max must be above zero".into());
        }
        Ok(())
    }
}
