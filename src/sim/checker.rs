//! The properties every run must keep, checked as it goes:
//! - agreement: no two honest nodes commit different blocks at one height;
//! - chain: each honest node's commits are consecutive heights, each the child of the last,
//!   across its crashes and restarts;
//! - liveness: after the last fault heals, every honest node commits a request submitted after
//!   the heal, before the run ends;
//! - leader schedule: honest nodes that computed the QC-path leader of one `(round, parent)`
//!   computed the same member (the schedule must be a function of the chain alone).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::consensus::{LeaderDecision, TimeMs};
use crate::types::{Block, BlockHeader, BlockId, ClientKey, Height, NodeId};

pub struct Checker {
    by_height: BTreeMap<Height, (BlockId, NodeId)>,
    /// Last commit of each checked (honest) node; `None` for nodes not checked.
    tips: Vec<Option<BlockHeader>>,
    post_heal_commit: Vec<bool>,
    submitted_at: HashMap<(ClientKey, u64), TimeMs>,
    /// Requests some honest node committed (clients stop retrying those).
    committed: HashSet<(ClientKey, u64)>,
    heal_at_ms: TimeMs,
    /// The first leader an honest node computed for each `(round, parent)`, and who computed it.
    leaders: BTreeMap<(u64, BlockId), (NodeId, NodeId)>,
    violations: Vec<String>,
}

/// Leader decisions older than this many rounds below the newest are forgotten (bounded memory;
/// honest nodes decide a round's leader within a few rounds of each other).
const LEADER_ROUNDS_KEPT: u64 = 10_000;

/// Keeps the report readable when a broken build fails everywhere at once.
const VIOLATIONS_KEPT_MAX: usize = 20;

impl Checker {
    pub fn new(genesis: BlockHeader, honest: &[bool], heal_at_ms: TimeMs) -> Self {
        Self {
            by_height: BTreeMap::new(),
            tips: honest.iter().map(|&h| h.then_some(genesis)).collect(),
            post_heal_commit: vec![false; honest.len()],
            submitted_at: HashMap::new(),
            committed: HashSet::new(),
            heal_at_ms,
            leaders: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    pub fn on_submit(&mut self, client: ClientKey, seq: u64, now: TimeMs) {
        self.submitted_at.insert((client, seq), now);
    }

    pub fn on_commit(&mut self, node: NodeId, id: BlockId, block: &Block, now: TimeMs) {
        let Some(Some(tip)) = self.tips.get(node.index()).copied() else {
            return; // not an honest node
        };
        if block.height != tip.height + 1 || block.parent_id() != tip.id {
            self.violation(format!(
                "chain: at t={now}ms {node} committed {id:?} at height {} with parent {:?}, \
                 but its previous commit was {:?} at height {}",
                block.height,
                block.parent_id(),
                tip.id,
                tip.height
            ));
        }
        match self.by_height.get(&block.height) {
            Some((other, who)) if *other != id => {
                let msg = format!(
                    "agreement: at t={now}ms {node} committed {id:?} at height {} but {who} \
                     committed {other:?} there",
                    block.height
                );
                self.violation(msg);
            }
            Some(_) => {}
            None => {
                self.by_height.insert(block.height, (id, node));
            }
        }
        self.tips[node.index()] = Some(block.header(id));
        self.committed
            .extend(block.payload.iter().map(|r| (r.client, r.seq)));
        let heal = self.heal_at_ms;
        if block.payload.iter().any(|r| {
            self.submitted_at
                .get(&(r.client, r.seq))
                .is_some_and(|&t| t >= heal)
        }) {
            self.post_heal_commit[node.index()] = true;
        }
    }

    pub fn on_leader_decisions(&mut self, node: NodeId, decisions: &[LeaderDecision]) {
        if !matches!(self.tips.get(node.index()), Some(Some(_))) {
            return; // not an honest node
        }
        for d in decisions {
            match self.leaders.get(&(d.round, d.parent)) {
                Some((leader, who)) if *leader != d.leader => {
                    let msg = format!(
                        "leader schedule: {node} computed {} as the leader of round {} after                          {:?}, but {who} computed {leader}",
                        d.leader, d.round, d.parent
                    );
                    self.violation(msg);
                }
                Some(_) => {}
                None => {
                    self.leaders.insert((d.round, d.parent), (d.leader, node));
                }
            }
        }
        let newest = self.leaders.keys().next_back().map_or(0, |(r, _)| *r);
        let oldest = self.leaders.keys().next().map_or(0, |(r, _)| *r);
        if let Some(floor) = newest.checked_sub(LEADER_ROUNDS_KEPT)
            && oldest < floor
        {
            self.leaders = self.leaders.split_off(&(floor, BlockId::ZERO));
        }
    }

    pub fn is_committed(&self, client: ClientKey, seq: u64) -> bool {
        self.committed.contains(&(client, seq))
    }

    /// Liveness, checked when the run ends.
    pub fn finish(&mut self, end_ms: TimeMs) {
        for (i, tip) in self.tips.clone().iter().enumerate() {
            if tip.is_some() && !self.post_heal_commit[i] {
                self.violation(format!(
                    "liveness: node{i} committed no request submitted after the heal at {}ms \
                     by the end of the run at {end_ms}ms (its last commit: height {})",
                    self.heal_at_ms,
                    tip.map_or(0, |t| t.height)
                ));
            }
        }
    }

    fn violation(&mut self, msg: String) {
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(msg);
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub fn max_height(&self) -> Height {
        self.by_height.keys().next_back().copied().unwrap_or(0)
    }
}
