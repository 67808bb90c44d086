//! Leases (as etcd's): a lease has a TTL; keys attached to it are deleted when it is revoked
//! or when consensus time passes its expiry without a keep-alive.
//!
//! State (all of it covered by the state tree and held by snapshots, layout in `kv::keys`):
//! - `l ++ id` -> the lease record: granted `ttl_ms`, `expires_at_ms`, attached key count;
//! - `y ++ expires_at_ms ++ id` -> the lease expiry index, one entry per lease;
//! - `k ++ id ++ user_key` -> one entry per attached key; the key's data entry names the lease
//!   too (`api::verified_read::ENTRY_LEASE_FLAG`), so a put or delete of the key finds the
//!   lease to detach from without a search;
//! - `nleases` -> the number of leases and the counter from which a grant with id 0 picks.
//!
//! Invariants (kept by every write, checked by `kv::lease_tests`): a lease record exists iff
//! its `y` entry exists (with the record's `expires_at_ms`); a data entry names lease `L` iff
//! `k ++ L ++ key` exists, and lease `L`'s record counts exactly those entries (at most
//! `LEASE_KEYS_MAX`); at most `LEASES_MAX` records exist and `nleases` counts them.
//!
//! A lease is *live* in a block with timestamp `T` when `expires_at_ms > T`. A lease that is
//! not live is expired: keep-alive, put and time-to-live treat it as absent. Applying a block
//! first expires due keys (`kv::expiry`), then due leases, one deletion (key or lease record)
//! at a time within the same per-block bound, so a lease with many keys may take a few
//! blocks; its remaining keys stay readable until then, exactly as TTL keys beyond the bound
//! do (README, "Leases"). Revoke deletes a lease and all its keys in its own block: at most
//! `LEASE_KEYS_MAX` of them, which bounds its work like a range delete's.
//!
//! Determinism: everything depends only on the state, the ops and the block's timestamp.

use std::collections::{BTreeMap, BTreeSet};

use super::execute::{read_entry, remove};
use super::keys::{
    LEASE_COUNT_KEY, LEASE_EXPIRY_PREFIX, LEASE_PREFIX, decode_u64, lease_expiry_due_end,
    lease_expiry_key, lease_key, lease_keys_bounds, lease_keys_key, parse_lease_expiry_key,
    parse_lease_key, parse_lease_keys_key,
};
use super::ops::{LEASE_ID_MAX, LEASE_KEYS_MAX, LEASES_MAX, LeaseOp, TxnOp};
use super::overlay::BlockOverlay;
use super::reply::{LeaseStatus, OpError, OpResult};
use crate::storage::{Engine, StorageError};

/// One lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub ttl_ms: u64,
    pub expires_at_ms: u64,
    /// Keys attached (`k` entries of the lease).
    pub keys: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        for word in [self.ttl_ms, self.expires_at_ms, self.keys] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8], id: u64) -> Result<Lease, StorageError> {
        let word = |at: usize| -> Result<u64, StorageError> {
            bytes
                .get(at..at + 8)
                .filter(|_| bytes.len() == 24)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| {
                    StorageError::invalid(format!(
                        "lease {id}'s record is {} bytes, expected 24",
                        bytes.len()
                    ))
                })
        };
        Ok(Lease {
            ttl_ms: word(0)?,
            expires_at_ms: word(8)?,
            keys: word(16)?,
        })
    }

    fn live_at(&self, time_ms: u64) -> bool {
        self.expires_at_ms > time_ms
    }
}

/// Lease `id`'s record, expired or not.
pub fn load(overlay: &BlockOverlay<'_>, id: u64) -> Result<Option<Lease>, StorageError> {
    overlay
        .get(&lease_key(id))
        .map(|bytes| Lease::decode(&bytes, id))
        .transpose()
}

/// Lease `id` if it is live at `time_ms`.
fn live(overlay: &BlockOverlay<'_>, id: u64, time_ms: u64) -> Result<Option<Lease>, StorageError> {
    Ok(load(overlay, id)?.filter(|lease| lease.live_at(time_ms)))
}

fn store(overlay: &mut BlockOverlay<'_>, id: u64, lease: &Lease) {
    overlay.put(lease_key(id), lease.encode());
}

/// `(leases, next picked id)` from `nleases`.
fn load_count(overlay: &BlockOverlay<'_>) -> Result<(u64, u64), StorageError> {
    let Some(bytes) = overlay.get(LEASE_COUNT_KEY) else {
        return Ok((0, 1));
    };
    if bytes.len() != 16 {
        return Err(StorageError::invalid(format!(
            "the lease count entry is {} bytes, expected 16",
            bytes.len()
        )));
    }
    Ok((
        decode_u64(&bytes[..8], "lease count")?,
        decode_u64(&bytes[8..], "next lease id")?,
    ))
}

fn store_count(overlay: &mut BlockOverlay<'_>, leases: u64, next: u64) {
    let mut bytes = leases.to_le_bytes().to_vec();
    bytes.extend_from_slice(&next.to_le_bytes());
    overlay.put(LEASE_COUNT_KEY.to_vec(), bytes);
}

/// Runs one of the lease table's operations in a block at `time_ms`.
pub fn execute(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    op: LeaseOp,
) -> Result<Result<OpResult, OpError>, StorageError> {
    match op {
        LeaseOp::Grant { id, ttl_ms } => grant(overlay, time_ms, id, ttl_ms),
        LeaseOp::KeepAlive { id } => keep_alive(overlay, time_ms, id),
        LeaseOp::Revoke { id } => revoke(overlay, id),
        LeaseOp::TimeToLive { id, keys } => time_to_live(overlay, time_ms, id, keys),
        LeaseOp::List => list(overlay, time_ms).map(Ok),
    }
}

fn grant(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    id: u64,
    ttl_ms: u64,
) -> Result<Result<OpResult, OpError>, StorageError> {
    let (leases, mut next) = load_count(overlay)?;
    if leases >= LEASES_MAX as u64 {
        return Ok(Err(OpError::TooManyLeases));
    }
    let id = if id == 0 {
        // At most LEASES_MAX - 1 ids are taken, so this finds a free one within LEASES_MAX
        // steps: bounded work, and the same id on every node.
        let mut candidate = next.clamp(1, LEASE_ID_MAX);
        while load(overlay, candidate)?.is_some() {
            candidate = if candidate >= LEASE_ID_MAX {
                1
            } else {
                candidate + 1
            };
        }
        next = if candidate >= LEASE_ID_MAX {
            1
        } else {
            candidate + 1
        };
        candidate
    } else {
        // Any record, even of an expired lease whose keys are still being deleted.
        if load(overlay, id)?.is_some() {
            return Ok(Err(OpError::LeaseExists { id }));
        }
        id
    };
    let lease = Lease {
        ttl_ms,
        expires_at_ms: time_ms.saturating_add(ttl_ms),
        keys: 0,
    };
    store(overlay, id, &lease);
    overlay.put(lease_expiry_key(lease.expires_at_ms, id), Vec::new());
    store_count(overlay, leases + 1, next);
    Ok(Ok(OpResult::Lease {
        id,
        ttl_ms,
        expires_at_ms: lease.expires_at_ms,
    }))
}

fn keep_alive(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    id: u64,
) -> Result<Result<OpResult, OpError>, StorageError> {
    let Some(mut lease) = live(overlay, id, time_ms)? else {
        return Ok(Err(OpError::LeaseNotFound { id }));
    };
    overlay.delete(lease_expiry_key(lease.expires_at_ms, id));
    lease.expires_at_ms = time_ms.saturating_add(lease.ttl_ms);
    store(overlay, id, &lease);
    overlay.put(lease_expiry_key(lease.expires_at_ms, id), Vec::new());
    Ok(Ok(OpResult::Lease {
        id,
        ttl_ms: lease.ttl_ms,
        expires_at_ms: lease.expires_at_ms,
    }))
}

/// Deletes lease `id` with all its keys. Also takes an expired lease whose keys are still
/// being deleted: revoking is "make sure it is gone".
fn revoke(
    overlay: &mut BlockOverlay<'_>,
    id: u64,
) -> Result<Result<OpResult, OpError>, StorageError> {
    let Some(lease) = load(overlay, id)? else {
        return Ok(Err(OpError::LeaseNotFound { id }));
    };
    let deleted = delete_keys(overlay, id, LEASE_KEYS_MAX)?;
    if deleted as u64 != lease.keys {
        return Err(StorageError::invalid(format!(
            "lease {id} counts {} keys but {deleted} are attached",
            lease.keys
        )));
    }
    delete_record(overlay, id)?;
    Ok(Ok(OpResult::LeaseRevoke {
        id,
        deleted: deleted as u64,
    }))
}

fn time_to_live(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    id: u64,
    with_keys: bool,
) -> Result<Result<OpResult, OpError>, StorageError> {
    let Some(lease) = live(overlay, id, time_ms)? else {
        return Ok(Err(OpError::LeaseNotFound { id }));
    };
    let keys = if with_keys {
        let (start, end) = lease_keys_bounds(id);
        let rows = overlay.range(&start, &end, LEASE_KEYS_MAX);
        let keys = rows
            .iter()
            .map(|(key, _)| parse_lease_keys_key(key).map(<[u8]>::to_vec))
            .collect::<Result<Vec<_>, _>>()?;
        Some(keys)
    } else {
        None
    };
    Ok(Ok(OpResult::LeaseTimeToLive(Box::new(LeaseStatus {
        id,
        ttl_ms: lease.ttl_ms,
        expires_at_ms: lease.expires_at_ms,
        block_time_ms: time_ms,
        key_count: lease.keys,
        keys,
    }))))
}

fn list(overlay: &BlockOverlay<'_>, time_ms: u64) -> Result<OpResult, StorageError> {
    let rows = overlay.range(&[LEASE_PREFIX], &[LEASE_PREFIX + 1], LEASES_MAX);
    let mut ids = Vec::with_capacity(rows.len());
    for (key, bytes) in rows {
        let id = parse_lease_key(&key)?;
        if Lease::decode(&bytes, id)?.live_at(time_ms) {
            ids.push(id);
        }
    }
    Ok(OpResult::LeaseList { ids })
}

/// Why a put cannot attach its key to `lease` at `time_ms` (the key's current lease is
/// `current`: re-attaching to the same lease does not count twice).
pub fn check_attach(
    overlay: &BlockOverlay<'_>,
    time_ms: u64,
    lease_id: u64,
    current: Option<u64>,
) -> Result<Result<(), OpError>, StorageError> {
    let Some(lease) = live(overlay, lease_id, time_ms)? else {
        return Ok(Err(OpError::LeaseNotFound { id: lease_id }));
    };
    let already = u64::from(current == Some(lease_id));
    if lease.keys - already >= LEASE_KEYS_MAX as u64 {
        return Ok(Err(OpError::LeaseFull { id: lease_id }));
    }
    Ok(Ok(()))
}

/// Why a transaction branch's lease puts cannot all succeed, checked before the branch runs
/// so a transaction is all or nothing. Lease existence cannot change inside a branch (no lease
/// operation is allowed there); for the key bound, every key the branch puts on a lease and
/// that is not attached to it yet counts, even if the branch also deletes others first, so
/// this may refuse a branch that would just fit (documented in the README).
pub fn check_branch(
    overlay: &BlockOverlay<'_>,
    time_ms: u64,
    branch: &[TxnOp],
) -> Result<Result<(), OpError>, StorageError> {
    let mut added: BTreeMap<u64, BTreeSet<&[u8]>> = BTreeMap::new();
    for op in branch {
        if let TxnOp::PutLease { key, lease, .. } = op {
            let current = read_entry(overlay, key)?.and_then(|(_, current)| current);
            if current != Some(*lease) {
                added.entry(*lease).or_default().insert(key.as_slice());
            } else {
                added.entry(*lease).or_default();
            }
        }
    }
    for (id, keys) in added {
        let Some(lease) = live(overlay, id, time_ms)? else {
            return Ok(Err(OpError::LeaseNotFound { id }));
        };
        if lease.keys + keys.len() as u64 > LEASE_KEYS_MAX as u64 {
            return Ok(Err(OpError::LeaseFull { id }));
        }
    }
    Ok(Ok(()))
}

/// Records that `user_key` is attached to lease `id` (which exists; the caller checked).
pub fn attach(
    overlay: &mut BlockOverlay<'_>,
    id: u64,
    user_key: &[u8],
) -> Result<(), StorageError> {
    let mut lease = load(overlay, id)?
        .ok_or_else(|| StorageError::invalid(format!("attach to missing lease {id}")))?;
    lease.keys += 1;
    store(overlay, id, &lease);
    overlay.put(lease_keys_key(id, user_key), Vec::new());
    Ok(())
}

/// Records that `user_key` is no longer attached to lease `id`.
pub fn detach(
    overlay: &mut BlockOverlay<'_>,
    id: u64,
    user_key: &[u8],
) -> Result<(), StorageError> {
    let mut lease = load(overlay, id)?.ok_or_else(|| {
        StorageError::invalid(format!("a key names lease {id}, which has no record"))
    })?;
    lease.keys = lease.keys.checked_sub(1).ok_or_else(|| {
        StorageError::invalid(format!("lease {id} counts no keys but one names it"))
    })?;
    store(overlay, id, &lease);
    overlay.delete(lease_keys_key(id, user_key));
    Ok(())
}

/// Deletes up to `limit` keys attached to lease `id` (in key order); returns how many.
fn delete_keys(
    overlay: &mut BlockOverlay<'_>,
    id: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let (start, end) = lease_keys_bounds(id);
    let rows = overlay.range(&start, &end, limit);
    for (index_key, _) in &rows {
        let user_key = parse_lease_keys_key(index_key)?;
        match read_entry(overlay, user_key)? {
            Some((entry, lease)) if lease == Some(id) => remove(overlay, user_key, &entry, lease)?,
            _ => {
                return Err(StorageError::invalid(format!(
                    "lease {id} lists key {user_key:02x?}, whose entry does not name it"
                )));
            }
        }
    }
    Ok(rows.len())
}

/// Deletes lease `id`'s record and expiry entry (its keys are gone already).
fn delete_record(overlay: &mut BlockOverlay<'_>, id: u64) -> Result<(), StorageError> {
    let Some(lease) = load(overlay, id)? else {
        return Ok(());
    };
    overlay.delete(lease_key(id));
    overlay.delete(lease_expiry_key(lease.expires_at_ms, id));
    let (leases, next) = load_count(overlay)?;
    let leases = leases
        .checked_sub(1)
        .ok_or_else(|| StorageError::invalid("the lease count is 0 but a lease exists"))?;
    store_count(overlay, leases, next);
    Ok(())
}

/// Expires the leases due at block time `time_ms`, earliest first: deletes their keys, then
/// their records, at most `limit` deletions in all (a lease whose keys do not all fit stays
/// due, with fewer keys, for the next block). Returns the deletions made.
pub fn expire_due(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let due = overlay.range(
        &[LEASE_EXPIRY_PREFIX],
        &lease_expiry_due_end(time_ms),
        limit,
    );
    let mut done = 0;
    for (index_key, _) in due {
        if done >= limit {
            break;
        }
        let (at, id) = parse_lease_expiry_key(&index_key)?;
        match load(overlay, id)? {
            Some(lease) if lease.expires_at_ms == at => {}
            // Never written this way (grant, keep-alive and delete keep the pair together),
            // but a stale index entry must not delete a lease that no longer expires then.
            _ => {
                overlay.delete(index_key);
                continue;
            }
        }
        done += delete_keys(overlay, id, limit - done)?;
        let left = load(overlay, id)?.map_or(0, |lease| lease.keys);
        if left > 0 || done >= limit {
            break;
        }
        delete_record(overlay, id)?;
        done += 1;
    }
    Ok(done)
}

/// The earliest lease expiry in the store, if any lease exists.
pub fn next_expiry_ms(engine: &Engine) -> Option<u64> {
    let mut next = None;
    engine.scan(
        &[LEASE_EXPIRY_PREFIX],
        Some(&[LEASE_EXPIRY_PREFIX + 1]),
        |key, _| {
            next = parse_lease_expiry_key(key).ok().map(|(at, _)| at);
            false
        },
    );
    next
}
