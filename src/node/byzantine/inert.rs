//! The hooks of a node built without the `byzantine` feature: they change nothing, and a
//! config that asks for a Byzantine kind is refused.

use super::Outgoing;
use crate::config::LoadedConfig;
use crate::node::StartError;
use crate::node::consensus_loop::ConsensusInput;
use crate::node::snapshots::SnapshotDir;
use crate::types::{Message, NodeId, QuorumCert};
use crate::wire::PeerFrame;
use crate::wire::client::encode_node_frame;
use crate::wire::peer::{ReadMsg, encode_peer};
use crate::wire::{NodeFrame, StateMsg};

pub struct ConsensusHook;

impl ConsensusHook {
    #[inline]
    pub fn state_flood(&mut self) -> Vec<(NodeId, StateMsg)> {
        Vec::new()
    }

    #[inline]
    pub fn outbound(&mut self, _to: Option<NodeId>, msg: Message) -> Outgoing {
        Outgoing::Unchanged(msg)
    }

    #[inline]
    pub fn on_input(&mut self, _input: &ConsensusInput) -> Vec<(NodeId, Message)> {
        Vec::new()
    }

    #[inline]
    pub fn read_answer(&mut self, nonce: u64, qc: QuorumCert) -> Vec<u8> {
        encode_peer(&PeerFrame::Read(ReadMsg::HighQc { nonce, qc }))
    }
}

#[derive(Clone)]
pub struct ServingHook;

impl ServingHook {
    #[inline]
    pub fn encode_client_frame(&self, frame: &NodeFrame) -> Option<Vec<u8>> {
        Some(encode_node_frame(frame))
    }

    #[inline]
    pub fn verified_read(
        &self,
        _key: &[u8],
        _read: &mut crate::api::verified_read::VerifiedRead,
        _certificate: &mut crate::types::RootCertificate,
    ) {
    }

    #[inline]
    pub fn state_answer(&self, answer: StateMsg, _snapshots: &SnapshotDir) -> Option<StateMsg> {
        Some(answer)
    }
}

/// The hooks for `cfg`; an error if its `[faults] byzantine` names a kind.
pub fn hooks(cfg: &LoadedConfig) -> Result<(ConsensusHook, ServingHook), StartError> {
    match &cfg.raw.faults.byzantine {
        None => Ok((ConsensusHook, ServingHook)),
        Some(kind) => Err(StartError(format!(
            "[faults] byzantine = \"{kind}\" is for tests only: only the test binary \
             bftd-byzantine, built with the Cargo feature `byzantine` (cargo build --features \
             byzantine), plays a Byzantine member; this binary was built without it, so it \
             refuses to start"
        ))),
    }
}
