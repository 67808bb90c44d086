//! The simulation loop: one thread, one seeded RNG, one priority queue of timed events.
//!
//! Each node copy runs the production [`Replica`]; this file is its simulated shell. Every
//! message is encoded as a peer frame, "sent" through the simulated network (latency, loss,
//! duplication, reordering, partitions), decoded and verified on arrival exactly as the daemon
//! does, then handed to the receiving replica. Persist effects complete after a simulated disk
//! delay, in order; a crash loses what was not reported durable. Committed blocks are applied
//! to a real `KvStore` per copy, snapshots are saved, served, downloaded and installed. Ties
//! in time are broken by insertion order, so a seed always replays the same run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::checker::{Checker, NodeEnd};
use super::config::{ByzKind, Scenario, SimConfig};
use super::node::NodeCopy;
use super::state::StateStore;
use super::trace::{trace_effect, trace_input};
use crate::adversary::ByzState;
use crate::consensus::{CoreConfig, CoreStats, TimeMs};
use crate::crypto::{ClientPolicy, Committee, Signer, Verifier, VerifierLimits};
use crate::kv::{Op, encode_ops};
use crate::replica::{Effect, Input, Replica, ReplicaConfig};
use crate::types::{Block, BlockHeader, BlockId, ClientRequest, ClusterId, Message, NodeId};
use crate::util::SimRng;
use crate::wire::peer::{decode_peer, encode_consensus, encode_peer};
use crate::wire::{PeerFrame, SnapshotOffer, StateMsg};

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub config: SimConfig,
    /// Highest height committed by any honest node.
    pub max_height: u64,
    /// Requests committed, summed over honest nodes' cores (each counts its own).
    pub requests_committed: u64,
    pub view_changes: u64,
    pub timeouts_sent: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub rejected_by_verifier: u64,
    pub dropped_far_future: u64,
    pub equivocations_seen: u64,
    /// Votes honest nodes refused because a carried state root differed from their own.
    pub votes_refused_root_mismatch: u64,
    /// Votes honest nodes refused because they no longer knew their root of a carried height
    /// they had applied (see `kv::root_memory`).
    pub votes_refused_root_unknown: u64,
    /// Times an honest node found its own root differs from a certified one.
    pub divergences_detected: u64,
    /// Snapshots installed by honest replicas.
    pub snapshots_installed: u64,
    pub requests_submitted: u64,
    pub end_ms: TimeMs,
    pub steps: u64,
    pub violations: Vec<String>,
}

impl SimReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one simulation to its end and reports what the checkers saw.
pub fn run(config: &SimConfig) -> Result<SimReport, String> {
    config.validate()?;
    let mut sim = Sim::new(config.clone())?;
    sim.schedule_scenario();
    sim.run();
    Ok(sim.report())
}

#[derive(Debug)]
enum Ev {
    /// The client re-sends a request no honest node has committed yet.
    ClientRetry {
        req: ClientRequest,
    },
    Deliver {
        to: NodeId,
        from: NodeId,
        bytes: Vec<u8>,
    },
    Request {
        to: NodeId,
        req: ClientRequest,
    },
    /// The replica's next deadline (only the latest scheduled one is live).
    Wake {
        node: NodeId,
        replica: usize,
        epoch: u64,
        at: TimeMs,
    },
    /// The state store finished installing a snapshot.
    Installed {
        node: NodeId,
        replica: usize,
        epoch: u64,
        result: Result<BlockHeader, String>,
    },
    /// The copy's state is after `height` with root `root` (reported as the node's storage
    /// thread does: after the commit's effects, not inside them).
    Applied {
        node: NodeId,
        replica: usize,
        epoch: u64,
        height: u64,
        root: [u8; 32],
        next_expiry_ms: Option<u64>,
        /// The height's block expired keys (reported after an apply only).
        expired: bool,
    },
    SyncDone {
        node: NodeId,
        replica: usize,
        epoch: u64,
        ticket: u64,
    },
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    /// Group id per node; messages cross only within a group. `None` heals.
    SetPartition(Option<Vec<u8>>),
    SetLoss {
        loss: f64,
        dup: f64,
    },
    CrashLeader {
        restart_at: TimeMs,
    },
    IsolateLeader,
    ClientTick,
}

struct Scheduled {
    at: TimeMs,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct SimNode {
    id: NodeId,
    byz: Option<ByzState>,
    replicas: Vec<NodeCopy>,
    verifier: Verifier,
    /// For twins: which replica hears from each sender.
    twin_side: Vec<usize>,
    /// Stats of core incarnations that crashed.
    retired: Vec<CoreStats>,
}

struct Client {
    secret: [u8; 32],
    seq: u64,
}

struct Sim {
    cfg: SimConfig,
    rng: SimRng,
    now: TimeMs,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    committee: Arc<Committee>,
    replica_cfg: ReplicaConfig,
    secrets: Vec<[u8; 32]>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    partition: Option<Vec<u8>>,
    loss: f64,
    dup: f64,
    checker: Checker,
    /// Before the heal, this share of messages takes up to `slow_ms_max` instead.
    slow_chance: f64,
    slow_ms_max: u64,
    end_ms: TimeMs,
    delivered: u64,
    dropped: u64,
    rejected: u64,
    submitted: u64,
    steps: u64,
    /// Each node's wall-clock skew (seeded, within `CLOCK_SKEW_MS_MAX` either way): its wall
    /// clock reads `SIM_EPOCH_MS + now + skew`.
    clock_skew_ms: Vec<i64>,
}

/// Simulated fsync delay bounds, in ms (the clock's unit).
const DISK_MS_MAX: u64 = 8;
/// A client re-sends a request that has not committed after this long.
const CLIENT_RETRY_MS: u64 = 2_000;
/// Share of crashes that tear the batch being synced (a prefix of it reaches the disk).
const TORN_CRASH_CHANCE: f64 = 0.5;
/// A replica asks for a snapshot after its committed height stood still this long while
/// fetching blocks.
const STATE_TRANSFER_AFTER_MS: u64 = 1_500;
/// Committed blocks each node retains (in memory and on disk) in the snapshot-install
/// scenario: above the snapshot interval, as a node's config must be (with fewer, a node
/// that installed a snapshot found the blocks after it pruned already and installed again),
/// and far below what the cluster commits while the node is down.
const SNAPSHOT_SCENARIO_BLOCKS_RETAINED: usize =
    super::state::SNAPSHOT_INTERVAL_BLOCKS as usize + 8;
/// The session id of every simulated client (each client key is one process).
const SIM_CLIENT_SESSION: u64 = 1;
/// The wall clock at simulated time 0 (ms since the Unix epoch): block timestamps look real.
const SIM_EPOCH_MS: u64 = 1_700_000_000_000;
/// Largest wall-clock skew of a node either way, far below the voters' bound
/// (`block_time_ahead_max_ms`, 10 s by default) as a deployment's must be.
const CLOCK_SKEW_MS_MAX: u64 = 2_000;
/// TTLs of the simulated clients' `PutTtl` ops: short, so keys expire during the run (and
/// in its idle tail, which must still end idle).
const SIM_TTL_MS_MAX: u64 = 2_000;

impl Sim {
    fn new(mut cfg: SimConfig) -> Result<Self, String> {
        let mut rng = SimRng::new(cfg.seed);
        // Outside the clean scenario, timers race the network: short random round timeouts,
        // and a share of messages delayed past them until the heal.
        let (slow_chance, slow_ms_max) = if cfg.scenario == Scenario::Happy {
            (0.0, 0)
        } else {
            cfg.round_timeout_base_ms = rng.range(60, 500);
            let chance = rng.range(0, 15) as f64 / 100.0;
            (chance, cfg.round_timeout_base_ms * 3)
        };
        let cluster = ClusterId::from_name("bftd-sim");
        let secrets: Vec<[u8; 32]> = (0..cfg.nodes)
            .map(|i| {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                s[8..16].copy_from_slice(&cfg.seed.to_le_bytes());
                s
            })
            .collect();
        let keys: Vec<[u8; 32]> = secrets
            .iter()
            .map(|s| Signer::new(*s, cluster).public_key())
            .collect();
        let committee = match Committee::new(cluster, &keys, cfg.f()) {
            Ok(c) => Arc::new(c),
            Err(e) => panic!("simulator keys form no committee: {e}"),
        };
        let mut core_cfg = CoreConfig {
            round_timeout_base_ms: cfg.round_timeout_base_ms,
            round_timeout_max_ms: cfg.round_timeout_max_ms,
            block_requests_max: 100,
            sync_retry_ms: 300,
            ..CoreConfig::default()
        };
        if cfg.scenario == Scenario::SnapshotInstall {
            // Peers keep too few blocks for a node that was down for seconds to sync.
            core_cfg.committed_blocks_retained = SNAPSHOT_SCENARIO_BLOCKS_RETAINED;
        }
        // Byzantine members are drawn from the seed.
        let mut ids: Vec<usize> = (0..cfg.nodes).collect();
        let mut byz_at: Vec<Option<ByzKind>> = vec![None; cfg.nodes];
        for kind in &cfg.byzantine {
            let i = rng.range(0, ids.len() as u64 - 1) as usize;
            byz_at[ids.remove(i)] = Some(*kind);
        }
        let honest: Vec<bool> = byz_at.iter().map(Option::is_none).collect();
        let clock_skew_ms = (0..cfg.nodes)
            .map(|_| rng.range(0, 2 * CLOCK_SKEW_MS_MAX) as i64 - CLOCK_SKEW_MS_MAX as i64)
            .collect();
        let genesis = Block::genesis_header(&cluster);
        let checker = Checker::new(genesis, &honest, cfg.heal_at_ms);
        let mut sim = Self {
            end_ms: cfg.heal_at_ms + cfg.liveness_window_ms,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            replica_cfg: ReplicaConfig {
                core: core_cfg,
                committee: committee.clone(),
                signer: Signer::new(secrets[0], cluster),
                me: NodeId(0),
                state_transfer_after_ms: STATE_TRANSFER_AFTER_MS,
            },
            committee,
            secrets,
            nodes: Vec::new(),
            clients: Vec::new(),
            partition: None,
            loss: 0.0,
            dup: 0.0,
            checker,
            slow_chance,
            slow_ms_max,
            delivered: 0,
            dropped: 0,
            rejected: 0,
            submitted: 0,
            steps: 0,
            clock_skew_ms,
            cfg,
        };
        for (i, kind) in byz_at.into_iter().enumerate() {
            let node = sim.make_node(NodeId(i as u16), kind)?;
            sim.nodes.push(node);
        }
        for c in 0..sim.cfg.clients {
            let mut secret = [0xc1u8; 32];
            secret[..8].copy_from_slice(&(c as u64).to_le_bytes());
            sim.clients.push(Client { secret, seq: 0 });
        }
        Ok(sim)
    }

    fn make_node(&mut self, id: NodeId, kind: Option<ByzKind>) -> Result<SimNode, String> {
        let copies = if kind == Some(ByzKind::Twins) { 2 } else { 1 };
        let mut replicas = Vec::new();
        for _ in 0..copies {
            let replica = self.new_replica(id, None);
            replicas.push(NodeCopy::new(
                replica,
                *self.committee.cluster(),
                StateStore::open()?,
                self.replica_cfg.core.committed_blocks_retained as u64,
            ));
        }
        let twin_side = (0..self.cfg.nodes)
            .map(|_| self.rng.range(0, copies as u64 - 1) as usize)
            .collect();
        let byz = kind.map(|k| {
            let rng = self.rng.fork();
            ByzState::new(k, self.secrets[id.index()], self.committee.clone(), id, rng)
        });
        let verifier = Verifier::new(
            self.committee.clone(),
            VerifierLimits::default(),
            ClientPolicy::Any,
        );
        Ok(SimNode {
            id,
            byz,
            replicas,
            verifier,
            twin_side,
            retired: Vec::new(),
        })
    }

    fn new_replica(&self, id: NodeId, durable: Option<crate::consensus::DurableState>) -> Replica {
        let cfg = ReplicaConfig {
            signer: Signer::new(self.secrets[id.index()], *self.committee.cluster()),
            me: id,
            ..self.replica_cfg.clone()
        };
        Replica::new(cfg, durable, self.now)
    }

    fn schedule(&mut self, at: TimeMs, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn honest_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.byz.is_none())
            .map(|n| n.id)
            .collect()
    }

    fn schedule_scenario(&mut self) {
        let heal = self.cfg.heal_at_ms;
        self.schedule(0, Ev::ClientTick);
        for i in 0..self.nodes.len() {
            for r in 0..self.nodes[i].replicas.len() {
                let wall_clock_ms = self.wall_clock_ms(NodeId(i as u16));
                let effects = match self.nodes[i].replicas[r].replica.as_mut() {
                    Some(replica) => {
                        replica.set_wall_clock_ms(wall_clock_ms);
                        replica.start(0)
                    }
                    None => Vec::new(),
                };
                self.dispatch(NodeId(i as u16), r, effects);
                self.report_applied(NodeId(i as u16), r, 0);
            }
        }
        match self.cfg.scenario {
            Scenario::Happy => {}
            Scenario::LeaderCrash => {
                let at = self.rng.range(1_000, 3_000);
                self.schedule(at, Ev::CrashLeader { restart_at: heal });
            }
            Scenario::SnapshotInstall => {
                // Down for most of the run: when it is back, its peers no longer hold the
                // blocks it misses, so it must install a snapshot.
                let honest = self.honest_ids();
                if let Some(&id) = self.rng.pick(&honest) {
                    let at = self.rng.range(500, 1_500);
                    self.schedule(at, Ev::Crash { node: id });
                    self.schedule(heal, Ev::Restart { node: id });
                }
            }
            Scenario::Partition => {
                let at = self.rng.range(1_000, 3_000);
                self.schedule(at, Ev::IsolateLeader);
                self.schedule(heal, Ev::SetPartition(None));
            }
            Scenario::CrashRestartAll => {
                let honest = self.honest_ids();
                let spacing = (heal - 500) / honest.len().max(1) as u64;
                for (k, id) in honest.into_iter().enumerate() {
                    let at = 500 + k as u64 * spacing;
                    self.schedule(at, Ev::Crash { node: id });
                    self.schedule(at + spacing * 2 / 3, Ev::Restart { node: id });
                }
            }
            Scenario::Lossy => {
                self.schedule(
                    0,
                    Ev::SetLoss {
                        loss: 0.25,
                        dup: 0.15,
                    },
                );
                self.schedule(
                    heal,
                    Ev::SetLoss {
                        loss: 0.0,
                        dup: 0.0,
                    },
                );
            }
            Scenario::Random => self.schedule_random_faults(),
        }
    }

    fn schedule_random_faults(&mut self) {
        let heal = self.cfg.heal_at_ms;
        let events = self.rng.range(2, 6);
        for _ in 0..events {
            let at = self.rng.range(0, heal - 1_000);
            let until = self.rng.range(at + 200, heal);
            match self.rng.range(0, 2) {
                0 => {
                    let groups: Vec<u8> = (0..self.cfg.nodes)
                        .map(|_| self.rng.range(0, 1) as u8)
                        .collect();
                    self.schedule(at, Ev::SetPartition(Some(groups)));
                    self.schedule(until, Ev::SetPartition(None));
                }
                1 => {
                    // Half the crashes are quick restarts (a supervisor restarting the process),
                    // which land in the middle of the round the node was voting in.
                    let honest = self.honest_ids();
                    let back = if self.rng.chance(0.5) {
                        at + self.rng.range(1, 30)
                    } else {
                        until
                    };
                    if let Some(&id) = self.rng.pick(&honest) {
                        self.schedule(at, Ev::Crash { node: id });
                        self.schedule(back, Ev::Restart { node: id });
                    }
                }
                _ => {
                    let loss = self.rng.range(5, 40) as f64 / 100.0;
                    let dup = self.rng.range(0, 20) as f64 / 100.0;
                    self.schedule(at, Ev::SetLoss { loss, dup });
                    self.schedule(
                        until,
                        Ev::SetLoss {
                            loss: 0.0,
                            dup: 0.0,
                        },
                    );
                }
            }
        }
        // Everything heals: no partition, no loss, every honest node up.
        self.schedule(heal, Ev::SetPartition(None));
        self.schedule(
            heal,
            Ev::SetLoss {
                loss: 0.0,
                dup: 0.0,
            },
        );
        for id in self.honest_ids() {
            self.schedule(heal, Ev::Restart { node: id });
        }
    }

    /// When the clients stop: the rest of the run is the idle tail.
    fn load_end_ms(&self) -> TimeMs {
        self.end_ms.saturating_sub(self.cfg.idle_tail_ms)
    }

    fn run(&mut self) {
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.at > self.end_ms {
                break;
            }
            self.now = s.at;
            self.steps += 1;
            self.step(s.ev);
        }
        // Where each honest node's live copy ended: its highest certified root and whether
        // it is idle (a crashed copy at the end has nothing to report).
        let ends: Vec<NodeEnd> = self
            .nodes
            .iter()
            .filter(|n| n.byz.is_none())
            .filter_map(|n| {
                let core = n.replicas[0].replica.as_ref()?.core();
                Some(NodeEnd {
                    node: n.id,
                    certified_height: core.roots().latest_certified().map_or(0, |c| c.0),
                    idle: core.is_idle(),
                })
            })
            .collect();
        self.checker.finish(self.end_ms, &ends);
        self.check_root_memory();
    }

    /// Root memory: an honest node whose state was never replaced by a snapshot knows its root
    /// of every height it applied (the runs are far shorter than `ROOT_MEMORY_HEIGHTS`), also
    /// across restarts, so it never refuses a vote for a root it forgot.
    fn check_root_memory(&mut self) {
        let mut found = Vec::new();
        for n in self.nodes.iter().filter(|n| n.byz.is_none()) {
            if n.replicas[0].installs > 0 {
                continue;
            }
            let live = n.replicas[0].replica.as_ref().map(Replica::core_stats);
            let refused: u64 = n
                .retired
                .iter()
                .chain(live.iter())
                .map(|s| s.votes_refused_root_unknown)
                .sum();
            if refused > 0 {
                found.push((n.id, refused));
            }
        }
        for (node, refused) in found {
            self.checker.violation(format!(
                "root memory: {node} refused {refused} votes for blocks carrying roots of \
                 heights it had applied but no longer knew (forgotten across a restart)"
            ));
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, bytes } => self.deliver(to, from, &bytes),
            Ev::Request { to, req } => self.deliver_request(to, req),
            Ev::Wake {
                node,
                replica,
                epoch,
                at,
            } => {
                let copy = &mut self.nodes[node.index()].replicas[replica];
                if copy.epoch == epoch && copy.wake_at == Some(at) {
                    copy.wake_at = None;
                    self.handle(node, replica, Input::Tick);
                }
            }
            Ev::SyncDone {
                node,
                replica,
                epoch,
                ticket,
            } => {
                let copy = &mut self.nodes[node.index()].replicas[replica];
                if copy.epoch == epoch && copy.replica.is_some() {
                    copy.complete_sync(ticket);
                    self.handle(node, replica, Input::Durable { ticket });
                }
            }
            Ev::Installed {
                node,
                replica,
                epoch,
                result,
            } => {
                if self.nodes[node.index()].replicas[replica].epoch == epoch {
                    self.handle(node, replica, Input::Installed(result));
                }
            }
            Ev::Applied {
                node,
                replica,
                epoch,
                height,
                root,
                next_expiry_ms,
                expired,
            } => {
                let copy = &mut self.nodes[node.index()].replicas[replica];
                if copy.epoch == epoch {
                    if let Some(r) = copy.replica.as_mut() {
                        r.set_next_expiry_ms(next_expiry_ms);
                        if expired {
                            r.note_expired(height);
                        }
                    }
                    self.handle(node, replica, Input::Applied { height, root });
                }
            }
            Ev::Crash { node } => self.crash(node),
            Ev::Restart { node } => self.restart(node),
            Ev::SetPartition(p) => self.partition = p,
            Ev::SetLoss { loss, dup } => {
                self.loss = loss;
                self.dup = dup;
            }
            Ev::CrashLeader { restart_at } => {
                if let Some(leader) = self.current_honest_leader() {
                    self.crash(leader);
                    self.schedule(restart_at, Ev::Restart { node: leader });
                }
            }
            Ev::IsolateLeader => {
                if let Some(leader) = self.current_honest_leader() {
                    let groups = (0..self.cfg.nodes)
                        .map(|i| u8::from(i == leader.index()))
                        .collect();
                    self.partition = Some(groups);
                }
            }
            Ev::ClientTick => self.client_tick(),
            Ev::ClientRetry { req } => {
                if !self.checker.is_committed(req.client, req.seq) {
                    self.send_request(req);
                }
            }
        }
    }

    /// The leader of the highest round any honest live core is in (as that core sees it), if
    /// it is honest.
    fn current_honest_leader(&self) -> Option<NodeId> {
        let leader = self
            .nodes
            .iter()
            .filter(|n| n.byz.is_none())
            .filter_map(|n| n.replicas[0].replica.as_ref().map(|r| r.core()))
            .max_by_key(|c| c.round())?
            .leader();
        self.nodes[leader.index()].byz.is_none().then_some(leader)
    }

    fn crash(&mut self, node: NodeId) {
        let torn = self
            .rng
            .chance(TORN_CRASH_CHANCE)
            .then(|| self.rng.range(0, 3) as usize);
        let n = &mut self.nodes[node.index()];
        for copy in &mut n.replicas {
            if let Some(replica) = copy.replica.as_ref() {
                n.retired.push(replica.core_stats());
                copy.crash(torn);
            }
        }
    }

    fn restart(&mut self, node: NodeId) {
        for r in 0..self.nodes[node.index()].replicas.len() {
            if self.nodes[node.index()].replicas[r].replica.is_some() {
                continue;
            }
            let state = self.nodes[node.index()].replicas[r].durable.to_state();
            let mut replica = self.new_replica(node, Some(state));
            replica.set_wall_clock_ms(self.wall_clock_ms(node));
            let effects = replica.start(self.now);
            let copy = &mut self.nodes[node.index()].replicas[r];
            copy.replica = Some(replica);
            copy.last_sync_done = self.now;
            self.dispatch(node, r, effects);
            self.report_restored(node, r);
        }
    }

    /// Tells a restarted copy's replica the roots its state remembers (`kv::root_memory`),
    /// ending with where its state is, as the node does at start.
    fn report_restored(&mut self, node: NodeId, replica: usize) {
        let copy = &self.nodes[node.index()].replicas[replica];
        let epoch = copy.epoch;
        let roots = match copy.state.recent_roots() {
            Ok(roots) => roots,
            Err(e) => {
                self.checker
                    .violation(format!("{node}: cannot read the remembered roots: {e}"));
                vec![(copy.state.applied_height(), copy.state.digest())]
            }
        };
        // Each report carries the state's next expiry; only the last one's matters.
        let next_expiry_ms = copy.state.next_expiry_ms();
        for (height, root) in roots {
            let ev = Ev::Applied {
                node,
                replica,
                epoch,
                height,
                root,
                next_expiry_ms,
                expired: false,
            };
            self.schedule(self.now, ev);
        }
    }

    /// Tells the copy's replica where its state is, `delay_ms` from now.
    fn report_applied(&mut self, node: NodeId, replica: usize, delay_ms: u64) {
        self.report_state(node, replica, delay_ms, false);
    }

    /// Like [`Sim::report_applied`]; `after_apply`: the report of a block just applied, which
    /// says whether that block expired keys.
    fn report_state(&mut self, node: NodeId, replica: usize, delay_ms: u64, after_apply: bool) {
        let copy = &self.nodes[node.index()].replicas[replica];
        let ev = Ev::Applied {
            node,
            replica,
            epoch: copy.epoch,
            height: copy.state.applied_height(),
            root: copy.state.digest(),
            next_expiry_ms: copy.state.next_expiry_ms(),
            expired: after_apply && copy.state.expired_last_block() > 0,
        };
        self.schedule(self.now + delay_ms, ev);
    }

    fn client_tick(&mut self) {
        let c = (self.submitted % self.clients.len() as u64) as usize;
        let ops = self.client_ops();
        let client = &mut self.clients[c];
        client.seq += 1;
        let signer = Signer::new(client.secret, *self.committee.cluster());
        // One session per simulated client key: each key is one client process.
        let req = signer.sign_request(SIM_CLIENT_SESSION, client.seq, ops);
        self.checker.on_submit(req.client, req.seq, self.now);
        self.submitted += 1;
        self.send_request(req);
        let next = self.now + self.cfg.request_interval_ms;
        if next <= self.load_end_ms() {
            self.schedule(next, Ev::ClientTick);
        }
    }

    /// One request's operations on a small key space, so requests read and overwrite each
    /// other's keys and replies depend on the order consensus chose.
    fn client_ops(&mut self) -> Vec<u8> {
        let key = format!("k{}", self.rng.range(0, 15)).into_bytes();
        let op = match self.rng.range(0, 9) {
            0..=4 => {
                let len = self.rng.range(1, 32) as usize;
                let value = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                if self.rng.chance(0.25) {
                    let ttl_ms = self.rng.range(1, SIM_TTL_MS_MAX);
                    Op::PutTtl { key, value, ttl_ms }
                } else {
                    Op::Put { key, value }
                }
            }
            5..=7 => Op::Get { key },
            _ => Op::Delete { key },
        };
        encode_ops(&[op])
    }

    /// Sends a request to every node through the same lossy network as node traffic (a client
    /// is in no partition group), and schedules a retry in case it does not commit.
    fn send_request(&mut self, req: ClientRequest) {
        for i in 0..self.cfg.nodes {
            if self.rng.chance(self.loss) {
                self.dropped += 1;
                continue;
            }
            let at = self.now
                + self
                    .rng
                    .range(self.cfg.latency_ms_min, self.cfg.latency_ms_max);
            self.schedule(
                at,
                Ev::Request {
                    to: NodeId(i as u16),
                    req: req.clone(),
                },
            );
        }
        let retry_at = self.now + CLIENT_RETRY_MS;
        if retry_at <= self.load_end_ms() {
            self.schedule(retry_at, Ev::ClientRetry { req });
        }
    }

    fn deliver_request(&mut self, to: NodeId, req: ClientRequest) {
        let n = &mut self.nodes[to.index()];
        if let Some(b) = n.byz.as_mut() {
            b.on_request(&req);
        }
        let Some(Ok(verified)) = n.verifier.verify_requests(vec![req]).pop() else {
            self.rejected += 1;
            return;
        };
        for r in 0..self.nodes[to.index()].replicas.len() {
            self.handle(to, r, Input::RequestReceived(verified.clone()));
        }
    }

    fn deliver(&mut self, to: NodeId, from: NodeId, bytes: &[u8]) {
        let n = &mut self.nodes[to.index()];
        let replica = n.twin_side[from.index()];
        if n.replicas[replica].replica.is_none() {
            self.dropped += 1;
            return;
        }
        let msg = match decode_peer(bytes) {
            Ok(PeerFrame::Consensus(m)) => m,
            Ok(PeerFrame::State(m)) => {
                self.delivered += 1;
                self.deliver_state(to, replica, from, m);
                return;
            }
            // The simulator runs no read barriers; a probe is no input it models.
            Ok(PeerFrame::Read(_)) | Err(_) => {
                self.rejected += 1;
                return;
            }
        };
        self.delivered += 1;
        let extra = match n.byz.as_mut() {
            Some(b) => b.inbound(&msg),
            None => Vec::new(),
        };
        for (dest, m) in extra {
            self.net_send(to, dest, &m);
        }
        match self.nodes[to.index()].verifier.verify_message(msg) {
            Ok(v) => self.handle(to, replica, Input::MessageReceived { from, msg: v }),
            Err(_) => self.rejected += 1,
        }
    }

    /// State transfer: requests are served by the copy's state store (as the node's storage
    /// thread serves them), answers go to the replica.
    fn deliver_state(&mut self, to: NodeId, replica: usize, from: NodeId, msg: StateMsg) {
        match self.nodes[to.index()].replicas[replica].state.serve(&msg) {
            Some(answer) => self.net_send_state(to, from, &answer),
            None => self.handle(to, replica, Input::StateReceived { from, msg }),
        }
    }

    fn handle(&mut self, node: NodeId, replica: usize, input: Input) {
        let now = self.now;
        if self.cfg.trace_nodes.contains(&node.index()) {
            let round = self.nodes[node.index()].replicas[replica]
                .replica
                .as_ref()
                .map(|r| r.core().round());
            eprintln!(
                "{now:>6} {node:?}/{replica} r{round:?} <- {}",
                trace_input(&input)
            );
        }
        let wall_clock_ms = self.wall_clock_ms(node);
        let (effects, leaders, certified) =
            match self.nodes[node.index()].replicas[replica].replica.as_mut() {
                Some(r) => (
                    {
                        r.set_wall_clock_ms(wall_clock_ms);
                        r.handle(now, input)
                    },
                    r.take_leader_decisions(),
                    r.take_certified_roots(),
                ),
                None => return,
            };
        if replica == 0 {
            self.checker.on_leader_decisions(node, &leaders);
            self.checker.on_certified(node, &certified, now);
        }
        self.dispatch(node, replica, effects);
    }

    /// `node`'s wall clock now: simulated time, skewed per node.
    fn wall_clock_ms(&self, node: NodeId) -> u64 {
        (SIM_EPOCH_MS + self.now).saturating_add_signed(self.clock_skew_ms[node.index()])
    }

    /// The latest timestamp an honest quorum lets a block carry now: the fastest honest
    /// clock plus the voters' bound (a block voted earlier was bounded by an earlier clock).
    fn block_time_limit_ms(&self) -> u64 {
        let fastest = self
            .nodes
            .iter()
            .filter(|n| n.byz.is_none())
            .map(|n| self.wall_clock_ms(n.id))
            .max()
            .unwrap_or(0);
        fastest.saturating_add(self.replica_cfg.core.block_time_ahead_max_ms)
    }

    fn dispatch(&mut self, node: NodeId, replica: usize, effects: Vec<Effect>) {
        for effect in effects {
            if self.cfg.trace_nodes.contains(&node.index()) {
                eprintln!(
                    "{:>6} {node:?}/{replica}    -> {}",
                    self.now,
                    trace_effect(&effect)
                );
            }
            self.execute(node, replica, effect);
        }
        self.schedule_wake(node, replica);
    }

    fn execute(&mut self, node: NodeId, replica: usize, effect: Effect) {
        match effect {
            Effect::Send { to, msg } => self.send_from(node, Some(to), msg),
            Effect::Broadcast { msg } => self.send_from(node, None, msg),
            Effect::SendState { to, msg } => self.net_send_state(node, to, &msg),
            Effect::BroadcastState { msg } => {
                for to in self.committee.members().collect::<Vec<_>>() {
                    self.net_send_state(node, to, &msg);
                }
            }
            Effect::Persist { ticket, items } => {
                let copy = &mut self.nodes[node.index()].replicas[replica];
                copy.pending.push_back((ticket, items));
                let done = (self.now + self.rng.range(0, DISK_MS_MAX)).max(copy.last_sync_done);
                copy.last_sync_done = done;
                let epoch = copy.epoch;
                self.schedule(
                    done,
                    Ev::SyncDone {
                        node,
                        replica,
                        epoch,
                        ticket,
                    },
                );
            }
            Effect::Commit { id, block } => self.apply_commit(node, replica, id, &block),
            Effect::ServeCommitted {
                to,
                from_height,
                to_height,
                blocks_max,
                bytes_max,
            } => {
                let blocks = self.nodes[node.index()].replicas[replica]
                    .durable
                    .committed_range(from_height, to_height, blocks_max, bytes_max);
                if !blocks.is_empty() {
                    let msg = Message::SyncResponse(crate::types::SyncResponse { blocks });
                    self.send_from(node, Some(to), msg);
                }
            }
            // Simulated clients learn commits from the checker, not from replies.
            Effect::ReplyFromTable { .. } | Effect::RefuseBusy { .. } => {}
            Effect::DownloadBegin { .. } => {
                self.nodes[node.index()].replicas[replica]
                    .state
                    .download_begin();
            }
            Effect::DownloadAppend { offset, bytes } => {
                let copy = &mut self.nodes[node.index()].replicas[replica];
                if !copy.state.download_append(offset, &bytes) {
                    self.handle(node, replica, Input::DownloadFailed);
                }
            }
            Effect::InstallSnapshot { offer } => self.install(node, replica, &offer),
        }
    }

    /// Applies a committed block to the copy's state and hands the replies and digest to the
    /// checker (copy 0 only: twins' second copies are not checked).
    fn apply_commit(&mut self, node: NodeId, replica: usize, id: BlockId, block: &Block) {
        let copy = &mut self.nodes[node.index()].replicas[replica];
        let applied = match copy.state.apply(id, block) {
            Ok(Some(replies)) => replies,
            Ok(None) => return, // covered by an installed snapshot, or re-committed
            Err(e) => {
                let msg = format!("state: {node} cannot apply height {}: {e}", block.height);
                self.checker.violation(msg);
                return;
            }
        };
        copy.durable.on_commit(id, block);
        let digest = copy.state.digest();
        if replica == 0 {
            let limit = self.block_time_limit_ms();
            self.checker.on_commit(node, id, block, self.now, limit);
            self.checker
                .on_applied(node, block.height, digest, &applied, self.now);
        }
        self.report_state(node, replica, 0, true);
    }

    /// Installs the downloaded snapshot now (the commits before it are applied already); the
    /// replica hears of it after a simulated disk delay.
    fn install(&mut self, node: NodeId, replica: usize, offer: &SnapshotOffer) {
        let copy = &mut self.nodes[node.index()].replicas[replica];
        let result = copy.state.install(offer);
        if let Ok(header) = &result {
            copy.installs += 1;
            copy.durable.on_install(*header);
            let digest = copy.state.digest();
            if replica == 0 {
                self.checker.on_install(node, *header, digest, self.now);
            }
        }
        let epoch = copy.epoch;
        let delay = self.rng.range(0, DISK_MS_MAX);
        let installed = result.is_ok();
        self.schedule(
            self.now + delay,
            Ev::Installed {
                node,
                replica,
                epoch,
                result,
            },
        );
        if installed {
            self.report_applied(node, replica, delay);
        }
    }

    /// Keeps one live wake-up at the replica's next deadline.
    fn schedule_wake(&mut self, node: NodeId, replica: usize) {
        let copy = &mut self.nodes[node.index()].replicas[replica];
        let Some(r) = copy.replica.as_ref() else {
            return;
        };
        let at = r.next_deadline_ms().max(self.now);
        if copy.wake_at == Some(at) {
            return;
        }
        copy.wake_at = Some(at);
        let epoch = copy.epoch;
        self.schedule(
            at,
            Ev::Wake {
                node,
                replica,
                epoch,
                at,
            },
        );
    }

    fn send_from(&mut self, from: NodeId, to: Option<NodeId>, msg: Message) {
        let out: Vec<(NodeId, Message)> = match self.nodes[from.index()].byz.as_mut() {
            Some(b) => b.outbound(to, msg),
            None => match to {
                Some(t) => vec![(t, msg)],
                None => self
                    .committee
                    .members()
                    .filter(|m| *m != from)
                    .map(|m| (m, msg.clone()))
                    .collect(),
            },
        };
        for (dest, m) in out {
            self.net_send(from, dest, &m);
        }
    }

    fn net_send(&mut self, from: NodeId, to: NodeId, msg: &Message) {
        if from == to {
            return;
        }
        if let Some(groups) = &self.partition
            && groups[from.index()] != groups[to.index()]
        {
            self.dropped += 1;
            return;
        }
        if self.rng.chance(self.loss) {
            self.dropped += 1;
            return;
        }
        let bytes = encode_consensus(msg.clone());
        self.net_send_bytes(from, to, bytes);
    }

    /// State transfer goes through the same network, outside any Byzantine filter.
    fn net_send_state(&mut self, from: NodeId, to: NodeId, msg: &StateMsg) {
        if from == to {
            return;
        }
        if let Some(groups) = &self.partition
            && groups[from.index()] != groups[to.index()]
        {
            self.dropped += 1;
            return;
        }
        if self.rng.chance(self.loss) {
            self.dropped += 1;
            return;
        }
        let bytes = encode_peer(&PeerFrame::State(msg.clone()));
        self.net_send_bytes(from, to, bytes);
    }

    fn net_send_bytes(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let slow = self.now < self.cfg.heal_at_ms && self.rng.chance(self.slow_chance);
            let max = if slow {
                self.slow_ms_max
            } else {
                self.cfg.latency_ms_max
            };
            let at = self.now + self.rng.range(self.cfg.latency_ms_min, max);
            self.schedule(
                at,
                Ev::Deliver {
                    to,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn report(&self) -> SimReport {
        let mut sum = CoreStats::default();
        let mut snapshots_installed = 0;
        for n in self.nodes.iter().filter(|n| n.byz.is_none()) {
            let live = n.replicas[0].replica.as_ref().map(Replica::core_stats);
            snapshots_installed += n.replicas[0].installs;
            for s in n.retired.iter().chain(live.iter()) {
                sum.view_changes += s.view_changes;
                sum.timeouts_sent += s.timeouts_sent;
                sum.requests_committed += s.requests_committed;
                sum.dropped_far_future += s.dropped_far_future;
                sum.equivocations_seen += s.equivocations_seen;
                sum.votes_refused_root_mismatch += s.votes_refused_root_mismatch;
                sum.votes_refused_root_unknown += s.votes_refused_root_unknown;
                sum.divergences_detected += s.divergences_detected;
            }
        }
        SimReport {
            config: self.cfg.clone(),
            max_height: self.checker.max_height(),
            requests_committed: sum.requests_committed,
            view_changes: sum.view_changes,
            timeouts_sent: sum.timeouts_sent,
            messages_delivered: self.delivered,
            messages_dropped: self.dropped,
            rejected_by_verifier: self.rejected,
            dropped_far_future: sum.dropped_far_future,
            equivocations_seen: sum.equivocations_seen,
            votes_refused_root_mismatch: sum.votes_refused_root_mismatch,
            votes_refused_root_unknown: sum.votes_refused_root_unknown,
            divergences_detected: sum.divergences_detected,
            snapshots_installed,
            requests_submitted: self.submitted,
            end_ms: self.end_ms,
            steps: self.steps,
            violations: self.checker.violations().to_vec(),
        }
    }
}
