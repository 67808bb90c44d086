//! Executing one request's operations against the block overlay.
//!
//! Pure function of (overlay state, height, ops): no clock, no randomness, no map iteration
//! order that could differ between nodes (only ordered maps are used).

use super::keys::{data_end, data_key, decode_versioned, encode_versioned};
use super::ops::{Compare, CompareOp, CompareTarget, Op, RANGE_LIMIT_MAX, Txn, TxnOp};
use super::overlay::BlockOverlay;
use super::reply::{KeyValue, OpReply, OpResult, VersionedValue};
use crate::storage::StorageError;

/// Executes validated ops in order; each sees the effects of the previous ones.
pub fn execute_ops(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    ops: Vec<Op>,
) -> Result<Vec<OpReply>, StorageError> {
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        let reply = match op.into_simple() {
            Ok(simple) => OpReply::Simple(execute_simple(overlay, height, simple)?),
            Err(txn) => execute_txn(overlay, height, txn)?,
        };
        replies.push(reply);
    }
    Ok(replies)
}

fn execute_txn(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
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
        results.push(execute_simple(overlay, height, op)?);
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

fn execute_simple(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    op: TxnOp,
) -> Result<OpResult, StorageError> {
    Ok(match op {
        TxnOp::Put { key, value } => {
            let version = read(overlay, &key)?.map_or(1, |old| old.version + 1);
            overlay.put(data_key(&key), encode_versioned(version, height, &value));
            OpResult::Put { version }
        }
        TxnOp::Get { key } => OpResult::Get {
            found: read(overlay, &key)?,
        },
        TxnOp::Delete { key } => {
            let existed = read(overlay, &key)?.is_some();
            overlay.delete(data_key(&key));
            OpResult::Delete { existed }
        }
        TxnOp::Range { start, end, limit } => {
            let (entries, more) = range(overlay, &start, end.as_deref(), limit)?;
            OpResult::Range { entries, more }
        }
        TxnOp::DeleteRange { start, end } => {
            let (entries, more) = range(overlay, &start, end.as_deref(), RANGE_LIMIT_MAX)?;
            for entry in &entries {
                overlay.delete(data_key(&entry.key));
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
