//! What goes into the core ([`Event`], past-tense facts) and what comes out ([`Action`],
//! imperatives for the runtime), plus the durable state a restarted core resumes from.

use super::SafetyData;
use crate::crypto::{Verified, VerifiedMessage};
use crate::types::{
    Block, BlockHeader, BlockId, ClientKey, ClientRequest, Height, Message, NodeId, Round,
};

/// An input to [`super::Core::handle`].
#[derive(Debug)]
pub enum Event {
    /// A peer's message passed the verifier.
    MessageReceived {
        from: NodeId,
        msg: Verified<VerifiedMessage>,
    },
    /// A client's request passed the verifier.
    RequestReceived(Verified<ClientRequest>),
    /// The timer the core last set is due (the core re-checks the deadline itself).
    TimerFired,
    /// Everything in `Persist` actions up to and including `ticket` is durable.
    Persisted { ticket: u64 },
    /// The runtime applied the committed block at `height` (or restarted, or installed a
    /// snapshot, at `height`): the state root after it is `root`. Reported in height order.
    Applied { height: Height, root: [u8; 32] },
    /// Linearizable reads on some member wait for a committed block of round `round` or
    /// higher (a read barrier, `node::read_barrier`): until this node's committed root
    /// reaches that round, a leader with nothing else to propose proposes an empty block, so
    /// an idle chain moves far enough to commit the barrier's certified block. Liveness only:
    /// a lower or higher `round` than needed costs empty blocks, never safety.
    ReadsWaiting { round: Round },
}

/// Something the runtime must do. Order within one `handle` result matters: execute in order.
#[derive(Debug, Clone)]
pub enum Action {
    Send {
        to: NodeId,
        msg: Message,
    },
    /// Send to every other member.
    Broadcast {
        msg: Message,
    },
    /// Make `items` durable, in ticket order, then report `Event::Persisted { ticket }`.
    Persist {
        ticket: u64,
        items: Vec<PersistItem>,
    },
    /// `block` is committed at `block.height`; commits come in height order, each once per
    /// run of the core (a restarted core may repeat commits above the tip it was given).
    Commit {
        id: BlockId,
        block: Block,
    },
    /// A peer syncs from below the committed blocks this core keeps in memory: send it, from
    /// the node's block store, the committed blocks of heights `from_height ..= to_height`
    /// (ascending, as one `SyncResponse`; at most `blocks_max` of them and, past the first
    /// two, `bytes_max` bytes by `block_tree::sync_bytes`; stop at the first height the store
    /// lacks). The core stays sans-I/O: the runtime reads the disk, off the consensus thread.
    ServeCommitted {
        to: NodeId,
        from_height: Height,
        to_height: Height,
        blocks_max: usize,
        bytes_max: usize,
    },
    /// Deliver `Event::TimerFired` at or after `deadline_ms` (replaces any earlier timer).
    SetTimer {
        deadline_ms: u64,
    },
    /// The request was not accepted; tell the client why.
    RejectRequest {
        client: ClientKey,
        session: u64,
        seq: u64,
        /// Hash of the refused request's ops, so a cached reply is given only to the request
        /// that produced it.
        ops_digest: [u8; 32],
        reason: RejectReason,
    },
}

/// What to make durable.
#[derive(Debug, Clone)]
pub enum PersistItem {
    /// The latest safety state (replaces the previous one).
    Safety(SafetyData),
    /// A block the core holds (before it votes for it or proposes it).
    Block { id: BlockId, block: Block },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The mempool is full: try again later.
    Busy,
    /// The same `(client, seq)` was already committed: the runtime answers with the reply the
    /// state machine stored for it (a client's retry must see the one result it produced).
    Committed,
}

/// What a restarted core resumes from: its last durable safety state, the blocks it persisted
/// (uncommitted ones, and recent committed ones so it can serve peers that sync), and the tip
/// of what the state machine has durably applied.
#[derive(Debug, Clone)]
pub struct DurableState {
    pub safety: SafetyData,
    pub blocks: Vec<(BlockId, Block)>,
    pub committed: BlockHeader,
}
