//! The serving thread: answers peers' bulk requests (snapshot offers and chunks, committed
//! blocks from the block store) and clients' snapshot downloads (`bftctl snapshot save`:
//! offers and chunks only, read-only) off the consensus and storage threads.
//!
//! Why a thread of its own: a 1 MiB chunk read inside the storage thread's group commit
//! delayed every vote and timeout waiting for that fsync, and reading megabytes of blocks on
//! the consensus thread delayed every round (issue 13 item 8). Here a slow disk or a flood of
//! requests costs only this thread.
//!
//! Bounds: the queue holds at most `SERVE_QUEUE_MAX` jobs; a job that finds it full is
//! dropped and counted (`bftd_serve_jobs_dropped_total`): every request is retried by its
//! sender. Replies go through the outbound path with `try_send`, so this thread never blocks
//! on a slow peer. Requests reach this queue only after the per-peer rate limits
//! (`peer_limits`).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use super::block_store::CommittedBlocks;
use super::byzantine::ServingHook;
use super::counters::NodeCounters;
use super::snapshots::{SnapshotDir, read_chunk};
use crate::net::{ClientId, Outbound, OutboundSender};
use crate::types::{Message, NodeId, SyncResponse};
use crate::wire::peer::{encode_consensus, encode_peer};
use crate::wire::{ClientFrame, NodeFrame, PeerFrame, StateMsg};

/// Jobs waiting for the serving thread.
pub const SERVE_QUEUE_MAX: usize = 64;

pub enum ServeJob {
    /// A client's snapshot request (`ClientFrame::SnapshotOffer` or `SnapshotChunk`; any
    /// other frame is ignored): read-only, answered on the client's link.
    Client {
        conn: ClientId,
        request: ClientFrame,
    },
    /// A peer's snapshot request (offer or chunk).
    State { from: NodeId, msg: StateMsg },
    /// Committed blocks from the block store, for a peer syncing below what the core keeps in
    /// memory (`Effect::ServeCommitted`).
    Committed {
        to: NodeId,
        from_height: u64,
        to_height: u64,
        blocks_max: usize,
        bytes_max: usize,
    },
}

/// The producers' end: a bounded queue whose overflow is counted.
#[derive(Clone)]
pub struct ServeQueue {
    tx: Sender<ServeJob>,
    counters: Arc<NodeCounters>,
}

impl ServeQueue {
    pub fn new(counters: Arc<NodeCounters>) -> (Self, Receiver<ServeJob>) {
        let (tx, rx) = crossbeam_channel::bounded(SERVE_QUEUE_MAX);
        (Self { tx, counters }, rx)
    }

    /// Queues `job`, or drops and counts it when the queue is full (or the thread is gone).
    pub fn offer(&self, job: ServeJob) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.serve_jobs_dropped.bump()
            }
        }
    }
}

pub struct ServingCtx {
    pub blocks: CommittedBlocks,
    pub snapshots: Arc<Mutex<SnapshotDir>>,
    pub out: OutboundSender,
    pub counters: Arc<NodeCounters>,
    /// Test-only Byzantine answers (a no-op unless built with the `byzantine` feature).
    pub byzantine: ServingHook,
}

/// Runs until every producer is gone.
pub fn run(ctx: ServingCtx, jobs: Receiver<ServeJob>) {
    while let Ok(job) = jobs.recv() {
        match job {
            ServeJob::State { from, msg } => ctx.serve_state(from, msg),
            ServeJob::Client { conn, request } => ctx.serve_client(conn, request),
            ServeJob::Committed {
                to,
                from_height,
                to_height,
                blocks_max,
                bytes_max,
            } => ctx.serve_committed(to, from_height, to_height, blocks_max, bytes_max),
        }
    }
    log::debug!("serving thread done");
}

impl ServingCtx {
    fn serve_committed(&self, to: NodeId, from: u64, upto: u64, blocks_max: usize, bytes: usize) {
        let blocks = match self.blocks.range(from, upto, blocks_max, bytes) {
            Ok(blocks) => blocks,
            Err(e) => {
                // Serving others is best effort; the storage thread owns fail-stop.
                log::warn!("serving committed blocks {from}..={upto} to {to}: {e}");
                return;
            }
        };
        if blocks.is_empty() {
            return;
        }
        self.counters
            .sync_blocks_served_from_store
            .add(blocks.len() as u64);
        let bytes = encode_consensus(Message::SyncResponse(SyncResponse { blocks }));
        let _ = self.out.try_send(Outbound::ToPeer(to, bytes));
    }

    fn serve_client(&self, conn: ClientId, request: ClientFrame) {
        let answer = match request {
            ClientFrame::SnapshotOffer { id } => NodeFrame::SnapshotOffer {
                id,
                offer: self.snapshots.lock().newest().cloned(),
            },
            ClientFrame::SnapshotChunk {
                id,
                height,
                offset,
                len,
            } => {
                let path = self.snapshots.lock().offered_path(height);
                let bytes = path.map_or_else(Vec::new, |p| read_chunk(&p, height, offset, len));
                self.counters
                    .client_snapshot_bytes_served
                    .add(bytes.len() as u64);
                NodeFrame::SnapshotChunk {
                    id,
                    height,
                    offset,
                    bytes,
                }
            }
            ClientFrame::Submit(_)
            | ClientFrame::StaleGet { .. }
            | ClientFrame::VerifiedGet { .. }
            | ClientFrame::Watch { .. }
            | ClientFrame::Unwatch { .. }
            | ClientFrame::BarrierGet { .. }
            | ClientFrame::Status { .. } => {
                return;
            }
        };
        if let Some(bytes) = self.byzantine.encode_client_frame(&answer) {
            let _ = self.out.try_send(Outbound::ToClient(conn, bytes));
        }
    }

    fn serve_state(&self, from: NodeId, msg: StateMsg) {
        let answer = match msg {
            StateMsg::OfferRequest => StateMsg::Offer(self.snapshots.lock().newest().cloned()),
            StateMsg::ChunkRequest {
                height,
                offset,
                len,
            } => {
                // The lock only finds the file; the read happens without it, so the storage
                // thread saving a snapshot never waits for a peer's chunk.
                let path = self.snapshots.lock().offered_path(height);
                let bytes = path.map_or_else(Vec::new, |p| read_chunk(&p, height, offset, len));
                StateMsg::Chunk {
                    height,
                    offset,
                    bytes,
                }
            }
            StateMsg::Offer(_) | StateMsg::Chunk { .. } => return,
        };
        let answer = {
            let snapshots = self.snapshots.lock();
            self.byzantine.state_answer(answer, &snapshots)
        };
        let Some(answer) = answer else {
            return;
        };
        let bytes = encode_peer(&PeerFrame::State(answer));
        let _ = self.out.try_send(Outbound::ToPeer(from, bytes));
    }
}
