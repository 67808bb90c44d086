//! The node runtime: the threads of one `bftd` node around the sans-I/O core (DESIGN §3).
//!
//! ```text
//! transport (mio thread) --frames--> verifier pool (k threads) --verified--> consensus thread
//!      ^                                    | stale reads, status               | persist, commit
//!      |                                    v                                   v
//!      +---------- replies, messages ------------------------------------- storage thread
//! ```
//! - [`verify_pool`]: decode, validate and batch-verify; nothing unverified goes further;
//! - [`consensus_loop`]: the real clock and channels around the [`crate::replica::Replica`],
//!   which drives the [`crate::consensus::Core`] (timers, tickets, state-transfer decisions);
//! - [`storage_loop`]: group-commits the core's state ([`block_store`]) and the KV state
//!   machine, then releases persist reports and client replies;
//! - [`snapshots`]: the snapshot files saved, served, and downloaded when blocks are gone;
//! - [`serving`]: the thread that answers peers' bulk requests (snapshot chunks, committed
//!   blocks from the block store) off the consensus and storage threads;
//! - [`watchers`]: the thread that streams clients' watches from the KV store's watch log;
//! - [`peer_limits`], [`solicited`]: per-peer rate limits on costly requests, and the record
//!   of sync requests that lets the verifiers drop unsolicited responses unverified;
//! - [`data_dir`]: the layout of the data dir and the engines' options, spelled once;
//! - [`routes`], [`status`], [`counters`], [`lossy`], [`settings`]: the small shared parts;
//! - [`byzantine`]: the hooks that make a node a Byzantine member, for tests only (feature
//!   `byzantine`; without it they are no-ops and such a config is refused);
//! - [`metrics`], [`histogram`], [`metrics_http`], [`process_metrics`]: the optional
//!   `/metrics` and `/health` listener (`[node] metrics_addr`), the timings it reports, and
//!   the `process_*` figures read from `/proc/self`;
//! - [`logging`]: the log line format (timestamps; JSON with `BFTD_LOG_FORMAT=json`) and
//!   rate-limited log lines.
//!
//! Every channel is bounded (sizes in [`settings::NodeSettings`]). Shutdown: the consensus
//! thread and verifiers stop on a flag; the storage thread then drains its queue, waits for
//! the last sync and exits; the transport closes last. No safety state is lost: the core
//! never lets a vote out before its persist is durable, and the storage thread finishes
//! every persist it was given.

pub mod backup;
pub mod block_store;
pub mod byzantine;
pub mod consensus_loop;
pub mod counters;
pub mod data_dir;
pub mod histogram;
pub mod logging;
pub mod lossy;
pub mod metrics;
pub mod metrics_http;
pub mod peer_limits;
pub mod process_metrics;
pub mod quorum_watch;
pub mod read_barrier;
pub mod request_stages;
pub mod routes;
pub mod serving;
pub mod settings;
pub mod snapshots;
pub mod solicited;
pub mod status;
pub mod storage_gauges;
pub mod storage_loop;
pub mod verify_pool;
pub mod watchers;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::bounded;
use parking_lot::{Mutex, RwLock};

use crate::config::LoadedConfig;
use crate::crypto::{Verifier, VerifierLimits};
use crate::kv::KvStore;
use crate::net::{NetStats, Transport};
use crate::replica::{Replica, ReplicaConfig};
use crate::storage::StorageError;
use crate::types::Block;
use crate::wire::NodeStatus;
use block_store::{BlockStore, COMMITTED_META_KEY, decode_header};
use consensus_loop::ConsensusCtx;
use counters::NodeCounters;
use data_dir::{DataDir, engine_options};
use metrics::{MetricsSources, NodeMetrics};
use metrics_http::MetricsServer;
use peer_limits::PeerLimits;
use routes::ReplyRoutes;
use serving::{ServeQueue, ServingCtx};
use snapshots::SnapshotDir;
use solicited::Solicited;
use status::StatusBoard;
use storage_loop::{StorageCtx, StorageToConsensus};
use verify_pool::VerifyCtx;
use watchers::{WatchCtx, WatchQueue};

/// State-root reports queued from the storage thread to the consensus thread at most (one per
/// applied block; the consensus thread drains them every turn).
const APPLIED_REPORTS_MAX: usize = 4096;
const _: () = assert!(crate::kv::root_memory::ROOT_MEMORY_HEIGHTS < APPLIED_REPORTS_MAX as u64);

/// Why a node could not start. The message names what failed and where.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A running node. Drop or [`Node::shutdown`] stops it cleanly.
pub struct Node {
    transport: Option<Transport>,
    stop: Arc<AtomicBool>,
    consensus: Option<JoinHandle<()>>,
    storage: Option<JoinHandle<()>>,
    serving: Option<JoinHandle<()>>,
    watch: Option<JoinHandle<()>>,
    verifiers: Vec<JoinHandle<()>>,
    status: Arc<StatusBoard>,
    counters: Arc<NodeCounters>,
    failure: Arc<Mutex<Option<String>>>,
    local_addr: SocketAddr,
    metrics: Arc<NodeMetrics>,
    metrics_server: Option<MetricsServer>,
}

fn storage_error(what: &str, dir: &Path, e: StorageError) -> StartError {
    StartError(format!("{what} in {}: {e}", dir.display()))
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StartError(format!("cannot start thread {name}: {e}")))
}

impl Node {
    /// Opens the data dir (replaying both WALs), binds the listener and starts every thread.
    pub fn start(cfg: &LoadedConfig) -> Result<Node, StartError> {
        let settings = cfg.raw.node.clone();
        // First: a config asking for a Byzantine kind is refused before anything is opened.
        let (byzantine, serving_hook) = byzantine::hooks(cfg)?;
        let data_dir = &cfg.data_dir;
        // Through `Fs`: a new directory's entry is fsynced, so a power cut cannot unlink it.
        crate::storage::Fs::default()
            .create_dir_all(data_dir)
            .map_err(|e| {
                StartError(format!(
                    "cannot create data dir {}: {e}",
                    data_dir.display()
                ))
            })?;
        let layout = DataDir::new(data_dir);
        let state_dir = layout.state();
        let consensus_dir = layout.consensus();
        // The consensus store first: it refuses a block format this build does not read, and
        // must do so before `KvStore::open` converts an old state layout for good (the bftd
        // that wrote an old data dir could then no longer open its state).
        let mut blocks = BlockStore::open(&consensus_dir, engine_options())
            .map_err(|e| storage_error("cannot open the consensus store", &consensus_dir, e))?;
        let mut kv = KvStore::open(&state_dir, engine_options())
            .map_err(|e| storage_error("cannot open the KV state", &state_dir, e))?;
        kv.set_undo_bounds(
            settings.verified_read_undo_heights,
            settings.verified_read_undo_bytes_max,
        );
        kv.set_watch_retention(settings.watch_retention());
        // The state tree is kept incrementally; entries changed behind the state machine's back
        // would leave it describing the old ones. Rebuilt from the entries, the node's roots
        // say what it holds, so the first certified root it compares with finds it diverged.
        match kv
            .realign_tree()
            .map_err(|e| storage_error("cannot check the state tree", &state_dir, e))?
        {
            None => {}
            Some(audit) => log::error!(
                "the state in {} does not match its state tree at height {}: the entries give \
                 root {}, the tree held {}; the tree is rebuilt from the entries, and the node \
                 will find itself diverged at its next certified root and repair from its peers",
                state_dir.display(),
                audit.applied_height,
                crate::keys_file::to_hex(&audit.recomputed_root),
                crate::keys_file::to_hex(&audit.published_root),
            ),
        }
        let committed = match kv.meta(COMMITTED_META_KEY) {
            None if kv.applied_height() == 0 => Block::genesis_header(&cfg.cluster),
            None => {
                return Err(StartError(format!(
                    "{}: the state is at height {} but does not say which block; the data dir is damaged",
                    state_dir.display(),
                    kv.applied_height()
                )));
            }
            Some(bytes) => decode_header(&bytes)
                .filter(|h| h.height == kv.applied_height())
                .ok_or_else(|| {
                    StartError(format!(
                        "{}: the committed-block record is corrupt",
                        state_dir.display()
                    ))
                })?,
        };
        let core_cfg = cfg.core_config();
        let durable = blocks
            .load(
                &cfg.cluster,
                committed,
                core_cfg.committed_blocks_retained as u64,
            )
            .map_err(|e| storage_error("cannot load the consensus state", &consensus_dir, e))?;
        log::info!(
            "node {}: state at height {}, {} stored blocks, resuming at round {}",
            cfg.node_id,
            committed.height,
            durable.blocks.len(),
            durable.safety.resume_round()
        );
        let snapshots =
            SnapshotDir::open(&layout.snapshots(), settings.snapshots_kept).map_err(|e| {
                StartError(format!("cannot open {}/snapshots: {e}", data_dir.display()))
            })?;

        let committee = Arc::new(cfg.committee().clone());
        let replica_cfg = ReplicaConfig {
            core: core_cfg.clone(),
            committee: committee.clone(),
            signer: cfg.signer(),
            me: cfg.node_id,
            state_transfer_after_ms: settings.state_transfer_after_ms,
        };
        // The consensus thread's clock starts at 0 when it starts.
        let replica = Replica::new(replica_cfg, Some(durable), 0);

        let transport = Transport::start(cfg.transport_config())
            .map_err(|e| StartError(format!("cannot listen on {}: {e}", cfg.listen_addr)))?;
        let local_addr = transport.local_addr();
        let out = transport.sender();

        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(StatusBoard::new(cfg.node_id.0));
        let digest = kv.state_digest();
        let recent_roots = kv
            .recent_roots()
            .map_err(|e| storage_error("cannot read the remembered state roots", &state_dir, e))?;
        status.update(|s| {
            s.applied_height = committed.height;
            s.committed_height = committed.height;
            s.state_digest = digest;
        });
        let counters = Arc::new(NodeCounters::new(committee.n()));
        let metrics = Arc::new(NodeMetrics::default());
        let routes = Arc::new(ReplyRoutes::new(settings.reply_routes_max));
        let kv = Arc::new(RwLock::new(kv));
        let failure = Arc::new(Mutex::new(None));

        let (consensus_tx, consensus_rx) = bounded(settings.consensus_queue_max);
        let (storage_tx, storage_rx) = bounded(settings.storage_queue_max);
        let (wake_tx, wake_rx) = bounded(1);
        let (installed_tx, installed_rx) = bounded(4);
        let (applied_tx, applied_rx) = bounded(APPLIED_REPORTS_MAX);
        // The first reports: the roots the state remembers of the heights it applied, ending
        // with the state the node resumes from, so the core can check roots that blocks carry
        // for heights applied before this start (`kv::root_memory`; they fit the queue). Each
        // carries the state's next expiry; only the last one's matters.
        let next_expiry_ms = kv.read().next_expiry_ms();
        for (height, root) in recent_roots {
            let _ = applied_tx.try_send((height, root, next_expiry_ms, false));
        }
        let durable_ticket = Arc::new(AtomicU64::new(0));

        let incoming_snapshot = snapshots.incoming_path();
        let snapshots = Arc::new(Mutex::new(snapshots));
        let (serve_queue, serve_rx) = ServeQueue::new(counters.clone());
        let serving_ctx = ServingCtx {
            blocks: blocks.committed_reader(),
            snapshots: snapshots.clone(),
            out: out.clone(),
            counters: counters.clone(),
            byzantine: serving_hook.clone(),
        };
        let serving_thread = spawn("bftd-serving", move || serving::run(serving_ctx, serve_rx))?;
        let peer_limits = Arc::new(PeerLimits::new(committee.n()));
        let solicited = Arc::new(Solicited::new(committee.n()));
        let storage_ctx = StorageCtx {
            kv: kv.clone(),
            blocks,
            snapshots,
            out: out.clone(),
            routes: routes.clone(),
            status: status.clone(),
            counters: counters.clone(),
            metrics: metrics.clone(),
            to_consensus: StorageToConsensus {
                durable_ticket: durable_ticket.clone(),
                wake: wake_tx,
                installed: installed_tx,
                applied: applied_tx,
            },
            snapshot_interval_blocks: settings.snapshot_interval_blocks,
            blocks_retained: core_cfg.committed_blocks_retained as u64,
            // Opened from disk: durable.
            state_durable_height: kv.read().applied_height(),
            failure: failure.clone(),
            byzantine: serving_hook.clone(),
        };
        let storage = spawn("bftd-storage", move || {
            storage_loop::run(storage_ctx, storage_rx)
        })?;

        let (watch_queue, watch_rx) = WatchQueue::new(counters.clone());
        let watch_ctx = WatchCtx {
            kv: kv.clone(),
            status: status.clone(),
            out: out.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            frame_bytes_max: watchers::WATCH_FRAME_BYTES_MAX.min(cfg.raw.limits.max_frame_bytes),
            byzantine: serving_hook.clone(),
        };
        let watch_thread = spawn("bftd-watch", move || watchers::run(watch_ctx, watch_rx))?;

        let verifier = Arc::new(Verifier::new(
            committee.clone(),
            VerifierLimits {
                block_requests_max: core_cfg.block_requests_max,
                block_bytes_max: core_cfg.block_bytes_max,
                sync_blocks_max: core_cfg.sync_blocks_max as usize,
                ..VerifierLimits::default()
            },
            cfg.client_policy().clone(),
        ));
        let verify_ctx = VerifyCtx {
            verifier,
            inbound: transport.inbound().clone(),
            consensus: consensus_tx,
            serving: serve_queue.clone(),
            watches: watch_queue,
            limits: peer_limits.clone(),
            solicited: solicited.clone(),
            out: out.clone(),
            routes: routes.clone(),
            kv: kv.clone(),
            status: status.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
            batch_frames_max: settings.verify_batch_frames_max,
            refused_keys_log: Arc::new(Mutex::new(crate::util::KeyedRateLimit::new(
                verify_pool::REFUSED_KEY_LOG_INTERVAL,
                verify_pool::REFUSED_KEYS_LOGGED_MAX,
            ))),
            byzantine: serving_hook.clone(),
        };
        let mut verifiers = Vec::new();
        for i in 0..settings.verifier_thread_count() {
            let ctx = verify_ctx.clone();
            verifiers.push(spawn(&format!("bftd-verify-{i}"), move || {
                verify_pool::run(ctx)
            })?);
        }
        drop(verify_ctx);

        let faults = if cfg.raw.faults.is_active() {
            let f = &cfg.raw.faults;
            log::warn!(
                "injecting network faults on peer frames: drop {:.0}%, duplicate {:.0}%, \
                 delay {:.0}% by up to {} ms",
                f.drop_share * 100.0,
                f.duplicate_share * 100.0,
                f.delay_share * 100.0,
                f.delay_ms_max
            );
            Some(
                lossy::FaultyLink::start(cfg.raw.faults.clone(), out.clone())
                    .map_err(|e| StartError(format!("cannot start the fault injector: {e}")))?,
            )
        } else {
            None
        };
        let consensus_ctx = ConsensusCtx {
            replica,
            inputs: consensus_rx,
            storage: storage_tx,
            serving: serve_queue,
            limits: peer_limits.clone(),
            solicited,
            durable_ticket,
            durable_wake: wake_rx,
            installed: installed_rx,
            applied: applied_rx,
            out,
            faults,
            byzantine,
            routes: routes.clone(),
            status: status.clone(),
            counters: counters.clone(),
            metrics: metrics.clone(),
            net: transport.counters(),
            incoming_snapshot,
            reads: read_barrier::ReadBarrier::new(
                cfg.node_id,
                committee.n(),
                committee.quorum(),
                read_barrier::BarrierLimits::default(),
                read_barrier::nonce_seed()
                    .map_err(|e| StartError(format!("no OS randomness for read probes: {e}")))?,
            ),
            read_round_told: 0,
            stop: stop.clone(),
        };
        let metrics_server = match settings.metrics_addr {
            None => None,
            Some(addr) => {
                let sources = MetricsSources {
                    metrics: metrics.clone(),
                    status: status.clone(),
                    counters: counters.clone(),
                    net: transport.counters(),
                    routes: routes.clone(),
                    peer_limits,
                    f: committee.f(),
                    health_qc_age_ms_max: settings.health_qc_age_ms_max,
                };
                let server = MetricsServer::start(addr, sources)
                    .map_err(|e| StartError(format!("cannot serve metrics on {addr}: {e}")))?;
                log::info!("metrics and health on http://{}", server.local_addr());
                Some(server)
            }
        };
        let consensus = spawn("bftd-consensus", move || consensus_loop::run(consensus_ctx))?;
        log::info!("node {} listening on {local_addr}", cfg.node_id);
        Ok(Node {
            transport: Some(transport),
            stop,
            consensus: Some(consensus),
            storage: Some(storage),
            serving: Some(serving_thread),
            watch: Some(watch_thread),
            verifiers,
            status,
            counters,
            failure,
            local_addr,
            metrics,
            metrics_server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn status(&self) -> NodeStatus {
        self.status.snapshot()
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// The runtime's latency histograms and the core's published counters.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Where `/metrics` and `/health` are served (`[node] metrics_addr`), if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    pub fn net_stats(&self) -> NetStats {
        self.transport
            .as_ref()
            .map(Transport::stats)
            .unwrap_or_default()
    }

    /// The storage error that stopped the node, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// True once a thread stopped on its own (a storage failure).
    pub fn has_failed(&self) -> bool {
        self.failure.lock().is_some() || self.storage.as_ref().is_some_and(|t| t.is_finished())
    }

    /// Stops the node: no new input, every queued persist and commit finished and synced,
    /// then the sockets closed. Returns the storage failure, if there was one.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.stop_threads();
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.metrics_server.take());
        for t in self.verifiers.drain(..) {
            let _ = t.join();
        }
        // The verifiers held its queue: it sees the queue disconnect (or the flag) and exits.
        if let Some(t) = self.watch.take() {
            let _ = t.join();
        }
        if let Some(t) = self.consensus.take() {
            let _ = t.join();
        }
        // Both senders of the storage queue are gone now: it drains, syncs and exits.
        if let Some(t) = self.storage.take() {
            let _ = t.join();
        }
        // Its queue's senders (verifiers, consensus) are gone: it finishes and exits.
        if let Some(t) = self.serving.take() {
            let _ = t.join();
        }
        if let Some(t) = self.transport.take() {
            t.shutdown();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
