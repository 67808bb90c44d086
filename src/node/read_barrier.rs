//! Linearizable reads without ordering each one: a read barrier (etcd's ReadIndex, made
//! Byzantine-tolerant). Pure bookkeeping, driven by the consensus thread; no I/O, no clock.
//!
//! A client sends `BarrierGet` to every member. Each node queues the reads it receives; all
//! reads queued while no probe is in flight share the next barrier:
//! 1. **Probe.** The node asks every member for its highest QC (`ReadMsg::Probe` with a fresh
//!    nonce) and counts its own high QC as one answer. An answer counts only if its QC
//!    verifies (the verifier pool checks it, once per QC) and it names the probe's nonce.
//! 2. **Barrier.** With answers from `q = 2f + 1` distinct members, the barrier round `R` is
//!    the highest QC round among them.
//! 3. **Serve.** Once this node has committed a block of round `R` or higher, the barrier
//!    height is its committed height then; the reads are served from the applied state once
//!    it reached that height (the storage thread serves them after the commits queued before).
//!
//! Why a served read reflects every write `W` acknowledged before the read started (the
//! argument against our 2-chain protocol, `consensus::core`):
//! - `W` was acknowledged by `f + 1` identical replies, so at least one honest node applied
//!   it: `W`'s block committed. A commit needs a QC on a block `B` whose parent `P` has round
//!   `round(B) - 1`; `P` and its ancestors (`W`'s block among them) commit. That QC holds the
//!   votes of `q` members for `B`, and an honest member raises its high QC to `B`'s QC on `P`
//!   and makes it durable before it votes (`Core::on_proposal` observes the block's QC first;
//!   votes wait for persistence). High QCs only grow, across restarts too.
//! - Our probe left after the read arrived, so every answer it counts was produced after the
//!   read started (the nonce is fresh per barrier and random per process, so no answer to an
//!   older probe, even one from before a restart, can count). `q` answers and those `q`
//!   voters share `2q - n >= f + 1` members, so at least one honest member answered with a
//!   QC of round `>= round(P)`; `R >= round(P)`. A Byzantine member can only raise `R` with a
//!   valid QC (which exists, so waiting for it ends) and cannot lower it below that answer.
//! - Committed blocks form one chain ordered by round. A committed block of round
//!   `>= round(P)` is therefore `P` or a descendant of `P`, so this node's committed height
//!   when it first commits such a block is at least `height(P)`, and the state served
//!   contains `W`. Every block in that state committed before the reply was sent, so the
//!   state lies between the read's start and its reply.
//! - The client takes `f + 1` identical values (value, version, `mod_height`, expiry; heights
//!   may differ between nodes), so at least one honest node vouches for the value. Two reads
//!   one after the other: the first returned a value that was in a committed state at height
//!   `h1` of an honest node; the same argument makes the second one's state at least `h1`.
//!
//! Liveness: the block the highest QC certifies commits only when the chain grows by a block
//! whose round is the next one. A node that answers a probe, and a node whose barrier waits,
//! tell its core `ReadsWaiting { round }`, so a leader proposes an empty block when nothing
//! else moves the chain. A barrier that cannot finish in time (no quorum of answers, a stuck
//! chain) answers `Unavailable` and the client falls back to an ordered get.
//!
//! Bounds: `queued_max` reads per node (queued, probing and waiting together), `per_conn_max`
//! per client link, one probe in flight; refusals are counted by the caller.

use std::collections::HashMap;

use crate::net::ClientId;
use crate::types::{NodeId, Round};

/// One client read waiting for its barrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRead {
    pub conn: ClientId,
    pub id: u64,
    pub key: Vec<u8>,
}

/// Limits of one node's barrier bookkeeping.
#[derive(Clone, Copy, Debug)]
pub struct BarrierLimits {
    /// Reads held in all stages together.
    pub queued_max: usize,
    /// Reads held per client link.
    pub per_conn_max: usize,
    /// A probe without a quorum of answers after this long gives up its reads.
    pub probe_timeout_ms: u64,
    /// A barrier whose round has not committed after this long gives up its reads.
    pub commit_timeout_ms: u64,
}

impl Default for BarrierLimits {
    fn default() -> Self {
        Self {
            queued_max: 16_384,
            per_conn_max: 1_024,
            probe_timeout_ms: 1_000,
            commit_timeout_ms: 2_000,
        }
    }
}

/// Why a read was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRefusal {
    /// The node holds `queued_max` reads.
    NodeFull,
    /// This client link holds `per_conn_max` reads.
    ConnFull,
}

/// The probe in flight.
struct Probe {
    nonce: u64,
    started_ms: u64,
    answered: Vec<bool>,
    answers: usize,
    round_max: Round,
    reads: Vec<PendingRead>,
}

/// A barrier whose round is known, waiting for this node to commit a block of that round.
struct Waiting {
    round: Round,
    started_ms: u64,
    probed_ms: u64,
    reads: Vec<PendingRead>,
}

/// Reads that may now be served: from a state at `height` or above.
#[derive(Debug, PartialEq, Eq)]
pub struct Ready {
    pub height: u64,
    pub reads: Vec<PendingRead>,
    /// When the barrier's probe started, and when its quorum answered (the caller's clock).
    pub started_ms: u64,
    pub probed_ms: u64,
}

pub struct ReadBarrier {
    me: NodeId,
    n: usize,
    quorum: usize,
    limits: BarrierLimits,
    queued: Vec<PendingRead>,
    probe: Option<Probe>,
    waiting: Vec<Waiting>,
    per_conn: HashMap<ClientId, usize>,
    held: usize,
    next_nonce: u64,
}

impl ReadBarrier {
    /// `nonce_seed` must differ between runs of the process (the caller draws it from OS
    /// randomness): answers to a probe of an earlier run must never match a new one.
    pub fn new(
        me: NodeId,
        n: usize,
        quorum: usize,
        limits: BarrierLimits,
        nonce_seed: u64,
    ) -> Self {
        Self {
            me,
            n,
            quorum,
            limits,
            queued: Vec::new(),
            probe: None,
            waiting: Vec::new(),
            per_conn: HashMap::new(),
            held: 0,
            next_nonce: nonce_seed,
        }
    }

    /// Reads held in all stages.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Queues a read for the next barrier.
    pub fn offer(&mut self, read: PendingRead) -> Result<(), ReadRefusal> {
        if self.held >= self.limits.queued_max {
            return Err(ReadRefusal::NodeFull);
        }
        let per = self.per_conn.entry(read.conn).or_insert(0);
        if *per >= self.limits.per_conn_max {
            return Err(ReadRefusal::ConnFull);
        }
        *per += 1;
        self.held += 1;
        self.queued.push(read);
        Ok(())
    }

    /// Starts a probe for the queued reads if none is in flight: returns its nonce, to send
    /// to every other member. `own_high_qc_round` is this node's answer, taken now (after
    /// every queued read arrived). With `quorum == 1` the barrier is complete at once.
    pub fn start_probe(&mut self, now_ms: u64, own_high_qc_round: Round) -> Option<u64> {
        if self.probe.is_some() || self.queued.is_empty() {
            return None;
        }
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        let mut answered = vec![false; self.n];
        if let Some(slot) = answered.get_mut(self.me.index()) {
            *slot = true;
        }
        self.probe = Some(Probe {
            nonce,
            started_ms: now_ms,
            answered,
            answers: 1,
            round_max: own_high_qc_round,
            reads: std::mem::take(&mut self.queued),
        });
        self.maybe_complete(now_ms);
        Some(nonce)
    }

    /// A verified answer: `from`'s high QC has round `round`. Returns the barrier round if
    /// this answer completed the probe. Answers to another nonce, repeats and unknown members
    /// are ignored.
    pub fn on_answer(
        &mut self,
        now_ms: u64,
        from: NodeId,
        nonce: u64,
        round: Round,
    ) -> Option<Round> {
        let probe = self.probe.as_mut()?;
        if probe.nonce != nonce {
            return None;
        }
        let slot = probe.answered.get_mut(from.index())?;
        if *slot {
            return None;
        }
        *slot = true;
        probe.answers += 1;
        probe.round_max = probe.round_max.max(round);
        self.maybe_complete(now_ms)
    }

    fn maybe_complete(&mut self, now_ms: u64) -> Option<Round> {
        if self.probe.as_ref()?.answers < self.quorum {
            return None;
        }
        let probe = self.probe.take()?;
        self.waiting.push(Waiting {
            round: probe.round_max,
            started_ms: probe.started_ms,
            probed_ms: now_ms,
            reads: probe.reads,
        });
        Some(probe.round_max)
    }

    /// The highest barrier round still waiting for a commit (for `ReadsWaiting`).
    pub fn round_wanted(&self) -> Option<Round> {
        self.waiting.iter().map(|w| w.round).max()
    }

    /// The barriers this node's commits now cover: its committed block has round
    /// `committed_round` and height `committed_height`.
    pub fn ready(&mut self, committed_round: Round, committed_height: u64) -> Vec<Ready> {
        if !self.waiting.iter().any(|w| w.round <= committed_round) {
            return Vec::new();
        }
        let (done, keep): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.round <= committed_round);
        self.waiting = keep;
        done.into_iter()
            .map(|w| {
                self.release(&w.reads);
                Ready {
                    height: committed_height,
                    reads: w.reads,
                    started_ms: w.started_ms,
                    probed_ms: w.probed_ms,
                }
            })
            .collect()
    }

    /// The reads whose probe or commit wait ran out of time, forgotten: the caller answers
    /// them `Unavailable`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<PendingRead> {
        let mut out = Vec::new();
        if let Some(p) = &self.probe
            && now_ms.saturating_sub(p.started_ms) >= self.limits.probe_timeout_ms
            && let Some(p) = self.probe.take()
        {
            out.extend(p.reads);
        }
        let timeout = self.limits.commit_timeout_ms;
        let (late, keep): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now_ms.saturating_sub(w.probed_ms) >= timeout);
        self.waiting = keep;
        out.extend(late.into_iter().flat_map(|w| w.reads));
        self.release(&out);
        out
    }

    /// Whether anything has a deadline (the caller then checks `expire` regularly).
    pub fn is_busy(&self) -> bool {
        self.probe.is_some() || !self.waiting.is_empty() || !self.queued.is_empty()
    }

    fn release(&mut self, reads: &[PendingRead]) {
        for r in reads {
            self.held = self.held.saturating_sub(1);
            if let Some(c) = self.per_conn.get_mut(&r.conn) {
                *c -= 1;
                if *c == 0 {
                    self.per_conn.remove(&r.conn);
                }
            }
        }
    }
}

/// A random first nonce for this process (see [`ReadBarrier::new`]).
pub fn nonce_seed() -> Result<u64, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(conn: u64, id: u64) -> PendingRead {
        PendingRead {
            conn: ClientId([conn as u8; 32], conn),
            id,
            key: b"k".to_vec(),
        }
    }

    fn barrier(limits: BarrierLimits) -> ReadBarrier {
        ReadBarrier::new(NodeId(0), 4, 3, limits, 1000)
    }

    #[test]
    fn a_barrier_needs_a_quorum_of_distinct_answers_to_its_own_nonce() {
        let mut b = barrier(BarrierLimits::default());
        assert_eq!(b.start_probe(0, 5), None, "nothing queued, no probe");
        b.offer(read(1, 1)).unwrap();
        let nonce = b.start_probe(1, 5).unwrap();
        assert_eq!(
            b.on_answer(2, NodeId(1), nonce + 1, 9),
            None,
            "another nonce"
        );
        assert_eq!(
            b.on_answer(2, NodeId(0), nonce, 9),
            None,
            "own answer counts once"
        );
        assert_eq!(b.on_answer(2, NodeId(9), nonce, 9), None, "not a member");
        assert_eq!(b.on_answer(2, NodeId(1), nonce, 7), None);
        assert_eq!(b.on_answer(2, NodeId(1), nonce, 30), None, "repeat");
        assert_eq!(
            b.on_answer(3, NodeId(2), nonce, 6),
            Some(7),
            "highest of the quorum"
        );
        assert_eq!(b.round_wanted(), Some(7));
        assert!(b.ready(6, 10).is_empty(), "round 7 not committed yet");
        let ready = b.ready(8, 11);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].height, 11);
        assert_eq!(ready[0].reads, vec![read(1, 1)]);
        assert_eq!((ready[0].started_ms, ready[0].probed_ms), (1, 3));
        assert_eq!(b.held(), 0);
        assert!(!b.is_busy());
    }

    #[test]
    fn reads_queued_during_a_probe_wait_for_the_next_one() {
        let mut b = barrier(BarrierLimits::default());
        b.offer(read(1, 1)).unwrap();
        let first = b.start_probe(0, 3).unwrap();
        b.offer(read(1, 2)).unwrap();
        assert_eq!(b.start_probe(0, 3), None, "one probe in flight");
        b.on_answer(1, NodeId(1), first, 3);
        b.on_answer(1, NodeId(2), first, 3);
        // A late answer to the first probe must not count for the second.
        let second = b.start_probe(2, 4).unwrap();
        assert_ne!(first, second);
        assert_eq!(b.on_answer(3, NodeId(3), first, 50), None);
        b.on_answer(3, NodeId(1), second, 4);
        assert_eq!(b.on_answer(3, NodeId(2), second, 4), Some(4));
        let ready = b.ready(3, 9);
        assert_eq!(ready.len(), 1, "only the first barrier is covered");
        assert_eq!(ready[0].reads, vec![read(1, 1)]);
        assert_eq!(b.ready(4, 10)[0].reads, vec![read(1, 2)]);
    }

    #[test]
    fn reads_are_bounded_per_node_and_per_link() {
        let limits = BarrierLimits {
            queued_max: 3,
            per_conn_max: 2,
            ..BarrierLimits::default()
        };
        let mut b = barrier(limits);
        b.offer(read(1, 1)).unwrap();
        b.offer(read(1, 2)).unwrap();
        assert_eq!(b.offer(read(1, 3)), Err(ReadRefusal::ConnFull));
        b.offer(read(2, 1)).unwrap();
        assert_eq!(b.offer(read(3, 1)), Err(ReadRefusal::NodeFull));
        let nonce = b.start_probe(0, 1).unwrap();
        b.on_answer(0, NodeId(1), nonce, 1);
        b.on_answer(0, NodeId(2), nonce, 1);
        assert_eq!(b.ready(1, 1)[0].reads.len(), 3);
        b.offer(read(1, 4)).unwrap();
        b.offer(read(1, 5)).unwrap();
        assert_eq!(b.held(), 2, "served reads free their places");
    }

    #[test]
    fn probes_and_commit_waits_time_out() {
        let limits = BarrierLimits {
            probe_timeout_ms: 10,
            commit_timeout_ms: 20,
            ..BarrierLimits::default()
        };
        let mut b = barrier(limits);
        b.offer(read(1, 1)).unwrap();
        let nonce = b.start_probe(0, 1).unwrap();
        b.on_answer(1, NodeId(1), nonce, 1);
        assert!(b.expire(9).is_empty());
        assert_eq!(b.expire(10), vec![read(1, 1)], "no quorum in time");
        assert_eq!(
            b.on_answer(11, NodeId(2), nonce, 1),
            None,
            "a late answer is ignored"
        );
        b.offer(read(1, 2)).unwrap();
        let nonce = b.start_probe(20, 8).unwrap();
        b.on_answer(21, NodeId(1), nonce, 1);
        b.on_answer(22, NodeId(2), nonce, 1);
        assert_eq!(b.round_wanted(), Some(8));
        assert!(b.expire(41).is_empty());
        assert_eq!(b.expire(42), vec![read(1, 2)], "round 8 never committed");
        assert_eq!(b.held(), 0);
        assert_eq!(b.round_wanted(), None);
    }

    #[test]
    fn a_single_member_cluster_needs_no_answers() {
        let mut b = ReadBarrier::new(NodeId(0), 1, 1, BarrierLimits::default(), 7);
        b.offer(read(1, 1)).unwrap();
        assert_eq!(b.start_probe(0, 4), Some(7));
        assert_eq!(b.round_wanted(), Some(4));
        assert_eq!(b.ready(4, 6)[0].height, 6);
    }
}
