//! Client-to-node frames ([`ClientFrame`]) and node-to-client frames ([`NodeFrame`]).
//!
//! The link is Noise-authenticated both ways, so a client knows which node every frame came
//! from; replies carry no signature. A client accepts a result only when `f + 1` nodes send the
//! same `(session, seq, reply)` bytes: replies are deterministic (`kv::encode_reply` of the
//! state machine's output, computed from replicated state only), so honest nodes send identical
//! bytes. A reply names the ops digest of the request it answers, so a client never takes the
//! reply of another request that used the same `(client, session, seq)`.
//!
//! Watches ([`ClientFrame::Watch`]) stream committed changes from the node's watch log; a
//! client emits a height only when `f + 1` nodes sent the same frame for it.
//!
//! Requests are signed by the client's Ed25519 key ([`ClientRequest`]); a node forwards only
//! verified requests to consensus, and refuses the rest with a [`Refusal`] that says why.
//!
//! Snapshot frames (`SnapshotOffer`, `SnapshotChunk`) let a client download a node's newest
//! periodic snapshot for a backup (`bftctl snapshot save`): read-only, rate limited on the
//! node, and trusted by the client only when `f + 1` nodes offer it identically and the whole
//! file verifies (`client::backup`).

use rkyv::{Archive, Deserialize, Serialize};

use crate::api::WatchEvent;
use crate::api::verified_read::VerifiedRead;
use crate::codec::{self, CodecError};
use crate::kv::VersionedValue;
use crate::types::{ClientRequest, RootCertificate};
use crate::wire::SnapshotOffer;

/// Largest client or node frame the decoders accept.
pub const CLIENT_FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Bytes a `Submit` frame adds around its ops (key, seq, signature, rkyv layout), rounded up
/// generously; `submit_frame_bytes_max` is tested against real encodings.
const SUBMIT_FRAME_OVERHEAD_BYTES: usize = 1024;

/// The largest frame a valid client sends when a request carries at most `ops_bytes_max` bytes
/// of operations: what a node's transport needs to accept on a client link, and no more.
pub fn submit_frame_bytes_max(ops_bytes_max: usize) -> usize {
    ops_bytes_max.saturating_add(SUBMIT_FRAME_OVERHEAD_BYTES)
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum ClientFrame {
    /// A signed request to order: writes, transactions and linearizable reads.
    Submit(ClientRequest),
    /// Read one key from this node's last applied state, without ordering (a stale read).
    StaleGet { id: u64, key: Vec<u8> },
    /// Ask for this node's status.
    Status { id: u64 },
    /// Ask which periodic snapshot this node serves (its newest): `bftctl snapshot save`.
    SnapshotOffer { id: u64 },
    /// Bytes `[offset, offset + len)` of the snapshot at `height` (`len` is capped at
    /// `CHUNK_BYTES_MAX`). A client may only read snapshots, never write one.
    SnapshotChunk {
        id: u64,
        height: u64,
        offset: u64,
        len: u32,
    },
    /// Read one key with a proof against a certified state root (answered with
    /// `NodeFrame::VerifiedValue` or `Unavailable`). One node, no consensus: not linearizable.
    VerifiedGet { id: u64, key: Vec<u8> },
    /// Stream the committed changes to `key` (every key starting with it when `prefix`) from
    /// height `from_height` (at least 1) on, as `WatchEvents` frames; replaces a watch of the
    /// same `id` on this link.
    Watch {
        id: u64,
        key: Vec<u8>,
        prefix: bool,
        from_height: u64,
    },
    /// Stop watch `id` on this link.
    Unwatch { id: u64 },
    /// A linearizable read of one key by read barrier (`node::read_barrier`): unsigned (the
    /// link is authenticated and admitted like any client link), answered with
    /// `NodeFrame::BarrierValue` from a state that contains every write committed before the
    /// read arrived, or `Unavailable` (busy, no quorum in time): the client then falls back
    /// to an ordered get. A client accepts `f + 1` identical values.
    BarrierGet { id: u64, key: Vec<u8> },
}

/// Why a node did not take a request.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// The node is overloaded (mempool or queues full): retry later with the same seq.
    Busy,
    /// The signing key is not in the cluster's client allow-list.
    NotAuthorised,
    /// The signature does not verify, or the request exceeds a limit.
    Invalid,
}

/// One node's view of itself, for `bftctl status` and health checks.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct NodeStatus {
    pub node_id: u16,
    pub round: u64,
    pub leader: u16,
    pub committed_height: u64,
    pub applied_height: u64,
    /// The consensus timestamp (ms since the Unix epoch) of the block at `applied_height`
    /// (0 at genesis, and after a restart or snapshot install until the next block applies).
    pub applied_block_time_ms: u64,
    /// The state digest (root) after `applied_height`: this node's own.
    pub state_digest: [u8; 32],
    /// The highest height whose state digest this node saw certified (carried by a certified
    /// block), 0 when none yet; compare `certified_root` with `state_digest` only at equal
    /// heights.
    pub certified_height: u64,
    pub certified_root: [u8; 32],
    pub uptime_ms: u64,
    pub mempool_requests: u64,
    pub peers_connected: u16,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub enum NodeFrame {
    /// The committed result of request `(client, session, seq)` whose ops hash to
    /// `ops_digest`: `kv::encode_reply` bytes, identical on every honest node.
    Reply {
        client: [u8; 32],
        session: u64,
        seq: u64,
        ops_digest: [u8; 32],
        reply: Vec<u8>,
    },
    /// The node did not take request `(client, session, seq)`.
    Refused {
        client: [u8; 32],
        session: u64,
        seq: u64,
        reason: Refusal,
    },
    /// Answer to `StaleGet`: the value as of `applied_height` on this node.
    StaleValue {
        id: u64,
        applied_height: u64,
        value: Option<VersionedValue>,
    },
    Status {
        id: u64,
        status: NodeStatus,
    },
    /// Answer to `VerifiedGet`: the key's entry or its absence, proven against the state root
    /// after `read.height`, and the certificate that a quorum certified that root. The client
    /// checks all of it and trusts none of it on the node's word.
    VerifiedValue {
        id: u64,
        read: VerifiedRead,
        /// Boxed: a header with its payload digests dwarfs every other frame.
        certificate: Box<RootCertificate>,
    },
    /// This node will not answer query `id` from its state, and why (e.g. its state root
    /// differs from the one the cluster certified: it would serve wrong data).
    Unavailable {
        id: u64,
        reason: String,
    },
    /// The node refuses this link (for `NotAuthorised`: the client's noise key is not on its
    /// allow-list) and closes it after this frame. Sent once, first, on a link whose
    /// handshake completed; the client stops retrying that node.
    LinkRefused {
        reason: Refusal,
    },
    /// Answer to `SnapshotOffer`: the newest snapshot this node serves (`None`: none yet).
    SnapshotOffer {
        id: u64,
        offer: Option<SnapshotOffer>,
    },
    /// Answer to `SnapshotChunk`: `bytes` is empty when the node no longer has that
    /// snapshot (pruned) or `offset` is past its end.
    SnapshotChunk {
        id: u64,
        height: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    // Watch frames come last so the tags of the frames before them stay what they were.
    /// The changes of one `height` that watch `id` asked for, in key order. `prev_height` is
    /// the previous height with matching changes at or after the watch's `from_height`, or
    /// `from_height - 1` if there is none: every honest node sends the same chain, so a client
    /// sees a gap or a duplicate.
    WatchEvents {
        id: u64,
        height: u64,
        prev_height: u64,
        events: Vec<WatchEvent>,
    },
    /// Watch `id` asked for history this node no longer keeps: its oldest height is
    /// `oldest_height`. The watch is over.
    WatchCompacted {
        id: u64,
        oldest_height: u64,
    },
    /// Answer to `BarrierGet`: the value as of `applied_height`, which is at or above the
    /// read's barrier. Nodes may answer from different heights; the client compares `value`
    /// only.
    BarrierValue {
        id: u64,
        applied_height: u64,
        value: Option<VersionedValue>,
    },
}

pub fn encode_client_frame(frame: &ClientFrame) -> Vec<u8> {
    codec::encode(frame).into_vec()
}

pub fn decode_client_frame(bytes: &[u8]) -> Result<ClientFrame, CodecError> {
    codec::decode::<ClientFrame>(bytes, CLIENT_FRAME_BYTES_MAX)
}

pub fn encode_node_frame(frame: &NodeFrame) -> Vec<u8> {
    codec::encode(frame).into_vec()
}

pub fn decode_node_frame(bytes: &[u8]) -> Result<NodeFrame, CodecError> {
    codec::decode::<NodeFrame>(bytes, CLIENT_FRAME_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientKey, Sig};

    #[test]
    fn the_largest_submit_frame_fits_submit_frame_bytes_max() {
        for ops_bytes in [0usize, 1, 100, 65_536, 1 << 20] {
            let frame = ClientFrame::Submit(ClientRequest {
                client: ClientKey([7; 32]),
                session: u64::MAX,
                seq: u64::MAX,
                ops: vec![0xAB; ops_bytes],
                signature: Sig([9; 64]),
            });
            let len = encode_client_frame(&frame).len();
            assert!(
                len <= submit_frame_bytes_max(ops_bytes),
                "{ops_bytes} bytes of ops encode to {len}"
            );
        }
        // Status and stale reads are small next to any request limit in use.
        let status = encode_client_frame(&ClientFrame::Status { id: u64::MAX }).len();
        assert!(status <= submit_frame_bytes_max(0));
        let chunk = ClientFrame::SnapshotChunk {
            id: u64::MAX,
            height: u64::MAX,
            offset: u64::MAX,
            len: u32::MAX,
        };
        assert!(encode_client_frame(&chunk).len() <= submit_frame_bytes_max(0));
    }

    #[test]
    fn a_full_snapshot_chunk_fits_a_client_frame() {
        let frame = NodeFrame::SnapshotChunk {
            id: u64::MAX,
            height: u64::MAX,
            offset: u64::MAX,
            bytes: vec![7; crate::replica::CHUNK_BYTES_MAX as usize],
        };
        let bytes = encode_node_frame(&frame);
        assert!(bytes.len() < CLIENT_FRAME_BYTES_MAX);
        assert_eq!(decode_node_frame(&bytes).unwrap(), frame);
    }
}
