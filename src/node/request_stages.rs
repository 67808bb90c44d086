//! The latency budget of the requests this node proposes: where the time between a request's
//! arrival and its reply goes, stage by stage, as the `bftd_request_stage_seconds{stage}`
//! histograms.
//!
//! Stages, in order (each from the end of the previous one):
//! - `verify`: arrival at the node (its reply route registered) to the consensus thread
//!   receiving it verified (network thread, verifier queue and signature check);
//! - `wait_proposal`: to the leader persisting its own block that carries it (the request
//!   waits in the mempool for the next proposal);
//! - `block_durable`: to that persist being durable (the consensus WAL fsync);
//! - `qc`: to the block's QC being this node's high QC (proposal sent, votes back, verified);
//! - `commit`: to the commit of the block (the next round's QC under 2-chain commit);
//! - `apply`: to the storage thread having applied the block to the state;
//! - `reply`: to the reply leaving (right after the apply: it does not wait for the state WAL's
//!   fsync, see `storage_loop`);
//! - `total`: arrival to reply (the same span as `bftd_commit_latency_seconds`).
//!
//! Timestamps come from the runtime threads (the consensus core has no clock): the consensus
//! thread reports receipt, proposal, durable tickets, QCs and commits; the storage thread
//! applies and replies. Only requests in blocks this node authored are timed, so the
//! histograms are the leader's view; a request whose stamps were forgotten goes untimed.
//!
//! Invariants: memory is bounded ([`RECEIVED_MAX`] requests, [`BLOCKS_MAX`] blocks, each
//! with the requests of its payload; the oldest are forgotten first); every stamp is taken
//! once, the first time its event is seen; a request is observed at most once (its entry is
//! removed when it is).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use parking_lot::Mutex;

use super::histogram::{FINE_BOUNDS_SECONDS, Histogram, HistogramSnapshot};
use crate::types::{BlockId, RequestId};

/// Requests remembered between receipt and proposal.
pub const RECEIVED_MAX: usize = 8192;
/// Own blocks remembered between proposal and the last reply.
pub const BLOCKS_MAX: usize = 256;

/// The stage names, in order, as the `stage` label shows them.
pub const STAGE_NAMES: [&str; 8] = [
    "verify",
    "wait_proposal",
    "block_durable",
    "qc",
    "commit",
    "apply",
    "reply",
    "total",
];

struct BlockStamps {
    ticket: u64,
    proposed: Instant,
    durable: Option<Instant>,
    qc: Option<Instant>,
    committed: Option<Instant>,
    applied: Option<Instant>,
    /// The payload's requests not replied to yet, with their receipt by the consensus thread.
    requests: HashMap<RequestId, Option<Instant>>,
}

#[derive(Default)]
struct Inner {
    received: HashMap<RequestId, Instant>,
    received_order: VecDeque<RequestId>,
    blocks: HashMap<BlockId, BlockStamps>,
    block_order: VecDeque<BlockId>,
    /// The tracked block each proposed request rides in.
    request_block: HashMap<RequestId, BlockId>,
}

pub struct RequestStages {
    inner: Mutex<Inner>,
    histograms: [Histogram; STAGE_NAMES.len()],
}

impl Default for RequestStages {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            histograms: std::array::from_fn(|_| Histogram::with_bounds(&FINE_BOUNDS_SECONDS)),
        }
    }
}

impl RequestStages {
    /// Consensus thread: a verified request reached it.
    pub fn received(&self, id: RequestId, now: Instant) {
        let mut g = self.inner.lock();
        if g.received.insert(id, now).is_none() {
            g.received_order.push_back(id);
        }
        while g.received.len() > RECEIVED_MAX {
            let Some(old) = g.received_order.pop_front() else {
                break;
            };
            g.received.remove(&old);
        }
        // `received_order` may hold ids already proposed; keep it bounded too.
        if g.received_order.len() > RECEIVED_MAX * 2 {
            let Inner {
                received,
                received_order,
                ..
            } = &mut *g;
            received_order.retain(|k| received.contains_key(k));
        }
    }

    /// Consensus thread: this node persists its own block `id` (persist ticket `ticket`)
    /// carrying `requests`, before proposing it.
    pub fn proposed(
        &self,
        id: BlockId,
        ticket: u64,
        requests: impl Iterator<Item = RequestId>,
        now: Instant,
    ) {
        let mut g = self.inner.lock();
        if g.blocks.contains_key(&id) {
            return;
        }
        let mut stamps = BlockStamps {
            ticket,
            proposed: now,
            durable: None,
            qc: None,
            committed: None,
            applied: None,
            requests: HashMap::new(),
        };
        for r in requests {
            let received = g.received.remove(&r);
            stamps.requests.insert(r, received);
            g.request_block.insert(r, id);
        }
        if stamps.requests.is_empty() {
            return;
        }
        g.blocks.insert(id, stamps);
        g.block_order.push_back(id);
        while g.blocks.len() > BLOCKS_MAX {
            let Some(old) = g.block_order.pop_front() else {
                break;
            };
            g.forget_block(&old);
        }
        // Blocks replied to in full leave their id in `block_order`; keep it bounded.
        if g.block_order.len() > BLOCKS_MAX * 2 {
            let Inner {
                blocks,
                block_order,
                ..
            } = &mut *g;
            block_order.retain(|k| blocks.contains_key(k));
        }
    }

    /// Consensus thread: every persist up to `ticket` is durable.
    pub fn durable(&self, ticket: u64, now: Instant) {
        let mut g = self.inner.lock();
        for b in g.blocks.values_mut() {
            if b.durable.is_none() && b.ticket <= ticket {
                b.durable = Some(now);
            }
        }
    }

    /// Consensus thread: block `id` is certified (this node's high QC names it).
    pub fn certified(&self, id: &BlockId, now: Instant) {
        if let Some(b) = self.inner.lock().blocks.get_mut(id) {
            b.qc.get_or_insert(now);
        }
    }

    /// Consensus thread: block `id` is committed.
    pub fn committed(&self, id: &BlockId, now: Instant) {
        if let Some(b) = self.inner.lock().blocks.get_mut(id) {
            b.committed.get_or_insert(now);
        }
    }

    /// Storage thread: block `id` is applied to the state (not yet durable).
    pub fn applied(&self, id: &BlockId, now: Instant) {
        if let Some(b) = self.inner.lock().blocks.get_mut(id) {
            b.applied.get_or_insert(now);
        }
    }

    /// Storage thread: the reply to request `id`, which arrived at `arrived`, leaves now.
    /// Observes its stages if it rode in a tracked block with every stamp taken.
    pub fn replied(&self, id: &RequestId, arrived: Instant, now: Instant) {
        let mut g = self.inner.lock();
        let Some(block_id) = g.request_block.remove(id) else {
            return;
        };
        let Some(b) = g.blocks.get_mut(&block_id) else {
            return;
        };
        let received = b.requests.remove(id).flatten();
        let stamps = (received, b.durable, b.qc, b.committed, b.applied);
        let proposed = b.proposed;
        if b.requests.is_empty() {
            g.forget_block(&block_id);
        }
        drop(g);
        let (Some(received), Some(durable), Some(qc), Some(committed), Some(applied)) = stamps
        else {
            return;
        };
        let points = [
            arrived, received, proposed, durable, qc, committed, applied, now,
        ];
        for (h, w) in self.histograms.iter().zip(points.windows(2)) {
            h.observe(w[1].saturating_duration_since(w[0]));
        }
        self.histograms[STAGE_NAMES.len() - 1].observe(now.saturating_duration_since(arrived));
    }

    /// Copies of the histograms, in [`STAGE_NAMES`] order.
    pub fn snapshots(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        STAGE_NAMES
            .iter()
            .zip(&self.histograms)
            .map(|(name, h)| (*name, h.snapshot()))
            .collect()
    }
}

impl Inner {
    fn forget_block(&mut self, id: &BlockId) {
        if let Some(b) = self.blocks.remove(id) {
            for r in b.requests.keys() {
                if self.request_block.get(r) == Some(id) {
                    self.request_block.remove(r);
                }
            }
        }
        // `block_order` may name it still; it is skipped when popped.
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::ClientKey;

    fn rid(seq: u64) -> RequestId {
        RequestId {
            client: ClientKey([1; 32]),
            session: 7,
            seq,
        }
    }

    #[test]
    fn a_request_through_every_stage_is_observed_once() {
        let s = RequestStages::default();
        let t0 = Instant::now();
        let at = |us| t0 + Duration::from_micros(us);
        let block = BlockId([3; 32]);
        s.received(rid(1), at(100));
        s.proposed(block, 5, [rid(1)].into_iter(), at(300));
        s.durable(4, at(350)); // an earlier ticket: not this block's
        s.durable(5, at(600));
        s.certified(&block, at(1_600));
        s.committed(&block, at(2_600));
        s.applied(&block, at(2_700));
        s.replied(&rid(1), t0, at(3_000));
        s.replied(&rid(1), t0, at(4_000)); // a second reply is not timed again
        let snaps = s.snapshots();
        let sums: Vec<f64> = snaps.iter().map(|(_, h)| h.sum_seconds).collect();
        let want = [100e-6, 200e-6, 300e-6, 1e-3, 1e-3, 100e-6, 300e-6, 3e-3];
        for ((name, h), w) in snaps.iter().zip(want) {
            assert_eq!(h.count, 1, "{name}");
            assert!((h.sum_seconds - w).abs() < 1e-9, "{name}: {sums:?}");
        }
    }

    #[test]
    fn untracked_or_incomplete_requests_are_not_observed_and_memory_is_bounded() {
        let s = RequestStages::default();
        let now = Instant::now();
        s.replied(&rid(9), now, now); // never proposed here
        let block = BlockId([4; 32]);
        s.proposed(block, 1, [rid(2)].into_iter(), now); // never received: no `verify` stamp
        s.durable(1, now);
        s.certified(&block, now);
        s.committed(&block, now);
        s.applied(&block, now);
        s.replied(&rid(2), now, now);
        assert!(s.snapshots().iter().all(|(_, h)| h.count == 0));
        for seq in 0..(RECEIVED_MAX as u64 * 3) {
            s.received(rid(seq), now);
        }
        for i in 0..(BLOCKS_MAX * 2) {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.proposed(BlockId(id), 1, [rid(i as u64)].into_iter(), now);
        }
        let g = s.inner.lock();
        assert!(g.received.len() <= RECEIVED_MAX);
        assert!(g.received_order.len() <= RECEIVED_MAX * 2);
        assert_eq!(g.blocks.len(), BLOCKS_MAX);
        assert_eq!(g.request_block.len(), BLOCKS_MAX);
        drop(g);
        // Blocks replied to in full leave nothing behind.
        for i in 0..(BLOCKS_MAX * 3) {
            let mut id = [9u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let r = rid(1_000_000 + i as u64);
            s.proposed(BlockId(id), 1, [r].into_iter(), now);
            s.replied(&r, now, now);
        }
        assert!(s.inner.lock().block_order.len() <= BLOCKS_MAX * 2);
    }
}
