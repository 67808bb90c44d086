//! Point-in-time snapshots of the KV state, for a node that fell too far behind to replay.
//!
//! A snapshot holds every state entry (data, exactly-once table: the leaves of the state tree,
//! not the tree's nodes), the applied height and the state digest. File layout (little-endian;
//! also in FORMAT.md):
//!
//! ```text
//! [8]  magic "BFTDSNP1"
//! [4]  format version (3)
//! [8]  applied_height
//! [32] state digest at that height
//! entries, keys strictly increasing:  [u32 key_len][key][u32 value_len][value]
//! [4]  0xFFFF_FFFF end marker
//! [8]  entry_count
//! [32] blake3 of every byte before it
//! ```
//!
//! Saving is consistent because `KvStore::apply` needs `&mut self` and saving takes `&self`.
//! [`verify_file`] streams a file and checks the checksum, the key order and prefixes, and
//! that the state tree root recomputed from scratch from the entries gives the header's state
//! digest (what a node checks a download against a certified root with). Installing does the
//! same checks, rebuilds the tree nodes from the entries (never trusting any from the file),
//! and only then replaces the engine content atomically
//! ([`crate::storage::Engine::replace_all`]). A snapshot of a height below the store's is
//! refused. Memory: reading streams the file; the check keeps 64 bytes per entry (the leaves,
//! sorted to build the tree), install keeps the entries too.

use std::io::{BufReader, Read};
use std::path::Path;

use super::keys::{META_KEY, META_PREFIX, is_covered_prefix};
use super::leaves::LeafFolder;
use super::state_machine::{KvStore, encode_meta};
use super::state_tree::{Leaf, build_from_leaves, root_from_leaves};
use super::watch_log::{LOG_META_KEY, LogState};
use crate::api::proof::state_digest;
use crate::storage::fs::{parent_dir, tmp_path};
use crate::storage::sstable::TableEntry;
use crate::storage::{Fs, StorageError};

const SNAPSHOT_MAGIC: [u8; 8] = *b"BFTDSNP1";
/// 2: the exactly-once table is kept per session (see `kv::keys`); 3: the header holds the
/// state digest over the state tree root (`api::proof`), not the additive digest; 4: that
/// tree groups a session's replies (`kv::leaves`), so a format 3 file's digest is not this
/// build's; 5: the tree's nodes are hashed in BLAKE3's keyed mode (`api::proof`).
const SNAPSHOT_FORMAT_VERSION: u32 = 5;
const END_MARKER: u32 = u32::MAX;
/// Largest snapshot file read.
pub const SNAPSHOT_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;
/// Bytes read from the file at a time.
const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// Bytes buffered before each write while saving.
const SAVE_BUFFER_BYTES: usize = 1024 * 1024;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub applied_height: u64,
    pub state_digest: [u8; 32],
    pub entry_count: u64,
}

/// Streams buffered bytes to a file while hashing them.
struct HashedWriter<'a> {
    fs: &'a Fs,
    file: std::fs::File,
    path: &'a Path,
    buffer: Vec<u8>,
    hasher: blake3::Hasher,
}

impl HashedWriter<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= SAVE_BUFFER_BYTES {
            self.drain()
        } else {
            Ok(())
        }
    }

    fn drain(&mut self) -> Result<(), StorageError> {
        self.hasher.update(&self.buffer);
        self.fs.write_all(&mut self.file, self.path, &self.buffer)?;
        self.buffer.clear();
        Ok(())
    }
}

impl KvStore {
    /// Writes a snapshot of the current state to `path` durably (temp, fsync, rename, fsync dir).
    pub fn save_snapshot(&self, path: &Path) -> Result<SnapshotInfo, StorageError> {
        let fs = self.engine.fs();
        let tmp = tmp_path(path);
        let file = fs.create(&tmp)?;
        let mut out = HashedWriter {
            fs,
            file,
            path: &tmp,
            buffer: Vec::with_capacity(SAVE_BUFFER_BYTES),
            hasher: blake3::Hasher::new(),
        };
        let state_digest = self.state_digest();
        out.push(&SNAPSHOT_MAGIC)?;
        out.push(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
        out.push(&self.applied_height.to_le_bytes())?;
        out.push(&state_digest)?;
        let mut entry_count = 0u64;
        let mut failure = None;
        self.engine.scan(&[], None, |key, value| {
            if !key.first().is_some_and(|b| is_covered_prefix(*b)) {
                return true; // meta entries and tree nodes are derived, not state
            }
            entry_count += 1;
            let pushed = [
                &(key.len() as u32).to_le_bytes()[..],
                key,
                &(value.len() as u32).to_le_bytes(),
                value,
            ]
            .iter()
            .try_for_each(|part| out.push(part));
            failure = pushed.err();
            failure.is_none()
        });
        if let Some(error) = failure {
            return Err(error);
        }
        out.push(&END_MARKER.to_le_bytes())?;
        out.push(&entry_count.to_le_bytes())?;
        out.drain()?;
        let hash = *out.hasher.finalize().as_bytes();
        fs.write_all(&mut out.file, &tmp, &hash)?;
        fs.sync_data(&out.file, &tmp)?;
        drop(out);
        fs.rename(&tmp, path)?;
        fs.sync_dir(parent_dir(path))?;
        Ok(SnapshotInfo {
            applied_height: self.applied_height,
            state_digest,
            entry_count,
        })
    }

    /// Verifies the snapshot at `path` and replaces this store's state with it.
    pub fn install_snapshot(&mut self, path: &Path) -> Result<SnapshotInfo, StorageError> {
        self.install_snapshot_with_meta(path, &[])
    }

    /// [`KvStore::install_snapshot`], writing the runtime's `meta` entries (see
    /// [`KvStore::apply_nowait`]) in the same atomic replacement.
    pub fn install_snapshot_with_meta(
        &mut self,
        path: &Path,
        meta: &[(&[u8], &[u8])],
    ) -> Result<SnapshotInfo, StorageError> {
        let file = self.engine.fs().open_read(path)?;
        let mut entries = Vec::new();
        let (info, mut leaves) = parse_snapshot(file, path, |key, value| {
            entries.push(TableEntry {
                key: key.to_vec(),
                tombstone: false,
                value: value.to_vec(),
            })
        })?;
        if info.applied_height < self.applied_height {
            let reason = format!(
                "snapshot is at height {}, the store is already at {}",
                info.applied_height, self.applied_height
            );
            return Err(StorageError::invalid(reason));
        }
        let (nodes, tree_root) = build_from_leaves(&mut leaves);
        drop(leaves);
        check_root(&info, &tree_root, path)?;
        // The watch log is not in snapshots: it starts empty at the installed height.
        let watch_log = LogState {
            floor: info.applied_height,
            bytes: 0,
        };
        let derived = nodes.into_iter().chain([
            (
                META_KEY.to_vec(),
                encode_meta(info.applied_height, &tree_root),
            ),
            (LOG_META_KEY.to_vec(), watch_log.encode()),
            // The root memory restarts with the installed state's own root (`kv::root_memory`:
            // the roots of earlier heights are not in the snapshot, nor trusted from it).
            (
                super::root_memory::root_key(info.applied_height),
                state_digest(info.applied_height, &tree_root).to_vec(),
            ),
        ]);
        for (key, value) in derived {
            entries.push(TableEntry {
                key,
                tombstone: false,
                value,
            });
        }
        for (key, value) in meta {
            assert!(
                key.first() == Some(&META_PREFIX)
                    && *key != META_KEY
                    && !key.starts_with(super::root_memory::ROOT_MEMORY_PREFIX),
                "runtime meta keys live under the meta prefix"
            );
            entries.push(TableEntry {
                key: key.to_vec(),
                tombstone: false,
                value: value.to_vec(),
            });
        }
        // State keys, tree node keys and meta keys have distinct first bytes, so no key repeats
        // once the runtime's meta keys are deduplicated (the first given wins).
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|later, earlier| later.key == earlier.key);
        // The engine's tree nodes are replaced (or, on a failure, in an unknown state).
        self.tree_cache.clear();
        let key_count = entries
            .iter()
            .filter(|e| e.key.first() == Some(&super::keys::DATA_PREFIX))
            .count() as u64;
        self.undo.clear();
        self.engine.replace_all(entries)?;
        self.applied_height = info.applied_height;
        self.tree_root = tree_root;
        self.key_count = key_count;
        self.watch_log = watch_log;
        Ok(info)
    }
}

/// Checks the snapshot at `path` from scratch, streaming: checksum, structure, key order and
/// prefixes, and that the state tree root recomputed from its entries gives the header's
/// state digest. Returns what it holds (`state_digest` is then the verified digest, and
/// [`crate::api::proof::state_digest`] of `applied_height` and the root). Compare it with a
/// certified digest before installing a download.
pub fn verify_file(path: &Path) -> Result<SnapshotInfo, StorageError> {
    verify_file_at(path, 0)
}

/// [`verify_file`] of the snapshot that starts `offset` bytes into `path` and runs to its end
/// (a backup file holds one behind its header). Offsets in errors count from `offset`.
pub fn verify_file_at(path: &Path, offset: u64) -> Result<SnapshotInfo, StorageError> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| StorageError::io(path, "open", e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| StorageError::io(path, "seek", e))?;
    let (info, mut leaves) = parse_snapshot(file, path, |_, _| ())?;
    let tree_root = root_from_leaves(&mut leaves);
    check_root(&info, &tree_root, path)?;
    Ok(info)
}

fn check_root(info: &SnapshotInfo, tree_root: &[u8; 32], path: &Path) -> Result<(), StorageError> {
    if state_digest(info.applied_height, tree_root) != info.state_digest {
        return Err(StorageError::corrupt(
            path,
            20,
            "state digest does not match the state tree of the entries",
        ));
    }
    Ok(())
}

/// Reads a file while hashing every byte it returns, counting its offset.
struct HashedReader<R> {
    inner: BufReader<R>,
    hasher: blake3::Hasher,
    at: u64,
}

impl<R: Read> HashedReader<R> {
    /// Exactly `len` bytes (hashed), or `None` at the end of the file. Allocates only as
    /// bytes arrive, so a lying length cannot make it reserve more than the file holds.
    fn take(&mut self, len: u64, path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
        let mut out = Vec::new();
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut out)
            .map_err(|e| StorageError::io(path, "read", e))?;
        if out.len() as u64 != len {
            return Ok(None);
        }
        self.hasher.update(&out);
        self.at += len;
        if self.at > SNAPSHOT_BYTES_MAX {
            return Err(StorageError::corrupt(
                path,
                self.at,
                "snapshot file too large",
            ));
        }
        Ok(Some(out))
    }

    fn u32(&mut self, path: &Path) -> Result<Option<u32>, StorageError> {
        Ok(self
            .take(4, path)?
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes))
    }

    fn u64(&mut self, path: &Path) -> Result<Option<u64>, StorageError> {
        Ok(self
            .take(8, path)?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes))
    }
}

/// Streams and checks a whole snapshot file, handing each entry to `on_entry`: the header and
/// the leaves `(path, value hash)` of its entries, in file order. Does not check the root.
fn parse_snapshot<R: Read>(
    file: R,
    path: &Path,
    mut on_entry: impl FnMut(&[u8], &[u8]),
) -> Result<(SnapshotInfo, Vec<Leaf>), StorageError> {
    let mut reader = HashedReader {
        inner: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        hasher: blake3::Hasher::new(),
        at: 0,
    };
    let corrupt = |offset: u64, reason: &str| StorageError::corrupt(path, offset, reason);
    if reader.take(8, path)?.as_deref() != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(corrupt(0, "wrong magic (not a snapshot)"));
    }
    if reader.u32(path)? != Some(SNAPSHOT_FORMAT_VERSION) {
        return Err(corrupt(8, "unsupported snapshot format version"));
    }
    let applied_height = reader
        .u64(path)?
        .ok_or_else(|| corrupt(12, "short header"))?;
    let state_digest: [u8; 32] = reader
        .take(32, path)?
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| corrupt(20, "short header"))?;
    let (leaves, entries) = parse_entries(&mut reader, path, &mut on_entry)?;
    let entry_count = reader
        .u64(path)?
        .ok_or_else(|| corrupt(reader.at, "missing entry count"))?;
    if entry_count != entries {
        return Err(corrupt(reader.at, "entry count disagrees with the content"));
    }
    let body_hash = *reader.hasher.finalize().as_bytes();
    let mut trailer = Vec::new();
    (&mut reader.inner)
        .take(33)
        .read_to_end(&mut trailer)
        .map_err(|e| StorageError::io(path, "read", e))?;
    if trailer.len() != 32 {
        return Err(corrupt(reader.at, "checksum missing or trailing bytes"));
    }
    if trailer != body_hash {
        return Err(corrupt(reader.at, "snapshot checksum mismatch"));
    }
    let info = SnapshotInfo {
        applied_height,
        state_digest,
        entry_count,
    };
    Ok((info, leaves))
}

fn parse_entries<R: Read>(
    reader: &mut HashedReader<R>,
    path: &Path,
    on_entry: &mut impl FnMut(&[u8], &[u8]),
) -> Result<(Vec<Leaf>, u64), StorageError> {
    let mut leaves = LeafFolder::new();
    let mut entries = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let at = reader.at;
        let corrupt = |reason: &str| StorageError::corrupt(path, at, reason);
        let key_len = reader
            .u32(path)?
            .ok_or_else(|| corrupt("missing end marker"))?;
        if key_len == END_MARKER {
            return Ok((leaves.finish(), entries));
        }
        let key = reader
            .take(u64::from(key_len), path)?
            .ok_or_else(|| corrupt("short key"))?;
        let value_len = reader
            .u32(path)?
            .ok_or_else(|| corrupt("short value length"))?;
        let value = reader
            .take(u64::from(value_len), path)?
            .ok_or_else(|| corrupt("short value"))?;
        if !key.first().is_some_and(|first| is_covered_prefix(*first)) {
            return Err(corrupt("entry key has an unknown prefix"));
        }
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(corrupt("keys not strictly increasing"));
        }
        // Keys strictly increase (checked above), as the folder needs.
        leaves.push(&key, &value);
        entries += 1;
        on_entry(&key, &value);
        last_key = Some(key);
    }
}
