//! Byzantine behaviours on consensus messages: what a malicious member sends instead of (or
//! besides) what its honest core asks it to. Each behaviour signs with the member's real key,
//! so it attacks the protocol, not the signature scheme (except `BadSig`, which attacks the
//! verifier).
//!
//! Driven from outside: the simulator and the node both pass every message their core sends
//! through [`ByzState::outbound`] and every message and request it receives through
//! [`ByzState::inbound`] / [`ByzState::on_request`]. Whether this member leads a round is
//! read from what its core sends (a proposal), never recomputed from the leader schedule.
//! Invariants: every buffer is bounded (`REPLAY_BUFFER_MAX`, `REQUEST_STASH_MAX`); the only
//! randomness is the seeded [`SimRng`] it is given.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ByzKind;
use crate::crypto::{Committee, Signer, domain};
use crate::types::{
    Block, BlockId, ClientRequest, Message, NodeId, QuorumCert, Round, Sig, SyncInfo, SyncRequest,
    SyncResponse, Timeout, Vote,
};
use crate::util::SimRng;
use crate::wire::StateMsg;

const REPLAY_BUFFER_MAX: usize = 256;
/// Copies of each costly request a `FloodRequests` member sends every other member for each
/// message it receives (hundreds a second while the cluster commits).
const FLOOD_REQUESTS_PER_INPUT: usize = 2;
/// A `FloodRequests` member behaves until it has seen a block this high, so a test measures
/// the same cluster's commits before and during the flood.
pub const FLOOD_FROM_HEIGHT: u64 = 60;
const REQUEST_STASH_MAX: usize = 16;

pub struct ByzState {
    kind: ByzKind,
    signer: Signer,
    committee: Arc<Committee>,
    me: NodeId,
    rng: SimRng,
    requests: VecDeque<ClientRequest>,
    replay: VecDeque<Message>,
    highest_round: Round,
    /// QCs seen in proposals, with the height of the block each certifies (for `Fork`).
    old_qcs: VecDeque<(QuorumCert, u64)>,
    /// `FloodRequests`: the newest certified block seen (the target of its sync requests),
    /// the highest block height seen, and its own first timeout (replayed, long stale).
    flood_target: Option<BlockId>,
    height_seen: u64,
    first_timeout: Option<Timeout>,
}

impl ByzState {
    pub fn new(
        kind: ByzKind,
        secret: [u8; 32],
        committee: Arc<Committee>,
        me: NodeId,
        rng: SimRng,
    ) -> Self {
        let signer = Signer::new(secret, *committee.cluster());
        Self::with_signer(kind, signer, committee, me, rng)
    }

    /// Like [`ByzState::new`], with the member's signer (the node has no copy of the secret).
    pub fn with_signer(
        kind: ByzKind,
        signer: Signer,
        committee: Arc<Committee>,
        me: NodeId,
        rng: SimRng,
    ) -> Self {
        Self {
            kind,
            signer,
            committee,
            me,
            rng,
            requests: VecDeque::new(),
            replay: VecDeque::new(),
            highest_round: 0,
            old_qcs: VecDeque::new(),
            flood_target: None,
            height_seen: 0,
            first_timeout: None,
        }
    }

    fn others(&self) -> Vec<NodeId> {
        self.committee.members().filter(|n| *n != self.me).collect()
    }

    /// What actually goes out when the core sends `msg` to `to` (`None`: to everyone else).
    pub fn outbound(&mut self, to: Option<NodeId>, msg: Message) -> Vec<(NodeId, Message)> {
        if let Some(r) = msg.round() {
            self.highest_round = self.highest_round.max(r);
        }
        let targets = match to {
            Some(t) => vec![t],
            None => self.others(),
        };
        let mut out = Vec::new();
        match self.kind {
            ByzKind::Silent => {}
            ByzKind::Equivocate => match (&msg, to) {
                (Message::Proposal(b), None) => out.extend(self.equivocate(b, &targets)),
                _ => out.extend(targets.iter().map(|t| (*t, msg.clone()))),
            },
            ByzKind::BadSig => {
                let bad = corrupt(msg);
                out.extend(targets.iter().map(|t| (*t, bad.clone())));
            }
            ByzKind::Replay => {
                out.extend(targets.iter().map(|t| (*t, msg.clone())));
                self.remember(&msg);
                for _ in 0..2 {
                    if let Some(m) = self.random_old() {
                        let to = self.random_other();
                        out.push((to, m));
                    }
                }
            }
            ByzKind::Flood => {
                out.extend(targets.iter().map(|t| (*t, msg.clone())));
                let junk = self.flood_message();
                let to = self.random_other();
                out.push((to, junk));
            }
            ByzKind::Fork => match (&msg, to) {
                (Message::Proposal(b), None) if b.tc.is_some() => {
                    let blk = self.fork_from_older_qc(b);
                    out.extend(targets.iter().map(|t| (*t, Message::Proposal(blk.clone()))));
                }
                // Withholds the QCs it forms: one node learns of a commit, the rest do not.
                (Message::SyncInfo(_), None) => {
                    let one = self.random_other();
                    out.push((one, msg.clone()));
                }
                _ => out.extend(targets.iter().map(|t| (*t, msg.clone()))),
            },
            ByzKind::ForgeSync => match msg {
                Message::SyncResponse(r) => {
                    let blocks = r.blocks.iter().map(|b| self.reauthor(b)).collect();
                    let forged = Message::SyncResponse(SyncResponse { blocks });
                    out.extend(targets.iter().map(|t| (*t, forged.clone())));
                }
                _ => out.extend(targets.iter().map(|t| (*t, msg.clone()))),
            },
            ByzKind::BadTime => match msg {
                Message::Proposal(b) => {
                    let forged = Message::Proposal(self.bad_time(&b));
                    out.extend(targets.iter().map(|t| (*t, forged.clone())));
                }
                _ => out.extend(targets.iter().map(|t| (*t, msg.clone()))),
            },
            ByzKind::WrongRoot => match msg {
                Message::Proposal(b) if !b.state_roots.is_empty() => {
                    let forged = Message::Proposal(self.wrong_root(&b));
                    out.extend(targets.iter().map(|t| (*t, forged.clone())));
                }
                _ => out.extend(targets.iter().map(|t| (*t, msg.clone()))),
            },
            ByzKind::FloodRequests => {
                if let Message::Timeout(t) = &msg
                    && self.first_timeout.is_none()
                {
                    self.first_timeout = Some(t.clone());
                }
                out.extend(targets.iter().map(|t| (*t, msg.clone())));
            }
            ByzKind::DoubleVote
            | ByzKind::Twins
            | ByzKind::LieToClients
            | ByzKind::LieVerifiedReads
            | ByzKind::LieToProbes
            | ByzKind::ForgeSnapshot => {
                out.extend(targets.iter().map(|t| (*t, msg.clone())));
            }
        }
        out
    }

    /// Extra messages sent on receiving `msg` (before the core sees it).
    pub fn inbound(&mut self, msg: &Message) -> Vec<(NodeId, Message)> {
        match self.kind {
            ByzKind::Replay => {
                self.remember(msg);
                Vec::new()
            }
            ByzKind::DoubleVote => match msg {
                Message::Proposal(b) => self.vote_anyway(b),
                _ => Vec::new(),
            },
            ByzKind::Fork => {
                if let Message::Proposal(b) = msg {
                    self.remember_qc(b);
                }
                Vec::new()
            }
            ByzKind::FloodRequests => {
                if let Message::Proposal(b) = msg {
                    self.flood_target = Some(b.qc.block_id);
                    self.height_seen = self.height_seen.max(b.height);
                }
                self.request_flood()
            }
            _ => Vec::new(),
        }
    }

    /// `FloodRequests`: the consensus requests sent to every other member per input.
    fn request_flood(&mut self) -> Vec<(NodeId, Message)> {
        if self.height_seen < FLOOD_FROM_HEIGHT {
            return Vec::new();
        }
        let cluster = *self.committee.cluster();
        let mut one = vec![Message::SyncInfo(SyncInfo {
            high_qc: QuorumCert::genesis(&cluster),
            high_tc: None,
        })];
        if let Some(target) = self.flood_target {
            one.push(Message::SyncRequest(SyncRequest {
                target,
                committed_height: 0,
                max_blocks: u32::MAX,
            }));
        }
        if let Some(t) = &self.first_timeout {
            one.push(Message::Timeout(t.clone()));
        }
        let mut out = Vec::new();
        for to in self.others() {
            for _ in 0..FLOOD_REQUESTS_PER_INPUT {
                out.extend(one.iter().map(|m| (to, m.clone())));
            }
        }
        out
    }

    /// `FloodRequests`: snapshot chunk requests to every other member per input, for the
    /// snapshot every member saved last (at a multiple of `snapshot_interval_blocks` below
    /// the highest block seen), 1 MiB at a time.
    pub fn state_flood(
        &mut self,
        snapshot_interval_blocks: u64,
        chunk_len: u32,
    ) -> Vec<(NodeId, StateMsg)> {
        if self.kind != ByzKind::FloodRequests
            || snapshot_interval_blocks == 0
            || self.height_seen < FLOOD_FROM_HEIGHT
        {
            return Vec::new();
        }
        let saved = (self.height_seen / snapshot_interval_blocks).saturating_sub(1);
        let height = saved * snapshot_interval_blocks;
        let mut out = Vec::new();
        for to in self.others() {
            out.push((to, StateMsg::OfferRequest));
            for _ in 0..FLOOD_REQUESTS_PER_INPUT {
                out.push((
                    to,
                    StateMsg::ChunkRequest {
                        height,
                        offset: 0,
                        len: chunk_len,
                    },
                ));
            }
        }
        out
    }

    pub fn on_request(&mut self, req: &ClientRequest) {
        if self.requests.len() >= REQUEST_STASH_MAX {
            self.requests.pop_front();
        }
        self.requests.push_back(req.clone());
    }

    fn equivocate(&mut self, b: &Block, targets: &[NodeId]) -> Vec<(NodeId, Message)> {
        let mut alt = b.clone();
        if alt.payload.is_empty() {
            // With nothing to vary, both halves get the same block (no equivocation possible).
            if let Some(r) = self.requests.back() {
                alt.payload.push(r.clone());
            }
        } else {
            alt.payload.remove(0);
        }
        let alt_id = alt.compute_id();
        alt.signature = self
            .signer
            .sign(domain::PROPOSAL, &domain::proposal_body(&alt_id));
        // Both blocks to everyone, in opposite orders for the two halves: each honest node votes
        // for whichever arrives first, and a node that restarts in between is asked again.
        let mut out = Vec::with_capacity(targets.len() * 2);
        for (i, t) in targets.iter().enumerate() {
            let (first, second) = if i % 2 == 0 { (b, &alt) } else { (&alt, b) };
            out.push((*t, Message::Proposal(first.clone())));
            if alt_id != b.compute_id() {
                out.push((*t, Message::Proposal(second.clone())));
            }
        }
        out
    }

    fn remember_qc(&mut self, b: &Block) {
        if b.qc.round == 0 || self.old_qcs.iter().any(|(q, _)| q.round == b.qc.round) {
            return;
        }
        if self.old_qcs.len() >= REQUEST_STASH_MAX {
            self.old_qcs.pop_front();
        }
        self.old_qcs.push_back((b.qc.clone(), b.height - 1));
    }

    /// The same round, TC and payload, but built on an older certified block.
    fn fork_from_older_qc(&mut self, b: &Block) -> Block {
        // The highest QC below its own: the block that may just have committed is the one it
        // tries to orphan, while staying above what most nodes have committed.
        let Some((qc, height)) = self
            .old_qcs
            .iter()
            .filter(|(q, _)| q.round < b.qc.round)
            .max_by_key(|(q, _)| q.round)
            .cloned()
        else {
            return b.clone();
        };
        let mut fork = b.clone();
        fork.qc = qc;
        fork.height = height + 1;
        let id = fork.compute_id();
        fork.signature = self
            .signer
            .sign(domain::PROPOSAL, &domain::proposal_body(&id));
        fork
    }

    /// Votes for `b` whether or not its core would, and for a sibling of `b` in the same
    /// round. Sent to every other member: the next round's leader is among them, whoever the
    /// schedule picks.
    fn vote_anyway(&mut self, b: &Block) -> Vec<(NodeId, Message)> {
        let ids = [b.compute_id(), self.variant(b).compute_id()];
        let others = self.others();
        let mut out = Vec::with_capacity(others.len() * ids.len());
        for id in ids {
            let vote = Vote {
                block_id: id,
                round: b.round,
                voter: self.me,
                signature: self
                    .signer
                    .sign(domain::VOTE, &domain::vote_body(&id, b.round)),
            };
            out.extend(others.iter().map(|t| (*t, Message::Vote(vote.clone()))));
        }
        out
    }

    /// A block of the same round and parent as `b` but another id: other payload if it can
    /// vary one, else one height further (a block no honest leader proposed).
    fn variant(&self, b: &Block) -> Block {
        let mut alt = b.clone();
        if !alt.payload.is_empty() {
            alt.payload.remove(0);
        } else if let Some(r) = self.requests.back() {
            alt.payload.push(r.clone());
        } else {
            alt.height += 1;
        }
        alt
    }

    /// `b` changed and re-signed as this member's own block: a valid signature, but not the
    /// block the chain's QCs certify.
    fn reauthor(&self, b: &Block) -> Block {
        let mut forged = self.variant(b);
        forged.author = self.me;
        let id = forged.compute_id();
        forged.signature = self
            .signer
            .sign(domain::PROPOSAL, &domain::proposal_body(&id));
        forged
    }

    /// `b` with one byte of its last carried state root flipped, re-signed: a proposal that
    /// claims a state no honest node has.
    fn wrong_root(&self, b: &Block) -> Block {
        let mut forged = b.clone();
        if let Some((_, root)) = forged.state_roots.last_mut() {
            root[0] ^= 0x5a;
        }
        let id = forged.compute_id();
        forged.signature = self
            .signer
            .sign(domain::PROPOSAL, &domain::proposal_body(&id));
        forged
    }

    /// `b` re-stamped, alternately an hour ahead and at 0 (never above a parent), re-signed.
    fn bad_time(&mut self, b: &Block) -> Block {
        const AHEAD_MS: u64 = 3_600_000;
        let mut forged = b.clone();
        forged.timestamp_ms = if self.rng.chance(0.5) {
            b.timestamp_ms.saturating_add(AHEAD_MS)
        } else {
            0
        };
        let id = forged.compute_id();
        forged.signature = self
            .signer
            .sign(domain::PROPOSAL, &domain::proposal_body(&id));
        forged
    }

    fn flood_message(&mut self) -> Message {
        let far = self.highest_round + 1_000_000 + self.rng.range(0, 1_000_000);
        let cluster = *self.committee.cluster();
        match self.rng.range(0, 2) {
            0 => {
                let block_id = BlockId([self.rng.next_u64() as u8; 32]);
                Message::Vote(Vote {
                    block_id,
                    round: far,
                    voter: self.me,
                    signature: self
                        .signer
                        .sign(domain::VOTE, &domain::vote_body(&block_id, far)),
                })
            }
            1 => Message::Timeout(Timeout {
                round: far,
                high_qc: QuorumCert::genesis(&cluster),
                author: self.me,
                signature: self
                    .signer
                    .sign(domain::TIMEOUT, &domain::timeout_body(far, 0)),
            }),
            _ => {
                // Unjustified: its QC is genesis, its round far away. The verifier must refuse.
                let mut b = Block {
                    round: far,
                    height: 1,
                    timestamp_ms: 0,
                    qc: QuorumCert::genesis(&cluster),
                    tc: None,
                    roots_after: 0,
                    state_roots: Vec::new(),
                    payload: Vec::new(),
                    author: self.me,
                    signature: Sig::ZERO,
                };
                let id = b.compute_id();
                b.signature = self
                    .signer
                    .sign(domain::PROPOSAL, &domain::proposal_body(&id));
                Message::Proposal(b)
            }
        }
    }

    fn remember(&mut self, msg: &Message) {
        if self.replay.len() >= REPLAY_BUFFER_MAX {
            self.replay.pop_front();
        }
        self.replay.push_back(msg.clone());
    }

    fn random_old(&mut self) -> Option<Message> {
        if self.replay.is_empty() {
            return None;
        }
        let i = self.rng.range(0, self.replay.len() as u64 - 1) as usize;
        self.replay.get(i).cloned()
    }

    fn random_other(&mut self) -> NodeId {
        let others = self.others();
        *self.rng.pick(&others).unwrap_or(&self.me)
    }
}

/// Flips a bit in every signature the message carries itself.
fn corrupt(msg: Message) -> Message {
    fn flip(s: &mut Sig) {
        s.0[17] ^= 0x40;
    }
    match msg {
        Message::Proposal(mut b) => {
            flip(&mut b.signature);
            Message::Proposal(b)
        }
        Message::Vote(mut v) => {
            flip(&mut v.signature);
            Message::Vote(v)
        }
        Message::Timeout(mut t) => {
            flip(&mut t.signature);
            Message::Timeout(t)
        }
        other => other,
    }
}
