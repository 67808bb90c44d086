//! The protocol's data: identifiers, blocks, certificates, messages and client requests.
//!
//! These are plain owned values with an `rkyv` encoding (see [`crate::codec`]). Nothing here
//! checks signatures: a value of these types is *unverified* until [`crate::crypto::Verifier`]
//! wraps it in [`crate::crypto::Verified`]. Identity hashes (block ids, request digests) are
//! computed from the fields, never trusted from the wire.

mod block;
mod cert;
mod ids;
mod message;
mod request;
mod root_cert;

pub use block::{Block, BlockHeader, STATE_ROOTS_MAX};
pub use cert::{QuorumCert, SignerSig, TimeoutCert, TimeoutSig};
pub use ids::{BlockId, ClientKey, ClusterId, Height, NodeId, Round, Sig};
pub use message::{Message, SyncInfo, SyncRequest, SyncResponse, Timeout, Vote};
pub use request::{ClientRequest, RequestDigest, RequestId, ops_digest};
pub use root_cert::{CertifiedHeader, RootCertificate, TcSummary};
