//! The manifest: the durable list of live SSTables and the WAL position they cover.
//!
//! Replaced atomically (temp file, `sync_data`, rename, fsync dir) on every flush, compaction
//! and snapshot install, so after a crash it names either the old set of tables or the new
//! one. Byte layout (little-endian; also in FORMAT.md):
//!
//! ```text
//! [8]  magic "BFTDMAN1"
//! [4]  payload_len
//! [4]  crc32 of payload
//! payload:
//!   [4]  format version (1)
//!   [8]  next_table_id     (ids below it were used; a new table takes this id)
//!   [8]  flushed_lsn       (WAL write batches with LSN <= this are in the tables)
//!   [4]  table_count
//!   [8 × table_count] table ids, newest first
//! ```

use std::path::Path;

use super::error::{Result, StorageError};
use super::fs::Fs;

pub const MANIFEST_FILE_NAME: &str = "MANIFEST";
const MANIFEST_MAGIC: [u8; 8] = *b"BFTDMAN1";
const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Tables one manifest may list (a bound on reading a corrupt count).
pub const MANIFEST_TABLES_MAX: usize = 100_000;
const MANIFEST_BYTES_MAX: u64 = 16 + 24 + 8 * MANIFEST_TABLES_MAX as u64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub next_table_id: u64,
    pub flushed_lsn: u64,
    /// Live tables, newest first.
    pub table_ids: Vec<u64>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(24 + 8 * self.table_ids.len());
        payload.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
        payload.extend_from_slice(&self.next_table_id.to_le_bytes());
        payload.extend_from_slice(&self.flushed_lsn.to_le_bytes());
        payload.extend_from_slice(&(self.table_ids.len() as u32).to_le_bytes());
        for id in &self.table_ids {
            payload.extend_from_slice(&id.to_le_bytes());
        }
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let corrupt =
            |offset: usize, reason: &str| StorageError::corrupt(path, offset as u64, reason);
        let mut reader = ByteReader { bytes, at: 0 };
        let magic = reader.take(8).ok_or_else(|| corrupt(0, "short manifest"))?;
        if magic != MANIFEST_MAGIC {
            return Err(corrupt(0, "wrong magic (not a manifest)"));
        }
        let payload_len = reader.u32().ok_or_else(|| corrupt(8, "short manifest"))? as usize;
        let crc = reader.u32().ok_or_else(|| corrupt(12, "short manifest"))?;
        let payload = reader
            .take(payload_len)
            .ok_or_else(|| corrupt(16, "manifest shorter than its length field"))?;
        if reader.at != bytes.len() {
            return Err(corrupt(reader.at, "trailing bytes after manifest payload"));
        }
        if crc32fast::hash(payload) != crc {
            return Err(corrupt(16, "manifest checksum mismatch"));
        }
        decode_payload(payload).map_err(|reason| corrupt(16, reason))
    }

    /// Reads the manifest in `dir`; `Ok(None)` if there is none yet (a new store).
    pub fn load(fs: &Fs, dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = fs.read_file(&path, MANIFEST_BYTES_MAX)?;
        Manifest::decode(&bytes, &path).map(Some)
    }

    /// Replaces the manifest in `dir` atomically and durably.
    pub fn store(&self, fs: &Fs, dir: &Path) -> Result<()> {
        fs.write_file_durably(&dir.join(MANIFEST_FILE_NAME), &self.encode())
    }
}

fn decode_payload(payload: &[u8]) -> std::result::Result<Manifest, &'static str> {
    let mut reader = ByteReader {
        bytes: payload,
        at: 0,
    };
    let version = reader.u32().ok_or("short payload")?;
    if version != MANIFEST_FORMAT_VERSION {
        return Err("unsupported manifest format version");
    }
    let next_table_id = reader.u64().ok_or("short payload")?;
    let flushed_lsn = reader.u64().ok_or("short payload")?;
    let count = reader.u32().ok_or("short payload")? as usize;
    if count > MANIFEST_TABLES_MAX {
        return Err("table count above limit");
    }
    let mut table_ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = reader.u64().ok_or("short table list")?;
        if id >= next_table_id {
            return Err("table id not below next_table_id");
        }
        table_ids.push(id);
    }
    if reader.at != payload.len() {
        return Err("trailing bytes in payload");
    }
    Ok(Manifest {
        next_table_id,
        flushed_lsn,
        table_ids,
    })
}

/// Bounds-checked little-endian reads.
pub(crate) struct ByteReader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> ByteReader<'a> {
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip_is_caught() {
        let manifest = Manifest {
            next_table_id: 9,
            flushed_lsn: 77,
            table_ids: vec![8, 5, 2],
        };
        let bytes = manifest.encode();
        let path = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(&bytes, path).unwrap(), manifest);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Manifest::decode(&flipped, path).is_err(),
                "flip of bit {bit} accepted"
            );
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len], path).is_err());
        }
    }
}
