//! The replica driven by hand with a fake "durable" counter: tickets across a core rebuild and
//! the snapshot-install window (issue 13, item 3).

use std::sync::Arc;

use super::*;
use crate::crypto::{ClientPolicy, Verifier, VerifierLimits};
use crate::types::ClusterId;

const TIMEOUT_MS: u64 = 1_000;

struct Fixture {
    cfg: ReplicaConfig,
    verifier: Verifier,
    cluster: ClusterId,
}

fn fixture(me: u16) -> Fixture {
    let cluster = ClusterId::from_name("replica-tests");
    let secret = |i: u16| [i as u8 + 30; 32];
    let keys: Vec<[u8; 32]> = (0..4)
        .map(|i| Signer::new(secret(i), cluster).public_key())
        .collect();
    let committee = match Committee::new(cluster, &keys, 1) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("test committee: {e}"),
    };
    let verifier = Verifier::new(
        committee.clone(),
        VerifierLimits::default(),
        ClientPolicy::Any,
    );
    let cfg = ReplicaConfig {
        core: CoreConfig {
            round_timeout_base_ms: TIMEOUT_MS,
            ..CoreConfig::default()
        },
        committee,
        signer: Signer::new(secret(me), cluster),
        me: NodeId(me),
        state_transfer_after_ms: 3_000,
    };
    Fixture {
        cfg,
        verifier,
        cluster,
    }
}

impl Fixture {
    fn request(&self, seq: u64) -> Input {
        let req = Signer::new([7; 32], self.cluster).sign_request(1, seq, vec![1, 2, 3]);
        match self.verifier.verify_requests(vec![req]).pop() {
            Some(Ok(v)) => Input::RequestReceived(v),
            other => panic!("test request does not verify: {other:?}"),
        }
    }
}

fn timeouts_sent(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Broadcast {
                    msg: Message::Timeout(_)
                }
            )
        })
        .count()
}

fn persists(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect()
}

/// A node that is not round 1's leader gets a request, so its round times out: the timeout
/// is signed, persisted (ticket 1) and held back until that ticket is durable.
fn timed_out_replica(fx: &Fixture) -> (Replica, u64) {
    let mut r = Replica::new(fx.cfg.clone(), None, 0);
    r.start(0);
    r.handle(0, fx.request(1));
    let effects = r.handle(TIMEOUT_MS, Input::Tick);
    assert_eq!(persists(&effects), vec![1], "the timeout's safety record");
    assert_eq!(
        timeouts_sent(&effects),
        0,
        "nothing leaves before it is durable"
    );
    assert_eq!(
        r.core().safety().last_timeout.as_ref().map(|t| t.round),
        Some(1)
    );
    (r, TIMEOUT_MS)
}

fn installed_header(height: u64) -> BlockHeader {
    BlockHeader {
        id: BlockId([height as u8; 32]),
        parent: BlockId([height as u8 - 1; 32]),
        round: height + 10,
        height,
    }
}

#[test]
fn a_stored_timeout_does_not_leave_before_the_persists_queued_before_an_install_are_durable() {
    let fx = fixture(2);
    let (mut r, now) = timed_out_replica(&fx);
    let mut effects = r.handle(now + 10, Input::Installed(Ok(installed_header(50))));
    // Storage is slow: the timeout's persist is still not durable. Time passes well beyond
    // any round timeout of a rebuilt core, which would re-send its stored timeout.
    for t in (now + 20..now + 20 * TIMEOUT_MS).step_by(100) {
        effects.extend(r.handle(t, Input::Tick));
    }
    assert_eq!(
        timeouts_sent(&effects),
        0,
        "a timeout left while the safety record holding it was not durable"
    );
    assert_eq!(
        r.core().committed().height,
        0,
        "not rebuilt before the persist is durable"
    );
    // The persist becomes durable: the held timeout may leave now, and the core is rebuilt on
    // top of the snapshot.
    let t = now + 20 * TIMEOUT_MS;
    let effects = r.handle(t, Input::Durable { ticket: 1 });
    assert_eq!(r.core().committed().height, 50);
    assert_eq!(
        timeouts_sent(&effects),
        1,
        "the old core releases its timeout"
    );
}
