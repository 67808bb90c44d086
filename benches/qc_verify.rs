//! The cost of checking a QC (2f+1 = 3 vote signatures, n = 4) inside a `SyncInfo`, as a
//! verifier thread pays it: `cold` (no signature known), `own_vote_unknown` (the other two
//! votes arrived as votes before, the usual case: a node does not receive its own vote), and
//! `all_votes_known`. Each measured call gets a fresh verifier (building it and verifying the
//! earlier votes are not timed), so only the seen-cache contents differ between the cases.
//!
//! `cargo bench --bench qc_verify`

use std::sync::Arc;

use bftd::crypto::{ClientPolicy, Committee, Signer, Verifier, VerifierLimits, domain};
use bftd::types::{BlockId, ClusterId, Message, NodeId, QuorumCert, SignerSig, SyncInfo, Vote};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const ROUND: u64 = 7;

fn cluster() -> ClusterId {
    ClusterId::from_name("bench")
}

fn signers() -> Vec<Signer> {
    (0..4u8)
        .map(|i| Signer::new([i + 1; 32], cluster()))
        .collect()
}

fn verifier(signers: &[Signer]) -> Verifier {
    let keys: Vec<[u8; 32]> = signers.iter().map(Signer::public_key).collect();
    let committee = Arc::new(Committee::new(cluster(), &keys, 1).expect("committee"));
    Verifier::new(committee, VerifierLimits::default(), ClientPolicy::Any)
}

fn vote(signers: &[Signer], node: u16, block: BlockId) -> Vote {
    Vote {
        block_id: block,
        round: ROUND,
        voter: NodeId(node),
        signature: signers[node as usize].sign(domain::VOTE, &domain::vote_body(&block, ROUND)),
    }
}

fn qc_checks(c: &mut Criterion) {
    let signers = signers();
    let block = BlockId([9; 32]);
    let votes: Vec<Vote> = (0..3).map(|n| vote(&signers, n, block)).collect();
    let qc = QuorumCert {
        block_id: block,
        round: ROUND,
        votes: votes
            .iter()
            .map(|v| SignerSig {
                node: v.voter,
                sig: v.signature,
            })
            .collect(),
    };
    let info = Message::SyncInfo(SyncInfo {
        high_qc: qc,
        high_tc: None,
    });
    let mut group = c.benchmark_group("qc_verify");
    for (name, known) in [
        ("cold", 0usize),
        ("own_vote_unknown", 2),
        ("all_votes_known", 3),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let v = verifier(&signers);
                    for vote in &votes[3 - known..] {
                        assert!(v.verify_message(Message::Vote(vote.clone())).is_ok());
                    }
                    (v, info.clone())
                },
                |(v, msg)| assert!(v.verify_message(msg).is_ok()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, qc_checks);
criterion_main!(benches);
