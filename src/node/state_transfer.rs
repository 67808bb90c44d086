//! Catching up by snapshot: the lagging side of state transfer, run by the consensus thread.
//!
//! Trigger: the core is fetching blocks but its committed height has not moved for
//! `state_transfer_after_ms` (the peers no longer hold the blocks it needs). Then:
//! 1. ask every peer for its newest snapshot offer (again every `OFFER_RETRY_MS`);
//! 2. trust an offer only when `f + 1` distinct peers sent the identical offer (same height,
//!    block, state digest and size), so at least one honest node vouches for it, and only if
//!    it is above our committed height;
//! 3. download it chunk by chunk from one of those peers (the next one on a timeout or an
//!    empty chunk), into `snapshots/incoming.part`, synced when complete;
//! 4. hand it to the storage thread, which checks the file's own checksum and digest against
//!    the agreed offer and installs it; the consensus thread then restarts the core on top.
//!
//! Bounded: one download at a time, chunks of at most `CHUNK_BYTES_MAX`, a file no larger than
//! the agreed size.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::snapshots::CHUNK_BYTES_MAX;
use crate::types::NodeId;
use crate::wire::{SnapshotOffer, StateMsg};

const OFFER_RETRY_MS: u64 = 2_000;
const CHUNK_TIMEOUT_MS: u64 = 5_000;

/// What the consensus thread must do for the state transfer.
pub enum TransferStep {
    Broadcast(StateMsg),
    Send(NodeId, StateMsg),
    Install { path: PathBuf, offer: SnapshotOffer },
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
        file: File,
        offset: u64,
        asked_ms: u64,
    },
    Installing,
}

pub struct StateTransfer {
    f: usize,
    after_ms: u64,
    incoming: PathBuf,
    last_height: u64,
    last_move_ms: u64,
    phase: Phase,
}

impl StateTransfer {
    pub fn new(f: usize, after_ms: u64, incoming: PathBuf) -> Self {
        Self {
            f,
            after_ms,
            incoming,
            last_height: 0,
            last_move_ms: 0,
            phase: Phase::Idle,
        }
    }

    pub fn is_installing(&self) -> bool {
        matches!(self.phase, Phase::Installing)
    }

    /// Called regularly with the core's committed height and whether it is fetching blocks.
    pub fn tick(&mut self, now_ms: u64, committed: u64, syncing: bool) -> Vec<TransferStep> {
        if committed != self.last_height {
            self.last_height = committed;
            self.last_move_ms = now_ms;
            if matches!(self.phase, Phase::Collecting { .. }) {
                self.phase = Phase::Idle; // blocks flow again
            }
        }
        match &mut self.phase {
            Phase::Idle => {
                if syncing && now_ms.saturating_sub(self.last_move_ms) >= self.after_ms {
                    log::info!(
                        "committed height {committed} has not moved for {} ms while fetching blocks: asking peers for a snapshot",
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
            Phase::Installing => Vec::new(),
        }
    }

    pub fn on_message(
        &mut self,
        now_ms: u64,
        from: NodeId,
        msg: StateMsg,
        committed: u64,
    ) -> Vec<TransferStep> {
        match msg {
            StateMsg::Offer(Some(offer)) => self.on_offer(now_ms, from, offer, committed),
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
        committed: u64,
    ) -> Vec<TransferStep> {
        let Phase::Collecting { offers, .. } = &mut self.phase else {
            return Vec::new();
        };
        if offer.height <= committed {
            return Vec::new();
        }
        offers.insert(from, offer.clone());
        let sources: Vec<NodeId> = offers
            .iter()
            .filter(|(_, o)| **o == offer)
            .map(|(n, _)| *n)
            .collect();
        if sources.len() <= self.f {
            return Vec::new();
        }
        let file = match File::create(&self.incoming) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("{}: cannot create: {e}", self.incoming.display());
                return Vec::new();
            }
        };
        log::info!(
            "{} peers offer the snapshot at height {} ({} bytes): downloading",
            sources.len(),
            offer.height,
            offer.file_bytes
        );
        let first = sources[0];
        let height = offer.height;
        self.phase = Phase::Downloading {
            offer,
            sources,
            source: 0,
            file,
            offset: 0,
            asked_ms: now_ms,
        };
        vec![chunk_request(first, height, 0)]
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
            file,
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
        if let Err(e) = file.write_all(&bytes) {
            log::warn!("writing the snapshot download: {e}");
            self.phase = Phase::Idle;
            return Vec::new();
        }
        *offset = end;
        *asked_ms = now_ms;
        if end < offer.file_bytes {
            return vec![chunk_request(from, offer.height, end)];
        }
        if let Err(e) = file.sync_data() {
            log::warn!("syncing the snapshot download: {e}");
            self.phase = Phase::Idle;
            return Vec::new();
        }
        let offer = offer.clone();
        self.phase = Phase::Installing;
        vec![TransferStep::Install {
            path: self.incoming.clone(),
            offer,
        }]
    }

    /// The storage thread finished an install (either way).
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
