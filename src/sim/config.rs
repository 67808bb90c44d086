//! What one simulated run is: cluster size, Byzantine members, the fault scenario, network and
//! timing parameters, all derived from a few command-line words and the seed.

use std::fmt;
use std::str::FromStr;

pub use crate::adversary::ByzKind;

/// Finds the item named `s`, or says which names exist.
fn parse_named<T: Copy>(
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> Result<T, String> {
    all.iter().copied().find(|k| name(*k) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|k| name(*k)).collect();
        format!(
            "unknown {what} '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

/// The honest-side faults of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A clean network.
    Happy,
    /// The current leader crashes, later restarts.
    LeaderCrash,
    /// The current leader is cut off from everyone, then the partition heals.
    Partition,
    /// Every node crashes and restarts in turn.
    CrashRestartAll,
    /// Heavy loss, duplication and reordering, then the network heals.
    Lossy,
    /// A random mix of partitions, crashes and loss drawn from the seed.
    Random,
    /// One node is down for most of the run while peers keep few blocks: it must catch up by
    /// installing a snapshot.
    SnapshotInstall,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Happy,
        Scenario::LeaderCrash,
        Scenario::Partition,
        Scenario::CrashRestartAll,
        Scenario::Lossy,
        Scenario::Random,
        Scenario::SnapshotInstall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Happy => "happy",
            Scenario::LeaderCrash => "leader-crash",
            Scenario::Partition => "partition",
            Scenario::CrashRestartAll => "crash-restart-all",
            Scenario::Lossy => "lossy",
            Scenario::Random => "random",
            Scenario::SnapshotInstall => "snapshot-install",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(s, &Scenario::ALL, |k| k.name(), "scenario")
    }
}

/// Everything that determines one run. Two equal configs give the same run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub byzantine: Vec<ByzKind>,
    pub scenario: Scenario,
    /// Faults happen in `[0, heal_at_ms)`; afterwards the network is clean and every node up.
    pub heal_at_ms: u64,
    /// After healing, every honest node must commit a new request within this time.
    pub liveness_window_ms: u64,
    /// The clients stop submitting and retrying this long before the run ends: by the end
    /// every honest node must hold a certified root at or above the last committed payload
    /// height, and be idle (nothing left to order, commit or certify).
    pub idle_tail_ms: u64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    /// One client request is submitted every this many ms, round-robin over the clients.
    pub request_interval_ms: u64,
    pub clients: usize,
    pub round_timeout_base_ms: u64,
    pub round_timeout_max_ms: u64,
    /// Print every delivered message and action of these nodes to stderr (debugging aid; not
    /// part of what determines the run).
    pub trace_nodes: Vec<usize>,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize, byzantine: Vec<ByzKind>, scenario: Scenario) -> Self {
        Self {
            seed,
            nodes,
            byzantine,
            scenario,
            heal_at_ms: 8_000,
            liveness_window_ms: 20_000,
            idle_tail_ms: 6_000,
            latency_ms_min: 2,
            latency_ms_max: 40,
            request_interval_ms: 100,
            clients: 4,
            round_timeout_base_ms: 400,
            round_timeout_max_ms: 4_000,
            trace_nodes: Vec::new(),
        }
    }

    /// Largest `f` the cluster size tolerates.
    pub fn f(&self) -> usize {
        (self.nodes.saturating_sub(1)) / 3
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.nodes < 1 || self.nodes > 64 {
            return Err(format!("--nodes {} is out of range (1..=64)", self.nodes));
        }
        if self.byzantine.len() > self.f() {
            return Err(format!(
                "{} Byzantine nodes but {} nodes tolerate at most f = {}",
                self.byzantine.len(),
                self.nodes,
                self.f()
            ));
        }
        if self.idle_tail_ms >= self.liveness_window_ms {
            return Err("the idle tail must be shorter than the liveness window".into());
        }
        if self.latency_ms_min > self.latency_ms_max {
            return Err("latency min is above max".into());
        }
        Ok(())
    }

    /// The one command that replays this run.
    pub fn repro_command(&self) -> String {
        let mut cmd = format!(
            "bftd sim --seed {} --nodes {} --scenario {}",
            self.seed,
            self.nodes,
            self.scenario.name()
        );
        if !self.byzantine.is_empty() {
            let names: Vec<&str> = self.byzantine.iter().map(|k| k.name()).collect();
            cmd.push_str(&format!(" --byzantine {}", names.join(",")));
        }
        cmd
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repro_command())
    }
}
