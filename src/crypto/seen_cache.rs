//! A bounded, thread-safe set of 32-byte digests already verified, so the verifier pool does
//! not check the same signatures twice (a request first from its client, then inside a
//! proposal; a QC in a fast-commit broadcast, then in the next proposal).
//!
//! Invariant: a digest is inserted only after every signature it covers verified, and it
//! covers the signatures themselves, so a cache hit is as good as a check. Eviction is FIFO;
//! a miss only costs a re-check.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;

pub struct SeenCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl SeenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                set: HashSet::with_capacity(capacity),
                order: VecDeque::with_capacity(capacity),
            }),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.inner.lock().set.contains(digest)
    }

    pub fn insert(&self, digest: [u8; 32]) {
        let mut inner = self.inner.lock();
        if !inner.set.insert(digest) {
            return;
        }
        inner.order.push_back(digest);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_beyond_capacity() {
        let c = SeenCache::new(2);
        c.insert([1; 32]);
        c.insert([2; 32]);
        c.insert([2; 32]);
        c.insert([3; 32]);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&[1; 32]));
        assert!(c.contains(&[2; 32]) && c.contains(&[3; 32]));
    }
}
