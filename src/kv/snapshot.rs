//! Point-in-time snapshots of the KV state, for a node that fell too far behind to replay.
//!
//! A snapshot holds every digest-covered engine entry (data, exactly-once table), the applied
//! height and the state digest. File layout (little-endian; also in FORMAT.md):
//!
//! ```text
//! [8]  magic "BFTDSNP1"
//! [4]  format version (2)
//! [8]  applied_height
//! [32] state digest at that height
//! entries, keys strictly increasing:  [u32 key_len][key][u32 value_len][value]
//! [4]  0xFFFF_FFFF end marker
//! [8]  entry_count
//! [32] blake3 of every byte before it
//! ```
//!
//! Saving is consistent because `KvStore::apply` needs `&mut self` and saving takes `&self`.
//! Installing verifies the checksum, the key order and prefixes, recomputes the digest from
//! the entries and compares it with the header, and only then replaces the engine content
//! atomically ([`crate::storage::Engine::replace_all`]). A snapshot of a height below the
//! store's is refused.

use std::path::Path;

use super::digest::DigestAccumulator;
use super::keys::{META_KEY, META_PREFIX, is_covered_prefix};
use super::state_machine::{KvStore, encode_meta};
use crate::storage::fs::{parent_dir, tmp_path};
use crate::storage::manifest::ByteReader;
use crate::storage::sstable::TableEntry;
use crate::storage::{Fs, StorageError};

const SNAPSHOT_MAGIC: [u8; 8] = *b"BFTDSNP1";
/// 2: the exactly-once table is kept per session (see `kv::keys`).
const SNAPSHOT_FORMAT_VERSION: u32 = 2;
const END_MARKER: u32 = u32::MAX;
const HEADER_BYTES: usize = 8 + 4 + 8 + 32;
const TRAILER_BYTES: usize = 4 + 8 + 32;
/// Largest snapshot file `install_snapshot` reads (it is loaded into memory).
pub const SNAPSHOT_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;
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
            if key.first() == Some(&META_PREFIX) {
                return true;
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
        let bytes = self.engine.fs().read_file(path, SNAPSHOT_BYTES_MAX)?;
        let (info, mut entries, accumulator) = parse_snapshot(&bytes, path)?;
        if info.applied_height < self.applied_height {
            let reason = format!(
                "snapshot is at height {}, the store is already at {}",
                info.applied_height, self.applied_height
            );
            return Err(StorageError::invalid(reason));
        }
        let meta_entry = TableEntry {
            key: META_KEY.to_vec(),
            tombstone: false,
            value: encode_meta(info.applied_height, &accumulator),
        };
        let at = entries.partition_point(|e| e.key.as_slice() < META_KEY);
        entries.insert(at, meta_entry);
        for (key, value) in meta {
            assert!(
                key.first() == Some(&META_PREFIX) && *key != META_KEY,
                "runtime meta keys live under the meta prefix"
            );
            let at = entries.partition_point(|e| e.key.as_slice() < *key);
            if entries.get(at).is_some_and(|e| e.key.as_slice() == *key) {
                continue;
            }
            entries.insert(
                at,
                TableEntry {
                    key: key.to_vec(),
                    tombstone: false,
                    value: value.to_vec(),
                },
            );
        }
        self.engine.replace_all(entries)?;
        self.applied_height = info.applied_height;
        self.accumulator = accumulator;
        Ok(info)
    }
}

/// Checks and decodes a whole snapshot file.
fn parse_snapshot(
    bytes: &[u8],
    path: &Path,
) -> Result<(SnapshotInfo, Vec<TableEntry>, DigestAccumulator), StorageError> {
    let corrupt = |offset: usize, reason: &str| StorageError::corrupt(path, offset as u64, reason);
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(corrupt(0, "file too short for a snapshot"));
    }
    let body_len = bytes.len() - 32;
    if blake3::hash(&bytes[..body_len]).as_bytes() != &bytes[body_len..] {
        return Err(corrupt(body_len, "snapshot checksum mismatch"));
    }
    let mut reader = ByteReader {
        bytes: &bytes[..body_len],
        at: 0,
    };
    if reader.take(8) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(corrupt(0, "wrong magic (not a snapshot)"));
    }
    if reader.u32() != Some(SNAPSHOT_FORMAT_VERSION) {
        return Err(corrupt(8, "unsupported snapshot format version"));
    }
    let applied_height = reader.u64().ok_or_else(|| corrupt(12, "short header"))?;
    let state_digest: [u8; 32] = reader
        .take(32)
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| corrupt(20, "short header"))?;
    let (entries, accumulator) = parse_entries(&mut reader, path)?;
    let entry_count = reader
        .u64()
        .ok_or_else(|| corrupt(reader.at, "missing entry count"))?;
    if entry_count != entries.len() as u64 || reader.at != body_len {
        return Err(corrupt(
            reader.at,
            "entry count or length disagrees with the content",
        ));
    }
    if accumulator.digest(applied_height) != state_digest {
        return Err(corrupt(20, "state digest does not match the entries"));
    }
    Ok((
        SnapshotInfo {
            applied_height,
            state_digest,
            entry_count,
        },
        entries,
        accumulator,
    ))
}

fn parse_entries(
    reader: &mut ByteReader<'_>,
    path: &Path,
) -> Result<(Vec<TableEntry>, DigestAccumulator), StorageError> {
    let mut entries: Vec<TableEntry> = Vec::new();
    let mut accumulator = DigestAccumulator::default();
    loop {
        let at = reader.at;
        let corrupt = |reason: &str| StorageError::corrupt(path, at as u64, reason);
        let key_len = reader.u32().ok_or_else(|| corrupt("missing end marker"))?;
        if key_len == END_MARKER {
            return Ok((entries, accumulator));
        }
        let key = reader
            .take(key_len as usize)
            .ok_or_else(|| corrupt("short key"))?;
        let value_len = reader.u32().ok_or_else(|| corrupt("short value length"))?;
        let value = reader
            .take(value_len as usize)
            .ok_or_else(|| corrupt("short value"))?;
        if !key.first().is_some_and(|first| is_covered_prefix(*first)) {
            return Err(corrupt("entry key has an unknown prefix"));
        }
        if entries
            .last()
            .is_some_and(|last| last.key.as_slice() >= key)
        {
            return Err(corrupt("keys not strictly increasing"));
        }
        accumulator.add(key, value);
        entries.push(TableEntry {
            key: key.to_vec(),
            tombstone: false,
            value: value.to_vec(),
        });
    }
}
