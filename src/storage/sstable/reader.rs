//! An open SSTable: the file mmapped read-only, validated once, then read in place.
//!
//! Soundness invariant for the unchecked access: [`SsTable::open`] checks the CRC and runs
//! rkyv's bytecheck validation (`rkyv::access`) over exactly the bytes later handed to
//! `access_unchecked`; the mapping is private to this struct and never changes, because table
//! files are immutable once renamed into place and are never truncated or rewritten (a
//! compacted table is only unlinked, which leaves existing mappings intact on Unix).
//! So every later access sees bytes that passed validation.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rkyv::rancor;

use super::format::{
    ArchivedTableArchive, ArchivedTableEntry, TABLE_FOOTER_BYTES, TABLE_FORMAT_VERSION, TableFooter,
};
use crate::storage::bloom::{BLOOM_PROBES_MAX, may_contain};
use crate::storage::error::{Result, StorageError};
use crate::storage::fs::Fs;
use crate::storage::memtable::SlotRef;

pub struct SsTable {
    id: u64,
    path: PathBuf,
    map: Mmap,
    archive_len_bytes: usize,
    entry_count: usize,
    file_len_bytes: u64,
}

impl std::fmt::Debug for SsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsTable")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish()
    }
}

impl SsTable {
    /// Maps and fully validates the table at `path`.
    pub fn open(fs: &Fs, path: &Path, id: u64) -> Result<SsTable> {
        let file = fs.open_read(path)?;
        // SAFETY: the file is an immutable SSTable (see the module doc): nothing writes or
        // truncates it while it is mapped, so the mapped bytes cannot change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StorageError::io(path, "mmap", e))?;
        let footer = check_footer(&map, path)?;
        let archive_len_bytes = footer.archive_len_bytes as usize;
        let archive =
            rkyv::access::<ArchivedTableArchive, rancor::BoxedError>(&map[..archive_len_bytes])
                .map_err(|e| {
                    StorageError::corrupt(path, 0, format!("SSTable archive fails validation: {e}"))
                })?;
        check_contents(archive, &footer, path)?;
        let entry_count = archive.entries.len();
        let file_len_bytes = map.len() as u64;
        Ok(SsTable {
            id,
            path: path.to_path_buf(),
            map,
            archive_len_bytes,
            entry_count,
            file_len_bytes,
        })
    }

    fn archive(&self) -> &ArchivedTableArchive {
        // SAFETY: these exact bytes passed `rkyv::access` in `open` and cannot have changed
        // (module invariant).
        unsafe {
            rkyv::access_unchecked::<ArchivedTableArchive>(&self.map[..self.archive_len_bytes])
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    pub fn file_len_bytes(&self) -> u64 {
        self.file_len_bytes
    }

    /// Bloom check, then binary search in place. No allocation, no copy.
    pub fn get(&self, key: &[u8]) -> Option<SlotRef<'_>> {
        let archive = self.archive();
        let words = &archive.bloom_words;
        if !may_contain(key, words.len(), archive.bloom_probes.to_native(), |i| {
            words[i].to_native()
        }) {
            return None;
        }
        let entries = archive.entries.as_slice();
        let index = entries
            .binary_search_by(|entry| entry.key.as_slice().cmp(key))
            .ok()?;
        Some(slot_of(&entries[index]))
    }

    /// Entries with `start <= key < end` in key order, read in place.
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], SlotRef<'a>)> + 'a {
        let entries = self.archive().entries.as_slice();
        let first = entries.partition_point(|entry| entry.key.as_slice() < start);
        entries[first..]
            .iter()
            .take_while(move |entry| end.is_none_or(|end| entry.key.as_slice() < end))
            .map(|entry| (entry.key.as_slice(), slot_of(entry)))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SlotRef<'_>)> {
        self.range(&[], None)
    }
}

fn slot_of(entry: &ArchivedTableEntry) -> SlotRef<'_> {
    if entry.tombstone {
        SlotRef::Delete
    } else {
        SlotRef::Put(entry.value.as_slice())
    }
}

fn check_footer(map: &[u8], path: &Path) -> Result<TableFooter> {
    if map.len() < TABLE_FOOTER_BYTES {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("file is {} bytes, shorter than a footer", map.len()),
        ));
    }
    let footer_at = map.len() - TABLE_FOOTER_BYTES;
    let footer = TableFooter::decode(&map[footer_at..])
        .map_err(|reason| StorageError::corrupt(path, footer_at as u64, reason))?;
    if footer.format_version != TABLE_FORMAT_VERSION {
        let reason = format!(
            "unsupported SSTable format version {}",
            footer.format_version
        );
        return Err(StorageError::corrupt(path, footer_at as u64, reason));
    }
    if footer.archive_len_bytes != footer_at as u64 {
        let reason = format!(
            "footer says archive is {} bytes, file holds {footer_at}",
            footer.archive_len_bytes
        );
        return Err(StorageError::corrupt(path, footer_at as u64, reason));
    }
    let crc = crc32fast::hash(&map[..map.len() - 4]);
    if crc != footer.crc32 {
        return Err(StorageError::corrupt(
            path,
            footer_at as u64,
            format!(
                "checksum mismatch: file {crc:#010x}, footer {:#010x}",
                footer.crc32
            ),
        ));
    }
    Ok(footer)
}

/// Checks what bytecheck cannot: sorted unique keys (binary search relies on it), sane bloom
/// parameters, an entry count matching the footer, empty tombstone values.
fn check_contents(archive: &ArchivedTableArchive, footer: &TableFooter, path: &Path) -> Result<()> {
    let entries = archive.entries.as_slice();
    if entries.len() as u64 != footer.entry_count {
        return Err(StorageError::corrupt(
            path,
            0,
            "entry count disagrees with footer",
        ));
    }
    if let Some(index) = entries
        .windows(2)
        .position(|w| w[0].key.as_slice() >= w[1].key.as_slice())
    {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("keys not strictly increasing at entry {}", index + 1),
        ));
    }
    let probes = archive.bloom_probes.to_native();
    if archive.bloom_words.is_empty() || probes == 0 || probes > BLOOM_PROBES_MAX {
        return Err(StorageError::corrupt(
            path,
            0,
            "bloom filter parameters out of range",
        ));
    }
    if entries.iter().any(|e| e.tombstone && !e.value.is_empty()) {
        return Err(StorageError::corrupt(path, 0, "tombstone carries a value"));
    }
    Ok(())
}
