//! The storage thread: makes the core's state durable, applies committed blocks to the KV
//! state machine (and indexes them in the block store by height), answers clients, and
//! saves and installs snapshots. It serves nothing to peers: snapshot chunks and blocks
//! from disk go out from the serving thread (`serving`), so no peer's read ever sits
//! inside a group commit that votes wait for.
//!
//! Group commit: it takes every job queued (up to `GROUP_JOBS_MAX`) and queues all their WAL
//! writes (the consensus engine and the KV engine sync in parallel, each with its own
//! committer thread). Then it
//! - sends the replies of the blocks it applied at once, without waiting for any sync (why:
//!   [`StorageCtx::release`]);
//! - waits for the consensus engine, then publishes the highest durable persist ticket (the
//!   consensus thread then releases the votes and timeouts that waited for it: persist before
//!   speaking; they do not wait for the state's sync, which they promise nothing about);
//! - answers retries of committed requests from the exactly-once table;
//! - waits for the KV engine, so the state WAL is never more than one group behind, and the
//!   block store is pruned only below what the state holds durably.
//!
//! Fail-stop: any storage error stops the thread; the node stops acknowledging anything
//! (STYLE rule 7) and `Node::wait` reports the error.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use super::block_store::{BlockStore, COMMITTED_META_KEY, encode_header};
use super::byzantine::ServingHook;
use super::counters::NodeCounters;
use super::metrics::NodeMetrics;
use super::routes::ReplyRoutes;
use super::snapshots::{SnapshotDir, read_header};
use super::status::StatusBoard;
use crate::consensus::PersistItem;
use crate::kv::{KvReply, KvStore, encode_reply};
use crate::net::{Outbound, OutboundSender};
use crate::storage::{Lsn, StorageError};
use crate::types::{Block, BlockHeader, BlockId, ClientKey, RequestId};
use crate::wire::{NodeFrame, SnapshotOffer};

/// Jobs handled as one group commit at most.
const GROUP_JOBS_MAX: usize = 512;
/// Old blocks deleted per group at most (pruning is spread over commits).
const PRUNE_BLOCKS_PER_GROUP: usize = 256;

pub enum StorageJob {
    /// Make `items` durable, then report `ticket`.
    Persist {
        ticket: u64,
        items: Vec<PersistItem>,
    },
    /// Apply a committed block and reply to its clients.
    Commit { id: BlockId, block: Block },
    /// Consensus saw request `id` again after it committed: answer from the exactly-once
    /// table (the stored reply only if `ops_digest` matches the request that produced it).
    CachedReply { id: RequestId, ops_digest: [u8; 32] },
    /// Answer linearizable reads whose barrier is `height` (`super::read_barrier`): every
    /// commit up to it was queued before this job, so the state is at `height` or above.
    ServeReads {
        height: u64,
        reads: Vec<super::read_barrier::PendingRead>,
    },
    /// Install the downloaded snapshot at `path`, which the cluster agreed is `offer`.
    Install { path: PathBuf, offer: SnapshotOffer },
}

/// What the storage thread tells the consensus thread.
/// After an apply or install, for the replica: the height, its state root, the next key
/// expiry, and whether that height's block expired keys.
pub type AppliedReport = (u64, [u8; 32], Option<u64>, bool);

pub struct StorageToConsensus {
    /// Highest persist ticket that is durable.
    pub durable_ticket: Arc<AtomicU64>,
    /// A token whenever `durable_ticket` moved (capacity 1: a wake-up, not a queue).
    pub wake: Sender<()>,
    /// Outcome of an `Install` job: the block the state is now at.
    pub installed: Sender<Result<BlockHeader, String>>,
    /// `(height, state root)` after each applied block and each install, in height order
    /// (bounded; a report that does not fit is dropped and counted: the consensus side then
    /// only forgets older own roots).
    pub applied: Sender<AppliedReport>,
}

pub struct StorageCtx {
    pub kv: Arc<RwLock<KvStore>>,
    pub blocks: BlockStore,
    /// Shared with the serving thread, which reads offers and chunk paths under the lock.
    pub snapshots: Arc<Mutex<SnapshotDir>>,
    pub out: OutboundSender,
    pub routes: Arc<ReplyRoutes>,
    pub status: Arc<StatusBoard>,
    pub counters: Arc<NodeCounters>,
    pub metrics: Arc<NodeMetrics>,
    pub to_consensus: StorageToConsensus,
    pub snapshot_interval_blocks: u64,
    pub blocks_retained: u64,
    /// The highest height whose state is durable (the KV store's height when opened, then
    /// raised after each group's state sync). The block store is pruned below it, never below
    /// the in-memory applied height: replies leave before the state's sync, and the blocks of a
    /// state tail lost in a crash must still be in the store to be re-committed.
    pub state_durable_height: u64,
    /// Set when the thread stopped on a storage error.
    pub failure: Arc<Mutex<Option<String>>>,
    /// Test-only Byzantine answers (a no-op unless built with the `byzantine` feature).
    pub byzantine: ServingHook,
}

/// The effects of one group, each released once what it depends on is durable
/// ([`StorageCtx::release`]).
#[derive(Default)]
struct Group {
    blocks_lsn: Option<Lsn>,
    kv_lsn: Option<Lsn>,
    /// The height the state reaches once `kv_lsn` is durable.
    kv_height: u64,
    ticket: Option<u64>,
    replies: Vec<KvReply>,
    cached: Vec<(RequestId, [u8; 32])>,
}

pub fn run(mut ctx: StorageCtx, jobs: Receiver<StorageJob>) {
    ctx.refresh_gauges(true);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_JOBS_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = ctx.process(batch) {
            let why = format!("storage failed, the node stops: {e}");
            log::error!("{why}");
            *ctx.failure.lock() = Some(why);
            return;
        }
        ctx.refresh_gauges(false);
    }
    // Every sender is gone: the node is shutting down and everything queued was handled.
    log::debug!("storage thread done");
}

impl StorageCtx {
    /// Publishes disk bytes, key count and the newest snapshot for `/metrics` (see
    /// `storage_gauges`: bytes at most once a second unless `force`).
    fn refresh_gauges(&self, force: bool) {
        let kv = self.kv.read();
        let snapshots = self.snapshots.lock();
        self.metrics
            .storage
            .refresh(&kv, self.blocks.engine(), &snapshots, force);
    }

    fn process(&mut self, batch: Vec<StorageJob>) -> Result<(), StorageError> {
        let mut group = Group::default();
        for job in batch {
            match job {
                StorageJob::Persist { ticket, items } => {
                    group.blocks_lsn = Some(self.blocks.persist(&items)?);
                    group.ticket = Some(ticket);
                }
                StorageJob::Commit { id, block } => self.apply(id, &block, &mut group)?,
                StorageJob::CachedReply { id, ops_digest } => group.cached.push((id, ops_digest)),
                StorageJob::ServeReads { height, reads } => self.serve_reads(height, reads),
                StorageJob::Install { path, offer } => {
                    // Everything before the install is released first.
                    self.release(std::mem::take(&mut group))?;
                    let result = self.install(&path, &offer);
                    let _ = std::fs::remove_file(&path);
                    if let Err(e) = &result {
                        log::warn!("snapshot {} not installed: {e}", offer.height);
                    }
                    let _ = self.to_consensus.installed.send(result);
                }
            }
        }
        self.release(group)
    }

    fn apply(&mut self, id: BlockId, block: &Block, group: &mut Group) -> Result<(), StorageError> {
        let kv_lock = Arc::clone(&self.kv);
        let mut kv = kv_lock.write();
        let applied = kv.applied_height();
        if block.height <= applied {
            // A restarted core re-commits blocks the state already has.
            return Ok(());
        }
        if block.height != applied + 1 {
            return Err(StorageError::invalid(format!(
                "commit of height {} but the state is at {applied}",
                block.height
            )));
        }
        // The committed chain by height, for serving syncing peers from disk.
        group.blocks_lsn = Some(self.blocks.index_committed(block.height, &id)?);
        let requests = crate::replica::kv_requests(block);
        let header = block.header(id);
        let meta = encode_header(&header);
        let (replies, lsn) = kv.apply_nowait(
            block.height,
            block.timestamp_ms,
            &requests,
            &[(COMMITTED_META_KEY, &meta)],
        )?;
        group.kv_lsn = Some(lsn);
        group.kv_height = block.height;
        group.replies.extend(replies);
        self.counters.blocks_applied.bump();
        self.metrics.request_stages.applied(&id, Instant::now());
        let digest = kv.state_digest();
        if block.height.is_multiple_of(self.snapshot_interval_blocks) {
            self.save_snapshot(&kv, header, digest)?;
        }
        let next_expiry_ms = kv.next_expiry_ms();
        let expired = kv.expired_last_block() > 0;
        drop(kv);
        self.status.update(|s| {
            s.applied_height = block.height;
            s.applied_block_time_ms = block.timestamp_ms;
            s.state_digest = digest;
        });
        self.report_applied((block.height, digest, next_expiry_ms, expired));
        if let Some(lsn) = self.blocks.prune_below(
            self.state_durable_height
                .saturating_sub(self.blocks_retained),
            PRUNE_BLOCKS_PER_GROUP,
        )? {
            group.blocks_lsn = Some(group.blocks_lsn.map_or(lsn, |l| l.max(lsn)));
        }
        Ok(())
    }

    /// Answers barrier reads from the applied state. The blocks it holds are committed and
    /// durable in the consensus store of `2f + 1` members, so the reply need not wait for
    /// this group's KV sync (a crash replays them). A state below the barrier (it cannot
    /// happen while commits are applied in order; checked, not assumed) or a diverged one
    /// is refused, and the client falls back to an ordered get.
    fn serve_reads(&self, height: u64, reads: Vec<super::read_barrier::PendingRead>) {
        let kv = self.kv.read();
        let applied = kv.applied_height();
        let refusal = if let Some(d) = self.status.divergence() {
            Some(format!(
                "state diverged from the certified root at height {}; repairing",
                d.height
            ))
        } else if applied < height {
            Some(format!(
                "state at height {applied}, below the read barrier {height}"
            ))
        } else {
            None
        };
        for read in reads {
            let frame = match &refusal {
                Some(reason) => {
                    self.counters.barrier_reads_refused.bump();
                    NodeFrame::Unavailable {
                        id: read.id,
                        reason: reason.clone(),
                    }
                }
                None => match kv.get(&read.key) {
                    Ok(value) => {
                        self.counters.barrier_reads_served.bump();
                        NodeFrame::BarrierValue {
                            id: read.id,
                            applied_height: applied,
                            value,
                        }
                    }
                    Err(e) => {
                        log::error!("barrier read failed: {e}");
                        NodeFrame::Unavailable {
                            id: read.id,
                            reason: format!("read failed: {e}"),
                        }
                    }
                },
            };
            if let Some(bytes) = self.byzantine.encode_client_frame(&frame) {
                let _ = self.out.try_send(Outbound::ToClient(read.conn, bytes));
            }
        }
    }

    /// Saves the state right after block `header` (the caller holds the KV lock, so no later
    /// block is in it). A failure to save is logged, not fatal: snapshots serve other nodes.
    fn save_snapshot(
        &mut self,
        kv: &KvStore,
        header: BlockHeader,
        digest: [u8; 32],
    ) -> Result<(), StorageError> {
        let path = self.snapshots.lock().snap_path(header.height);
        let started = std::time::Instant::now();
        let info = match kv.save_snapshot(&path) {
            Ok(info) => info,
            Err(e) => {
                log::warn!("saving snapshot at height {}: {e}", header.height);
                return Ok(());
            }
        };
        debug_assert_eq!(info.state_digest, digest);
        let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let offer = SnapshotOffer {
            height: header.height,
            block_id: header.id,
            parent_id: header.parent,
            round: header.round,
            state_digest: info.state_digest,
            file_bytes,
        };
        if let Err(e) = self.snapshots.lock().add(offer) {
            log::warn!("recording snapshot at height {}: {e}", header.height);
            return Ok(());
        }
        self.counters.snapshots_saved.bump();
        self.metrics.storage.mark_stale();
        log::info!(
            "saved snapshot at height {} ({} entries, {file_bytes} bytes) in {} ms",
            header.height,
            info.entry_count,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    fn report_applied(&self, report: AppliedReport) {
        if self.to_consensus.applied.try_send(report).is_err() {
            self.counters.applied_reports_dropped.bump();
        }
    }

    /// Lets the group's effects out, each once what it depends on is durable: fresh replies at
    /// once, the vote ticket once the consensus store's writes are durable, then the answers to
    /// retries; last it waits for the state's writes.
    ///
    /// Why a reply needs no sync: it comes from a committed block `A`, and `A` is committed only
    /// once a QC on its child exists, so `2f + 1` members persisted `A` and its child before
    /// voting and are locked on `A`'s QC: every later certified block extends `A`, whatever
    /// crashes. A node whose crash loses the tail of its state (or the block store writes of
    /// this group) re-commits `A` from its stored chain or from its peers (a restarted core
    /// broadcasts where it is, and a newer QC commits `A` again) and replays it; applying is
    /// deterministic, so the same replies come back. The state's sync was a second fsync on
    /// every reply's path. Votes wait for the consensus store only: they promise nothing about
    /// the state.
    fn release(&mut self, group: Group) -> Result<(), StorageError> {
        for reply in group.replies {
            let id = RequestId {
                client: ClientKey(reply.client),
                session: reply.session,
                seq: reply.seq,
            };
            self.send_reply(id, reply.ops_digest, true, || encode_reply(&reply.reply));
        }
        if let Some(lsn) = group.blocks_lsn {
            let started = Instant::now();
            self.blocks.engine().wait_durable(lsn)?;
            let took = started.elapsed();
            self.metrics.wal_fsync_consensus.observe(took);
            self.metrics.slow_sync_seen("consensus", took);
        }
        if let Some(ticket) = group.ticket {
            self.to_consensus
                .durable_ticket
                .fetch_max(ticket, Ordering::SeqCst);
            let _ = self.to_consensus.wake.try_send(());
        }
        for (id, ops_digest) in group.cached {
            let cached =
                self.kv
                    .read()
                    .cached_reply(&id.client.0, id.session, id.seq, &ops_digest)?;
            // `None`: ordered but not applied here yet; the commit's own reply will answer.
            if let Some(reply) = cached {
                self.send_reply(id, ops_digest, false, || encode_reply(&reply));
            }
        }
        if let Some(lsn) = group.kv_lsn {
            let started = Instant::now();
            self.kv.read().engine().wait_durable(lsn)?;
            let took = started.elapsed();
            self.metrics.wal_fsync_state.observe(took);
            self.metrics.slow_sync_seen("state", took);
            self.state_durable_height = self.state_durable_height.max(group.kv_height);
        }
        Ok(())
    }

    /// Sends the reply to every connection waiting for it; `timed` replies (fresh commits,
    /// not answers to retries) go into the commit-latency histogram.
    fn send_reply(
        &self,
        id: RequestId,
        ops_digest: [u8; 32],
        timed: bool,
        encode: impl FnOnce() -> Vec<u8>,
    ) {
        let Some(route) = self.routes.take_route(&id) else {
            return;
        };
        if timed {
            let now = Instant::now();
            self.metrics
                .commit_latency
                .observe(now.saturating_duration_since(route.arrived));
            self.metrics.request_stages.replied(&id, route.arrived, now);
        }
        let conns = route.conns;
        let Some(frame) = self.byzantine.encode_client_frame(&NodeFrame::Reply {
            client: id.client.0,
            session: id.session,
            seq: id.seq,
            ops_digest,
            reply: encode(),
        }) else {
            return;
        };
        for conn in conns {
            self.counters.replies_sent.bump();
            if self
                .out
                .send(Outbound::ToClient(conn, frame.clone()))
                .is_err()
            {
                return; // the transport is gone: shutting down
            }
        }
    }

    fn install(
        &mut self,
        path: &std::path::Path,
        offer: &SnapshotOffer,
    ) -> Result<BlockHeader, String> {
        let (height, digest) =
            read_header(path).map_err(|e| format!("reading the download: {e}"))?;
        if height != offer.height || digest != offer.state_digest {
            self.counters.snapshots_rejected.bump();
            return Err("the downloaded file is not the snapshot the peers agreed on".into());
        }
        let header = BlockHeader {
            id: offer.block_id,
            parent: offer.parent_id,
            round: offer.round,
            height: offer.height,
        };
        let meta = encode_header(&header);
        let mut kv = self.kv.write();
        let info = kv
            .install_snapshot_with_meta(path, &[(COMMITTED_META_KEY, &meta)])
            .map_err(|e| {
                // A file whose entries do not give its header's root (a forged file) fails
                // here, before anything is replaced.
                self.counters.snapshots_rejected.bump();
                log::error!("snapshot at height {} rejected: {e}", offer.height);
                e.to_string()
            })?;
        if info.state_digest != offer.state_digest {
            // The file's own root, recomputed from its entries, is not the trusted one (the
            // certified root when the node knows it): a forged file.
            self.counters.snapshots_rejected.bump();
            log::error!(
                "snapshot at height {} rejected: its entries do not give the trusted state root",
                offer.height
            );
            return Err("the installed state digest differs from the agreed one".into());
        }
        self.counters.snapshots_installed.bump();
        self.metrics.storage.mark_stale();
        // Keep it, so this node can serve it in turn (data durable before its offer).
        if let Err(e) = self.snapshots.lock().keep(path, offer.clone()) {
            log::warn!("keeping installed snapshot {}: {e}", offer.height);
        }
        let digest = kv.state_digest();
        let next_expiry_ms = kv.next_expiry_ms();
        drop(kv);
        // `replace_all` returned with the installed state durable.
        self.state_durable_height = offer.height;
        self.status.update(|s| {
            s.applied_height = offer.height;
            s.state_digest = digest;
        });
        self.report_applied((offer.height, digest, next_expiry_ms, false));
        log::info!("installed snapshot at height {}", offer.height);
        Ok(header)
    }
}
