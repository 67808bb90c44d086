//! The node runtime's own counters (the core counts in `CoreStats`, the transport in
//! `NetCounters`): what the verifier pool refused and why, what clients were told, and what
//! the storage thread did. Relaxed atomics: they are statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::VerifyError;
use crate::types::NodeId;
use crate::wire::Refusal;

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn bump(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (set by its one writer).
#[derive(Default, Debug)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct NodeCounters {
    pub peer_frames_undecodable: Counter,
    pub client_frames_undecodable: Counter,
    /// Snapshot requests or answers dropped because a queue was full.
    pub state_frames_dropped: Counter,
    /// Jobs for the serving thread dropped because its queue was full.
    pub serve_jobs_dropped: Counter,
    /// Clients' snapshot requests dropped by their shared rate limit.
    pub client_snapshot_requests_limited: Counter,
    /// Snapshot bytes sent to clients (`bftctl snapshot save`).
    pub client_snapshot_bytes_served: Counter,
    /// Committed blocks sent to syncing peers from the block store.
    pub sync_blocks_served_from_store: Counter,
    /// Sync responses dropped before verification: no request of ours asked that peer for
    /// blocks starting at that height.
    pub sync_responses_unsolicited: Counter,
    pub requests_accepted: Counter,
    pub requests_refused_busy: Counter,
    pub requests_refused_not_authorised: Counter,
    pub requests_refused_invalid: Counter,
    pub replies_sent: Counter,
    pub blocks_applied: Counter,
    pub snapshots_saved: Counter,
    pub snapshots_installed: Counter,
    /// Downloaded snapshots refused: the file's entries do not give the trusted root.
    pub snapshots_rejected: Counter,
    /// Stale reads refused because the state is diverged.
    pub stale_reads_refused: Counter,
    /// Verified reads answered with a proof and a certificate.
    pub verified_reads_served: Counter,
    /// Verified reads refused (diverged, no certified root the store can still read, ...).
    pub verified_reads_refused: Counter,
    /// Linearizable reads answered by read barrier.
    pub barrier_reads_served: Counter,
    /// Barrier reads refused: the node or the link holds its limit of reads, the consensus
    /// queue was full, or the state is diverged.
    pub barrier_reads_refused: Counter,
    /// Barrier reads given up: no quorum of probe answers, or the barrier's round did not
    /// commit in time (the client falls back to an ordered get).
    pub barrier_reads_expired: Counter,
    /// Read-barrier probes this node started, and probe answers it dropped (the QC did not
    /// verify, or the probe was over the per-peer rate).
    pub barrier_probes: Counter,
    pub barrier_answers_invalid: Counter,
    /// State-root reports to the consensus thread dropped on a full queue.
    pub applied_reports_dropped: Counter,
    /// Watch and unwatch commands dropped because the watch thread's queue was full.
    pub watch_commands_dropped: Counter,
    /// Watches evicted by a newer watch of the same client over its limit.
    pub watchers_evicted: Counter,
    /// Watches refused because the node serves its limit already.
    pub watchers_refused: Counter,
    /// `WatchEvents` frames sent.
    pub watch_frames_sent: Counter,
    /// Watches being served.
    pub watchers: Gauge,
    /// Peer messages that failed verification, per peer (index = node id).
    pub peer_messages_rejected: Vec<Counter>,
    /// Of those, the ones with an invalid signature.
    pub peer_bad_signatures: Vec<Counter>,
}

impl NodeCounters {
    pub fn new(members: usize) -> Self {
        Self {
            peer_messages_rejected: (0..members).map(|_| Counter::default()).collect(),
            peer_bad_signatures: (0..members).map(|_| Counter::default()).collect(),
            ..Self::default()
        }
    }

    pub fn rejected_peer_message(&self, from: NodeId, e: &VerifyError) {
        if let Some(c) = self.peer_messages_rejected.get(from.index()) {
            c.bump();
        }
        if matches!(e, VerifyError::BadSignature(_))
            && let Some(c) = self.peer_bad_signatures.get(from.index())
        {
            c.bump();
        }
    }

    pub fn request_refused(&self, why: Refusal) {
        match why {
            Refusal::Busy => self.requests_refused_busy.bump(),
            Refusal::NotAuthorised => self.requests_refused_not_authorised.bump(),
            Refusal::Invalid => self.requests_refused_invalid.bump(),
        }
    }
}
