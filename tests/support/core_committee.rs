//! What the tests that drive consensus cores by hand share: a 4-member committee (`f = 1`)
//! with known secrets, the verifier every message goes through, and cores built the one way
//! (1 s base round timeout, the rest default), fresh or on durable state.
//!
//! Included by the `consensus_*.rs` tests with `#[path = "support/core_committee.rs"]`; cargo
//! does not build this directory as a test of its own.

#![allow(dead_code)]

use std::sync::Arc;

use bftd::consensus::{Core, CoreConfig, DurableState};
use bftd::crypto::{ClientPolicy, Committee, Signer, Verifier, VerifierLimits};
use bftd::types::{ClusterId, NodeId};

/// Members of the test committee.
pub const MEMBERS: u16 = 4;

pub struct TestCommittee {
    pub cluster: ClusterId,
    pub committee: Arc<Committee>,
    pub verifier: Verifier,
    /// Member `i`'s secret key is `[secret_base + i; 32]`.
    secret_base: u8,
}

impl TestCommittee {
    /// The committee of cluster `name`, member `i` holding the secret `[secret_base + i; 32]`
    /// (each test file keeps its own keys).
    pub fn new(name: &str, secret_base: u8) -> Self {
        let cluster = ClusterId::from_name(name);
        let keys: Vec<[u8; 32]> = (0..MEMBERS)
            .map(|i| Signer::new([secret_base + i as u8; 32], cluster).public_key())
            .collect();
        let committee = Arc::new(Committee::new(cluster, &keys, 1).expect("test committee"));
        let verifier = Verifier::new(
            committee.clone(),
            VerifierLimits::default(),
            ClientPolicy::Any,
        );
        TestCommittee {
            cluster,
            committee,
            verifier,
            secret_base,
        }
    }

    pub fn secret(&self, i: u16) -> [u8; 32] {
        [self.secret_base + i as u8; 32]
    }

    pub fn signer(&self, i: u16) -> Signer {
        Signer::new(self.secret(i), self.cluster)
    }

    /// Member `me`'s core: fresh (`None`) or restarted on `durable`.
    pub fn core(&self, me: u16, durable: Option<DurableState>) -> Core {
        let cfg = CoreConfig {
            round_timeout_base_ms: 1_000,
            ..CoreConfig::default()
        };
        Core::new(
            cfg,
            self.committee.clone(),
            self.signer(me),
            NodeId(me),
            durable,
        )
    }
}
