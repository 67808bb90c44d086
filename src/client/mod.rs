//! The client library: talks to every member of a cluster over authenticated links, signs each
//! request, and accepts a result only when `f + 1` nodes return identical reply bytes.
//!
//! - [`api`]: [`Client`] (cheap to clone, `Send + Sync`), [`Ticket`] for pipelining, typed
//!   results ([`RangeResult`], [`TxnResult`], [`StaleRead`], [`NodeStatusReport`]);
//! - [`options`]: [`ClusterEndpoints`] (whom to talk to) and [`ClientOptions`] (every limit);
//! - [`error`]: [`ClientError`], which names what each node answered;
//! - `core` (the in-flight table, resends, deadlines), `tally` (the `f + 1` rule), `link`
//!   (one Noise link per member, with redial backoff), [`seq`] (why seqs start at the clock);
//! - [`coalesce`]: [`Coalescer`], which sends many threads' single operations as few signed
//!   requests (client-side batching);
//! - [`lease`]: leases (grant, keep alive, revoke, attach keys) and [`LeaseKeeper`], which
//!   keeps a lease alive from a thread until dropped;
//! - [`backup`]: backups of a running cluster (a snapshot f + 1 members vouch for);
//! - [`watch`]: [`Watch`], a stream of committed changes a client emits only when `f + 1`
//!   nodes sent them identically (`watch_merge` holds that rule);
//! - [`cli`]: the `bftctl` command.
//!
//! Invariants: every request goes to **all** nodes (a Byzantine leader cannot censor it) and is
//! retried with the **same** seq until it is decided, so a write is applied exactly once; one
//! node counts once; in-flight requests, frame sizes and per-link queues are bounded; bytes
//! from a node are never trusted — a node that sends garbage is disconnected and counted.
//!
//! ```no_run
//! use bftd::client::{Client, ClientOptions};
//! use bftd::config::ClientConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::load(std::path::Path::new("bftd-dev/client.toml"))?;
//! let client = Client::connect(&config, ClientOptions::default())?;
//! client.put(b"k", b"v")?;
//! let value = client.get(b"k")?; // linearizable
//! let stale = client.get_stale(b"k")?; // one node, maybe behind: says which node
//! println!("{value:?} / {:?} from {}", stale.value, stale.node);
//! for node in client.status()? {
//!     println!("{}: {:?}", node.node, node.status.map(|s| s.committed_height));
//! }
//! # Ok(()) }
//! ```

pub mod api;
pub mod backup;
pub mod cli;
pub mod coalesce;
mod core;
pub mod error;
pub mod lease;
mod link;
pub mod options;
pub mod seq;
mod tally;
pub mod watch;
mod watch_merge;

pub use api::{
    Client, NodeStatusReport, OfferAnswer, RangeResult, StaleRead, Ticket, TxnResult,
    VerifiedReadOptions, VerifiedValue, prefix_end,
};
pub use coalesce::{CoalesceOptions, Coalescer};
pub use core::Committed;
pub use error::{ClientError, NodeAnswer, Said};
pub use lease::{LeaseGrant, LeaseId, LeaseKeeper};
pub use link::LinkReport;
pub use options::{ClientOptions, ClusterEndpoints, Endpoint, ReadMode};
pub use watch::Watch;
pub use watch_merge::WatchBatch;
