//! The consensus core's durable state: its safety data and the blocks it holds, in a storage
//! engine of their own (`<data_dir>/consensus`), apart from the replicated KV state
//! (`<data_dir>/state`).
//!
//! Why a separate engine: installing a snapshot replaces the whole KV engine, and the safety
//! data must survive that untouched (a node that forgot its last vote could vote twice).
//!
//! Layout:
//! ```text
//! "f"                          -> the block format, "bftd-blocks/v4" (written when the
//!                                 store is created; a store without it, or with another,
//!                                 holds blocks of an older layout and is refused)
//! "s"                          -> rkyv SafetyData (replaced on every change)
//! "b" ++ height(u64 BE) ++ id  -> rkyv Block
//! "c" ++ height(u64 BE)        -> id (32 bytes) of the committed block at that height
//! ```
//! The `c` index is written when a block is applied (after the block itself was persisted),
//! so the committed chain can be read by height without walking parent links: sync serves
//! peers from it ([`CommittedBlocks`], on the serving thread) below what the core keeps in
//! memory.
//! Which block the KV state is at lives in the KV engine's meta entry `COMMITTED_META_KEY`,
//! written in the same atomic batch as the block's effects (see `storage_thread`).
//!
//! Invariants: `persist` writes one engine batch per `Persist` action, so a crash keeps a
//! prefix of the actions; blocks and index entries below `committed - retained` are pruned
//! in the background of commits, never above; an index entry names a block stored under
//! the same height.

use std::path::Path;
use std::sync::Arc;

use crate::codec;
use crate::consensus::{DurableState, PersistItem, SafetyData};
use crate::storage::{Engine, EngineOptions, Lsn, StorageError, WriteBatch};
use crate::types::{Block, BlockHeader, BlockId, ClusterId};

const SAFETY_KEY: &[u8] = b"s";
const FORMAT_KEY: &[u8] = b"f";
/// The block layout this build stores: v4 added `timestamp_ms` (and the block id v4).
const BLOCK_FORMAT: &[u8] = b"bftd-blocks/v4";
const BLOCK_PREFIX: u8 = b'b';
const COMMITTED_PREFIX: u8 = b'c';
/// The KV engine meta key that names the block the state is at.
pub const COMMITTED_META_KEY: &[u8] = b"mnode/committed";
/// Largest stored block or safety record the decoder accepts.
const RECORD_BYTES_MAX: usize = codec::MESSAGE_BYTES_MAX;

pub struct BlockStore {
    engine: Arc<Engine>,
    /// Blocks below this height are pruned (exclusive).
    pruned_below: u64,
}

fn block_key(height: u64, id: &BlockId) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(BLOCK_PREFIX);
    key.extend_from_slice(&height.to_be_bytes());
    key.extend_from_slice(&id.0);
    key
}

fn height_key(height: u64) -> Vec<u8> {
    prefixed_height(BLOCK_PREFIX, height)
}

fn committed_key(height: u64) -> Vec<u8> {
    prefixed_height(COMMITTED_PREFIX, height)
}

fn prefixed_height(prefix: u8, height: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(prefix);
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// Encodes a committed block header for the KV meta entry: id, parent, round, height.
pub fn encode_header(h: &BlockHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(&h.id.0);
    out.extend_from_slice(&h.parent.0);
    out.extend_from_slice(&h.round.to_le_bytes());
    out.extend_from_slice(&h.height.to_le_bytes());
    out
}

pub fn decode_header(bytes: &[u8]) -> Option<BlockHeader> {
    if bytes.len() != 80 {
        return None;
    }
    let id = BlockId(bytes[..32].try_into().ok()?);
    let parent = BlockId(bytes[32..64].try_into().ok()?);
    let round = u64::from_le_bytes(bytes[64..72].try_into().ok()?);
    let height = u64::from_le_bytes(bytes[72..80].try_into().ok()?);
    Some(BlockHeader {
        id,
        parent,
        round,
        height,
    })
}

/// Refuses a store written with another block layout (never misparse old blocks); marks a new
/// store with this build's.
fn check_format(engine: &Engine) -> Result<(), StorageError> {
    match engine.get(FORMAT_KEY) {
        Some(f) if f == BLOCK_FORMAT => Ok(()),
        found => {
            let mut empty = true;
            engine.scan(&[], None, |_, _| {
                empty = false;
                false
            });
            if empty {
                let mut batch = WriteBatch::new();
                batch.put(FORMAT_KEY, BLOCK_FORMAT.to_vec());
                return engine.write(&batch).map(|_| ());
            }
            let had = found.map_or("none (blocks without timestamps)".to_string(), |f| {
                String::from_utf8_lossy(&f).into_owned()
            });
            Err(StorageError::corrupt(
                engine.dir(),
                0,
                format!(
                    "the consensus store holds blocks of format {had}, but this bftd stores {}: \
                     it was written by an older bftd. Start this node from an empty data dir \
                     (it catches up from its peers), or run the bftd that wrote it",
                    String::from_utf8_lossy(BLOCK_FORMAT)
                ),
            ))
        }
    }
}

impl BlockStore {
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Self, StorageError> {
        let engine = Engine::open(dir, options, |lsn, kind, _| {
            Err(StorageError::invalid(format!(
                "unexpected WAL record kind {kind} at LSN {lsn}"
            )))
        })?;
        check_format(&engine)?;
        Ok(Self {
            engine: Arc::new(engine),
            pruned_below: 0,
        })
    }

    /// A read handle on the committed chain, for the serving thread.
    pub fn committed_reader(&self) -> CommittedBlocks {
        CommittedBlocks {
            engine: Arc::clone(&self.engine),
        }
    }

    /// Records `id` as the committed block at `height` (queued; durable with the group).
    pub fn index_committed(&self, height: u64, id: &BlockId) -> Result<Lsn, StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(committed_key(height), id.0.to_vec());
        self.engine.write_owned_nowait(batch)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Queues one `Persist` action's items as one atomic batch; durable once
    /// `engine().wait_durable(lsn)` returns.
    pub fn persist(&self, items: &[PersistItem]) -> Result<Lsn, StorageError> {
        let mut batch = WriteBatch::new();
        for item in items {
            match item {
                PersistItem::Safety(s) => batch.put(SAFETY_KEY, codec::encode(s).into_vec()),
                PersistItem::Block { id, block } => {
                    batch.put(block_key(block.height, id), codec::encode(block).into_vec())
                }
            }
        }
        self.engine.write_owned_nowait(batch)
    }

    /// Deletes blocks below `height` (exclusive). Bounded work per call: at most `max` blocks.
    pub fn prune_below(&mut self, height: u64, max: usize) -> Result<Option<Lsn>, StorageError> {
        if height <= self.pruned_below {
            return Ok(None);
        }
        let rows = self.engine.range(
            &height_key(self.pruned_below),
            Some(&height_key(height)),
            max,
        );
        let index = self.engine.range(
            &committed_key(self.pruned_below),
            Some(&committed_key(height)),
            max,
        );
        let done = rows.len() < max && index.len() < max;
        let mut batch = WriteBatch::new();
        for (key, _) in rows.iter().chain(&index) {
            batch.delete(key.clone());
        }
        if done {
            self.pruned_below = height;
        }
        if batch.is_empty() {
            return Ok(None);
        }
        self.engine.write_owned_nowait(batch).map(Some)
    }

    /// The state a restarted core resumes from. `committed` is the block the KV state is at
    /// (genesis for a fresh node); blocks at or below `committed.height - retained` are not
    /// loaded.
    pub fn load(
        &mut self,
        cluster: &ClusterId,
        committed: BlockHeader,
        retained: u64,
    ) -> Result<DurableState, StorageError> {
        let safety = match self.engine.get(SAFETY_KEY) {
            None => SafetyData::genesis(cluster),
            Some(bytes) => codec::decode::<SafetyData>(&bytes, RECORD_BYTES_MAX).map_err(|e| {
                StorageError::corrupt(self.engine.dir(), 0, format!("safety record: {e}"))
            })?,
        };
        let from = committed.height.saturating_sub(retained);
        let mut blocks = Vec::new();
        let mut failure = None;
        self.engine.scan(
            &height_key(from),
            Some(&[BLOCK_PREFIX + 1]),
            |key, value| match codec::decode::<Block>(value, RECORD_BYTES_MAX) {
                Ok(block) => {
                    let id = block.compute_id();
                    if key[9..] != id.0 {
                        failure = Some(format!("block at key {key:02x?} has another id"));
                        return false;
                    }
                    blocks.push((id, block));
                    true
                }
                Err(e) => {
                    failure = Some(format!("block record: {e}"));
                    false
                }
            },
        );
        if let Some(why) = failure {
            return Err(StorageError::corrupt(self.engine.dir(), 0, why));
        }
        self.pruned_below = from;
        Ok(DurableState {
            safety,
            blocks,
            committed,
        })
    }
}

/// Reads the committed chain by height from the block store; shared with the serving thread
/// (the engine is `Send + Sync`; reads never wait for the storage thread's group commit).
#[derive(Clone)]
pub struct CommittedBlocks {
    engine: Arc<Engine>,
}

impl CommittedBlocks {
    /// The committed blocks of heights `from ..= to`, ascending, at most `blocks_max` of them
    /// and, past the first two, at most `bytes_max` bytes (by `consensus::sync_bytes`). Stops
    /// at the first height not stored (pruned, or its index not written yet): the requester
    /// asks again. Every record is checked: id, height and the link to the block below.
    pub fn range(
        &self,
        from: u64,
        to: u64,
        blocks_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<Block>, StorageError> {
        let mut out: Vec<Block> = Vec::new();
        let mut bytes = 0usize;
        let mut below: Option<BlockId> = None;
        for height in from..=to {
            if out.len() >= blocks_max {
                break;
            }
            let Some(block) = self.committed_at(height)? else {
                break;
            };
            if below.is_some_and(|id| block.parent_id() != id) {
                return Err(self.corrupt(height, "the committed index skips a link"));
            }
            bytes = bytes.saturating_add(crate::consensus::sync_bytes(&block));
            if out.len() >= 2 && bytes > bytes_max {
                break;
            }
            below = Some(block.compute_id());
            out.push(block);
        }
        Ok(out)
    }

    fn committed_at(&self, height: u64) -> Result<Option<Block>, StorageError> {
        let Some(id_bytes) = self.engine.get(&committed_key(height)) else {
            return Ok(None);
        };
        let id = BlockId(
            id_bytes
                .as_slice()
                .try_into()
                .map_err(|_| self.corrupt(height, "index entry is not a block id"))?,
        );
        let Some(bytes) = self.engine.get(&block_key(height, &id)) else {
            return Ok(None); // pruned between the two reads
        };
        let block = codec::decode::<Block>(&bytes, RECORD_BYTES_MAX)
            .map_err(|e| self.corrupt(height, &format!("block record: {e}")))?;
        if block.height != height || block.compute_id() != id {
            return Err(self.corrupt(height, "block record is not the indexed block"));
        }
        Ok(Some(block))
    }

    fn corrupt(&self, height: u64, why: &str) -> StorageError {
        StorageError::corrupt(
            self.engine.dir(),
            0,
            format!("committed block at height {height}: {why}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written before the format entry (blocks without timestamps) is refused with a
    /// message that says what to do; a new store is marked and opens again.
    #[test]
    fn a_store_of_an_older_block_format_is_refused_and_a_new_one_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        {
            let engine = Engine::open(&old, EngineOptions::default(), |_, _, _| Ok(())).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(SAFETY_KEY, b"an old safety record".to_vec());
            engine.write(&batch).unwrap();
        }
        let err = BlockStore::open(&old, EngineOptions::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("format none")
                && err.contains("bftd-blocks/v4")
                && err.contains("empty data dir"),
            "{err}"
        );
        let new = dir.path().join("new");
        drop(BlockStore::open(&new, EngineOptions::default()).unwrap());
        let store = BlockStore::open(&new, EngineOptions::default()).unwrap();
        assert_eq!(
            store.engine().get(FORMAT_KEY).as_deref(),
            Some(BLOCK_FORMAT)
        );
    }
}
