//! What the metrics endpoint reports: the latency histograms the runtime times, a copy of the
//! core's [`CoreStats`] that the consensus thread publishes, and the Prometheus text and
//! health verdict built from them plus the [`StatusBoard`], [`NodeCounters`] and
//! [`NetCounters`].
//!
//! Timing happens here in the runtime, never in the sans-I/O core (STYLE rule 1):
//! - QC formation: the time between two high-QC advances of consecutive rounds, seen by the
//!   consensus thread after each step of the core (so one steady-state round's length);
//! - commit latency: from a request's first arrival (when its reply route was registered, see
//!   [`super::routes`]) to its reply being released by the storage thread (once applied);
//! - WAL fsync: each `wait_durable` of the storage thread, per engine;
//! - request stages: the leader's latency budget per request, see [`super::request_stages`].
//!
//! Invariants: rendering takes copies and holds no lock while formatting.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::counters::NodeCounters;
use super::histogram::Histogram;
use super::routes::ReplyRoutes;
use super::status::StatusBoard;
use crate::consensus::{Core, CoreStats};
use crate::net::{NetCounters, NetStats};
use crate::wire::NodeStatus;

/// A WAL sync that takes longer than this gets a log line (rate-limited: see
/// [`NodeMetrics::slow_sync_seen`]); the histogram has every sync.
pub const SLOW_SYNC_MS_MIN: u64 = 500;

/// At most one slow-sync line per this interval, the next one counting those left out.
const SLOW_SYNC_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Blocks the storage thread may lag behind the committed height and still be healthy.
pub const HEALTH_APPLY_LAG_BLOCKS_MAX: u64 = 64;

/// What the consensus thread last published about the core.
#[derive(Clone, Debug, Default)]
pub struct ConsensusSnapshot {
    pub stats: CoreStats,
    pub syncing: bool,
    pub installing: bool,
    pub high_qc_round: u64,
    /// When the high QC last advanced (None: not since the node started).
    pub last_qc_at: Option<Instant>,
    /// `stats.view_changes` at that moment.
    pub view_changes_at_last_qc: u64,
}

/// Shared between the consensus thread, the storage thread and the metrics thread.
#[derive(Default)]
pub struct NodeMetrics {
    pub qc_formation: Histogram,
    pub commit_latency: Histogram,
    /// A read barrier from its probe's start until its reads were handed to storage.
    pub read_barrier: Histogram,
    pub wal_fsync_consensus: Histogram,
    pub wal_fsync_state: Histogram,
    pub request_stages: super::request_stages::RequestStages,
    /// Disk bytes, key count and newest snapshot, as the storage thread last published them.
    pub storage: super::storage_gauges::StorageGauges,
    /// Frames waiting for the verifier threads, sampled by them as they take a batch.
    pub queue_verify_depth: AtomicU64,
    /// Inputs waiting for the consensus thread, and jobs for the storage thread, sampled by
    /// the consensus thread each time it publishes (every 50 ms).
    pub queue_consensus_depth: AtomicU64,
    pub queue_storage_depth: AtomicU64,
    consensus: Mutex<ConsensusSnapshot>,
    /// One log line per view change, at most one a second (see `publish_core`).
    view_change_log: Mutex<Option<crate::util::RateLimit>>,
    /// One log line per slow WAL sync, at most one per `SLOW_SYNC_LOG_INTERVAL`.
    slow_sync_log: Mutex<Option<crate::util::RateLimit>>,
}

impl NodeMetrics {
    /// Consensus thread, after each step of the core: notices high-QC advances.
    pub fn core_stepped(&self, core: &Core) {
        let round = core.safety().high_qc.round;
        let mut c = self.consensus.lock();
        if round <= c.high_qc_round {
            return;
        }
        let now = Instant::now();
        self.request_stages
            .certified(&core.safety().high_qc.block_id, now);
        if let Some(last) = c.last_qc_at
            && round == c.high_qc_round + 1
        {
            self.qc_formation.observe(now.duration_since(last));
        }
        c.high_qc_round = round;
        c.last_qc_at = Some(now);
        c.view_changes_at_last_qc = core.stats().view_changes;
    }

    /// Consensus thread, once per turn: a copy of the counters (`stats`: summed over every
    /// core the replica ran, so they survive a rebuild after a snapshot install).
    pub fn publish_core(&self, core: &Core, stats: CoreStats, installing: bool) {
        let mut c = self.consensus.lock();
        let new_view_changes = stats.view_changes.saturating_sub(c.stats.view_changes);
        if new_view_changes > 0 {
            self.log_view_change(core, new_view_changes);
        }
        c.stats = stats;
        c.syncing = core.is_syncing();
        c.installing = installing;
    }

    /// "view change: round R entered through a timeout certificate (leader nodeX)", at most
    /// once a second, the next line counting the ones left out.
    fn log_view_change(&self, core: &Core, new: u64) {
        let mut limit = self.view_change_log.lock();
        let limit = limit
            .get_or_insert_with(|| crate::util::RateLimit::new(std::time::Duration::from_secs(1)));
        let Some(left_out) = limit.allow(Instant::now()) else {
            return;
        };
        let also = match left_out + new - 1 {
            0 => String::new(),
            n => format!("; {n} more view changes since the last such line"),
        };
        log::warn!(
            "view change: round {} entered through a timeout certificate (its leader is {}); \
             {} view changes since start{also}",
            core.round(),
            core.leader(),
            core.stats().view_changes
        );
    }

    /// Storage thread, after each WAL sync of `engine` it waited for: a warning when it took
    /// at least [`SLOW_SYNC_MS_MIN`] (a disk that stalls delays every vote and reply).
    pub fn slow_sync_seen(&self, engine: &str, took: std::time::Duration) {
        if !is_slow_sync(took) {
            return;
        }
        let mut limit = self.slow_sync_log.lock();
        let limit =
            limit.get_or_insert_with(|| crate::util::RateLimit::new(SLOW_SYNC_LOG_INTERVAL));
        if let Some(left_out) = limit.allow(Instant::now()) {
            log::warn!("{}", slow_sync_line(engine, took, left_out));
        }
    }

    pub fn consensus(&self) -> ConsensusSnapshot {
        self.consensus.lock().clone()
    }
}

/// Everything the metrics thread reads.
#[derive(Clone)]
pub struct MetricsSources {
    pub metrics: Arc<NodeMetrics>,
    pub status: Arc<StatusBoard>,
    pub counters: Arc<NodeCounters>,
    pub net: Arc<NetCounters>,
    pub routes: Arc<ReplyRoutes>,
    pub peer_limits: Arc<super::peer_limits::PeerLimits>,
    /// Byzantine members tolerated: health wants `2f` peers heard from.
    pub f: usize,
    pub health_qc_age_ms_max: u64,
}

/// The `/health` verdict.
#[derive(Debug)]
pub struct Health {
    pub healthy: bool,
    /// Why not, one phrase each (empty when healthy).
    pub reasons: Vec<String>,
    pub json: String,
}

impl MetricsSources {
    /// Healthy: a quorum of peers heard from, not fetching blocks or a snapshot, the state
    /// applied close to the committed height, and a QC within `health_qc_age_ms_max` — or,
    /// when no QC is due, an idle cluster (empty mempool, no view change since the last QC).
    pub fn health(&self) -> Health {
        let s = self.status.snapshot();
        let c = self.metrics.consensus();
        let qc_age_ms = c.last_qc_at.map(|t| t.elapsed().as_millis() as u64);
        let mut reasons = Vec::new();
        if usize::from(s.peers_connected) < 2 * self.f {
            reasons.push(format!(
                "heard from {} peers in the last 5 s, a quorum needs {}",
                s.peers_connected,
                2 * self.f
            ));
        }
        if let Some(d) = self.status.divergence() {
            reasons.push(format!(
                "state diverged at height {}: own root {} but the chain certified {}; not voting \
                 or serving reads, repairing from a peer snapshot",
                d.height,
                hex(&d.own),
                hex(&d.certified)
            ));
        }
        if c.syncing {
            reasons.push("fetching missing blocks from peers".into());
        }
        if c.installing {
            reasons.push("installing a snapshot".into());
        }
        if s.applied_height + HEALTH_APPLY_LAG_BLOCKS_MAX < s.committed_height {
            reasons.push(format!(
                "state applied to height {}, {} blocks behind the committed height",
                s.applied_height,
                s.committed_height - s.applied_height
            ));
        }
        let qc_recent = qc_age_ms.is_some_and(|a| a <= self.health_qc_age_ms_max);
        let idle = s.mempool_requests == 0 && c.stats.view_changes == c.view_changes_at_last_qc;
        if !qc_recent && !idle {
            reasons.push(match qc_age_ms {
                Some(a) => format!(
                    "last QC {a} ms ago (limit {} ms) with work pending",
                    self.health_qc_age_ms_max
                ),
                None => "no QC seen since start, with work pending".into(),
            });
        }
        let json = health_json(&s, &c, qc_age_ms, &reasons);
        Health {
            healthy: reasons.is_empty(),
            reasons,
            json,
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let s = self.status.snapshot();
        let c = self.metrics.consensus();
        let net = self.net.snapshot();
        let mut out = String::with_capacity(16 * 1024);
        write_gauges(&mut out, &s);
        single(
            &mut out,
            "bftd_state_diverged",
            "gauge",
            "1 while this node's state root differs from one the chain certified (it then neither votes nor serves reads, and repairs itself).",
            u8::from(self.status.divergence().is_some()),
        );
        write_storage(&mut out, &self.metrics.storage, s.certified_height);
        write_queues(&mut out, &self.metrics);
        write_core(&mut out, &c.stats);
        write_peers(&mut out, &net, s.node_id);
        write_rejections(&mut out, &net, &self.counters);
        write_limits(&mut out, &self.counters, &self.peer_limits);
        write_requests(&mut out, &self.counters, &self.routes);
        write_histograms(&mut out, &self.metrics);
        super::process_metrics::write_process(
            &mut out,
            &super::process_metrics::ProcessStats::read(),
        );
        out
    }
}

fn is_slow_sync(took: std::time::Duration) -> bool {
    took.as_millis() >= u128::from(SLOW_SYNC_MS_MIN)
}

fn slow_sync_line(engine: &str, took: std::time::Duration, left_out: u64) -> String {
    let also = match left_out {
        0 => String::new(),
        n => format!("; {n} more slow syncs since the last such line"),
    };
    format!(
        "slow disk: a {engine} WAL sync took {} ms (warning at {SLOW_SYNC_MS_MIN} ms); votes and \
         replies wait for it{also}",
        took.as_millis()
    )
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|ch| match ch {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}

fn health_json(
    s: &NodeStatus,
    c: &ConsensusSnapshot,
    qc_age_ms: Option<u64>,
    reasons: &[String],
) -> String {
    let reasons: Vec<String> = reasons
        .iter()
        .map(|r| format!("\"{}\"", json_escape(r)))
        .collect();
    format!(
        "{{\"status\":\"{}\",\"reasons\":[{}],\"node_id\":{},\"round\":{},\"committed_height\":{},\
         \"applied_height\":{},\"peers_connected\":{},\"mempool_requests\":{},\"syncing\":{},\
         \"last_qc_age_ms\":{}}}\n",
        if reasons.is_empty() {
            "ok"
        } else {
            "unhealthy"
        },
        reasons.join(","),
        s.node_id,
        s.round,
        s.committed_height,
        s.applied_height,
        s.peers_connected,
        s.mempool_requests,
        c.syncing,
        qc_age_ms.map_or("null".to_string(), |a| a.to_string()),
    )
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn write_gauges(out: &mut String, s: &NodeStatus) {
    let gauges: [(&str, &str, u64); 7] = [
        (
            "bftd_round",
            "The consensus round this node is in.",
            s.round,
        ),
        (
            "bftd_committed_height",
            "Height of the highest block this node knows committed.",
            s.committed_height,
        ),
        (
            "bftd_applied_height",
            "Height the KV state machine has applied.",
            s.applied_height,
        ),
        (
            "bftd_applied_block_time_ms",
            "Consensus timestamp (ms since the Unix epoch) of the last applied block.",
            s.applied_block_time_ms,
        ),
        (
            "bftd_mempool_requests",
            "Client requests waiting to be ordered.",
            s.mempool_requests,
        ),
        (
            "bftd_peers_connected",
            "Peers heard from in the last 5 seconds.",
            u64::from(s.peers_connected),
        ),
        (
            "bftd_leader",
            "Node id of the current round's leader.",
            u64::from(s.leader),
        ),
    ];
    for (name, help, v) in gauges {
        single(out, name, "gauge", help, v);
    }
    single(
        out,
        "bftd_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        s.uptime_ms as f64 / 1000.0,
    );
}

fn write_storage(out: &mut String, g: &super::storage_gauges::StorageGauges, certified: u64) {
    header(
        out,
        "bftd_storage_bytes",
        "gauge",
        "Bytes on disk by engine: state and consensus (WAL segments and SSTables), snapshots (the files kept); refreshed at most once a second.",
    );
    for (engine, v) in [
        ("state", &g.state_bytes),
        ("consensus", &g.consensus_bytes),
        ("snapshots", &g.snapshots_bytes),
    ] {
        let _ = writeln!(
            out,
            "bftd_storage_bytes{{engine=\"{engine}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    single(
        out,
        "bftd_state_keys",
        "gauge",
        "User keys in the applied state.",
        g.state_keys.load(Ordering::Relaxed),
    );
    single(
        out,
        "bftd_snapshot_height",
        "gauge",
        "Height of the newest snapshot this node keeps (0: none).",
        g.snapshot_height.load(Ordering::Relaxed),
    );
    single(
        out,
        "bftd_snapshot_age_seconds",
        "gauge",
        "Seconds since the newest snapshot's file was written (NaN: no snapshot).",
        g.snapshot_age_seconds(std::time::SystemTime::now())
            .unwrap_or(f64::NAN),
    );
    single(
        out,
        "bftd_certified_height",
        "gauge",
        "Highest height whose state root this node saw certified by the chain (0: none yet).",
        certified,
    );
}

fn write_queues(out: &mut String, m: &NodeMetrics) {
    header(
        out,
        "bftd_queue_depth",
        "gauge",
        "Items waiting in each bounded queue between the node's threads (a full one pushes back).",
    );
    for (queue, v) in [
        ("verify", &m.queue_verify_depth),
        ("consensus", &m.queue_consensus_depth),
        ("storage", &m.queue_storage_depth),
    ] {
        let _ = writeln!(
            out,
            "bftd_queue_depth{{queue=\"{queue}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

fn write_core(out: &mut String, st: &CoreStats) {
    let counters: [(&str, &str, u64); 12] = [
        (
            "bftd_view_changes_total",
            "Rounds entered through a timeout certificate.",
            st.view_changes,
        ),
        (
            "bftd_timeouts_total",
            "Timeout messages this node sent (its round timer fired).",
            st.timeouts_sent,
        ),
        (
            "bftd_proposals_total",
            "Blocks this node proposed.",
            st.proposals_made,
        ),
        ("bftd_votes_total", "Votes this node sent.", st.votes_sent),
        (
            "bftd_qcs_formed_total",
            "Quorum certificates this node aggregated.",
            st.qcs_formed,
        ),
        (
            "bftd_tcs_formed_total",
            "Timeout certificates this node aggregated.",
            st.tcs_formed,
        ),
        (
            "bftd_blocks_committed_total",
            "Blocks committed since the node started.",
            st.blocks_committed,
        ),
        (
            "bftd_requests_committed_total",
            "Client requests committed since the node started.",
            st.requests_committed,
        ),
        (
            "bftd_sync_requests_total",
            "Block fetch requests sent to peers.",
            st.sync_requests_sent,
        ),
        (
            "bftd_equivocations_seen_total",
            "Conflicting messages from one signer in one round.",
            st.equivocations_seen,
        ),
        (
            "bftd_state_divergences_total",
            "Times this node found its state root differs from a certified one.",
            st.divergences_detected,
        ),
        (
            "bftd_votes_deferred_root_total",
            "Votes that waited until this node applied a height whose root the block carries.",
            st.votes_deferred_root,
        ),
    ];
    for (name, help, v) in counters {
        single(out, name, "counter", help, v);
    }
    header(
        out,
        "bftd_consensus_dropped_total",
        "counter",
        "Verified inputs the consensus core dropped, by reason.",
    );
    for (reason, v) in [
        ("far_future", st.dropped_far_future),
        ("stale", st.dropped_stale),
        ("duplicate_vote", st.duplicate_votes),
        ("block_rejected", st.blocks_rejected),
        ("wrong_leader", st.proposals_wrong_leader),
        ("leader_unknown", st.proposals_leader_unknown),
        ("orphan", st.orphans_dropped),
        ("unsolicited_sync", st.unsolicited_sync),
        ("sync_served_from_store", st.sync_served_from_store),
        ("request_busy", st.requests_rejected_busy),
        ("request_duplicate", st.requests_duplicate),
        ("root_mismatch", st.votes_refused_root_mismatch),
        ("root_unchecked", st.votes_refused_root_unchecked),
        ("diverged", st.withheld_diverged),
        ("time_not_increasing", st.votes_refused_time_not_increasing),
        ("time_ahead", st.votes_refused_time_ahead),
    ] {
        let _ = writeln!(
            out,
            "bftd_consensus_dropped_total{{reason=\"{reason}\"}} {v}"
        );
    }
}

fn write_peers(out: &mut String, net: &NetStats, me: u16) {
    type Field = fn(&crate::net::PeerStats) -> u64;
    let series: [(&str, &str, Field); 5] = [
        (
            "bftd_peer_received_bytes_total",
            "Application bytes received from each peer.",
            |p| p.bytes_in,
        ),
        (
            "bftd_peer_sent_bytes_total",
            "Application bytes sent to each peer.",
            |p| p.bytes_out,
        ),
        (
            "bftd_peer_received_frames_total",
            "Frames received from each peer.",
            |p| p.frames_in,
        ),
        (
            "bftd_peer_sent_frames_total",
            "Frames sent to each peer.",
            |p| p.frames_out,
        ),
        (
            "bftd_peer_dropped_frames_total",
            "Frames to each peer dropped on the way out.",
            |p| p.frames_dropped,
        ),
    ];
    for (name, help, field) in series {
        header(out, name, "counter", help);
        for (i, p) in net.peers.iter().enumerate() {
            if i != usize::from(me) {
                let _ = writeln!(out, "{name}{{peer=\"{i}\"}} {}", field(p));
            }
        }
    }
}

fn write_rejections(out: &mut String, net: &NetStats, counters: &NodeCounters) {
    header(
        out,
        "bftd_rejected_total",
        "counter",
        "Connections closed and frames refused for the remote's fault, by reason.",
    );
    for (reason, v) in [
        ("unknown_key", net.rejected_unknown_key),
        ("handshake_failed", net.rejected_handshake_failed),
        ("handshake_timeout", net.rejected_handshake_timeout),
        ("oversize_frame", net.rejected_oversize_frame),
        ("garbage", net.rejected_garbage),
        ("too_many_connections", net.rejected_too_many_connections),
        ("wrong_direction", net.rejected_wrong_direction),
        ("frame_timeout", net.rejected_frame_timeout),
        ("memory_budget", net.rejected_memory_budget),
        (
            "undecodable_peer_frame",
            counters.peer_frames_undecodable.get(),
        ),
        (
            "undecodable_client_frame",
            counters.client_frames_undecodable.get(),
        ),
    ] {
        let _ = writeln!(out, "bftd_rejected_total{{reason=\"{reason}\"}} {v}");
    }
    for (name, help, list) in [
        (
            "bftd_peer_rejected_messages_total",
            "Peer messages that failed verification, by sending peer.",
            &counters.peer_messages_rejected,
        ),
        (
            "bftd_peer_invalid_signatures_total",
            "Peer messages with an invalid signature, by sending peer.",
            &counters.peer_bad_signatures,
        ),
    ] {
        header(out, name, "counter", help);
        for (i, c) in list.iter().enumerate() {
            let _ = writeln!(out, "{name}{{peer=\"{i}\"}} {}", c.get());
        }
    }
}

fn write_limits(
    out: &mut String,
    counters: &NodeCounters,
    limits: &super::peer_limits::PeerLimits,
) {
    header(
        out,
        "bftd_peer_requests_limited_total",
        "counter",
        "Peer messages dropped by the per-peer rate limits (and our answers not sent), by kind.",
    );
    for (kind, v) in limits.dropped() {
        let _ = writeln!(
            out,
            "bftd_peer_requests_limited_total{{kind=\"{}\"}} {v}",
            kind.name()
        );
    }
    for (name, help, v) in [
        (
            "bftd_sync_responses_unsolicited_total",
            "Sync responses dropped before verification: no request of ours matched them.",
            counters.sync_responses_unsolicited.get(),
        ),
        (
            "bftd_serve_jobs_dropped_total",
            "Snapshot and block-store requests dropped because the serving queue was full.",
            counters.serve_jobs_dropped.get(),
        ),
        (
            "bftd_client_snapshot_requests_limited_total",
            "Clients' snapshot offer and chunk requests dropped by their shared rate limit.",
            counters.client_snapshot_requests_limited.get(),
        ),
        (
            "bftd_client_snapshot_bytes_served_total",
            "Snapshot bytes sent to clients downloading a backup (bftctl snapshot save).",
            counters.client_snapshot_bytes_served.get(),
        ),
        (
            "bftd_sync_blocks_served_from_store_total",
            "Committed blocks sent to syncing peers from the on-disk block store.",
            counters.sync_blocks_served_from_store.get(),
        ),
        (
            "bftd_watch_frames_sent_total",
            "Watch event frames sent to clients (one per watched height with changes).",
            counters.watch_frames_sent.get(),
        ),
        (
            "bftd_watch_commands_dropped_total",
            "Watch and unwatch commands dropped because the watch thread's queue was full.",
            counters.watch_commands_dropped.get(),
        ),
        (
            "bftd_watchers_evicted_total",
            "Watches evicted by a newer watch of the same client beyond its limit.",
            counters.watchers_evicted.get(),
        ),
        (
            "bftd_watchers_refused_total",
            "Watches refused because the node serves its limit of watches already.",
            counters.watchers_refused.get(),
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        out,
        "bftd_watchers",
        "gauge",
        "Watches this node is serving.",
    );
    let _ = writeln!(out, "bftd_watchers {}", counters.watchers.get());
}

fn write_requests(out: &mut String, counters: &NodeCounters, routes: &ReplyRoutes) {
    header(
        out,
        "bftd_client_requests_total",
        "counter",
        "Client requests received, by result of admission.",
    );
    for (result, v) in [
        ("accepted", counters.requests_accepted.get()),
        ("busy", counters.requests_refused_busy.get()),
        (
            "not_authorised",
            counters.requests_refused_not_authorised.get(),
        ),
        ("invalid", counters.requests_refused_invalid.get()),
    ] {
        let _ = writeln!(out, "bftd_client_requests_total{{result=\"{result}\"}} {v}");
    }
    let totals: [(&str, &str, u64); 15] = [
        (
            "bftd_client_replies_total",
            "Replies sent to client connections.",
            counters.replies_sent.get(),
        ),
        (
            "bftd_blocks_applied_total",
            "Committed blocks applied to the KV state.",
            counters.blocks_applied.get(),
        ),
        (
            "bftd_snapshots_saved_total",
            "State snapshots saved.",
            counters.snapshots_saved.get(),
        ),
        (
            "bftd_snapshots_installed_total",
            "State snapshots installed from peers.",
            counters.snapshots_installed.get(),
        ),
        (
            "bftd_snapshots_rejected_total",
            "Downloaded snapshots refused: their entries do not give the trusted state root.",
            counters.snapshots_rejected.get(),
        ),
        (
            "bftd_stale_reads_refused_total",
            "Stale reads refused because this node's state is diverged.",
            counters.stale_reads_refused.get(),
        ),
        (
            "bftd_verified_reads_total",
            "Verified reads answered with a proof and the certificate of its root.",
            counters.verified_reads_served.get(),
        ),
        (
            "bftd_verified_reads_refused_total",
            "Verified reads refused: state diverged, or no certified root the store can read.",
            counters.verified_reads_refused.get(),
        ),
        (
            "bftd_barrier_reads_total",
            "Linearizable reads answered by read barrier.",
            counters.barrier_reads_served.get(),
        ),
        (
            "bftd_barrier_reads_refused_total",
            "Barrier reads refused: read limits of the node or the link, full queue, diverged state.",
            counters.barrier_reads_refused.get(),
        ),
        (
            "bftd_barrier_reads_expired_total",
            "Barrier reads given up: no quorum of probe answers or no commit of the barrier in time.",
            counters.barrier_reads_expired.get(),
        ),
        (
            "bftd_barrier_probes_total",
            "Read-barrier probes this node started.",
            counters.barrier_probes.get(),
        ),
        (
            "bftd_barrier_answers_invalid_total",
            "Probe answers dropped: the QC did not verify, or over the per-peer probe rate.",
            counters.barrier_answers_invalid.get(),
        ),
        (
            "bftd_applied_reports_dropped_total",
            "State-root reports to the consensus thread dropped on a full queue.",
            counters.applied_reports_dropped.get(),
        ),
        (
            "bftd_reply_routes_evicted_total",
            "Reply routes forgotten because the table was full (those requests go untimed).",
            routes.evicted.get(),
        ),
    ];
    for (name, help, v) in totals {
        single(out, name, "counter", help, v);
    }
}

fn write_histograms(out: &mut String, m: &NodeMetrics) {
    header(
        out,
        "bftd_qc_formation_seconds",
        "histogram",
        "Time between high-QC advances of consecutive rounds.",
    );
    m.qc_formation
        .snapshot()
        .write_prometheus(out, "bftd_qc_formation_seconds", "");
    header(
        out,
        "bftd_commit_latency_seconds",
        "histogram",
        "From a request's first arrival at the node to its reply.",
    );
    m.commit_latency
        .snapshot()
        .write_prometheus(out, "bftd_commit_latency_seconds", "");
    header(
        out,
        "bftd_read_barrier_seconds",
        "histogram",
        "A read barrier from its probe to the hand-over of its reads to the state.",
    );
    m.read_barrier
        .snapshot()
        .write_prometheus(out, "bftd_read_barrier_seconds", "");
    header(
        out,
        "bftd_wal_fsync_seconds",
        "histogram",
        "Storage thread waits for a WAL sync, by engine.",
    );
    m.wal_fsync_consensus.snapshot().write_prometheus(
        out,
        "bftd_wal_fsync_seconds",
        "engine=\"consensus\"",
    );
    m.wal_fsync_state.snapshot().write_prometheus(
        out,
        "bftd_wal_fsync_seconds",
        "engine=\"state\"",
    );
    header(
        out,
        "bftd_request_stage_seconds",
        "histogram",
        "Requests in blocks this node proposed: time spent in each stage from arrival to reply.",
    );
    for (stage, h) in m.request_stages.snapshots() {
        h.write_prometheus(
            out,
            "bftd_request_stage_seconds",
            &format!("stage=\"{stage}\""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_syncs_are_named_with_engine_and_duration() {
        use std::time::Duration;
        assert!(!is_slow_sync(Duration::from_millis(499)));
        assert!(is_slow_sync(Duration::from_millis(500)));
        assert_eq!(
            slow_sync_line("state", Duration::from_millis(812), 0),
            "slow disk: a state WAL sync took 812 ms (warning at 500 ms); votes and replies \
             wait for it"
        );
        assert!(
            slow_sync_line("consensus", Duration::from_secs(2), 3)
                .ends_with("; 3 more slow syncs since the last such line")
        );
    }

    #[test]
    fn json_escapes_quotes() {
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c ");
    }
}
