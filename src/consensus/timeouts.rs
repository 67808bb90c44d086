//! Collects timeouts: `f + 1` for a round let a node join it; a quorum forms a timeout
//! certificate.
//!
//! Invariants: one timeout per signer per round; the TC's `high_qc` is the highest QC among
//! the timeouts it contains; one TC per round.

use std::collections::{BTreeMap, HashMap};

use crate::types::{NodeId, QuorumCert, Round, Timeout, TimeoutCert, TimeoutSig};

#[derive(Default)]
pub struct TimeoutAggregator {
    rounds: BTreeMap<Round, RoundTimeouts>,
}

struct RoundTimeouts {
    sigs: HashMap<NodeId, TimeoutSig>,
    high_qc: QuorumCert,
    certified: bool,
}

/// What adding a timeout did.
#[derive(Debug)]
pub struct TimeoutOutcome {
    /// Distinct signers for the round so far.
    pub signers: usize,
    pub tc: Option<TimeoutCert>,
}

impl TimeoutAggregator {
    pub fn add(&mut self, t: &Timeout, quorum: usize) -> TimeoutOutcome {
        let round = self.rounds.entry(t.round).or_insert_with(|| RoundTimeouts {
            sigs: HashMap::new(),
            high_qc: t.high_qc.clone(),
            certified: false,
        });
        if round.sigs.contains_key(&t.author) {
            return TimeoutOutcome {
                signers: round.sigs.len(),
                tc: None,
            };
        }
        round.sigs.insert(
            t.author,
            TimeoutSig {
                node: t.author,
                high_qc_round: t.high_qc.round,
                sig: t.signature,
            },
        );
        if t.high_qc.round > round.high_qc.round {
            round.high_qc = t.high_qc.clone();
        }
        let mut tc = None;
        if round.sigs.len() >= quorum && !round.certified {
            round.certified = true;
            let mut timeouts: Vec<TimeoutSig> = round.sigs.values().copied().collect();
            timeouts.sort_by_key(|s| s.node);
            tc = Some(TimeoutCert {
                round: t.round,
                high_qc: round.high_qc.clone(),
                timeouts,
            });
        }
        TimeoutOutcome {
            signers: round.sigs.len(),
            tc,
        }
    }

    pub fn prune_below(&mut self, round: Round) {
        self.rounds = self.rounds.split_off(&round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BlockId, Sig};

    fn timeout(author: u16, round: Round, qc_round: Round) -> Timeout {
        Timeout {
            round,
            high_qc: QuorumCert {
                block_id: BlockId([qc_round as u8; 32]),
                round: qc_round,
                votes: vec![],
            },
            author: NodeId(author),
            signature: Sig::ZERO,
        }
    }

    #[test]
    fn tc_carries_the_highest_qc_and_counts_each_signer_once() {
        let mut agg = TimeoutAggregator::default();
        assert_eq!(agg.add(&timeout(0, 7, 3), 3).signers, 1);
        assert_eq!(agg.add(&timeout(0, 7, 3), 3).signers, 1);
        assert!(agg.add(&timeout(2, 7, 5), 3).tc.is_none());
        let tc = agg.add(&timeout(1, 7, 4), 3).tc.expect("quorum forms a TC");
        assert_eq!(tc.high_qc.round, 5);
        assert_eq!(tc.max_high_qc_round(), 5);
        let nodes: Vec<u16> = tc.timeouts.iter().map(|t| t.node.0).collect();
        assert_eq!(nodes, vec![0, 1, 2]);
        assert!(
            agg.add(&timeout(3, 7, 5), 3).tc.is_none(),
            "one TC per round"
        );
    }
}
