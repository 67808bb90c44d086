//! The consensus core driven by hand, one event at a time: the persistence rule (nothing that
//! depends on safety state leaves before the runtime reports it durable), restart without
//! double voting, and bounded handling of far-future input.

use bftd::consensus::{Action, Core, CoreConfig, DurableState, Event, PersistItem, SafetyData};
use bftd::crypto::{Signer, domain};
use bftd::types::*;

#[path = "support/core_committee.rs"]
mod core_committee;

use core_committee::TestCommittee;

type Cluster = TestCommittee;

fn cluster() -> Cluster {
    TestCommittee::new("core-tests", 10)
}

impl Cluster {
    fn request(&self, seq: u64) -> ClientRequest {
        let signer = Signer::new([99; 32], self.cluster);
        let client = ClientKey(signer.public_key());
        let ops = format!("op {seq}").into_bytes();
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

    /// Round-1 proposal by its leader (node 1) on top of genesis.
    fn proposal(&self, seq: u64) -> Block {
        self.proposal_at(seq, 1_000)
    }

    /// Like [`Cluster::proposal`], stamped `timestamp_ms`.
    fn proposal_at(&self, seq: u64, timestamp_ms: u64) -> Block {
        let mut b = Block {
            round: 1,
            height: 1,
            timestamp_ms,
            qc: QuorumCert::genesis(&self.cluster),
            tc: None,
            roots_after: 0,
            state_roots: Vec::new(),
            payload: vec![self.request(seq)],
            author: NodeId(1),
            signature: Sig::ZERO,
        };
        let id = b.compute_id();
        b.signature = self
            .signer(1)
            .sign(domain::PROPOSAL, &domain::proposal_body(&id));
        b
    }

    fn deliver(&self, core: &mut Core, now: u64, from: u16, msg: Message) -> Vec<Action> {
        let msg = self
            .verifier
            .verify_message(msg)
            .expect("test message verifies");
        core.handle(
            now,
            Event::MessageReceived {
                from: NodeId(from),
                msg,
            },
        )
    }

    fn submit(&self, core: &mut Core, now: u64, seq: u64) -> Vec<Action> {
        let mut v = self.verifier.verify_requests(vec![self.request(seq)]);
        let req = v.pop().unwrap().expect("request verifies");
        core.handle(now, Event::RequestReceived(req))
    }
}

fn persist_ticket(actions: &[Action]) -> Option<(u64, Vec<PersistItem>)> {
    actions.iter().find_map(|a| match a {
        Action::Persist { ticket, items } => Some((*ticket, items.clone())),
        _ => None,
    })
}

/// Votes the core let out: `None` as the destination means broadcast to every member.
fn votes(actions: &[Action]) -> Vec<(Option<NodeId>, Vote)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                msg: Message::Vote(v),
            } => Some((Some(*to), v.clone())),
            Action::Broadcast {
                msg: Message::Vote(v),
            } => Some((None, v.clone())),
            _ => None,
        })
        .collect()
}

fn broadcasts(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast { msg } => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_vote_leaves_only_after_the_block_and_safety_state_are_durable() {
    let c = cluster();
    let mut core = c.core(3, None);
    let actions = c.deliver(&mut core, 10, 1, Message::Proposal(c.proposal(1)));
    assert!(
        votes(&actions).is_empty(),
        "vote sent before persistence: {actions:?}"
    );
    let (ticket, items) =
        persist_ticket(&actions).expect("the block and the vote's safety state are persisted");
    assert!(items.iter().any(|i| matches!(i, PersistItem::Block { .. })));
    assert!(
        items
            .iter()
            .any(|i| matches!(i, PersistItem::Safety(s) if s.highest_voted_round == 1))
    );

    let after = core.handle(11, Event::Persisted { ticket });
    let v = votes(&after);
    assert_eq!(v.len(), 1, "exactly one vote once durable: {after:?}");
    assert_eq!(v[0].0, None, "votes go to every member (each aggregates)");
    assert_eq!(v[0].1.round, 1);
}

/// Consensus time: a voter refuses a block not above its parent's time, or further ahead of
/// its own wall clock than `block_time_ahead_max_ms`; a block behind its clock is fine. Each
/// case is a fresh voter (one proposal per round).
#[test]
fn a_voter_bounds_block_time_by_the_parent_and_its_own_clock() {
    let c = cluster();
    let wall_ms = 1_700_000_000_000;
    let ahead_max_ms = CoreConfig::default().block_time_ahead_max_ms;
    let cases = [
        (0, false, "not above genesis (0)"),
        (wall_ms + ahead_max_ms + 1, false, "too far ahead"),
        (wall_ms + ahead_max_ms, true, "at the bound"),
        (wall_ms - 60_000, true, "behind the voter's clock"),
    ];
    for (time_ms, votes_for_it, what) in cases {
        let mut core = c.core(3, None);
        core.set_wall_clock_ms(wall_ms);
        let actions = c.deliver(
            &mut core,
            10,
            1,
            Message::Proposal(c.proposal_at(1, time_ms)),
        );
        let voted = match persist_ticket(&actions) {
            Some((ticket, _)) => !votes(&core.handle(11, Event::Persisted { ticket })).is_empty(),
            None => false,
        };
        assert_eq!(voted, votes_for_it, "{what}");
        let st = core.stats();
        assert_eq!(
            (
                st.votes_refused_time_not_increasing,
                st.votes_refused_time_ahead
            ),
            match time_ms {
                0 => (1, 0),
                t if t > wall_ms + ahead_max_ms => (0, 1),
                _ => (0, 0),
            },
            "{what}"
        );
    }
}

/// The leader stamps its wall clock, or its parent's time + 1 when its clock is behind.
#[test]
fn the_leader_stamps_its_clock_but_never_at_or_below_the_parent() {
    let c = cluster();
    for (wall_ms, want) in [(5_000, 5_000), (0, 1)] {
        let mut leader = c.core(1, None);
        leader.set_wall_clock_ms(wall_ms);
        let actions = c.submit(&mut leader, 5, 1);
        let (ticket, _) = persist_ticket(&actions).expect("proposal persisted");
        let after = leader.handle(6, Event::Persisted { ticket });
        let stamped = broadcasts(&after).into_iter().find_map(|m| match m {
            Message::Proposal(b) => Some(b.timestamp_ms),
            _ => None,
        });
        assert_eq!(stamped, Some(want), "wall clock {wall_ms}");
    }
}

/// An idle leader proposes an empty block once a key expiry is due by its clock (and not
/// before): the block's timestamp, past the expiry, is what deletes the key. Before it is
/// due, the core asks to be woken when it will be.
#[test]
fn an_idle_leader_proposes_when_a_key_expiry_falls_due() {
    let c = cluster();
    let mut leader = c.core(1, None);
    leader.set_wall_clock_ms(5_000);
    leader.set_next_expiry_ms(Some(9_000));
    let actions = leader.start(100);
    assert!(
        persist_ticket(&actions).is_none(),
        "nothing due: {actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetTimer { deadline_ms } if *deadline_ms == 4_100)),
        "wakes when the expiry falls due: {actions:?}"
    );
    leader.set_wall_clock_ms(9_000);
    let actions = leader.handle(4_100, Event::TimerFired);
    let (ticket, _) = persist_ticket(&actions).expect("an empty block is proposed");
    let after = leader.handle(4_101, Event::Persisted { ticket });
    let proposed = broadcasts(&after).into_iter().find_map(|m| match m {
        Message::Proposal(b) => Some(b),
        _ => None,
    });
    let b = proposed.expect("proposal broadcast");
    assert!(b.payload.is_empty() && b.timestamp_ms >= 9_000, "{b:?}");
}

/// More keys fell due than one block expires: after the committed block is applied, the
/// state still holds a key whose expiry is at or before that block's time. The leader keeps
/// proposing (each block expires the next share) without any `note_expired` mark, which a
/// restart does not replay. Here the committed block is genesis (time 0), already applied.
#[test]
fn a_leader_whose_applied_state_still_holds_due_keys_proposes_after_a_restart() {
    let c = cluster();
    let mut leader = c.core(1, None);
    leader.set_wall_clock_ms(5_000);
    leader.set_next_expiry_ms(Some(0));
    let actions = leader.start(100);
    let (ticket, _) = persist_ticket(&actions).expect("an empty block is proposed");
    let after = leader.handle(101, Event::Persisted { ticket });
    let proposed = broadcasts(&after).into_iter().find_map(|m| match m {
        Message::Proposal(b) => Some(b),
        _ => None,
    });
    let b = proposed.expect("proposal broadcast");
    assert!(b.payload.is_empty() && b.timestamp_ms >= 5_000, "{b:?}");
}

/// A member that is not the round's scheduled leader signs a proposal first: it passes the
/// stateless verifier (its author is a member), but the core refuses it before it can take
/// the round's one proposal slot, so the real leader's proposal still gets the vote.
#[test]
fn a_proposal_by_a_non_leader_cannot_take_the_real_leaders_slot() {
    let c = cluster();
    let mut core = c.core(3, None);
    let mut fake = c.proposal(2);
    fake.author = NodeId(2);
    let id = fake.compute_id();
    fake.signature = c
        .signer(2)
        .sign(domain::PROPOSAL, &domain::proposal_body(&id));
    let actions = c.deliver(&mut core, 10, 2, Message::Proposal(fake));
    assert!(persist_ticket(&actions).is_none(), "{actions:?}");
    assert_eq!(core.stats().proposals_wrong_leader, 1);

    let real = c.proposal(1);
    let actions = c.deliver(&mut core, 11, 1, Message::Proposal(real.clone()));
    let (ticket, _) = persist_ticket(&actions).expect("the real proposal is stored");
    let after = core.handle(12, Event::Persisted { ticket });
    let v = votes(&after);
    assert_eq!(v.len(), 1, "{after:?}");
    assert_eq!(v[0].1.block_id, real.compute_id());
    assert_eq!(core.stats().equivocations_seen, 0);
}

#[test]
fn a_restarted_node_resends_its_vote_and_never_votes_twice_in_a_round() {
    let c = cluster();
    let mut core = c.core(3, None);
    let b1 = c.proposal(1);
    let actions = c.deliver(&mut core, 10, 1, Message::Proposal(b1.clone()));
    let (ticket, items) = persist_ticket(&actions).unwrap();
    let first_vote = votes(&core.handle(11, Event::Persisted { ticket }))[0]
        .1
        .clone();

    // Crash; restart from exactly what was persisted.
    let mut safety = SafetyData::genesis(&c.cluster);
    let mut blocks = Vec::new();
    for item in items {
        match item {
            PersistItem::Safety(s) => safety = s,
            PersistItem::Block { id, block } => blocks.push((id, block)),
        }
    }
    let durable = DurableState {
        safety,
        blocks,
        committed: Block::genesis_header(&c.cluster),
    };
    // The same proposal again: the stored vote is re-sent, not re-signed.
    let mut restarted = c.core(3, Some(durable.clone()));
    restarted.start(20);
    assert_eq!(
        restarted.round(),
        1,
        "resumes at max(QC round, TC round) + 1"
    );
    let again = c.deliver(&mut restarted, 21, 1, Message::Proposal(b1));
    assert_eq!(
        votes(&again)
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        vec![first_vote]
    );

    // A conflicting proposal for the same round, as the first thing a restarted node sees:
    // only the persisted highest voted round stands between it and a second vote.
    let mut restarted = c.core(3, Some(durable));
    restarted.start(20);
    let actions = c.deliver(&mut restarted, 22, 1, Message::Proposal(c.proposal(2)));
    let later: Vec<Action> = match persist_ticket(&actions) {
        Some((t, _)) => restarted.handle(23, Event::Persisted { ticket: t }),
        None => Vec::new(),
    };
    assert!(
        votes(&actions).is_empty() && votes(&later).is_empty(),
        "voted twice in round 1"
    );
}

#[test]
fn the_leader_persists_its_proposal_before_broadcasting_it() {
    let c = cluster();
    let mut leader = c.core(1, None);
    let actions = c.submit(&mut leader, 5, 1);
    assert!(
        broadcasts(&actions).is_empty(),
        "proposal left before persistence: {actions:?}"
    );
    let (ticket, items) = persist_ticket(&actions).expect("proposal persisted");
    assert!(
        items
            .iter()
            .any(|i| matches!(i, PersistItem::Safety(s) if s.highest_proposed_round == 1))
    );
    let after = leader.handle(6, Event::Persisted { ticket });
    let sent: Vec<Message> = broadcasts(&after)
        .into_iter()
        .filter(|m| !matches!(m, Message::Vote(_)))
        .collect();
    assert!(matches!(&sent[..], [Message::Proposal(b)] if b.round == 1 && b.payload.len() == 1));
    assert_eq!(votes(&after).len(), 1, "the leader votes for its own block");
}

#[test]
fn a_stuck_round_times_out_once_then_rebroadcasts_the_same_timeout() {
    let c = cluster();
    let mut core = c.core(3, None);
    let armed = c.submit(&mut core, 0, 1);
    let deadline = armed
        .iter()
        .find_map(|a| match a {
            Action::SetTimer { deadline_ms } => Some(*deadline_ms),
            _ => None,
        })
        .expect("pending work arms the round timer");
    assert!(
        core.handle(deadline - 1, Event::TimerFired).is_empty(),
        "a stale timer is ignored (the live one is still set)"
    );
    let fired = core.handle(deadline, Event::TimerFired);
    assert!(
        broadcasts(&fired).is_empty(),
        "timeout sent before persistence"
    );
    let (ticket, _) = persist_ticket(&fired).unwrap();
    let sent = broadcasts(&core.handle(deadline + 1, Event::Persisted { ticket }));
    let Some(Message::Timeout(t1)) = sent.first() else {
        panic!("expected a timeout, got {sent:?}");
    };
    assert_eq!(t1.round, 1);

    // The backed-off timer fires again in the same round: same timeout, no new signature.
    let next = core.handle(deadline + 100_000, Event::TimerFired);
    assert!(persist_ticket(&next).is_none());
    assert!(matches!(broadcasts(&next).first(), Some(Message::Timeout(t2)) if t2 == t1));
}

#[test]
fn far_future_votes_are_counted_and_dropped() {
    let c = cluster();
    let mut core = c.core(3, None);
    let signer = c.signer(0);
    let vote = |round: u64| {
        let id = BlockId([7; 32]);
        Vote {
            block_id: id,
            round,
            voter: NodeId(0),
            signature: signer.sign(domain::VOTE, &domain::vote_body(&id, round)),
        }
    };
    for i in 0..50 {
        c.deliver(&mut core, i, 0, Message::Vote(vote(1_000_002)));
    }
    let stats = core.stats();
    assert_eq!(stats.dropped_far_future, 50);
    assert_eq!(core.round(), 1, "uncertified input never moves the round");
}

#[test]
fn a_restarted_node_does_not_order_a_committed_request_again() {
    let c = cluster();
    let b1 = c.proposal(1);
    let id = b1.compute_id();
    let durable = DurableState {
        safety: SafetyData::genesis(&c.cluster),
        blocks: vec![(id, b1.clone())],
        committed: b1.header(id),
    };
    let mut core = c.core(3, Some(durable));
    core.start(0);
    // A late copy of the request that block 1 committed (a client retry, a slow peer).
    c.submit(&mut core, 1, 1);
    assert_eq!(
        core.mempool_len(),
        0,
        "a committed request re-entered the mempool"
    );
    assert_eq!(core.stats().requests_duplicate, 1);
    c.submit(&mut core, 2, 2);
    assert_eq!(core.mempool_len(), 1, "a new request is still accepted");
}
