//! How the KV state lives in the storage engine's flat key space.
//!
//! ```text
//! 'a' ++ last_height(u64 BE) ++ client(32) ++ session(u64 BE) -> []  (sessions by age)
//! 'c' ++ client(32)                 -> [u64 expired_below LE][u64 live sessions LE]
//! 'd' ++ user_key                   -> [u64 version LE][u64 mod_height LE][value], or with a TTL
//!                                      [u64 version|1<<63 LE][u64 mod_height LE]
//!                                      [u64 expires_at_ms LE][value]; attached to a lease,
//!                                      bit 62 of the version is set and [u64 lease LE]
//!                                      comes before the value
//! 'k' ++ lease(u64 BE) ++ user_key  -> []  (the keys attached to a lease, see `kv::lease`)
//! 'l' ++ lease(u64 BE)              -> [u64 ttl_ms LE][u64 expires_at_ms LE][u64 keys LE]
//! 'm' ++ "state"                    -> [u64 applied_height LE][32 state tree root][u32 LE 4]
//! 'n' ++ "sessions"                 -> [u64 live sessions of all clients LE]
//! 'n' ++ "leases"                   -> [u64 leases LE][u64 next picked id LE]
//! 'r' ++ client(32) ++ session(u64 BE) ++ seq(u64 BE)
//!                                   -> [32 ops digest][encoded Reply] (exactly-once window)
//! 's' ++ client(32) ++ session(u64 BE)
//!                                   -> [u64 highest seq LE][u64 floor LE][u64 last_height LE]
//! 't' ++ u16 BE depth ++ path prefix  -> state tree node (see `kv::state_tree`)
//! 'w' ++ height(u64 BE)             -> the watch log record of a height (see `kv::watch_log`)
//! 'm' ++ "watchlog"                 -> [u64 floor LE][u64 bytes LE] (see `kv::watch_log`)
//! 'm' ++ "roots/" ++ height(u64 BE) -> [32 state digest] (see `kv::root_memory`)
//! 'x' ++ expires_at_ms(u64 BE) ++ user_key -> []  (expiry index, see `kv::expiry`)
//! 'y' ++ expires_at_ms(u64 BE) ++ lease(u64 BE) -> []  (lease expiry index, `kv::lease`)
//! ```
//! Heights, sessions, seqs, lease ids and expiry times are big-endian so ranges sort by them.
//! The `a`, `c`, `d`, `k`, `l`, `n`, `r`, `s`, `x` and `y` entries are the state: leaves of
//! the state tree (a session's replies of 16 consecutive seqs share one, see `kv::leaves`),
//! held by snapshots. The `m`,
//! `t` and `w` entries are derived from them (or the runtime's own). `kv::exactly_once` says what the `a`, `c`, `n`,
//! `r` and `s` entries mean.

use super::reply::VersionedValue;
use crate::storage::StorageError;

pub const AGE_PREFIX: u8 = b'a';
pub const CLIENT_PREFIX: u8 = b'c';
pub const DATA_PREFIX: u8 = crate::api::proof::DATA_PREFIX;
pub const META_PREFIX: u8 = b'm';
pub const SESSION_COUNT_KEY: &[u8] = b"nsessions";
pub const REPLY_PREFIX: u8 = b'r';
pub const SESSION_PREFIX: u8 = b's';
pub const META_KEY: &[u8] = b"mstate";
pub const TREE_PREFIX: u8 = b't';
pub const EXPIRY_PREFIX: u8 = b'x';
pub const LEASE_KEYS_PREFIX: u8 = b'k';
pub const LEASE_PREFIX: u8 = b'l';
pub const LEASE_EXPIRY_PREFIX: u8 = b'y';
pub const LEASE_COUNT_KEY: &[u8] = b"nleases";

/// True for the first byte of every state key: a leaf of the state tree, held by snapshots.
pub fn is_covered_prefix(first: u8) -> bool {
    matches!(
        first,
        AGE_PREFIX
            | CLIENT_PREFIX
            | DATA_PREFIX
            | REPLY_PREFIX
            | SESSION_PREFIX
            | EXPIRY_PREFIX
            | LEASE_KEYS_PREFIX
            | LEASE_PREFIX
            | LEASE_EXPIRY_PREFIX
    ) || first == SESSION_COUNT_KEY[0]
}

pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + user_key.len());
    key.push(DATA_PREFIX);
    key.extend_from_slice(user_key);
    key
}

/// The exclusive upper bound of all data keys.
pub fn data_end() -> Vec<u8> {
    vec![DATA_PREFIX + 1]
}

pub fn client_key(client: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(CLIENT_PREFIX);
    key.extend_from_slice(client);
    key
}

pub fn session_key(client: &[u8; 32], session: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(SESSION_PREFIX);
    key.extend_from_slice(client);
    key.extend_from_slice(&session.to_be_bytes());
    key
}

/// The exclusive upper bound of `client`'s session keys.
pub fn session_end(client: &[u8; 32]) -> Vec<u8> {
    let mut key = session_key(client, u64::MAX);
    key.push(0);
    key
}

pub fn reply_key(client: &[u8; 32], session: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(49);
    key.push(REPLY_PREFIX);
    key.extend_from_slice(client);
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The exclusive upper bound of one session's reply keys.
pub fn reply_end(client: &[u8; 32], session: u64) -> Vec<u8> {
    let mut key = reply_key(client, session, u64::MAX);
    key.push(0);
    key
}

pub fn age_key(last_height: u64, client: &[u8; 32], session: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(49);
    key.push(AGE_PREFIX);
    key.extend_from_slice(&last_height.to_be_bytes());
    key.extend_from_slice(client);
    key.extend_from_slice(&session.to_be_bytes());
    key
}

/// The client and session an age key names (it was written by [`age_key`]).
pub fn parse_age_key(key: &[u8]) -> Result<([u8; 32], u64), StorageError> {
    let bad = || StorageError::invalid(format!("session age key {key:02x?} is malformed"));
    if key.len() != 49 || key[0] != AGE_PREFIX {
        return Err(bad());
    }
    let client: [u8; 32] = key[9..41].try_into().map_err(|_| bad())?;
    let session: [u8; 8] = key[41..49].try_into().map_err(|_| bad())?;
    Ok((client, u64::from_be_bytes(session)))
}

/// The session a session key names.
pub fn parse_session_key(key: &[u8]) -> Result<u64, StorageError> {
    key.get(33..41)
        .filter(|_| key.len() == 41)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::invalid(format!("session key {key:02x?} is malformed")))
}

/// A data entry without an expiry (see [`encode_entry`]).
pub fn encode_versioned(version: u64, mod_height: u64, value: &[u8]) -> Vec<u8> {
    encode_entry(version, mod_height, None, value)
}

/// A data entry: version, the height that wrote it, the expiry time if it has a TTL, the
/// lease it is attached to, the value. One encoder for the store and the clients' proof
/// checks (layout in `api::verified_read::decode_entry`).
pub use crate::api::verified_read::{encode_entry, encode_entry_with_lease};

/// A data entry and the lease it is attached to, if any.
pub fn decode_entry_with_lease(
    stored: &[u8],
    key: &[u8],
) -> Result<(VersionedValue, Option<u64>), StorageError> {
    crate::api::verified_read::decode_entry_with_lease(stored).ok_or_else(|| {
        StorageError::invalid(format!(
            "stored value of key {key:02x?} is shorter than its header"
        ))
    })
}

pub fn decode_versioned(stored: &[u8], key: &[u8]) -> Result<VersionedValue, StorageError> {
    crate::api::verified_read::decode_entry(stored).ok_or_else(|| {
        StorageError::invalid(format!(
            "stored value of key {key:02x?} is shorter than its header"
        ))
    })
}

/// The expiry index entry of `user_key` expiring at `expires_at_ms`: ordered by time, then
/// key, so the keys due at a block time are one range scan from the start of the prefix.
pub fn expiry_key(expires_at_ms: u64, user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + user_key.len());
    key.push(EXPIRY_PREFIX);
    key.extend_from_slice(&expires_at_ms.to_be_bytes());
    key.extend_from_slice(user_key);
    key
}

/// The exclusive upper bound of the expiry entries due at `time_ms` (`expires_at_ms <= time_ms`).
pub fn expiry_due_end(time_ms: u64) -> Vec<u8> {
    match time_ms.checked_add(1) {
        Some(after) => {
            let mut key = Vec::with_capacity(9);
            key.push(EXPIRY_PREFIX);
            key.extend_from_slice(&after.to_be_bytes());
            key
        }
        None => vec![EXPIRY_PREFIX + 1],
    }
}

/// The expiry time and user key an expiry index key names (it was written by [`expiry_key`]).
pub fn parse_expiry_key(key: &[u8]) -> Result<(u64, &[u8]), StorageError> {
    key.get(1..9)
        .filter(|_| key.len() > 9 && key[0] == EXPIRY_PREFIX)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|t| (u64::from_be_bytes(t), &key[9..]))
        .ok_or_else(|| StorageError::invalid(format!("expiry key {key:02x?} is malformed")))
}

/// The lease record of `id`.
pub fn lease_key(id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LEASE_PREFIX);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The lease id a lease record key names (it was written by [`lease_key`]).
pub fn parse_lease_key(key: &[u8]) -> Result<u64, StorageError> {
    key.get(1..9)
        .filter(|_| key.len() == 9 && key[0] == LEASE_PREFIX)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::invalid(format!("lease key {key:02x?} is malformed")))
}

/// The entry saying `user_key` is attached to lease `id`.
pub fn lease_keys_key(id: u64, user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + user_key.len());
    key.push(LEASE_KEYS_PREFIX);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(user_key);
    key
}

/// The bounds `[start, end)` of lease `id`'s attached-key entries.
pub fn lease_keys_bounds(id: u64) -> (Vec<u8>, Vec<u8>) {
    let start = lease_keys_key(id, &[]);
    let end = match id.checked_add(1) {
        Some(next) => lease_keys_key(next, &[]),
        None => vec![LEASE_KEYS_PREFIX + 1],
    };
    (start, end)
}

/// The user key an attached-key entry names (it was written by [`lease_keys_key`]).
pub fn parse_lease_keys_key(key: &[u8]) -> Result<&[u8], StorageError> {
    if key.len() > 9 && key[0] == LEASE_KEYS_PREFIX {
        Ok(&key[9..])
    } else {
        Err(StorageError::invalid(format!(
            "lease key index entry {key:02x?} is malformed"
        )))
    }
}

/// The lease expiry index entry of lease `id` expiring at `expires_at_ms`.
pub fn lease_expiry_key(expires_at_ms: u64, id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(LEASE_EXPIRY_PREFIX);
    key.extend_from_slice(&expires_at_ms.to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The exclusive upper bound of the lease expiry entries due at `time_ms`.
pub fn lease_expiry_due_end(time_ms: u64) -> Vec<u8> {
    match time_ms.checked_add(1) {
        Some(after) => {
            let mut key = Vec::with_capacity(9);
            key.push(LEASE_EXPIRY_PREFIX);
            key.extend_from_slice(&after.to_be_bytes());
            key
        }
        None => vec![LEASE_EXPIRY_PREFIX + 1],
    }
}

/// The expiry time and lease id a lease expiry key names (written by [`lease_expiry_key`]).
pub fn parse_lease_expiry_key(key: &[u8]) -> Result<(u64, u64), StorageError> {
    let bad = || StorageError::invalid(format!("lease expiry key {key:02x?} is malformed"));
    if key.len() != 17 || key[0] != LEASE_EXPIRY_PREFIX {
        return Err(bad());
    }
    let at: [u8; 8] = key[1..9].try_into().map_err(|_| bad())?;
    let id: [u8; 8] = key[9..17].try_into().map_err(|_| bad())?;
    Ok((u64::from_be_bytes(at), u64::from_be_bytes(id)))
}

pub fn decode_u64(stored: &[u8], what: &str) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = stored.try_into().map_err(|_| {
        StorageError::invalid(format!(
            "stored {what} is {} bytes, expected 8",
            stored.len()
        ))
    })?;
    Ok(u64::from_le_bytes(bytes))
}
