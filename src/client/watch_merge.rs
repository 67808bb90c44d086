//! The `f + 1` rule for watches: which height's changes a client may emit next.
//!
//! Every node sends, per height with matching changes, `(height, prev_height, events)`, where
//! `prev_height` chains the heights it sent (see `wire::client::NodeFrame::WatchEvents`).
//! Honest nodes send the same chain. The merge emits a height only when `f + 1` distinct nodes
//! sent an identical `(height, events)` whose `prev_height` is the last height emitted: at
//! least one of them is honest, so the events are the committed ones, and since the honest
//! chain links each height to the previous one with changes, nothing is skipped (no gap) and
//! nothing is emitted twice (heights only go up).
//!
//! Bounds: at most `PENDING_PER_NODE_MAX` frames held per node (beyond it a node's frames are
//! dropped: a Byzantine node cannot grow memory, and an honest one is re-subscribed later).

use std::collections::BTreeMap;

use crate::api::WatchEvent;

/// Frames held per node, waiting for `f + 1` matches.
pub const PENDING_PER_NODE_MAX: usize = 1024;

/// One node's frame for a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchInput {
    Events {
        height: u64,
        prev_height: u64,
        events: Vec<WatchEvent>,
    },
    /// The node no longer keeps history from the asked height; its oldest is `oldest_height`.
    Compacted { oldest_height: u64 },
}

/// A height's changes the cluster agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub height: u64,
    pub events: Vec<WatchEvent>,
}

pub struct WatchMerge {
    f: usize,
    /// The last height emitted (`from_height - 1` before the first).
    last: u64,
    /// Per node: frames above `last`, by `(height, prev_height)`.
    pending: Vec<BTreeMap<(u64, u64), Vec<WatchEvent>>>,
    /// Per node: the oldest height it said it keeps, if it said the asked one is compacted.
    compacted: Vec<Option<u64>>,
}

impl WatchMerge {
    /// A merge for `nodes` members tolerating `f` faults, for a watch from `from_height`.
    pub fn new(nodes: usize, f: usize, from_height: u64) -> Self {
        assert!(from_height >= 1, "watches start at height 1 or above");
        WatchMerge {
            f,
            last: from_height - 1,
            pending: vec![BTreeMap::new(); nodes],
            compacted: vec![None; nodes],
        }
    }

    /// The last height emitted (`from_height - 1` before the first): a re-subscription
    /// starts after it.
    pub fn last_height(&self) -> u64 {
        self.last
    }

    /// Takes one frame from `node` (an index below `nodes`). Frames at or below the last
    /// emitted height, or whose chain runs backwards, are dropped.
    pub fn offer(&mut self, node: usize, input: WatchInput) {
        let Some(pending) = self.pending.get_mut(node) else {
            return;
        };
        match input {
            WatchInput::Events {
                height,
                prev_height,
                events,
            } => {
                if height <= self.last || prev_height >= height {
                    return;
                }
                if pending.len() >= PENDING_PER_NODE_MAX
                    && !pending.contains_key(&(height, prev_height))
                {
                    return;
                }
                pending.insert((height, prev_height), events);
            }
            WatchInput::Compacted { oldest_height } => self.compacted[node] = Some(oldest_height),
        }
    }

    /// Forgets what `node` sent (it is being re-subscribed after the last emitted height).
    pub fn reset_node(&mut self, node: usize) {
        if let Some(p) = self.pending.get_mut(node) {
            p.clear();
        }
        if let Some(c) = self.compacted.get_mut(node) {
            *c = None;
        }
    }

    /// True when some node sent a frame beyond the last emitted height that cannot be emitted
    /// yet: the watch is behind what the cluster has.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|p| !p.is_empty())
    }

    /// The next height `f + 1` nodes agree on, if any.
    pub fn next_batch(&mut self) -> Option<WatchBatch> {
        let mut tally: Vec<(u64, &Vec<WatchEvent>, usize)> = Vec::new();
        for pending in &self.pending {
            // One vote per node per candidate, even if a node sent it twice.
            let mut voted: Vec<(u64, &Vec<WatchEvent>)> = Vec::new();
            for ((height, prev), events) in pending {
                if *prev != self.last || voted.contains(&(*height, events)) {
                    continue;
                }
                voted.push((*height, events));
                match tally
                    .iter_mut()
                    .find(|(h, e, _)| h == height && *e == events)
                {
                    Some(entry) => entry.2 += 1,
                    None => tally.push((*height, events, 1)),
                }
            }
        }
        let (height, events, _) = tally.into_iter().find(|(.., votes)| *votes > self.f)?;
        let batch = WatchBatch {
            height,
            events: events.clone(),
        };
        self.last = height;
        for pending in &mut self.pending {
            pending.retain(|(h, _), _| *h > height);
        }
        Some(batch)
    }

    /// When `f + 1` nodes said the history asked for is gone: the height to resume from. Of
    /// the oldest heights they named, the `f + 1`-th largest: `f + 1` nodes, so at least one
    /// honest, said they keep nothing below it, and no `f` liars can push it higher (which
    /// would make a client skip history that honest nodes still serve).
    pub fn compacted(&self) -> Option<u64> {
        let mut oldest: Vec<u64> = self.compacted.iter().flatten().copied().collect();
        if oldest.len() <= self.f {
            return None;
        }
        oldest.sort_unstable_by(|a, b| b.cmp(a));
        Some(oldest[self.f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VersionedValue;

    fn put(key: &str, value: &str, height: u64) -> WatchEvent {
        WatchEvent {
            key: key.into(),
            value: Some(VersionedValue {
                value: value.into(),
                version: 1,
                mod_height: height,
                expires_at_ms: None,
            }),
        }
    }

    fn frame(height: u64, prev: u64, events: Vec<WatchEvent>) -> WatchInput {
        WatchInput::Events {
            height,
            prev_height: prev,
            events,
        }
    }

    /// The honest chain from height 1: changes at heights 3, 5 and 9.
    fn honest() -> Vec<WatchInput> {
        vec![
            frame(3, 0, vec![put("a", "1", 3)]),
            frame(5, 3, vec![put("a", "2", 5)]),
            frame(9, 5, vec![put("b", "1", 9)]),
        ]
    }

    fn drain(merge: &mut WatchMerge) -> Vec<u64> {
        std::iter::from_fn(|| merge.next_batch())
            .map(|b| b.height)
            .collect()
    }

    #[test]
    fn a_height_is_emitted_once_f_plus_one_nodes_agree_in_chain_order() {
        let mut merge = WatchMerge::new(4, 1, 1);
        // Node 0 sends everything, out of order: nothing is emitted on one node's word.
        for input in honest().into_iter().rev() {
            merge.offer(0, input);
        }
        assert_eq!(drain(&mut merge), Vec::<u64>::new());
        // Node 1 sends the later heights first: still nothing until height 3 arrives.
        merge.offer(1, honest()[2].clone());
        merge.offer(1, honest()[1].clone());
        assert_eq!(drain(&mut merge), Vec::<u64>::new());
        merge.offer(1, honest()[0].clone());
        assert_eq!(drain(&mut merge), vec![3, 5, 9]);
        // Late and repeated frames are never emitted twice.
        for input in honest() {
            merge.offer(2, input.clone());
            merge.offer(3, input);
        }
        assert_eq!(drain(&mut merge), Vec::<u64>::new());
        assert_eq!(merge.last_height(), 9);
        assert!(!merge.has_pending());
    }

    #[test]
    fn a_byzantine_node_cannot_alter_add_or_skip_events() {
        let mut merge = WatchMerge::new(4, 1, 1);
        // Node 3 lies: altered events at 3, an extra height 4, and a chain skipping 5.
        merge.offer(3, frame(3, 0, vec![put("a", "forged", 3)]));
        merge.offer(3, frame(4, 0, vec![put("x", "1", 4)]));
        merge.offer(3, frame(9, 3, vec![put("b", "1", 9)]));
        // Node 3 also sends the same frame many times: it counts once.
        merge.offer(0, honest()[0].clone());
        for _ in 0..3 {
            merge.offer(3, honest()[0].clone());
        }
        assert_eq!(
            merge.next_batch().map(|b| b.events),
            Some(vec![put("a", "1", 3)])
        );
        // After 3, the liar's skip to 9 needs a second node; the honest node 0 sends 5 first.
        merge.offer(0, honest()[1].clone());
        assert_eq!(drain(&mut merge), Vec::<u64>::new());
        merge.offer(1, honest()[1].clone());
        assert_eq!(drain(&mut merge), vec![5]);
        // An omitted height (node 1 never sends 9) just waits for another honest node.
        merge.offer(0, honest()[2].clone());
        assert_eq!(drain(&mut merge), Vec::<u64>::new());
        merge.offer(2, honest()[2].clone());
        assert_eq!(drain(&mut merge), vec![9]);
    }

    #[test]
    fn a_gap_is_never_emitted() {
        let mut merge = WatchMerge::new(4, 1, 1);
        // Two nodes agree on height 5 but chain it to 3, which nobody confirmed: no emission.
        merge.offer(0, honest()[1].clone());
        merge.offer(1, honest()[1].clone());
        assert_eq!(drain(&mut merge), Vec::<u64>::new());
        assert!(merge.has_pending());
    }

    #[test]
    fn a_resubscribed_node_continues_the_chain_after_the_last_emitted_height() {
        let mut merge = WatchMerge::new(4, 1, 1);
        for node in [0, 1] {
            merge.offer(node, honest()[0].clone());
        }
        assert_eq!(drain(&mut merge), vec![3]);
        // Node 1 restarted and is re-subscribed from height 4: its first frame chains to 3.
        merge.reset_node(1);
        merge.offer(1, honest()[1].clone());
        merge.offer(0, honest()[1].clone());
        assert_eq!(drain(&mut merge), vec![5]);
    }

    #[test]
    fn compaction_needs_f_plus_one_nodes_and_a_liar_cannot_raise_the_resume_height() {
        let mut merge = WatchMerge::new(4, 1, 1);
        merge.offer(
            3,
            WatchInput::Compacted {
                oldest_height: 1_000_000,
            },
        );
        assert_eq!(merge.compacted(), None);
        merge.offer(0, WatchInput::Compacted { oldest_height: 40 });
        assert_eq!(merge.compacted(), Some(40));
        merge.offer(1, WatchInput::Compacted { oldest_height: 41 });
        assert_eq!(merge.compacted(), Some(41));
        merge.reset_node(1);
        assert_eq!(merge.compacted(), Some(40));
    }

    #[test]
    fn a_flooding_node_is_bounded() {
        let mut merge = WatchMerge::new(4, 1, 1);
        for height in 1..=(PENDING_PER_NODE_MAX as u64 * 2) {
            merge.offer(3, frame(height + 10, 5, Vec::new()));
        }
        assert_eq!(merge.pending[3].len(), PENDING_PER_NODE_MAX);
    }
}
