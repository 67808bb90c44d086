//! The replica: the one driver of the consensus [`Core`], used by the node's consensus thread
//! and by the simulator alike.
//!
//! It interprets the core's actions into [`Effect`]s, owns the persist tickets
//! ([`tickets`]), the timer, the certificate gossip, and the state-transfer decisions
//! ([`transfer`]), and rebuilds the core on top of an installed snapshot. It does no I/O,
//! spawns no thread and reads no clock: every input carries `now_ms`, every output is an
//! effect that a shell carries out (the node with channels, sockets and disks; the simulator
//! with simulated ones). So the simulator runs exactly the code production runs.
//!
//! Invariants:
//! - effects come out in the order the core produced them (persist before the messages that
//!   depend on it is the core's rule; the shell executes effects in order);
//! - a core is rebuilt after a snapshot install only when every persist handed to storage
//!   before is durable: the new core starts with nothing pending, so nothing it re-sends from
//!   its safety data (a stored vote or timeout) can leave before that data is on disk;
//! - while such a rebuild waits, the old core gets no input but durable reports, so it issues
//!   no new persist and the wait ends after one sync.
//!
//! Layering: imports `consensus`, `crypto`, `types` and `wire` only; never `net`, `node`,
//! threads, channels or clocks (checked by `tests/layering.rs`).

pub mod tickets;
pub mod transfer;

use std::sync::Arc;

use crate::consensus::Divergence;
use crate::consensus::{Action, Core, CoreConfig, DurableState, Event, PersistItem, RejectReason};
use crate::crypto::{Committee, Signer, Verified, VerifiedMessage};
use crate::kv::KvRequest;
use crate::types::{
    Block, BlockHeader, BlockId, ClientRequest, Height, Message, NodeId, RequestId, Round,
};
use crate::wire::{SnapshotOffer, StateMsg};
use tickets::Tickets;
pub use transfer::CHUNK_BYTES_MAX;
use transfer::{StateTransfer, TransferStep};

/// How often the replica gossips its certificates (see `Core::sync_info`).
pub const SYNC_GOSSIP_MS: u64 = 2_000;

/// What it takes to (re)build the core, and the replica's own settings.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub core: CoreConfig,
    pub committee: Arc<Committee>,
    pub signer: Signer,
    pub me: NodeId,
    /// Ask for a snapshot after the committed height stood still this long while syncing.
    pub state_transfer_after_ms: u64,
}

/// An input to [`Replica::handle`]: a past-tense fact, stamped by the shell with `now_ms`.
#[derive(Debug)]
pub enum Input {
    MessageReceived {
        from: NodeId,
        msg: Verified<VerifiedMessage>,
    },
    RequestReceived(Verified<ClientRequest>),
    /// A peer's answer to this replica's state-transfer requests (offers, chunks).
    StateReceived {
        from: NodeId,
        msg: StateMsg,
    },
    /// Storage made every persist up to `ticket` durable.
    Durable {
        ticket: u64,
    },
    /// The install asked for by [`Effect::InstallSnapshot`] finished: the state is now after
    /// this block, or it failed.
    Installed(Result<BlockHeader, String>),
    /// The shell could not write the snapshot download.
    DownloadFailed,
    /// The shell's state is now after `height` and its root is `root`: after applying a
    /// committed block, at start (first the roots the state remembers of the heights before
    /// the one it resumed, `KvStore::recent_roots`, then that one), and after installing a
    /// snapshot. Reported in height order.
    Applied {
        height: Height,
        root: [u8; 32],
    },
    /// Linearizable reads wait for a committed block of round `round` or higher
    /// (`consensus::Event::ReadsWaiting`).
    ReadsWaiting {
        round: Round,
    },
    /// Time passed: fire what is due (the shell calls this at [`Replica::next_deadline_ms`]
    /// or later, and may call it more often).
    Tick,
}

/// What the shell must do, in order.
#[derive(Debug, Clone)]
pub enum Effect {
    Send {
        to: NodeId,
        msg: Message,
    },
    /// Send to every other member.
    Broadcast {
        msg: Message,
    },
    SendState {
        to: NodeId,
        msg: StateMsg,
    },
    BroadcastState {
        msg: StateMsg,
    },
    /// Make `items` durable after every earlier ticket, then report `Input::Durable`.
    Persist {
        ticket: u64,
        items: Vec<PersistItem>,
    },
    /// Apply the committed block to the state machine and answer its clients.
    Commit {
        id: BlockId,
        block: Block,
    },
    /// The request `id` committed already: answer from the exactly-once table, if the cached
    /// reply is for the same ops (`ops_digest`).
    ReplyFromTable {
        id: RequestId,
        ops_digest: [u8; 32],
    },
    /// The mempool is full: refuse the request with `busy`.
    RefuseBusy {
        id: RequestId,
    },
    /// Send `to`, from the block store, the committed blocks of heights
    /// `from_height ..= to_height` as one sync response (see `Action::ServeCommitted`).
    ServeCommitted {
        to: NodeId,
        from_height: u64,
        to_height: u64,
        blocks_max: usize,
        bytes_max: usize,
    },
    /// Start the snapshot download file for `offer` (truncate any earlier one).
    DownloadBegin {
        offer: SnapshotOffer,
    },
    /// Append to the download file at `offset` (its current end).
    DownloadAppend {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The download is complete: make it durable, check it against `offer`, install it after
    /// every earlier commit, and report `Input::Installed`.
    InstallSnapshot {
        offer: SnapshotOffer,
    },
}

/// Counters the replica keeps on top of the core's.
#[derive(Debug, Default, Clone)]
pub struct ReplicaStats {
    pub snapshots_installed: u64,
    /// Messages and requests dropped while a rebuild waited for durability.
    pub inputs_dropped_rebuilding: u64,
    /// Committed blocks not handed to the state machine because its state is diverged
    /// (applying them on a state known to be wrong is pointless; the repair replays them).
    pub commits_skipped_diverged: u64,
    /// Snapshot installs that failed (a bad file, or not the certified state).
    pub snapshot_installs_failed: u64,
}

/// Applied reports kept while a rebuild waits (the newest; they are replayed into the new
/// core, and a gap only makes it forget older own roots).
const APPLIED_HELD_MAX: usize = 64;

pub struct Replica {
    cfg: ReplicaConfig,
    core: Core,
    tickets: Tickets,
    /// The core's timer (its latest `SetTimer`).
    timer_ms: Option<u64>,
    last_gossip_ms: u64,
    transfer: StateTransfer,
    /// An installed snapshot's block, waiting for every earlier persist to be durable before
    /// the core is rebuilt on top of it.
    rebuild: Option<BlockHeader>,
    /// Cores replaced after an install (their stats stay readable).
    retired_stats: crate::consensus::CoreStats,
    stats: ReplicaStats,
    /// `Input::Applied` reports that arrived while a repair install or a rebuild waited.
    applied_held: std::collections::VecDeque<(Height, [u8; 32])>,
    /// A snapshot install asked for while diverged is under way, until the core is rebuilt
    /// on it (or it failed). Meanwhile the old core's commits are not applied: the state is
    /// being replaced by one below them, and they would not fit on top.
    repairing: bool,
    /// What the shell last told of the wall clock and the next key expiry; handed to every
    /// core (a rebuilt one too).
    wall_clock_ms: u64,
    next_expiry_ms: Option<u64>,
    out: Vec<Effect>,
}

impl Replica {
    /// A replica for a fresh node (`None`) or one resuming from its durable state.
    pub fn new(cfg: ReplicaConfig, durable: Option<DurableState>, now_ms: u64) -> Self {
        let core = build_core(&cfg, durable);
        let transfer = StateTransfer::new(
            cfg.committee.f(),
            cfg.state_transfer_after_ms,
            core.committed().height,
            now_ms,
        );
        Self {
            cfg,
            core,
            tickets: Tickets::default(),
            timer_ms: None,
            last_gossip_ms: now_ms,
            transfer,
            rebuild: None,
            retired_stats: Default::default(),
            stats: ReplicaStats::default(),
            applied_held: Default::default(),
            repairing: false,
            wall_clock_ms: 0,
            next_expiry_ms: None,
            out: Vec::new(),
        }
    }

    /// The wall clock (ms since the Unix epoch), for block timestamps and the voters' bound
    /// on them: the shell sets it before every `handle` (the node from its system clock, the
    /// simulator from a simulated one). `now_ms` stays the monotonic clock of the timers.
    pub fn set_wall_clock_ms(&mut self, wall_clock_ms: u64) {
        self.wall_clock_ms = wall_clock_ms;
        self.core.set_wall_clock_ms(wall_clock_ms);
    }

    /// The block at `height` expired keys (`KvStore::expired_last_block`): the shell says so
    /// right after applying it, before handing the matching `Input::Applied`.
    pub fn note_expired(&mut self, height: Height) {
        self.core.note_expired(height);
    }

    /// The earliest key expiry of the applied state (`KvStore::next_expiry_ms`): the shell
    /// sets it whenever its state changed (after each apply, at start, after an install),
    /// before handing the matching `Input::Applied`.
    pub fn set_next_expiry_ms(&mut self, next_expiry_ms: Option<u64>) {
        self.next_expiry_ms = next_expiry_ms;
        self.core.set_next_expiry_ms(next_expiry_ms);
    }

    /// The first effects: the core's start (re-derive commits, tell peers where we are).
    pub fn start(&mut self, now_ms: u64) -> Vec<Effect> {
        let actions = self.core.start(now_ms);
        self.interpret(actions);
        self.finish(now_ms)
    }

    /// Applies one input at `now_ms` and returns what the shell must do, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        match input {
            Input::MessageReceived { from, msg } => {
                self.step_core(now_ms, Event::MessageReceived { from, msg })
            }
            Input::RequestReceived(req) => self.step_core(now_ms, Event::RequestReceived(req)),
            Input::StateReceived { from, msg } => {
                if !self.transfer.is_installing() {
                    let roots = self.core.roots();
                    let steps = self
                        .transfer
                        .on_message(now_ms, from, msg, |h| roots.certified(h).map(|c| c.0));
                    self.transfer_steps(steps);
                }
            }
            Input::Durable { ticket } => self.on_durable(now_ms, ticket),
            Input::Installed(result) => self.on_installed(now_ms, result),
            Input::DownloadFailed => self.transfer.on_download_failed(now_ms),
            Input::Applied { height, root } => self.on_applied(now_ms, height, root),
            Input::Tick => self.on_tick(now_ms),
            Input::ReadsWaiting { round } => self.step_core(now_ms, Event::ReadsWaiting { round }),
        }
        self.finish(now_ms)
    }

    /// When the shell should call `handle(Input::Tick)` next, at the latest.
    pub fn next_deadline_ms(&self) -> u64 {
        let mut next = self.last_gossip_ms.saturating_add(SYNC_GOSSIP_MS);
        if self.rebuild.is_none()
            && let Some(t) = self.timer_ms
        {
            next = next.min(t);
        }
        let repair = self.divergence().is_some();
        if let Some(t) = self
            .transfer
            .next_deadline_ms(self.core.is_syncing(), repair)
        {
            next = next.min(t);
        }
        next
    }

    // ----- accessors for the shells and tests -----

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The core's QC-path leader decisions since the last call (for the simulator's checker).
    pub fn take_leader_decisions(&mut self) -> Vec<crate::consensus::LeaderDecision> {
        self.core.take_leader_decisions()
    }

    pub fn me(&self) -> NodeId {
        self.cfg.me
    }

    pub fn committee(&self) -> &Arc<Committee> {
        &self.cfg.committee
    }

    /// Whether this node's state is known to differ from the one the chain certified (it
    /// then neither votes, proposes, applies commits nor should serve reads).
    pub fn divergence(&self) -> Option<Divergence> {
        self.core.roots().diverged()
    }

    /// The highest certified state root known here: `(height, root, carrying block)`.
    pub fn latest_certified_root(&self) -> Option<(Height, [u8; 32], BlockId)> {
        self.core.roots().latest_certified()
    }

    /// The certificate (carrying block header and QC) of the newest certified root known here.
    pub fn latest_root_certificate(&self) -> Option<std::sync::Arc<crate::types::RootCertificate>> {
        self.core.roots().certificate()
    }

    /// Certified roots since the last call (for the simulator's checker).
    pub fn take_certified_roots(&mut self) -> Vec<(Height, [u8; 32])> {
        self.core.take_certified_roots()
    }

    pub fn is_installing(&self) -> bool {
        self.transfer.is_installing() || self.rebuild.is_some()
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The core's counters summed over every core this replica ran.
    pub fn core_stats(&self) -> crate::consensus::CoreStats {
        let mut sum = self.retired_stats.clone();
        sum.add(self.core.stats());
        sum
    }

    /// Highest ticket storage reported durable.
    pub fn durable_ticket(&self) -> u64 {
        self.tickets.durable_ticket()
    }

    // ----- inputs -----

    fn step_core(&mut self, now_ms: u64, event: Event) {
        if self.rebuild.is_some() {
            // The old core must issue no new persist while the rebuild waits; peers re-send,
            // and the rebuilt core asks them where the cluster is.
            self.stats.inputs_dropped_rebuilding += 1;
            return;
        }
        let actions = self.core.handle(now_ms, event);
        self.interpret(actions);
    }

    fn on_durable(&mut self, now_ms: u64, ticket: u64) {
        if let Some(core_ticket) = self.tickets.durable(ticket) {
            let actions = self.core.handle(
                now_ms,
                Event::Persisted {
                    ticket: core_ticket,
                },
            );
            self.interpret(actions);
        }
        self.maybe_rebuild(now_ms);
    }

    fn on_applied(&mut self, now_ms: u64, height: Height, root: [u8; 32]) {
        if self.rebuild.is_some() || self.repairing {
            if self.applied_held.len() >= APPLIED_HELD_MAX {
                self.applied_held.pop_front();
            }
            self.applied_held.push_back((height, root));
            return;
        }
        self.transfer.observe_applied(height);
        let actions = self.core.handle(now_ms, Event::Applied { height, root });
        self.interpret(actions);
    }

    fn on_tick(&mut self, now_ms: u64) {
        if self.rebuild.is_none() && self.timer_ms.is_some_and(|t| now_ms >= t) {
            self.timer_ms = None;
            let actions = self.core.handle(now_ms, Event::TimerFired);
            self.interpret(actions);
        }
        let repair = self.divergence().is_some();
        let steps = self.transfer.tick(now_ms, self.core.is_syncing(), repair);
        self.transfer_steps(steps);
        if now_ms.saturating_sub(self.last_gossip_ms) >= SYNC_GOSSIP_MS {
            self.last_gossip_ms = now_ms;
            let msg = Message::SyncInfo(self.core.sync_info());
            self.out.push(Effect::Broadcast { msg });
        }
    }

    /// After a snapshot install: a new core on top of the installed block, once everything
    /// queued before is durable (see the module invariants).
    fn on_installed(&mut self, now_ms: u64, result: Result<BlockHeader, String>) {
        self.transfer.on_installed(now_ms, result.is_ok());
        let header = match result {
            Ok(header) => header,
            Err(e) => {
                log::warn!("snapshot not installed: {e}");
                self.stats.snapshot_installs_failed += 1;
                self.repairing = false;
                self.replay_held(now_ms);
                return;
            }
        };
        self.stats.snapshots_installed += 1;
        if header.height <= self.core.committed().height && !self.repairing {
            return; // blocks caught up meanwhile
        }
        // A repair installs below the core's committed height (a diverged node stopped
        // applying): the new core re-commits the blocks above the snapshot, fetched from peers.
        self.rebuild = Some(header);
        self.maybe_rebuild(now_ms);
    }

    fn maybe_rebuild(&mut self, now_ms: u64) {
        if self.rebuild.is_none() || !self.tickets.all_durable() {
            return;
        }
        let Some(header) = self.rebuild.take() else {
            return;
        };
        // Every persist is durable, so the old core's safety data is what the disk holds.
        let durable = DurableState {
            safety: self.core.safety().clone(),
            blocks: Vec::new(),
            committed: header,
        };
        self.retired_stats.add(self.core.stats());
        // The book outlives the core (certified roots, a divergence); the state's reports
        // held meanwhile go in before the new core commits anything, so a repaired state
        // is known repaired (or still diverged) before its first commit.
        let mut roots = self.core.take_roots();
        while let Some((height, root)) = self.applied_held.pop_front() {
            self.transfer.observe_applied(height);
            if let Some(d) = roots.on_applied(height, root) {
                log::error!(
                    "{}: the state installed at height {height} still differs from the certified root ({})",
                    self.cfg.me,
                    d.height
                );
            }
        }
        self.repairing = false;
        self.core = build_core(&self.cfg, Some(durable));
        self.core.set_roots(roots);
        self.core.set_wall_clock_ms(self.wall_clock_ms);
        self.core.set_next_expiry_ms(self.next_expiry_ms);
        self.tickets.rebase();
        self.timer_ms = None;
        log::info!(
            "{}: consensus restarted on top of the snapshot at height {}",
            self.cfg.me,
            header.height
        );
        let actions = self.core.start(now_ms);
        self.interpret(actions);
    }

    /// Hands the reports held during a failed repair install to the core.
    fn replay_held(&mut self, now_ms: u64) {
        while let Some((height, root)) = self.applied_held.pop_front() {
            self.on_applied(now_ms, height, root);
        }
    }

    // ----- outputs -----

    fn finish(&mut self, now_ms: u64) -> Vec<Effect> {
        let repair = self.divergence().is_some();
        self.transfer
            .observe(now_ms, self.core.committed().height, repair);
        std::mem::take(&mut self.out)
    }

    fn interpret(&mut self, actions: Vec<Action>) {
        for action in actions {
            let effect = match action {
                Action::Send { to, msg } => Effect::Send { to, msg },
                Action::Broadcast { msg } => Effect::Broadcast { msg },
                Action::Persist { ticket, items } => Effect::Persist {
                    ticket: self.tickets.issue(ticket),
                    items,
                },
                Action::Commit { id, block } => {
                    if self.repairing || self.core.roots().diverged().is_some() {
                        self.stats.commits_skipped_diverged += 1;
                        continue;
                    }
                    Effect::Commit { id, block }
                }
                Action::ServeCommitted {
                    to,
                    from_height,
                    to_height,
                    blocks_max,
                    bytes_max,
                } => Effect::ServeCommitted {
                    to,
                    from_height,
                    to_height,
                    blocks_max,
                    bytes_max,
                },
                Action::SetTimer { deadline_ms } => {
                    self.timer_ms = Some(deadline_ms);
                    continue;
                }
                Action::RejectRequest {
                    client,
                    session,
                    seq,
                    ops_digest,
                    reason,
                } => {
                    let id = RequestId {
                        client,
                        session,
                        seq,
                    };
                    match reason {
                        RejectReason::Committed => Effect::ReplyFromTable { id, ops_digest },
                        RejectReason::Busy => Effect::RefuseBusy { id },
                    }
                }
            };
            self.out.push(effect);
        }
    }

    fn transfer_steps(&mut self, steps: Vec<TransferStep>) {
        for step in steps {
            let effect = match step {
                TransferStep::Broadcast(msg) => Effect::BroadcastState { msg },
                TransferStep::Send(to, msg) => Effect::SendState { to, msg },
                TransferStep::Begin(offer) => Effect::DownloadBegin { offer },
                TransferStep::Append { offset, bytes } => Effect::DownloadAppend { offset, bytes },
                TransferStep::Install(offer) => {
                    self.repairing = self.divergence().is_some();
                    Effect::InstallSnapshot { offer }
                }
            };
            self.out.push(effect);
        }
    }
}

fn build_core(cfg: &ReplicaConfig, durable: Option<DurableState>) -> Core {
    Core::new(
        cfg.core.clone(),
        cfg.committee.clone(),
        cfg.signer.clone(),
        cfg.me,
        durable,
    )
}

/// The requests of a committed block as the state machine takes them: the one mapping that
/// both shells (the node's storage thread and the simulator) apply.
pub fn kv_requests(block: &Block) -> Vec<KvRequest<'_>> {
    block
        .payload
        .iter()
        .map(|r| KvRequest {
            client: r.client.0,
            session: r.session,
            seq: r.seq,
            ops: &r.ops,
        })
        .collect()
}

#[cfg(test)]
mod tests;
