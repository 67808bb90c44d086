//! The properties every run must keep, checked as it goes:
//! - agreement: no two honest nodes commit different blocks at one height;
//! - chain: each honest node's commits are consecutive heights, each the child of the last,
//!   across its crashes and restarts;
//! - liveness: after the last fault heals, every honest node commits a request submitted after
//!   the heal, before the run ends;
//! - state: every honest node's state has the same digest at the same height, and the same
//!   request at the same height gets byte-identical replies on every honest node (also after
//!   a node installed a snapshot, which moves its chain tip to the snapshot's block);
//! - certified roots: every state root an honest node saw certified (carried by a block a QC
//!   certifies) equals the honest nodes' state digest at that height (checked whichever comes
//!   first), so every honest node's own root agrees with every certified one;
//! - certified at idle: after the clients stop (the config's idle tail), every honest node
//!   ends holding a certified root at or above the last height that committed a payload,
//!   and idle (its round timer asleep), so a verified read can prove the last write without
//!   filler writes and the cluster stops making blocks;
//! - consensus time: along the committed chain block timestamps strictly increase, every
//!   honest node commits the same timestamp at a height (part of the block id, checked
//!   anyway), and no committed timestamp is further ahead of the fastest honest clock than
//!   the voters' bound allows (a Byzantine leader cannot push time beyond it);
//! - leader schedule: honest nodes that computed the QC-path leader of one `(round, parent)`
//!   computed the same member (the schedule must be a function of the chain alone).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::state::AppliedReply;
use crate::consensus::{LeaderDecision, TimeMs};
use crate::types::{Block, BlockHeader, BlockId, ClientKey, Height, NodeId};

/// The first honest node to reach a height, and its state digest there.
type DigestSeen = ([u8; 32], NodeId);
/// One request's reply at one height: the blake3 hash of the reply bytes.
type ReplyKey = (Height, [u8; 32], u64);

pub struct Checker {
    by_height: BTreeMap<Height, (BlockId, NodeId)>,
    /// Last commit of each checked (honest) node; `None` for nodes not checked.
    tips: Vec<Option<BlockHeader>>,
    post_heal_commit: Vec<bool>,
    submitted_at: HashMap<(ClientKey, u64), TimeMs>,
    /// Requests some honest node committed (clients stop retrying those).
    committed: HashSet<(ClientKey, u64)>,
    heal_at_ms: TimeMs,
    digests: BTreeMap<Height, DigestSeen>,
    replies: HashMap<ReplyKey, ([u8; 32], NodeId)>,
    /// The first leader an honest node computed for each `(round, parent)`, and who computed it.
    leaders: BTreeMap<(u64, BlockId), (NodeId, NodeId)>,
    /// The first certified root an honest node reported for each height, and that node.
    certified: BTreeMap<Height, ([u8; 32], NodeId)>,
    /// The highest height an honest node committed with a non-empty payload.
    payload_height_max: Height,
    /// The timestamp of each committed height, as the first honest node committed it.
    times: BTreeMap<Height, u64>,
    violations: Vec<String>,
}

/// Where one honest node's live copy ended the run.
#[derive(Debug, Clone, Copy)]
pub struct NodeEnd {
    pub node: NodeId,
    /// Its highest certified state root's height (0 if none).
    pub certified_height: Height,
    /// Nothing left to order, commit or certify: its round timer sleeps.
    pub idle: bool,
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
            digests: BTreeMap::new(),
            replies: HashMap::new(),
            leaders: BTreeMap::new(),
            certified: BTreeMap::new(),
            times: BTreeMap::new(),
            payload_height_max: 0,
            violations: Vec::new(),
        }
    }

    pub fn on_submit(&mut self, client: ClientKey, seq: u64, now: TimeMs) {
        self.submitted_at.insert((client, seq), now);
    }

    /// An honest node committed `block`; `time_limit_ms` is the latest timestamp honest voters
    /// could have accepted by now (fastest honest clock plus the bound).
    pub fn on_commit(
        &mut self,
        node: NodeId,
        id: BlockId,
        block: &Block,
        now: TimeMs,
        time_limit_ms: u64,
    ) {
        let Some(Some(tip)) = self.tips.get(node.index()).copied() else {
            return; // not an honest node
        };
        self.check_time(node, block, now, time_limit_ms);
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
        if !block.payload.is_empty() {
            self.payload_height_max = self.payload_height_max.max(block.height);
        }
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

    fn check_time(&mut self, node: NodeId, block: &Block, now: TimeMs, time_limit_ms: u64) {
        let (h, t) = (block.height, block.timestamp_ms);
        if t > time_limit_ms {
            self.violation(format!(
                "time: at t={now}ms {node} committed height {h} with timestamp {t}, {} ms ahead \
                 of the bound of the honest clocks ({time_limit_ms})",
                t - time_limit_ms
            ));
        }
        match self.times.get(&h) {
            Some(&seen) if seen != t => self.violation(format!(
                "time: at t={now}ms {node} committed height {h} with timestamp {t}, another \
                 honest node with {seen}"
            )),
            Some(_) => {}
            None => {
                self.times.insert(h, t);
            }
        }
        let below = self.times.range(..h).next_back().map(|(&bh, &bt)| (bh, bt));
        let above = self.times.range(h + 1..).next().map(|(&ah, &at)| (ah, at));
        if let Some((bh, bt)) = below.filter(|&(_, bt)| bt >= t) {
            self.violation(format!(
                "time: at t={now}ms {node} committed height {h} with timestamp {t}, not above \
                 height {bh}'s {bt}"
            ));
        }
        if let Some((ah, at)) = above.filter(|&(_, at)| at <= t) {
            self.violation(format!(
                "time: at t={now}ms {node} committed height {h} with timestamp {t}, not below \
                 height {ah}'s {at}"
            ));
        }
    }

    /// An honest node applied the block at `height`: its state digest and its replies.
    pub fn on_applied(
        &mut self,
        node: NodeId,
        height: Height,
        digest: [u8; 32],
        replies: &[AppliedReply],
        now: TimeMs,
    ) {
        if self.tips.get(node.index()).is_none_or(Option::is_none) {
            return;
        }
        self.check_digest(node, height, digest, now);
        for r in replies {
            let hash = *blake3::hash(&r.bytes).as_bytes();
            match self.replies.get(&(height, r.client, r.seq)) {
                Some((other, who)) if *other != hash => {
                    let msg = format!(
                        "replies: at t={now}ms {node} answered seq {} at height {height} with \
                         other bytes than {who}",
                        r.seq
                    );
                    self.violation(msg);
                }
                Some(_) => {}
                None => {
                    self.replies.insert((height, r.client, r.seq), (hash, node));
                }
            }
        }
    }

    /// An honest node installed a snapshot: its state is after `header` now.
    pub fn on_install(&mut self, node: NodeId, header: BlockHeader, digest: [u8; 32], now: TimeMs) {
        let Some(Some(tip)) = self.tips.get(node.index()).copied() else {
            return;
        };
        if header.height <= tip.height {
            self.violation(format!(
                "install: at t={now}ms {node} installed a snapshot at height {} at or below its \
                 tip {}",
                header.height, tip.height
            ));
        }
        self.check_digest(node, header.height, digest, now);
        self.tips[node.index()] = Some(header);
    }

    /// An honest node saw these roots certified.
    pub fn on_certified(&mut self, node: NodeId, roots: &[(Height, [u8; 32])], now: TimeMs) {
        if self.tips.get(node.index()).is_none_or(Option::is_none) {
            return;
        }
        for (height, root) in roots {
            if let Some((digest, who)) = self.digests.get(height).copied()
                && digest != *root
            {
                self.violation(format!(
                    "certified root: at t={now}ms {node} saw a root certified for height {height} \
                     that differs from the state digest honest {who} has there"
                ));
            }
            match self.certified.get(height).copied() {
                Some((other, who)) if other != *root => self.violation(format!(
                    "certified root: at t={now}ms {node} saw a root certified for height {height} \
                     that differs from the one {who} saw certified"
                )),
                Some(_) => {}
                None => {
                    self.certified.insert(*height, (*root, node));
                }
            }
        }
    }

    fn check_digest(&mut self, node: NodeId, height: Height, digest: [u8; 32], now: TimeMs) {
        if let Some((root, who)) = self.certified.get(&height).copied()
            && root != digest
        {
            self.violation(format!(
                "certified root: at t={now}ms {node}'s state digest at height {height} differs \
                 from the root {who} saw certified there"
            ));
        }
        match self.digests.get(&height) {
            Some((other, who)) if *other != digest => {
                let msg = format!(
                    "state: at t={now}ms {node}'s state digest at height {height} differs from \
                     {who}'s"
                );
                self.violation(msg);
            }
            Some(_) => {}
            None => {
                self.digests.insert(height, (digest, node));
            }
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
                        "leader schedule: {node} computed {} as the leader of round {} after {:?}, but {who} computed {leader}",
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

    /// Liveness, checked when the run ends; `ends` are the honest nodes alive at the end.
    pub fn finish(&mut self, end_ms: TimeMs, ends: &[NodeEnd]) {
        for end in ends {
            if end.certified_height < self.payload_height_max {
                self.violation(format!(
                    "certified at idle: at the end ({end_ms}ms) {}'s highest certified root is \
                     at height {}, below the last payload height {}",
                    end.node, end.certified_height, self.payload_height_max
                ));
            }
            if !end.idle {
                self.violation(format!(
                    "certified at idle: at the end ({end_ms}ms) {} still has work (its round \
                     timer runs) though the clients stopped",
                    end.node
                ));
            }
        }
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

    pub fn violation(&mut self, msg: String) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClusterId;

    fn checker() -> Checker {
        let genesis = Block::genesis_header(&ClusterId::from_name("checker-tests"));
        Checker::new(genesis, &[true, true, true, false], 1_000)
    }

    fn reply(bytes: &[u8]) -> AppliedReply {
        AppliedReply {
            client: [1; 32],
            seq: 7,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn equal_states_and_replies_pass() {
        let mut c = checker();
        c.on_applied(NodeId(0), 5, [9; 32], &[reply(b"ok")], 10);
        c.on_applied(NodeId(1), 5, [9; 32], &[reply(b"ok")], 11);
        assert!(c.violations().is_empty(), "{:?}", c.violations());
    }

    #[test]
    fn a_different_digest_at_the_same_height_is_a_violation() {
        let mut c = checker();
        c.on_applied(NodeId(0), 5, [9; 32], &[], 10);
        c.on_applied(NodeId(1), 5, [8; 32], &[], 11);
        assert_eq!(c.violations().len(), 1);
        assert!(
            c.violations()[0].starts_with("state:"),
            "{:?}",
            c.violations()
        );
    }

    #[test]
    fn different_reply_bytes_for_one_request_are_a_violation() {
        let mut c = checker();
        c.on_applied(NodeId(0), 5, [9; 32], &[reply(b"ok")], 10);
        c.on_applied(NodeId(2), 5, [9; 32], &[reply(b"ko")], 11);
        assert_eq!(c.violations().len(), 1);
        assert!(
            c.violations()[0].starts_with("replies:"),
            "{:?}",
            c.violations()
        );
    }

    #[test]
    fn a_certified_root_that_no_honest_node_has_is_a_violation_either_order() {
        let mut c = checker();
        c.on_applied(NodeId(0), 1, [1; 32], &[], 10);
        c.on_certified(NodeId(1), &[(1, [1; 32])], 11);
        assert!(c.violations().is_empty());
        c.on_certified(NodeId(1), &[(2, [9; 32])], 12);
        assert!(c.violations().is_empty(), "no honest digest at 2 yet");
        c.on_applied(NodeId(0), 2, [2; 32], &[], 13);
        assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
        c.on_certified(NodeId(2), &[(1, [7; 32])], 14);
        assert!(c.violations().len() >= 2, "{:?}", c.violations());
    }

    #[test]
    fn a_byzantine_node_is_not_checked() {
        let mut c = checker();
        c.on_applied(NodeId(0), 5, [9; 32], &[reply(b"ok")], 10);
        c.on_applied(NodeId(3), 5, [8; 32], &[reply(b"ko")], 11);
        assert!(c.violations().is_empty());
    }

    #[test]
    fn an_install_moves_the_chain_tip_and_is_checked_against_the_digests() {
        let mut c = checker();
        c.on_applied(NodeId(0), 16, [9; 32], &[], 10);
        let header = BlockHeader {
            id: BlockId([16; 32]),
            parent: BlockId([15; 32]),
            round: 20,
            height: 16,
        };
        c.on_install(NodeId(1), header, [7; 32], 12);
        assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
        assert!(c.violations()[0].starts_with("state:"));
    }
}
