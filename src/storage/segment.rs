//! One WAL segment file: its name, and how a segment's bytes are scanned on replay.
//!
//! A segment is named `wal-<first_lsn, 20 digits>.log`: the LSN of its first record, so the
//! sorted file names give the log order and consecutive segments must satisfy
//! `first_lsn(next) == first_lsn(this) + records(this)` (a gap means a missing file).
//! Only the last segment may end in a torn tail: a segment is fully synced before the next one
//! is created.

use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::record::{RecordRef, parse_record, valid_record_after};

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";

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

/// A segment known to exist on disk.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub first_lsn: u64,
    pub path: PathBuf,
}

/// Result of scanning one segment's bytes.
#[derive(Debug)]
pub struct SegmentScan<'a> {
    pub records: Vec<RecordRef<'a>>,
    /// Length of the valid prefix; smaller than the file when a torn tail was found.
    pub valid_len_bytes: u64,
    /// Why the tail was dropped, if it was.
    pub torn_reason: Option<&'static str>,
}

/// Scans all records of a segment. When `is_last` and the bad bytes run to the end of the file
/// with no valid record after them, they are a torn tail; anything else is corruption.
pub fn scan_segment<'a>(bytes: &'a [u8], path: &Path, is_last: bool) -> Result<SegmentScan<'a>> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match parse_record(bytes, offset) {
            Ok((record, next)) => {
                records.push(record);
                offset = next;
            }
            Err(reason) => {
                if is_last && !valid_record_after(bytes, offset + 1) {
                    return Ok(SegmentScan {
                        records,
                        valid_len_bytes: offset as u64,
                        torn_reason: Some(reason),
                    });
                }
                let hint = if is_last {
                    ""
                } else {
                    " (not the last segment, so not a torn tail)"
                };
                return Err(StorageError::corrupt(
                    path,
                    offset as u64,
                    format!("{reason}{hint}"),
                ));
            }
        }
    }
    Ok(SegmentScan {
        records,
        valid_len_bytes: offset as u64,
        torn_reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::encode_record;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("wal-1.log"), None);
        assert_eq!(parse_segment_file_name("MANIFEST"), None);
    }

    #[test]
    fn torn_tail_only_at_the_end_of_the_last_segment() {
        let mut bytes = Vec::new();
        for i in 0..3u8 {
            encode_record(&mut bytes, 1, &[i; 10]);
        }
        let full = bytes.len();
        let path = Path::new("seg");
        let torn = &bytes[..full - 3];
        let scan = scan_segment(torn, path, true).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert!(scan.torn_reason.is_some());
        assert!(scan_segment(torn, path, false).unwrap_err().is_corruption());
        let mut middle = bytes.clone();
        middle[12] ^= 0x40; // inside the first record's body
        let err = scan_segment(&middle, path, true).unwrap_err();
        assert!(err.to_string().contains("offset 0"), "{err}");
    }
}
