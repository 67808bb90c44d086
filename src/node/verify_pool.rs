//! The verifier pool: threads that take raw frames from the transport, decode and validate
//! them, verify every signature in one batch per handful of frames, and pass what is valid
//! on. Nothing unverified reaches the consensus thread (it only accepts `Verified<T>`).
//!
//! Routing: consensus messages and client requests go to the consensus thread; a peer's
//! snapshot requests go to the serving thread; answers to our own snapshot requests go to
//! the consensus thread (which runs the state transfer); watch commands go to the watch
//! thread; stale reads and status requests are
//! answered here, from the KV store's read lock and the status board.
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
use parking_lot::RwLock;

use super::byzantine::ServingHook;
use super::consensus_loop::ConsensusInput;
use super::counters::NodeCounters;
use super::peer_limits::{Limited, PeerLimits};
use super::routes::ReplyRoutes;
use super::serving::{ServeJob, ServeQueue};
use super::solicited::Solicited;
use super::status::StatusBoard;
use super::watchers::{WatchCmd, WatchQueue};
use crate::crypto::{Verifier, VerifyError};
use crate::kv::KvStore;
use crate::net::{ClientId, Inbound, Outbound, OutboundSender, Remote};
use crate::types::{ClientRequest, Message, NodeId, RequestId};
use crate::wire::client::decode_client_frame;
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
    pub stop: Arc<AtomicBool>,
    pub batch_frames_max: usize,
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
                if ctx.stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
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

impl VerifyCtx {
    fn sort(&self, frame: Inbound, sorted: &mut Sorted) {
        match frame.from {
            Remote::Peer(from) => match decode_peer(&frame.bytes) {
                Ok(PeerFrame::Consensus(msg)) => {
                    if self.admit(from, &msg) {
                        sorted.messages.push((from, msg));
                    }
                }
                Ok(PeerFrame::State(msg)) => self.route_state(from, msg),
                Err(e) => {
                    self.counters.peer_frames_undecodable.bump();
                    log::warn!("{from} sent a frame that does not decode: {e}");
                }
            },
            Remote::Client(conn) => match decode_client_frame(&frame.bytes) {
                Ok(ClientFrame::Submit(req)) => sorted.requests.push((conn, req)),
                Ok(ClientFrame::StaleGet { id, key }) => self.stale_get(conn, id, &key),
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
                Ok(ClientFrame::Status { id }) => {
                    let status = self.status.snapshot();
                    self.reply(conn, &NodeFrame::Status { id, status });
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
                Err(VerifyError::NotAuthorised(_)) => Refusal::NotAuthorised,
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
