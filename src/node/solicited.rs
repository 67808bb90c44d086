//! Which sync responses this node asked for, so the verifier pool drops the others before
//! verifying a single signature (issue 13 item 8: an unsolicited response of 64 blocks cost
//! the verification of every request and certificate in them, only for the core to drop it).
//!
//! The consensus thread records each `SyncRequest` it sends (peer, and the height the answer
//! must start at: `committed_height + 1`); a verifier takes one record for each response
//! whose first block matches. One request pays for one response; records expire after
//! `SOLICITED_TTL_MS` and at most `SOLICITED_PER_PEER_MAX` are kept per peer (the oldest
//! goes first), so the table is bounded whatever a peer does.
//!
//! The core still checks what it gets (`Core::on_sync_response`): this is the cheap filter
//! in front of the expensive check, not the rule.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;

use crate::types::NodeId;

/// How long an unanswered request keeps room for its response. Generous: a response may be
/// read from disk behind other jobs, and a late one is still useful.
pub const SOLICITED_TTL_MS: u64 = 30_000;
/// Requests remembered per peer (the core has at most 8 sync targets, retried every
/// `sync_retry_ms`).
pub const SOLICITED_PER_PEER_MAX: usize = 32;

pub struct Solicited {
    /// Per peer: (first height expected, asked at ms).
    asked: Mutex<Vec<VecDeque<(u64, u64)>>>,
    epoch: Instant,
}

impl Solicited {
    pub fn new(members: usize) -> Self {
        Self {
            asked: Mutex::new(vec![VecDeque::new(); members]),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// This node sent `peer` a sync request for the chain above `committed_height`.
    pub fn asked(&self, peer: NodeId, committed_height: u64) {
        self.asked_at(peer, committed_height, self.now_ms());
    }

    /// Takes the record that a response from `peer` starting at `first_height` answers;
    /// false if there is none (the response is unsolicited).
    pub fn take(&self, peer: NodeId, first_height: u64) -> bool {
        self.take_at(peer, first_height, self.now_ms())
    }

    pub fn asked_at(&self, peer: NodeId, committed_height: u64, now_ms: u64) {
        let mut asked = self.asked.lock();
        let Some(q) = asked.get_mut(peer.index()) else {
            return;
        };
        if q.len() >= SOLICITED_PER_PEER_MAX {
            q.pop_front();
        }
        q.push_back((committed_height.saturating_add(1), now_ms));
    }

    pub fn take_at(&self, peer: NodeId, first_height: u64, now_ms: u64) -> bool {
        let mut asked = self.asked.lock();
        let Some(q) = asked.get_mut(peer.index()) else {
            return false;
        };
        q.retain(|(_, at)| now_ms.saturating_sub(*at) < SOLICITED_TTL_MS);
        match q.iter().position(|(h, _)| *h == first_height) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_admits_one_matching_response() {
        let s = Solicited::new(4);
        let p = NodeId(2);
        assert!(!s.take_at(p, 11, 0), "nothing was asked");
        s.asked_at(p, 10, 0);
        assert!(!s.take_at(NodeId(1), 11, 1), "asked another peer");
        assert!(
            !s.take_at(p, 5, 1),
            "does not start where the request asked"
        );
        assert!(s.take_at(p, 11, 1));
        assert!(
            !s.take_at(p, 11, 2),
            "a second response to the same request"
        );
    }

    #[test]
    fn records_expire_and_stay_bounded() {
        let s = Solicited::new(2);
        let p = NodeId(1);
        s.asked_at(p, 0, 0);
        assert!(!s.take_at(p, 1, SOLICITED_TTL_MS), "expired");
        for h in 0..(SOLICITED_PER_PEER_MAX as u64 + 5) {
            s.asked_at(p, h, 100);
        }
        assert!(!s.take_at(p, 1, 200), "the oldest records went first");
        assert!(s.take_at(p, SOLICITED_PER_PEER_MAX as u64 + 5, 200));
        assert!(!s.take_at(NodeId(9), 1, 200), "not a member");
    }
}
