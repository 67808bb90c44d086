//! The safety rules and the durable state they guard (aptos "safety rules" shape):
//! check the rule, update the safety data, persist, and only then sign and send.
//!
//! Invariants:
//! - `highest_voted_round` only grows; no vote and no timeout is ever produced for a round at
//!   or below it (a timeout in round `r` raises it to `r`, so no vote in `r` follows);
//! - `high_qc` only grows;
//! - `highest_proposed_round` only grows, so a restarted leader never proposes twice in a round.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Block, ClusterId, QuorumCert, Round, Timeout, TimeoutCert, Vote};

/// The state that must be durable before a vote, timeout or proposal leaves the node.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SafetyData {
    pub highest_voted_round: Round,
    pub highest_proposed_round: Round,
    pub high_qc: QuorumCert,
    pub high_tc: Option<TimeoutCert>,
    /// The last vote signed, re-sent (never re-signed) if asked to vote again in its round.
    pub last_vote: Option<Vote>,
    /// The last timeout signed, re-broadcast while its round lasts.
    pub last_timeout: Option<Timeout>,
}

impl SafetyData {
    pub fn genesis(cluster: &ClusterId) -> Self {
        Self {
            highest_voted_round: 0,
            highest_proposed_round: 0,
            high_qc: QuorumCert::genesis(cluster),
            high_tc: None,
            last_vote: None,
            last_timeout: None,
        }
    }

    /// The voting rule. `current_round` is the node's round; a vote is only for that round.
    pub fn may_vote(&self, block: &Block, current_round: Round) -> bool {
        if block.round != current_round {
            return false;
        }
        if block.round <= self.highest_voted_round && !cfg!(feature = "mutation-no-voted-round") {
            return false;
        }
        if block.qc.round + 1 == block.round {
            return true;
        }
        // After a timeout: the block must extend a QC at least as high as any honest member of
        // the TC reported, so a block that might have been committed is never abandoned.
        match &block.tc {
            Some(tc) => {
                tc.round + 1 == block.round
                    && (block.qc.round >= tc.max_high_qc_round()
                        || cfg!(feature = "mutation-weak-tc-rule"))
            }
            None => false,
        }
    }

    /// Records a vote in `round` (the caller then persists before sending).
    pub fn record_vote(&mut self, vote: &Vote) {
        self.highest_voted_round = self.highest_voted_round.max(vote.round);
        self.last_vote = Some(vote.clone());
    }

    /// May this node time out in `round`? Once per round; never below a round it voted in is
    /// fine to *repeat* (the stored timeout is re-sent), but never a new signature.
    pub fn may_time_out(&self, round: Round) -> bool {
        self.last_timeout.as_ref().is_none_or(|t| t.round < round)
    }

    /// Records a timeout: it also forbids voting in that round from now on.
    pub fn record_timeout(&mut self, timeout: &Timeout) {
        self.highest_voted_round = self.highest_voted_round.max(timeout.round);
        self.last_timeout = Some(timeout.clone());
    }

    pub fn observe_qc(&mut self, qc: &QuorumCert) -> bool {
        if qc.round > self.high_qc.round {
            self.high_qc = qc.clone();
            return true;
        }
        false
    }

    pub fn observe_tc(&mut self, tc: &TimeoutCert) -> bool {
        if self.high_tc.as_ref().is_none_or(|h| tc.round > h.round) {
            self.high_tc = Some(tc.clone());
            return true;
        }
        false
    }

    /// The round a restarted node resumes in: one past the highest certificate it holds.
    pub fn resume_round(&self) -> Round {
        let tc_round = self.high_tc.as_ref().map_or(0, |tc| tc.round);
        self.high_qc.round.max(tc_round) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BlockId, NodeId, Sig, TimeoutSig};

    fn qc(round: Round) -> QuorumCert {
        QuorumCert {
            block_id: BlockId([round as u8; 32]),
            round,
            votes: vec![],
        }
    }

    fn block(round: Round, qc_round: Round, tc: Option<TimeoutCert>) -> Block {
        Block {
            round,
            height: 1,
            timestamp_ms: 0,
            qc: qc(qc_round),
            tc,
            roots_after: 0,
            state_roots: Vec::new(),
            payload: vec![],
            author: NodeId(0),
            signature: Sig::ZERO,
        }
    }

    fn tc(round: Round, high_qc_rounds: &[Round]) -> TimeoutCert {
        let max = high_qc_rounds.iter().copied().max().unwrap_or(0);
        TimeoutCert {
            round,
            high_qc: qc(max),
            timeouts: high_qc_rounds
                .iter()
                .enumerate()
                .map(|(i, &r)| TimeoutSig {
                    node: NodeId(i as u16),
                    high_qc_round: r,
                    sig: Sig::ZERO,
                })
                .collect(),
        }
    }

    fn safety() -> SafetyData {
        SafetyData::genesis(&ClusterId::ZERO)
    }

    #[test]
    fn votes_for_a_block_extending_the_previous_round_qc() {
        assert!(safety().may_vote(&block(5, 4, None), 5));
    }

    #[test]
    fn never_votes_outside_the_current_round() {
        assert!(!safety().may_vote(&block(5, 4, None), 6));
        assert!(!safety().may_vote(&block(5, 4, None), 4));
    }

    #[test]
    fn never_votes_twice_in_a_round_or_below_the_highest_voted() {
        let mut s = safety();
        s.highest_voted_round = 5;
        assert!(!s.may_vote(&block(5, 4, None), 5));
        s.highest_voted_round = 7;
        assert!(!s.may_vote(&block(5, 4, None), 5));
    }

    #[test]
    fn a_gap_in_rounds_needs_a_tc_for_the_previous_round() {
        assert!(!safety().may_vote(&block(5, 3, None), 5));
        assert!(safety().may_vote(&block(5, 3, Some(tc(4, &[3, 2, 3]))), 5));
        // A TC for another round does not justify the gap.
        assert!(!safety().may_vote(&block(5, 3, Some(tc(3, &[2, 2, 2]))), 5));
    }

    #[test]
    fn after_a_timeout_the_block_must_extend_the_highest_qc_in_the_tc() {
        // Someone in the TC saw a QC for round 4; a block built on the round-3 QC could
        // abandon a block that was committed, so it must not get a vote.
        assert!(!safety().may_vote(&block(6, 3, Some(tc(5, &[3, 4, 2]))), 6));
        assert!(safety().may_vote(&block(6, 4, Some(tc(5, &[3, 4, 2]))), 6));
    }

    #[test]
    fn timing_out_forbids_voting_in_that_round_and_timing_out_twice() {
        let mut s = safety();
        let t = Timeout {
            round: 5,
            high_qc: qc(3),
            author: NodeId(0),
            signature: Sig::ZERO,
        };
        assert!(s.may_time_out(5));
        s.record_timeout(&t);
        assert!(!s.may_vote(&block(5, 4, None), 5));
        assert!(!s.may_time_out(5));
        assert!(s.may_time_out(6));
    }

    #[test]
    fn certificates_only_move_forward_and_set_the_resume_round() {
        let mut s = safety();
        assert!(s.observe_qc(&qc(4)));
        assert!(!s.observe_qc(&qc(3)));
        assert_eq!(s.high_qc.round, 4);
        assert!(s.observe_tc(&tc(6, &[4, 4, 4])));
        assert!(!s.observe_tc(&tc(5, &[4, 4, 4])));
        assert_eq!(s.resume_round(), 7);
    }
}
