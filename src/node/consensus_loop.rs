//! The consensus thread: a real clock and channels around the [`Replica`], which drives the
//! sans-I/O core.
//!
//! It feeds the replica verified messages and requests, state-transfer answers, durable
//! reports and install results, stamped with the time, and carries out the effects it
//! returns, in order: sends go to the transport, persists, commits and installs to the
//! storage thread, and the snapshot download to its file. Every decision (tickets, timers,
//! gossip, when to ask for a snapshot, when to rebuild the core) is the replica's; this file
//! only does the I/O. Committed blocks below what the core keeps in memory are read from
//! the block store by the serving thread, not here. It also applies the per-peer limit on
//! `SyncInfo` answers and records each sync request, so the verifiers can drop sync
//! responses nobody asked for.
//!
//! Time: milliseconds since the thread started, from a monotonic clock.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::byzantine::{ConsensusHook, Outgoing};
use super::counters::NodeCounters;
use super::lossy::FaultyLink;
use super::metrics::NodeMetrics;
use super::peer_limits::{Limited, PeerLimits};
use super::quorum_watch::{QuorumChange, QuorumWatch};
use super::read_barrier::{PendingRead, ReadBarrier, ReadRefusal};
use super::routes::ReplyRoutes;
use super::serving::{ServeJob, ServeQueue};
use super::solicited::Solicited;
use super::status::StatusBoard;
use super::storage_loop::StorageJob;
use crate::consensus::PersistItem;
use crate::crypto::{Verified, VerifiedMessage};
use crate::net::{ClientId, NetCounters, Outbound, OutboundSender};
use crate::replica::{Effect, Input, Replica};
use crate::types::{BlockHeader, ClientRequest, Message, NodeId, RequestId, Round};
use crate::wire::client::encode_node_frame;
use crate::wire::peer::{ReadMsg, encode_consensus, encode_peer};
use crate::wire::{NodeFrame, PeerFrame, Refusal, SnapshotOffer, StateMsg};

/// Longest the loop sleeps without checking the stop flag.
const IDLE_WAKE_MS: u64 = 100;
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
    /// A client's linearizable read by barrier (`super::read_barrier`).
    Read {
        conn: ClientId,
        id: u64,
        key: Vec<u8>,
    },
    /// A peer's read-barrier probe: answer with our high QC.
    ReadProbe {
        from: NodeId,
        nonce: u64,
    },
    /// A peer's answer to our probe `nonce`; its QC (of round `round`) verified.
    ReadAnswer {
        from: NodeId,
        nonce: u64,
        round: Round,
    },
}

pub struct ConsensusCtx {
    pub replica: Replica,
    pub inputs: Receiver<ConsensusInput>,
    pub storage: Sender<StorageJob>,
    /// Blocks served from disk go to the serving thread.
    pub serving: ServeQueue,
    pub limits: Arc<PeerLimits>,
    pub solicited: Arc<Solicited>,
    pub durable_ticket: Arc<AtomicU64>,
    pub durable_wake: Receiver<()>,
    pub installed: Receiver<Result<BlockHeader, String>>,
    /// The storage thread's `(height, state root)` reports.
    pub applied: Receiver<super::storage_loop::AppliedReport>,
    pub out: OutboundSender,
    pub faults: Option<FaultyLink>,
    /// Test-only Byzantine behaviour (no-ops unless built with the `byzantine` feature).
    pub byzantine: ConsensusHook,
    pub routes: Arc<ReplyRoutes>,
    pub status: Arc<StatusBoard>,
    pub counters: Arc<NodeCounters>,
    pub metrics: Arc<NodeMetrics>,
    pub net: Arc<NetCounters>,
    /// Where a snapshot download is written (`snapshots/incoming.part`).
    pub incoming_snapshot: PathBuf,
    /// Linearizable reads waiting for their barrier.
    pub reads: ReadBarrier,
    /// The highest round this thread told the replica reads wait for (`ReadsWaiting`).
    pub read_round_told: Round,
    pub stop: Arc<AtomicBool>,
}

/// The snapshot download in progress.
struct Download {
    file: File,
}

struct Clock(Instant);

impl Clock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    /// The system clock, ms since the Unix epoch, for block timestamps (0 if the clock is
    /// set before 1970: the voters' bound then refuses this node's blocks, nothing worse).
    fn wall_clock_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

pub fn run(mut ctx: ConsensusCtx) {
    let clock = Clock(Instant::now());
    let mut download: Option<Download> = None;
    ctx.replica.set_wall_clock_ms(clock.wall_clock_ms());
    let effects = ctx.replica.start(clock.now_ms());
    ctx.execute(&clock, effects, &mut download);
    let mut peers_seen = PeersSeen::default();
    let mut last_publish_ms: Option<u64> = None;
    while !ctx.stop.load(Ordering::Relaxed) {
        let wait_ms = ctx
            .replica
            .next_deadline_ms()
            .saturating_sub(clock.now_ms())
            .min(IDLE_WAKE_MS);
        select! {
            recv(ctx.inputs) -> input => {
                let Ok(input) = input else { break };
                ctx.on_input(&clock, input, &mut download);
                for _ in 1..INPUTS_PER_TURN_MAX {
                    match ctx.inputs.try_recv() {
                        Ok(input) => ctx.on_input(&clock, input, &mut download),
                        Err(_) => break,
                    }
                }
            }
            recv(ctx.durable_wake) -> _ => {}
            recv(ctx.installed) -> result => {
                if let Ok(result) = result {
                    ctx.step(&clock, Input::Installed(result), &mut download);
                }
            }
            recv(ctx.applied) -> report => {
                if let Ok((height, root, next_expiry_ms, expired)) = report {
                    ctx.replica.set_next_expiry_ms(next_expiry_ms);
                    if expired {
                        ctx.replica.note_expired(height);
                    }
                    ctx.step(&clock, Input::Applied { height, root }, &mut download);
                }
            }
            default(Duration::from_millis(wait_ms)) => {}
        }
        // Persist reports: the storage thread only raises a counter, so this never blocks it.
        let durable = ctx.durable_ticket.load(Ordering::SeqCst);
        if durable > ctx.replica.durable_ticket() {
            ctx.step(&clock, Input::Durable { ticket: durable }, &mut download);
        }
        if clock.now_ms() >= ctx.replica.next_deadline_ms() {
            ctx.step(&clock, Input::Tick, &mut download);
        }
        ctx.drive_reads(&clock, &mut download);
        // Every turn: verified reads want the newest certificate as soon as it exists.
        if let Some(cert) = ctx.replica.latest_root_certificate() {
            ctx.status.offer_certificate(cert);
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
    /// Logs quorum lost and regained (created at the first publish).
    quorum: Option<QuorumWatch>,
}

const PEER_SILENT_AFTER: Duration = Duration::from_secs(5);

impl ConsensusCtx {
    fn on_input(&mut self, clock: &Clock, input: ConsensusInput, download: &mut Option<Download>) {
        let extra = self.byzantine.on_input(&input);
        self.send_each(extra);
        for (to, msg) in self.byzantine.state_flood() {
            let bytes = encode_peer(&PeerFrame::State(msg));
            let _ = self.out.try_send(Outbound::ToPeer(to, bytes));
        }
        let input = match input {
            ConsensusInput::Message { from, msg } => Input::MessageReceived { from, msg },
            ConsensusInput::Request(req) => {
                self.metrics
                    .request_stages
                    .received(req.id(), Instant::now());
                Input::RequestReceived(req)
            }
            ConsensusInput::State { from, msg } => Input::StateReceived { from, msg },
            ConsensusInput::Read { conn, id, key } => {
                let read = PendingRead { conn, id, key };
                if let Err(why) = self.reads.offer(read) {
                    self.counters.barrier_reads_refused.bump();
                    let reason = match why {
                        ReadRefusal::NodeFull => "busy: this node holds its limit of reads",
                        ReadRefusal::ConnFull => "busy: this link holds its limit of reads",
                    };
                    self.reply_client(
                        conn,
                        &NodeFrame::Unavailable {
                            id,
                            reason: reason.to_string(),
                        },
                    );
                }
                return;
            }
            ConsensusInput::ReadProbe { from, nonce } => {
                let qc = self.replica.core().safety().high_qc.clone();
                let round = qc.round;
                let bytes = self.byzantine.read_answer(nonce, qc);
                self.send_bytes(from, bytes);
                // The prober's barrier may be this round: help the chain commit it.
                self.tell_reads_waiting(clock, round, download);
                return;
            }
            ConsensusInput::ReadAnswer { from, nonce, round } => {
                self.reads.on_answer(clock.now_ms(), from, nonce, round);
                return;
            }
        };
        self.step(clock, input, download);
    }

    /// One step of the replica, then its effects.
    fn step(&mut self, clock: &Clock, input: Input, download: &mut Option<Download>) {
        if let Input::Durable { ticket } = &input {
            self.metrics.request_stages.durable(*ticket, Instant::now());
        }
        self.replica.set_wall_clock_ms(clock.wall_clock_ms());
        let effects = self.replica.handle(clock.now_ms(), input);
        self.execute(clock, effects, download);
    }

    fn execute(&mut self, clock: &Clock, effects: Vec<Effect>, download: &mut Option<Download>) {
        // Called after every step of the replica: the one place to see its QCs advance.
        self.metrics.core_stepped(self.replica.core());
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => self.send_peer(to, msg),
                Effect::Broadcast { msg } => self.broadcast(msg),
                Effect::SendState { to, msg } => {
                    let bytes = encode_peer(&PeerFrame::State(msg));
                    let _ = self.out.send(Outbound::ToPeer(to, bytes));
                }
                Effect::BroadcastState { msg } => {
                    let bytes = encode_peer(&PeerFrame::State(msg));
                    let _ = self.out.send(Outbound::Broadcast(bytes));
                }
                Effect::Persist { ticket, items } => {
                    self.stamp_own_blocks(ticket, &items);
                    self.to_storage(StorageJob::Persist { ticket, items })
                }
                Effect::Commit { id, block } => {
                    self.metrics.request_stages.committed(&id, Instant::now());
                    self.to_storage(StorageJob::Commit { id, block })
                }
                Effect::ServeCommitted {
                    to,
                    from_height,
                    to_height,
                    blocks_max,
                    bytes_max,
                } => self.serving.offer(ServeJob::Committed {
                    to,
                    from_height,
                    to_height,
                    blocks_max,
                    bytes_max,
                }),
                Effect::ReplyFromTable { id, ops_digest } => {
                    self.to_storage(StorageJob::CachedReply { id, ops_digest })
                }
                Effect::RefuseBusy { id } => self.refuse_busy(id),
                Effect::DownloadBegin { offer } => {
                    *download = self.begin_download(&offer);
                    if download.is_none() {
                        self.download_failed(clock, download);
                    }
                }
                Effect::DownloadAppend { bytes, .. } => {
                    if !append(download, &bytes) {
                        self.download_failed(clock, download);
                    }
                }
                Effect::InstallSnapshot { offer } => self.install(clock, offer, download),
            }
        }
    }

    /// The latency budget times the requests of the blocks this node proposes: its own blocks
    /// are persisted before they are sent.
    fn stamp_own_blocks(&self, ticket: u64, items: &[PersistItem]) {
        let me = self.replica.me();
        for item in items {
            if let PersistItem::Block { id, block } = item
                && block.author == me
                && !block.payload.is_empty()
            {
                self.metrics.request_stages.proposed(
                    *id,
                    ticket,
                    block.payload.iter().map(|r| r.id()),
                    Instant::now(),
                );
            }
        }
    }

    fn refuse_busy(&self, id: RequestId) {
        self.counters.request_refused(Refusal::Busy);
        let frame = encode_node_frame(&NodeFrame::Refused {
            client: id.client.0,
            session: id.session,
            seq: id.seq,
            reason: Refusal::Busy,
        });
        for conn in self.routes.take(&id) {
            let _ = self.out.try_send(Outbound::ToClient(conn, frame.clone()));
        }
    }

    /// The read barrier's turn: give up what waited too long, start a probe for queued reads,
    /// ask the chain to move for a waiting barrier, and hand the covered reads to storage.
    fn drive_reads(&mut self, clock: &Clock, download: &mut Option<Download>) {
        if !self.reads.is_busy() {
            return;
        }
        let now = clock.now_ms();
        for read in self.reads.expire(now) {
            self.counters.barrier_reads_expired.bump();
            self.reply_client(
                read.conn,
                &NodeFrame::Unavailable {
                    id: read.id,
                    reason: "read barrier not reached in time".to_string(),
                },
            );
        }
        let own = self.replica.core().safety().high_qc.round;
        if let Some(nonce) = self.reads.start_probe(now, own) {
            self.counters.barrier_probes.bump();
            let bytes = encode_peer(&PeerFrame::Read(ReadMsg::Probe { nonce }));
            let me = self.replica.me();
            let members: Vec<NodeId> = self.replica.committee().members().collect();
            for to in members {
                if to != me {
                    self.send_bytes(to, bytes.clone());
                }
            }
        }
        if let Some(round) = self.reads.round_wanted() {
            self.tell_reads_waiting(clock, round, download);
        }
        let committed = self.replica.core().committed();
        for ready in self.reads.ready(committed.round, committed.height) {
            let waited_ms = now.saturating_sub(ready.started_ms);
            self.metrics
                .read_barrier
                .observe(Duration::from_millis(waited_ms));
            self.to_storage(StorageJob::ServeReads {
                height: ready.height,
                reads: ready.reads,
            });
        }
    }

    /// `ReadsWaiting` for the replica, once per higher round.
    fn tell_reads_waiting(&mut self, clock: &Clock, round: Round, download: &mut Option<Download>) {
        if round > self.read_round_told {
            self.read_round_told = round;
            self.step(clock, Input::ReadsWaiting { round }, download);
        }
    }

    fn reply_client(&self, conn: ClientId, frame: &NodeFrame) {
        let _ = self
            .out
            .try_send(Outbound::ToClient(conn, encode_node_frame(frame)));
    }

    fn begin_download(&self, offer: &SnapshotOffer) -> Option<Download> {
        match File::create(&self.incoming_snapshot) {
            Ok(file) => Some(Download { file }),
            Err(e) => {
                log::warn!(
                    "{}: cannot create the download of snapshot {}: {e}",
                    self.incoming_snapshot.display(),
                    offer.height
                );
                None
            }
        }
    }

    /// The download is complete: synced, then handed to the storage thread, which checks and
    /// installs it after every commit queued before.
    fn install(&mut self, clock: &Clock, offer: SnapshotOffer, download: &mut Option<Download>) {
        let synced = match download.take() {
            Some(d) => d.file.sync_data().map_err(|e| e.to_string()),
            None => Err("no download in progress".to_string()),
        };
        match synced {
            Ok(()) => self.to_storage(StorageJob::Install {
                path: self.incoming_snapshot.clone(),
                offer,
            }),
            Err(e) => {
                log::warn!("syncing the snapshot download: {e}");
                let effects = self
                    .replica
                    .handle(clock.now_ms(), Input::Installed(Err(e)));
                self.execute(clock, effects, download);
            }
        }
    }

    fn download_failed(&mut self, clock: &Clock, download: &mut Option<Download>) {
        *download = None;
        let effects = self.replica.handle(clock.now_ms(), Input::DownloadFailed);
        self.execute(clock, effects, download);
    }

    fn to_storage(&self, job: StorageJob) {
        // Blocks while the storage thread is behind: backpressure on consensus, by design.
        // An error means the storage thread stopped (fail-stop); the node is going down.
        if self.storage.send(job).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn send_peer(&mut self, to: NodeId, msg: Message) {
        match &msg {
            // The verifiers admit a sync response only if a request asked for it.
            Message::SyncRequest(r) => self.solicited.asked(to, r.committed_height),
            // Our certificates, sent to a peer that looked behind (its stale timeout or
            // SyncInfo): a replayed one must not buy an answer each time.
            Message::SyncInfo(_) if !self.limits.allow_now(to, Limited::SyncInfoAnswer) => {
                return;
            }
            _ => {}
        }
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
        let me = self.replica.me();
        let members: Vec<NodeId> = self.replica.committee().members().collect();
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

    fn publish(&self, peers: &mut PeersSeen) {
        let stats = self.net.snapshot();
        if peers.last_frames.len() != stats.peers.len() {
            peers.last_frames = vec![0; stats.peers.len()];
            peers.last_change = vec![Instant::now() - PEER_SILENT_AFTER * 2; stats.peers.len()];
        }
        let mut connected = 0u16;
        let me = self.replica.me().index();
        // For the quorum watch: a peer whose authenticated link is up, or one heard from
        // recently. Not "heard from" alone: an idle cluster sends nothing, and the first
        // request after a quiet spell would find every peer silent.
        let mut reachable = vec![false; stats.peers.len()];
        for (i, p) in stats.peers.iter().enumerate() {
            if p.frames_in != peers.last_frames[i] {
                peers.last_frames[i] = p.frames_in;
                peers.last_change[i] = Instant::now();
            }
            let heard = i != me && peers.last_change[i].elapsed() < PEER_SILENT_AFTER;
            if heard {
                connected += 1;
            }
            reachable[i] = i == me || heard || p.link_up;
        }
        let committee = self.replica.committee();
        if reachable.len() == committee.n() {
            let watch = peers.quorum.get_or_insert_with(|| {
                QuorumWatch::new(committee.n(), committee.quorum(), Instant::now())
            });
            if let Some(change) = watch.observe(&reachable, Instant::now()) {
                let line = watch.line(&change);
                match change {
                    QuorumChange::Lost { .. } => log::warn!("{line}"),
                    QuorumChange::Reached { .. } | QuorumChange::Regained { .. } => {
                        log::info!("{line}")
                    }
                }
            }
        }
        let depths = [
            (&self.metrics.queue_consensus_depth, self.inputs.len()),
            (&self.metrics.queue_storage_depth, self.storage.len()),
        ];
        for (gauge, depth) in depths {
            gauge.store(depth as u64, Ordering::Relaxed);
        }
        let core = self.replica.core();
        self.metrics.publish_core(
            core,
            self.replica.core_stats(),
            self.replica.is_installing(),
        );
        self.status.set_divergence(self.replica.divergence());
        let certified = core.roots().latest_certified();
        self.status.update(|s| {
            if let Some((height, root, _)) = certified {
                s.certified_height = height;
                s.certified_root = root;
            }
            s.round = core.round();
            s.leader = core.leader().0;
            s.committed_height = core.committed().height;
            s.mempool_requests = core.mempool_len() as u64;
            s.peers_connected = connected;
        });
    }
}

/// Appends to the download; false if there is none or the write failed.
fn append(download: &mut Option<Download>, bytes: &[u8]) -> bool {
    let Some(d) = download.as_mut() else {
        return false;
    };
    match d.file.write_all(bytes) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("writing the snapshot download: {e}");
            false
        }
    }
}
