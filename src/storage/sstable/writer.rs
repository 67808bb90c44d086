//! Writes an SSTable file once: build the archive in memory, then temp file, fsync, rename,
//! fsync dir (via [`Fs::write_file_durably`]). A table is never modified after its rename.

use std::path::Path;

use rkyv::rancor;

use super::format::{TABLE_FORMAT_VERSION, TableArchive, TableEntry, TableFooter};
use crate::storage::bloom::{BLOOM_PROBES, BloomBuilder};
use crate::storage::error::{Result, StorageError};
use crate::storage::fs::Fs;

/// Encodes a complete table file from entries already sorted by strictly increasing key.
pub fn encode_table(entries: Vec<TableEntry>) -> Result<Vec<u8>> {
    assert!(
        entries.windows(2).all(|w| w[0].key < w[1].key),
        "table entries must be sorted and unique"
    );
    let mut bloom = BloomBuilder::new(entries.len());
    for entry in &entries {
        bloom.insert(&entry.key);
    }
    let entry_count = entries.len() as u64;
    let archive = TableArchive {
        entries,
        bloom_words: bloom.finish(),
        bloom_probes: BLOOM_PROBES,
    };
    let archived = rkyv::to_bytes::<rancor::BoxedError>(&archive)
        .map_err(|e| StorageError::invalid(format!("cannot encode SSTable: {e}")))?;
    let mut file = Vec::with_capacity(archived.len() + 32);
    file.extend_from_slice(&archived);
    let footer = TableFooter {
        archive_len_bytes: archived.len() as u64,
        entry_count,
        format_version: TABLE_FORMAT_VERSION,
        crc32: 0,
    };
    footer.encode_without_crc(&mut file);
    let crc = crc32fast::hash(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    Ok(file)
}

/// Writes the table durably at `path`.
pub fn write_table(fs: &Fs, path: &Path, entries: Vec<TableEntry>) -> Result<u64> {
    let bytes = encode_table(entries)?;
    fs.write_file_durably(path, &bytes)?;
    Ok(bytes.len() as u64)
}
