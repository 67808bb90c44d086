//! `forge-snapshot`: a snapshot file forged from an honest one. One stored value is changed;
//! the header (height, claimed state digest) is kept, so the file still matches the offer the
//! honest members make, and the blake3 trailer is recomputed, so the file's own checksum
//! passes. Only a receiver that recomputes the state from the entries can tell.
//!
//! Used only by the test-only Byzantine daemon (feature `byzantine`). The layout it edits is
//! the KV snapshot format (`kv::snapshot`, `storage/FORMAT.md`).

use crate::kv::keys::DATA_PREFIX;

/// magic, format version, applied height, state digest.
const HEADER_BYTES: usize = 8 + 4 + 8 + 32;
const CHECKSUM_BYTES: usize = 32;
const END_MARKER: u32 = u32::MAX;
/// A data entry's value starts with its version and modification height (`kv::keys`).
const VALUE_HEADER_BYTES: usize = 16;

/// The forged copy of the snapshot file `honest`, or `None` if it holds no stored value to
/// change (or is not a snapshot file).
pub fn forge_snapshot(honest: &[u8]) -> Option<Vec<u8>> {
    let body_len = honest.len().checked_sub(CHECKSUM_BYTES)?;
    let target = first_user_value_byte(honest.get(..body_len)?)?;
    let mut forged = honest.to_vec();
    *forged.get_mut(target)? ^= 0x01;
    let checksum = blake3::hash(&forged[..body_len]);
    forged[body_len..].copy_from_slice(checksum.as_bytes());
    Some(forged)
}

/// Offset of the last byte of the first data entry with a non-empty user value.
fn first_user_value_byte(body: &[u8]) -> Option<usize> {
    let mut at = HEADER_BYTES;
    loop {
        let key_len = read_u32(body, at)?;
        if key_len == END_MARKER {
            return None;
        }
        let key_at = at + 4;
        let value_len_at = key_at.checked_add(key_len as usize)?;
        let value_len = read_u32(body, value_len_at)? as usize;
        let value_at = value_len_at + 4;
        let end = value_at.checked_add(value_len)?;
        if end > body.len() {
            return None;
        }
        if body.get(key_at) == Some(&DATA_PREFIX) && value_len > VALUE_HEADER_BYTES {
            return Some(end - 1);
        }
        at = end;
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvRequest, KvStore, Op, encode_ops};
    use crate::storage::EngineOptions;

    /// A forged file passes the checksum and keeps the honest header, and installing it is
    /// refused only by the recomputed state digest; the honest file installs.
    #[test]
    fn a_forged_snapshot_is_refused_by_the_state_digest() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut source = KvStore::open(dirs[0].path(), EngineOptions::default()).unwrap();
        let ops = encode_ops(&[Op::Put {
            key: b"k".to_vec(),
            value: b"honest".to_vec(),
        }]);
        let req = KvRequest {
            client: [7; 32],
            session: 1,
            seq: 1,
            ops: &ops,
        };
        source.apply(1, &[req]).unwrap();
        let honest_path = dirs[2].path().join("honest.snap");
        source.save_snapshot(&honest_path).unwrap();
        let honest = std::fs::read(&honest_path).unwrap();

        let forged = forge_snapshot(&honest).expect("a value to change");
        assert_eq!(forged.len(), honest.len());
        assert_eq!(forged[..HEADER_BYTES], honest[..HEADER_BYTES]);
        let body_len = forged.len() - CHECKSUM_BYTES;
        assert_eq!(
            blake3::hash(&forged[..body_len]).as_bytes(),
            &forged[body_len..]
        );
        let forged_path = dirs[2].path().join("forged.snap");
        std::fs::write(&forged_path, &forged).unwrap();
        let mut victim = KvStore::open(dirs[1].path(), EngineOptions::default()).unwrap();
        let err = victim.install_snapshot(&forged_path).unwrap_err();
        assert!(err.to_string().contains("state digest"), "{err}");
        assert_eq!(victim.applied_height(), 0);
        victim.install_snapshot(&honest_path).unwrap();
        assert_eq!(victim.state_digest(), source.state_digest());
    }
}
