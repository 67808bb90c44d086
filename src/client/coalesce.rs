//! Client-side batching: many threads' single operations coalesced into few signed requests.
//!
//! A [`Coalescer`] wraps a [`Client`]. Each call ([`Coalescer::op`], [`Coalescer::put`])
//! queues one operation and waits for its own result. While fewer than
//! `requests_in_flight_max` coalesced requests are in flight, a waiting caller takes the
//! queue's oldest operations (up to the per-request limits) and sends them as one request,
//! then hands each caller its own result; a caller whose operation is still queued when the
//! window is full sleeps until a request finishes. So an idle client sends each operation at
//! once (no added delay), and a busy one sends fewer, larger requests: one signature, one
//! consensus slot and one reply tally for many operations.
//!
//! Invariants: every queued operation is taken into exactly one request (FIFO, by its queue
//! number) and its caller gets exactly the result at its position in that request's results,
//! or that request's error; a request is signed once and retried under its one seq by the
//! client core, so each operation is applied at most once, like a single put. Each operation
//! is checked alone before it is queued, so one caller's over-limit operation never sinks the
//! others'. Operations in one request are applied atomically in order; they come from
//! concurrent callers, so any order among them is a valid linearization. The queue holds at
//! most one operation per waiting caller.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::api::Client;
use super::error::ClientError;
use crate::api::ops::{OPS_PER_REQUEST_MAX, check_ops};
use crate::api::{Op, OpReply, OpResult, Rejection};

/// Limits of a [`Coalescer`].
#[derive(Clone, Copy, Debug)]
pub struct CoalesceOptions {
    /// Coalesced requests in flight at once; callers queue behind them.
    pub requests_in_flight_max: usize,
    /// Operations per request (at most the nodes' [`OPS_PER_REQUEST_MAX`]).
    pub ops_per_request_max: usize,
}

impl Default for CoalesceOptions {
    fn default() -> Self {
        Self {
            requests_in_flight_max: 4,
            ops_per_request_max: OPS_PER_REQUEST_MAX,
        }
    }
}

/// Estimated encoded bytes of a request's operations kept below this, half the nodes' limit
/// per request, so the estimate's slack can never make a coalesced request too large.
fn request_bytes_budget() -> usize {
    crate::crypto::VerifierLimits::default().request_ops_bytes_max / 2
}

/// A generous estimate of an operation's share of the encoded request.
fn op_bytes(op: &Op) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match op {
            Op::Put { key, value }
            | Op::PutTtl { key, value, .. }
            | Op::PutLease { key, value, .. } => key.len() + value.len(),
            Op::LeaseGrant { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseRevoke { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseList => 0,
            Op::Get { key } | Op::Delete { key } => key.len(),
            Op::Range { start, end, .. } | Op::DeleteRange { start, end } => {
                start.len() + end.as_ref().map_or(0, Vec::len)
            }
            // Txns are counted by their full encoding: rare here, and never wrong.
            Op::Txn(_) => crate::api::encode_ops(std::slice::from_ref(op)).len(),
        }
}

struct Queued {
    op: Op,
    bytes: usize,
    reply: Sender<Result<OpReply, ClientError>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Queue number of the next operation to enqueue; every number below `taken` is in a
    /// request already.
    enqueued: u64,
    taken: u64,
    in_flight: usize,
    requests_sent: u64,
    ops_sent: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a coalesced request finishes (a slot in the window is free).
    finished: Condvar,
    options: CoalesceOptions,
}

/// See the module doc. Cheap to clone; clones share one queue.
#[derive(Clone)]
pub struct Coalescer {
    client: Client,
    shared: Arc<Shared>,
}

impl Coalescer {
    pub fn new(client: Client, options: CoalesceOptions) -> Result<Self, String> {
        if options.requests_in_flight_max == 0 {
            return Err("coalescing: requests_in_flight_max must be at least 1".into());
        }
        if options.ops_per_request_max == 0 || options.ops_per_request_max > OPS_PER_REQUEST_MAX {
            return Err(format!(
                "coalescing: ops_per_request_max must be 1..={OPS_PER_REQUEST_MAX}"
            ));
        }
        Ok(Self {
            client,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                finished: Condvar::new(),
                options,
            }),
        })
    }

    /// Writes `value` under `key` (coalesced with concurrent calls); returns the key's new
    /// version, as [`Client::put`] does.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        match self.op(op)? {
            OpReply::Simple(OpResult::Put { version }) => Ok(version),
            other => Err(ClientError::BadReply(format!(
                "expected a put result, got {other:?}"
            ))),
        }
    }

    /// Runs one operation inside a coalesced request and returns its result.
    pub fn op(&self, op: Op) -> Result<OpReply, ClientError> {
        if let Err(rejection) = check_ops(std::slice::from_ref(&op)) {
            return Err(match rejection {
                Rejection::KeyTooLarge | Rejection::ValueTooLarge | Rejection::TooManyOps => {
                    ClientError::TooLarge(rejection.to_string())
                }
                _ => ClientError::Usage(rejection.to_string()),
            });
        }
        let bytes = op_bytes(&op);
        if bytes > request_bytes_budget() {
            // Too large to share a request: sent alone, as Client::submit judges it.
            let mut results = self.client.submit(vec![op])?.wait()?.results;
            return match (results.pop(), results.is_empty()) {
                (Some(r), true) => Ok(r),
                _ => Err(ClientError::BadReply(
                    "expected exactly one result for one operation".into(),
                )),
            };
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut st = self.shared.state.lock();
        let number = st.enqueued;
        st.enqueued += 1;
        st.queue.push_back(Queued {
            op,
            bytes,
            reply: tx,
        });
        loop {
            if number < st.taken {
                drop(st);
                return rx.recv().unwrap_or(Err(ClientError::Closed));
            }
            if st.in_flight < self.shared.options.requests_in_flight_max {
                let batch = self.take_batch(&mut st);
                st.in_flight += 1;
                drop(st);
                self.send(batch);
                st = self.shared.state.lock();
                st.in_flight -= 1;
                self.shared.finished.notify_all();
                continue;
            }
            self.shared.finished.wait(&mut st);
        }
    }

    /// The oldest queued operations that fit one request (at least one: the queue is not
    /// empty while a caller with a queued operation waits).
    fn take_batch(&self, st: &mut State) -> Vec<Queued> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = st.queue.front() {
            let full = batch.len() >= self.shared.options.ops_per_request_max
                || (!batch.is_empty() && bytes + next.bytes > request_bytes_budget());
            if full {
                break;
            }
            bytes += next.bytes;
            if let Some(q) = st.queue.pop_front() {
                batch.push(q);
            }
        }
        st.taken += batch.len() as u64;
        st.requests_sent += 1;
        st.ops_sent += batch.len() as u64;
        batch
    }

    /// Sends one coalesced request and hands each caller its result.
    fn send(&self, batch: Vec<Queued>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|q| (q.op, q.reply)).unzip();
        let n = ops.len();
        let outcome = self
            .client
            .submit(ops)
            .and_then(|ticket| ticket.wait())
            .and_then(|committed| {
                if committed.results.len() == n {
                    Ok(committed.results)
                } else {
                    Err(ClientError::BadReply(format!(
                        "{} results for a request of {n} operations",
                        committed.results.len()
                    )))
                }
            });
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// `(requests sent, operations sent)` so far, by this coalescer and its clones.
    pub fn sent(&self) -> (u64, u64) {
        let st = self.shared.state.lock();
        (st.requests_sent, st.ops_sent)
    }
}
