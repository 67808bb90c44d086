//! Persist tickets: the one place that numbers what the replica hands to storage and knows
//! what is durable.
//!
//! A core numbers its persists from 1. The replica may replace its core (after a snapshot
//! install); the new core numbers from 1 again. Storage sees one increasing sequence: the
//! ticket a core issues is shifted by `base`, the last ticket issued before that core was
//! built, and a durable report reaches the core only above its base.
//!
//! Invariants: `issued` never decreases; `durable <= issued` as far as the replica's own
//! tickets go (a report above `issued` is a bug in the shell, asserted); a new core is built
//! only when `durable == issued` (see [`Tickets::all_durable`]), so the new core's view that
//! "nothing is pending" is true.

#[derive(Debug, Default, Clone)]
pub struct Tickets {
    /// Added to the current core's tickets.
    base: u64,
    /// Highest ticket handed to storage.
    issued: u64,
    /// Highest ticket storage reported durable.
    durable: u64,
}

impl Tickets {
    /// The storage ticket for the current core's ticket `core_ticket`.
    pub fn issue(&mut self, core_ticket: u64) -> u64 {
        let ticket = self.base + core_ticket;
        assert!(
            ticket > self.issued,
            "persist tickets must increase: {ticket} after {}",
            self.issued
        );
        self.issued = ticket;
        ticket
    }

    /// Storage reports `ticket` durable. Returns the ticket to report to the current core, if
    /// it is one of that core's and it moved.
    pub fn durable(&mut self, ticket: u64) -> Option<u64> {
        assert!(
            ticket <= self.issued,
            "storage reported ticket {ticket} durable, but only {} were issued",
            self.issued
        );
        if ticket <= self.durable {
            return None;
        }
        self.durable = ticket;
        (ticket > self.base).then(|| ticket - self.base)
    }

    /// Everything handed to storage is durable.
    pub fn all_durable(&self) -> bool {
        self.durable == self.issued
    }

    /// A new core starts numbering from 1: later tickets go above everything issued so far.
    pub fn rebase(&mut self) {
        self.base = self.issued;
    }

    pub fn issued(&self) -> u64 {
        self.issued
    }

    pub fn durable_ticket(&self) -> u64 {
        self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebased_core_gets_tickets_above_the_old_ones_and_only_its_own_reports() {
        let mut t = Tickets::default();
        assert_eq!(t.issue(1), 1);
        assert_eq!(t.issue(2), 2);
        assert_eq!(t.durable(1), Some(1));
        assert!(!t.all_durable());
        assert_eq!(t.durable(2), Some(2));
        assert!(t.all_durable());
        t.rebase();
        assert_eq!(t.issue(1), 3);
        assert_eq!(t.durable(2), None, "an old report is not the new core's");
        assert_eq!(t.durable(3), Some(1));
    }
}
