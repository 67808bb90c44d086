//! The root memory: the state digests (the roots consensus certifies, see
//! [`crate::api::proof::state_digest`]) of the last [`ROOT_MEMORY_HEIGHTS`] applied heights,
//! kept in the state engine so that a restarted node still knows the roots of heights it
//! applied before it stopped. A voter compares the roots a block carries with its own of the
//! same heights and cannot vouch for one it forgot; with `f` Byzantine members its vote may be
//! needed for a quorum, so a node that forgot them on restart could stall the cluster.
//!
//! Layout (see `storage/FORMAT.md`): `"mroots/" ++ height(u64 BE)` -> `[32]` state digest
//! after that height.
//!
//! Invariants:
//! - each block's entry is written in the block's own engine batch, together with the deletion
//!   of the entry that falls out (`height - ROOT_MEMORY_HEIGHTS`), so after a crash the memory
//!   ends exactly at the applied height and holds at most `ROOT_MEMORY_HEIGHTS` entries;
//! - a snapshot install and a tree realignment replace the whole memory by the one root they
//!   know, the new state's own: the roots kept from before describe another state. Snapshots
//!   do not carry the memory: the roots of earlier heights are not covered by the snapshot's
//!   certified root, so a server could invent them, and a wrong own root would make the node
//!   refuse good blocks or think itself diverged;
//! - it is not state: its keys are under the meta prefix, outside the tree, the digest and
//!   snapshots;
//! - loading trusts only the run of consecutive heights that ends at the applied height with
//!   the current digest. A store without entries (a data dir written before the memory
//!   existed) gives just the current root, which is what a restart remembered before.

use super::overlay::BlockOverlay;
use crate::storage::{Engine, StorageError};

/// Heights whose roots are kept. A block carries roots of heights above its parent chain's
/// last carried height, up to what its own ancestry commits, at most 64 per block
/// (`types::STATE_ROOTS_MAX`), lowest first; every honest leader carries what it applied. So
/// the roots still to be carried lag the committed height by the 2-chain (two heights) plus
/// what leaders have not applied yet (the storage queue), a few heights in practice and tens
/// under a slow disk; one honest block then carries up to 64 of them. 1024 keeps sixteen
/// such blocks of margin. It stays well below the heights of committed blocks a node keeps
/// (`consensus.committed_blocks_retained`, 10,000 by default: a node further behind catches
/// up by snapshot and so replaces its state and this memory anyway), below the in-memory
/// `consensus::roots::ROOTS_KEPT` (4096), and below the node's queue of applied reports
/// (4096), through which the memory is replayed at start. Cost: one 7 + 8 byte key and 32
/// byte value written and one deleted per block.
pub const ROOT_MEMORY_HEIGHTS: u64 = 1024;

/// The prefix of the memory's keys (a meta key: `keys::META_PREFIX` first).
pub const ROOT_MEMORY_PREFIX: &[u8] = b"mroots/";

const KEY_BYTES: usize = ROOT_MEMORY_PREFIX.len() + 8;

pub fn root_key(height: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_BYTES);
    key.extend_from_slice(ROOT_MEMORY_PREFIX);
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// The exclusive upper bound of the memory's keys.
fn end_key() -> Vec<u8> {
    let mut end = ROOT_MEMORY_PREFIX.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn parse_key(engine: &Engine, key: &[u8]) -> Result<u64, StorageError> {
    key.strip_prefix(ROOT_MEMORY_PREFIX)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            StorageError::corrupt(
                engine.dir(),
                0,
                format!("root memory key {key:02x?} is malformed"),
            )
        })
}

/// Stages block `height`'s root in its batch and drops the one that falls out.
pub fn stage_block(overlay: &mut BlockOverlay<'_>, height: u64, digest: &[u8; 32]) {
    overlay.set_derived(root_key(height), Some(digest.to_vec()));
    if height > ROOT_MEMORY_HEIGHTS {
        overlay.set_derived(root_key(height - ROOT_MEMORY_HEIGHTS), None);
    }
}

/// Every stored entry, oldest first, each checked (a malformed key or value is an error); at
/// most `2 * ROOT_MEMORY_HEIGHTS + 1` of them (more would already be a damaged store).
pub fn stored(engine: &Engine) -> Result<Vec<(u64, [u8; 32])>, StorageError> {
    rows(engine, ROOT_MEMORY_PREFIX, &end_key())
}

fn rows(engine: &Engine, start: &[u8], end: &[u8]) -> Result<Vec<(u64, [u8; 32])>, StorageError> {
    let mut rows = Vec::new();
    let mut bad = None;
    engine.scan(start, Some(end), |key, value| {
        let height = match parse_key(engine, key) {
            Ok(h) => h,
            Err(e) => {
                bad = Some(e);
                return false;
            }
        };
        match <[u8; 32]>::try_from(value) {
            Ok(root) => rows.push((height, root)),
            Err(_) => {
                bad = Some(StorageError::corrupt(
                    engine.dir(),
                    0,
                    format!(
                        "root memory entry of height {height} is {} bytes, not 32",
                        value.len()
                    ),
                ));
                return false;
            }
        }
        rows.len() <= ROOT_MEMORY_HEIGHTS as usize * 2
    });
    match bad {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// The roots to remember after a restart at `applied` with state digest `current`: the run
/// of consecutive stored heights ending at `applied`, oldest first, if the stored root of
/// `applied` is `current`; otherwise just `(applied, current)`. Never empty, always ends with
/// `(applied, current)`.
pub fn load(
    engine: &Engine,
    applied: u64,
    current: [u8; 32],
) -> Result<Vec<(u64, [u8; 32])>, StorageError> {
    if cfg!(feature = "mutation-forget-roots") {
        // BROKEN ON PURPOSE: a restart remembers only the current root, as before the memory.
        return Ok(vec![(applied, current)]);
    }
    let from = applied.saturating_sub(ROOT_MEMORY_HEIGHTS - 1);
    let mut run: Vec<(u64, [u8; 32])> = Vec::new();
    let end = root_key(applied.saturating_add(1));
    for (height, root) in rows(engine, &root_key(from), &end)? {
        match run.last() {
            Some((last, _)) if *last + 1 == height => {}
            _ => run.clear(), // a gap: only what follows it joins up with `applied`
        }
        run.push((height, root));
    }
    if run.last() != Some(&(applied, current)) {
        return Ok(vec![(applied, current)]);
    }
    Ok(run)
}
