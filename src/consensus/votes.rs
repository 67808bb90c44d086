//! Collects votes into quorum certificates.
//!
//! Invariants: one vote per voter per round is counted (a second vote for another block is
//! equivocation, counted and ignored); a QC is formed once per (round, block); memory is
//! bounded by the caller's round window times `n`.

use std::collections::{BTreeMap, HashMap};

use crate::types::{BlockId, NodeId, QuorumCert, Round, SignerSig, Vote};

#[derive(Default)]
pub struct VoteAggregator {
    rounds: BTreeMap<Round, RoundVotes>,
}

#[derive(Default)]
struct RoundVotes {
    voted: HashMap<NodeId, BlockId>,
    by_block: HashMap<BlockId, Vec<SignerSig>>,
    certified: bool,
}

/// What adding a vote did.
#[derive(Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    Counted,
    QuorumFormed(QuorumCert),
    Duplicate,
    Equivocation,
}

impl VoteAggregator {
    pub fn add(&mut self, vote: &Vote, quorum: usize) -> VoteOutcome {
        let round = self.rounds.entry(vote.round).or_default();
        match round.voted.get(&vote.voter) {
            Some(b) if *b == vote.block_id => return VoteOutcome::Duplicate,
            Some(_) => return VoteOutcome::Equivocation,
            None => {}
        }
        round.voted.insert(vote.voter, vote.block_id);
        let sigs = round.by_block.entry(vote.block_id).or_default();
        sigs.push(SignerSig {
            node: vote.voter,
            sig: vote.signature,
        });
        if sigs.len() >= quorum && !round.certified {
            round.certified = true;
            let mut votes = sigs.clone();
            votes.sort_by_key(|s| s.node);
            return VoteOutcome::QuorumFormed(QuorumCert {
                block_id: vote.block_id,
                round: vote.round,
                votes,
            });
        }
        VoteOutcome::Counted
    }

    /// Forgets rounds below `round`.
    pub fn prune_below(&mut self, round: Round) {
        self.rounds = self.rounds.split_off(&round);
    }

    #[cfg(test)]
    pub fn rounds_held(&self) -> usize {
        self.rounds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Sig;

    fn vote(voter: u16, block: u8, round: Round) -> Vote {
        Vote {
            block_id: BlockId([block; 32]),
            round,
            voter: NodeId(voter),
            signature: Sig([voter as u8; 64]),
        }
    }

    #[test]
    fn forms_one_sorted_qc_at_quorum_and_ignores_duplicates_and_equivocation() {
        let mut agg = VoteAggregator::default();
        assert_eq!(agg.add(&vote(2, 1, 5), 3), VoteOutcome::Counted);
        assert_eq!(agg.add(&vote(2, 1, 5), 3), VoteOutcome::Duplicate);
        assert_eq!(agg.add(&vote(2, 9, 5), 3), VoteOutcome::Equivocation);
        assert_eq!(agg.add(&vote(0, 1, 5), 3), VoteOutcome::Counted);
        let VoteOutcome::QuorumFormed(qc) = agg.add(&vote(1, 1, 5), 3) else {
            panic!("expected a QC");
        };
        let signers: Vec<u16> = qc.votes.iter().map(|s| s.node.0).collect();
        assert_eq!(signers, vec![0, 1, 2]);
        assert_eq!(
            agg.add(&vote(3, 1, 5), 3),
            VoteOutcome::Counted,
            "one QC per round"
        );
    }

    #[test]
    fn split_votes_never_form_a_qc() {
        let mut agg = VoteAggregator::default();
        for (v, b) in [(0, 1), (1, 2), (2, 1), (3, 2)] {
            assert!(!matches!(
                agg.add(&vote(v, b, 1), 3),
                VoteOutcome::QuorumFormed(_)
            ));
        }
    }

    #[test]
    fn prunes_old_rounds() {
        let mut agg = VoteAggregator::default();
        for r in 1..10 {
            agg.add(&vote(0, 1, r), 3);
        }
        agg.prune_below(7);
        assert_eq!(agg.rounds_held(), 3);
    }
}
