//! Node-level settings from a node config's `[node]` and `[faults]` tables: thread counts,
//! queue bounds, snapshots and state transfer, the optional metrics listener, and (for
//! demonstrations only) injected network faults and, for tests only, a Byzantine kind. Every
//! field is optional; unknown fields are errors.

use crate::adversary::ByzKind;

/// `[node]`: how the runtime around the core is sized.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Verifier threads; 0 means one per CPU core.
    pub verifier_threads: usize,
    /// Frames one verifier thread decodes and verifies as one signature batch.
    pub verify_batch_frames_max: usize,
    /// Verified events waiting for the consensus thread; verifiers block beyond it (peer
    /// messages) or answer `busy` (client requests).
    pub consensus_queue_max: usize,
    /// Jobs waiting for the storage thread; the consensus thread blocks beyond it.
    pub storage_queue_max: usize,
    /// Client requests whose reply route (which connection asked) is remembered.
    pub reply_routes_max: usize,
    /// Save a snapshot of the state every this many committed blocks (for peers that fell too
    /// far behind to sync block by block). Must be below `consensus.committed_blocks_retained`
    /// (the committed blocks the block store keeps on disk and serves to syncing peers), so a
    /// node that installed a snapshot can fetch the blocks after it, and a node behind by
    /// less than an interval catches up by blocks.
    pub snapshot_interval_blocks: u64,
    /// Snapshot files kept in `<data_dir>/snapshots`.
    pub snapshots_kept: usize,
    /// A node whose committed height has not moved for this long while it is fetching blocks
    /// asks its peers for a snapshot.
    pub state_transfer_after_ms: u64,
    /// Where to serve `/metrics` (Prometheus text) and `/health` over HTTP, e.g.
    /// `"127.0.0.1:9100"`; off when absent. Unauthenticated: bind it to a private address.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `/health` answers 503 when the last QC is older than this while work is pending.
    pub health_qc_age_ms_max: u64,
    /// Applied blocks whose overwritten state (entries and tree nodes) is kept in memory, so
    /// verified reads can prove keys as of the newest certified root, which lags the applied
    /// height by two or three blocks.
    pub verified_read_undo_heights: usize,
    /// Bytes that history may hold; the oldest blocks go first beyond it.
    pub verified_read_undo_bytes_max: usize,
    /// Heights of committed changes the watch log keeps for `watch --from-height`; a watch
    /// from an older height gets "compacted, resume from H".
    pub watch_log_heights: u64,
    /// Bytes of watch log records kept at most (the oldest go first; the newest height's
    /// record is always kept).
    pub watch_log_bytes_max: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            verifier_threads: 0,
            verify_batch_frames_max: 256,
            consensus_queue_max: 8192,
            storage_queue_max: 1024,
            reply_routes_max: 200_000,
            snapshot_interval_blocks: 5_000,
            snapshots_kept: 2,
            state_transfer_after_ms: 3_000,
            metrics_addr: None,
            health_qc_age_ms_max: 10_000,
            verified_read_undo_heights: crate::kv::history::UNDO_HEIGHTS_DEFAULT,
            verified_read_undo_bytes_max: crate::kv::history::UNDO_BYTES_DEFAULT,
            watch_log_heights: crate::kv::watch_log::WATCH_LOG_HEIGHTS_DEFAULT,
            watch_log_bytes_max: crate::kv::watch_log::WATCH_LOG_BYTES_DEFAULT,
        }
    }
}

impl NodeSettings {
    /// How much history the KV store's watch log keeps.
    pub fn watch_retention(&self) -> crate::kv::WatchRetention {
        crate::kv::WatchRetention {
            heights: self.watch_log_heights,
            bytes: self.watch_log_bytes_max,
        }
    }

    /// The number of verifier threads to start.
    pub fn verifier_thread_count(&self) -> usize {
        if self.verifier_threads > 0 {
            return self.verifier_threads;
        }
        std::thread::available_parallelism().map_or(2, usize::from)
    }

    /// Checks the invariants; the error names the field.
    pub fn validate(&self, committed_blocks_retained: usize) -> Result<(), (String, String)> {
        let nonzero = [
            (
                "verify_batch_frames_max",
                self.verify_batch_frames_max as u64,
            ),
            ("consensus_queue_max", self.consensus_queue_max as u64),
            ("storage_queue_max", self.storage_queue_max as u64),
            ("reply_routes_max", self.reply_routes_max as u64),
            ("snapshot_interval_blocks", self.snapshot_interval_blocks),
            ("snapshots_kept", self.snapshots_kept as u64),
            ("state_transfer_after_ms", self.state_transfer_after_ms),
            ("health_qc_age_ms_max", self.health_qc_age_ms_max),
            (
                "verified_read_undo_heights",
                self.verified_read_undo_heights as u64,
            ),
            (
                "verified_read_undo_bytes_max",
                self.verified_read_undo_bytes_max as u64,
            ),
            ("watch_log_heights", self.watch_log_heights),
            ("watch_log_bytes_max", self.watch_log_bytes_max),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err((format!("node.{name}"), "must be above zero".into()));
        }
        if self.snapshot_interval_blocks >= committed_blocks_retained as u64 {
            return Err((
                "node.snapshot_interval_blocks".into(),
                format!(
                    "is {} but must be below consensus.committed_blocks_retained ({committed_blocks_retained}, \
                     the committed blocks kept on disk to serve syncing peers), or a node that \
                     installs a snapshot could not fetch the blocks after it",
                    self.snapshot_interval_blocks
                ),
            ));
        }
        Ok(())
    }
}

/// `[faults]`: network faults the node injects into its own outgoing peer frames, to watch
/// view changes happen (`bftd dev --lossy`). All zero (off) by default; never for production.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Share of peer frames dropped, 0.0 ..= 1.0.
    pub drop_share: f64,
    /// Share of peer frames sent twice.
    pub duplicate_share: f64,
    /// Share of peer frames held back for a random delay up to `delay_ms_max`.
    pub delay_share: f64,
    pub delay_ms_max: u64,
    /// TEST ONLY: makes this node a Byzantine member of the given kind (`silent`,
    /// `equivocate`, `double-vote`, `lie-to-clients`, `forge-sync`, `forge-snapshot`, ...; see
    /// [`ByzKind::DAEMON`]). A node built without the Cargo feature `byzantine` refuses to
    /// start with it.
    pub byzantine: Option<String>,
}

impl FaultSettings {
    pub fn is_active(&self) -> bool {
        self.drop_share > 0.0 || self.duplicate_share > 0.0 || self.delay_share > 0.0
    }

    /// The Byzantine kind this node is told to play, if any; an unknown name is an error that
    /// lists the valid ones.
    pub fn byzantine_kind(&self) -> Result<Option<ByzKind>, String> {
        self.byzantine
            .as_deref()
            .map(|name| ByzKind::parse_among(name, &ByzKind::DAEMON))
            .transpose()
    }

    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, v) in [
            ("drop_share", self.drop_share),
            ("duplicate_share", self.duplicate_share),
            ("delay_share", self.delay_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((
                    format!("faults.{name}"),
                    format!("is {v}, must be in 0.0 ..= 1.0"),
                ));
            }
        }
        if let Err(e) = self.byzantine_kind() {
            return Err(("faults.byzantine".into(), e));
        }
        if self.delay_share > 0.0 && self.delay_ms_max == 0 {
            return Err((
                "faults.delay_ms_max".into(),
                "must be above zero when faults.delay_share is".into(),
            ));
        }
        Ok(())
    }
}
