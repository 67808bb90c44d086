//! The undo log: what the last few applied blocks overwrote, so the store can read its state
//! "as of" a recent height, not only the applied one.
//!
//! Why: a verified read proves a key against a *certified* root, and roots are certified with
//! a lag (a block carries the root of its grandparent's height or older, and a QC on that block
//! comes a round later), so the newest certified root is usually two or three heights below
//! the applied one. Keeping the old value of every engine key a block's batch changed lets a
//! proof walk the state tree of such a height without keeping whole copies of the state.
//!
//! Layout: one entry per applied height `H`, in increasing contiguous order, mapping each
//! changed key (data entries and state tree chunks; nothing else is needed for proofs) to its
//! value *before* block `H` (`None`: absent). Reading key `k` as of height `h` (with `h` in
//! [`UndoLog::readable_from`] `..= applied`): the value recorded by the earliest logged height
//! above `h` that changed `k`, else the current value.
//!
//! Invariants: entries are contiguous heights ending at the store's applied height (a jump,
//! e.g. a snapshot install, clears the log first); at most `heights_max` entries and about
//! `bytes_max` bytes of keys and values (the oldest go first; a block bigger than the whole
//! budget leaves the log empty).

use std::collections::VecDeque;
use std::sync::Arc;

use super::state_tree::Chunk;

/// Default depth of the undo log in heights.
pub const UNDO_HEIGHTS_DEFAULT: usize = 16;
/// Default byte budget of the undo log.
pub const UNDO_BYTES_DEFAULT: usize = 32 * 1024 * 1024;

/// Bytes an entry costs beyond its key and value (map node, vector headers), roughly.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Old values of the keys one block changed: data entries as stored, tree chunks decoded.
///
/// Two key-sorted vectors, not maps: a block's batch hands both over already sorted (the
/// overlay's writes and the tree update's chunk writes are in key order), a lookup is a binary
/// search, and building and dropping a map per block showed in the storage thread's profile.
/// Chunks stay decoded (the `Arc` the update read) instead of being re-encoded per block.
#[derive(Debug, Default)]
pub struct Undo {
    data: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    chunks: Vec<(Vec<u8>, Option<Arc<Chunk>>)>,
}

impl Undo {
    /// The old data entries and tree chunks of one block, each sorted by key, each key once.
    pub fn new(
        data: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        chunks: Vec<(Vec<u8>, Option<Arc<Chunk>>)>,
    ) -> Undo {
        debug_assert!(data.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(chunks.windows(2).all(|w| w[0].0 < w[1].0));
        Undo { data, chunks }
    }

    /// The chunk keys recorded, in key order.
    pub fn chunk_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(|(key, _)| key.as_slice())
    }

    fn data(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let at = self
            .data
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()?;
        Some(self.data[at].1.as_deref())
    }

    fn chunk(&self, key: &[u8]) -> Option<Option<&Arc<Chunk>>> {
        let at = self
            .chunks
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()?;
        Some(self.chunks[at].1.as_ref())
    }

    fn bytes(&self) -> usize {
        let data: usize = (self.data.iter())
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES)
            .sum();
        let chunks: usize = (self.chunks.iter())
            .map(|(k, c)| {
                k.len() + c.as_ref().map_or(0, |c| c.memory_bytes()) + ENTRY_OVERHEAD_BYTES
            })
            .sum();
        data + chunks
    }
}

#[derive(Debug)]
pub struct UndoLog {
    heights_max: usize,
    bytes_max: usize,
    /// `(height, old values, bytes)`, heights contiguous and increasing.
    entries: VecDeque<(u64, Undo, usize)>,
    bytes: usize,
}

impl UndoLog {
    pub fn new(heights_max: usize, bytes_max: usize) -> Self {
        Self {
            heights_max,
            bytes_max,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records the old values of block `height`'s changes, just before the block's batch is
    /// written. A height that does not follow the last logged one starts the log afresh.
    pub fn record(&mut self, height: u64, undo: Undo) {
        if self
            .entries
            .back()
            .is_some_and(|(h, _, _)| h.checked_add(1) != Some(height))
        {
            self.clear();
        }
        if self.heights_max == 0 {
            return;
        }
        let bytes = undo.bytes();
        self.entries.push_back((height, undo, bytes));
        self.bytes += bytes;
        while self.entries.len() > self.heights_max || self.bytes > self.bytes_max {
            match self.entries.pop_front() {
                Some((_, _, b)) => self.bytes -= b,
                None => break,
            }
        }
    }

    /// Forgets everything (the state was replaced).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The lowest height readable with a store applied to `applied`: one below the oldest
    /// logged height, or `applied` itself if the log does not end there.
    pub fn readable_from(&self, applied: u64) -> u64 {
        match (self.entries.front(), self.entries.back()) {
            (Some((first, _, _)), Some((last, _, _))) if *last == applied => first - 1,
            _ => applied,
        }
    }

    /// Data entry `key` as of height `h`: `Some(old value)` if a logged block above `h`
    /// changed it (the earliest such block's old value), `None` if the current value is the
    /// answer. The caller checks `h` against [`UndoLog::readable_from`].
    pub fn as_of(&self, h: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        self.entries
            .iter()
            .skip_while(|(height, _, _)| *height <= h)
            .find_map(|(_, undo, _)| undo.data(key))
    }

    /// Tree chunk `key` as of height `h`, as [`UndoLog::as_of`] for data entries.
    pub fn chunk_as_of(&self, h: u64, key: &[u8]) -> Option<Option<Arc<Chunk>>> {
        self.entries
            .iter()
            .skip_while(|(height, _, _)| *height <= h)
            .find_map(|(_, undo, _)| undo.chunk(key))
            .map(|old| old.cloned())
    }

    pub fn heights(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::SimRng;
    use std::collections::BTreeMap;

    type State = BTreeMap<Vec<u8>, Vec<u8>>;

    /// Applies `changes` to `state`, returning the undo entry a store would record.
    fn apply(state: &mut State, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Undo {
        let mut undo = BTreeMap::new();
        for (k, v) in changes {
            undo.entry(k.clone())
                .or_insert_with(|| state.get(k).cloned());
            match v {
                Some(v) => state.insert(k.clone(), v.clone()),
                None => state.remove(k),
            };
        }
        Undo::new(undo.into_iter().collect(), Vec::new())
    }

    fn read(log: &UndoLog, state: &State, h: u64, key: &[u8]) -> Option<Vec<u8>> {
        match log.as_of(h, key) {
            Some(old) => old.map(<[u8]>::to_vec),
            None => state.get(key).cloned(),
        }
    }

    #[test]
    fn reads_as_of_a_logged_height_match_a_model_of_every_state() {
        for seed in 0..20u64 {
            let mut rng = SimRng::new(seed);
            let mut log = UndoLog::new(8, usize::MAX);
            let mut state = State::new();
            // The model: the whole state after each height.
            let mut states: BTreeMap<u64, State> = BTreeMap::new();
            states.insert(0, state.clone());
            for height in 1..=40u64 {
                let changes: Vec<_> = (0..rng.range(0, 5))
                    .map(|_| {
                        let key = vec![b'k', rng.range(0, 9) as u8];
                        let value = (rng.range(0, 2) > 0).then(|| vec![rng.range(0, 255) as u8]);
                        (key, value)
                    })
                    .collect();
                let undo = apply(&mut state, &changes);
                log.record(height, undo);
                states.insert(height, state.clone());
                let from = log.readable_from(height);
                assert_eq!(from, height.saturating_sub(8), "seed {seed}");
                for h in from..=height {
                    for k in 0..10u8 {
                        let key = vec![b'k', k];
                        assert_eq!(
                            read(&log, &state, h, &key),
                            states[&h].get(&key).cloned(),
                            "seed {seed} height {height} as of {h} key {k}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_log_keeps_its_bounds_and_restarts_on_a_jump() {
        let big = |n: usize| Undo::new(vec![(vec![1], Some(vec![0; n]))], Vec::new());
        let mut log = UndoLog::new(4, 1000);
        for h in 1..=6 {
            log.record(h, big(10));
        }
        assert_eq!((log.heights(), log.readable_from(6)), (4, 2));
        // Bytes: each entry costs 1 + 300 + overhead; three fit in 1000, not four.
        for h in 7..=10 {
            log.record(h, big(300));
        }
        assert_eq!(log.heights(), 2);
        assert!(log.bytes() <= 1000);
        assert_eq!(log.readable_from(10), 8);
        // A block bigger than the budget empties the log: only the applied height reads.
        log.record(11, big(2000));
        assert_eq!(
            (log.heights(), log.bytes(), log.readable_from(11)),
            (0, 0, 11)
        );
        // A jump (snapshot install) starts afresh.
        log.record(12, big(1));
        log.record(20, big(1));
        assert_eq!((log.heights(), log.readable_from(20)), (1, 19));
        assert_eq!(
            log.readable_from(21),
            21,
            "the log does not end at the applied height"
        );
        let mut none = UndoLog::new(0, 1000);
        none.record(1, big(1));
        assert_eq!(none.readable_from(1), 1);
    }
}
