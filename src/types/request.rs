//! Client requests: a batch of opaque state-machine operations signed by one client.
//!
//! Consensus treats `ops` as opaque bytes; the key-value state machine decodes them. The
//! `(client, seq)` pair identifies a request for dedup and exactly-once replies.

use rkyv::{Archive, Deserialize, Serialize};

use super::{ClientKey, Sig};

/// A signed client request as it travels from a client to the nodes and inside blocks.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ClientRequest {
    pub client: ClientKey,
    pub seq: u64,
    pub ops: Vec<u8>,
    pub signature: Sig,
}

/// A collision-resistant name for one request (including its signature, so two differently
/// signed copies are different requests to the mempool).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RequestDigest(pub [u8; 32]);

impl ClientRequest {
    /// The bytes the client signs, without domain tag and cluster id (the signer adds those).
    /// The ops are hashed so a signature covers them without copying them again.
    pub fn signed_body(client: &ClientKey, seq: u64, ops: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + 8 + 32);
        body.extend_from_slice(&client.0);
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(blake3::hash(ops).as_bytes());
        body
    }

    pub fn digest(&self) -> RequestDigest {
        let mut h = blake3::Hasher::new();
        h.update(b"bftd/request-digest/v1");
        h.update(&self.client.0);
        h.update(&self.seq.to_le_bytes());
        h.update(&(self.ops.len() as u64).to_le_bytes());
        h.update(&self.ops);
        h.update(&self.signature.0);
        RequestDigest(*h.finalize().as_bytes())
    }

    /// Bytes this request occupies in a block, for the `max_block_bytes` budget.
    pub fn size_bytes(&self) -> usize {
        32 + 8 + 64 + self.ops.len()
    }
}
