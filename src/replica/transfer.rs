//! Catching up by snapshot: the decisions of the lagging side of state transfer. No I/O: the
//! bytes of a download leave as steps for the shell to write.
//!
//! Triggers: the core is fetching blocks but its committed height has not moved for
//! `after_ms` (the peers no longer hold the blocks it needs); or the node's state is diverged
//! from the certified roots (*repair*: the replica stops applying commits, so the state stays
//! below the peers' next snapshot). Then:
//! 1. ask every peer for its newest snapshot offer (again every `OFFER_RETRY_MS`);
//! 2. trust an offer whose state root equals the root the chain certified for its height
//!    (known here when the node follows the chain, always so in a repair), from any one peer;
//!    without a certified root (a node that lags far), only when `f + 1` distinct peers sent
//!    the identical offer (same height, block, state digest and size), so at least one honest
//!    node vouches for it; a repair trusts certified roots only. An offer must be above the
//!    committed height (in a repair: above the state's applied height); an offer whose root
//!    differs from the certified one is never trusted, whoever sends it;
//! 3. download it chunk by chunk from one of those peers (the next one on a timeout or an
//!    empty chunk); each accepted chunk is a [`TransferStep::Append`] at the next offset;
//! 4. when the agreed size is reached, [`TransferStep::Install`]: the shell recomputes the
//!    file's root and checks it against the trusted offer's (so the certified one) and installs
//!    it, then reports back. A failed install bans the peers that served the file for that
//!    height: they are not asked again for it.
//!
//! Bounded: one download at a time, chunks of at most [`CHUNK_BYTES_MAX`], a file no larger
//! than the agreed size, offers from at most one entry per member, `BANNED_MAX` bans.

use std::collections::{HashMap, VecDeque};

use crate::types::NodeId;
use crate::wire::{SnapshotOffer, StateMsg};

/// Largest snapshot chunk served or asked for.
pub const CHUNK_BYTES_MAX: u32 = 1 << 20;
const OFFER_RETRY_MS: u64 = 2_000;
const CHUNK_TIMEOUT_MS: u64 = 5_000;
/// `(peer, snapshot height)` pairs that served a bad file, newest kept.
const BANNED_MAX: usize = 64;

/// What the shell must do for the state transfer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferStep {
    Broadcast(StateMsg),
    Send(NodeId, StateMsg),
    /// Start a new download file for `offer` (truncating any earlier one).
    Begin(SnapshotOffer),
    /// Append `bytes` at `offset` (always the current end) of the download file.
    Append {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The file is complete: make it durable, check it against `offer` and install it.
    Install(SnapshotOffer),
}

enum Phase {
    Idle,
    Collecting {
        offers: HashMap<NodeId, SnapshotOffer>,
        asked_ms: u64,
    },
    Downloading {
        offer: SnapshotOffer,
        sources: Vec<NodeId>,
        source: usize,
        offset: u64,
        asked_ms: u64,
        /// Peers that served chunks of this file.
        served_by: Vec<NodeId>,
    },
    Installing {
        height: u64,
        served_by: Vec<NodeId>,
    },
}

pub struct StateTransfer {
    f: usize,
    after_ms: u64,
    last_height: u64,
    last_move_ms: u64,
    /// The state's applied height (a repair needs a snapshot above it).
    applied: u64,
    repair: bool,
    banned: VecDeque<(NodeId, u64)>,
    phase: Phase,
}

impl StateTransfer {
    pub fn new(f: usize, after_ms: u64, committed: u64, now_ms: u64) -> Self {
        Self {
            f,
            after_ms,
            last_height: committed,
            last_move_ms: now_ms,
            applied: 0,
            repair: false,
            banned: VecDeque::new(),
            phase: Phase::Idle,
        }
    }

    pub fn is_installing(&self) -> bool {
        matches!(self.phase, Phase::Installing { .. })
    }

    /// Notes the state's applied height.
    pub fn observe_applied(&mut self, applied: u64) {
        self.applied = applied;
    }

    /// Notes the core's committed height and whether the state needs a repair (called after
    /// every step of the replica).
    pub fn observe(&mut self, now_ms: u64, committed: u64, repair: bool) {
        self.repair = repair;
        if committed != self.last_height {
            self.last_height = committed;
            self.last_move_ms = now_ms;
            if !repair && matches!(self.phase, Phase::Collecting { .. }) {
                self.phase = Phase::Idle; // blocks flow again
            }
        }
    }

    /// When [`StateTransfer::tick`] next has something to do, if `syncing` stays as it is.
    pub fn next_deadline_ms(&self, syncing: bool, repair: bool) -> Option<u64> {
        match &self.phase {
            Phase::Idle if repair => Some(self.last_move_ms),
            Phase::Idle => syncing.then(|| self.last_move_ms.saturating_add(self.after_ms)),
            Phase::Collecting { asked_ms, .. } => Some(asked_ms.saturating_add(OFFER_RETRY_MS)),
            Phase::Downloading { asked_ms, .. } => Some(asked_ms.saturating_add(CHUNK_TIMEOUT_MS)),
            Phase::Installing { .. } => None,
        }
    }

    /// Retries and the trigger, given whether the core is fetching blocks.
    pub fn tick(&mut self, now_ms: u64, syncing: bool, repair: bool) -> Vec<TransferStep> {
        self.repair = repair;
        match &mut self.phase {
            Phase::Idle if repair => {
                log::warn!(
                    "state diverged at applied height {}: asking peers for a snapshot whose root the chain certified",
                    self.applied
                );
                self.phase = Phase::Collecting {
                    offers: HashMap::new(),
                    asked_ms: now_ms,
                };
                vec![TransferStep::Broadcast(StateMsg::OfferRequest)]
            }
            Phase::Idle => {
                if syncing && now_ms.saturating_sub(self.last_move_ms) >= self.after_ms {
                    log::info!(
                        "committed height {} has not moved for {} ms while fetching blocks: asking peers for a snapshot",
                        self.last_height,
                        now_ms - self.last_move_ms
                    );
                    self.phase = Phase::Collecting {
                        offers: HashMap::new(),
                        asked_ms: now_ms,
                    };
                    return vec![TransferStep::Broadcast(StateMsg::OfferRequest)];
                }
                Vec::new()
            }
            Phase::Collecting { asked_ms, .. } => {
                if now_ms.saturating_sub(*asked_ms) >= OFFER_RETRY_MS {
                    *asked_ms = now_ms;
                    return vec![TransferStep::Broadcast(StateMsg::OfferRequest)];
                }
                Vec::new()
            }
            Phase::Downloading {
                sources,
                source,
                offset,
                asked_ms,
                offer,
                ..
            } => {
                if now_ms.saturating_sub(*asked_ms) < CHUNK_TIMEOUT_MS {
                    return Vec::new();
                }
                *source = (*source + 1) % sources.len();
                *asked_ms = now_ms;
                vec![chunk_request(sources[*source], offer.height, *offset)]
            }
            Phase::Installing { .. } => Vec::new(),
        }
    }

    /// A peer's answer (offers and chunks; requests are served elsewhere). `certified` gives
    /// the state root the chain certified for a height, where this node knows it.
    pub fn on_message(
        &mut self,
        now_ms: u64,
        from: NodeId,
        msg: StateMsg,
        certified: impl Fn(u64) -> Option<[u8; 32]>,
    ) -> Vec<TransferStep> {
        match msg {
            StateMsg::Offer(Some(offer)) => {
                let root = certified(offer.height);
                self.on_offer(now_ms, from, offer, root)
            }
            StateMsg::Chunk {
                height,
                offset,
                bytes,
            } => self.on_chunk(now_ms, from, height, offset, bytes),
            StateMsg::Offer(None) | StateMsg::OfferRequest | StateMsg::ChunkRequest { .. } => {
                Vec::new()
            }
        }
    }

    fn on_offer(
        &mut self,
        now_ms: u64,
        from: NodeId,
        offer: SnapshotOffer,
        certified: Option<[u8; 32]>,
    ) -> Vec<TransferStep> {
        let floor = if self.repair {
            self.applied
        } else {
            self.last_height
        };
        let banned = &self.banned;
        let Phase::Collecting { offers, .. } = &mut self.phase else {
            return Vec::new();
        };
        if offer.height <= floor || banned.contains(&(from, offer.height)) {
            return Vec::new();
        }
        if certified.is_some_and(|root| root != offer.state_digest) {
            log::warn!(
                "{from} offers a snapshot at height {} whose root is not the certified one: ignored",
                offer.height
            );
            return Vec::new();
        }
        offers.insert(from, offer.clone());
        let mut sources: Vec<NodeId> = offers
            .iter()
            .filter(|(_, o)| **o == offer)
            .map(|(n, _)| *n)
            .collect();
        let trusted = if certified.is_some() {
            true // its root is the one 2f + 1 members certified
        } else {
            !self.repair && sources.len() > self.f
        };
        if !trusted {
            return Vec::new();
        }
        // Deterministic order (a HashMap's is not): the first source is the lowest id.
        sources.sort();
        log::info!(
            "{} peers offer the snapshot at height {} ({} bytes): downloading",
            sources.len(),
            offer.height,
            offer.file_bytes
        );
        let first = sources[0];
        let height = offer.height;
        self.phase = Phase::Downloading {
            offer: offer.clone(),
            sources,
            source: 0,
            offset: 0,
            asked_ms: now_ms,
            served_by: Vec::new(),
        };
        vec![TransferStep::Begin(offer), chunk_request(first, height, 0)]
    }

    fn on_chunk(
        &mut self,
        now_ms: u64,
        from: NodeId,
        height: u64,
        at: u64,
        bytes: Vec<u8>,
    ) -> Vec<TransferStep> {
        let Phase::Downloading {
            offer,
            sources,
            source,
            offset,
            asked_ms,
            served_by,
        } = &mut self.phase
        else {
            return Vec::new();
        };
        if from != sources[*source] || height != offer.height || at != *offset {
            return Vec::new(); // late or unsolicited
        }
        let end = *offset + bytes.len() as u64;
        if bytes.is_empty() || bytes.len() > CHUNK_BYTES_MAX as usize || end > offer.file_bytes {
            // This source cannot or will not serve it: the next one.
            *source = (*source + 1) % sources.len();
            *asked_ms = now_ms;
            return vec![chunk_request(sources[*source], offer.height, *offset)];
        }
        if !served_by.contains(&from) {
            served_by.push(from);
        }
        let append = TransferStep::Append {
            offset: *offset,
            bytes,
        };
        *offset = end;
        *asked_ms = now_ms;
        if end < offer.file_bytes {
            return vec![append, chunk_request(from, offer.height, end)];
        }
        if offer.height <= self.last_height && !self.repair {
            // Blocks caught up during the download: installing would not move the state.
            self.phase = Phase::Idle;
            return vec![append];
        }
        let offer = offer.clone();
        self.phase = Phase::Installing {
            height: offer.height,
            served_by: std::mem::take(served_by),
        };
        vec![append, TransferStep::Install(offer)]
    }

    /// The shell could not write the download: start over later.
    pub fn on_download_failed(&mut self, now_ms: u64) {
        self.phase = Phase::Idle;
        self.last_move_ms = now_ms;
    }

    /// The shell finished an install (`ok`, or it failed: the file was bad or not the
    /// trusted state, so the peers that served it are not asked for that height again).
    pub fn on_installed(&mut self, now_ms: u64, ok: bool) {
        if let Phase::Installing { height, served_by } = &self.phase
            && !ok
        {
            for peer in served_by {
                log::warn!(
                    "{peer} served a bad snapshot file for height {height}: not asking it again"
                );
                if self.banned.len() >= BANNED_MAX {
                    self.banned.pop_front();
                }
                self.banned.push_back((*peer, *height));
            }
        }
        self.phase = Phase::Idle;
        self.last_move_ms = now_ms;
    }
}

fn chunk_request(to: NodeId, height: u64, offset: u64) -> TransferStep {
    TransferStep::Send(
        to,
        StateMsg::ChunkRequest {
            height,
            offset,
            len: CHUNK_BYTES_MAX,
        },
    )
}
