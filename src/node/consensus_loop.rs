//! The consensus thread: owns the sans-I/O [`Core`] and drives it with real time.
//!
//! It feeds the core verified messages and requests, timer expiries and "persisted" reports,
//! and carries out the actions it returns, in order: sends go to the transport, persists and
//! commits to the storage thread. The core itself holds back every vote, timeout and proposal
//! until the persist it depends on is reported durable, so this loop may send whatever the
//! core returns at once.
//!
//! Persist tickets: the core numbers its persists from 1. When the core is rebuilt on top of
//! an installed snapshot, the new core numbers from 1 again, so this loop adds `ticket_base`
//! (the last ticket issued before) to every ticket it passes to storage, and only reports
//! tickets above the base to the new core.
//!
//! Time: milliseconds since the thread started, from a monotonic clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::byzantine::{ConsensusHook, Outgoing};
use super::counters::NodeCounters;
use super::lossy::FaultyLink;
use super::metrics::NodeMetrics;
use super::routes::ReplyRoutes;
use super::state_transfer::{StateTransfer, TransferStep};
use super::status::StatusBoard;
use super::storage_loop::StorageJob;
use crate::consensus::{Action, Core, CoreConfig, DurableState, Event, RejectReason};
use crate::crypto::{Committee, Signer, Verified, VerifiedMessage};
use crate::net::{NetCounters, Outbound, OutboundSender};
use crate::types::{BlockHeader, ClientRequest, Message, NodeId};
use crate::wire::client::encode_node_frame;
use crate::wire::peer::{encode_consensus, encode_peer};
use crate::wire::{NodeFrame, PeerFrame, Refusal, StateMsg};

/// Longest the loop sleeps without checking the stop flag and the state transfer.
const IDLE_WAKE_MS: u64 = 100;
/// How often the node gossips its certificates (see `Core::sync_info`).
const SYNC_GOSSIP_MS: u64 = 2_000;
/// How often the status board and the metrics get a fresh copy of the core's state: readers
/// poll them, so copying (and snapshotting every peer counter) on each turn would only add
/// work to this thread's hot loop.
const PUBLISH_EVERY_MS: u64 = 50;
/// Inputs handled before the loop looks at timers and persist reports again.
const INPUTS_PER_TURN_MAX: usize = 256;

/// What the verifier pool hands the consensus thread.
pub enum ConsensusInput {
    Message {
        from: NodeId,
        msg: Verified<VerifiedMessage>,
    },
    Request(Verified<ClientRequest>),
    /// An answer to this node's own state-transfer requests.
    State {
        from: NodeId,
        msg: StateMsg,
    },
}

/// What it takes to (re)build the core.
pub struct CoreFactory {
    pub cfg: CoreConfig,
    pub committee: Arc<Committee>,
    pub signer: Signer,
    pub me: NodeId,
}

impl CoreFactory {
    pub fn build(&self, durable: DurableState) -> Core {
        Core::new(
            self.cfg.clone(),
            self.committee.clone(),
            self.signer.clone(),
            self.me,
            Some(durable),
        )
    }
}

pub struct ConsensusCtx {
    pub core: Core,
    pub factory: CoreFactory,
    pub inputs: Receiver<ConsensusInput>,
    pub storage: Sender<StorageJob>,
    pub durable_ticket: Arc<AtomicU64>,
    pub durable_wake: Receiver<()>,
    pub installed: Receiver<Result<BlockHeader, String>>,
    pub out: OutboundSender,
    pub faults: Option<FaultyLink>,
    /// Test-only Byzantine behaviour (no-ops unless built with the `byzantine` feature).
    pub byzantine: ConsensusHook,
    pub routes: Arc<ReplyRoutes>,
    pub status: Arc<StatusBoard>,
    pub counters: Arc<NodeCounters>,
    pub metrics: Arc<NodeMetrics>,
    pub net: Arc<NetCounters>,
    pub transfer: StateTransfer,
    pub stop: Arc<AtomicBool>,
}

struct Clock(Instant);

impl Clock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

pub fn run(mut ctx: ConsensusCtx) {
    let clock = Clock(Instant::now());
    let mut timer: Option<u64> = None;
    let mut ticket_base = 0u64;
    let mut last_ticket = 0u64;
    let actions = ctx.core.start(clock.now_ms());
    ctx.execute(actions, &mut timer, ticket_base, &mut last_ticket);
    let mut peers_seen = PeersSeen::default();
    let mut last_gossip_ms = 0u64;
    let mut last_publish_ms: Option<u64> = None;
    while !ctx.stop.load(Ordering::Relaxed) {
        let now = clock.now_ms();
        let wait_ms = timer
            .map_or(IDLE_WAKE_MS, |t| t.saturating_sub(now))
            .min(IDLE_WAKE_MS);
        select! {
            recv(ctx.inputs) -> input => {
                let Ok(input) = input else { break };
                ctx.on_input(&clock, input, &mut timer, ticket_base, &mut last_ticket);
                for _ in 1..INPUTS_PER_TURN_MAX {
                    match ctx.inputs.try_recv() {
                        Ok(input) => ctx.on_input(&clock, input, &mut timer, ticket_base, &mut last_ticket),
                        Err(_) => break,
                    }
                }
            }
            recv(ctx.durable_wake) -> _ => {}
            recv(ctx.installed) -> result => {
                if let Ok(result) = result {
                    ctx.on_installed(&clock, result, &mut timer, &mut ticket_base, &mut last_ticket);
                }
            }
            default(Duration::from_millis(wait_ms)) => {}
        }
        // Persist reports: the storage thread only raises a counter, so this never blocks it.
        let durable = ctx.durable_ticket.load(Ordering::SeqCst);
        if durable > ticket_base {
            let actions = ctx.core.handle(
                clock.now_ms(),
                Event::Persisted {
                    ticket: durable - ticket_base,
                },
            );
            ctx.execute(actions, &mut timer, ticket_base, &mut last_ticket);
        }
        if timer.is_some_and(|t| clock.now_ms() >= t) {
            timer = None;
            let actions = ctx.core.handle(clock.now_ms(), Event::TimerFired);
            ctx.execute(actions, &mut timer, ticket_base, &mut last_ticket);
        }
        let steps = ctx.transfer.tick(
            clock.now_ms(),
            ctx.core.committed().height,
            ctx.core.is_syncing(),
        );
        ctx.transfer_steps(steps);
        if clock.now_ms().saturating_sub(last_gossip_ms) >= SYNC_GOSSIP_MS {
            last_gossip_ms = clock.now_ms();
            let info = ctx.core.sync_info();
            ctx.broadcast(Message::SyncInfo(info));
        }
        if last_publish_ms.is_none_or(|t| clock.now_ms().saturating_sub(t) >= PUBLISH_EVERY_MS) {
            last_publish_ms = Some(clock.now_ms());
            ctx.publish(&mut peers_seen);
        }
    }
    log::debug!("consensus thread done");
    // Dropping ctx closes the storage queue once the verifiers are gone too; the storage
    // thread then finishes what is queued and exits.
}

/// Tracks which peers sent frames recently, for the status's `peers_connected`.
#[derive(Default)]
struct PeersSeen {
    last_frames: Vec<u64>,
    last_change: Vec<Instant>,
}

const PEER_SILENT_AFTER: Duration = Duration::from_secs(5);

impl ConsensusCtx {
    fn on_input(
        &mut self,
        clock: &Clock,
        input: ConsensusInput,
        timer: &mut Option<u64>,
        ticket_base: u64,
        last_ticket: &mut u64,
    ) {
        let extra = self.byzantine.on_input(&input);
        self.send_each(extra);
        let event = match input {
            ConsensusInput::Message { from, msg } => Event::MessageReceived { from, msg },
            ConsensusInput::Request(req) => Event::RequestReceived(req),
            ConsensusInput::State { from, msg } => {
                if self.transfer.is_installing() {
                    return;
                }
                let steps = self.transfer.on_message(
                    clock.now_ms(),
                    from,
                    msg,
                    self.core.committed().height,
                );
                self.transfer_steps(steps);
                return;
            }
        };
        let actions = self.core.handle(clock.now_ms(), event);
        self.execute(actions, timer, ticket_base, last_ticket);
    }

    fn execute(
        &mut self,
        actions: Vec<Action>,
        timer: &mut Option<u64>,
        ticket_base: u64,
        last_ticket: &mut u64,
    ) {
        // Called after every step of the core: the one place to see its QCs advance.
        self.metrics.core_stepped(&self.core);
        for action in actions {
            match action {
                Action::Send { to, msg } => self.send_peer(to, msg),
                Action::Broadcast { msg } => self.broadcast(msg),
                Action::Persist { ticket, items } => {
                    let ticket = ticket_base + ticket;
                    *last_ticket = ticket;
                    self.to_storage(StorageJob::Persist { ticket, items });
                }
                Action::Commit { id, block } => self.to_storage(StorageJob::Commit { id, block }),
                Action::SetTimer { deadline_ms } => *timer = Some(deadline_ms),
                Action::RejectRequest {
                    client,
                    seq,
                    reason: RejectReason::Committed,
                } => self.to_storage(StorageJob::CachedReply { client, seq }),
                Action::RejectRequest {
                    client,
                    seq,
                    reason: RejectReason::Busy,
                } => {
                    self.counters.request_refused(Refusal::Busy);
                    let frame = encode_node_frame(&NodeFrame::Refused {
                        client: client.0,
                        seq,
                        reason: Refusal::Busy,
                    });
                    for conn in self.routes.take(&client, seq) {
                        let _ = self.out.try_send(Outbound::ToClient(conn, frame.clone()));
                    }
                }
            }
        }
    }

    fn to_storage(&self, job: StorageJob) {
        // Blocks while the storage thread is behind: backpressure on consensus, by design.
        // An error means the storage thread stopped (fail-stop); the node is going down.
        if self.storage.send(job).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn send_peer(&mut self, to: NodeId, msg: Message) {
        let msg = match self.byzantine.outbound(Some(to), msg) {
            Outgoing::Unchanged(msg) => msg,
            Outgoing::Instead(sends) => return self.send_each(sends),
        };
        let bytes = encode_consensus(msg);
        self.send_bytes(to, bytes);
    }

    fn send_bytes(&mut self, to: NodeId, bytes: Vec<u8>) {
        let frames = match self.faults.as_mut() {
            Some(f) => f.filter(to, bytes),
            None => vec![Outbound::ToPeer(to, bytes)],
        };
        for frame in frames {
            if self.out.send(frame).is_err() {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn broadcast(&mut self, msg: Message) {
        let msg = match self.byzantine.outbound(None, msg) {
            Outgoing::Unchanged(msg) => msg,
            Outgoing::Instead(sends) => return self.send_each(sends),
        };
        let bytes = encode_consensus(msg);
        if self.faults.is_none() {
            if self.out.send(Outbound::Broadcast(bytes)).is_err() {
                self.stop.store(true, Ordering::Relaxed);
            }
            return;
        }
        // Faults are decided per link.
        let me = self.factory.me;
        let members: Vec<NodeId> = self.factory.committee.members().collect();
        for to in members {
            if to != me {
                self.send_bytes(to, bytes.clone());
            }
        }
    }

    /// Sends each message to its peer, past the Byzantine hook (it made them).
    fn send_each(&mut self, sends: Vec<(NodeId, Message)>) {
        for (to, msg) in sends {
            self.send_bytes(to, encode_consensus(msg));
        }
    }

    fn transfer_steps(&mut self, steps: Vec<TransferStep>) {
        for step in steps {
            match step {
                TransferStep::Broadcast(msg) => {
                    let bytes = encode_peer(&PeerFrame::State(msg));
                    let _ = self.out.send(Outbound::Broadcast(bytes));
                }
                TransferStep::Send(to, msg) => {
                    let bytes = encode_peer(&PeerFrame::State(msg));
                    let _ = self.out.send(Outbound::ToPeer(to, bytes));
                }
                TransferStep::Install { path, offer } => {
                    self.to_storage(StorageJob::Install { path, offer })
                }
            }
        }
    }

    /// After a snapshot install: a new core on top of the installed block, keeping the safety
    /// data (the old core's, which is at least what is durable: nothing it promised is lost).
    fn on_installed(
        &mut self,
        clock: &Clock,
        result: Result<BlockHeader, String>,
        timer: &mut Option<u64>,
        ticket_base: &mut u64,
        last_ticket: &mut u64,
    ) {
        self.transfer.on_installed(clock.now_ms());
        let Ok(header) = result else { return };
        if header.height <= self.core.committed().height {
            return; // blocks caught up meanwhile
        }
        let durable = DurableState {
            safety: self.core.safety().clone(),
            blocks: Vec::new(),
            committed: header,
        };
        self.core = self.factory.build(durable);
        *ticket_base = *last_ticket;
        *timer = None;
        log::info!(
            "consensus restarted on top of the snapshot at height {}",
            header.height
        );
        let actions = self.core.start(clock.now_ms());
        self.execute(actions, timer, *ticket_base, last_ticket);
    }

    fn publish(&self, peers: &mut PeersSeen) {
        let stats = self.net.snapshot();
        if peers.last_frames.len() != stats.peers.len() {
            peers.last_frames = vec![0; stats.peers.len()];
            peers.last_change = vec![Instant::now() - PEER_SILENT_AFTER * 2; stats.peers.len()];
        }
        let mut connected = 0u16;
        for (i, p) in stats.peers.iter().enumerate() {
            if p.frames_in != peers.last_frames[i] {
                peers.last_frames[i] = p.frames_in;
                peers.last_change[i] = Instant::now();
            }
            if i != self.factory.me.index() && peers.last_change[i].elapsed() < PEER_SILENT_AFTER {
                connected += 1;
            }
        }
        let core = &self.core;
        self.metrics
            .publish_core(core, self.transfer.is_installing());
        self.status.update(|s| {
            s.round = core.round();
            s.leader = core.leader().0;
            s.committed_height = core.committed().height;
            s.mempool_requests = core.mempool_len() as u64;
            s.peers_connected = connected;
        });
    }
}
