//! Client requests: a batch of opaque state-machine operations signed by one client.
//!
//! Consensus treats `ops` as opaque bytes; the key-value state machine decodes them. A request
//! is identified by its [`RequestId`] `(client, session, seq)`: the client key, a random id
//! each client process draws at start (so processes sharing one key never share seqs), and the
//! seq within that session. The id is the key for mempool dedup, reply routing and the
//! exactly-once table; the ops digest tells two different requests under one id apart.

use rkyv::{Archive, Deserialize, Serialize};

use super::{ClientKey, Sig};

/// A signed client request as it travels from a client to the nodes and inside blocks.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ClientRequest {
    pub client: ClientKey,
    /// Chosen at random by each client process (see `client::seq`).
    pub session: u64,
    pub seq: u64,
    pub ops: Vec<u8>,
    pub signature: Sig,
}

/// Names one request slot: at most one request per id is ever executed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RequestId {
    pub client: ClientKey,
    pub session: u64,
    pub seq: u64,
}

/// A collision-resistant name for one request (including its signature, so two differently
/// signed copies are different requests to the mempool).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RequestDigest(pub [u8; 32]);

/// The hash of a request's ops bytes, as signed and as kept with its cached reply.
pub fn ops_digest(ops: &[u8]) -> [u8; 32] {
    *blake3::hash(ops).as_bytes()
}

impl ClientRequest {
    /// The bytes the client signs, without domain tag and cluster id (the signer adds those).
    /// The ops are hashed so a signature covers them without copying them again.
    pub fn signed_body(client: &ClientKey, session: u64, seq: u64, ops: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + 8 + 8 + 32);
        body.extend_from_slice(&client.0);
        body.extend_from_slice(&session.to_le_bytes());
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&ops_digest(ops));
        body
    }

    pub fn id(&self) -> RequestId {
        RequestId {
            client: self.client,
            session: self.session,
            seq: self.seq,
        }
    }

    pub fn digest(&self) -> RequestDigest {
        let mut h = blake3::Hasher::new();
        h.update(b"bftd/request-digest/v2");
        h.update(&self.client.0);
        h.update(&self.session.to_le_bytes());
        h.update(&self.seq.to_le_bytes());
        h.update(&(self.ops.len() as u64).to_le_bytes());
        h.update(&self.ops);
        h.update(&self.signature.0);
        RequestDigest(*h.finalize().as_bytes())
    }

    /// Bytes this request occupies in a block, for the `max_block_bytes` budget.
    pub fn size_bytes(&self) -> usize {
        32 + 8 + 8 + 64 + self.ops.len()
    }
}
