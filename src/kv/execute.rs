//! Executing one request's operations against the block overlay.
//!
//! Pure function of (overlay state, height, block time, ops): no clock (the block's
//! consensus timestamp stands in for one), no randomness, no map iteration order that could
//! differ between nodes (only ordered maps are used).
//!
//! Invariant: a data entry carries `expires_at_ms = T` exactly when the expiry index holds
//! `expiry_key(T, key)` (`kv::expiry`): every write and delete of a key keeps the two together.

use super::keys::{data_end, data_key, decode_versioned, encode_entry, expiry_key};
use super::ops::{Compare, CompareOp, CompareTarget, Op, RANGE_LIMIT_MAX, Txn, TxnOp};
use super::overlay::BlockOverlay;
use super::reply::{KeyValue, OpReply, OpResult, VersionedValue};
use crate::storage::StorageError;

/// The block an op runs in: its height and consensus timestamp.
#[derive(Debug, Clone, Copy)]
pub struct BlockCtx {
    pub height: u64,
    pub time_ms: u64,
}

/// Executes validated ops in order; each sees the effects of the previous ones.
pub fn execute_ops(
    overlay: &mut BlockOverlay<'_>,
    block: BlockCtx,
    ops: Vec<Op>,
) -> Result<Vec<OpReply>, StorageError> {
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        let reply = match op.into_simple() {
            Ok(simple) => OpReply::Simple(execute_simple(overlay, block, simple)?),
            Err(txn) => execute_txn(overlay, block, txn)?,
        };
        replies.push(reply);
    }
    Ok(replies)
}

fn execute_txn(
    overlay: &mut BlockOverlay<'_>,
    block: BlockCtx,
    txn: Txn,
) -> Result<OpReply, StorageError> {
    let mut succeeded = true;
    for compare in &txn.compare {
        if !compare_holds(overlay, compare)? {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded { txn.success } else { txn.failure };
    let mut results = Vec::with_capacity(branch.len());
    for op in branch {
        results.push(execute_simple(overlay, block, op)?);
    }
    Ok(OpReply::Txn { succeeded, results })
}

fn read(overlay: &BlockOverlay<'_>, key: &[u8]) -> Result<Option<VersionedValue>, StorageError> {
    let stored_key = data_key(key);
    overlay
        .get(&stored_key)
        .map(|stored| decode_versioned(&stored, &stored_key))
        .transpose()
}

/// Writes `key`, replacing its old entry and the old entry's expiry index entry, and
/// returns the new version.
fn write(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    key: &[u8],
    value: &[u8],
    expires_at_ms: Option<u64>,
) -> Result<u64, StorageError> {
    let old = read(overlay, key)?;
    if let Some(at) = old.as_ref().and_then(|o| o.expires_at_ms) {
        overlay.delete(expiry_key(at, key));
    }
    let version = old.map_or(1, |old| old.version + 1);
    overlay.put(
        data_key(key),
        encode_entry(version, height, expires_at_ms, value),
    );
    if let Some(at) = expires_at_ms {
        overlay.put(expiry_key(at, key), Vec::new());
    }
    Ok(version)
}

/// Deletes `key` (whose current entry is `old`) and its expiry index entry.
pub(super) fn remove(overlay: &mut BlockOverlay<'_>, key: &[u8], old: &VersionedValue) {
    if let Some(at) = old.expires_at_ms {
        overlay.delete(expiry_key(at, key));
    }
    overlay.delete(data_key(key));
}

fn execute_simple(
    overlay: &mut BlockOverlay<'_>,
    block: BlockCtx,
    op: TxnOp,
) -> Result<OpResult, StorageError> {
    Ok(match op {
        TxnOp::Put { key, value } => OpResult::Put {
            version: write(overlay, block.height, &key, &value, None)?,
        },
        TxnOp::PutTtl { key, value, ttl_ms } => {
            let expires_at_ms = block.time_ms.saturating_add(ttl_ms);
            let version = write(overlay, block.height, &key, &value, Some(expires_at_ms))?;
            OpResult::PutTtl {
                version,
                expires_at_ms,
            }
        }
        TxnOp::Get { key } => OpResult::Get {
            found: read(overlay, &key)?,
        },
        TxnOp::Delete { key } => {
            let old = read(overlay, &key)?;
            if let Some(old) = &old {
                remove(overlay, &key, old);
            }
            OpResult::Delete {
                existed: old.is_some(),
            }
        }
        TxnOp::Range { start, end, limit } => {
            let (entries, more) = range(overlay, &start, end.as_deref(), limit)?;
            OpResult::Range { entries, more }
        }
        TxnOp::DeleteRange { start, end } => {
            let (entries, more) = range(overlay, &start, end.as_deref(), RANGE_LIMIT_MAX)?;
            for entry in &entries {
                remove(overlay, &entry.key, &entry.value);
            }
            OpResult::DeleteRange {
                deleted: entries.len() as u64,
                more,
            }
        }
    })
}

/// Data entries in `[start, end)`, at most `min(limit, RANGE_LIMIT_MAX)`, and whether more exist.
pub fn range(
    overlay: &BlockOverlay<'_>,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u32,
) -> Result<(Vec<KeyValue>, bool), StorageError> {
    let limit = limit.min(RANGE_LIMIT_MAX) as usize;
    let end_key = end.map_or_else(data_end, data_key);
    let mut rows = overlay.range(&data_key(start), &end_key, limit + 1);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let entries = rows
        .into_iter()
        .map(|(key, stored)| {
            Ok(KeyValue {
                value: decode_versioned(&stored, &key)?,
                key: key[1..].to_vec(),
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok((entries, more))
}

fn compare_holds(overlay: &BlockOverlay<'_>, compare: &Compare) -> Result<bool, StorageError> {
    let current = read(overlay, &compare.key)?;
    let ordering = match (&compare.target, &current) {
        (CompareTarget::Value(_), None) => return Ok(false),
        (CompareTarget::Value(want), Some(have)) => have.value.as_slice().cmp(want.as_slice()),
        (CompareTarget::Version(want), _) => current.as_ref().map_or(0, |v| v.version).cmp(want),
        (CompareTarget::Exists(want), _) => current.is_some().cmp(want),
    };
    Ok(match compare.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Less => ordering.is_lt(),
        CompareOp::Greater => ordering.is_gt(),
    })
}
