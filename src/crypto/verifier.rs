//! The gate every outside message passes before the core sees it.
//!
//! [`Verifier`] decodes nothing itself (the codec already validated the bytes); it checks a
//! message's structure against the committee (canonical certificates, members as authors,
//! limits) and every signature inside it, in one batch across many messages. Only this module
//! can build a [`Verified`] value, so the core cannot be handed an unchecked message by
//! mistake. The checks are stateless: they depend only on the committee, the limits and the
//! client policy, so any number of verifier threads can share one `Verifier`.
//!
//! What it already knows it does not check again: the seen-cache remembers digests of
//! requests, QCs, votes and timeouts whose signatures verified (each digest covers the
//! signature bytes and names the signed message and the signer, whose key the committee fixes
//! for the verifier's life). A QC or TC is then checked only for the signatures this node has
//! not verified before, typically just its own vote, since votes go to every member; one
//! unknown bad signature still refuses it. Client keys under `allow = "any"` are decompressed
//! once and kept in a bounded cache.
//!
//! Certified history is judged by its signatures, not by today's client policy: a block that
//! arrives in a sync response was accepted by a quorum when it was proposed (the core inserts a
//! synced block only when a verified QC certifies it: its successor's in the response, or the
//! QC that made the requester want it). After a client key is rotated out of `[clients]
//! allow`, a lagging node must still accept the old blocks that carry it; it re-checks their
//! signatures only. Fresh proposals and client submissions still need today's policy, and a
//! request admitted only as history never enters the seen-cache, so the cache cannot carry it
//! into a proposal.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use parking_lot::Mutex;

use super::seen_cache::SeenCache;
use super::{Committee, SigBatch, domain};
use crate::types::{
    Block, BlockId, ClientKey, ClientRequest, Message, NodeId, QuorumCert, SyncInfo, SyncRequest,
    Timeout, TimeoutCert, Vote,
};

/// A value that passed [`Verifier`]. Only the verifier constructs it.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A verified message, with the block ids the verifier computed (so nobody hashes twice).
#[derive(Debug, Clone)]
pub enum VerifiedMessage {
    /// Boxed: a block is far larger than the other messages (its certificates and roots).
    Proposal {
        id: BlockId,
        block: Box<Block>,
    },
    Vote(Vote),
    Timeout(Timeout),
    SyncInfo(SyncInfo),
    SyncRequest(SyncRequest),
    SyncResponse {
        blocks: Vec<(BlockId, Block)>,
    },
}

/// Size limits enforced before anything is stored.
#[derive(Debug, Clone, Copy)]
pub struct VerifierLimits {
    pub block_requests_max: usize,
    pub block_bytes_max: usize,
    pub request_ops_bytes_max: usize,
    pub sync_blocks_max: usize,
}

impl Default for VerifierLimits {
    fn default() -> Self {
        Self {
            block_requests_max: 1000,
            block_bytes_max: 4 * 1024 * 1024,
            request_ops_bytes_max: 1024 * 1024,
            sync_blocks_max: 64,
        }
    }
}

/// Which clients may submit requests.
#[derive(Debug, Clone)]
pub enum ClientPolicy {
    /// Development mode: any non-weak key.
    Any,
    /// Only these keys.
    AllowList(HashMap<ClientKey, VerifyingKey>),
}

impl ClientPolicy {
    /// Builds an allow-list, refusing invalid or weak keys.
    pub fn allow_list(keys: &[[u8; 32]]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let key = VerifyingKey::from_bytes(k)
                .map_err(|_| format!("client key {i} is not a valid Ed25519 point"))?;
            if key.is_weak() {
                return Err(format!("client key {i} is a weak (small-order) point"));
            }
            map.insert(ClientKey(*k), key);
        }
        Ok(Self::AllowList(map))
    }

    /// The key of a request inside certified history, and whether today's policy admits the
    /// client (only then may its digest be cached). A client no longer allowed is checked
    /// against its own key, which must still be a valid, non-weak point.
    fn historical_key(&self, client: &ClientKey) -> Result<(VerifyingKey, bool), VerifyError> {
        match self.key(client) {
            Ok(key) => Ok((key, true)),
            Err(VerifyError::NotAuthorised(_)) => usable_key(client).map(|k| (k, false)),
            Err(e) => Err(e),
        }
    }

    fn key(&self, client: &ClientKey) -> Result<VerifyingKey, VerifyError> {
        match self {
            ClientPolicy::AllowList(map) => map
                .get(client)
                .copied()
                .ok_or(VerifyError::NotAuthorised(*client)),
            ClientPolicy::Any => usable_key(client),
        }
    }
}

/// A client key decoded as a non-weak Ed25519 point.
fn usable_key(client: &ClientKey) -> Result<VerifyingKey, VerifyError> {
    match VerifyingKey::from_bytes(&client.0) {
        Ok(k) if !k.is_weak() => Ok(k),
        _ => Err(VerifyError::Malformed(
            "client key is not a usable Ed25519 key",
        )),
    }
}

/// Decompressed client keys under `allow = "any"` (decompression is a field exponentiation,
/// as costly as a good part of a verification). Bounded: when full it is cleared, and a
/// miss only decompresses again. Only usable keys are kept.
struct KeyCache {
    keys: Mutex<HashMap<ClientKey, VerifyingKey>>,
}

/// Client keys kept decompressed.
const CLIENT_KEYS_CACHED_MAX: usize = 4096;

impl KeyCache {
    fn new() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, client: &ClientKey) -> Result<VerifyingKey, VerifyError> {
        if let Some(k) = self.keys.lock().get(client) {
            return Ok(*k);
        }
        let key = usable_key(client)?;
        let mut keys = self.keys.lock();
        if keys.len() >= CLIENT_KEYS_CACHED_MAX {
            keys.clear();
        }
        keys.insert(*client, key);
        Ok(key)
    }
}

/// Why a message was refused. Counted by kind; never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    Malformed(&'static str),
    UnknownSigner(NodeId),
    TooLarge(&'static str),
    NotAuthorised(ClientKey),
    BadSignature(&'static str),
}

impl VerifyError {
    /// A stable label for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::UnknownSigner(_) => "unknown_signer",
            VerifyError::TooLarge(_) => "too_large",
            VerifyError::NotAuthorised(_) => "not_authorised",
            VerifyError::BadSignature(_) => "bad_signature",
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed(why) => write!(f, "malformed message: {why}"),
            VerifyError::UnknownSigner(n) => write!(f, "signer {n} is not a cluster member"),
            VerifyError::TooLarge(what) => write!(f, "{what} exceeds its limit"),
            VerifyError::NotAuthorised(c) => write!(f, "client {c:?} is not authorised"),
            VerifyError::BadSignature(what) => write!(f, "invalid signature on {what}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Stateless checker shared by the verifier threads.
pub struct Verifier {
    committee: Arc<Committee>,
    limits: VerifierLimits,
    clients: ClientPolicy,
    seen: SeenCache,
    /// Used only under `ClientPolicy::Any` (an allow-list holds decompressed keys already).
    client_keys: KeyCache,
}

/// Signatures of several messages gathered into one batch; `owner[i]` says whose the i-th is.
struct Gathered {
    batch: SigBatch,
    owner: Vec<(usize, &'static str)>,
    /// Digests to remember once everything they cover verified.
    digests: Vec<(usize, [u8; 32])>,
}

/// Where a block comes from, which decides whose client policy its requests answer to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Provenance {
    /// A proposal or a fresh submission: today's policy.
    Proposed,
    /// Certified history (a sync response): the policy of the quorum that certified it, so
    /// only the signatures are checked again.
    Certified,
}

/// Rounds and heights above this are refused, so no arithmetic on them can overflow (at one
/// round per millisecond this is millions of years away).
pub const ROUND_MAX: u64 = u64::MAX / 4;

/// Entries of the seen-cache kept per verifier; enough for several blocks of requests and QCs.
const SEEN_CACHE_ENTRIES: usize = 65_536;

impl Verifier {
    pub fn new(committee: Arc<Committee>, limits: VerifierLimits, clients: ClientPolicy) -> Self {
        Self {
            committee,
            limits,
            clients,
            seen: SeenCache::new(SEEN_CACHE_ENTRIES),
            client_keys: KeyCache::new(),
        }
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn limits(&self) -> &VerifierLimits {
        &self.limits
    }

    /// Verifies one message.
    pub fn verify_message(&self, msg: Message) -> Result<Verified<VerifiedMessage>, VerifyError> {
        self.verify_messages(vec![msg])
            .pop()
            .unwrap_or(Err(VerifyError::Malformed("empty batch")))
    }

    /// Verifies many messages with one signature batch; results are in input order.
    pub fn verify_messages(
        &self,
        msgs: Vec<Message>,
    ) -> Vec<Result<Verified<VerifiedMessage>, VerifyError>> {
        let mut g = Gathered {
            batch: SigBatch::new(),
            owner: Vec::new(),
            digests: Vec::new(),
        };
        let mut results: Vec<Result<VerifiedMessage, VerifyError>> = msgs
            .into_iter()
            .enumerate()
            .map(|(i, m)| self.check_message(i, m, &mut g))
            .collect();
        self.finish(&mut g, &mut results);
        results.into_iter().map(|r| r.map(Verified)).collect()
    }

    /// Verifies client requests with one signature batch; results are in input order.
    pub fn verify_requests(
        &self,
        reqs: Vec<ClientRequest>,
    ) -> Vec<Result<Verified<ClientRequest>, VerifyError>> {
        let mut g = Gathered {
            batch: SigBatch::new(),
            owner: Vec::new(),
            digests: Vec::new(),
        };
        let mut results: Vec<Result<ClientRequest, VerifyError>> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                self.check_request(i, &r, Provenance::Proposed, &mut g)
                    .map(|()| r)
            })
            .collect();
        self.finish(&mut g, &mut results);
        results.into_iter().map(|r| r.map(Verified)).collect()
    }

    fn finish<T>(&self, g: &mut Gathered, results: &mut [Result<T, VerifyError>]) {
        if let Err(bad) = g.batch.verify() {
            for idx in bad {
                let (owner, what) = g.owner[idx];
                if results[owner].is_ok() {
                    results[owner] = Err(VerifyError::BadSignature(what));
                }
            }
        }
        for (owner, digest) in g.digests.drain(..) {
            if results[owner].is_ok() {
                self.seen.insert(digest);
            }
        }
    }

    fn check_message(
        &self,
        i: usize,
        msg: Message,
        g: &mut Gathered,
    ) -> Result<VerifiedMessage, VerifyError> {
        match msg {
            Message::Proposal(block) => {
                let id = self.check_block(i, &block, Provenance::Proposed, g)?;
                Ok(VerifiedMessage::Proposal {
                    id,
                    block: Box::new(block),
                })
            }
            Message::Vote(v) => {
                let key = self.member_key(v.voter)?;
                if v.round == 0 || v.round > ROUND_MAX {
                    return Err(VerifyError::Malformed("vote round out of range"));
                }
                let digest = vote_sig_digest(&v.block_id, v.round, v.voter, &v.signature);
                if !self.seen.contains(&digest) {
                    let body = domain::vote_body(&v.block_id, v.round);
                    self.push(g, i, "vote", domain::VOTE, &body, &v.signature, key);
                    g.digests.push((i, digest));
                }
                Ok(VerifiedMessage::Vote(v))
            }
            Message::Timeout(t) => {
                let key = self.member_key(t.author)?;
                if t.round == 0 || t.round > ROUND_MAX || t.high_qc.round >= t.round {
                    return Err(VerifyError::Malformed("timeout round not above its QC"));
                }
                let digest = timeout_sig_digest(t.round, t.high_qc.round, t.author, &t.signature);
                if !self.seen.contains(&digest) {
                    let body = domain::timeout_body(t.round, t.high_qc.round);
                    self.push(g, i, "timeout", domain::TIMEOUT, &body, &t.signature, key);
                    g.digests.push((i, digest));
                }
                self.check_qc(i, &t.high_qc, g)?;
                Ok(VerifiedMessage::Timeout(t))
            }
            Message::SyncInfo(s) => {
                self.check_qc(i, &s.high_qc, g)?;
                if let Some(tc) = &s.high_tc {
                    self.check_tc(i, tc, g)?;
                }
                Ok(VerifiedMessage::SyncInfo(s))
            }
            Message::SyncRequest(r) => Ok(VerifiedMessage::SyncRequest(r)),
            Message::SyncResponse(r) => self.check_sync_response(i, r.blocks, g),
        }
    }

    fn check_sync_response(
        &self,
        i: usize,
        blocks: Vec<Block>,
        g: &mut Gathered,
    ) -> Result<VerifiedMessage, VerifyError> {
        if blocks.len() > self.limits.sync_blocks_max {
            return Err(VerifyError::TooLarge("sync response"));
        }
        let mut out: Vec<(BlockId, Block)> = Vec::with_capacity(blocks.len());
        for block in blocks {
            let id = self.check_block(i, &block, Provenance::Certified, g)?;
            if let Some((prev_id, prev)) = out.last() {
                // Each block must be the certified parent of the next: the chain is then
                // certified link by link, and the requester checks the top against its target.
                if block.qc.block_id != *prev_id || block.height != prev.height.saturating_add(1) {
                    return Err(VerifyError::Malformed("sync response is not one chain"));
                }
            }
            out.push((id, block));
        }
        Ok(VerifiedMessage::SyncResponse { blocks: out })
    }

    fn check_block(
        &self,
        i: usize,
        b: &Block,
        provenance: Provenance,
        g: &mut Gathered,
    ) -> Result<BlockId, VerifyError> {
        let key = self.member_key(b.author)?;
        if b.round == 0 || b.height == 0 || b.round > ROUND_MAX || b.height > ROUND_MAX {
            return Err(VerifyError::Malformed("block round or height out of range"));
        }
        // Whether the author leads this round depends on the chain (`consensus::leader`): the
        // core checks it. Here the author need only be a member, which `member_key` checked.
        // b.round <= ROUND_MAX and both certificate rounds must be below it: no overflow.
        let by_qc = b.qc.round < b.round && b.qc.round + 1 == b.round;
        let by_tc =
            b.tc.as_ref()
                .is_some_and(|tc| tc.round < b.round && tc.round + 1 == b.round);
        if !(by_qc || by_tc) || b.qc.round >= b.round {
            return Err(VerifyError::Malformed(
                "block round is not justified by its QC or TC",
            ));
        }
        if b.tc.is_some() && !by_tc {
            return Err(VerifyError::Malformed(
                "block carries a TC for another round",
            ));
        }
        if b.state_roots.len() > crate::types::STATE_ROOTS_MAX {
            return Err(VerifyError::TooLarge("block state roots"));
        }
        if !b.state_roots_well_formed() {
            return Err(VerifyError::Malformed(
                "block state roots not strictly increasing above its parent chain's, or not below its grandparent",
            ));
        }
        if b.payload.len() > self.limits.block_requests_max {
            return Err(VerifyError::TooLarge("block request count"));
        }
        if b.payload_bytes() > self.limits.block_bytes_max {
            return Err(VerifyError::TooLarge("block payload bytes"));
        }
        for req in &b.payload {
            self.check_request(i, req, provenance, g)?;
        }
        self.check_qc(i, &b.qc, g)?;
        if let Some(tc) = &b.tc {
            self.check_tc(i, tc, g)?;
        }
        let id = b.compute_id();
        let body = domain::proposal_body(&id);
        self.push(g, i, "proposal", domain::PROPOSAL, &body, &b.signature, key);
        Ok(id)
    }

    fn check_request(
        &self,
        i: usize,
        r: &ClientRequest,
        provenance: Provenance,
        g: &mut Gathered,
    ) -> Result<(), VerifyError> {
        if r.ops.len() > self.limits.request_ops_bytes_max {
            return Err(VerifyError::TooLarge("request ops"));
        }
        // A cached digest passed today's client policy and its signature when it was inserted
        // (the policy is fixed for this verifier's life), so a hit skips both, including the
        // key decompression.
        let digest = r.digest().0;
        if self.seen.contains(&digest) {
            return Ok(());
        }
        let (key, admitted_today) = match provenance {
            Provenance::Proposed => (self.client_key(&r.client)?, true),
            Provenance::Certified => self.clients.historical_key(&r.client)?,
        };
        let body = domain::request_body(&r.client, r.session, r.seq, &r.ops);
        self.push(
            g,
            i,
            "client request",
            domain::REQUEST,
            &body,
            &r.signature,
            key,
        );
        if admitted_today {
            g.digests.push((i, digest));
        }
        Ok(())
    }

    fn check_qc(&self, i: usize, qc: &QuorumCert, g: &mut Gathered) -> Result<(), VerifyError> {
        if qc.round > ROUND_MAX {
            return Err(VerifyError::Malformed("QC round out of range"));
        }
        if qc.round == 0 {
            let genesis = QuorumCert::genesis(self.committee.cluster());
            return if *qc == genesis {
                Ok(())
            } else {
                Err(VerifyError::Malformed(
                    "round-0 QC that is not the genesis QC",
                ))
            };
        }
        self.check_signer_set(qc.votes.iter().map(|v| v.node), "QC")?;
        let digest = qc_digest(qc);
        if self.seen.contains(&digest) {
            return Ok(());
        }
        // Only the signatures this node has not verified before (as votes, or in another QC);
        // the QC's digest is remembered once all of them are known good.
        let body = domain::vote_body(&qc.block_id, qc.round);
        for v in &qc.votes {
            let key = self.member_key(v.node)?;
            let vote = vote_sig_digest(&qc.block_id, qc.round, v.node, &v.sig);
            if !self.seen.contains(&vote) {
                self.push(g, i, "QC vote", domain::VOTE, &body, &v.sig, key);
                g.digests.push((i, vote));
            }
        }
        g.digests.push((i, digest));
        Ok(())
    }

    fn check_tc(&self, i: usize, tc: &TimeoutCert, g: &mut Gathered) -> Result<(), VerifyError> {
        if tc.round == 0 || tc.round > ROUND_MAX {
            return Err(VerifyError::Malformed("TC round out of range"));
        }
        self.check_signer_set(tc.timeouts.iter().map(|t| t.node), "TC")?;
        if tc.timeouts.iter().any(|t| t.high_qc_round >= tc.round) {
            return Err(VerifyError::Malformed(
                "TC entry with a QC round not below the TC",
            ));
        }
        if tc.high_qc.round != tc.max_high_qc_round() {
            return Err(VerifyError::Malformed(
                "TC high QC is not the highest reported",
            ));
        }
        for t in &tc.timeouts {
            let key = self.member_key(t.node)?;
            let timeout = timeout_sig_digest(tc.round, t.high_qc_round, t.node, &t.sig);
            if !self.seen.contains(&timeout) {
                let body = domain::timeout_body(tc.round, t.high_qc_round);
                self.push(g, i, "TC timeout", domain::TIMEOUT, &body, &t.sig, key);
                g.digests.push((i, timeout));
            }
        }
        self.check_qc(i, &tc.high_qc, g)
    }

    /// Signers must be members, strictly ascending (so distinct), and a quorum.
    fn check_signer_set(
        &self,
        nodes: impl Iterator<Item = NodeId>,
        what: &'static str,
    ) -> Result<(), VerifyError> {
        let mut count = 0usize;
        let mut prev: Option<NodeId> = None;
        for node in nodes {
            if !self.committee.contains(node) {
                return Err(VerifyError::UnknownSigner(node));
            }
            if prev.is_some_and(|p| p >= node) {
                return Err(VerifyError::Malformed(
                    "certificate signers not strictly ascending",
                ));
            }
            prev = Some(node);
            count += 1;
        }
        if count < self.committee.quorum() {
            return Err(VerifyError::Malformed(match what {
                "QC" => "QC without a quorum of votes",
                _ => "TC without a quorum of timeouts",
            }));
        }
        Ok(())
    }

    /// Today's key of `client`, from the cache under `allow = "any"`.
    fn client_key(&self, client: &ClientKey) -> Result<VerifyingKey, VerifyError> {
        match &self.clients {
            ClientPolicy::Any => self.client_keys.get(client),
            allow_list => allow_list.key(client),
        }
    }

    fn member_key(&self, node: NodeId) -> Result<VerifyingKey, VerifyError> {
        self.committee
            .key(node)
            .copied()
            .ok_or(VerifyError::UnknownSigner(node))
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        g: &mut Gathered,
        owner: usize,
        what: &'static str,
        tag: &[u8],
        body: &[u8],
        sig: &crate::types::Sig,
        key: VerifyingKey,
    ) {
        let msg = domain::signing_bytes(tag, self.committee.cluster(), body);
        g.batch.push(msg, sig, key);
        g.owner.push((owner, what));
    }
}

/// Names a QC including its signatures, so a cache hit vouches for exactly these bytes.
fn qc_digest(qc: &QuorumCert) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"bftd/qc-digest/v1");
    h.update(&qc.block_id.0);
    h.update(&qc.round.to_le_bytes());
    for v in &qc.votes {
        h.update(&v.node.0.to_le_bytes());
        h.update(&v.sig.0);
    }
    *h.finalize().as_bytes()
}

/// Names one member's signature on a vote for `(block_id, round)`: the signed message and the
/// key (the committee's, fixed for the verifier's life) follow from these, so a cache hit
/// vouches for exactly this signature on exactly this message.
fn vote_sig_digest(
    block_id: &BlockId,
    round: u64,
    node: NodeId,
    sig: &crate::types::Sig,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"bftd/vote-sig-digest/v1");
    h.update(&block_id.0);
    h.update(&round.to_le_bytes());
    h.update(&node.0.to_le_bytes());
    h.update(&sig.0);
    *h.finalize().as_bytes()
}

/// Names one member's signature on a timeout of `round` reporting `high_qc_round`.
fn timeout_sig_digest(
    round: u64,
    high_qc_round: u64,
    node: NodeId,
    sig: &crate::types::Sig,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"bftd/timeout-sig-digest/v1");
    h.update(&round.to_le_bytes());
    h.update(&high_qc_round.to_le_bytes());
    h.update(&node.0.to_le_bytes());
    h.update(&sig.0);
    *h.finalize().as_bytes()
}

#[cfg(test)]
#[path = "verifier_tests.rs"]
mod tests;
