//! The node's status as the threads publish it: the consensus thread writes round, leader,
//! committed height and the latest certified root; the storage thread writes the applied height
//! and its state digest.
//! Readers (status requests, health) take a copy. Writes are a few words under a
//! `parking_lot` mutex, once per handled event batch. The consensus thread also publishes
//! whether the state is diverged from the certified roots (the verifier threads then refuse
//! stale reads, and `/health` says so), and the certificates of the newest certified state
//! roots (the last [`CERTIFICATES_KEPT`], heights increasing), which verified reads send.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::consensus::Divergence;
use crate::types::{Height, RootCertificate};
use crate::wire::NodeStatus;

pub struct StatusBoard {
    started: Instant,
    inner: Mutex<NodeStatus>,
    divergence: Mutex<Option<Divergence>>,
    certificates: Mutex<VecDeque<Arc<RootCertificate>>>,
}

/// Root certificates kept: a verified read needs one for a height the KV store can still read
/// (at most its undo log's depth below the applied height), and the newest certified root
/// usually lags the applied height by two or three blocks.
pub const CERTIFICATES_KEPT: usize = 64;

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
                applied_block_time_ms: 0,
                state_digest: [0; 32],
                certified_height: 0,
                certified_root: [0; 32],
                uptime_ms: 0,
                mempool_requests: 0,
                peers_connected: 0,
            }),
            divergence: Mutex::new(None),
            certificates: Mutex::new(VecDeque::new()),
        }
    }

    pub fn set_divergence(&self, d: Option<Divergence>) {
        *self.divergence.lock() = d;
    }

    /// `Some` while this node's state differs from a root the chain certified.
    pub fn divergence(&self) -> Option<Divergence> {
        *self.divergence.lock()
    }

    /// Keeps `cert` if it certifies a height above every kept one.
    pub fn offer_certificate(&self, cert: Arc<RootCertificate>) {
        let mut certs = self.certificates.lock();
        if certs.back().is_some_and(|c| c.height >= cert.height) {
            return;
        }
        if certs.len() >= CERTIFICATES_KEPT {
            certs.pop_front();
        }
        certs.push_back(cert);
    }

    /// The kept certificate of the highest height in `lowest..=highest`.
    pub fn certificate_within(
        &self,
        lowest: Height,
        highest: Height,
    ) -> Option<Arc<RootCertificate>> {
        let certs = self.certificates.lock();
        certs
            .iter()
            .rev()
            .find(|c| c.height <= highest)
            .filter(|c| c.height >= lowest)
            .cloned()
    }

    /// The height of the newest kept certificate.
    pub fn newest_certified_height(&self) -> Option<Height> {
        self.certificates.lock().back().map(|c| c.height)
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
