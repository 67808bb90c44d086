//! [`Core`]: one node's consensus state machine. See the module docs of [`super`] for the
//! rules; this file wires them to events and actions.
//!
//! Flow of one `handle` call: apply the event (certificates first, then the message itself),
//! try to propose, flush the persist batch built during the call as one `Persist` action, and
//! set the timer. Messages that depend on that batch wait in `deferred` until the runtime
//! reports the ticket durable.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use super::block_tree::{BlockTree, InsertOutcome, Segment};
use super::leader::{self, LeaderDecision};
use super::mempool::{AddOutcome, Mempool};
use super::pacemaker::Pacemaker;
use super::roots::{Divergence, RootBook, RootCheck};
use super::sync::SyncState;
use super::timeouts::TimeoutAggregator;
use super::votes::{VoteAggregator, VoteOutcome};
use super::{
    Action, CoreConfig, CoreStats, DurableState, Event, PersistItem, RejectReason, SafetyData,
    TimeMs,
};
use crate::crypto::{Committee, Signer, Verified, VerifiedMessage, domain};
use crate::types::{
    Block, BlockHeader, BlockId, CertifiedHeader, ClientRequest, Height, Message, NodeId,
    QuorumCert, RootCertificate, Round, STATE_ROOTS_MAX, Sig, SyncInfo, SyncRequest, Timeout,
    TimeoutCert, Vote, ops_digest,
};

/// The newest QC-path leader decisions kept for the simulator's checker; the daemon never drains
/// them, so the oldest are dropped.
const LEADER_DECISIONS_KEPT_MAX: usize = 256;

/// A message that may leave only once the safety state it depends on is durable.
#[derive(Debug)]
enum Deferred {
    Broadcast(Message),
    /// This node is the next leader: count its own vote.
    OwnVote(Vote),
    /// Count this node's own timeout.
    OwnTimeout(Timeout),
}

pub struct Core {
    cfg: CoreConfig,
    committee: Arc<Committee>,
    signer: Signer,
    me: NodeId,
    safety: SafetyData,
    round: Round,
    tree: BlockTree,
    votes: VoteAggregator,
    timeouts: TimeoutAggregator,
    pacemaker: Pacemaker,
    mempool: Mempool,
    sync: SyncState,
    /// The first proposal seen for each recent round (equivocation shows as a second one).
    /// Only proposals by the round's scheduled leader take the slot.
    proposals_seen: BTreeMap<Round, BlockId>,
    genesis: BlockId,
    /// The last QC-path leader computed: `try_propose` asks after every event.
    leader_memo: Option<LeaderDecision>,
    leader_decisions: VecDeque<LeaderDecision>,
    /// Ticket of the persist batch being built in this call.
    next_ticket: u64,
    durable_ticket: u64,
    persist_buf: Vec<PersistItem>,
    safety_dirty: bool,
    deferred: VecDeque<(u64, Deferred)>,
    timer_set: Option<TimeMs>,
    now: TimeMs,
    out: Vec<Action>,
    stats: CoreStats,
    /// Own and certified state roots, and whether they disagree.
    roots: RootBook,
    /// A proposal this node would vote for once it applied a height the block carries.
    vote_waiting_root: Option<BlockId>,
    /// The highest committed height whose block carried a payload, as far as this node knows
    /// (from its restored blocks after a restart). The cluster keeps proposing until a
    /// certified block carries this height's root: see [`Core::root_pending`].
    payload_height_committed: Height,
    /// The wall clock (ms since the Unix epoch) as the runtime last told it
    /// ([`Core::set_wall_clock_ms`]): the core reads no clock itself. Leaders stamp blocks
    /// with it, voters bound timestamps by it.
    wall_clock_ms: u64,
    /// The earliest key expiry in the applied state, as the runtime last told it
    /// ([`Core::set_next_expiry_ms`]): when consensus time must pass it, an idle cluster
    /// still proposes (an empty block whose timestamp expires the key).
    next_expiry_ms: Option<u64>,
    /// The highest round a read barrier asked this node to see committed
    /// ([`Event::ReadsWaiting`]); while the committed root is below it, the chain has work.
    read_round_wanted: Round,
    /// The round and time this node, as its leader, first found nothing to propose but
    /// state roots: it waits `root_linger_ms` from then for a request to ride along.
    root_linger: Option<(Round, TimeMs)>,
}

impl Core {
    /// A core for a fresh node (no durable state) or a restarted one.
    pub fn new(
        cfg: CoreConfig,
        committee: Arc<Committee>,
        signer: Signer,
        me: NodeId,
        durable: Option<DurableState>,
    ) -> Self {
        assert!(
            committee.contains(me),
            "{me} is not a member of the committee"
        );
        let cluster = *committee.cluster();
        let (safety, root, blocks) = match durable {
            Some(d) => (d.safety, d.committed, d.blocks),
            None => (
                SafetyData::genesis(&cluster),
                Block::genesis_header(&cluster),
                Vec::new(),
            ),
        };
        let orphans_max = cfg.orphan_blocks_max.max(cfg.sync_blocks_max as usize * 2);
        let mut core = Self {
            round: safety.resume_round(),
            // The leader schedule reads the authors of up to `f` blocks below a proposal's
            // parent, which reach `f - 1` blocks under the committed root: keep at least those.
            tree: BlockTree::new(
                root,
                cfg.committed_blocks_retained.max(committee.f()),
                cfg.uncommitted_blocks_max,
            )
            .with_retained_bytes(cfg.committed_bytes_retained)
            .with_retained_min(committee.f()),
            votes: VoteAggregator::default(),
            timeouts: TimeoutAggregator::default(),
            pacemaker: Pacemaker::new(cfg.round_timeout_base_ms, cfg.round_timeout_max_ms),
            mempool: Mempool::new(
                cfg.mempool_requests_max,
                cfg.mempool_bytes_max,
                cfg.committed_requests_remembered,
            ),
            sync: SyncState::new(orphans_max, cfg.sync_retry_ms),
            proposals_seen: BTreeMap::new(),
            genesis: Block::genesis_header(&cluster).id,
            leader_memo: None,
            leader_decisions: VecDeque::new(),
            next_ticket: 1,
            durable_ticket: 0,
            persist_buf: Vec::new(),
            safety_dirty: false,
            deferred: VecDeque::new(),
            timer_set: None,
            now: 0,
            out: Vec::new(),
            stats: CoreStats::default(),
            roots: RootBook::default(),
            vote_waiting_root: None,
            payload_height_committed: 0,
            wall_clock_ms: 0,
            next_expiry_ms: None,
            read_round_wanted: 0,
            root_linger: None,
            cfg,
            committee,
            signer,
            me,
            safety,
        };
        let mut blocks = blocks;
        blocks.sort_by_key(|(_, b)| b.height);
        core.tree.restore_committed(&blocks);
        // Remember what already committed, so late copies of those requests are not ordered
        // again after a restart.
        let committed: Vec<ClientRequest> = core
            .tree
            .committed_blocks()
            .flat_map(|b| b.payload.iter().cloned())
            .collect();
        core.mempool.remove_committed(&committed);
        core.payload_height_committed = core
            .tree
            .committed_blocks()
            .filter(|b| !b.payload.is_empty())
            .map(|b| b.height)
            .max()
            .unwrap_or(0);
        for (id, block) in blocks {
            // Restored blocks were durable already; a failure only means a pruned fork.
            let _ = core.tree.insert(id, block);
        }
        core
    }

    /// First actions after construction: re-derive commits above the restored tip, fetch what
    /// is missing, and set the timer.
    pub fn start(&mut self, now: TimeMs) -> Vec<Action> {
        self.now = now;
        let high_qc = self.safety.high_qc.clone();
        self.process_qc(&high_qc, None);
        // Tell the peers where we are; those ahead answer with their certificates, so a node
        // that restarts into an idle cluster still catches up.
        self.out.push(Action::Broadcast {
            msg: Message::SyncInfo(self.sync_info()),
        });
        if self.has_work() {
            self.pacemaker.restart(now);
        }
        self.finish()
    }

    /// Applies one event at time `now` and returns what the runtime must do, in order.
    pub fn handle(&mut self, now: TimeMs, event: Event) -> Vec<Action> {
        self.now = now.max(self.now);
        match event {
            Event::MessageReceived { from, msg } => self.on_message(from, msg),
            Event::RequestReceived(req) => self.on_request(req.into_inner()),
            Event::TimerFired => {
                // The runtime keeps only the latest `SetTimer` and fires it at or after its
                // deadline, so an early or stale fire needs nothing: the live timer is still set.
                if self.pacemaker.is_due(self.now) {
                    self.on_round_timer();
                }
            }
            Event::Persisted { ticket } => self.on_persisted(ticket),
            Event::Applied { height, root } => self.on_applied(height, root),
            Event::ReadsWaiting { round } => {
                self.read_round_wanted = self.read_round_wanted.max(round);
            }
        }
        self.finish()
    }

    fn finish(&mut self) -> Vec<Action> {
        self.retry_sync();
        self.try_propose();
        // The round timer runs exactly while there is work. Rounds and expiries restart it,
        // but work also appears or ends without either: a commit learnt from a synced block
        // leaves a root to certify, the block a high QC certifies arrives and with it the
        // knowledge that everything is certified (a timer left running then would time out
        // an idle cluster).
        if self.has_work() {
            self.pacemaker.arm(self.now);
        } else {
            self.pacemaker.disarm();
        }
        self.flush_persist();
        self.update_timer();
        std::mem::take(&mut self.out)
    }

    // ----- accessors for the runtime, the simulator and tests -----

    /// The wall clock in ms since the Unix epoch; the runtime sets it before every event batch
    /// (the node from its system clock, the simulator from its simulated, skewed one). Used
    /// for block timestamps and the voters' bound on them, never for timers.
    pub fn set_wall_clock_ms(&mut self, wall_clock_ms: u64) {
        self.wall_clock_ms = wall_clock_ms;
    }

    /// The state after `height` expired keys (told by the runtime after applying it): such a
    /// block changed the state without a payload, so its root must be certified like a
    /// payload height's (see [`Core::root_pending`]), or verified reads would go on proving
    /// the expired keys. Known only once applied (whether a block expires anything depends on
    /// the state), and every honest node applies the same blocks to the same result, so every
    /// node marks the same heights.
    pub fn note_expired(&mut self, height: Height) {
        self.payload_height_committed = self.payload_height_committed.max(height);
    }

    /// The earliest `expires_at_ms` in the applied state (`None`: no key expires), told by
    /// the runtime after each apply. Deterministic per height, so every node agrees on it once
    /// it applied the same height.
    pub fn set_next_expiry_ms(&mut self, next_expiry_ms: Option<u64>) {
        self.next_expiry_ms = next_expiry_ms;
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn round(&self) -> Round {
        self.round
    }

    pub fn committed(&self) -> BlockHeader {
        *self.tree.root()
    }

    pub fn safety(&self) -> &SafetyData {
        &self.safety
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The state-root book (own and certified roots, divergence).
    pub fn roots(&self) -> &RootBook {
        &self.roots
    }

    /// Certified roots since the last call, for the simulator's checker.
    pub fn take_certified_roots(&mut self) -> Vec<(Height, [u8; 32])> {
        self.roots.take_certified()
    }

    /// Hands the book to a core that replaces this one (after a snapshot install): the
    /// certified roots and a divergence outlive the core; the own roots are renewed by the
    /// runtime's next `Event::Applied`.
    pub fn take_roots(&mut self) -> RootBook {
        std::mem::take(&mut self.roots)
    }

    pub fn set_roots(&mut self, roots: RootBook) {
        self.roots = roots;
    }

    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// True while the core is fetching blocks it is missing (the runtime falls back to a
    /// snapshot when that makes no progress).
    pub fn is_syncing(&self) -> bool {
        self.sync.is_fetching()
    }

    /// The leader of the current round as this node sees it: the QC-path leader when it holds
    /// the QC for the previous round (and the blocks the schedule reads), else round robin.
    pub fn leader(&self) -> NodeId {
        let qc = &self.safety.high_qc;
        let by_qc = (qc.round + 1 == self.round)
            .then(|| {
                leader::after_qc(
                    &self.committee,
                    &self.genesis,
                    self.round,
                    &qc.block_id,
                    |id| self.tree.get(id),
                )
            })
            .flatten();
        by_qc.unwrap_or_else(|| leader::round_robin(&self.committee, self.round))
    }

    /// The QC-path leader decisions made since the last call (newest `LEADER_DECISIONS_KEPT_MAX`),
    /// for the simulator's schedule checker.
    pub fn take_leader_decisions(&mut self) -> Vec<LeaderDecision> {
        self.leader_decisions.drain(..).collect()
    }

    // ----- events -----

    fn on_message(&mut self, from: NodeId, msg: Verified<VerifiedMessage>) {
        match msg.into_inner() {
            VerifiedMessage::Proposal { id, block } => self.on_proposal(from, id, *block),
            VerifiedMessage::Vote(v) => self.on_vote(v),
            VerifiedMessage::Timeout(t) => self.on_timeout(from, t),
            VerifiedMessage::SyncInfo(s) => self.on_sync_info(from, s),
            VerifiedMessage::SyncRequest(r) => self.on_sync_request(from, r),
            VerifiedMessage::SyncResponse { blocks } => self.on_sync_response(from, blocks),
        }
    }

    fn on_request(&mut self, req: ClientRequest) {
        let (client, session, seq) = (req.client, req.session, req.seq);
        let ops_digest = ops_digest(&req.ops);
        match self.mempool.add(req) {
            AddOutcome::Added => self.pacemaker.arm(self.now),
            AddOutcome::Duplicate => self.stats.requests_duplicate += 1,
            AddOutcome::Committed => {
                self.stats.requests_duplicate += 1;
                self.out.push(Action::RejectRequest {
                    client,
                    session,
                    seq,
                    ops_digest,
                    reason: RejectReason::Committed,
                });
            }
            AddOutcome::Full => {
                self.stats.requests_rejected_busy += 1;
                self.out.push(Action::RejectRequest {
                    client,
                    session,
                    seq,
                    ops_digest,
                    reason: RejectReason::Busy,
                });
            }
        }
    }

    fn on_persisted(&mut self, ticket: u64) {
        self.durable_ticket = self.durable_ticket.max(ticket);
        while let Some((t, _)) = self.deferred.front() {
            if *t > self.durable_ticket {
                break;
            }
            if let Some((_, d)) = self.deferred.pop_front() {
                self.release(d);
            }
        }
    }

    fn on_applied(&mut self, height: Height, root: [u8; 32]) {
        let found = self.roots.on_applied(height, root);
        self.note_divergence(found);
        if let Some(id) = self.vote_waiting_root.take() {
            self.maybe_vote(&id);
        }
    }

    /// Counts and logs a divergence found just now (once per divergence).
    fn note_divergence(&mut self, found: Option<Divergence>) {
        let Some(d) = found else { return };
        self.stats.divergences_detected += 1;
        log::error!(
            "{}: state diverged at height {}: own root {} but the chain certified {}; \
             no longer voting or proposing until the state is repaired",
            self.me,
            d.height,
            hex32(&d.own),
            hex32(&d.certified)
        );
    }

    /// A QC certifies block `qc.block_id`: the roots it carries are certified. The newest
    /// such root is kept with its certificate (the block's header and this QC), for verified
    /// reads.
    fn certify(&mut self, qc: &QuorumCert) {
        let Some(block) = self.tree.get(&qc.block_id) else {
            return;
        };
        let Some(&(height, root)) = block.state_roots.last() else {
            return;
        };
        if self.roots.wants_certificate(height) {
            let cert = RootCertificate {
                height,
                root,
                header: CertifiedHeader::from_block(block),
                qc: qc.clone(),
            };
            self.roots.set_certificate(cert);
        }
        let roots = block.state_roots.clone();
        let found = self.roots.on_certified(qc.block_id, &roots);
        self.note_divergence(found);
    }

    fn on_proposal(&mut self, from: NodeId, id: BlockId, block: Block) {
        // Certificates first: they are verified facts and may move us forward or commit.
        if let Some(tc) = &block.tc {
            self.process_tc(tc, Some(from));
        }
        self.process_qc(&block.qc, Some(from));
        // A recent proposal for a past round is still kept (without a vote): a QC for it may
        // already be here or on its way, and having the block saves a sync round trip.
        if block.round.saturating_add(self.cfg.round_window) < self.round {
            self.stats.dropped_stale += 1;
            return;
        }
        if !self.tree.contains(&block.parent_id()) {
            // The schedule needs the parent: hold the block as an orphan without giving it the
            // round's slot; `admit_proposal` runs when the parent arrives.
            self.insert_block(from, id, block);
            return;
        }
        if self.admit_proposal(id, &block) && self.insert_block(from, id, block) {
            self.maybe_vote(&id);
        }
    }

    /// Whether a proposal whose parent is held may take its round's one proposal slot (or
    /// already holds it): its author must be the scheduled leader, and no other proposal may
    /// hold the slot. Blocks that arrive certified (sync) skip this: their QC proves a quorum
    /// accepted them.
    fn admit_proposal(&mut self, id: BlockId, block: &Block) -> bool {
        let expected = if block.qc.round + 1 == block.round {
            self.leader_after_qc(block.round, &block.parent_id())
        } else {
            Some(leader::round_robin(&self.committee, block.round))
        };
        match expected {
            None => {
                self.stats.proposals_leader_unknown += 1;
                return false;
            }
            Some(l) if l != block.author => {
                self.stats.proposals_wrong_leader += 1;
                return false;
            }
            Some(_) => {}
        }
        match self.proposals_seen.get(&block.round) {
            Some(seen) if *seen != id => {
                self.stats.equivocations_seen += 1;
                false
            }
            Some(_) => {
                // A re-delivered proposal: re-send our stored vote if we cast one.
                self.maybe_vote(&id);
                false
            }
            None => {
                self.proposals_seen.insert(block.round, id);
                true
            }
        }
    }

    /// The QC-path leader of `round` extending `parent` (see [`leader`]), or `None` while a
    /// block the rule reads is missing here. Each new answer is recorded for the simulator.
    fn leader_after_qc(&mut self, round: Round, parent: &BlockId) -> Option<NodeId> {
        if let Some(m) = self.leader_memo
            && m.round == round
            && m.parent == *parent
        {
            return Some(m.leader);
        }
        let leader = if cfg!(feature = "mutation-leader-local-view")
            && self.safety.high_qc.block_id == *parent
            && !self.safety.high_qc.votes.is_empty()
        {
            // BROKEN ON PURPOSE: the signers of this node's own QC for the parent depend on
            // which votes reached it first, so honest nodes disagree on the leader.
            let local: Vec<NodeId> = self.safety.high_qc.votes.iter().map(|v| v.node).collect();
            leader::pick(&self.committee, round, &local, &[])
        } else {
            let tree = &self.tree;
            leader::after_qc(&self.committee, &self.genesis, round, parent, |id| {
                tree.get(id)
            })?
        };
        let decision = LeaderDecision {
            round,
            parent: *parent,
            leader,
        };
        self.leader_memo = Some(decision);
        if self.leader_decisions.len() >= LEADER_DECISIONS_KEPT_MAX {
            self.leader_decisions.pop_front();
        }
        self.leader_decisions.push_back(decision);
        Some(leader)
    }

    fn on_vote(&mut self, vote: Vote) {
        if vote.round + 1 < self.round {
            self.stats.dropped_stale += 1;
            return;
        }
        if vote.round > self.round + self.cfg.round_window {
            self.stats.dropped_far_future += 1;
            return;
        }
        self.add_vote(&vote);
    }

    fn on_timeout(&mut self, from: NodeId, t: Timeout) {
        self.process_qc(&t.high_qc, Some(from));
        if t.round < self.round {
            // The sender lags: hand it the certificates that let it catch up.
            self.stats.dropped_stale += 1;
            if from != self.me {
                self.send(from, Message::SyncInfo(self.sync_info()));
            }
            return;
        }
        if t.round > self.round + self.cfg.round_window {
            self.stats.dropped_far_future += 1;
            return;
        }
        self.add_timeout(&t);
    }

    fn on_sync_info(&mut self, from: NodeId, s: SyncInfo) {
        // A peer that is behind us (e.g. just restarted into an idle cluster, where no new
        // proposal would ever tell it) gets our certificates back. Only when it is behind, so
        // two nodes never answer each other in a loop.
        let behind = s.high_qc.round < self.safety.high_qc.round;
        if let Some(tc) = &s.high_tc {
            self.process_tc(tc, Some(from));
        }
        self.process_qc(&s.high_qc, Some(from));
        if behind {
            self.send(from, Message::SyncInfo(self.sync_info()));
        }
    }

    fn on_sync_request(&mut self, from: NodeId, r: SyncRequest) {
        let max = r.max_blocks.min(self.cfg.sync_blocks_max) as usize;
        let bytes_max = self.cfg.sync_response_bytes_max;
        match self
            .tree
            .chain_segment(&r.target, r.committed_height, max, bytes_max)
        {
            Segment::Blocks(blocks) if !blocks.is_empty() => self.send(
                from,
                Message::SyncResponse(crate::types::SyncResponse { blocks }),
            ),
            Segment::BelowRetained { top_height } => {
                // Committed history this core pruned from memory: the block store has it.
                self.stats.sync_served_from_store += 1;
                self.out.push(Action::ServeCommitted {
                    to: from,
                    from_height: r.committed_height + 1,
                    to_height: top_height,
                    blocks_max: max,
                    bytes_max,
                });
            }
            Segment::Blocks(_) | Segment::Unknown => {}
        }
    }

    fn on_sync_response(&mut self, from: NodeId, blocks: Vec<(BlockId, Block)>) {
        let Some((_, first)) = blocks.first() else {
            return;
        };
        if !self.sync_wanted_from(from) || !self.tree.contains(&first.parent_id()) {
            self.stats.unsolicited_sync += 1;
            return;
        }
        // Accept only certified blocks: each is certified by its successor's QC, except the
        // last, which must be a block we asked for. A peer cannot fill the tree with variants.
        let mut blocks = blocks;
        if blocks
            .last()
            .is_some_and(|(id, _)| !self.sync.is_wanted(id))
        {
            blocks.pop();
        }
        let mut last_height = None;
        let mut inserted = 0usize;
        for (id, block) in blocks {
            let height = block.height;
            if self.tree.contains(&id) {
                last_height = Some(height);
                continue;
            }
            if !self.insert_block(from, id, block) {
                break;
            }
            inserted += 1;
            last_height = Some(height);
        }
        if inserted == 0 {
            return; // no progress: the retry timer moves the request to another peer
        }
        // Keep going toward every target this peer was asked for.
        let Some(above) = last_height else { return };
        let targets: Vec<BlockId> = self
            .sync
            .overdue(TimeMs::MAX)
            .into_iter()
            .filter(|(_, peer)| *peer == from)
            .map(|(t, _)| t)
            .collect();
        for target in targets {
            if self.tree.contains(&target) {
                self.sync.done(&target);
            } else {
                self.sync.progressed(&target, self.now);
                self.send_sync_request(from, target, above);
            }
        }
    }

    fn on_round_timer(&mut self) {
        self.pacemaker.on_expired();
        self.time_out_current_round();
        if self.has_work() {
            self.pacemaker.restart(self.now);
        } else {
            self.pacemaker.disarm();
        }
    }

    // ----- certificates, rounds and commits -----

    fn process_qc(&mut self, qc: &QuorumCert, hint: Option<NodeId>) {
        self.safety.observe_qc(qc);
        if !self.tree.contains(&qc.block_id) {
            if qc.round > self.tree.root().round {
                let peer = hint.or_else(|| qc.votes.iter().map(|v| v.node).find(|n| *n != self.me));
                self.request_sync(qc.block_id, peer);
            }
        } else {
            self.certify(qc);
            self.try_commit(qc);
        }
        if qc.round >= self.round {
            self.enter_round(qc.round + 1, true);
        }
    }

    fn process_tc(&mut self, tc: &TimeoutCert, hint: Option<NodeId>) {
        self.safety.observe_tc(tc);
        self.process_qc(&tc.high_qc, hint);
        if tc.round >= self.round {
            self.enter_round(tc.round + 1, false);
        }
    }

    /// The 2-chain rule: a QC for `b` whose parent is from the round just before commits the
    /// parent and its ancestors. Returns whether anything was committed.
    fn try_commit(&mut self, qc: &QuorumCert) -> bool {
        let Some(b) = self.tree.get(&qc.block_id) else {
            return false;
        };
        if cfg!(feature = "mutation-one-chain-commit") {
            return self.commit_through(&qc.block_id.clone());
        }
        let parent_id = b.parent_id();
        let b_round = b.round;
        let Some(parent) = self.tree.header(&parent_id) else {
            return false;
        };
        if parent.round + 1 != b_round || parent.height <= self.tree.root().height {
            return false;
        }
        self.commit_through(&parent_id)
    }

    /// Commits `target` and its uncommitted ancestors, in height order.
    fn commit_through(&mut self, target: &BlockId) -> bool {
        let committed = self.tree.commit(target);
        if committed.is_empty() {
            return false;
        }
        for (id, block) in committed {
            if !block.payload.is_empty() {
                self.payload_height_committed = self.payload_height_committed.max(block.height);
            }
            self.mempool.remove_committed(&block.payload);
            self.stats.blocks_committed += 1;
            self.stats.requests_committed += block.payload.len() as u64;
            self.out.push(Action::Commit { id, block });
        }
        self.sync.prune_orphans(self.tree.root().height);
        true
    }

    fn enter_round(&mut self, round: Round, by_qc: bool) {
        if round <= self.round {
            return;
        }
        self.round = round;
        if by_qc {
            self.pacemaker.on_progress();
        } else {
            self.stats.view_changes += 1;
        }
        self.votes.prune_below(round.saturating_sub(1));
        self.timeouts.prune_below(round);
        let keep_from = round.saturating_sub(self.cfg.round_window);
        self.proposals_seen = self.proposals_seen.split_off(&keep_from);
        if self.has_work() {
            self.pacemaker.restart(self.now);
        } else {
            self.pacemaker.disarm();
        }
    }

    /// Is there anything the cluster still has to order, commit or certify, as far as we
    /// know?
    fn has_work(&self) -> bool {
        let high = &self.safety.high_qc.block_id;
        !self.mempool.is_empty()
            || !self.tree.contains(high)
            || self
                .tree
                .uncommitted_ancestry(high)
                .any(|b| !b.payload.is_empty())
            || self.root_pending()
            || self.expiry_due(self.cfg.block_time_ahead_max_ms)
            || self.reads_waiting()
    }

    /// True while a read barrier waits for a committed block of a round this node's committed
    /// root has not reached (see [`Event::ReadsWaiting`]).
    fn reads_waiting(&self) -> bool {
        self.read_round_wanted > self.tree.root().round
    }

    /// True when the next key expiry needs a block and no committed block reached it yet:
    /// either an uncommitted block of the chain already passed it (the chain must grow until
    /// that block commits, whatever this node's clock says), or it is due by this node's clock
    /// `grace_ms` ago. The cluster proposes (empty) blocks until one whose timestamp passes the
    /// expiry commits, then idles again once the runtime reports the next expiry after
    /// applying it.
    ///
    /// The grace: a leader proposes as soon as its own clock says due (grace 0), but a node
    /// arms its round timer for an expiry only `block_time_ahead_max_ms` later (the clock skew
    /// the cluster tolerates): a node whose clock runs ahead of the leader's must not time the
    /// leader out over an expiry the leader cannot see yet. A crashed leader then delays an
    /// idle cluster's expiry by that much more, never forever.
    fn expiry_due(&self, grace_ms: u64) -> bool {
        let Some(expiry) = self.next_expiry_ms else {
            return false;
        };
        let root_time_ms = self.timestamp_of(&self.tree.root().id).unwrap_or(0);
        if root_time_ms >= expiry {
            // Committed. Until the committed block is applied, the runtime has not reported
            // the state after it: not due. Once it is, an expiry still at or below the block's
            // time is a backlog (more keys fell due than one block expires): due now. That
            // does not rely on `note_expired`, which a restart or a rebuild does not replay.
            return self.roots.applied() >= self.tree.root().height;
        }
        let high = &self.safety.high_qc.block_id;
        let in_chain = self.timestamp_of(high).is_some_and(|t| t >= expiry);
        in_chain || expiry.saturating_add(grace_ms) <= self.wall_clock_ms
    }

    /// The timestamp of a held block (genesis: 0).
    fn timestamp_of(&self, id: &BlockId) -> Option<u64> {
        if *id == self.genesis {
            return Some(0);
        }
        self.tree.get(id).map(|b| b.timestamp_ms)
    }

    /// True when the root of the last committed payload height is not yet carried by the
    /// block our high QC certifies (or one of its ancestors): verified reads can then not
    /// prove that height, so the cluster goes on with empty blocks that carry it.
    ///
    /// Why this ends: with no new requests `payload_height_committed` (P) stops growing.
    /// Roots only ever go up along a chain, and a proposal extends the high QC's block, so
    /// every certified root-carrying proposal raises the high QC's `roots_through` strictly,
    /// up to P at most (a leader carries only applied heights its parent's chain proves
    /// committed; while the chain does not prove P yet, empty blocks grow it to the 2-chain
    /// that does, as they do for an uncommitted payload). Once it reaches P,
    /// nothing is pending at any node that holds that QC (every node forms it: votes go to
    /// all), the leader proposes nothing and the timers disarm. Leaders that cannot carry
    /// anything new (not applied yet, diverged, missing the parent's block) propose nothing
    /// instead of empty blocks, so the number of empty blocks is bounded by the carrying
    /// proposals; a leader that waits for its apply proposes on `Event::Applied` (every
    /// event ends in `try_propose`), and only a leader that never gets there costs a round
    /// timeout. A node that does not hold the high QC's block or lost P (a snapshot install)
    /// counts nothing pending: it cannot carry anything itself and learns from the others.
    pub fn root_pending(&self) -> bool {
        self.roots_through_of(&self.safety.high_qc.block_id)
            .is_some_and(|through| through < self.payload_height_committed)
    }

    /// Whether this node has nothing left to order, commit or certify: its round timer
    /// sleeps (the simulator checks that a cluster without load ends idle).
    pub fn is_idle(&self) -> bool {
        !self.has_work()
    }

    /// This node's certificates, for the runtime to gossip now and then: a peer that is ahead
    /// answers with its own, so a node that missed messages (or restarted while its links were
    /// still down) learns where the cluster is even when no new proposal comes.
    pub fn sync_info(&self) -> SyncInfo {
        SyncInfo {
            high_qc: self.safety.high_qc.clone(),
            high_tc: self.safety.high_tc.clone(),
        }
    }

    // ----- votes and timeouts -----

    fn maybe_vote(&mut self, id: &BlockId) {
        let Some(block) = self.tree.get(id) else {
            return;
        };
        if let Some(v) = &self.safety.last_vote
            && v.round == block.round
            && v.block_id == *id
        {
            // Asked again in the same round: re-send the stored vote, never re-sign.
            let v = v.clone();
            self.send_vote(v);
            return;
        }
        if !self.safety.may_vote(block, self.round) {
            return;
        }
        let round = block.round;
        if !self.time_allows_vote(id) || !self.roots_allow_vote(id) {
            return;
        }
        let signature = self
            .signer
            .sign(domain::VOTE, &domain::vote_body(id, round));
        let vote = Vote {
            block_id: *id,
            round,
            voter: self.me,
            signature,
        };
        self.safety.record_vote(&vote);
        self.safety_dirty = true;
        self.stats.votes_sent += 1;
        self.send_vote(vote);
    }

    /// The time part of the voting rule: a block's timestamp must be above its parent's, and
    /// at most `block_time_ahead_max_ms` ahead of this node's wall clock.
    ///
    /// A block behind this node's clock is accepted: a leader with a slow clock stamps
    /// `parent + 1` at worst, and refusing it would stall the chain on a clock, not a fault.
    /// The ahead check binds only this voter, and only for now: a block refused here can still
    /// be certified by the others (a voter whose clock is behind is one of them, not a veto),
    /// and this node accepts it later through the QC or sync, which never re-check time. So
    /// it only bounds how far a Byzantine leader can push consensus time ahead of the clocks
    /// of the honest voters in a quorum, not the chain's progress.
    fn time_allows_vote(&mut self, id: &BlockId) -> bool {
        let Some(block) = self.tree.get(id) else {
            return false;
        };
        let time_ms = block.timestamp_ms;
        let parent_time_ms = self.timestamp_of(&block.parent_id());
        if cfg!(feature = "mutation-skip-time-check") {
            // BROKEN ON PURPOSE: votes for any timestamp, so a `bad-time` leader moves
            // consensus time backwards or far into the future.
            return true;
        }
        // A parent held only as a header (just after a snapshot install) has no timestamp
        // here: the other voters check that part.
        if parent_time_ms.is_some_and(|p| time_ms <= p) {
            self.stats.votes_refused_time_not_increasing += 1;
            return false;
        }
        if time_ms
            > self
                .wall_clock_ms
                .saturating_add(self.cfg.block_time_ahead_max_ms)
        {
            self.stats.votes_refused_time_ahead += 1;
            return false;
        }
        true
    }

    /// The state-root part of the voting rule: this node's state must not be known wrong, the
    /// block's roots must continue its parent chain's and stay within what its ancestry
    /// commits, and each must equal this node's own root of its height (a height not applied
    /// yet defers the vote until `Event::Applied`).
    fn roots_allow_vote(&mut self, id: &BlockId) -> bool {
        if self.roots.diverged().is_some() {
            self.stats.withheld_diverged += 1;
            return false;
        }
        let Some(block) = self.tree.get(id) else {
            return false;
        };
        let carried = block.state_roots.clone();
        let roots_after = block.roots_after;
        let through = block.roots_through();
        let parent = block.parent_id();
        let placed = self.roots_through_of(&parent) == Some(roots_after)
            && self
                .committed_height_implied(&parent)
                .is_some_and(|c| through <= c);
        if !placed {
            self.stats.votes_refused_root_unchecked += 1;
            return false;
        }
        if cfg!(feature = "mutation-skip-root-check") {
            // BROKEN ON PURPOSE: votes without comparing the carried roots with its own, so a
            // leader's wrong root gets certified.
            return true;
        }
        match self.roots.check(&carried) {
            RootCheck::Agree => true,
            RootCheck::Wait { .. } => {
                self.stats.votes_deferred_root += 1;
                self.vote_waiting_root = Some(*id);
                false
            }
            RootCheck::Unknown { .. } => {
                self.stats.votes_refused_root_unchecked += 1;
                self.stats.votes_refused_root_unknown += 1;
                false
            }
            RootCheck::Differs {
                height,
                own,
                carried,
            } => {
                self.stats.votes_refused_root_mismatch += 1;
                log::warn!(
                    "{}: not voting for {id:?}: it carries root {} for height {height}, ours is {} \
                     (a lying leader, or our state is damaged: the certified root will tell)",
                    self.me,
                    hex32(&carried),
                    hex32(&own)
                );
                false
            }
        }
    }

    /// The highest height whose root the chain ending at `id` carries (0 for genesis), if the
    /// block is held here.
    fn roots_through_of(&self, id: &BlockId) -> Option<Height> {
        if *id == self.genesis {
            return Some(0);
        }
        self.tree.get(id).map(Block::roots_through)
    }

    /// The committed height a QC on `parent` implies: the parent of the highest block in its
    /// ancestry whose parent's round is just before its own (the 2-chain rule), or the
    /// committed root. `None` if `parent` is not in the tree.
    fn committed_height_implied(&self, parent: &BlockId) -> Option<Height> {
        let root = *self.tree.root();
        let mut x = self.tree.header(parent)?;
        loop {
            if x.height <= root.height {
                return Some(root.height);
            }
            let p = self.tree.header(&x.parent)?;
            if p.round + 1 == x.round {
                return Some(p.height.max(root.height));
            }
            x = p;
        }
    }

    /// The committed height the chain ending at `parent` proves by itself: the parent of the
    /// highest block in its ancestry (followed below the committed root through the retained
    /// committed blocks) whose parent's round is just before its own; the committed root if
    /// no such pair is held. A leader carries roots only up to this height, not up to its
    /// own committed root: a commit this node learnt from a QC on a block that then fell off
    /// the chain is not implied by the chain, and a voter that missed that QC could never
    /// place the root (`roots_allow_vote`), so with such a leader in every other round no two
    /// consecutive rounds would ever certify again. `None` if `parent` is not in the tree.
    fn committed_height_proven(&self, parent: &BlockId) -> Option<Height> {
        let root = *self.tree.root();
        let mut x = self.tree.header(parent)?;
        loop {
            let Some(p) = self.tree.header(&x.parent) else {
                return Some(root.height.min(x.height));
            };
            if p.round + 1 == x.round {
                return Some(p.height);
            }
            x = p;
        }
    }

    /// Votes go to every member, not only the next leader: every node forms the QC itself.
    /// When the next leader is down, the others still hold the QC, so its round costs one
    /// timeout and the TC carries the QC on (with votes to the leader alone, the round before
    /// it was lost as well, and the backed-off second timeout doubled the cost).
    fn send_vote(&mut self, vote: Vote) {
        self.defer(Deferred::Broadcast(Message::Vote(vote.clone())));
        self.defer(Deferred::OwnVote(vote));
    }

    fn add_vote(&mut self, vote: &Vote) {
        match self.votes.add(vote, self.committee.quorum()) {
            VoteOutcome::QuorumFormed(qc) => {
                self.stats.qcs_formed += 1;
                let before = self.tree.root().height;
                let leader = self.leader_after_qc(qc.round + 1, &qc.block_id) == Some(self.me);
                self.process_qc(&qc, None);
                // Everyone aggregates; the next leader also hands the QC to those that
                // missed votes, so they commit without waiting for its proposal.
                if leader && self.tree.root().height > before {
                    // Fast commit: everyone can commit now, without waiting for a proposal.
                    self.broadcast(Message::SyncInfo(SyncInfo {
                        high_qc: qc,
                        high_tc: None,
                    }));
                }
            }
            VoteOutcome::Counted => {}
            VoteOutcome::Duplicate => self.stats.duplicate_votes += 1,
            VoteOutcome::Equivocation => self.stats.equivocations_seen += 1,
        }
    }

    /// Signs (once per round) and broadcasts a timeout for the current round, or re-sends the
    /// one already signed.
    fn time_out_current_round(&mut self) {
        let round = self.round;
        if self.safety.may_time_out(round) {
            let high_qc = self.safety.high_qc.clone();
            let body = domain::timeout_body(round, high_qc.round);
            let timeout = Timeout {
                round,
                high_qc,
                author: self.me,
                signature: self.signer.sign(domain::TIMEOUT, &body),
            };
            self.safety.record_timeout(&timeout);
            self.safety_dirty = true;
            self.stats.timeouts_sent += 1;
            self.defer(Deferred::Broadcast(Message::Timeout(timeout.clone())));
            self.defer(Deferred::OwnTimeout(timeout));
        } else if let Some(t) = self
            .safety
            .last_timeout
            .clone()
            .filter(|t| t.round == round)
        {
            // Re-send the stored timeout; count it too, in case a restart lost the aggregator.
            self.defer(Deferred::Broadcast(Message::Timeout(t.clone())));
            self.defer(Deferred::OwnTimeout(t));
        }
    }

    fn add_timeout(&mut self, t: &Timeout) {
        let outcome = self.timeouts.add(t, self.committee.quorum());
        if let Some(tc) = outcome.tc {
            self.stats.tcs_formed += 1;
            self.process_tc(&tc, None);
            return;
        }
        // f + 1 timeouts include an honest node's: join that round and time out with it.
        if outcome.signers >= self.committee.join_threshold()
            && t.round >= self.round
            && self.safety.may_time_out(t.round)
        {
            self.enter_round(t.round, false);
            self.time_out_current_round();
        }
    }

    // ----- proposing -----

    fn try_propose(&mut self) {
        let round = self.round;
        if self.safety.highest_proposed_round >= round {
            return;
        }
        let qc = self.safety.high_qc.clone();
        // Holding the QC for the previous round, propose on the QC path only (the TC path's
        // leader would compete for the same round's votes).
        let (tc, leader) = if qc.round + 1 == round {
            (None, self.leader_after_qc(round, &qc.block_id))
        } else {
            match &self.safety.high_tc {
                Some(tc) if tc.round + 1 == round => (
                    Some(tc.clone()),
                    Some(leader::round_robin(&self.committee, round)),
                ),
                _ => return,
            }
        };
        if leader != Some(self.me) {
            return; // not the leader, or missing a block the schedule reads
        }
        if self.roots.diverged().is_some() {
            // Our roots are wrong: what we would carry must not be proposed.
            self.stats.withheld_diverged += 1;
            return;
        }
        let (Some(roots_after), Some(committed)) = (
            self.roots_through_of(&qc.block_id),
            self.committed_height_proven(&qc.block_id),
        ) else {
            return; // the parent's block is not held (just after a snapshot install)
        };
        let Some(parent) = self.tree.header(&qc.block_id) else {
            return; // still fetching the block our QC certifies
        };
        // A block carries no root above its grandparent (`Block::state_roots_well_formed`).
        // The 2-chain rule never commits the parent itself, but the committed root does count
        // as committed, and right after a restart the root is the parent: its root waits for
        // the next block.
        let committed = committed.min(parent.height.saturating_sub(1));
        let state_roots = self.roots.to_carry(roots_after, committed, STATE_ROOTS_MAX);
        let mut in_chain = HashSet::new();
        let mut chain_pending = false;
        for b in self.tree.uncommitted_ancestry(&qc.block_id) {
            chain_pending |= !b.payload.is_empty();
            in_chain.extend(b.payload.iter().map(ClientRequest::id));
        }
        let payload = self.mempool.batch(
            &in_chain,
            self.cfg.block_requests_max,
            self.cfg.block_bytes_max,
        );
        // An empty block is worth proposing while an uncommitted payload needs the chain to
        // grow to commit, or while the last payload height's root waits for a certified block
        // to carry it and this block either carries some of the missing roots or is needed
        // for the chain itself to prove that height committed (its commit may have come from
        // a QC on a block that fell off the chain; the chain then needs a new 2-chain before
        // any leader may carry the root). Otherwise an empty block would not get any closer:
        // the leader has not applied the height yet, and waits for `Event::Applied`.
        let chain_short = committed < self.payload_height_committed;
        let carries_pending = (!state_roots.is_empty() || chain_short) && self.root_pending();
        let roots_only =
            payload.is_empty() && !chain_pending && !self.expiry_due(0) && !self.reads_waiting();
        if roots_only && !carries_pending {
            return; // nothing to order, certify or expire: let the cluster idle
        }
        // After a view change (`tc`) the round already cost a timeout: no waiting then.
        if roots_only && tc.is_none() && self.roots_linger(round) {
            return; // a request may yet ride along; `update_timer` wakes us at the end
        }
        // Consensus time moves forward on every block, and follows this leader's clock when
        // that is ahead of the parent (a parent this node holds only as a header, after a
        // snapshot install, counts as 0: the voters then judge by their own view).
        let parent_time_ms = self.timestamp_of(&qc.block_id).unwrap_or(0);
        let timestamp_ms = parent_time_ms.saturating_add(1).max(self.wall_clock_ms);
        let mut block = Block {
            round,
            height: parent.height + 1,
            timestamp_ms,
            qc,
            tc,
            roots_after,
            state_roots,
            payload,
            author: self.me,
            signature: Sig::ZERO,
        };
        let id = block.compute_id();
        block.signature = self
            .signer
            .sign(domain::PROPOSAL, &domain::proposal_body(&id));
        if self.tree.insert(id, block.clone()) != InsertOutcome::Inserted {
            self.stats.blocks_rejected += 1;
            return;
        }
        self.safety.highest_proposed_round = round;
        self.safety_dirty = true;
        self.stats.proposals_made += 1;
        self.proposals_seen.insert(round, id);
        self.persist_buf.push(PersistItem::Block {
            id,
            block: block.clone(),
        });
        self.defer(Deferred::Broadcast(Message::Proposal(block)));
        self.maybe_vote(&id);
    }

    /// Whether a leader whose block would carry only state roots still waits for requests
    /// in `round`: for `root_linger_ms` from the first time it found itself so. Nothing
    /// waits on this block but verified reads of the newest height, while a client writing in
    /// a loop sends its next request as soon as the last one's replies arrive, which is just
    /// when this block is due: waiting lets the root and the request share one block (and one
    /// round of votes and fsyncs) instead of two. Safety does not depend on it (the block is
    /// the same one, later); liveness neither (the wait is below the round timeout).
    fn roots_linger(&mut self, round: Round) -> bool {
        let since = match self.root_linger {
            Some((r, since)) if r == round => since,
            _ => {
                self.root_linger = Some((round, self.now));
                self.now
            }
        };
        self.now < since.saturating_add(self.cfg.root_linger_ms)
    }

    /// When a lingering leader proposes its roots-only block (see [`Core::roots_linger`]).
    /// Only a deadline still ahead: once it passed, `try_propose` proposed (or found it may
    /// not, e.g. diverged or no longer the leader), and a stale deadline would stand in for
    /// the round timer (the runtime keeps one timer, and `update_timer` sets each deadline
    /// once).
    fn linger_deadline(&self) -> Option<TimeMs> {
        match self.root_linger {
            Some((round, since))
                if round == self.round && self.safety.highest_proposed_round < round =>
            {
                Some(since.saturating_add(self.cfg.root_linger_ms)).filter(|at| *at > self.now)
            }
            _ => None,
        }
    }

    // ----- blocks and sync -----

    /// Inserts a verified block, persists it, and processes what it unlocks. Returns true if
    /// the block is now in the tree.
    fn insert_block(&mut self, from: NodeId, id: BlockId, block: Block) -> bool {
        let parent = block.parent_id();
        match self.tree.insert(id, block.clone()) {
            InsertOutcome::Inserted => {}
            InsertOutcome::Known => return self.tree.contains(&id),
            InsertOutcome::MissingParent => {
                let (_, evicted) = self.sync.hold_orphan(id, block);
                if evicted {
                    self.stats.orphans_dropped += 1;
                }
                self.request_sync(parent, Some(from));
                return false;
            }
            InsertOutcome::Rejected(_) => {
                self.stats.blocks_rejected += 1;
                return false;
            }
        }
        self.persist_buf.push(PersistItem::Block { id, block });
        self.after_insert(id);
        true
    }

    /// A block joined the tree: its QC may commit, held children may now fit, and our high
    /// QC may now be usable.
    fn after_insert(&mut self, id: BlockId) {
        let mut ready = vec![id];
        while let Some(id) = ready.pop() {
            self.sync.done(&id);
            if let Some(qc) = self.tree.get(&id).map(|b| b.qc.clone()) {
                self.certify(&qc);
                self.try_commit(&qc);
            }
            for (child_id, child) in self.sync.take_children_of(&id) {
                // Orphans are proposals held for their parent: check them as one now.
                if !self.admit_proposal(child_id, &child) {
                    continue;
                }
                if self.tree.insert(child_id, child.clone()) == InsertOutcome::Inserted {
                    self.persist_buf.push(PersistItem::Block {
                        id: child_id,
                        block: child,
                    });
                    ready.push(child_id);
                    self.maybe_vote(&child_id);
                }
            }
        }
        let high = self.safety.high_qc.clone();
        self.try_commit(&high);
    }

    fn request_sync(&mut self, target: BlockId, hint: Option<NodeId>) {
        if self.tree.contains(&target) {
            return;
        }
        let peer = match hint.filter(|p| *p != self.me && self.committee.contains(*p)) {
            Some(p) => p,
            None => self.next_peer(self.me),
        };
        if self.sync.want(target, peer, self.now) {
            let above = self.tree.root().height;
            self.send_sync_request(peer, target, above);
        }
    }

    fn send_sync_request(&mut self, peer: NodeId, target: BlockId, above: u64) {
        self.stats.sync_requests_sent += 1;
        self.send(
            peer,
            Message::SyncRequest(SyncRequest {
                target,
                committed_height: above,
                max_blocks: self.cfg.sync_blocks_max,
            }),
        );
    }

    fn retry_sync(&mut self) {
        for (target, asked) in self.sync.overdue(self.now) {
            if self.tree.contains(&target) {
                self.sync.done(&target);
                continue;
            }
            let peer = self.next_peer(asked);
            if self.sync.want(target, peer, self.now) {
                let above = self.tree.root().height;
                self.send_sync_request(peer, target, above);
            }
        }
    }

    fn sync_wanted_from(&self, from: NodeId) -> bool {
        self.sync
            .overdue(TimeMs::MAX)
            .iter()
            .any(|(_, peer)| *peer == from)
    }

    fn next_peer(&self, after: NodeId) -> NodeId {
        let n = self.committee.n() as u16;
        let mut p = NodeId((after.0 + 1) % n);
        if p == self.me {
            p = NodeId((p.0 + 1) % n);
        }
        p
    }

    // ----- output plumbing -----

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push(Action::Send { to, msg });
    }

    fn broadcast(&mut self, msg: Message) {
        self.out.push(Action::Broadcast { msg });
    }

    /// Queues `d` behind the persist batch it depends on (the one being built, or the last one
    /// emitted), or releases it now if that is already durable.
    fn defer(&mut self, d: Deferred) {
        let building = self.safety_dirty || !self.persist_buf.is_empty();
        let ticket = if building {
            self.next_ticket
        } else {
            self.next_ticket - 1
        };
        if ticket <= self.durable_ticket {
            self.release(d);
        } else {
            self.deferred.push_back((ticket, d));
        }
    }

    fn release(&mut self, d: Deferred) {
        match d {
            Deferred::Broadcast(msg) => self.broadcast(msg),
            Deferred::OwnVote(v) => self.add_vote(&v),
            Deferred::OwnTimeout(t) => self.add_timeout(&t),
        }
    }

    fn flush_persist(&mut self) {
        if self.safety_dirty {
            self.persist_buf
                .push(PersistItem::Safety(self.safety.clone()));
            self.safety_dirty = false;
        }
        if self.persist_buf.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.persist_buf);
        self.out.push(Action::Persist {
            ticket: self.next_ticket,
            items,
        });
        self.next_ticket += 1;
    }

    fn update_timer(&mut self) {
        let want = [
            self.pacemaker.deadline(),
            self.sync.next_deadline(),
            self.linger_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        // An idle node wakes when the next expiry falls due by its clock (timers run on the
        // runtime's monotonic `now`, so the wall-clock distance is carried over).
        let expiry_wake = self
            .next_expiry_ms
            .filter(|t| *t > self.wall_clock_ms)
            .map(|t| self.now.saturating_add(t - self.wall_clock_ms));
        let want = match (want, expiry_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = want
            && self.timer_set != Some(deadline)
        {
            self.timer_set = Some(deadline);
            self.out.push(Action::SetTimer {
                deadline_ms: deadline,
            });
        }
    }
}

/// The first bytes of a root in hex, for logs.
fn hex32(root: &[u8; 32]) -> String {
    root.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
