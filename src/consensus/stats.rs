//! Counters the core keeps about itself: progress, view changes, and every kind of input it
//! dropped (so a flood or an attack shows up in metrics instead of in memory).

/// Monotone counters; the runtime exports them, the simulator sums them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CoreStats {
    pub proposals_made: u64,
    pub votes_sent: u64,
    pub qcs_formed: u64,
    pub tcs_formed: u64,
    pub timeouts_sent: u64,
    /// Rounds entered through a TC rather than a QC.
    pub view_changes: u64,
    pub blocks_committed: u64,
    pub requests_committed: u64,
    pub sync_requests_sent: u64,
    pub dropped_far_future: u64,
    pub dropped_stale: u64,
    pub duplicate_votes: u64,
    pub equivocations_seen: u64,
    pub blocks_rejected: u64,
    /// Proposals whose author is not the leader the schedule names for their round and parent.
    pub proposals_wrong_leader: u64,
    /// Proposals dropped because a block the leader schedule needs is not held here.
    pub proposals_leader_unknown: u64,
    pub orphans_dropped: u64,
    pub unsolicited_sync: u64,
    /// Sync requests answered from the block store (below the blocks kept in memory).
    pub sync_served_from_store: u64,
    pub requests_rejected_busy: u64,
    pub requests_duplicate: u64,
    /// Votes held back until this node applied a height whose root the block carries.
    pub votes_deferred_root: u64,
    /// Proposals not voted for: a carried root differs from this node's own.
    pub votes_refused_root_mismatch: u64,
    /// Proposals not voted for: a carried root this node cannot check (it applied the height
    /// before a restart or under a snapshot), or carried heights out of place in the chain.
    pub votes_refused_root_unchecked: u64,
    /// Of those, the ones refused because this node applied a carried height but no longer
    /// knows its root (before a restart beyond the remembered heights, or under a snapshot).
    pub votes_refused_root_unknown: u64,
    /// Votes and proposals withheld because this node's state is diverged.
    pub withheld_diverged: u64,
    /// Times this node found its state root differs from a certified one.
    pub divergences_detected: u64,
    /// Proposals not voted for: timestamp not above the parent's.
    pub votes_refused_time_not_increasing: u64,
    /// Proposals not voted for: timestamp more than `block_time_ahead_max_ms` ahead of this
    /// node's wall clock.
    pub votes_refused_time_ahead: u64,
}

impl CoreStats {
    /// Adds `other` (a replaced core's counters) into these.
    pub fn add(&mut self, other: &CoreStats) {
        self.proposals_made += other.proposals_made;
        self.votes_sent += other.votes_sent;
        self.qcs_formed += other.qcs_formed;
        self.tcs_formed += other.tcs_formed;
        self.timeouts_sent += other.timeouts_sent;
        self.view_changes += other.view_changes;
        self.blocks_committed += other.blocks_committed;
        self.requests_committed += other.requests_committed;
        self.sync_requests_sent += other.sync_requests_sent;
        self.dropped_far_future += other.dropped_far_future;
        self.dropped_stale += other.dropped_stale;
        self.duplicate_votes += other.duplicate_votes;
        self.equivocations_seen += other.equivocations_seen;
        self.blocks_rejected += other.blocks_rejected;
        self.orphans_dropped += other.orphans_dropped;
        self.unsolicited_sync += other.unsolicited_sync;
        self.sync_served_from_store += other.sync_served_from_store;
        self.requests_rejected_busy += other.requests_rejected_busy;
        self.requests_duplicate += other.requests_duplicate;
        self.votes_deferred_root += other.votes_deferred_root;
        self.votes_refused_root_mismatch += other.votes_refused_root_mismatch;
        self.votes_refused_root_unchecked += other.votes_refused_root_unchecked;
        self.votes_refused_root_unknown += other.votes_refused_root_unknown;
        self.withheld_diverged += other.withheld_diverged;
        self.votes_refused_time_not_increasing += other.votes_refused_time_not_increasing;
        self.votes_refused_time_ahead += other.votes_refused_time_ahead;
        self.divergences_detected += other.divergences_detected;
    }
}
