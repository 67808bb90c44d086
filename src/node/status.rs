//! The node's status as the threads publish it: the consensus thread writes round, leader,
//! committed height and the latest certified root; the storage thread writes the applied height
//! and its state digest.
//! Readers (status requests, health) take a copy. Writes are a few words under a
//! `parking_lot` mutex, once per handled event batch. The consensus thread also publishes
//! whether the state is diverged from the certified roots (the verifier threads then refuse
//! stale reads, and `/health` says so).

use std::time::Instant;

use parking_lot::Mutex;

use crate::consensus::Divergence;
use crate::wire::NodeStatus;

pub struct StatusBoard {
    started: Instant,
    inner: Mutex<NodeStatus>,
    divergence: Mutex<Option<Divergence>>,
}

impl StatusBoard {
    pub fn new(node_id: u16) -> Self {
        Self {
            started: Instant::now(),
            inner: Mutex::new(NodeStatus {
                node_id,
                round: 0,
                leader: 0,
                committed_height: 0,
                applied_height: 0,
                state_digest: [0; 32],
                certified_height: 0,
                certified_root: [0; 32],
                uptime_ms: 0,
                mempool_requests: 0,
                peers_connected: 0,
            }),
            divergence: Mutex::new(None),
        }
    }

    pub fn set_divergence(&self, d: Option<Divergence>) {
        *self.divergence.lock() = d;
    }

    /// `Some` while this node's state differs from a root the chain certified.
    pub fn divergence(&self) -> Option<Divergence> {
        *self.divergence.lock()
    }

    pub fn update(&self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.inner.lock());
    }

    pub fn snapshot(&self) -> NodeStatus {
        let mut s = self.inner.lock().clone();
        s.uptime_ms = self.started.elapsed().as_millis() as u64;
        s
    }
}
