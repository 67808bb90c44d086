//! The state-root book: this node's own state roots, the roots the chain certified, and
//! whether the two disagree (the node's state is then known to be wrong: it is *diverged*).
//!
//! Where the roots come from:
//! - own roots: the runtime applies committed blocks after commit and reports each height's
//!   root (`Event::Applied`), in height order; at start it first reports the roots its state
//!   remembers of the heights before (`kv::root_memory`), so a restarted node can still check
//!   the roots blocks carry for them; a jump (a snapshot install, or a start whose memory does
//!   not reach back to the last report) means the state was replaced, so the roots kept from
//!   before are dropped;
//! - certified roots: the roots a certified block carries (`Block::state_roots`). A block is
//!   certified by a QC on it (formed here or received), and every committed block is.
//!
//! Invariants:
//! - a certified root and an own root of the same height that differ set `diverged` (at
//!   once, whichever of the two arrives last); nothing but a state replacement followed by a
//!   matching certified root clears it;
//! - both maps keep at most `ROOTS_KEPT` heights (the oldest go first), so the book is
//!   bounded whatever the chain carries.
//!
//! No I/O: the core asks the book, and logs what it detects.

use std::collections::{BTreeMap, VecDeque};

use std::sync::Arc;

use crate::types::{BlockId, Height, RootCertificate};

/// Heights kept in each map: enough to check every root a block may carry (a leader carries
/// roots of heights its chain committed, at most a few dozen blocks behind its own), and to
/// look up the certified root of a snapshot's height.
pub const ROOTS_KEPT: usize = 4096;

/// Certifications kept for [`RootBook::take_certified`] (the simulator's checker drains them;
/// the daemon never does, so the oldest are dropped).
const CERTIFIED_LOG_MAX: usize = 256;

/// This node's state at `height` is not the one the chain certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    pub height: Height,
    pub own: [u8; 32],
    pub certified: [u8; 32],
}

/// What a voter makes of the roots a proposal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootCheck {
    /// Every carried root equals this node's root of its height.
    Agree,
    /// A carried height is above what this node has applied: wait for `Event::Applied`.
    Wait { height: Height },
    /// This node applied `height` and its root differs from the carried one.
    Differs {
        height: Height,
        own: [u8; 32],
        carried: [u8; 32],
    },
    /// This node applied `height` but no longer knows (or never knew: it applied it under a
    /// snapshot, or further back before a restart than its state remembers) its root, so it
    /// cannot vouch for it.
    Unknown { height: Height },
}

#[derive(Debug, Default, Clone)]
pub struct RootBook {
    own: BTreeMap<Height, [u8; 32]>,
    /// The highest height the runtime reported applied (0 before the first report).
    applied: Height,
    certified: BTreeMap<Height, ([u8; 32], BlockId)>,
    diverged: Option<Divergence>,
    /// Set when the state was replaced while diverged: a certified root matching the own
    /// root at this height or above ends the divergence.
    replaced_at: Option<Height>,
    certified_log: VecDeque<(Height, [u8; 32])>,
    /// The certificate of the highest certified root seen here (for verified reads).
    certificate: Option<Arc<RootCertificate>>,
}

impl RootBook {
    pub fn applied(&self) -> Height {
        self.applied
    }

    pub fn own(&self, height: Height) -> Option<[u8; 32]> {
        self.own.get(&height).copied()
    }

    /// The certified root of `height` and the block that carries it, if known here.
    pub fn certified(&self, height: Height) -> Option<([u8; 32], BlockId)> {
        self.certified.get(&height).copied()
    }

    /// The highest certified height known here, with its root and carrying block.
    pub fn latest_certified(&self) -> Option<(Height, [u8; 32], BlockId)> {
        self.certified
            .last_key_value()
            .map(|(h, (r, b))| (*h, *r, *b))
    }

    /// Whether a certified root of `height` is newer than the kept certificate's.
    pub fn wants_certificate(&self, height: Height) -> bool {
        self.certificate.as_ref().is_none_or(|c| c.height < height)
    }

    /// Keeps `cert` if it certifies a newer height than the kept one (the caller built it from
    /// a verified QC and the block it certifies).
    pub fn set_certificate(&mut self, cert: RootCertificate) {
        if self.wants_certificate(cert.height) {
            self.certificate = Some(Arc::new(cert));
        }
    }

    /// The certificate of the newest certified root seen here.
    pub fn certificate(&self) -> Option<Arc<RootCertificate>> {
        self.certificate.clone()
    }

    pub fn diverged(&self) -> Option<Divergence> {
        self.diverged
    }

    /// The runtime applied `height`, giving `root`. Returns a divergence found just now.
    pub fn on_applied(&mut self, height: Height, root: [u8; 32]) -> Option<Divergence> {
        if height != self.applied.saturating_add(1) {
            // Restarted or replaced by a snapshot: the roots from before describe another
            // state (possibly the damaged one), so they must not answer for this one.
            self.own.clear();
            if self.diverged.is_some() && height > self.applied {
                self.replaced_at = Some(height);
            }
        }
        self.applied = height;
        self.own.insert(height, root);
        trim(&mut self.own);
        let certified = self.certified.get(&height).map(|(r, _)| *r);
        certified.and_then(|c| self.compare(height, root, c))
    }

    /// A certified block carries `roots`. Returns a divergence found just now.
    pub fn on_certified(
        &mut self,
        block: BlockId,
        roots: &[(Height, [u8; 32])],
    ) -> Option<Divergence> {
        let mut found = None;
        for (height, root) in roots {
            if self.certified.contains_key(height) {
                continue; // known already (two certified roots of one height would need > f liars)
            }
            self.certified.insert(*height, (*root, block));
            if self.certified_log.len() >= CERTIFIED_LOG_MAX {
                self.certified_log.pop_front();
            }
            self.certified_log.push_back((*height, *root));
            if let Some(own) = self.own.get(height).copied() {
                found = found.or(self.compare(*height, own, *root));
            }
        }
        trim(&mut self.certified);
        found
    }

    /// Certifications since the last call (newest `CERTIFIED_LOG_MAX`), for the simulator.
    pub fn take_certified(&mut self) -> Vec<(Height, [u8; 32])> {
        self.certified_log.drain(..).collect()
    }

    fn compare(
        &mut self,
        height: Height,
        own: [u8; 32],
        certified: [u8; 32],
    ) -> Option<Divergence> {
        if own != certified {
            let d = Divergence {
                height,
                own,
                certified,
            };
            let new = self.diverged.is_none();
            self.diverged = Some(d);
            self.replaced_at = None;
            return new.then_some(d);
        }
        if self.replaced_at.is_some_and(|at| height >= at) {
            // The replaced state matches the chain again: repaired.
            self.diverged = None;
            self.replaced_at = None;
        }
        None
    }

    /// Checks the roots a proposal carries against this node's own.
    pub fn check(&self, carried: &[(Height, [u8; 32])]) -> RootCheck {
        for (height, root) in carried {
            if *height > self.applied {
                return RootCheck::Wait { height: *height };
            }
            match self.own.get(height) {
                None => return RootCheck::Unknown { height: *height },
                Some(own) if own != root => {
                    return RootCheck::Differs {
                        height: *height,
                        own: *own,
                        carried: *root,
                    };
                }
                Some(_) => {}
            }
        }
        RootCheck::Agree
    }

    /// The roots a leader carries in a block whose parent chain carries up to `after` and
    /// whose ancestry commits up to `committed`: the lowest known heights above `after`, at
    /// most `max` of them.
    pub fn to_carry(
        &self,
        after: Height,
        committed: Height,
        max: usize,
    ) -> Vec<(Height, [u8; 32])> {
        let upto = committed.min(self.applied);
        if upto <= after {
            return Vec::new();
        }
        self.own
            .range(after + 1..=upto)
            .take(max)
            .map(|(h, r)| (*h, *r))
            .collect()
    }
}

fn trim<V>(map: &mut BTreeMap<Height, V>) {
    while map.len() > ROOTS_KEPT {
        map.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: BlockId = BlockId([7; 32]);

    #[test]
    fn a_certified_root_that_differs_from_the_own_one_is_a_divergence_either_order() {
        let mut book = RootBook::default();
        assert_eq!(book.on_applied(1, [1; 32]), None);
        let d = book.on_certified(B, &[(1, [9; 32])]);
        assert_eq!(
            d,
            Some(Divergence {
                height: 1,
                own: [1; 32],
                certified: [9; 32]
            })
        );
        let mut book = RootBook::default();
        assert_eq!(book.on_certified(B, &[(1, [9; 32])]), None);
        assert!(book.on_applied(1, [1; 32]).is_some());
        assert!(book.diverged().is_some());
    }

    #[test]
    fn matching_roots_are_no_divergence_and_are_remembered_as_certified() {
        let mut book = RootBook::default();
        book.on_applied(1, [1; 32]);
        book.on_applied(2, [2; 32]);
        assert_eq!(book.on_certified(B, &[(1, [1; 32]), (2, [2; 32])]), None);
        assert_eq!(book.diverged(), None);
        assert_eq!(book.certified(2), Some(([2; 32], B)));
        assert_eq!(book.latest_certified(), Some((2, [2; 32], B)));
        assert_eq!(book.take_certified(), vec![(1, [1; 32]), (2, [2; 32])]);
        assert!(book.take_certified().is_empty());
    }

    #[test]
    fn the_check_waits_for_unapplied_heights_and_refuses_unknown_or_different_roots() {
        let mut book = RootBook::default();
        book.on_applied(5, [5; 32]); // after a restart: heights below 5 are unknown
        book.on_applied(6, [6; 32]);
        assert_eq!(book.check(&[(5, [5; 32]), (6, [6; 32])]), RootCheck::Agree);
        assert_eq!(book.check(&[(7, [7; 32])]), RootCheck::Wait { height: 7 });
        assert_eq!(
            book.check(&[(4, [4; 32])]),
            RootCheck::Unknown { height: 4 }
        );
        assert_eq!(
            book.check(&[(5, [5; 32]), (6, [0; 32])]),
            RootCheck::Differs {
                height: 6,
                own: [6; 32],
                carried: [0; 32]
            }
        );
    }

    #[test]
    fn a_leader_carries_the_lowest_known_heights_above_the_chain_up_to_its_commit() {
        let mut book = RootBook::default();
        for h in 1..=10u64 {
            book.on_applied(h, [h as u8; 32]);
        }
        let carried = book.to_carry(3, 8, 64);
        assert_eq!(carried.first().map(|c| c.0), Some(4));
        assert_eq!(carried.last().map(|c| c.0), Some(8));
        assert_eq!(book.to_carry(3, 20, 2), vec![(4, [4; 32]), (5, [5; 32])]);
        assert!(book.to_carry(10, 20, 64).is_empty());
    }

    #[test]
    fn divergence_clears_only_after_a_replaced_state_matches_a_certified_root() {
        let mut book = RootBook::default();
        book.on_applied(1, [1; 32]);
        book.on_certified(B, &[(1, [9; 32])]);
        assert!(book.diverged().is_some());
        // Applying on top of the damaged state does not clear it, even where roots agree by
        // chance.
        book.on_applied(2, [2; 32]);
        book.on_certified(B, &[(2, [2; 32])]);
        assert!(book.diverged().is_some());
        // A snapshot install replaces the state at 16; its root matches the certified one.
        book.on_certified(B, &[(16, [16; 32])]);
        book.on_applied(16, [16; 32]);
        assert_eq!(book.diverged(), None);
        assert_eq!(book.own(1), None, "roots of the replaced state are dropped");
    }

    #[test]
    fn both_maps_stay_bounded() {
        let mut book = RootBook::default();
        for h in 1..=(ROOTS_KEPT as u64 + 10) {
            book.on_applied(h, [0; 32]);
            book.on_certified(B, &[(h, [0; 32])]);
        }
        assert_eq!(book.own.len(), ROOTS_KEPT);
        assert_eq!(book.certified.len(), ROOTS_KEPT);
        assert_eq!(book.own(1), None);
    }
}
