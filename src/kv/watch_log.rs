//! The watch log: the committed changes to data entries, one record per height that changed
//! something, kept for a bounded window of recent heights so watchers can read history and
//! resume without gaps.
//!
//! Layout (see `storage/FORMAT.md`): `'w' ++ height(u64 BE)` -> rkyv `Vec<WatchEvent>` in key
//! order; `"mwatchlog"` -> `[u64 floor LE][u64 bytes LE]`. The log holds every change at
//! heights in `(floor, applied_height]` and nothing at or below `floor`.
//!
//! Invariants:
//! - a block's record, its pruning and the new floor are written in the block's own engine
//!   batch, so after a crash the log matches the applied height exactly;
//! - the log is not state: its keys are not covered by the state tree, the state digest or
//!   snapshots (`keys::is_covered_prefix` is false for `w` and `m`), so nodes with different
//!   retention still agree on the state. After a snapshot install the log starts empty at the
//!   installed height;
//! - pruning is deterministic given the retention: records at or below
//!   `height - retention.heights` go, then the oldest while the log holds more than
//!   `retention.bytes`, at most `PRUNE_RECORDS_MAX` records per block (the rest next block).

use super::keys::{DATA_PREFIX, decode_versioned};
use super::overlay::BlockOverlay;
use crate::api::WatchEvent;
use crate::codec;
use crate::storage::{Engine, StorageError};

pub const LOG_PREFIX: u8 = b'w';
pub const LOG_META_KEY: &[u8] = b"mwatchlog";
/// Heights of history kept by default.
pub const WATCH_LOG_HEIGHTS_DEFAULT: u64 = 10_000;
/// Bytes of records kept by default (the newest record is always kept).
pub const WATCH_LOG_BYTES_DEFAULT: u64 = 256 << 20;
/// Records deleted per block at most, so one block never pays for a large prune.
const PRUNE_RECORDS_MAX: usize = 256;
/// Largest record the decoder accepts (a block's changes are far smaller).
const RECORD_BYTES_MAX: usize = 256 << 20;

/// How much history the log keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchRetention {
    pub heights: u64,
    pub bytes: u64,
}

impl Default for WatchRetention {
    fn default() -> Self {
        WatchRetention {
            heights: WATCH_LOG_HEIGHTS_DEFAULT,
            bytes: WATCH_LOG_BYTES_DEFAULT,
        }
    }
}

/// What the log holds: every change at heights in `(floor, applied]`, in `bytes` of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    pub floor: u64,
    pub bytes: u64,
}

impl LogState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.floor.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out
    }

    /// The stored state; a store written before the log existed starts it at `applied`.
    pub fn load(engine: &Engine, applied: u64) -> Result<LogState, StorageError> {
        let Some(stored) = engine.get(LOG_META_KEY) else {
            return Ok(LogState {
                floor: applied,
                bytes: 0,
            });
        };
        let corrupt =
            || StorageError::corrupt(engine.dir(), 0, "watch log meta entry is malformed");
        let floor: [u8; 8] = stored
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let bytes: [u8; 8] = stored
            .get(8..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        Ok(LogState {
            floor: u64::from_le_bytes(floor),
            bytes: u64::from_le_bytes(bytes),
        })
    }
}

pub fn log_key(height: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LOG_PREFIX);
    key.extend_from_slice(&height.to_be_bytes());
    key
}

fn parse_log_key(key: &[u8]) -> Result<u64, StorageError> {
    key.get(1..)
        .filter(|_| key.len() == 9 && key[0] == LOG_PREFIX)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::invalid(format!("watch log key {key:02x?} is malformed")))
}

fn decode_record(bytes: &[u8], height: u64) -> Result<Vec<WatchEvent>, StorageError> {
    codec::decode::<Vec<WatchEvent>>(bytes, RECORD_BYTES_MAX).map_err(|e| {
        StorageError::invalid(format!(
            "watch log record of height {height} is invalid: {e}"
        ))
    })
}

/// The block's changes to data entries, in key order. A key created and deleted within the
/// block (absent before and after) is no change.
fn block_events(
    overlay: &BlockOverlay<'_>,
    engine: &Engine,
) -> Result<Vec<WatchEvent>, StorageError> {
    let mut events = Vec::new();
    for (key, slot) in overlay.data_writes() {
        debug_assert_eq!(key.first(), Some(&DATA_PREFIX));
        let value = match slot {
            Some(stored) => Some(decode_versioned(stored, key)?),
            None if engine.get(key).is_none() => continue,
            None => None,
        };
        events.push(WatchEvent {
            key: key[1..].to_vec(),
            value,
        });
    }
    Ok(events)
}

/// Adds block `height`'s record, the pruning and the new log state to the block's batch;
/// returns the state to adopt once the engine accepted the batch.
pub fn stage_block(
    overlay: &mut BlockOverlay<'_>,
    engine: &Engine,
    state: LogState,
    retention: WatchRetention,
    height: u64,
) -> Result<LogState, StorageError> {
    let events = block_events(overlay, engine)?;
    let mut next = state;
    if !events.is_empty() {
        let record = codec::encode(&events).into_vec();
        next.bytes = next.bytes.saturating_add(record.len() as u64);
        overlay.set_derived(log_key(height), Some(record));
    }
    let next = prune(overlay, engine, next, retention, height)?;
    overlay.set_derived(LOG_META_KEY.to_vec(), Some(next.encode()));
    Ok(next)
}

fn prune(
    overlay: &mut BlockOverlay<'_>,
    engine: &Engine,
    mut state: LogState,
    retention: WatchRetention,
    height: u64,
) -> Result<LogState, StorageError> {
    let target = height.saturating_sub(retention.heights);
    // Visit the oldest records in place and stop at the first one kept: copying out the
    // first PRUNE_RECORDS_MAX records (the whole retained window's head, each a block's
    // changes) every block only to look at one of them showed in profiles.
    let mut doomed = Vec::new();
    let mut visited = 0usize;
    let mut stopped_above_target = false;
    let mut bad_key = None;
    engine.scan(
        &log_key(state.floor.saturating_add(1)),
        Some(&log_key(height)),
        |key, value| {
            if visited == PRUNE_RECORDS_MAX {
                return false;
            }
            visited += 1;
            let record_height = match parse_log_key(key) {
                Ok(h) => h,
                Err(error) => {
                    bad_key = Some(error);
                    return false;
                }
            };
            if record_height > target && state.bytes <= retention.bytes {
                stopped_above_target = true;
                return false;
            }
            doomed.push(key.to_vec());
            state.bytes = state.bytes.saturating_sub(value.len() as u64);
            state.floor = record_height;
            true
        },
    );
    if let Some(error) = bad_key {
        return Err(error);
    }
    for key in doomed {
        overlay.set_derived(key, None);
    }
    // As when the first PRUNE_RECORDS_MAX records were read: all of them if fewer.
    let scanned_all = visited < PRUNE_RECORDS_MAX;
    if scanned_all || stopped_above_target {
        // No record at or below `target` is left.
        state.floor = state.floor.max(target);
    }
    Ok(state)
}

/// A read of the log: `(height, events)` records, oldest first, and whether they are all the
/// records up to the asked height.
pub type LogRead = (Vec<(u64, Vec<WatchEvent>)>, bool);

/// Records of heights `from..=upto`, oldest first, at most `heights_max` records and about
/// `bytes_max` bytes (always at least one record if any exists), and whether they are all
/// the records up to `upto` (false: read on from after the last one).
pub fn read(
    engine: &Engine,
    from: u64,
    upto: u64,
    heights_max: usize,
    bytes_max: usize,
) -> Result<LogRead, StorageError> {
    if from > upto {
        return Ok((Vec::new(), true));
    }
    let end = log_key(upto.saturating_add(1));
    let end = if upto == u64::MAX {
        vec![LOG_PREFIX + 1]
    } else {
        end
    };
    let rows = engine.range(&log_key(from), Some(&end), heights_max);
    let mut complete = rows.len() < heights_max;
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    for (key, value) in rows {
        if !out.is_empty() && bytes.saturating_add(value.len()) > bytes_max {
            complete = false;
            break;
        }
        bytes = bytes.saturating_add(value.len());
        let height = parse_log_key(&key)?;
        out.push((height, decode_record(&value, height)?));
    }
    Ok((out, complete))
}
