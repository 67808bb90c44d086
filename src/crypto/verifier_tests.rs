//! Unit tests of the verifier: every forged, misdirected or malformed input is refused with
//! the right reason, and one bad message in a batch does not condemn the others.

use std::sync::Arc;

use super::*;
use crate::crypto::Signer;
use crate::types::*;

struct Fixture {
    cluster: ClusterId,
    signers: Vec<Signer>,
    verifier: Verifier,
}

fn fixture(policy: ClientPolicy) -> Fixture {
    let cluster = ClusterId::from_name("verifier-tests");
    let signers: Vec<Signer> = (0..4u8)
        .map(|i| Signer::new([i + 1; 32], cluster))
        .collect();
    let keys: Vec<[u8; 32]> = signers.iter().map(Signer::public_key).collect();
    let committee = Arc::new(Committee::new(cluster, &keys, 1).unwrap());
    let verifier = Verifier::new(committee, VerifierLimits::default(), policy);
    Fixture {
        cluster,
        signers,
        verifier,
    }
}

impl Fixture {
    fn vote(&self, signer: usize, voter: u16, block_id: BlockId, round: Round) -> Vote {
        Vote {
            block_id,
            round,
            voter: NodeId(voter),
            signature: self.signers[signer]
                .sign(domain::VOTE, &domain::vote_body(&block_id, round)),
        }
    }

    fn qc(&self, block_id: BlockId, round: Round, voters: &[u16]) -> QuorumCert {
        QuorumCert {
            block_id,
            round,
            votes: voters
                .iter()
                .map(|&v| SignerSig {
                    node: NodeId(v),
                    sig: self.vote(v as usize, v, block_id, round).signature,
                })
                .collect(),
        }
    }

    fn block(&self, round: Round, height: Height, qc: QuorumCert) -> Block {
        let author = NodeId((round % 4) as u16);
        let mut b = Block {
            round,
            height,
            timestamp_ms: 0,
            qc,
            tc: None,
            roots_after: 0,
            state_roots: Vec::new(),
            payload: vec![self.request(7, 1)],
            author,
            signature: Sig::ZERO,
        };
        let id = b.compute_id();
        b.signature =
            self.signers[author.index()].sign(domain::PROPOSAL, &domain::proposal_body(&id));
        b
    }

    fn request(&self, client_secret: u8, seq: u64) -> ClientRequest {
        let signer = Signer::new([client_secret; 32], self.cluster);
        let client = ClientKey(signer.public_key());
        let ops = b"put k v".to_vec();
        ClientRequest {
            client,
            session: 1,
            seq,
            signature: signer.sign(
                domain::REQUEST,
                &domain::request_body(&client, 1, seq, &ops),
            ),
            ops,
        }
    }

    fn check(&self, msg: Message) -> Result<VerifiedMessage, VerifyError> {
        self.verifier.verify_message(msg).map(Verified::into_inner)
    }
}

fn genesis_child(f: &Fixture) -> Block {
    f.block(1, 1, QuorumCert::genesis(&f.cluster))
}

#[test]
fn a_valid_proposal_passes_and_carries_its_computed_id() {
    let f = fixture(ClientPolicy::Any);
    let b = genesis_child(&f);
    match f.check(Message::Proposal(b.clone())) {
        Ok(VerifiedMessage::Proposal { id, .. }) => assert_eq!(id, b.compute_id()),
        other => panic!("expected a verified proposal, got {other:?}"),
    }
}

#[test]
fn vote_signed_by_another_key_is_rejected() {
    let f = fixture(ClientPolicy::Any);
    let v = f.vote(2, 1, BlockId([1; 32]), 3);
    assert_eq!(
        f.check(Message::Vote(v)).unwrap_err(),
        VerifyError::BadSignature("vote")
    );
}

#[test]
fn signature_under_another_domain_tag_is_rejected() {
    let f = fixture(ClientPolicy::Any);
    let id = BlockId([1; 32]);
    let mut v = f.vote(1, 1, id, 3);
    v.signature = f.signers[1].sign(domain::PROPOSAL, &domain::vote_body(&id, 3));
    assert_eq!(
        f.check(Message::Vote(v)).unwrap_err(),
        VerifyError::BadSignature("vote")
    );
}

#[test]
fn signature_from_another_cluster_is_rejected() {
    let f = fixture(ClientPolicy::Any);
    let other = Signer::new([2; 32], ClusterId::from_name("another-cluster"));
    let id = BlockId([1; 32]);
    let mut v = f.vote(1, 1, id, 3);
    v.signature = other.sign(domain::VOTE, &domain::vote_body(&id, 3));
    assert_eq!(
        f.check(Message::Vote(v)).unwrap_err(),
        VerifyError::BadSignature("vote")
    );
}

#[test]
fn malleated_signature_is_rejected() {
    let f = fixture(ClientPolicy::Any);
    let mut v = f.vote(1, 1, BlockId([1; 32]), 3);
    crate::crypto::sig_batch::add_group_order_to_s(&mut v.signature);
    assert_eq!(
        f.check(Message::Vote(v)).unwrap_err(),
        VerifyError::BadSignature("vote")
    );
}

#[test]
fn unknown_voters_and_authors_are_rejected_and_the_leader_is_left_to_the_core() {
    let f = fixture(ClientPolicy::Any);
    let v = f.vote(1, 9, BlockId([1; 32]), 3);
    assert_eq!(
        f.check(Message::Vote(v)).unwrap_err(),
        VerifyError::UnknownSigner(NodeId(9))
    );
    let mut b = genesis_child(&f);
    b.author = NodeId(9);
    assert_eq!(
        f.check(Message::Proposal(b)).unwrap_err(),
        VerifyError::UnknownSigner(NodeId(9))
    );
}

#[test]
fn quorum_certificates_must_be_canonical_quorums_of_valid_votes() {
    let f = fixture(ClientPolicy::Any);
    let parent = BlockId([5; 32]);
    let ok = f.qc(parent, 4, &[0, 1, 3]);
    assert!(
        f.check(Message::Proposal(f.block(5, 2, ok.clone())))
            .is_ok()
    );

    let short = f.qc(parent, 4, &[0, 1]);
    assert!(matches!(
        f.check(Message::Proposal(f.block(5, 2, short))),
        Err(VerifyError::Malformed(_))
    ));

    let mut dup = ok.clone();
    dup.votes[1] = dup.votes[0];
    assert!(matches!(
        f.check(Message::Proposal(f.block(5, 2, dup))),
        Err(VerifyError::Malformed(_))
    ));

    let mut forged = ok.clone();
    forged.votes[2].sig.0[5] ^= 1;
    assert_eq!(
        f.check(Message::Proposal(f.block(5, 2, forged)))
            .unwrap_err(),
        VerifyError::BadSignature("QC vote")
    );

    let mut fake_genesis = QuorumCert::genesis(&f.cluster);
    fake_genesis.block_id = BlockId([9; 32]);
    assert!(matches!(
        f.check(Message::Proposal(f.block(1, 1, fake_genesis))),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn state_roots_must_be_bounded_increasing_and_below_the_grandparent() {
    let f = fixture(ClientPolicy::Any);
    let resign = |mut b: Block| {
        let id = b.compute_id();
        b.signature =
            f.signers[b.author.index()].sign(domain::PROPOSAL, &domain::proposal_body(&id));
        b
    };
    let qc = f.qc(BlockId([5; 32]), 9, &[0, 1, 2]);
    let mut ok = f.block(10, 10, qc);
    ok.roots_after = 3;
    ok.state_roots = vec![(4, [1; 32]), (8, [2; 32])];
    let ok = resign(ok);
    assert!(f.check(Message::Proposal(ok.clone())).is_ok());
    type Case = (Vec<(Height, [u8; 32])>, Height, &'static str);
    let cases: Vec<Case> = vec![
        (vec![(3, [1; 32])], 10, "not above roots_after"),
        (
            vec![(5, [1; 32]), (5, [2; 32])],
            10,
            "not strictly increasing",
        ),
        (
            vec![(9, [1; 32])],
            10,
            "the parent's height: its QC commits no more than 8",
        ),
        (
            (4..4 + STATE_ROOTS_MAX as u64 + 1)
                .map(|h| (h, [0; 32]))
                .collect(),
            1000,
            "too many",
        ),
    ];
    for (roots, height, why) in cases {
        let mut b = ok.clone();
        b.height = height;
        b.state_roots = roots;
        let b = resign(b);
        assert!(
            matches!(
                f.check(Message::Proposal(b)),
                Err(VerifyError::Malformed(_) | VerifyError::TooLarge(_))
            ),
            "{why}"
        );
    }
}

#[test]
fn a_block_must_be_justified_by_the_previous_round() {
    let f = fixture(ClientPolicy::Any);
    let qc = f.qc(BlockId([5; 32]), 2, &[0, 1, 2]);
    // Round 5 after a QC of round 2 needs a TC for round 4.
    assert!(matches!(
        f.check(Message::Proposal(f.block(5, 2, qc))),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn timeout_certificates_must_report_their_highest_qc_honestly() {
    let f = fixture(ClientPolicy::Any);
    let qc = f.qc(BlockId([5; 32]), 2, &[0, 1, 2]);
    let timeouts: Vec<TimeoutSig> = [0u16, 1, 2]
        .iter()
        .map(|&n| TimeoutSig {
            node: NodeId(n),
            high_qc_round: 2,
            sig: f.signers[n as usize].sign(domain::TIMEOUT, &domain::timeout_body(4, 2)),
        })
        .collect();
    let tc = TimeoutCert {
        round: 4,
        high_qc: qc.clone(),
        timeouts,
    };
    let mut b = f.block(5, 2, qc.clone());
    b.tc = Some(tc.clone());
    let id = b.compute_id();
    b.signature = f.signers[1].sign(domain::PROPOSAL, &domain::proposal_body(&id));
    assert!(f.check(Message::Proposal(b.clone())).is_ok());

    // Claiming a lower high QC than the signers reported is refused.
    let mut lying = tc;
    lying.high_qc = QuorumCert::genesis(&f.cluster);
    let info = SyncInfo {
        high_qc: qc,
        high_tc: Some(lying),
    };
    assert!(matches!(
        f.check(Message::SyncInfo(info)),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn clients_outside_the_allow_list_are_not_authorised() {
    let f = fixture(ClientPolicy::Any);
    let allowed = f.request(7, 1);
    let policy = ClientPolicy::allow_list(&[allowed.client.0]).unwrap();
    let f = Fixture {
        verifier: Verifier::new(
            Arc::new(f.verifier.committee().clone()),
            VerifierLimits::default(),
            policy,
        ),
        ..f
    };
    let stranger = f.request(8, 1);
    let mut forged = f.request(7, 2);
    forged.seq = 3;
    let results = f
        .verifier
        .verify_requests(vec![allowed, stranger.clone(), forged]);
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err(),
        &VerifyError::NotAuthorised(stranger.client)
    );
    assert_eq!(
        results[2].as_ref().unwrap_err(),
        &VerifyError::BadSignature("client request")
    );
}

#[test]
fn one_bad_message_in_a_batch_does_not_condemn_the_others() {
    let f = fixture(ClientPolicy::Any);
    let good: Vec<Message> = (1..=3)
        .map(|r| Message::Vote(f.vote(r, r as u16, BlockId([1; 32]), 3)))
        .collect();
    let mut batch = good.clone();
    batch.insert(1, Message::Vote(f.vote(0, 3, BlockId([1; 32]), 3)));
    let results = f.verifier.verify_messages(batch);
    let oks: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(oks, vec![true, false, true, true]);
}

#[test]
fn sync_responses_must_be_one_certified_chain() {
    let f = fixture(ClientPolicy::Any);
    let b1 = genesis_child(&f);
    let b2 = f.block(2, 2, f.qc(b1.compute_id(), 1, &[0, 1, 2]));
    let ok = SyncResponse {
        blocks: vec![b1.clone(), b2.clone()],
    };
    assert!(f.check(Message::SyncResponse(ok)).is_ok());
    let gap = f.block(2, 2, f.qc(BlockId([4; 32]), 1, &[0, 1, 2]));
    let broken = SyncResponse {
        blocks: vec![b1, gap],
    };
    assert!(matches!(
        f.check(Message::SyncResponse(broken)),
        Err(VerifyError::Malformed(_))
    ));
}

/// After a client key is rotated out of the allow-list, certified history that carries it
/// still syncs (signatures checked, not today's membership); a fresh proposal with it is
/// refused, before and after the history passed through the verifier (the seen-cache does not
/// launder it); and a forged signature in history is still a bad signature.
#[test]
fn certified_history_from_a_rotated_out_client_still_syncs() {
    let f = fixture(ClientPolicy::Any);
    let new_client = f.request(9, 1);
    let policy = ClientPolicy::allow_list(&[new_client.client.0]).unwrap();
    let f = Fixture {
        verifier: Verifier::new(
            Arc::new(f.verifier.committee().clone()),
            VerifierLimits::default(),
            policy,
        ),
        ..f
    };
    // Fixture blocks carry a request from client secret 7: the rotated-out key.
    let b1 = genesis_child(&f);
    let old_client = b1.payload[0].client;
    let b2 = f.block(2, 2, f.qc(b1.compute_id(), 1, &[0, 1, 2]));
    assert_eq!(
        f.check(Message::Proposal(b1.clone())).unwrap_err(),
        VerifyError::NotAuthorised(old_client)
    );
    let synced = SyncResponse {
        blocks: vec![b1.clone(), b2.clone()],
    };
    match f.check(Message::SyncResponse(synced)) {
        Ok(VerifiedMessage::SyncResponse { blocks }) => assert_eq!(blocks.len(), 2),
        other => panic!("certified history must verify, got {other:?}"),
    }
    assert_eq!(
        f.check(Message::Proposal(b1.clone())).unwrap_err(),
        VerifyError::NotAuthorised(old_client)
    );
    let results = f.verifier.verify_requests(vec![b1.payload[0].clone()]);
    assert_eq!(
        results[0].as_ref().unwrap_err(),
        &VerifyError::NotAuthorised(old_client)
    );

    let mut forged = b1.clone();
    forged.payload[0].seq += 1;
    let id = forged.compute_id();
    forged.signature = f.signers[1].sign(domain::PROPOSAL, &domain::proposal_body(&id));
    let forged_b2 = f.block(2, 2, f.qc(id, 1, &[0, 1, 2]));
    assert_eq!(
        f.check(Message::SyncResponse(SyncResponse {
            blocks: vec![forged, forged_b2],
        }))
        .unwrap_err(),
        VerifyError::BadSignature("client request")
    );
}

fn sync_info(qc: QuorumCert) -> Message {
    Message::SyncInfo(SyncInfo {
        high_qc: qc,
        high_tc: None,
    })
}

#[test]
fn a_qc_of_votes_already_verified_is_not_checked_again_but_one_unknown_bad_signature_refuses_it() {
    let f = fixture(ClientPolicy::Any);
    let block = BlockId([6; 32]);
    for voter in [0u16, 1] {
        assert!(
            f.check(Message::Vote(f.vote(voter as usize, voter, block, 7)))
                .is_ok()
        );
    }
    // Votes 0 and 1 are known; a forged third signature is still checked and refused.
    let mut forged = f.qc(block, 7, &[0, 1, 2]);
    forged.votes[2].sig.0[9] ^= 1;
    assert_eq!(
        f.check(sync_info(forged.clone())).unwrap_err(),
        VerifyError::BadSignature("QC vote")
    );
    // Nor does the refused QC leave anything behind that would vouch for it later.
    assert_eq!(
        f.check(sync_info(forged)).unwrap_err(),
        VerifyError::BadSignature("QC vote")
    );
    // The honest QC passes, and so do the cached signatures inside a proposal's QC.
    let qc = f.qc(block, 7, &[0, 1, 2]);
    assert!(f.check(sync_info(qc.clone())).is_ok());
    assert!(f.check(Message::Proposal(f.block(8, 2, qc))).is_ok());
}

#[test]
fn a_cached_vote_signature_vouches_only_for_its_own_message_and_signer() {
    let f = fixture(ClientPolicy::Any);
    let block = BlockId([6; 32]);
    let v = f.vote(0, 0, block, 7);
    assert!(f.check(Message::Vote(v.clone())).is_ok());
    // The same signature bytes claimed for another round, block or signer are checked.
    for (b, round, node) in [(block, 8, 0u16), (BlockId([7; 32]), 7, 0), (block, 7, 3)] {
        let mut qc = f.qc(b, round, &[0, 1, 3]);
        let at = qc
            .votes
            .iter()
            .position(|s| s.node == NodeId(node))
            .unwrap();
        qc.votes[at].sig = v.signature;
        let same = b == block && round == 7 && node == 0;
        assert_eq!(f.check(sync_info(qc)).is_ok(), same, "{b:?} {round} {node}");
    }
    // A signature the cache names is not checked again: a garbage one planted in the cache
    // passes, which is what shows the cache is consulted (only the verifier can insert).
    let mut qc = f.qc(block, 9, &[0, 1, 2]);
    qc.votes[1].sig.0[3] ^= 1;
    f.verifier
        .seen
        .insert(vote_sig_digest(&block, 9, NodeId(1), &qc.votes[1].sig));
    assert!(f.check(sync_info(qc)).is_ok());
}

#[test]
fn a_vote_with_a_bad_signature_is_not_remembered() {
    let f = fixture(ClientPolicy::Any);
    let block = BlockId([6; 32]);
    let mut bad = f.vote(1, 1, block, 7);
    bad.signature.0[40] ^= 1;
    assert!(f.check(Message::Vote(bad.clone())).is_err());
    let mut qc = f.qc(block, 7, &[0, 1, 2]);
    qc.votes[1].sig = bad.signature;
    assert_eq!(
        f.check(sync_info(qc)).unwrap_err(),
        VerifyError::BadSignature("QC vote")
    );
}

#[test]
fn timeout_signatures_already_verified_are_not_checked_again_in_a_tc() {
    let f = fixture(ClientPolicy::Any);
    let qc = f.qc(BlockId([5; 32]), 2, &[0, 1, 2]);
    let timeout = |n: u16| Timeout {
        round: 4,
        high_qc: qc.clone(),
        author: NodeId(n),
        signature: f.signers[n as usize].sign(domain::TIMEOUT, &domain::timeout_body(4, 2)),
    };
    for n in [0u16, 1, 2] {
        assert!(f.check(Message::Timeout(timeout(n))).is_ok());
    }
    let mut tc = TimeoutCert {
        round: 4,
        high_qc: qc.clone(),
        timeouts: [0u16, 1, 2]
            .iter()
            .map(|&n| TimeoutSig {
                node: NodeId(n),
                high_qc_round: 2,
                sig: timeout(n).signature,
            })
            .collect(),
    };
    let info = |tc: TimeoutCert| {
        Message::SyncInfo(SyncInfo {
            high_qc: qc.clone(),
            high_tc: Some(tc),
        })
    };
    assert!(f.check(info(tc.clone())).is_ok());
    // A signature for another reported QC round is not the cached one: checked, refused.
    tc.timeouts[2].high_qc_round = 1;
    assert_eq!(
        f.check(info(tc)).unwrap_err(),
        VerifyError::BadSignature("TC timeout")
    );
}

#[test]
fn any_policy_keys_are_cached_but_weak_keys_stay_refused() {
    let f = fixture(ClientPolicy::Any);
    let r = f.request(7, 1);
    assert!(f.verifier.verify_requests(vec![r.clone()])[0].is_ok());
    assert!(f.verifier.client_keys.keys.lock().contains_key(&r.client));
    let mut weak = f.request(7, 2);
    weak.client = ClientKey([0; 32]); // not a usable point... or a small-order one
    weak.client.0[0] = 1; // the identity point's encoding: small order
    for _ in 0..2 {
        assert!(matches!(
            f.verifier.verify_requests(vec![weak.clone()])[0],
            Err(VerifyError::Malformed(_))
        ));
    }
    assert!(
        !f.verifier
            .client_keys
            .keys
            .lock()
            .contains_key(&weak.client)
    );
}
