//! Keys, domain-separated signing, and verification of everything that enters the core.
//!
//! Every signed payload is `len(tag) || tag || cluster_id || body` (see [`domain`]), so a
//! signature made for one message kind or one cluster never verifies as another. Acceptance
//! is ZIP-215 on every path, batched or single (see `sig_batch`): canonical `s`, any point
//! encoding for `R` and `A`, the cofactored equation; weak (small-order) keys are refused when
//! a committee or client key is registered.

pub mod domain;
mod keys;
pub mod root_cert;
mod seen_cache;
mod sig_batch;
mod verifier;

pub use keys::{Committee, CommitteeError, Signer};
pub use seen_cache::SeenCache;
pub use sig_batch::SigBatch;
pub use verifier::{
    ClientPolicy, Verified, VerifiedMessage, Verifier, VerifierLimits, VerifyError,
};
