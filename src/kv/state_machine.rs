//! The replicated KV state machine: applies committed blocks, deterministically.
//!
//! Each block becomes exactly one engine write batch (data, exactly-once table, the changed
//! state tree chunks, and the meta entry holding the applied height and tree root), so after a
//! crash the store is at a block boundary: either the whole block is applied or none of it,
//! and the tree always matches the entries. `apply` returns only after that batch is durable.
//! The tree is updated once per block from the block's changed entries (`kv::state_tree`),
//! reading its chunks through a write-through cache (`kv::node_cache`) that changes only after
//! the engine accepted the block's batch.
//!
//! Determinism: the replies and the new state depend only on the previous state, the height
//! and the request bytes; undecodable or over-limit requests get a `Rejected` reply, never a
//! panic. Reads for stale queries (`get`, `range`) see the last applied block.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use super::exactly_once::{self, SeqStatus, Slot};
use super::execute::{BlockCtx, execute_ops, range};
use super::expiry::{self, EXPIRED_PER_BLOCK_MAX};
use super::history::{UNDO_BYTES_DEFAULT, UNDO_HEIGHTS_DEFAULT, Undo, UndoLog};
use super::keys::{DATA_PREFIX, META_KEY, META_PREFIX, data_end, data_key, decode_versioned};
use super::node_cache::{NodeCache, TREE_CACHE_BYTES_MAX};
use super::ops::decode_ops;
use super::overlay::BlockOverlay;
use super::reply::{
    KeyValue, KvReply, Rejection, Reply, VersionedValue, decode_reply, encode_reply,
};
use super::root_memory;
use super::state_tree::{self, Chunk, TreeUpdate};
use super::watch_log::{self, LOG_META_KEY, LogState, WatchRetention};
use crate::api::proof::{StateProof, data_path, state_digest};
use crate::api::verified_read::VerifiedRead;
use crate::storage::{Engine, EngineOptions, Lsn, StorageError};

/// The layout tag at the end of the meta entry: 5 = state tree root over the leaves of
/// `kv::leaves` (a session's replies of 16 consecutive seqs share a leaf), nodes hashed with
/// BLAKE3's keyed mode (`api::proof`), tree stored in chunks of four levels
/// (`kv::state_tree`). Layout 4 hashed nodes with a domain prefix, and layouts 2 and 3
/// committed to one leaf per reply: their roots are not this build's, so such a store is
/// refused (as is the additive digest of layout 1, which had no tag).
const META_LAYOUT: u32 = 5;
/// The earlier tree layouts, whose roots differ from this build's (2: one engine entry per
/// tree node, 3: chunks, both with one leaf per reply; 4: domain-prefixed node hashes).
const META_LAYOUTS_OLDER_TREE: [u32; 3] = [2, 3, 4];
const META_BYTES: usize = 8 + 32 + 4;

/// One client request of a committed block, as the node runtime hands it over.
#[derive(Debug, Clone, Copy)]
pub struct KvRequest<'a> {
    pub client: [u8; 32],
    pub session: u64,
    pub seq: u64,
    /// `encode_ops` bytes, exactly as the client signed them (not yet decoded).
    pub ops: &'a [u8],
}

pub struct KvStore {
    pub(super) engine: Engine,
    pub(super) applied_height: u64,
    /// Root of the state tree after `applied_height`.
    pub(super) tree_root: [u8; 32],
    /// Tree nodes as the engine holds them (a subset), for the per-block update and proofs.
    pub(super) tree_cache: NodeCache,
    /// User keys held (the `d` entries), exact: counted on open and on a snapshot install,
    /// then moved by each block's creations and deletions (see [`KvStore::key_count`]).
    pub(super) key_count: u64,
    /// Old values of what the last few blocks changed, for reads as of a recent height.
    pub(super) undo: UndoLog,
    /// What the watch log holds (`kv::watch_log`), as of `applied_height`.
    pub(super) watch_log: LogState,
    pub(super) watch_retention: WatchRetention,
    /// Keys the last block applied here expired (0 after open or an install).
    pub(super) expired_last_block: usize,
}

/// Why a verified read as of a height cannot be answered here.
#[derive(Debug)]
pub enum ReadAsOfError {
    /// The height is not in `readable_from ..= applied`.
    NotReadable {
        height: u64,
        from: u64,
        applied: u64,
    },
    /// The state here as of that height does not hash to the expected root (or a node did
    /// not decode): it is not the certified state, so there is nothing true to prove.
    Unprovable(String),
}

impl std::fmt::Display for ReadAsOfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadAsOfError::NotReadable {
                height,
                from,
                applied,
            } => write!(
                f,
                "height {height} is not readable here (applied {applied}, undo log reaches \
                 back to {from})"
            ),
            ReadAsOfError::Unprovable(why) => {
                write!(f, "the state here does not prove the certified root: {why}")
            }
        }
    }
}

impl KvStore {
    /// Opens the store; fails if the WAL holds record kinds other than the engine's.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<KvStore, StorageError> {
        KvStore::open_with(dir, options, |lsn, kind, _| {
            Err(StorageError::invalid(format!(
                "unexpected WAL record kind {kind} at LSN {lsn}"
            )))
        })
    }

    /// Opens the store, passing the runtime's own WAL records (other kinds) to `on_record`.
    pub fn open_with(
        dir: &Path,
        options: EngineOptions,
        on_record: impl FnMut(Lsn, u8, &[u8]) -> Result<(), StorageError>,
    ) -> Result<KvStore, StorageError> {
        let engine = Engine::open(dir, options, on_record)?;
        let (applied_height, tree_root) = load_meta(&engine)?;
        let key_count = count_data_keys(&engine);
        let watch_log = LogState::load(&engine, applied_height)?;
        Ok(KvStore {
            engine,
            applied_height,
            tree_root,
            tree_cache: NodeCache::new(TREE_CACHE_BYTES_MAX),
            key_count,
            undo: UndoLog::new(UNDO_HEIGHTS_DEFAULT, UNDO_BYTES_DEFAULT),
            watch_log,
            watch_retention: WatchRetention::default(),
            expired_last_block: 0,
        })
    }

    /// Sets the undo log's bounds (heights and bytes); forgets what it held.
    pub fn set_undo_bounds(&mut self, heights_max: usize, bytes_max: usize) {
        self.undo = UndoLog::new(heights_max, bytes_max);
    }

    /// The lowest height [`KvStore::verified_read_as_of`] can read.
    pub fn readable_from(&self) -> u64 {
        self.undo.readable_from(self.applied_height)
    }

    /// The engine underneath (the runtime logs its own records through it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies the requests of block `height` in order and returns one reply per request,
    /// at block time 0 (for tests and tools without a chain: nothing expires, and a TTL
    /// counts from 0). Heights must increase; a block at or below `applied_height()` is
    /// refused (the runtime skips already-applied blocks when it replays after a restart).
    pub fn apply(
        &mut self,
        height: u64,
        requests: &[KvRequest<'_>],
    ) -> Result<Vec<KvReply>, StorageError> {
        self.apply_at(height, 0, requests)
    }

    /// Like [`KvStore::apply`], for a block with consensus timestamp `time_ms`: the keys due
    /// by then expire first (`kv::expiry`).
    pub fn apply_at(
        &mut self,
        height: u64,
        time_ms: u64,
        requests: &[KvRequest<'_>],
    ) -> Result<Vec<KvReply>, StorageError> {
        let (replies, lsn) = self.apply_nowait(height, time_ms, requests, &[])?;
        self.engine.wait_durable(lsn)?;
        Ok(replies)
    }

    /// How many keys and leases the last block applied here expired (0 after open or an
    /// install): the runtime tells consensus, since such a block changed the state without
    /// requests.
    pub fn expired_last_block(&self) -> usize {
        self.expired_last_block
    }

    /// The earliest expiry of a key or a lease in the applied state (`None`: no key has a TTL
    /// and no lease exists). The runtime hands it to consensus, which proposes a block once it
    /// is due.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        expiry::next_expiry_ms(&self.engine)
    }

    /// Like [`KvStore::apply`], but returns once the block's batch is queued in the WAL (and
    /// visible to reads), with the LSN to pass to `engine().wait_durable` before the replies
    /// may be released. `meta` entries (keys starting with `m`, not covered by the digest or
    /// snapshots) are written in the same atomic batch: the runtime records which block the
    /// state is at this way, so the two can never disagree after a crash.
    pub fn apply_nowait(
        &mut self,
        height: u64,
        time_ms: u64,
        requests: &[KvRequest<'_>],
        meta: &[(&[u8], &[u8])],
    ) -> Result<(Vec<KvReply>, Lsn), StorageError> {
        if height <= self.applied_height {
            let reason = format!(
                "block {height} is not above the applied height {}",
                self.applied_height
            );
            return Err(StorageError::invalid(reason));
        }
        let mut overlay = BlockOverlay::new(&self.engine);
        // Keys whose time ran out go first: the block's requests see them gone.
        let expired = expiry::expire_due_with_leases(&mut overlay, time_ms, EXPIRED_PER_BLOCK_MAX)?;
        let block = BlockCtx { height, time_ms };
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(apply_request(&mut overlay, block, request)?);
        }
        let watch_log = watch_log::stage_block(
            &mut overlay,
            &self.engine,
            self.watch_log,
            self.watch_retention,
            height,
        )?;
        // Chunks read from the engine, admitted to the cache once the batch is accepted.
        let filled = RefCell::new(Vec::new());
        let read = |key: &[u8]| -> Result<Option<Arc<Chunk>>, StorageError> {
            if let Some(chunk) = self.tree_cache.get(key) {
                return Ok(Some(chunk));
            }
            let Some(bytes) = self.engine.get(key) else {
                return Ok(None);
            };
            let chunk = Arc::new(Chunk::decode(&bytes, key)?);
            filled.borrow_mut().push((key.to_vec(), chunk.clone()));
            Ok(Some(chunk))
        };
        let mut tree = TreeUpdate::new(&read);
        let tree_root = tree.apply(&overlay.tree_changes())?;
        let chunk_writes = tree.into_writes()?;
        // The old values of what proofs read (data entries and tree chunks), before the batch
        // lands: the chunks as the update read them, the data entries as the overlay did.
        let mut chunk_undo = Vec::with_capacity(chunk_writes.len());
        let mut written = Vec::with_capacity(chunk_writes.len());
        for write in chunk_writes {
            overlay.set_derived(write.key.clone(), write.new.as_deref().map(Chunk::encode));
            chunk_undo.push((write.key, write.old));
            written.push(write.new);
        }
        overlay.set_derived(META_KEY.to_vec(), Some(encode_meta(height, &tree_root)));
        root_memory::stage_block(&mut overlay, height, &state_digest(height, &tree_root));
        for (key, value) in meta {
            assert!(
                key.first() == Some(&META_PREFIX)
                    && *key != META_KEY
                    && *key != LOG_META_KEY
                    && !key.starts_with(root_memory::ROOT_MEMORY_PREFIX),
                "runtime meta keys live under the meta prefix"
            );
            overlay.set_derived(key.to_vec(), Some(value.to_vec()));
        }
        // Read before the batch reaches the engine: the delta compares with the old state.
        let delta = overlay.data_keys_delta();
        debug_assert!(
            self.key_count.checked_add_signed(delta).is_some(),
            "block {height} deletes more keys than the {} counted",
            self.key_count
        );
        let key_count = self.key_count.saturating_add_signed(delta);
        let (batch, data_undo) = overlay.into_batch_and_undo();
        let undo = Undo::new(data_undo, chunk_undo);
        let lsn = match self.engine.write_owned_nowait(batch) {
            Ok(lsn) => lsn,
            Err(error) => {
                // Whether any of the batch reached the engine is unknown: forget the cache.
                self.tree_cache.clear();
                self.undo.clear();
                return Err(error);
            }
        };
        self.tree_cache
            .commit(filled.into_inner(), undo.chunk_keys().zip(written));
        self.undo.record(height, undo);
        self.applied_height = height;
        self.tree_root = tree_root;
        self.key_count = key_count;
        self.watch_log = watch_log;
        self.expired_last_block = expired;
        Ok((replies, lsn))
    }

    /// Sets how much history the watch log keeps from the next block on.
    pub fn set_watch_retention(&mut self, retention: WatchRetention) {
        self.watch_retention = retention;
    }

    /// The watch log holds every change at heights above this (up to `applied_height()`).
    pub fn watch_floor(&self) -> u64 {
        self.watch_log.floor
    }

    /// Bytes of watch log records held.
    pub fn watch_log_bytes(&self) -> u64 {
        self.watch_log.bytes
    }

    /// The watch log's records of heights `from..=applied_height()` (heights without changes
    /// have none), oldest first, bounded by `heights_max` records and about `bytes_max` bytes,
    /// and whether that is all of them (false: read on after the last one). The caller checks
    /// `from > watch_floor()` first: below it, history is gone.
    pub fn watch_read(
        &self,
        from: u64,
        heights_max: usize,
        bytes_max: usize,
    ) -> Result<watch_log::LogRead, StorageError> {
        watch_log::read(
            &self.engine,
            from,
            self.applied_height,
            heights_max,
            bytes_max,
        )
    }

    /// The roots (state digests) of the recent heights this store applied, oldest first, ending
    /// with `(applied_height(), state_digest())`: what a restarted node feeds its consensus
    /// core so it can check roots that blocks carry for heights applied before the restart
    /// (`kv::root_memory`). At most `ROOT_MEMORY_HEIGHTS` entries.
    pub fn recent_roots(&self) -> Result<Vec<(u64, [u8; 32])>, StorageError> {
        root_memory::load(&self.engine, self.applied_height, self.state_digest())
    }

    /// A runtime meta entry written with [`KvStore::apply_nowait`].
    pub fn meta(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.engine.get(key)
    }

    /// What a node answers to a retry of `(client, session, seq)` with ops hashing to
    /// `ops_digest` that consensus already ordered: the stored reply if it is still in the
    /// window, a rejection that carries no node-local value (so every honest node sends the
    /// same bytes), or `None` if this node has not applied the request yet.
    pub fn cached_reply(
        &self,
        client: &[u8; 32],
        session: u64,
        seq: u64,
        ops_digest: &[u8; 32],
    ) -> Result<Option<Reply>, StorageError> {
        let overlay = BlockOverlay::new(&self.engine);
        let slot = Slot {
            client,
            session,
            seq,
            ops_digest,
        };
        Ok(match exactly_once::classify(&overlay, slot)? {
            SeqStatus::Fresh => None,
            status => Some(answer_without_executing(status, seq)?),
        })
    }

    /// The digest of the state after block `applied_height()`, equal on every node that
    /// applied the same blocks: `api::proof::state_digest(applied_height, tree_root)`. O(1)
    /// (the tree is maintained per block).
    pub fn state_digest(&self) -> [u8; 32] {
        crate::api::proof::state_digest(self.applied_height, &self.tree_root)
    }

    /// The root of the state tree after `applied_height()`.
    pub fn tree_root(&self) -> [u8; 32] {
        self.tree_root
    }

    /// A proof of user key `key`'s entry (or of its absence) against [`KvStore::tree_root`],
    /// as of the last applied block. Fails only if the stored tree is inconsistent.
    pub fn prove(&self, key: &[u8]) -> Result<StateProof, StorageError> {
        let read = |key: &[u8]| self.cached_chunk(key);
        state_tree::prove(&read, &self.tree_root, &data_path(key), || {
            self.engine.get(&data_key(key))
        })
    }

    /// The tree chunk under `key` as the engine holds it (from the cache if there).
    fn cached_chunk(&self, key: &[u8]) -> Result<Option<Arc<Chunk>>, StorageError> {
        if let Some(chunk) = self.tree_cache.get(key) {
            return Ok(Some(chunk));
        }
        self.engine
            .get(key)
            .map(|bytes| Chunk::decode(&bytes, key).map(Arc::new))
            .transpose()
    }

    pub fn applied_height(&self) -> u64 {
        self.applied_height
    }

    /// User keys in the state after `applied_height()`. O(1): counted once when the store
    /// opens or installs a snapshot, then kept by each block (a restart counts again, so the
    /// number needs no format of its own and cannot drift from the entries).
    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// A read of `key` a client can check without trusting this node: the proof against the
    /// tree root after `applied_height()` (the client checks the root against a certified
    /// state digest of that height).
    pub fn verified_read(&self, key: &[u8]) -> Result<VerifiedRead, StorageError> {
        Ok(VerifiedRead {
            height: self.applied_height,
            tree_root: self.tree_root,
            proof: self.prove(key)?,
        })
    }

    /// A verified read of `key` as of height `height` (in `readable_from() ..= applied`),
    /// whose tree must give `certified` (the chain's root of that height, which is the state
    /// digest `state_digest(height, tree root)`): a node never sends a proof it has not
    /// checked against what the client will check it against.
    pub fn verified_read_as_of(
        &self,
        key: &[u8],
        height: u64,
        certified: &[u8; 32],
    ) -> Result<VerifiedRead, ReadAsOfError> {
        let from = self.readable_from();
        if height < from || height > self.applied_height {
            return Err(ReadAsOfError::NotReadable {
                height,
                from,
                applied: self.applied_height,
            });
        }
        // Tree chunks and data entries as of `height`: what the undo log recorded as
        // overwritten after it, else the current value.
        let read = |k: &[u8]| match self.undo.as_of(height, k) {
            Some(old) => old.map(<[u8]>::to_vec),
            None => self.engine.get(k),
        };
        let read_chunk = |k: &[u8]| match self.undo.chunk_as_of(height, k) {
            Some(old) => Ok(old),
            None => self.cached_chunk(k),
        };
        let unprovable = |e: &dyn std::fmt::Display| ReadAsOfError::Unprovable(e.to_string());
        let tree_root = state_tree::stored_root(&read_chunk).map_err(|e| unprovable(&e))?;
        if &state_digest(height, &tree_root) != certified {
            return Err(ReadAsOfError::Unprovable(format!(
                "the tree root as of height {height} does not give the certified state digest"
            )));
        }
        let stored_key = data_key(key);
        let proof = state_tree::prove(&read_chunk, &tree_root, &data_path(key), || {
            read(&stored_key)
        })
        .map_err(|e| unprovable(&e))?;
        // `prove` checks every node it reads against its parent's hash; folding the proof back
        // up is the client's check, done here too so a bug cannot send a proof that fails it.
        proof.verify(&tree_root, key).map_err(|e| unprovable(&e))?;
        Ok(VerifiedRead {
            height,
            tree_root,
            proof,
        })
    }

    /// Stale read of one key as of the last applied block.
    pub fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>, StorageError> {
        let stored_key = data_key(key);
        self.engine
            .get(&stored_key)
            .map(|stored| decode_versioned(&stored, &stored_key))
            .transpose()
    }

    /// Stale range read: keys in `[start, end)`, at most `limit` (clamped), and whether more exist.
    pub fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<KeyValue>, bool), StorageError> {
        range(&BlockOverlay::new(&self.engine), start, end, limit)
    }
}

fn apply_request(
    overlay: &mut BlockOverlay<'_>,
    block: BlockCtx,
    request: &KvRequest<'_>,
) -> Result<KvReply, StorageError> {
    // The same hash as `types::ops_digest` (this module does not import `types`).
    let ops_digest = *blake3::hash(request.ops).as_bytes();
    let reply_to = |reply: Reply, from_cache: bool| KvReply {
        client: request.client,
        session: request.session,
        seq: request.seq,
        ops_digest,
        reply,
        from_cache,
    };
    let slot = Slot {
        client: &request.client,
        session: request.session,
        seq: request.seq,
        ops_digest: &ops_digest,
    };
    match exactly_once::classify(overlay, slot)? {
        SeqStatus::Fresh => {
            let reply = match decode_ops(request.ops) {
                Ok(ops) => Reply::Done(execute_ops(overlay, block, ops)?),
                Err(rejection) => Reply::Rejected(rejection),
            };
            exactly_once::record(overlay, block.height, slot, encode_reply(&reply))?;
            Ok(reply_to(reply, false))
        }
        status => {
            let cached = matches!(status, SeqStatus::Cached(_));
            Ok(reply_to(
                answer_without_executing(status, request.seq)?,
                cached,
            ))
        }
    }
}

/// The reply to a request the table says not to execute.
fn answer_without_executing(status: SeqStatus, seq: u64) -> Result<Reply, StorageError> {
    Ok(match status {
        SeqStatus::Cached(bytes) => decode_reply(&bytes).map_err(|_| {
            StorageError::invalid(format!("stored reply of seq {seq} does not decode"))
        })?,
        SeqStatus::Reused => Reply::Rejected(Rejection::SeqReused),
        SeqStatus::TooOld => Reply::Rejected(Rejection::SeqTooOld),
        SeqStatus::Expired => Reply::Rejected(Rejection::SessionExpired),
        SeqStatus::Fresh => {
            return Err(StorageError::invalid(
                "a fresh request must be executed, not answered",
            ));
        }
    })
}

pub(super) fn encode_meta(height: u64, tree_root: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_BYTES);
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(tree_root);
    out.extend_from_slice(&META_LAYOUT.to_le_bytes());
    out
}

/// The applied height and state tree root the meta entry records.
pub(super) fn load_meta(engine: &Engine) -> Result<(u64, [u8; 32]), StorageError> {
    let Some(stored) = engine.get(META_KEY) else {
        return Ok((0, crate::api::proof::EMPTY_SUBTREE_HASH));
    };
    if stored.len() == 40 {
        return Err(StorageError::corrupt(
            engine.dir(),
            0,
            "the state was written with the additive state digest (before the state tree) \
             and is not readable: start from an empty data dir and let the node catch up",
        ));
    }
    let corrupt = || StorageError::corrupt(engine.dir(), 0, "KV meta entry is malformed");
    let layout: [u8; 4] = stored
        .get(40..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let layout = u32::from_le_bytes(layout);
    if META_LAYOUTS_OLDER_TREE.contains(&layout) {
        return Err(StorageError::corrupt(
            engine.dir(),
            0,
            format!(
                "the state has meta layout {layout}, an earlier state tree whose roots differ \
                 from this build's (layout {META_LAYOUT}), so the cluster's certified roots \
                 cannot be checked against it: start the cluster from empty data dirs"
            ),
        ));
    }
    if layout != META_LAYOUT {
        return Err(StorageError::corrupt(
            engine.dir(),
            0,
            format!("KV meta entry has layout {layout}; this build reads layout {META_LAYOUT}"),
        ));
    }
    let height: [u8; 8] = stored[..8].try_into().map_err(|_| corrupt())?;
    let tree_root: [u8; 32] = stored[8..40].try_into().map_err(|_| corrupt())?;
    Ok((u64::from_le_bytes(height), tree_root))
}

/// Live user keys in the engine: one scan of the `d` range.
pub(super) fn count_data_keys(engine: &Engine) -> u64 {
    let mut count = 0u64;
    engine.scan(&[DATA_PREFIX], Some(&data_end()), |_, _| {
        count += 1;
        true
    });
    count
}
