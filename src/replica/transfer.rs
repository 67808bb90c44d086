//! Catching up by snapshot: the decisions of the lagging side of state transfer. No I/O: the
//! bytes of a download leave as steps for the shell to write.
//!
//! Trigger: the core is fetching blocks but its committed height has not moved for
//! `after_ms` (the peers no longer hold the blocks it needs). Then:
//! 1. ask every peer for its newest snapshot offer (again every `OFFER_RETRY_MS`);
//! 2. trust an offer only when `f + 1` distinct peers sent the identical offer (same height,
//!    block, state digest and size), so at least one honest node vouches for it, and only if
//!    it is above our committed height;
//! 3. download it chunk by chunk from one of those peers (the next one on a timeout or an
//!    empty chunk); each accepted chunk is a [`TransferStep::Append`] at the next offset;
//! 4. when the agreed size is reached, [`TransferStep::Install`]: the shell checks the file's
//!    own checksum and digest against the agreed offer and installs it, then reports back.
//!
//! Bounded: one download at a time, chunks of at most [`CHUNK_BYTES_MAX`], a file no larger
//! than the agreed size, offers from at most one entry per member.

use std::collections::HashMap;

use crate::types::NodeId;
use crate::wire::{SnapshotOffer, StateMsg};

/// Largest snapshot chunk served or asked for.
pub const CHUNK_BYTES_MAX: u32 = 1 << 20;
const OFFER_RETRY_MS: u64 = 2_000;
const CHUNK_TIMEOUT_MS: u64 = 5_000;

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
    },
    Installing,
}

pub struct StateTransfer {
    f: usize,
    after_ms: u64,
    last_height: u64,
    last_move_ms: u64,
    phase: Phase,
}

impl StateTransfer {
    pub fn new(f: usize, after_ms: u64, committed: u64, now_ms: u64) -> Self {
        Self {
            f,
            after_ms,
            last_height: committed,
            last_move_ms: now_ms,
            phase: Phase::Idle,
        }
    }

    pub fn is_installing(&self) -> bool {
        matches!(self.phase, Phase::Installing)
    }

    /// Notes the core's committed height (called after every step of the replica).
    pub fn observe(&mut self, now_ms: u64, committed: u64) {
        if committed != self.last_height {
            self.last_height = committed;
            self.last_move_ms = now_ms;
            if matches!(self.phase, Phase::Collecting { .. }) {
                self.phase = Phase::Idle; // blocks flow again
            }
        }
    }

    /// When [`StateTransfer::tick`] next has something to do, if `syncing` stays as it is.
    pub fn next_deadline_ms(&self, syncing: bool) -> Option<u64> {
        match &self.phase {
            Phase::Idle => syncing.then(|| self.last_move_ms.saturating_add(self.after_ms)),
            Phase::Collecting { asked_ms, .. } => Some(asked_ms.saturating_add(OFFER_RETRY_MS)),
            Phase::Downloading { asked_ms, .. } => Some(asked_ms.saturating_add(CHUNK_TIMEOUT_MS)),
            Phase::Installing => None,
        }
    }

    /// Retries and the trigger, given whether the core is fetching blocks.
    pub fn tick(&mut self, now_ms: u64, syncing: bool) -> Vec<TransferStep> {
        match &mut self.phase {
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
            } => {
                if now_ms.saturating_sub(*asked_ms) < CHUNK_TIMEOUT_MS {
                    return Vec::new();
                }
                *source = (*source + 1) % sources.len();
                *asked_ms = now_ms;
                vec![chunk_request(sources[*source], offer.height, *offset)]
            }
            Phase::Installing => Vec::new(),
        }
    }

    /// A peer's answer (offers and chunks; requests are served elsewhere).
    pub fn on_message(&mut self, now_ms: u64, from: NodeId, msg: StateMsg) -> Vec<TransferStep> {
        match msg {
            StateMsg::Offer(Some(offer)) => self.on_offer(now_ms, from, offer),
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

    fn on_offer(&mut self, now_ms: u64, from: NodeId, offer: SnapshotOffer) -> Vec<TransferStep> {
        let Phase::Collecting { offers, .. } = &mut self.phase else {
            return Vec::new();
        };
        if offer.height <= self.last_height {
            return Vec::new();
        }
        offers.insert(from, offer.clone());
        let mut sources: Vec<NodeId> = offers
            .iter()
            .filter(|(_, o)| **o == offer)
            .map(|(n, _)| *n)
            .collect();
        if sources.len() <= self.f {
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
        let append = TransferStep::Append {
            offset: *offset,
            bytes,
        };
        *offset = end;
        *asked_ms = now_ms;
        if end < offer.file_bytes {
            return vec![append, chunk_request(from, offer.height, end)];
        }
        if offer.height <= self.last_height {
            // Blocks caught up during the download: installing would not move the state.
            self.phase = Phase::Idle;
            return vec![append];
        }
        let offer = offer.clone();
        self.phase = Phase::Installing;
        vec![append, TransferStep::Install(offer)]
    }

    /// The shell could not write the download: start over later.
    pub fn on_download_failed(&mut self, now_ms: u64) {
        self.phase = Phase::Idle;
        self.last_move_ms = now_ms;
    }

    /// The shell finished an install (either way).
    pub fn on_installed(&mut self, now_ms: u64) {
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
