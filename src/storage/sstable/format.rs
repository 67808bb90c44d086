//! The SSTable file format (see `src/storage/FORMAT.md` for the byte layout).
//!
//! A table file is `[rkyv archive of TableArchive][footer, 32 bytes]`. The archive starts at
//! file offset 0, so in a page-aligned mmap it is 16-byte aligned as rkyv requires, and its
//! root object sits at the archive's end (`archive_len`), which is why the footer records it.

use rkyv::{Archive, Serialize};

/// Magic bytes at the start of the footer.
pub const TABLE_MAGIC: [u8; 8] = *b"BFTDSST1";
pub const TABLE_FORMAT_VERSION: u32 = 1;
pub const TABLE_FOOTER_BYTES: usize = 32;

/// One key's slot. `tombstone == true` means the key was deleted (and `value` is empty).
#[derive(Archive, Serialize, Debug, Clone)]
pub struct TableEntry {
    pub key: Vec<u8>,
    pub tombstone: bool,
    pub value: Vec<u8>,
}

/// The archived root: entries sorted by key (strictly increasing), and the bloom filter.
#[derive(Archive, Serialize, Debug)]
pub struct TableArchive {
    pub entries: Vec<TableEntry>,
    pub bloom_words: Vec<u64>,
    pub bloom_probes: u32,
}

/// The fixed footer at the end of every table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFooter {
    pub archive_len_bytes: u64,
    pub entry_count: u64,
    pub format_version: u32,
    /// CRC32 of every file byte before this field.
    pub crc32: u32,
}

impl TableFooter {
    /// Encodes magic, lengths and version; the caller appends `crc32` last.
    pub fn encode_without_crc(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&TABLE_MAGIC);
        out.extend_from_slice(&self.archive_len_bytes.to_le_bytes());
        out.extend_from_slice(&self.entry_count.to_le_bytes());
        out.extend_from_slice(&self.format_version.to_le_bytes());
    }

    /// Decodes the last [`TABLE_FOOTER_BYTES`] of a file; `Err` names the problem.
    pub fn decode(footer: &[u8]) -> Result<TableFooter, String> {
        if footer.len() != TABLE_FOOTER_BYTES {
            return Err(format!(
                "footer is {} bytes, expected {TABLE_FOOTER_BYTES}",
                footer.len()
            ));
        }
        if footer[..8] != TABLE_MAGIC {
            return Err("wrong magic (not an SSTable)".into());
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(footer[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at =
            |at: usize| u32::from_le_bytes(footer[at..at + 4].try_into().unwrap_or([0; 4]));
        Ok(TableFooter {
            archive_len_bytes: u64_at(8),
            entry_count: u64_at(16),
            format_version: u32_at(24),
            crc32: u32_at(28),
        })
    }
}

/// `sst-<id, 16 digits>.sst`
pub fn table_file_name(id: u64) -> String {
    format!("sst-{id:016}.sst")
}

pub fn parse_table_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("sst-")?.strip_suffix(".sst")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
