//! Leases from the client's side: grant, keep alive, revoke, attach keys, read a lease's time to
//! live, list; and [`LeaseKeeper`], which keeps a lease alive from a thread until dropped
//! (etcd's KeepAlive stream).
//!
//! Every call is one request ordered through consensus and accepted when `f + 1` nodes return
//! the same reply, like a put. A lease's expiry is consensus time (the timestamp of the block
//! that granted or last kept it alive, plus its TTL), never this machine's clock; a failed
//! operation (the lease does not exist, the lease table or the lease is full) is
//! [`ClientError::Failed`] and changed nothing.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::api::{Client, shape};
use super::error::ClientError;
use crate::api::{LeaseStatus, Op, OpError, OpResult};

/// A lease id (1 to `api::ops::LEASE_ID_MAX`).
pub type LeaseId = u64;

/// A lease as granted or kept alive: it expires at `expires_at_ms` (consensus time, ms since
/// the Unix epoch) unless kept alive again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: LeaseId,
    pub ttl_ms: u64,
    pub expires_at_ms: u64,
}

impl Client {
    /// Grants a lease of `ttl_ms` (1 ms to `TTL_MS_MAX`); the cluster picks its id.
    pub fn lease_grant(&self, ttl_ms: u64) -> Result<LeaseId, ClientError> {
        Ok(self.lease_grant_with_id(0, ttl_ms)?.id)
    }

    /// Grants lease `id` (0: the cluster picks one) of `ttl_ms`; fails with
    /// `OpError::LeaseExists` if the id is taken.
    pub fn lease_grant_with_id(&self, id: LeaseId, ttl_ms: u64) -> Result<LeaseGrant, ClientError> {
        lease_result(self.simple(Op::LeaseGrant { id, ttl_ms })?)
    }

    /// Extends lease `id` to expire its TTL after the block that commits this call.
    pub fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseGrant, ClientError> {
        lease_result(self.simple(Op::LeaseKeepAlive { id })?)
    }

    /// Revokes lease `id`: it and every key attached to it are deleted in one block. Returns
    /// how many keys were deleted.
    pub fn lease_revoke(&self, id: LeaseId) -> Result<u64, ClientError> {
        match self.simple(Op::LeaseRevoke { id })? {
            OpResult::LeaseRevoke { deleted, .. } => Ok(deleted),
            other => Err(shape("a lease revoke result", &other)),
        }
    }

    /// Writes `value` under `key` attached to lease `id` (which must exist): the key is
    /// deleted with the lease. Returns the key's new version. A later plain `put` or a delete
    /// detaches the key.
    pub fn put_with_lease(
        &self,
        key: &[u8],
        value: &[u8],
        id: LeaseId,
    ) -> Result<u64, ClientError> {
        match self.simple(Op::PutLease {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: id,
        })? {
            OpResult::Put { version } => Ok(version),
            other => Err(shape("a put result", &other)),
        }
    }

    /// Lease `id`'s granted TTL, expiry and attached key count (and the keys, if `keys`).
    /// `status.expires_at_ms - status.block_time_ms` is the time left when the call committed.
    pub fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseStatus, ClientError> {
        match self.simple(Op::LeaseTimeToLive { id, keys })? {
            OpResult::LeaseTimeToLive(status) => Ok(*status),
            other => Err(shape("a lease time-to-live result", &other)),
        }
    }

    /// The ids of all live leases, ascending.
    pub fn lease_list(&self) -> Result<Vec<LeaseId>, ClientError> {
        match self.simple(Op::LeaseList)? {
            OpResult::LeaseList { ids } => Ok(ids),
            other => Err(shape("a lease list result", &other)),
        }
    }

    /// Keeps lease `id` alive from a thread, one keep-alive every third of its TTL, until the
    /// returned keeper is dropped (or the lease is gone). Fails if the lease does not exist now.
    pub fn lease_keeper(&self, id: LeaseId) -> Result<LeaseKeeper, ClientError> {
        let first = self.lease_keep_alive(id)?;
        let state = Arc::new(Mutex::new(KeeperState {
            last: first,
            error: None,
        }));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let client = self.clone();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lease-keeper-{id}"))
            .spawn(move || keep_alive_loop(&client, first, &stop_rx, &thread_state))
            .map_err(|e| ClientError::Usage(format!("cannot start a keep-alive thread: {e}")))?;
        Ok(LeaseKeeper {
            id,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

fn lease_result(result: OpResult) -> Result<LeaseGrant, ClientError> {
    match result {
        OpResult::Lease {
            id,
            ttl_ms,
            expires_at_ms,
        } => Ok(LeaseGrant {
            id,
            ttl_ms,
            expires_at_ms,
        }),
        other => Err(shape("a lease result", &other)),
    }
}

/// How often a keeper renews a lease of `ttl_ms`: a third of it (at least 1 ms), so two
/// renewals in a row may fail or be slow before the lease runs out.
pub fn keep_alive_interval(ttl_ms: u64) -> Duration {
    Duration::from_millis((ttl_ms / 3).max(1))
}

struct KeeperState {
    last: LeaseGrant,
    error: Option<ClientError>,
}

/// Keeps a lease alive until dropped ([`Client::lease_keeper`]). Dropping it stops the
/// renewals (the lease then expires its TTL after the last one; revoke it to end it at once).
pub struct LeaseKeeper {
    id: LeaseId,
    state: Arc<Mutex<KeeperState>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The last successful renewal.
    pub fn last(&self) -> LeaseGrant {
        self.state.lock().last
    }

    /// The last renewal's error, if it failed (a lease that no longer exists stops the
    /// keeper: `ClientError::Failed(OpError::LeaseNotFound)`; other errors are retried).
    pub fn error(&self) -> Option<ClientError> {
        self.state.lock().error.clone()
    }

    /// False once the keeper stopped because the lease is gone.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            // The thread wakes at once (its channel closed) unless a renewal is in flight,
            // which the client's request timeout bounds.
            let _ = thread.join();
        }
    }
}

fn keep_alive_loop(
    client: &Client,
    first: LeaseGrant,
    stop: &Receiver<()>,
    state: &Mutex<KeeperState>,
) {
    let interval = keep_alive_interval(first.ttl_ms);
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match client.lease_keep_alive(first.id) {
            Ok(grant) => {
                let mut state = state.lock();
                state.last = grant;
                state.error = None;
            }
            Err(error) => {
                let gone = matches!(error, ClientError::Failed(OpError::LeaseNotFound { .. }));
                state.lock().error = Some(error);
                if gone {
                    return;
                }
            }
        }
    }
}
