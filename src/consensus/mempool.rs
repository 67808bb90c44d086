//! Client requests waiting to be proposed, deduplicated by their `(client, session, seq)` id.
//!
//! Invariants: at most `requests_max` requests and `bytes_max` bytes; a request stays until a
//! block containing it commits (so one proposed in an abandoned fork is proposed again); a
//! request id that committed recently is refused (bounded memory of those).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::types::{ClientRequest, RequestId};

type Key = RequestId;

pub struct Mempool {
    requests: HashMap<Key, ClientRequest>,
    /// Arrival order; may hold keys already removed (skipped lazily).
    order: VecDeque<Key>,
    bytes: usize,
    requests_max: usize,
    bytes_max: usize,
    committed: HashSet<Key>,
    committed_order: VecDeque<Key>,
    committed_max: usize,
}

/// What offering a request did.
#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// The same request id is already waiting.
    Duplicate,
    /// The same request id was already committed (and is still remembered).
    Committed,
    Full,
}

impl Mempool {
    pub fn new(requests_max: usize, bytes_max: usize, committed_max: usize) -> Self {
        Self {
            requests: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            requests_max,
            bytes_max,
            committed: HashSet::new(),
            committed_order: VecDeque::new(),
            committed_max,
        }
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    pub fn add(&mut self, req: ClientRequest) -> AddOutcome {
        let key = req.id();
        if self.requests.contains_key(&key) {
            return AddOutcome::Duplicate;
        }
        if self.committed.contains(&key) {
            return AddOutcome::Committed;
        }
        if self.requests.len() >= self.requests_max
            || self.bytes + req.size_bytes() > self.bytes_max
        {
            return AddOutcome::Full;
        }
        self.bytes += req.size_bytes();
        self.requests.insert(key, req);
        self.order.push_back(key);
        AddOutcome::Added
    }

    /// Oldest requests first, skipping `exclude`, within the count and byte limits.
    pub fn batch(
        &mut self,
        exclude: &HashSet<Key>,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<ClientRequest> {
        // Drop stale order entries at the front so the queue does not grow without bound.
        while let Some(k) = self.order.front() {
            if self.requests.contains_key(k) {
                break;
            }
            self.order.pop_front();
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for key in &self.order {
            if out.len() >= count_max {
                break;
            }
            let Some(req) = self.requests.get(key) else {
                continue;
            };
            if exclude.contains(key) {
                continue;
            }
            if bytes + req.size_bytes() > bytes_max {
                break;
            }
            bytes += req.size_bytes();
            out.push(req.clone());
        }
        out
    }

    /// Forgets committed requests and remembers their keys.
    pub fn remove_committed(&mut self, committed: &[ClientRequest]) {
        for req in committed {
            let key = req.id();
            if let Some(r) = self.requests.remove(&key) {
                self.bytes -= r.size_bytes();
            }
            if self.committed.insert(key) {
                self.committed_order.push_back(key);
            }
        }
        while self.committed_order.len() > self.committed_max {
            if let Some(old) = self.committed_order.pop_front() {
                self.committed.remove(&old);
            }
        }
        if self.order.len() > 2 * self.requests.len() + 1024 {
            let requests = &self.requests;
            self.order.retain(|k| requests.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientKey, Sig};

    fn req(client: u8, seq: u64, len: usize) -> ClientRequest {
        in_session(client, 7, seq, len)
    }

    fn in_session(client: u8, session: u64, seq: u64, len: usize) -> ClientRequest {
        ClientRequest {
            client: ClientKey([client; 32]),
            session,
            seq,
            ops: vec![0; len],
            signature: Sig::ZERO,
        }
    }

    #[test]
    fn dedups_bounds_and_forgets_on_commit() {
        let mut m = Mempool::new(2, 10_000, 10);
        assert_eq!(m.add(req(1, 1, 10)), AddOutcome::Added);
        assert_eq!(m.add(req(1, 1, 10)), AddOutcome::Duplicate);
        assert_eq!(m.add(req(1, 2, 10)), AddOutcome::Added);
        assert_eq!(m.add(req(1, 3, 10)), AddOutcome::Full);
        m.remove_committed(&[req(1, 1, 10)]);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.add(req(1, 1, 10)),
            AddOutcome::Committed,
            "committed is remembered"
        );
        assert_eq!(m.add(req(1, 3, 10)), AddOutcome::Added);
    }

    #[test]
    fn two_sessions_of_one_key_may_use_the_same_seq() {
        let mut m = Mempool::new(10, 10_000, 10);
        assert_eq!(m.add(in_session(1, 1, 5, 10)), AddOutcome::Added);
        assert_eq!(m.add(in_session(1, 2, 5, 10)), AddOutcome::Added);
        m.remove_committed(&[in_session(1, 1, 5, 10)]);
        assert_eq!(m.add(in_session(1, 1, 5, 10)), AddOutcome::Committed);
        assert_eq!(m.len(), 1, "the other session's request still waits");
    }

    #[test]
    fn batches_in_arrival_order_within_limits_and_exclusions() {
        let mut m = Mempool::new(100, 100_000, 10);
        for s in 0..5 {
            m.add(req(1, s, 100));
        }
        let exclude: HashSet<Key> = [req(1, 1, 100).id()].into_iter().collect();
        let b = m.batch(&exclude, 3, 100_000);
        assert_eq!(b.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 2, 3]);
        let one_fits = req(1, 0, 100).size_bytes();
        assert_eq!(m.batch(&HashSet::new(), 10, one_fits * 2).len(), 2);
    }

    #[test]
    fn byte_limit_refuses_requests() {
        let mut m = Mempool::new(100, 300, 10);
        assert_eq!(m.add(req(1, 1, 100)), AddOutcome::Added);
        assert_eq!(m.add(req(1, 2, 100)), AddOutcome::Full);
    }
}
