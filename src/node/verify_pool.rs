//! The verifier pool: threads that take raw frames from the transport, decode and validate
//! them, verify every signature in one batch per handful of frames, and pass what is valid
//! on. Nothing unverified reaches the consensus thread (it only accepts `Verified<T>`).
//!
//! Routing: consensus messages and client requests go to the consensus thread; a peer's
//! snapshot requests go to the serving thread; answers to our own snapshot requests go to
//! the consensus thread (which runs the state transfer); watch commands go to the watch
//! thread; stale reads, verified reads and status
//! requests are answered here, from the KV store's read lock and the status board (which
//! holds the newest root certificates the consensus thread published). A verified read is
//! answered synchronously like a stale read, so a link has at most what its inbound frames
//! hold in flight; its proof is checked against the certified root before it is sent.
//! Linearizable reads by barrier (`ClientFrame::BarrierGet`) and read probes go to the
//! consensus thread (`super::read_barrier`); a probe answer's QC is verified here first.
//! Clients' snapshot requests (`bftctl snapshot save`) pass one rate limit shared by all
//! clients and go to the serving thread.
//!
//! Cheap filters first (issue 13 item 8): sync requests, snapshot requests, `SyncInfo` and
//! timeouts pass per-peer rate limits ([`super::peer_limits`]), and a sync response must
//! answer a request of ours ([`super::solicited`]), before any signature is checked.
//!
//! Backpressure: a peer message waits for room in the consensus queue (the transport stops
//! reading that peer meanwhile); a client request that finds the queue full is refused with
//! `busy` at once, so clients cannot crowd out the protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};

use super::byzantine::ServingHook;
use super::consensus_loop::ConsensusInput;
use super::counters::NodeCounters;
use super::metrics::NodeMetrics;
use super::peer_limits::{Limited, PeerLimits};
use super::routes::ReplyRoutes;
use super::serving::{ServeJob, ServeQueue};
use super::solicited::Solicited;
use super::status::StatusBoard;
use super::watchers::{WatchCmd, WatchQueue};
use crate::api::ops::KEY_BYTES_MAX;
use crate::crypto::{Verifier, VerifyError};
use crate::kv::KvStore;
use crate::net::{ClientId, Inbound, Outbound, OutboundSender, Remote};
use crate::types::{ClientRequest, Message, NodeId, RequestId, SyncInfo};
use crate::util::KeyedRateLimit;
use crate::wire::client::decode_client_frame;
use crate::wire::peer::ReadMsg;
use crate::wire::peer::decode_peer;
use crate::wire::{ClientFrame, NodeFrame, PeerFrame, Refusal, StateMsg};

/// Everything one verifier thread needs; cloned per thread.
#[derive(Clone)]
pub struct VerifyCtx {
    pub verifier: Arc<Verifier>,
    pub inbound: Receiver<Inbound>,
    pub consensus: Sender<ConsensusInput>,
    /// Peers' snapshot requests go to the serving thread.
    pub serving: ServeQueue,
    /// Clients' watch commands go to the watch thread.
    pub watches: WatchQueue,
    pub limits: Arc<PeerLimits>,
    pub solicited: Arc<Solicited>,
    pub out: OutboundSender,
    pub routes: Arc<ReplyRoutes>,
    pub kv: Arc<RwLock<KvStore>>,
    pub status: Arc<StatusBoard>,
    pub counters: Arc<NodeCounters>,
    /// Where the verifiers publish their queue's depth.
    pub metrics: Arc<NodeMetrics>,
    pub stop: Arc<AtomicBool>,
    pub batch_frames_max: usize,
    /// One log line per refused signing key per minute, shared by the verifier threads.
    pub refused_keys_log: Arc<Mutex<KeyedRateLimit<[u8; 32]>>>,
    /// Test-only Byzantine answers (a no-op unless built with the `byzantine` feature).
    pub byzantine: ServingHook,
}

/// Frames of one batch, sorted by what they need.
#[derive(Default)]
struct Sorted {
    messages: Vec<(NodeId, Message)>,
    requests: Vec<(ClientId, ClientRequest)>,
}

pub fn run(ctx: VerifyCtx) {
    loop {
        let first = match ctx.inbound.recv_timeout(Duration::from_millis(100)) {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Timeout) => {
                ctx.metrics.queue_verify_depth.store(0, Ordering::Relaxed);
                if ctx.stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        ctx.metrics
            .queue_verify_depth
            .store(ctx.inbound.len() as u64 + 1, Ordering::Relaxed);
        let mut sorted = Sorted::default();
        ctx.sort(first, &mut sorted);
        for _ in 1..ctx.batch_frames_max {
            match ctx.inbound.try_recv() {
                Ok(frame) => ctx.sort(frame, &mut sorted),
                Err(_) => break,
            }
        }
        if !ctx.forward_messages(sorted.messages) || !ctx.forward_requests(sorted.requests) {
            return; // the consensus thread is gone: shutting down
        }
    }
}

/// At most one "not authorised" line per signing key per this interval.
pub const REFUSED_KEY_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Signing keys remembered for that rate limit (a flood of fresh keys evicts the oldest).
pub const REFUSED_KEYS_LOGGED_MAX: usize = 1024;

impl VerifyCtx {
    /// "client signing key … not authorised", at most once a minute per key.
    fn log_refused_key(&self, key: &[u8; 32]) {
        let now = std::time::Instant::now();
        let Some(left_out) = self.refused_keys_log.lock().allow(key, now) else {
            return;
        };
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let also = match left_out {
            0 => String::new(),
            n => format!("; {n} more requests with this key refused since its last line"),
        };
        log::warn!(
            "refused a request signed by client key {hex}: not a signing_public_key in \
             [clients] allow{also}"
        );
    }

    fn sort(&self, frame: Inbound, sorted: &mut Sorted) {
        match frame.from {
            Remote::Peer(from) => match decode_peer(&frame.bytes) {
                Ok(PeerFrame::Consensus(msg)) => {
                    if self.admit(from, &msg) {
                        sorted.messages.push((from, msg));
                    }
                }
                Ok(PeerFrame::State(msg)) => self.route_state(from, msg),
                Ok(PeerFrame::Read(msg)) => self.route_read(from, msg),
                Err(e) => {
                    self.counters.peer_frames_undecodable.bump();
                    log::warn!("{from} sent a frame that does not decode: {e}");
                }
            },
            Remote::Client(conn) => match decode_client_frame(&frame.bytes) {
                Ok(ClientFrame::Submit(req)) => sorted.requests.push((conn, req)),
                Ok(ClientFrame::StaleGet { id, key }) => self.stale_get(conn, id, &key),
                Ok(ClientFrame::VerifiedGet { id, key }) => self.verified_get(conn, id, &key),
                Ok(ClientFrame::Watch {
                    id,
                    key,
                    prefix,
                    from_height,
                }) => self.watches.offer(WatchCmd::Watch {
                    conn,
                    id,
                    key,
                    prefix,
                    from_height,
                }),
                Ok(ClientFrame::Unwatch { id }) => {
                    self.watches.offer(WatchCmd::Unwatch { conn, id })
                }
                Ok(ClientFrame::BarrierGet { id, key }) => self.barrier_get(conn, id, key),
                Ok(ClientFrame::Status { id }) => {
                    let status = self.status.snapshot();
                    self.reply(conn, &NodeFrame::Status { id, status });
                }
                Ok(
                    request @ (ClientFrame::SnapshotOffer { .. }
                    | ClientFrame::SnapshotChunk { .. }),
                ) => {
                    if self.limits.allow_client_snapshot_now() {
                        self.serving.offer(ServeJob::Client { conn, request });
                    } else {
                        // The client's query times out and it asks again.
                        self.counters.client_snapshot_requests_limited.bump();
                    }
                }
                Err(e) => {
                    self.counters.client_frames_undecodable.bump();
                    log::debug!("{conn:?} sent a frame that does not decode: {e}");
                }
            },
        }
    }

    /// The cheap checks before any signature is verified: the per-peer rate limits, and for
    /// a sync response, that one of our requests asked that peer for it.
    fn admit(&self, from: NodeId, msg: &Message) -> bool {
        let kind = match msg {
            Message::SyncRequest(_) => Limited::SyncRequest,
            Message::SyncInfo(_) => Limited::SyncInfo,
            Message::Timeout(_) => Limited::Timeout,
            Message::SyncResponse(r) => {
                let solicited = r
                    .blocks
                    .first()
                    .is_some_and(|b| self.solicited.take(from, b.height));
                if !solicited {
                    self.counters.sync_responses_unsolicited.bump();
                }
                return solicited;
            }
            Message::Proposal(_) | Message::Vote(_) => return true,
        };
        self.limits.allow_now(from, kind)
    }

    fn route_state(&self, from: NodeId, msg: StateMsg) {
        let delivered = match msg {
            StateMsg::OfferRequest | StateMsg::ChunkRequest { .. } => {
                if self.limits.allow_now(from, Limited::StateRequest) {
                    self.serving.offer(ServeJob::State { from, msg });
                }
                // Dropped or queued, it is counted where it happened.
                true
            }
            StateMsg::Offer(_) | StateMsg::Chunk { .. } => self
                .consensus
                .try_send(ConsensusInput::State { from, msg })
                .is_ok(),
        };
        if !delivered {
            // State transfer retries on its own; under load it simply waits.
            self.counters.state_frames_dropped.bump();
        }
    }

    /// A read-barrier probe goes to the consensus thread (which holds the high QC); an
    /// answer to ours is counted only once its QC verifies (a QC this node already checked
    /// costs a cache lookup).
    fn route_read(&self, from: NodeId, msg: ReadMsg) {
        let kind = match msg {
            ReadMsg::Probe { .. } => Limited::ReadProbe,
            ReadMsg::HighQc { .. } => Limited::ReadAnswer,
        };
        if !self.limits.allow_now(from, kind) {
            self.counters.barrier_answers_invalid.bump();
            return;
        }
        let input = match msg {
            ReadMsg::Probe { nonce } => ConsensusInput::ReadProbe { from, nonce },
            ReadMsg::HighQc { nonce, qc } => {
                let round = qc.round;
                let as_msg = Message::SyncInfo(SyncInfo {
                    high_qc: qc,
                    high_tc: None,
                });
                if let Err(e) = self.verifier.verify_message(as_msg) {
                    self.counters.barrier_answers_invalid.bump();
                    log::warn!("{from} answered a read probe with a QC that does not verify: {e}");
                    return;
                }
                ConsensusInput::ReadAnswer { from, nonce, round }
            }
        };
        // A full queue drops it: the barrier times out and its clients fall back.
        if self.consensus.try_send(input).is_err() {
            self.counters.barrier_answers_invalid.bump();
        }
    }

    /// A linearizable read by barrier: queued on the consensus thread, or refused at once.
    fn barrier_get(&self, conn: ClientId, id: u64, key: Vec<u8>) {
        let refuse = |reason: String| {
            self.counters.barrier_reads_refused.bump();
            self.reply(conn, &NodeFrame::Unavailable { id, reason });
        };
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return refuse(format!(
                "a key must be 1 to {KEY_BYTES_MAX} bytes, not {}",
                key.len()
            ));
        }
        if self
            .consensus
            .try_send(ConsensusInput::Read { conn, id, key })
            .is_err()
        {
            refuse("busy: the consensus queue is full".to_string());
        }
    }

    fn stale_get(&self, conn: ClientId, id: u64, key: &[u8]) {
        if let Some(d) = self.status.divergence() {
            // The state is known wrong: answering from it would hand out wrong data.
            self.counters.stale_reads_refused.bump();
            let reason = format!(
                "state diverged from the certified root at height {}; repairing",
                d.height
            );
            self.reply(conn, &NodeFrame::Unavailable { id, reason });
            return;
        }
        let kv = self.kv.read();
        let applied_height = kv.applied_height();
        match kv.get(key) {
            Ok(value) => {
                drop(kv);
                self.reply(
                    conn,
                    &NodeFrame::StaleValue {
                        id,
                        applied_height,
                        value,
                    },
                );
            }
            Err(e) => log::error!("stale read failed: {e}"),
        }
    }

    /// A read proven against the newest certified root the store can still read (the applied
    /// height or one its undo log reaches back to). The proof is checked against that root
    /// here before it is sent; anything else is refused with the reason.
    fn verified_get(&self, conn: ClientId, id: u64, key: &[u8]) {
        let refuse = |reason: String| {
            self.counters.verified_reads_refused.bump();
            self.reply(conn, &NodeFrame::Unavailable { id, reason });
        };
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return refuse(format!(
                "a key must be 1 to {KEY_BYTES_MAX} bytes, not {}",
                key.len()
            ));
        }
        if let Some(d) = self.status.divergence() {
            return refuse(format!(
                "state diverged from the certified root at height {}; repairing",
                d.height
            ));
        }
        let kv = self.kv.read();
        let (from, applied) = (kv.readable_from(), kv.applied_height());
        let Some(certificate) = self.status.certificate_within(from, applied) else {
            drop(kv);
            let newest = self.status.newest_certified_height();
            return refuse(match newest {
                None => "no certified state root known yet".to_string(),
                Some(h) => format!(
                    "no certified root this node can prove against: newest certified height \
                     {h}, state readable at heights {from}..={applied}"
                ),
            });
        };
        match kv.verified_read_as_of(key, certificate.height, &certificate.root) {
            Ok(mut read) => {
                drop(kv);
                self.counters.verified_reads_served.bump();
                let mut certificate = Box::new((*certificate).clone());
                self.byzantine
                    .verified_read(key, &mut read, &mut certificate);
                self.reply(
                    conn,
                    &NodeFrame::VerifiedValue {
                        id,
                        read,
                        certificate,
                    },
                );
            }
            Err(e) => {
                drop(kv);
                log::warn!("verified read at height {}: {e}", certificate.height);
                refuse(e.to_string());
            }
        }
    }

    fn reply(&self, conn: ClientId, frame: &NodeFrame) {
        // A full outbound queue means the node is overloaded; a dropped answer to a read
        // is retried by the client.
        if let Some(bytes) = self.byzantine.encode_client_frame(frame) {
            let _ = self.out.try_send(Outbound::ToClient(conn, bytes));
        }
    }

    fn forward_messages(&self, messages: Vec<(NodeId, Message)>) -> bool {
        if messages.is_empty() {
            return true;
        }
        let (from, msgs): (Vec<NodeId>, Vec<Message>) = messages.into_iter().unzip();
        for (from, result) in from.into_iter().zip(self.verifier.verify_messages(msgs)) {
            match result {
                Ok(msg) => {
                    if self
                        .consensus
                        .send(ConsensusInput::Message { from, msg })
                        .is_err()
                    {
                        return false;
                    }
                }
                Err(e) => {
                    self.counters.rejected_peer_message(from, &e);
                    log::warn!("dropped a message from {from}: {e}");
                }
            }
        }
        true
    }

    fn forward_requests(&self, requests: Vec<(ClientId, ClientRequest)>) -> bool {
        if requests.is_empty() {
            return true;
        }
        let (conns, reqs): (Vec<ClientId>, Vec<ClientRequest>) = requests.into_iter().unzip();
        let ids: Vec<RequestId> = reqs.iter().map(ClientRequest::id).collect();
        let results = self.verifier.verify_requests(reqs);
        for ((conn, id), result) in conns.into_iter().zip(ids).zip(results) {
            let refusal = match result {
                Ok(req) => {
                    self.routes.add(id, conn);
                    match self.consensus.try_send(ConsensusInput::Request(req)) {
                        Ok(()) => {
                            self.counters.requests_accepted.bump();
                            continue;
                        }
                        Err(TrySendError::Full(_)) => {
                            self.routes.take(&id);
                            Refusal::Busy
                        }
                        Err(TrySendError::Disconnected(_)) => return false,
                    }
                }
                Err(VerifyError::NotAuthorised(key)) => {
                    self.log_refused_key(&key.0);
                    Refusal::NotAuthorised
                }
                Err(e) => {
                    log::debug!("refused request {} of {conn:?}: {e}", id.seq);
                    Refusal::Invalid
                }
            };
            self.counters.request_refused(refusal);
            let frame = NodeFrame::Refused {
                client: id.client.0,
                session: id.session,
                seq: id.seq,
                reason: refusal,
            };
            self.reply(conn, &frame);
        }
        true
    }
}
