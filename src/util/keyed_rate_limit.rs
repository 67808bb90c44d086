//! [`RateLimit`] per key, for log lines about one remote that can repeat fast (a client key
//! the allow-list refuses, retrying in a loop): at most one line per key per interval, the
//! next line counting the ones left out.
//!
//! Bounded: at most `keys_max` keys are tracked; a new key beyond that evicts the key seen
//! least recently (its left-out count is lost, and its next event logs at once). Time arrives
//! as an argument, as in [`RateLimit`].

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::RateLimit;

#[derive(Debug)]
pub struct KeyedRateLimit<K> {
    interval: Duration,
    keys_max: usize,
    /// Per key: its limiter and when it was last seen (for eviction).
    limits: HashMap<K, (RateLimit, Instant)>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    pub fn new(interval: Duration, keys_max: usize) -> Self {
        assert!(keys_max > 0, "a keyed rate limit tracks at least one key");
        Self {
            interval,
            keys_max,
            limits: HashMap::new(),
        }
    }

    /// `Some(n)`: log now about `key`, mentioning the `n` events of that key left out since
    /// its last line; `None`: stay quiet (counted).
    pub fn allow(&mut self, key: &K, now: Instant) -> Option<u64> {
        if !self.limits.contains_key(key) && self.limits.len() >= self.keys_max {
            // O(keys_max), only when a new key arrives at a full table.
            if let Some(oldest) = self
                .limits
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(k, _)| k.clone())
            {
                self.limits.remove(&oldest);
            }
        }
        let interval = self.interval;
        let (limit, seen) = self
            .limits
            .entry(key.clone())
            .or_insert_with(|| (RateLimit::new(interval), now));
        *seen = now;
        limit.allow(now)
    }

    /// Keys tracked now (at most `keys_max`).
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_counting_the_rest() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut limit = KeyedRateLimit::new(minute, 16);
        assert_eq!(limit.allow(&"a", t0), Some(0));
        assert_eq!(
            limit.allow(&"b", t0),
            Some(0),
            "another key is not held back"
        );
        for s in 1..=5 {
            assert_eq!(limit.allow(&"a", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.allow(&"b", t0 + Duration::from_secs(59)), None);
        assert_eq!(limit.allow(&"a", t0 + minute), Some(5));
        assert_eq!(limit.allow(&"b", t0 + minute), Some(1));
        assert_eq!(limit.allow(&"a", t0 + minute), None);
    }

    #[test]
    fn keys_are_bounded_and_the_least_recent_goes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut limit = KeyedRateLimit::new(Duration::from_secs(60), 2);
        assert_eq!(limit.allow(&1, at(0)), Some(0));
        assert_eq!(limit.allow(&2, at(1)), Some(0));
        assert_eq!(limit.allow(&1, at(2)), None, "1 is now the most recent");
        assert_eq!(limit.allow(&3, at(3)), Some(0), "evicts 2");
        assert_eq!(limit.len(), 2);
        assert_eq!(limit.allow(&1, at(4)), None, "1 was kept");
        assert_eq!(
            limit.allow(&2, at(5)),
            Some(0),
            "2 was forgotten, logs at once"
        );
        assert_eq!(limit.len(), 2);
    }
}
