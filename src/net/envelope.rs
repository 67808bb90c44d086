//! What crosses the channels between the net thread and the rest of the node.
//!
//! Invariant: an [`Inbound`] is only ever built from a frame that arrived on a link whose
//! Noise handshake finished and whose remote static key passed the allow-list, so `from` is
//! authenticated. The bytes themselves are unparsed: decoding and validation are the verifier
//! pool's job.

use crate::types::NodeId;

use super::noise::KEY_BYTES;

/// A client link: the client's X25519 static (Noise) public key, which the handshake
/// authenticates, and the link's number on this node, so that several processes sharing one
/// client key each hold a link of their own and each get the replies to their own requests.
/// Link numbers are never reused while the node runs (0 until the link is established).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub [u8; KEY_BYTES], pub u64);

impl std::fmt::Debug for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client:")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "#{}", self.1)
    }
}

/// The authenticated other end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Remote {
    Peer(NodeId),
    Client(ClientId),
}

/// One application frame received from an authenticated remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub from: Remote,
    pub bytes: Vec<u8>,
}

/// A request to the net thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    ToPeer(NodeId, Vec<u8>),
    /// To every configured peer (not to ourselves).
    Broadcast(Vec<u8>),
    ToClient(ClientId, Vec<u8>),
}

impl Outbound {
    /// The frame's bytes as held in the outbound channel (a broadcast holds one copy).
    pub fn len_bytes(&self) -> usize {
        match self {
            Outbound::ToPeer(_, b) | Outbound::Broadcast(b) | Outbound::ToClient(_, b) => b.len(),
        }
    }
}
