//! Executing one request's operations against the block overlay.
//!
//! Pure function of (overlay state, height, block time, ops): no clock (the block's
//! consensus timestamp stands in for one), no randomness, no map iteration order that could
//! differ between nodes (only ordered maps are used).
//!
//! Invariants: a data entry carries `expires_at_ms = T` exactly when the expiry index holds
//! `expiry_key(T, key)` (`kv::expiry`), and names lease `L` exactly when `L`'s key index holds
//! the key (`kv::lease`): every write and delete of a key keeps these together.
//!
//! An operation either succeeds or fails with an [`OpError`] (only lease operations and puts
//! on a lease can) and then changes nothing; a transaction whose branch would fail that way
//! fails as a whole before any of it runs.

use super::keys::{
    data_end, data_key, decode_entry_with_lease, encode_entry_with_lease, expiry_key,
};
use super::lease;
use super::ops::{Compare, CompareOp, CompareTarget, NotSimple, Op, RANGE_LIMIT_MAX, Txn, TxnOp};
use super::overlay::BlockOverlay;
use super::reply::{KeyValue, OpError, OpReply, OpResult, VersionedValue};
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
            Ok(simple) => match execute_simple(overlay, block, simple)? {
                Ok(result) => OpReply::Simple(result),
                Err(error) => OpReply::Failed(error),
            },
            Err(NotSimple::Txn(txn)) => execute_txn(overlay, block, txn)?,
            Err(NotSimple::Lease(op)) => match lease::execute(overlay, block.time_ms, op)? {
                Ok(result) => OpReply::Simple(result),
                Err(error) => OpReply::Failed(error),
            },
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
    // Puts on a lease are the only branch operations that can fail: check them all first.
    if let Err(error) = lease::check_branch(overlay, block.time_ms, &branch)? {
        return Ok(OpReply::Failed(error));
    }
    let mut results = Vec::with_capacity(branch.len());
    for op in branch {
        match execute_simple(overlay, block, op)? {
            Ok(result) => results.push(result),
            // `check_branch` rules this out; were it wrong, the reply still says what failed
            // (the same on every node), though the branch's earlier operations stay applied.
            Err(error) => return Ok(OpReply::Failed(error)),
        }
    }
    Ok(OpReply::Txn { succeeded, results })
}

fn read(overlay: &BlockOverlay<'_>, key: &[u8]) -> Result<Option<VersionedValue>, StorageError> {
    Ok(read_entry(overlay, key)?.map(|(value, _)| value))
}

/// `key`'s entry and the lease it is attached to, if any.
pub(super) fn read_entry(
    overlay: &BlockOverlay<'_>,
    key: &[u8],
) -> Result<Option<(VersionedValue, Option<u64>)>, StorageError> {
    let stored_key = data_key(key);
    overlay
        .get(&stored_key)
        .map(|stored| decode_entry_with_lease(&stored, &stored_key))
        .transpose()
}

/// Writes `key`, replacing its old entry with the old entry's expiry index entry and lease
/// attachment, and returns the new version. A lease to attach to was checked by the caller.
fn write(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    key: &[u8],
    value: &[u8],
    expires_at_ms: Option<u64>,
    lease_id: Option<u64>,
) -> Result<u64, StorageError> {
    let old = read_entry(overlay, key)?;
    let version = match old {
        Some((old, old_lease)) => {
            if let Some(at) = old.expires_at_ms {
                overlay.delete(expiry_key(at, key));
            }
            if let Some(id) = old_lease {
                lease::detach(overlay, id, key)?;
            }
            old.version + 1
        }
        None => 1,
    };
    overlay.put(
        data_key(key),
        encode_entry_with_lease(version, height, expires_at_ms, lease_id, value),
    );
    if let Some(at) = expires_at_ms {
        overlay.put(expiry_key(at, key), Vec::new());
    }
    if let Some(id) = lease_id {
        lease::attach(overlay, id, key)?;
    }
    Ok(version)
}

/// Deletes `key` (whose current entry is `old`, attached to `old_lease`), its expiry index
/// entry and its lease attachment.
pub(super) fn remove(
    overlay: &mut BlockOverlay<'_>,
    key: &[u8],
    old: &VersionedValue,
    old_lease: Option<u64>,
) -> Result<(), StorageError> {
    if let Some(at) = old.expires_at_ms {
        overlay.delete(expiry_key(at, key));
    }
    if let Some(id) = old_lease {
        lease::detach(overlay, id, key)?;
    }
    overlay.delete(data_key(key));
    Ok(())
}

fn execute_simple(
    overlay: &mut BlockOverlay<'_>,
    block: BlockCtx,
    op: TxnOp,
) -> Result<Result<OpResult, OpError>, StorageError> {
    Ok(Ok(match op {
        TxnOp::Put { key, value } => OpResult::Put {
            version: write(overlay, block.height, &key, &value, None, None)?,
        },
        TxnOp::PutTtl { key, value, ttl_ms } => {
            let expires_at_ms = block.time_ms.saturating_add(ttl_ms);
            let version = write(
                overlay,
                block.height,
                &key,
                &value,
                Some(expires_at_ms),
                None,
            )?;
            OpResult::PutTtl {
                version,
                expires_at_ms,
            }
        }
        TxnOp::PutLease { key, value, lease } => {
            let current = read_entry(overlay, &key)?.and_then(|(_, current)| current);
            if let Err(error) = lease::check_attach(overlay, block.time_ms, lease, current)? {
                return Ok(Err(error));
            }
            OpResult::Put {
                version: write(overlay, block.height, &key, &value, None, Some(lease))?,
            }
        }
        TxnOp::Get { key } => OpResult::Get {
            found: read(overlay, &key)?,
        },
        TxnOp::Delete { key } => {
            let old = read_entry(overlay, &key)?;
            if let Some((old, old_lease)) = &old {
                remove(overlay, &key, old, *old_lease)?;
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
            let (entries, more) = range_entries(overlay, &start, end.as_deref(), RANGE_LIMIT_MAX)?;
            for (key, value, old_lease) in &entries {
                remove(overlay, key, value, *old_lease)?;
            }
            OpResult::DeleteRange {
                deleted: entries.len() as u64,
                more,
            }
        }
    }))
}

/// Data entries in `[start, end)`, at most `min(limit, RANGE_LIMIT_MAX)`, and whether more exist.
pub fn range(
    overlay: &BlockOverlay<'_>,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u32,
) -> Result<(Vec<KeyValue>, bool), StorageError> {
    let (entries, more) = range_entries(overlay, start, end, limit)?;
    let entries = entries
        .into_iter()
        .map(|(key, value, _)| KeyValue { key, value })
        .collect();
    Ok((entries, more))
}

/// A user key, its entry and its lease.
type Entry = (Vec<u8>, VersionedValue, Option<u64>);

/// Like [`range`], with each entry's lease.
fn range_entries(
    overlay: &BlockOverlay<'_>,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u32,
) -> Result<(Vec<Entry>, bool), StorageError> {
    let limit = limit.min(RANGE_LIMIT_MAX) as usize;
    let end_key = end.map_or_else(data_end, data_key);
    let mut rows = overlay.range(&data_key(start), &end_key, limit + 1);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let entries = rows
        .into_iter()
        .map(|(key, stored)| {
            let (value, lease) = decode_entry_with_lease(&stored, &key)?;
            Ok((key[1..].to_vec(), value, lease))
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
