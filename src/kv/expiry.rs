//! Key expiry: the deterministic state transition that deletes keys whose TTL ran out.
//!
//! A key put with a TTL carries `expires_at_ms` in its data entry and has an entry
//! `expiry_key(expires_at_ms, key)` in the expiry index (`kv::keys`), ordered by time then
//! key. When a block with consensus timestamp `T` is applied, before its requests run,
//! [`expire_due`] deletes the keys whose `expires_at_ms <= T`, in index order, at most
//! [`EXPIRED_PER_BLOCK_MAX`] of them; the rest stay due and go with the next blocks (the
//! runtime tells consensus the next expiry, [`next_expiry_ms`], so it proposes them). Leases
//! expire in the same pass, after the keys and within the same bound
//! ([`expire_due_with_leases`], `kv::lease`), and their expiry counts for [`next_expiry_ms`].
//!
//! Determinism: the result depends only on the state and `T`, which the block carries
//! (agreed in consensus, never a node's clock). Expired keys are ordinary deletes of the
//! block: the watch log records them, the key count drops, the tree update covers them.

use super::execute::remove;
use super::keys::{
    EXPIRY_PREFIX, data_key, decode_entry_with_lease, expiry_due_end, parse_expiry_key,
};
use super::lease;
use super::overlay::BlockOverlay;
use crate::storage::{Engine, StorageError};

/// Keys one block expires at most: bounds the work (and the batch) a block adds to its
/// requests, whatever number of keys fell due at once.
pub const EXPIRED_PER_BLOCK_MAX: usize = 1_000;

/// Deletes the keys due at block time `time_ms` (at most `limit`, earliest first); returns
/// how many it deleted.
pub fn expire_due(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let due = overlay.range(&[EXPIRY_PREFIX], &expiry_due_end(time_ms), limit);
    let mut expired = 0;
    for (index_key, _) in due {
        let (at, user_key) = parse_expiry_key(&index_key)?;
        let stored_key = data_key(user_key);
        let current = overlay
            .get(&stored_key)
            .map(|stored| decode_entry_with_lease(&stored, &stored_key))
            .transpose()?;
        match current {
            // The entry the index names: delete both.
            Some((entry, lease)) if entry.expires_at_ms == Some(at) => {
                remove(overlay, user_key, &entry, lease)?;
                expired += 1;
            }
            // Never written this way (every write keeps the pair together), but a stale
            // index entry must not delete a key that no longer expires then.
            _ => overlay.delete(index_key.clone()),
        }
    }
    Ok(expired)
}

/// Deletes what is due at block time `time_ms`: keys whose TTL ran out, then leases that
/// expired with their keys (`kv::lease`), at most `limit` deletions in all; returns how many.
pub fn expire_due_with_leases(
    overlay: &mut BlockOverlay<'_>,
    time_ms: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let keys = expire_due(overlay, time_ms, limit)?;
    let leases = lease::expire_due(overlay, time_ms, limit - keys)?;
    Ok(keys + leases)
}

/// The earliest `expires_at_ms` in the store of a key with a TTL or of a lease.
pub fn next_expiry_ms(engine: &Engine) -> Option<u64> {
    let mut next = None;
    engine.scan(&[EXPIRY_PREFIX], Some(&[EXPIRY_PREFIX + 1]), |key, _| {
        next = parse_expiry_key(key).ok().map(|(at, _)| at);
        false
    });
    match (next, lease::next_expiry_ms(engine)) {
        (Some(key), Some(lease)) => Some(key.min(lease)),
        (key, lease) => key.or(lease),
    }
}
