//! WAL record framing: `[u32 len][u32 crc32][payload]`, little-endian.
//!
//! `payload` is `[u8 kind][body]`, so `len >= 1`; `crc32` (IEEE, `crc32fast`) covers the whole
//! payload, kind included. A zero `len` is never valid, which matters because a torn write often
//! leaves zero-filled bytes behind and `crc32("") == 0` would otherwise make them look valid.

/// Bytes of the `[len][crc]` header.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Largest payload (kind + body) one record may carry. A length field above it is corruption.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One record read back from a segment, borrowing the segment's bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub kind: u8,
    pub body: &'a [u8],
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let payload_len = body.len() + 1;
    debug_assert!(
        payload_len <= RECORD_PAYLOAD_BYTES_MAX,
        "caller checks the record limit"
    );
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(body);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// Size of a framed record with this body.
pub fn framed_len(body_len: usize) -> usize {
    RECORD_HEADER_BYTES + 1 + body_len
}

/// Parses the record starting at `offset`; `Err` says why the bytes are not a record.
pub fn parse_record(bytes: &[u8], offset: usize) -> Result<(RecordRef<'_>, usize), &'static str> {
    let header = bytes
        .get(offset..offset + RECORD_HEADER_BYTES)
        .ok_or("short record header")?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
        return Err("record length out of range");
    }
    let start = offset + RECORD_HEADER_BYTES;
    let payload = bytes
        .get(start..start + len)
        .ok_or("short record payload")?;
    if crc32fast::hash(payload) != crc {
        return Err("record checksum mismatch");
    }
    let record = RecordRef {
        offset: offset as u64,
        kind: payload[0],
        body: &payload[1..],
    };
    Ok((record, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, b"hello");
        encode_record(&mut buf, 9, b"");
        let (first, next) = parse_record(&buf, 0).unwrap();
        assert_eq!((first.kind, first.body), (7, &b"hello"[..]));
        let (second, end) = parse_record(&buf, next).unwrap();
        assert_eq!((second.kind, second.body, end), (9, &b""[..], buf.len()));
        assert_eq!(
            parse_record(&buf[..next - 1], 0).unwrap_err(),
            "short record payload"
        );
        assert_eq!(
            parse_record(&[0u8; 16], 0).unwrap_err(),
            "record length out of range"
        );
        let mut flipped = buf.clone();
        flipped[10] ^= 1;
        assert_eq!(
            parse_record(&flipped, 0).unwrap_err(),
            "record checksum mismatch"
        );
    }
}
