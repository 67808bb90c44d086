//! Domain separation: one tag per signed message kind, and the exact bytes each kind signs.
//!
//! Changing any of these layouts changes what every signature means: bump the tag's version.

use crate::types::{BlockId, ClientKey, ClusterId, Round};

pub const PROPOSAL: &[u8] = b"bftd/proposal/v1";
pub const VOTE: &[u8] = b"bftd/vote/v1";
pub const TIMEOUT: &[u8] = b"bftd/timeout/v1";
/// v2: the body gained the session id.
pub const REQUEST: &[u8] = b"bftd/request/v2";

/// `len(tag) || tag || cluster || body`: the bytes an Ed25519 signature covers.
pub fn signing_bytes(tag: &[u8], cluster: &ClusterId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + tag.len() + 32 + body.len());
    // Tags are short constants; a length byte makes tag||cluster unambiguous.
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    out.extend_from_slice(&cluster.0);
    out.extend_from_slice(body);
    out
}

pub fn proposal_body(block_id: &BlockId) -> Vec<u8> {
    block_id.0.to_vec()
}

pub fn vote_body(block_id: &BlockId, round: Round) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&block_id.0);
    b.extend_from_slice(&round.to_le_bytes());
    b
}

pub fn timeout_body(round: Round, high_qc_round: Round) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&round.to_le_bytes());
    b.extend_from_slice(&high_qc_round.to_le_bytes());
    b
}

pub fn request_body(client: &ClientKey, session: u64, seq: u64, ops: &[u8]) -> Vec<u8> {
    crate::types::ClientRequest::signed_body(client, session, seq, ops)
}
