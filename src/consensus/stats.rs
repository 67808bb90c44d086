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
    pub requests_rejected_busy: u64,
    pub requests_duplicate: u64,
}
