//! A write batch: the puts and deletes that become one WAL record and are applied atomically.
//!
//! Body layout of a WAL record of kind [`WRITE_BATCH_KIND`] (little-endian):
//! `[u32 op_count]` then per op `[u8 tag: 0 put, 1 delete][u32 key_len][key]` and, for a put,
//! `[u32 value_len][value]`. Decoding checks every length against the remaining bytes.

use super::error::{Result, StorageError};
use super::manifest::ByteReader;
use super::memtable::Slot;

/// WAL record kind the engine uses for its write batches. Callers of
/// [`super::Engine::append_record`] must use other kinds.
pub const WRITE_BATCH_KIND: u8 = 1;

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Slot)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Slot::Put(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Slot::Delete));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let payload: usize = self
            .ops
            .iter()
            .map(|(k, s)| 9 + k.len() + matches!(s, Slot::Put(_)) as usize * 4)
            .sum();
        let mut out = Vec::with_capacity(4 + payload);
        out.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for (key, slot) in &self.ops {
            let tag = if matches!(slot, Slot::Put(_)) {
                TAG_PUT
            } else {
                TAG_DELETE
            };
            out.push(tag);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            if let Slot::Put(value) = slot {
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    /// Decodes a batch body read back from the WAL record `lsn`.
    pub fn decode(body: &[u8], lsn: u64) -> Result<WriteBatch> {
        decode_ops(body).ok_or_else(|| {
            StorageError::invalid(format!("WAL write batch at LSN {lsn} is malformed"))
        })
    }
}

fn decode_ops(body: &[u8]) -> Option<WriteBatch> {
    let mut reader = ByteReader { bytes: body, at: 0 };
    let count = reader.u32()? as usize;
    // Each op takes at least 5 bytes, which bounds the allocation by the body size.
    let mut ops = Vec::with_capacity(count.min(body.len() / 5));
    for _ in 0..count {
        let tag = reader.take(1)?[0];
        let key_len = reader.u32()? as usize;
        let key = reader.take(key_len)?.to_vec();
        let slot = match tag {
            TAG_PUT => {
                let value_len = reader.u32()? as usize;
                Slot::Put(reader.take(value_len)?.to_vec())
            }
            TAG_DELETE => Slot::Delete,
            _ => return None,
        };
        ops.push((key, slot));
    }
    (reader.at == body.len()).then_some(WriteBatch { ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncations_rejected() {
        let mut batch = WriteBatch::new();
        batch.put(b"k".to_vec(), b"v".to_vec());
        batch.delete(b"gone".to_vec());
        let bytes = batch.encode();
        assert_eq!(WriteBatch::decode(&bytes, 1).unwrap(), batch);
        for len in 0..bytes.len() {
            assert!(WriteBatch::decode(&bytes[..len], 1).is_err());
        }
    }
}
