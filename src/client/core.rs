//! The in-flight table: requests and queries waiting for answers, fed by the link threads and
//! driven by a ticker thread (resends and deadlines).
//!
//! Invariants:
//! - at most `in_flight_max` seqs between the oldest unfinished request and the next seq
//!   (`reserve` blocks while the span is full), which also bounds the table; the span is at
//!   most the nodes' exactly-once window, so a retried seq is never below it;
//! - every request and query finishes exactly once — accepted, refused, expired, or closed —
//!   and is then removed; a late answer for a finished seq is counted as stray and ignored;
//! - a frame that names another client or session, or answers a query that was not sent to
//!   that node, is a protocol violation: the link reporting it is closed (see `link`);
//! - a reply is counted for a request only if it names that request's ops digest (another
//!   request under the same id gets `SeqReused` from the nodes, never this one's reply).
//! - sends never block: links queue with `try_send`, and the ticker resends what was dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::{Condvar, Mutex};

use crate::api::{OpReply, Reply, VersionedValue, decode_reply};
use crate::crypto::Signer;
use crate::types::{ClientKey, NodeId, ops_digest};
use crate::wire::client::{ClientFrame, NodeFrame, Refusal, encode_client_frame};

use super::error::{ClientError, NodeAnswer, Said};
use super::link::{Fault, Link, LinkEvents};
use super::options::ClientOptions;
use super::seq::Start;
use super::tally::{self, Answer, Verdict};
use super::watch::{WATCH_NOTES_MAX, WatchNote};
use super::watch_merge::WatchInput;

/// A request the cluster executed: `f + 1` nodes sent these results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub seq: u64,
    /// One result per operation, in order.
    pub results: Vec<OpReply>,
    /// The nodes whose replies matched (at least `f + 1`).
    pub agreeing: Vec<NodeId>,
}

pub(crate) type Outcome = Result<Committed, ClientError>;

struct Request {
    /// `None` between `reserve` and `fill` (while the request is being signed).
    frame: Option<Vec<u8>>,
    /// Hash of the ops (known once signed): the reply must name it.
    ops_digest: Option<[u8; 32]>,
    started: Instant,
    deadline: Instant,
    next_resend: Instant,
    answers: Vec<Option<Answer>>,
    done: Sender<Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueryKind {
    Status,
    /// Every node's newest snapshot offer (answered by all, like `Status`).
    SnapshotOffers,
    /// A snapshot chunk, asked of one node.
    SnapshotChunk {
        target: usize,
    },
    /// Asked of one node (stale and verified reads): the first one connected, unless the
    /// caller named one.
    Stale {
        target: Option<usize>,
    },
    /// A read by barrier, asked of every node: done at `f + 1` identical values or when
    /// every node answered.
    Barrier,
}

struct Query {
    kind: QueryKind,
    frame: Vec<u8>,
    deadline: Instant,
    answers: Vec<Option<NodeFrame>>,
    done: Sender<Vec<Option<NodeFrame>>>,
}

#[derive(Default)]
struct Table {
    next_seq: u64,
    requests: BTreeMap<u64, Request>,
    next_query: u64,
    queries: HashMap<u64, Query>,
    closed: bool,
}

impl Table {
    fn span(&self) -> u64 {
        let oldest = self
            .requests
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq);
        self.next_seq - oldest
    }
}

pub(crate) struct Core {
    pub f: usize,
    pub client_key: ClientKey,
    /// This process's session: part of every request id (see `seq`).
    pub session: u64,
    signer: Signer,
    pub options: ClientOptions,
    pub links: Vec<Arc<Link>>,
    table: Mutex<Table>,
    room: Condvar,
    pub closed: AtomicBool,
    pub stray_frames: AtomicU64,
    /// Running watches, by id (ids come from the query counter, so they never collide).
    watches: Mutex<HashMap<u64, Sender<WatchNote>>>,
}

impl Core {
    pub(crate) fn new(
        f: usize,
        signer: Signer,
        options: ClientOptions,
        links: Vec<Arc<Link>>,
        start: Start,
    ) -> Self {
        Self {
            f,
            client_key: ClientKey(signer.public_key()),
            session: start.session,
            signer,
            options,
            links,
            table: Mutex::new(Table {
                next_seq: start.first_seq,
                next_query: start.first_query,
                ..Table::default()
            }),
            room: Condvar::new(),
            closed: AtomicBool::new(false),
            stray_frames: AtomicU64::new(0),
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// Signs `ops` as the next request, sends it to every node, and returns its seq and the
    /// channel its outcome will arrive on. Blocks while `in_flight_max` seqs are in flight.
    pub(crate) fn submit(&self, ops: Vec<u8>) -> Result<(u64, Receiver<Outcome>), ClientError> {
        let (seq, rx) = self.reserve()?;
        let request = self.signer.sign_request(self.session, seq, ops);
        let ops_digest = ops_digest(&request.ops);
        let frame = encode_client_frame(&ClientFrame::Submit(request));
        let mut table = self.table.lock();
        if frame.len() > self.options.frame_bytes_max {
            table.requests.remove(&seq);
            self.room.notify_all();
            return Err(ClientError::TooLarge(format!(
                "the signed request of {} bytes is larger than the client's frame limit of {} \
                 bytes (frame_bytes_max)",
                frame.len(),
                self.options.frame_bytes_max
            )));
        }
        if let Some(r) = table.requests.get_mut(&seq) {
            for link in &self.links {
                link.send(&frame);
            }
            r.frame = Some(frame);
            r.ops_digest = Some(ops_digest);
        }
        Ok((seq, rx))
    }

    fn reserve(&self) -> Result<(u64, Receiver<Outcome>), ClientError> {
        let mut table = self.table.lock();
        while !table.closed && table.span() >= self.options.in_flight_max as u64 {
            self.room.wait(&mut table);
        }
        if table.closed {
            return Err(ClientError::Closed);
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        let (done, rx) = bounded(1);
        let now = Instant::now();
        let request = Request {
            frame: None,
            ops_digest: None,
            started: now,
            deadline: now + self.options.request_timeout,
            next_resend: now + self.options.resend_interval,
            answers: vec![None; self.links.len()],
            done,
        };
        table.requests.insert(seq, request);
        Ok((seq, rx))
    }

    /// A new watch id and the channel its frames and link events arrive on.
    pub(crate) fn register_watch(&self) -> Result<(u64, Receiver<WatchNote>), ClientError> {
        let mut table = self.table.lock();
        if table.closed {
            return Err(ClientError::Closed);
        }
        let id = table.next_query;
        table.next_query = table.next_query.wrapping_add(1);
        let (tx, rx) = bounded(WATCH_NOTES_MAX);
        self.watches.lock().insert(id, tx);
        Ok((id, rx))
    }

    pub(crate) fn unregister_watch(&self, id: u64) {
        self.watches.lock().remove(&id);
    }

    /// Hands a watch frame to its watch; false if no watch has that id.
    fn to_watch(&self, id: u64, note: WatchNote) -> bool {
        let watches = self.watches.lock();
        let Some(tx) = watches.get(&id) else {
            return false;
        };
        // Full: dropped; the watch re-subscribes when it stops progressing.
        let _ = tx.try_send(note);
        true
    }

    /// Sends a status or stale-read query; the answers (index = node) arrive on the channel
    /// when every asked node answered or at `query_timeout`.
    pub(crate) fn query(
        &self,
        kind: QueryKind,
        make: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<Receiver<Vec<Option<NodeFrame>>>, ClientError> {
        self.query_within(kind, self.options.query_timeout, make)
    }

    /// Like `query`, with its own deadline.
    pub(crate) fn query_within(
        &self,
        kind: QueryKind,
        timeout: std::time::Duration,
        make: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<Receiver<Vec<Option<NodeFrame>>>, ClientError> {
        let mut table = self.table.lock();
        if table.closed {
            return Err(ClientError::Closed);
        }
        let id = table.next_query;
        table.next_query = table.next_query.wrapping_add(1);
        let (done, rx) = bounded(1);
        let mut query = Query {
            kind,
            frame: encode_client_frame(&make(id)),
            deadline: Instant::now() + timeout,
            answers: vec![None; self.links.len()],
            done,
        };
        for node in 0..self.links.len() {
            self.send_query(&mut query, node);
        }
        table.queries.insert(id, query);
        Ok(rx)
    }

    fn send_query(&self, q: &mut Query, node: usize) {
        if q.answers[node].is_some() || !self.links[node].is_up() {
            return;
        }
        match q.kind {
            QueryKind::Status | QueryKind::SnapshotOffers | QueryKind::Barrier => {}
            QueryKind::SnapshotChunk { target } if target == node => {}
            QueryKind::SnapshotChunk { .. } => return,
            QueryKind::Stale { target: Some(t) } if t == node => {}
            QueryKind::Stale { target: Some(_) } => return,
            QueryKind::Stale { target: None } => q.kind = QueryKind::Stale { target: Some(node) },
        }
        self.links[node].send(&q.frame);
    }

    /// What each node said, for an error.
    fn describe(&self, answers: &[Option<Answer>]) -> Vec<NodeAnswer> {
        answers
            .iter()
            .enumerate()
            .map(|(i, a)| NodeAnswer {
                node: NodeId(i as u16),
                said: match a {
                    Some(Answer::Reply(bytes)) => Said::Reply {
                        fingerprint: crate::keys_file::to_hex(&blake3::hash(bytes).as_bytes()[..4]),
                    },
                    Some(Answer::Refused(r)) => Said::Refused(*r),
                    None => Said::Nothing {
                        link: self.links[i].describe(),
                    },
                },
            })
            .collect()
    }

    /// Link states as "no answer" entries, for errors about queries.
    pub(crate) fn describe_links(&self) -> Vec<NodeAnswer> {
        self.describe(&vec![None; self.links.len()])
    }

    fn accepted(seq: u64, reply: &[u8], agreeing: Vec<NodeId>) -> Outcome {
        match decode_reply(reply) {
            Ok(Reply::Done(results)) => Ok(Committed {
                seq,
                results,
                agreeing,
            }),
            Ok(Reply::Rejected(rejection)) => Err(ClientError::Rejected { seq, rejection }),
            Err(e) => Err(ClientError::BadReply(format!(
                "{} nodes agreed on reply bytes to request {seq} that do not decode: {e}",
                agreeing.len()
            ))),
        }
    }

    fn expired(&self, seq: u64, r: &Request) -> ClientError {
        let answers = self.describe(&r.answers);
        let silent = r.answers.iter().all(Option::is_none);
        if silent && !self.links.iter().any(|l| l.is_up()) {
            return ClientError::Unreachable { answers };
        }
        if tally::count_refused(&r.answers, Refusal::Busy) > self.f {
            return ClientError::Busy { seq, answers };
        }
        ClientError::Timeout {
            seq,
            waited_ms: r.started.elapsed().as_millis() as u64,
            needed: self.f + 1,
            answers,
        }
    }

    /// Whether fewer than `f + 1` nodes can still answer `r`: those that answered, and those
    /// whose link has no fault that waiting cannot fix (see `link::Fault`).
    fn cannot_finish(&self, r: &Request, faults: &[Option<Fault>]) -> bool {
        let able = r
            .answers
            .iter()
            .zip(faults)
            .filter(|(answer, fault)| answer.is_some() || fault.is_none())
            .count();
        able <= self.f
    }

    /// The error for a request no `f + 1` nodes can answer, named after the most common fault
    /// (an allow-list refusal first on a tie: it is the one the user can fix).
    fn hopeless(&self, seq: u64, r: &Request, faults: &[Option<Fault>]) -> ClientError {
        let answers = self.describe(&r.answers);
        let count = |f: Fault| faults.iter().filter(|x| **x == Some(f)).count();
        let (refused, wrong, not_authorised) = (
            count(Fault::Refused),
            count(Fault::WrongNode),
            count(Fault::NotAuthorised),
        );
        if not_authorised > 0 && not_authorised >= refused.max(wrong) {
            ClientError::NotAuthorised { seq, answers }
        } else if wrong > 0 && wrong >= refused {
            ClientError::WrongCluster { answers }
        } else {
            ClientError::Unreachable { answers }
        }
    }

    /// A query is over early when every node it still waits for has a link fault.
    fn query_settled(q: &Query, faults: &[Option<Fault>]) -> bool {
        let waiting = |node: usize| q.answers[node].is_none() && faults[node].is_none();
        match q.kind {
            QueryKind::Status
            | QueryKind::SnapshotOffers
            | QueryKind::Barrier
            | QueryKind::Stale { target: None } => !(0..q.answers.len()).any(waiting),
            QueryKind::Stale { target: Some(t) } | QueryKind::SnapshotChunk { target: t } => {
                !waiting(t)
            }
        }
    }

    /// `for_ops`: the ops digest a reply names (`None` for a refusal, which names none).
    fn on_answer(&self, node: usize, seq: u64, for_ops: Option<[u8; 32]>, answer: Answer) {
        let mut table = self.table.lock();
        let Some(r) = table.requests.get_mut(&seq) else {
            self.stray_frames.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if for_ops.is_some() && for_ops != r.ops_digest {
            // The reply of another request under our id: never ours to take.
            self.stray_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !tally::record(&mut r.answers[node], answer) {
            return;
        }
        let outcome = match tally::judge(&r.answers, self.f) {
            Verdict::Open => return,
            Verdict::Accepted { reply, nodes } => Self::accepted(seq, &reply, nodes),
            Verdict::Refused(reason) => {
                let answers = self.describe(&r.answers);
                Err(match reason {
                    Refusal::NotAuthorised => ClientError::NotAuthorised { seq, answers },
                    _ => ClientError::Invalid { seq, answers },
                })
            }
        };
        if let Some(r) = table.requests.remove(&seq) {
            let _ = r.done.send(outcome);
        }
        self.room.notify_all();
    }

    fn on_query_answer(&self, node: usize, id: u64, frame: NodeFrame) -> Result<(), String> {
        let mut table = self.table.lock();
        let Some(q) = table.queries.get_mut(&id) else {
            self.stray_frames.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let asked = match (q.kind, &frame) {
            (QueryKind::Status, NodeFrame::Status { .. }) => true,
            (QueryKind::SnapshotOffers, NodeFrame::SnapshotOffer { .. }) => true,
            (QueryKind::SnapshotChunk { target }, NodeFrame::SnapshotChunk { .. }) => {
                target == node
            }
            (
                QueryKind::Stale { target },
                NodeFrame::StaleValue { .. }
                | NodeFrame::VerifiedValue { .. }
                | NodeFrame::Unavailable { .. },
            ) => target == Some(node),
            (
                QueryKind::Barrier,
                NodeFrame::BarrierValue { .. } | NodeFrame::Unavailable { .. },
            ) => true,
            _ => false,
        };
        if !asked {
            return Err(format!(
                "answer to query {id} that was not asked of this node"
            ));
        }
        q.answers[node].get_or_insert(frame);
        let complete = match q.kind {
            QueryKind::Status | QueryKind::SnapshotOffers => q.answers.iter().all(Option::is_some),
            QueryKind::Stale { .. } | QueryKind::SnapshotChunk { .. } => true,
            QueryKind::Barrier => {
                barrier_agreed(&q.answers, self.f).is_some()
                    || !barrier_can_agree(&q.answers, self.f)
            }
        };
        if complete && let Some(q) = table.queries.remove(&id) {
            let _ = q.done.send(q.answers);
        }
        Ok(())
    }

    /// One pass of the ticker: fail what can no longer succeed, expire what passed its
    /// deadline, resend what is due.
    pub(crate) fn tick(&self, now: Instant) {
        let faults: Vec<Option<Fault>> = self
            .links
            .iter()
            .map(|l| l.fault())
            .map(|f| f.filter(|f| *f != Fault::Refused || self.options.refused_fails_fast))
            .collect();
        let mut table = self.table.lock();
        let hopeless: Vec<u64> = table
            .requests
            .iter()
            .filter(|(_, r)| self.cannot_finish(r, &faults))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in hopeless {
            if let Some(r) = table.requests.remove(&seq) {
                let _ = r.done.send(Err(self.hopeless(seq, &r, &faults)));
            }
            self.room.notify_all();
        }
        let expired: Vec<u64> = table
            .requests
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(r) = table.requests.remove(&seq) {
                let _ = r.done.send(Err(self.expired(seq, &r)));
            }
            self.room.notify_all();
        }
        for r in table.requests.values_mut().filter(|r| now >= r.next_resend) {
            r.next_resend = now + self.options.resend_interval;
            self.resend(r, None);
        }
        let done: Vec<u64> = table
            .queries
            .iter()
            .filter(|(_, q)| now >= q.deadline || Self::query_settled(q, &faults))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(q) = table.queries.remove(&id) {
                let _ = q.done.send(q.answers);
            }
        }
    }

    /// Sends `r` to every node (or just `only`) that has not replied yet; busy ones included.
    fn resend(&self, r: &Request, only: Option<usize>) {
        let Some(frame) = &r.frame else {
            return;
        };
        for (i, link) in self.links.iter().enumerate() {
            let wanted = only.is_none_or(|o| o == i);
            if wanted && !matches!(r.answers[i], Some(Answer::Reply(_))) {
                link.send(frame);
            }
        }
    }

    /// Finishes everything with `Closed` and wakes blocked submitters.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut table = self.table.lock();
        table.closed = true;
        for (_, r) in std::mem::take(&mut table.requests) {
            let _ = r.done.send(Err(ClientError::Closed));
        }
        table.queries.clear();
        self.watches.lock().clear();
        self.room.notify_all();
    }
}

impl LinkEvents for Core {
    fn link_up(&self, node: usize) {
        let mut table = self.table.lock();
        for r in table.requests.values() {
            self.resend(r, Some(node));
        }
        for q in table.queries.values_mut() {
            self.send_query(q, node);
        }
        drop(table);
        for tx in self.watches.lock().values() {
            let _ = tx.try_send(WatchNote::LinkUp(node));
        }
    }

    fn frame(&self, node: usize, frame: NodeFrame) -> Result<(), String> {
        match frame {
            NodeFrame::Reply {
                client,
                session,
                seq,
                ops_digest,
                reply,
            } => {
                self.check_client(&client, session)?;
                self.on_answer(node, seq, Some(ops_digest), Answer::Reply(reply));
                Ok(())
            }
            NodeFrame::Refused {
                client,
                session,
                seq,
                reason,
            } => {
                self.check_client(&client, session)?;
                self.on_answer(node, seq, None, Answer::Refused(reason));
                Ok(())
            }
            NodeFrame::WatchEvents {
                id,
                height,
                prev_height,
                events,
            } => {
                let input = WatchInput::Events {
                    height,
                    prev_height,
                    events,
                };
                self.watch_frame(id, WatchNote::Frame(node, input));
                Ok(())
            }
            NodeFrame::WatchCompacted { id, oldest_height } => {
                let input = WatchInput::Compacted { oldest_height };
                self.watch_frame(id, WatchNote::Frame(node, input));
                Ok(())
            }
            NodeFrame::Unavailable { id, reason } if self.watches.lock().contains_key(&id) => {
                self.watch_frame(id, WatchNote::Unavailable(node, reason));
                Ok(())
            }
            NodeFrame::StaleValue { id, .. }
            | NodeFrame::BarrierValue { id, .. }
            | NodeFrame::VerifiedValue { id, .. }
            | NodeFrame::Status { id, .. }
            | NodeFrame::Unavailable { id, .. }
            | NodeFrame::SnapshotOffer { id, .. }
            | NodeFrame::SnapshotChunk { id, .. } => self.on_query_answer(node, id, frame),
            // The link thread takes it (it sets the link's fault) before frames get here.
            NodeFrame::LinkRefused { .. } => Err("a link refusal outside the link".into()),
        }
    }
}

/// The value `f + 1` nodes sent identically in answer to a barrier read, if any (at least one
/// of them is honest). Heights may differ between nodes; the value (with its version,
/// `mod_height` and expiry) must not.
pub(crate) fn barrier_agreed(
    answers: &[Option<NodeFrame>],
    f: usize,
) -> Option<Option<VersionedValue>> {
    let values: Vec<&Option<VersionedValue>> = answers
        .iter()
        .filter_map(|a| match a {
            Some(NodeFrame::BarrierValue { value, .. }) => Some(value),
            _ => None,
        })
        .collect();
    values
        .iter()
        .find(|v| values.iter().filter(|w| w == v).count() > f)
        .map(|v| (*v).clone())
}

/// Whether the nodes that have not answered could still make `f + 1` identical values.
fn barrier_can_agree(answers: &[Option<NodeFrame>], f: usize) -> bool {
    let waiting = answers.iter().filter(|a| a.is_none()).count();
    let best = answers
        .iter()
        .filter_map(|a| match a {
            Some(NodeFrame::BarrierValue { value, .. }) => Some(value),
            _ => None,
        })
        .map(|v| {
            answers
                .iter()
                .filter(|a| matches!(a, Some(NodeFrame::BarrierValue { value, .. }) if value == v))
                .count()
        })
        .max()
        .unwrap_or(0);
    best + waiting > f
}

impl Core {
    /// A frame for a watch that ended (or never was) is stray, not a violation: a node may
    /// still send a few after an unwatch.
    fn watch_frame(&self, id: u64, note: WatchNote) {
        if !self.to_watch(id, note) {
            self.stray_frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check_client(&self, client: &[u8; 32], session: u64) -> Result<(), String> {
        if *client != self.client_key.0 {
            return Err("reply addressed to another client".into());
        }
        if session != self.session {
            return Err("reply addressed to another session of this client".into());
        }
        Ok(())
    }
}
