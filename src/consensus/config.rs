//! Operator-tunable limits and timings of the core. Every queue and map in the core is bounded
//! by one of these.

/// Tunables of one consensus core. Read from a node's `[consensus]` table: every field is
/// optional (defaults below), an unknown one is an error.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// First round timeout; grows 1.5x on each consecutive timeout.
    pub round_timeout_base_ms: u64,
    /// Upper bound of the backed-off round timeout.
    pub round_timeout_max_ms: u64,
    /// Requests per proposed block.
    pub block_requests_max: usize,
    /// Payload bytes per proposed block.
    pub block_bytes_max: usize,
    /// Requests waiting in the mempool; more get a `busy` rejection.
    pub mempool_requests_max: usize,
    /// Bytes waiting in the mempool.
    pub mempool_bytes_max: usize,
    /// Uncertified messages (votes, timeouts) more than this many rounds ahead are dropped.
    pub round_window: u64,
    /// Committed blocks kept to serve peers that sync: in memory (also capped by
    /// `committed_bytes_retained`), and on disk in the node's block store, which serves
    /// whatever memory no longer holds. `node.snapshot_interval_blocks` must be below it.
    pub committed_blocks_retained: usize,
    /// ... and at most this many payload bytes of them in memory (memory stays bounded under
    /// load; a peer further behind is served from the block store on disk, and one behind
    /// more than `committed_blocks_retained` catches up by snapshot).
    pub committed_bytes_retained: usize,
    /// Uncommitted blocks held; more are dropped until a commit prunes forks.
    pub uncommitted_blocks_max: usize,
    /// Blocks held while their parent is being fetched.
    pub orphan_blocks_max: usize,
    /// Blocks asked for in one sync request.
    pub sync_blocks_max: u32,
    /// Bytes of blocks in one sync response (payload plus a per-block allowance); two blocks
    /// always go, so it must leave room for two of `block_bytes_max` under the peer frame
    /// limit. Keeps responses well below `limits.max_frame_bytes` whatever the block sizes.
    pub sync_response_bytes_max: usize,
    /// How long to wait for a sync response before asking another peer.
    pub sync_retry_ms: u64,
    /// (client, seq) pairs remembered after commit, to drop late duplicates.
    pub committed_requests_remembered: usize,
    /// A voter refuses a block whose timestamp is more than this far ahead of its own wall
    /// clock: the bound on how far a Byzantine leader can push consensus time (and so key
    /// expiry) ahead of the honest nodes' clocks. Must exceed the clock skew between nodes.
    pub block_time_ahead_max_ms: u64,
    /// A leader whose block would carry nothing but state roots waits this long for a
    /// request to ride along (0: propose at once). One client writing in a loop then costs two
    /// blocks a write instead of three: its next request reaches the leader while the root
    /// block waits, and the block that carries the root also orders the request. Bounded
    /// to a quarter of the round timeout (`check_consensus`): the other members start their
    /// round timers about when the leader starts to wait, and still need the block's votes
    /// and fsyncs after it.
    pub root_linger_ms: u64,
}

/// Smallest `block_time_ahead_max_ms` a config may set: below it, ordinary clock skew
/// between honest nodes would stall the chain.
pub const BLOCK_TIME_AHEAD_MIN_MS: u64 = 100;
/// Largest `block_time_ahead_max_ms` a config may set (one day): a larger bound would let a
/// Byzantine leader expire every key with a TTL under it at once.
pub const BLOCK_TIME_AHEAD_MAX_MS: u64 = 86_400_000;

/// Default of `root_linger_ms`: about a client's turnaround from its replies to its next
/// request on loopback or a LAN, with room for a busy machine. Measured with 4 release nodes
/// on one busy 2-core machine, 8 s of `loadgen --clients 1` each: 0 ms: 3.01 blocks committed
/// per write, p50 7.04 ms; 2 ms: 2.12, 4.71 ms; 5 ms: 2.00, 4.50 ms. Longer only delays the
/// root of an idle cluster's last write (verified reads of that height), never a write.
pub const ROOT_LINGER_MS_DEFAULT: u64 = 2;
/// `root_linger_ms` may be at most the round timeout base divided by this.
pub const ROOT_LINGER_TIMEOUT_SHARE: u64 = 4;

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            round_timeout_base_ms: 500,
            round_timeout_max_ms: 30_000,
            block_requests_max: 1_000,
            block_bytes_max: 4 * 1024 * 1024,
            mempool_requests_max: 50_000,
            mempool_bytes_max: 64 * 1024 * 1024,
            round_window: 100,
            committed_blocks_retained: 10_000,
            committed_bytes_retained: 64 * 1024 * 1024,
            uncommitted_blocks_max: 1_000,
            orphan_blocks_max: 64,
            sync_blocks_max: 64,
            sync_response_bytes_max: 4 * 1024 * 1024,
            sync_retry_ms: 500,
            committed_requests_remembered: 100_000,
            block_time_ahead_max_ms: 10_000,
            root_linger_ms: ROOT_LINGER_MS_DEFAULT,
        }
    }
}
