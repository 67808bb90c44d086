//! How the KV state lives in the storage engine's flat key space.
//!
//! ```text
//! 'd' ++ user_key                   -> [u64 version LE][u64 mod_height LE][value]
//! 'c' ++ client(32)                 -> [u64 highest seq seen LE]
//! 'r' ++ client(32) ++ seq(u64 BE)  -> encoded Reply (exactly-once window)
//! 'm' ++ "state"                    -> [u64 applied_height LE][32 digest accumulator]
//! ```
//! Seqs are big-endian so a client's replies sort by seq. Everything but the `m` entry is
//! covered by the state digest.

use super::reply::VersionedValue;
use crate::storage::StorageError;

pub const DATA_PREFIX: u8 = b'd';
pub const CLIENT_PREFIX: u8 = b'c';
pub const REPLY_PREFIX: u8 = b'r';
pub const META_PREFIX: u8 = b'm';
pub const META_KEY: &[u8] = b"mstate";
const VALUE_HEADER_BYTES: usize = 16;

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

pub fn reply_key(client: &[u8; 32], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(REPLY_PREFIX);
    key.extend_from_slice(client);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn encode_versioned(version: u64, mod_height: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER_BYTES + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&mod_height.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub fn decode_versioned(stored: &[u8], key: &[u8]) -> Result<VersionedValue, StorageError> {
    let header: &[u8; VALUE_HEADER_BYTES] = stored
        .get(..VALUE_HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            StorageError::invalid(format!(
                "stored value of key {key:02x?} is shorter than its header"
            ))
        })?;
    let (version, height) = header.split_at(8);
    Ok(VersionedValue {
        version: u64::from_le_bytes(version.try_into().unwrap_or_default()),
        mod_height: u64::from_le_bytes(height.try_into().unwrap_or_default()),
        value: stored[VALUE_HEADER_BYTES..].to_vec(),
    })
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
