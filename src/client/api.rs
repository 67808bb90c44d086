//! The public face of the client library: [`Client`], [`Ticket`], and typed results.
//!
//! A `Client` is cheap to clone (one `Arc`) and `Send + Sync`: clones share the links, the
//! in-flight table and the seq counter, so many threads can pipeline through one client. The
//! threads (one per member link, one writer per live link, one ticker) stop when the last
//! clone is dropped or [`Client::shutdown`] is called.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::api::ops::{KEY_BYTES_MAX, OPS_PER_REQUEST_MAX};
use crate::api::proof::state_digest;
use crate::api::verified_read::VerifiedReadError;
use crate::api::{KeyValue, Op, OpReply, OpResult, Rejection, Txn, VersionedValue, encode_ops};
use crate::config::LoadedClientConfig;
use crate::crypto::Committee;
use crate::crypto::root_cert::verify_root_certificate;
use crate::types::NodeId;
use crate::wire::SnapshotOffer;
use crate::wire::client::{ClientFrame, NodeFrame, NodeStatus};

/// One node's answer to [`Client::snapshot_offers`]: its offer (`None`: no snapshot yet), or
/// why it did not answer.
pub type OfferAnswer = Result<Option<SnapshotOffer>, String>;

use super::core::{Committed, Core, Outcome, QueryKind};
use super::error::ClientError;
use super::link::{self, Link, LinkContext, LinkReport};
use super::options::{ClientOptions, ClusterEndpoints, ReadMode};
use super::seq::Start;
use super::watch::Watch;

/// A connection to a whole cluster. See the module doc of [`crate::client`] for an example.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

struct Handle {
    core: Arc<Core>,
    shutdown: Arc<AtomicBool>,
    /// Dropped on shutdown, which wakes every sleeping link and the ticker at once.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The committee's keys, for verified reads.
    committee: Option<Arc<Committee>>,
    /// The highest height any verified read of this client returned (monotonic reads).
    verified_height_seen: AtomicU64,
    /// Barrier reads that fell back to an ordered read.
    barrier_fallbacks: AtomicU64,
}

impl Handle {
    fn stop(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.shutdown_tx.lock().take();
        for link in &self.core.links {
            link.close();
        }
        self.core.close();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // No join here: a link thread may sit in a connect for up to `connect_timeout`, and a
        // client going away must not stall its owner. `Client::shutdown` joins.
        self.stop();
    }
}

/// A request in flight. [`Ticket::wait`] blocks until `f + 1` nodes agree, a refusal from
/// `f + 1` nodes, or the request timeout, whichever comes first.
#[must_use = "a ticket is the only way to learn whether the request committed"]
pub struct Ticket {
    seq: u64,
    rx: Receiver<Outcome>,
}

impl Ticket {
    /// The request's seq (its exactly-once identity together with the client key).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Blocks until the outcome is known (at most the client's `request_timeout`).
    pub fn wait(self) -> Result<Committed, ClientError> {
        self.rx.recv().unwrap_or(Err(ClientError::Closed))
    }

    /// The outcome if it is already known; `None` while still in flight.
    pub fn try_wait(&self) -> Option<Result<Committed, ClientError>> {
        match self.rx.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(ClientError::Closed)),
        }
    }
}

/// A range's entries, in key order; `more` is true if the range held more than `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    pub entries: Vec<KeyValue>,
    pub more: bool,
}

impl RangeResult {
    /// The first key after this result's last entry (the last key with a zero byte appended),
    /// to continue a listing that `limit` cut; `None` when the result is empty.
    pub fn next_start(&self) -> Option<Vec<u8>> {
        let last = self.entries.last()?;
        let mut next = last.key.clone();
        next.push(0);
        Some(next)
    }
}

/// The end (exclusive) of the range of keys that start with `prefix`: the prefix with its last
/// byte below 0xff incremented and the rest dropped; `None` (no upper bound) when there is no
/// such byte, e.g. for the empty prefix.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b < 0xff)?;
    let mut end = prefix[..=keep].to_vec();
    end[keep] += 1;
    Some(end)
}

/// A transaction's outcome: which branch ran and the results of its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// True if every compare held (the success branch ran).
    pub succeeded: bool,
    pub results: Vec<OpResult>,
}

/// A **stale** read: the value on one node, as of that node's last applied block. It may be
/// behind the cluster, and a Byzantine node may lie; use [`Client::get`] for a checked,
/// linearizable read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleRead {
    /// The one node that answered; nothing else vouches for the value.
    pub node: NodeId,
    pub applied_height: u64,
    pub value: Option<VersionedValue>,
}

/// A **verified** read: one node's answer, checked against a state root that a quorum of the
/// committee certified. The value (or its absence) is what the replicated state held at
/// `height`; a lying node cannot forge it without `2f + 1` members' keys. It is not
/// linearizable: `height` may be behind the newest committed block (a write acknowledged just
/// before may not be in it yet), so bound staleness with [`VerifiedReadOptions::min_height`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedValue {
    /// The node that answered (it proved the value; it did not vouch for it).
    pub node: NodeId,
    /// The height whose certified state holds `value`.
    pub height: u64,
    pub value: Option<VersionedValue>,
}

/// Options of [`Client::get_verified_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifiedReadOptions {
    /// Ask this node; `None`: the first connected one.
    pub node: Option<NodeId>,
    /// Refuse a reply about a state older than this height (e.g. the commit height of a
    /// write this caller made, to read at least that write). The client also never accepts
    /// a height below the highest one any of its verified reads returned.
    pub min_height: u64,
}

/// One node's answer to [`Client::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatusReport {
    pub node: NodeId,
    pub addr: std::net::SocketAddr,
    /// The node's own report, or why there is none ("unreachable: ...", "no answer").
    pub status: Result<NodeStatus, String>,
}

impl Client {
    /// Loads nothing itself: pass a loaded `client.toml`. Starts the link threads, which
    /// connect in the background; calls made before a link is up are sent when it comes up.
    pub fn connect(config: &LoadedClientConfig, options: ClientOptions) -> Result<Self, String> {
        Self::start(ClusterEndpoints::from_config(config), options)
    }

    /// Like [`Client::connect`], from explicit endpoints and keys (tests, embedding).
    pub fn start(cluster: ClusterEndpoints, options: ClientOptions) -> Result<Self, String> {
        cluster.validate()?;
        options.validate()?;
        let links: Vec<Arc<Link>> = cluster
            .members
            .iter()
            .map(|m| Arc::new(Link::new(m.clone())))
            .collect();
        let core = Arc::new(Core::new(
            cluster.f,
            cluster.signer,
            options.clone(),
            links.clone(),
            Start::new()?,
        ));
        let shutdown = Arc::new(AtomicBool::new(false));
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(0);
        let handle = Handle {
            core: Arc::clone(&core),
            shutdown: Arc::clone(&shutdown),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            threads: Mutex::new(Vec::new()),
            committee: cluster.committee.clone(),
            verified_height_seen: AtomicU64::new(0),
            barrier_fallbacks: AtomicU64::new(0),
        };
        let spawn_err = |e: std::io::Error| format!("cannot start a client thread: {e}");
        for (node, link) in links.into_iter().enumerate() {
            let ctx = LinkContext {
                node,
                cluster: cluster.cluster,
                noise_secret: cluster.noise_secret,
                options: options.clone(),
                shutdown: Arc::clone(&shutdown),
                shutdown_rx: shutdown_rx.clone(),
            };
            let events: Arc<dyn link::LinkEvents> = core.clone();
            let thread = link::spawn(link, ctx, events).map_err(spawn_err)?;
            handle.threads.lock().push(thread);
        }
        let ticker = {
            let core = Arc::clone(&core);
            let tick = (options.resend_interval / 4)
                .clamp(Duration::from_millis(2), Duration::from_millis(50));
            std::thread::Builder::new()
                .name("client-ticker".into())
                .spawn(move || {
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                        shutdown_rx.recv_timeout(tick)
                    {
                        core.tick(Instant::now());
                    }
                })
                .map_err(spawn_err)?
        };
        handle.threads.lock().push(ticker);
        Ok(Self {
            handle: Arc::new(handle),
        })
    }

    fn core(&self) -> &Core {
        &self.handle.core
    }

    /// Stops every thread of this client (and of its clones) and waits for them. Requests
    /// still in flight finish with [`ClientError::Closed`].
    pub fn shutdown(self) {
        self.handle.stop();
        let threads = std::mem::take(&mut *self.handle.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }

    /// Signs `ops` as one request and sends it to every node; returns at once with a
    /// [`Ticket`] (blocking only while `in_flight_max` requests are in flight). All ops are
    /// applied atomically, in order, exactly once.
    ///
    /// ```no_run
    /// # fn demo(client: &bftd::client::Client) -> Result<(), bftd::client::ClientError> {
    /// use bftd::api::Op;
    /// let tickets: Vec<_> = (0..100)
    ///     .map(|i| client.submit(vec![Op::Put { key: format!("k{i}").into(), value: b"v".to_vec() }]))
    ///     .collect::<Result<_, _>>()?;
    /// for t in tickets {
    ///     t.wait()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn submit(&self, ops: Vec<Op>) -> Result<Ticket, ClientError> {
        if ops.is_empty() || ops.len() > OPS_PER_REQUEST_MAX {
            return Err(ClientError::Usage(format!(
                "a request carries 1..={OPS_PER_REQUEST_MAX} operations, not {}",
                ops.len()
            )));
        }
        // The nodes would reject these with the same rule (a replicated `Rejection`); saying
        // so here costs no round trip and names the limit.
        if let Err(rejection) = crate::api::ops::check_ops(&ops) {
            return Err(match rejection {
                Rejection::KeyTooLarge | Rejection::ValueTooLarge | Rejection::TooManyOps => {
                    ClientError::TooLarge(rejection.to_string())
                }
                _ => ClientError::Usage(rejection.to_string()),
            });
        }
        let encoded = encode_ops(&ops);
        let ops_bytes_max = crate::crypto::VerifierLimits::default().request_ops_bytes_max;
        if encoded.len() > ops_bytes_max {
            // A node closes a link that sends a frame over its limit; say it here instead.
            return Err(ClientError::TooLarge(format!(
                "the request's operations encode to {} bytes, over the nodes' limit of \
                 {ops_bytes_max} bytes per request (keys, values and a little framing)",
                encoded.len()
            )));
        }
        let (seq, rx) = self.core().submit(encoded)?;
        Ok(Ticket { seq, rx })
    }

    /// Several operations in one signed request (one signature, applied atomically): the
    /// cheapest way to write many keys. Returns one result per operation.
    pub fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpReply>, ClientError> {
        let results = self.submit(ops)?.wait()?.results;
        Ok(results)
    }

    pub(super) fn one(&self, op: Op) -> Result<OpReply, ClientError> {
        let mut results = self.batch(vec![op])?;
        match (results.pop(), results.is_empty()) {
            (Some(r), true) => Ok(r),
            _ => Err(ClientError::BadReply(
                "expected exactly one result for one operation".into(),
            )),
        }
    }

    pub(super) fn simple(&self, op: Op) -> Result<OpResult, ClientError> {
        match self.one(op)? {
            OpReply::Simple(r) => Ok(r),
            OpReply::Failed(error) => Err(ClientError::Failed(error)),
            other => Err(shape("a simple result", &other)),
        }
    }

    /// Writes `value` under `key`; returns the key's new version (1 after the first put).
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use bftd::client::{Client, ClientOptions};
    /// use bftd::config::ClientConfig;
    /// let config = ClientConfig::load(std::path::Path::new("bftd-dev/client.toml"))?;
    /// let client = Client::connect(&config, ClientOptions::default())?;
    /// let version = client.put(b"greeting", b"hello")?;
    /// let read = client.get(b"greeting")?; // linearizable: ordered through consensus
    /// assert_eq!(read.map(|v| v.version), Some(version));
    /// # Ok(()) }
    /// ```
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        match self.simple(Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })? {
            OpResult::Put { version } => Ok(version),
            other => Err(shape("a put result", &other)),
        }
    }

    /// Puts `key` with a time-to-live: the key expires `ttl_ms` after the timestamp of the
    /// block that commits the put (consensus time, agreed by the nodes, not this machine's
    /// clock). Returns the new version and `expires_at_ms` (ms since the Unix epoch). The key
    /// is deleted by the first block whose timestamp reaches `expires_at_ms`, so it may stay
    /// readable up to one block interval longer; a later plain `put` makes it permanent.
    /// `ttl_ms` must be in `1..=TTL_MS_MAX` (else the nodes reject the request).
    pub fn put_with_ttl(
        &self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<(u64, u64), ClientError> {
        match self.simple(Op::PutTtl {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_ms,
        })? {
            OpResult::PutTtl {
                version,
                expires_at_ms,
            } => Ok((version, expires_at_ms)),
            other => Err(shape("a put result", &other)),
        }
    }

    /// Linearizable read, checked by `f + 1` nodes. With `ReadMode::Barrier` (the default) by
    /// read barrier: every node answers once its applied state passed a quorum's highest QC
    /// (one probe round trip and a commit, no signature, shared by all reads that arrive
    /// meanwhile); if `f + 1` identical values do not come within `barrier_timeout`, the read
    /// is ordered through consensus instead (counted by [`Client::barrier_fallbacks`]).
    pub fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        if self.core().options.read_mode == ReadMode::Barrier {
            check_key(key)?;
            if let Some(found) = self.get_by_barrier(key)? {
                return Ok(found);
            }
            self.handle
                .barrier_fallbacks
                .fetch_add(1, Ordering::Relaxed);
        }
        self.get_ordered(key)
    }

    /// Linearizable read ordered through consensus like a write, whatever the read mode.
    pub fn get_ordered(&self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        match self.simple(Op::Get { key: key.to_vec() })? {
            OpResult::Get { found } => Ok(found),
            other => Err(shape("a get result", &other)),
        }
    }

    /// A barrier read: `Some(value)` once `f + 1` nodes sent the same value, `None` when they
    /// did not in time (the caller falls back).
    fn get_by_barrier(&self, key: &[u8]) -> Result<Option<Option<VersionedValue>>, ClientError> {
        let key = key.to_vec();
        let core = self.core();
        let rx = core.query_within(QueryKind::Barrier, core.options.barrier_timeout, |id| {
            ClientFrame::BarrierGet { id, key }
        })?;
        let answers = rx.recv().map_err(|_| ClientError::Closed)?;
        Ok(super::core::barrier_agreed(&answers, core.f))
    }

    /// Barrier reads that fell back to an ordered read since this client started.
    pub fn barrier_fallbacks(&self) -> u64 {
        self.handle.barrier_fallbacks.load(Ordering::Relaxed)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool, ClientError> {
        match self.simple(Op::Delete { key: key.to_vec() })? {
            OpResult::Delete { existed } => Ok(existed),
            other => Err(shape("a delete result", &other)),
        }
    }

    /// Keys in `start <= key < end` (`end = None`: to the last key), at most `limit` (the
    /// state machine clamps it to 1000).
    pub fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<RangeResult, ClientError> {
        let op = Op::Range {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
        };
        match self.simple(op)? {
            OpResult::Range { entries, more } => Ok(RangeResult { entries, more }),
            other => Err(shape("a range result", &other)),
        }
    }

    /// Deletes the keys in `start <= key < end` in one atomic operation, at most 1000 of them
    /// (the state machine's bound on one range); returns how many it deleted and whether keys
    /// remain in the range (then call again: each call is atomic on its own).
    pub fn delete_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<(u64, bool), ClientError> {
        let op = Op::DeleteRange {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        };
        match self.simple(op)? {
            OpResult::DeleteRange { deleted, more } => Ok((deleted, more)),
            other => Err(shape("a delete-range result", &other)),
        }
    }

    /// Deletes every key that starts with `prefix` (see [`Client::delete_range`]: atomic per
    /// call, at most 1000 keys per call).
    pub fn delete_prefix(&self, prefix: &[u8]) -> Result<(u64, bool), ClientError> {
        if prefix.is_empty() {
            return Err(ClientError::Usage(
                "refusing to delete every key: the prefix is empty".into(),
            ));
        }
        let end = prefix_end(prefix);
        self.delete_range(prefix, end.as_deref())
    }

    /// Keys in `start <= key < end`, at most `limit` of them, paging through the cluster's
    /// 1000-entry cap on one range read: each page is its own linearizable read, so a long
    /// listing is not one atomic snapshot (a write between two pages shows in the later page
    /// only). `more` says whether keys beyond `limit` exist; [`RangeResult::next_start`] is
    /// where to resume.
    pub fn range_paged(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<RangeResult, ClientError> {
        let page_max = crate::api::ops::RANGE_LIMIT_MAX as usize;
        let mut out = RangeResult {
            entries: Vec::new(),
            more: false,
        };
        let mut from = start.to_vec();
        while out.entries.len() < limit {
            let page = (limit - out.entries.len()).min(page_max) as u32;
            let got = self.range(&from, end, page)?;
            out.more = got.more;
            out.entries.extend(got.entries);
            match (out.more, out.next_start()) {
                (true, Some(next)) => from = next,
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every key that starts with `prefix` (at most `limit`, paged as in
    /// [`Client::range_paged`]). An empty prefix lists all keys.
    pub fn get_prefix(&self, prefix: &[u8], limit: usize) -> Result<RangeResult, ClientError> {
        let end = prefix_end(prefix);
        self.range_paged(prefix, end.as_deref(), limit)
    }

    /// Runs a transaction atomically: if every compare holds, the success branch, else the
    /// failure branch. A compare-and-swap:
    ///
    /// ```no_run
    /// # fn demo(client: &bftd::client::Client) -> Result<(), bftd::client::ClientError> {
    /// use bftd::api::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
    /// let cas = Txn {
    ///     compare: vec![Compare { key: b"k".to_vec(), op: CompareOp::Equal, target: CompareTarget::Version(3) }],
    ///     success: vec![TxnOp::Put { key: b"k".to_vec(), value: b"new".to_vec() }],
    ///     failure: vec![TxnOp::Get { key: b"k".to_vec() }],
    /// };
    /// let outcome = client.txn(cas)?;
    /// println!("swapped: {}", outcome.succeeded);
    /// # Ok(()) }
    /// ```
    pub fn txn(&self, txn: Txn) -> Result<TxnResult, ClientError> {
        match self.one(Op::Txn(txn))? {
            OpReply::Txn { succeeded, results } => Ok(TxnResult { succeeded, results }),
            OpReply::Failed(error) => Err(ClientError::Failed(error)),
            other => Err(shape("a transaction result", &other)),
        }
    }

    /// A **stale** read of `key` from one node (the first connected one): fast, not ordered,
    /// not checked by other nodes. The result says which node answered and at which height.
    pub fn get_stale(&self, key: &[u8]) -> Result<StaleRead, ClientError> {
        self.stale(key, None)
    }

    /// Like [`Client::get_stale`], from the given node.
    pub fn get_stale_from(&self, node: NodeId, key: &[u8]) -> Result<StaleRead, ClientError> {
        if node.index() >= self.core().links.len() {
            return Err(ClientError::Usage(format!("{node} is not a member")));
        }
        self.stale(key, Some(node.index()))
    }

    fn stale(&self, key: &[u8], target: Option<usize>) -> Result<StaleRead, ClientError> {
        check_key(key)?;
        let key = key.to_vec();
        let rx = self
            .core()
            .query(QueryKind::Stale { target }, |id| ClientFrame::StaleGet {
                id,
                key,
            })?;
        let answers = rx.recv().map_err(|_| ClientError::Closed)?;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Some(NodeFrame::StaleValue {
                    applied_height,
                    value,
                    ..
                }) => {
                    return Ok(StaleRead {
                        node: NodeId(i as u16),
                        applied_height,
                        value,
                    });
                }
                Some(NodeFrame::Unavailable { reason, .. }) => {
                    return Err(ClientError::Unavailable {
                        node: NodeId(i as u16),
                        reason,
                    });
                }
                _ => {}
            }
        }
        Err(ClientError::Unreachable {
            answers: self.core().describe_links(),
        })
    }

    /// A **verified** read of `key` from one node (the first connected one): one round trip, no
    /// consensus, checked against a certificate of `2f + 1` members. Not linearizable; see
    /// [`VerifiedValue`]. Monotonic: never returns a height below one this client returned
    /// before.
    pub fn get_verified(&self, key: &[u8]) -> Result<VerifiedValue, ClientError> {
        self.get_verified_with(key, &VerifiedReadOptions::default())
    }

    /// [`Client::get_verified`] from a chosen node and/or with a least height. What it checks,
    /// each failure an [`ClientError::Unverified`] naming the node: the QC has a quorum of
    /// distinct members whose vote signatures verify; the carried block's header hashes to
    /// the QC's block id and carries `(height, root)`; and the proof for `key` folds to
    /// `root`. A checked reply below `max(options.min_height, highest height seen)` is
    /// [`ClientError::Unavailable`] (the node is behind, not lying): retry or ask another.
    pub fn get_verified_with(
        &self,
        key: &[u8],
        options: &VerifiedReadOptions,
    ) -> Result<VerifiedValue, ClientError> {
        let Some(committee) = self.handle.committee.clone() else {
            return Err(ClientError::Usage(
                "verified reads need the committee's keys, and this client has none".into(),
            ));
        };
        check_key(key)?;
        let target = match options.node {
            Some(node) if node.index() >= self.core().links.len() => {
                return Err(ClientError::Usage(format!("{node} is not a member")));
            }
            Some(node) => Some(node.index()),
            None => None,
        };
        // A reply may come back below the height another thread of this client read in the
        // meantime (replies to concurrent reads cross): that is not the node's fault, and a
        // fresh ask usually clears it, so it is retried a few times before it is an error.
        let mut attempts_left = MONOTONIC_RETRIES;
        loop {
            match self.verified_once(&committee, key, target, options.min_height) {
                Err(Attempt::BelowSeen { .. }) if attempts_left > 0 => attempts_left -= 1,
                Err(Attempt::BelowSeen {
                    node,
                    height,
                    least,
                }) => {
                    return Err(ClientError::Unavailable {
                        node,
                        reason: format!(
                            "its newest provable certified state is height {height}, below \
                             the highest height this client has read ({least})"
                        ),
                    });
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Ok(read) => return Ok(read),
            }
        }
    }

    /// One ask of one node; every check of [`Client::get_verified_with`].
    fn verified_once(
        &self,
        committee: &Committee,
        key: &[u8],
        target: Option<usize>,
        min_height: u64,
    ) -> Result<VerifiedValue, Attempt> {
        let key_bytes = key.to_vec();
        let rx = self
            .core()
            .query(QueryKind::Stale { target }, |id| ClientFrame::VerifiedGet {
                id,
                key: key_bytes,
            })
            .map_err(Attempt::Failed)?;
        let answers = rx
            .recv()
            .map_err(|_| Attempt::Failed(ClientError::Closed))?;
        for (i, answer) in answers.into_iter().enumerate() {
            let node = NodeId(i as u16);
            match answer {
                Some(NodeFrame::VerifiedValue {
                    read, certificate, ..
                }) => {
                    let unverified =
                        |reason: String| Attempt::Failed(ClientError::Unverified { node, reason });
                    // Blocks carry (and QCs certify) the state digest of a height, which
                    // binds the tree root the proof is against.
                    let digest = state_digest(read.height, &read.tree_root);
                    verify_root_certificate(committee, &certificate, read.height, &digest)
                        .map_err(|e| unverified(format!("certificate: {e}")))?;
                    let seen = self.handle.verified_height_seen.load(Ordering::Acquire);
                    let least = min_height.max(seen);
                    let value = read.verify(key, &digest, least).map_err(|e| match e {
                        // Certified but too old: the node is behind, not lying.
                        VerifiedReadError::TooOld { height, .. } if height >= min_height => {
                            Attempt::BelowSeen {
                                node,
                                height,
                                least,
                            }
                        }
                        VerifiedReadError::TooOld { height, min_height } => {
                            Attempt::Failed(ClientError::Unavailable {
                                node,
                                reason: format!(
                                    "its newest provable certified state is height {height}, \
                                     below the least accepted {min_height} (--min-height)"
                                ),
                            })
                        }
                        e => unverified(e.to_string()),
                    })?;
                    self.handle
                        .verified_height_seen
                        .fetch_max(read.height, Ordering::AcqRel);
                    return Ok(VerifiedValue {
                        node,
                        height: read.height,
                        value,
                    });
                }
                Some(NodeFrame::Unavailable { reason, .. }) => {
                    return Err(Attempt::Failed(ClientError::Unavailable { node, reason }));
                }
                _ => {}
            }
        }
        Err(Attempt::Failed(ClientError::Unreachable {
            answers: self.core().describe_links(),
        }))
    }

    /// The highest height a verified read of this client returned (0 before the first).
    pub fn verified_height_seen(&self) -> u64 {
        self.handle.verified_height_seen.load(Ordering::Acquire)
    }

    /// Asks every node for its status; waits for all of them or `query_timeout`. Nodes that did
    /// not answer are reported with their link state (e.g. "unreachable: connection refused").
    pub fn status(&self) -> Result<Vec<NodeStatusReport>, ClientError> {
        let rx = self
            .core()
            .query(QueryKind::Status, |id| ClientFrame::Status { id })?;
        let answers = rx.recv().map_err(|_| ClientError::Closed)?;
        let reports = answers
            .into_iter()
            .zip(&self.core().links)
            .map(|(answer, link)| NodeStatusReport {
                node: link.endpoint.id,
                addr: link.endpoint.addr,
                status: match answer {
                    Some(NodeFrame::Status { status, .. }) => Ok(status),
                    _ if link.is_up() => Err("connected, but no answer in time".into()),
                    _ => Err(link.describe()),
                },
            })
            .collect();
        Ok(reports)
    }

    /// Asks every node which snapshot it serves (its newest periodic one); waits for all of
    /// them or `query_timeout`. Per node: `Ok(None)` when it has none yet, `Err` with its
    /// link state when it did not answer. Nothing here is trusted yet: see
    /// [`crate::client::backup`], which needs `f + 1` identical offers.
    pub fn snapshot_offers(&self) -> Result<Vec<(NodeId, OfferAnswer)>, ClientError> {
        let rx = self
            .core()
            .query(QueryKind::SnapshotOffers, |id| ClientFrame::SnapshotOffer {
                id,
            })?;
        let answers = rx.recv().map_err(|_| ClientError::Closed)?;
        Ok(answers
            .into_iter()
            .zip(&self.core().links)
            .map(|(answer, link)| {
                let said = match answer {
                    Some(NodeFrame::SnapshotOffer { offer, .. }) => Ok(offer),
                    _ if link.is_up() => Err("connected, but no answer in time".into()),
                    _ => Err(link.describe()),
                };
                (link.endpoint.id, said)
            })
            .collect())
    }

    /// Bytes `[offset, offset + len)` of the snapshot at `height` from `node` (at most
    /// `CHUNK_BYTES_MAX`); `Ok(None)` when the node did not answer within `query_timeout`,
    /// an empty chunk when it no longer has that snapshot. Unverified: the caller checks
    /// the whole file against an agreed offer.
    pub fn snapshot_chunk(
        &self,
        node: NodeId,
        height: u64,
        offset: u64,
        len: u32,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let target = node.index();
        if target >= self.core().links.len() {
            return Err(ClientError::Usage(format!("{node} is not a member")));
        }
        let rx = self
            .core()
            .query(QueryKind::SnapshotChunk { target }, |id| {
                ClientFrame::SnapshotChunk {
                    id,
                    height,
                    offset,
                    len,
                }
            })?;
        let answers = rx.recv().map_err(|_| ClientError::Closed)?;
        match answers.into_iter().nth(target).flatten() {
            Some(NodeFrame::SnapshotChunk {
                height: h,
                offset: o,
                bytes,
                ..
            }) if h == height && o == offset => Ok(Some(bytes)),
            Some(other) => Err(shape("the snapshot chunk asked for", &other)),
            None => Ok(None),
        }
    }

    /// Watches the committed changes to `key` (every key starting with `key` when `prefix`)
    /// from height `from_height` on, or from about now when `None` (the height `f + 1` nodes
    /// have applied, so nothing committed after this call is missed). See [`Watch`].
    pub fn watch(
        &self,
        key: &[u8],
        prefix: bool,
        from_height: Option<u64>,
    ) -> Result<Watch, ClientError> {
        if key.len() > KEY_BYTES_MAX {
            return Err(ClientError::TooLarge(format!(
                "the watched key is {} bytes; keys are at most {KEY_BYTES_MAX} bytes",
                key.len()
            )));
        }
        if key.is_empty() && !prefix {
            return Err(ClientError::Usage(
                "an empty key names nothing: watch a prefix (an empty prefix watches every key)"
                    .into(),
            ));
        }
        let from_height = match from_height {
            Some(0) => return Err(ClientError::Usage("heights start at 1".into())),
            Some(h) => h,
            None => self.applied_by_f_plus_one()? + 1,
        };
        Watch::start(self.clone(), key.to_vec(), prefix, from_height)
    }

    /// The `f + 1`-th highest applied height the nodes report: at least one honest node has
    /// applied it, and `f` liars cannot raise it.
    fn applied_by_f_plus_one(&self) -> Result<u64, ClientError> {
        let reports = self.status()?;
        let mut heights: Vec<u64> = reports
            .iter()
            .filter_map(|r| r.status.as_ref().ok().map(|s| s.applied_height))
            .collect();
        heights.sort_unstable_by(|a, b| b.cmp(a));
        match heights.get(self.f()) {
            Some(h) => Ok(*h),
            None => Err(ClientError::Unreachable {
                answers: self.core().describe_links(),
            }),
        }
    }

    pub(crate) fn core_links(&self) -> usize {
        self.core().links.len()
    }

    pub(crate) fn register_watch(
        &self,
    ) -> Result<(u64, Receiver<super::watch::WatchNote>), ClientError> {
        self.core().register_watch()
    }

    pub(crate) fn unregister_watch(&self, id: u64) {
        self.core().unregister_watch(id)
    }

    /// Queues `frame` on the link to member `node` if it is up (dropped otherwise).
    pub(crate) fn send_to(&self, node: usize, frame: &[u8]) {
        if let Some(link) = self.core().links.get(node)
            && link.is_up()
        {
            link.send(frame);
        }
    }

    pub(crate) fn node_id(&self, node: usize) -> NodeId {
        self.core()
            .links
            .get(node)
            .map_or(NodeId(u16::MAX), |l| l.endpoint.id)
    }

    /// Waits until at least `count` links are up, or `timeout` passes; returns how many are.
    pub fn wait_connected(&self, count: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.core().links.iter().filter(|l| l.is_up()).count();
            if up >= count || Instant::now() >= deadline {
                return up;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Each link's state and counters.
    pub fn links(&self) -> Vec<LinkReport> {
        self.core().links.iter().map(|l| l.report()).collect()
    }

    /// Answers that arrived for requests or queries already finished (late replies are normal).
    pub fn stray_frames(&self) -> u64 {
        self.core().stray_frames.load(Ordering::Relaxed)
    }

    /// Byzantine members tolerated; results need `f() + 1` matching replies.
    pub fn f(&self) -> usize {
        self.core().f
    }

    /// The client's identity: its Ed25519 public key.
    pub fn client_key(&self) -> [u8; 32] {
        self.core().client_key.0
    }
}

/// Asks a verified read is repeated when only the client's own monotonic bound refused it.
const MONOTONIC_RETRIES: u32 = 3;

/// How one ask of a verified read ended, short of a value.
enum Attempt {
    /// Checked, but below a height another verified read of this client returned.
    BelowSeen {
        node: NodeId,
        height: u64,
        least: u64,
    },
    Failed(ClientError),
}

/// A key a single-node read may ask for: not empty, within the key limit.
fn check_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::Usage(Rejection::EmptyKey.to_string()));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(ClientError::TooLarge(format!(
            "the key of {} bytes is longer than the limit of {KEY_BYTES_MAX} bytes",
            key.len()
        )));
    }
    Ok(())
}

pub(super) fn shape(expected: &str, got: &impl std::fmt::Debug) -> ClientError {
    ClientError::BadReply(format!("expected {expected}, the cluster returned {got:?}"))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
