//! Whether this node can reach a quorum of members (itself included), and the log lines
//! when that changes: "quorum lost" once when fewer than `quorum` members are reachable (no
//! block can be certified then: the cluster, or this node's side of a partition, stops
//! committing), and "quorum regained" once when enough are back.
//!
//! "Reachable" is the consensus thread's notion: a peer whose authenticated link is up, or
//! that sent a frame within the last few seconds (`PEER_SILENT_AFTER`). Links, because an
//! idle cluster sends nothing at all; a killed peer's link closes at once. A peer behind a
//! silent partition keeps its link until TCP gives up on it, so that case is seen late. At
//! start every peer is unreachable until its link comes up, so no "lost" line is written during
//! a grace period after start: a node whose peers are still starting did not lose them. One transition, one line: the
//! watch logs nothing while the state stays the same. Time arrives as an argument.

use std::time::{Duration, Instant};

use crate::types::NodeId;

/// No "quorum lost" line in this long after start (peers may still be starting).
pub const START_GRACE: Duration = Duration::from_secs(10);

/// A change worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum QuorumChange {
    /// First quorum since start.
    Reached {
        reachable: usize,
    },
    Lost {
        reachable: usize,
        unreachable: Vec<NodeId>,
    },
    Regained {
        reachable: usize,
        without: Duration,
    },
}

pub struct QuorumWatch {
    members: usize,
    quorum: usize,
    started: Instant,
    /// `None` until the first quorum or the end of the grace period.
    has_quorum: Option<bool>,
    lost_at: Option<Instant>,
}

impl QuorumWatch {
    pub fn new(members: usize, quorum: usize, started: Instant) -> Self {
        assert!(
            quorum >= 1 && quorum <= members,
            "quorum {quorum} of {members}"
        );
        Self {
            members,
            quorum,
            started,
            has_quorum: None,
            lost_at: None,
        }
    }

    /// `reachable[i]`: member `i` is reachable (the caller marks itself reachable).
    pub fn observe(&mut self, reachable: &[bool], now: Instant) -> Option<QuorumChange> {
        debug_assert_eq!(reachable.len(), self.members);
        let count = reachable.iter().filter(|r| **r).count();
        let has = count >= self.quorum;
        match (self.has_quorum, has) {
            (None, true) => {
                self.has_quorum = Some(true);
                Some(QuorumChange::Reached { reachable: count })
            }
            (None, false) if now.duration_since(self.started) < START_GRACE => None,
            (None | Some(true), false) => {
                self.has_quorum = Some(false);
                self.lost_at = Some(now);
                let unreachable = (0..reachable.len())
                    .filter(|i| !reachable[*i])
                    .map(|i| NodeId(i as u16))
                    .collect();
                Some(QuorumChange::Lost {
                    reachable: count,
                    unreachable,
                })
            }
            (Some(false), true) => {
                self.has_quorum = Some(true);
                let without = self
                    .lost_at
                    .take()
                    .map_or(Duration::ZERO, |t| now.duration_since(t));
                Some(QuorumChange::Regained {
                    reachable: count,
                    without,
                })
            }
            (Some(true), true) | (Some(false), false) => None,
        }
    }

    /// The log line for `change`.
    pub fn line(&self, change: &QuorumChange) -> String {
        let (n, q) = (self.members, self.quorum);
        match change {
            QuorumChange::Reached { reachable } => {
                format!("quorum reached: {reachable} of {n} members reachable (this node included)")
            }
            QuorumChange::Lost {
                reachable,
                unreachable,
            } => {
                let names: Vec<String> = unreachable.iter().map(ToString::to_string).collect();
                format!(
                    "quorum lost: {reachable} of {n} members reachable (this node included), a \
                     quorum needs {q}; nothing commits until enough are back (unreachable: {})",
                    names.join(", ")
                )
            }
            QuorumChange::Regained { reachable, without } => format!(
                "quorum regained: {reachable} of {n} members reachable (this node included) after \
                 {:.1} s without a quorum",
                without.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn one_line_per_transition_and_none_during_the_start_grace() {
        let t0 = Instant::now();
        let mut w = QuorumWatch::new(4, 3, t0);
        let alone = [true, false, false, false];
        let three = [true, true, false, true];
        assert_eq!(
            w.observe(&alone, at(t0, 1)),
            None,
            "peers may still be starting"
        );
        assert_eq!(
            w.observe(&three, at(t0, 2)),
            Some(QuorumChange::Reached { reachable: 3 })
        );
        assert_eq!(w.observe(&three, at(t0, 3)), None);
        let lost = w.observe(&[true, true, false, false], at(t0, 20));
        assert_eq!(
            lost,
            Some(QuorumChange::Lost {
                reachable: 2,
                unreachable: vec![NodeId(2), NodeId(3)]
            })
        );
        assert_eq!(
            w.line(&lost.unwrap()),
            "quorum lost: 2 of 4 members reachable (this node included), a quorum needs 3; \
             nothing commits until enough are back (unreachable: node2, node3)"
        );
        assert_eq!(
            w.observe(&alone, at(t0, 21)),
            None,
            "still lost: no new line"
        );
        let back = w.observe(&three, at(t0, 32));
        assert_eq!(
            back,
            Some(QuorumChange::Regained {
                reachable: 3,
                without: Duration::from_secs(12)
            })
        );
        assert_eq!(
            w.line(&back.unwrap()),
            "quorum regained: 3 of 4 members reachable (this node included) after 12.0 s \
             without a quorum"
        );
    }

    #[test]
    fn a_node_that_never_reaches_a_quorum_says_so_after_the_grace() {
        let t0 = Instant::now();
        let mut w = QuorumWatch::new(4, 3, t0);
        let alone = [true, false, false, false];
        assert_eq!(w.observe(&alone, at(t0, 9)), None);
        assert!(matches!(
            w.observe(&alone, at(t0, 10)),
            Some(QuorumChange::Lost { reachable: 1, .. })
        ));
        assert_eq!(w.observe(&alone, at(t0, 11)), None);
    }
}
