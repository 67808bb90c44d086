//! The hooks of a node built with the test-only `byzantine` feature: with `[faults]
//! byzantine = "<kind>"` they make the node misbehave that way (see
//! [`crate::adversary::ByzKind`]); without it they change nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Outgoing;
use crate::adversary::{ByzKind, ByzState, replies, snapshot};
use crate::config::LoadedConfig;
use crate::crypto::VerifiedMessage;
use crate::kv::{decode_reply, encode_reply};
use crate::node::StartError;
use crate::node::consensus_loop::ConsensusInput;
use crate::node::snapshots::SnapshotDir;
use crate::types::{Message, NodeId, QuorumCert, SyncResponse};
use crate::util::rng::SimRng;
use crate::wire::PeerFrame;
use crate::wire::client::encode_node_frame;
use crate::wire::peer::{ReadMsg, encode_peer};
use crate::wire::{NodeFrame, StateMsg};

/// Largest snapshot file a forger loads to forge (beyond it, it corrupts chunks instead).
const FORGED_FILE_BYTES_MAX: usize = 64 << 20;

pub struct ConsensusHook {
    state: Option<ByzState>,
    kind: Option<ByzKind>,
    /// Probe answers lied about so far (picks the lie).
    probe_lies: u64,
    cluster: crate::types::ClusterId,
    snapshot_interval_blocks: u64,
}

impl ConsensusHook {
    pub fn outbound(&mut self, to: Option<NodeId>, msg: Message) -> Outgoing {
        match self.state.as_mut() {
            None => Outgoing::Unchanged(msg),
            Some(s) => Outgoing::Instead(s.outbound(to, msg)),
        }
    }

    /// The bytes answering read probe `nonce` when this node's high QC is `qc`
    /// (`lie-to-probes` lies; see [`ByzKind::LieToProbes`]).
    pub fn read_answer(&mut self, nonce: u64, qc: QuorumCert) -> Vec<u8> {
        if self.kind != Some(ByzKind::LieToProbes) {
            return encode_peer(&PeerFrame::Read(ReadMsg::HighQc { nonce, qc }));
        }
        self.probe_lies += 1;
        match self.probe_lies % 3 {
            0 => {
                let mut forged = qc;
                forged.round = forged.round.saturating_add(1_000_000);
                for v in &mut forged.votes {
                    v.sig = crate::types::Sig([0x5a; 64]);
                }
                encode_peer(&PeerFrame::Read(ReadMsg::HighQc { nonce, qc: forged }))
            }
            1 => {
                let qc = QuorumCert::genesis(&self.cluster);
                encode_peer(&PeerFrame::Read(ReadMsg::HighQc { nonce, qc }))
            }
            _ => vec![0xff; 48],
        }
    }

    /// Extra state-transfer requests to send on receiving an input (`flood-requests`).
    pub fn state_flood(&mut self) -> Vec<(NodeId, StateMsg)> {
        match self.state.as_mut() {
            None => Vec::new(),
            Some(s) => s.state_flood(
                self.snapshot_interval_blocks,
                crate::replica::CHUNK_BYTES_MAX,
            ),
        }
    }

    /// Extra messages to send (untransformed) on receiving `input`.
    pub fn on_input(&mut self, input: &ConsensusInput) -> Vec<(NodeId, Message)> {
        let Some(s) = self.state.as_mut() else {
            return Vec::new();
        };
        match input {
            ConsensusInput::Message { msg, .. } => s.inbound(&as_message(msg)),
            ConsensusInput::Request(req) => {
                s.on_request(req);
                Vec::new()
            }
            ConsensusInput::State { .. }
            | ConsensusInput::Read { .. }
            | ConsensusInput::ReadProbe { .. }
            | ConsensusInput::ReadAnswer { .. } => Vec::new(),
        }
    }
}

/// The message as it was on the wire (the adversary reasons about messages, not about what
/// the verifier made of them).
fn as_message(msg: &VerifiedMessage) -> Message {
    match msg {
        VerifiedMessage::Proposal { block, .. } => Message::Proposal((**block).clone()),
        VerifiedMessage::Vote(v) => Message::Vote(v.clone()),
        VerifiedMessage::Timeout(t) => Message::Timeout(t.clone()),
        VerifiedMessage::SyncInfo(i) => Message::SyncInfo(i.clone()),
        VerifiedMessage::SyncRequest(r) => Message::SyncRequest(r.clone()),
        VerifiedMessage::SyncResponse { blocks } => Message::SyncResponse(SyncResponse {
            blocks: blocks.iter().map(|(_, b)| b.clone()).collect(),
        }),
    }
}

#[derive(Clone)]
pub struct ServingHook {
    kind: Option<ByzKind>,
    /// A forger's forged snapshot file, made on the first chunk asked for.
    forged: Arc<Mutex<Option<ForgedFile>>>,
    /// Verified reads lied about so far (picks the lie).
    lies: Arc<AtomicU64>,
}

struct ForgedFile {
    height: u64,
    bytes: Vec<u8>,
}

impl ServingHook {
    /// The bytes to send a client for `frame`; `None`: send nothing.
    pub fn encode_client_frame(&self, frame: &NodeFrame) -> Option<Vec<u8>> {
        match self.kind {
            Some(ByzKind::Silent) => None,
            Some(ByzKind::LieToClients) => Some(encode_node_frame(&lie(frame))),
            _ => Some(encode_node_frame(frame)),
        }
    }

    /// A verified read of `key` as this member answers it (`lie-verified-reads` falsifies it,
    /// alternating the two ways of [`replies::falsify_verified_read`]).
    pub fn verified_read(
        &self,
        key: &[u8],
        read: &mut crate::api::verified_read::VerifiedRead,
        certificate: &mut crate::types::RootCertificate,
    ) {
        if self.kind == Some(ByzKind::LieVerifiedReads) {
            let made_up_root = self.lies.fetch_add(1, Ordering::Relaxed) % 2 == 1;
            replies::falsify_verified_read(key, read, certificate, made_up_root);
        }
    }

    /// What to answer a peer's state-transfer request with, given the honest `answer`; `None`:
    /// nothing.
    pub fn state_answer(&self, answer: StateMsg, snapshots: &SnapshotDir) -> Option<StateMsg> {
        match (self.kind, answer) {
            (Some(ByzKind::Silent), _) => None,
            (
                Some(ByzKind::ForgeSnapshot),
                StateMsg::Chunk {
                    height,
                    offset,
                    bytes,
                },
            ) if !bytes.is_empty() => {
                let bytes = self.forged_chunk(snapshots, height, offset, bytes);
                Some(StateMsg::Chunk {
                    height,
                    offset,
                    bytes,
                })
            }
            (_, answer) => Some(answer),
        }
    }

    /// The bytes of the forged file where the honest chunk `honest` was.
    fn forged_chunk(
        &self,
        snapshots: &SnapshotDir,
        height: u64,
        offset: u64,
        mut honest: Vec<u8>,
    ) -> Vec<u8> {
        let mut cached = self.forged.lock();
        if cached.as_ref().is_none_or(|f| f.height != height) {
            let forged = std::fs::read(snapshots.snap_path(height))
                .ok()
                .filter(|f| f.len() <= FORGED_FILE_BYTES_MAX)
                .and_then(|f| snapshot::forge_snapshot(&f));
            *cached = forged.map(|bytes| ForgedFile { height, bytes });
            if cached.is_some() {
                log::warn!("BYZANTINE: serving a forged snapshot file for height {height}");
            }
        }
        let start = offset as usize;
        match cached
            .as_ref()
            .and_then(|f| f.bytes.get(start..start + honest.len()))
        {
            Some(forged) => forged.to_vec(),
            None => {
                // Nothing to forge coherently: plain corruption, which the checksum catches.
                if let Some(b) = honest.first_mut() {
                    *b ^= 0x01;
                }
                honest
            }
        }
    }
}

/// `frame` with every result and value in it falsified.
fn lie(frame: &NodeFrame) -> NodeFrame {
    match frame {
        NodeFrame::Reply {
            client,
            session,
            seq,
            ops_digest,
            reply,
        } => match decode_reply(reply) {
            Ok(r) => NodeFrame::Reply {
                client: *client,
                session: *session,
                seq: *seq,
                ops_digest: *ops_digest,
                reply: encode_reply(&replies::falsify_reply(r)),
            },
            Err(_) => frame.clone(),
        },
        NodeFrame::StaleValue {
            id,
            applied_height,
            value,
        } => NodeFrame::StaleValue {
            id: *id,
            applied_height: *applied_height,
            value: replies::falsify_found(value.clone()),
        },
        NodeFrame::BarrierValue {
            id,
            applied_height,
            value,
        } => NodeFrame::BarrierValue {
            id: *id,
            applied_height: *applied_height,
            value: replies::falsify_found(value.clone()),
        },
        // A backup downloaded from this node must not verify: one byte of every chunk flipped.
        NodeFrame::SnapshotChunk {
            id,
            height,
            offset,
            bytes,
        } => {
            let mut bytes = bytes.clone();
            let middle = bytes.len() / 2;
            if let Some(b) = bytes.get_mut(middle) {
                *b ^= 0x5a;
            }
            NodeFrame::SnapshotChunk {
                id: *id,
                height: *height,
                offset: *offset,
                bytes,
            }
        }
        NodeFrame::WatchEvents {
            id,
            height,
            prev_height,
            events,
        } => NodeFrame::WatchEvents {
            id: *id,
            height: *height,
            prev_height: *prev_height,
            events: events
                .iter()
                .map(|e| crate::api::WatchEvent {
                    key: e.key.clone(),
                    value: replies::falsify_found(e.value.clone()),
                })
                .collect(),
        },
        other => other.clone(),
    }
}

/// Set once by the `bftd-byzantine` test binary: only that entry point may play a Byzantine
/// member. The feature alone is not enough, because `cargo test` and `cargo bench` compile the
/// ordinary `bftd` binary with it too.
static PERMITTED: AtomicBool = AtomicBool::new(false);

/// Lets this process play the Byzantine kind its config names (the `bftd-byzantine` binary).
pub fn permit() {
    PERMITTED.store(true, Ordering::SeqCst);
}

/// The hooks for `cfg`: Byzantine of the configured kind, or inactive.
pub fn hooks(cfg: &LoadedConfig) -> Result<(ConsensusHook, ServingHook), StartError> {
    let kind = cfg
        .raw
        .faults
        .byzantine_kind()
        .map_err(|e| StartError(format!("[faults] byzantine: {e}")))?;
    if let Some(k) = kind
        && !PERMITTED.load(Ordering::SeqCst)
    {
        return Err(StartError(format!(
            "[faults] byzantine = \"{}\" is for tests only: only the test binary bftd-byzantine \
             (cargo build --features byzantine) plays a Byzantine member; bftd refuses to start",
            k.name()
        )));
    }
    if let Some(k) = kind {
        log::warn!(
            "BYZANTINE: node {} plays '{}' (test-only; never run this in a real cluster)",
            cfg.node_id,
            k.name()
        );
    }
    let state = kind.map(|k| {
        let seed = 0x0b42_a471_u64 ^ u64::from(cfg.node_id.0);
        ByzState::with_signer(
            k,
            cfg.signer(),
            Arc::new(cfg.committee().clone()),
            cfg.node_id,
            SimRng::new(seed),
        )
    });
    let serving = ServingHook {
        kind,
        forged: Arc::new(Mutex::new(None)),
        lies: Arc::new(AtomicU64::new(0)),
    };
    let consensus = ConsensusHook {
        state,
        kind,
        probe_lies: 0,
        cluster: cfg.cluster,
        snapshot_interval_blocks: cfg.raw.node.snapshot_interval_blocks,
    };
    Ok((consensus, serving))
}
