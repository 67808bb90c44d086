//! One WAL segment file: its name, its group-commit markers, and how its bytes are scanned
//! on replay.
//!
//! A segment is named `wal-<first_lsn, 20 digits>.log`: the LSN of its first record, so the
//! sorted file names give the log order and consecutive segments must satisfy
//! `first_lsn(next) == first_lsn(this) + records(this)` (a gap means a missing file, unless
//! the caller says every LSN in it is captured elsewhere, see `Wal::open_above`).
//!
//! Every group commit starts with a batch marker: a record of the reserved kind
//! [`BATCH_MARKER_KIND`] holding its own byte offset and the LSN of the next record. The
//! committer writes a batch only after the previous one was synced, so a valid marker at
//! offset `m` proves that every byte before `m` was durable: bad bytes before the last valid
//! marker are corruption; bad bytes after it are a torn tail (the one group commit a power cut
//! can interrupt). Only the last segment may end in a torn tail: a segment is fully synced
//! before the next one is created. The full rule is in FORMAT.md.

use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::record::{RECORD_HEADER_BYTES, RecordRef, encode_record, parse_record};

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";

/// Record kind reserved by the WAL for group-commit markers; never passed to callers and
/// never given an LSN.
pub const BATCH_MARKER_KIND: u8 = 0;
/// Body of a batch marker: `u64 offset_bytes`, `u64 first_lsn`.
const MARKER_BODY_BYTES: usize = 16;
/// A framed batch marker: header + kind + body.
pub const MARKER_FRAMED_BYTES: usize = RECORD_HEADER_BYTES + 1 + MARKER_BODY_BYTES;

pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment file name, or `None` for other files.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Appends the marker of a group commit that will start at `offset_bytes` of its segment and
/// whose first record has LSN `first_lsn`.
pub fn encode_batch_marker(out: &mut Vec<u8>, offset_bytes: u64, first_lsn: u64) {
    let mut body = [0u8; MARKER_BODY_BYTES];
    body[..8].copy_from_slice(&offset_bytes.to_le_bytes());
    body[8..].copy_from_slice(&first_lsn.to_le_bytes());
    encode_record(out, BATCH_MARKER_KIND, &body);
}

/// The (offset, first LSN) a marker body holds, if it has the marker's size.
fn decode_marker(body: &[u8]) -> Option<(u64, u64)> {
    if body.len() != MARKER_BODY_BYTES {
        return None;
    }
    let offset = u64::from_le_bytes(body[..8].try_into().ok()?);
    let first_lsn = u64::from_le_bytes(body[8..].try_into().ok()?);
    Some((offset, first_lsn))
}

/// A segment known to exist on disk.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub first_lsn: u64,
    pub path: PathBuf,
}

/// Result of scanning one segment's bytes.
#[derive(Debug)]
pub struct SegmentScan<'a> {
    /// The caller records (markers left out), in LSN order from the segment's first LSN.
    pub records: Vec<RecordRef<'a>>,
    /// Length of the valid prefix; smaller than the file when a torn tail was found.
    pub valid_len_bytes: u64,
    /// Why the tail was dropped, if it was.
    pub torn_reason: Option<&'static str>,
}

/// Scans all records of a segment whose first record has LSN `first_lsn`. When `is_last` and
/// no valid batch marker after the first bad byte proves it synced, the bad bytes and
/// everything after them are a torn tail; anything else is corruption.
pub fn scan_segment<'a>(
    bytes: &'a [u8],
    path: &Path,
    first_lsn: u64,
    is_last: bool,
) -> Result<SegmentScan<'a>> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match parse_record(bytes, offset) {
            Ok((record, next)) => {
                if record.kind == BATCH_MARKER_KIND {
                    let expected_lsn = first_lsn + records.len() as u64;
                    check_marker(record.body, offset, expected_lsn)
                        .map_err(|reason| StorageError::corrupt(path, offset as u64, reason))?;
                } else {
                    records.push(record);
                }
                offset = next;
            }
            Err(reason) => {
                if !is_last {
                    return Err(StorageError::corrupt(
                        path,
                        offset as u64,
                        format!("{reason} (not the last segment, so not a torn tail)"),
                    ));
                }
                if let Some(proof) = synced_marker_after(bytes, offset + 1) {
                    return Err(StorageError::corrupt(
                        path,
                        offset as u64,
                        format!(
                            "{reason} (inside the synced prefix: the group commit at byte \
                             offset {proof} was written after these bytes were synced)"
                        ),
                    ));
                }
                return Ok(SegmentScan {
                    records,
                    valid_len_bytes: offset as u64,
                    torn_reason: Some(reason),
                });
            }
        }
    }
    Ok(SegmentScan {
        records,
        valid_len_bytes: offset as u64,
        torn_reason: None,
    })
}

/// A checksummed marker must say where it is and which LSN comes next.
fn check_marker(body: &[u8], offset: usize, expected_lsn: u64) -> std::result::Result<(), String> {
    let (claimed_offset, claimed_lsn) =
        decode_marker(body).ok_or_else(|| "batch marker of the wrong size".to_string())?;
    if claimed_offset != offset as u64 {
        return Err(format!(
            "batch marker says it is at byte offset {claimed_offset}"
        ));
    }
    if claimed_lsn != expected_lsn {
        return Err(format!(
            "batch marker says the next LSN is {claimed_lsn}, the records give {expected_lsn}"
        ));
    }
    Ok(())
}

/// Offset of the first valid batch marker at or after `from` that names its own offset: proof
/// that every byte before it was synced. A scan of cheap checks (one length compare per byte,
/// a 17-byte CRC where it matches), linear in the segment.
fn synced_marker_after(bytes: &[u8], from: usize) -> Option<usize> {
    let last_start = bytes.len().checked_sub(MARKER_FRAMED_BYTES)?;
    (from..=last_start).find(|&at| {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        len as usize == 1 + MARKER_BODY_BYTES
            && matches!(
                parse_record(bytes, at),
                Ok((record, _)) if record.kind == BATCH_MARKER_KIND
                    && decode_marker(record.body).is_some_and(|(o, _)| o == at as u64)
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("wal-1.log"), None);
        assert_eq!(parse_segment_file_name("MANIFEST"), None);
    }

    /// Three group commits of one record each, as the committer writes them.
    fn three_batches() -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..3u8 {
            let offset = bytes.len() as u64;
            encode_batch_marker(&mut bytes, offset, 1 + u64::from(i));
            encode_record(&mut bytes, 1, &[i; 10]);
        }
        bytes
    }

    #[test]
    fn torn_tail_only_at_the_end_of_the_last_segment() {
        let bytes = three_batches();
        let full = bytes.len();
        let path = Path::new("seg");
        let torn = &bytes[..full - 3];
        let scan = scan_segment(torn, path, 1, true).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert!(scan.torn_reason.is_some());
        assert!(
            scan_segment(torn, path, 1, false)
                .unwrap_err()
                .is_corruption()
        );
        let mut middle = bytes.clone();
        middle[MARKER_FRAMED_BYTES + 12] ^= 0x40; // the first record's body
        let err = scan_segment(&middle, path, 1, true).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("offset {MARKER_FRAMED_BYTES}")),
            "{err}"
        );
    }

    #[test]
    fn damage_in_the_last_group_commit_is_a_torn_tail() {
        let mut bytes = three_batches();
        let last_batch = bytes.len() - (MARKER_FRAMED_BYTES + 19);
        bytes[last_batch + MARKER_FRAMED_BYTES..][..4].fill(0); // a hole, then garbage
        bytes.extend_from_slice(&[7u8; 40]);
        let scan = scan_segment(&bytes, Path::new("seg"), 1, true).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(
            scan.valid_len_bytes,
            (last_batch + MARKER_FRAMED_BYTES) as u64
        );
    }

    #[test]
    fn a_marker_that_lies_about_its_place_is_corruption() {
        let mut bytes = Vec::new();
        encode_batch_marker(&mut bytes, 0, 5);
        encode_record(&mut bytes, 1, b"x");
        let err = scan_segment(&bytes, Path::new("seg"), 1, true).unwrap_err();
        assert!(err.to_string().contains("next LSN is 5"), "{err}");
    }
}
