//! Length framing on the TCP byte stream: `[u32 little-endian length][payload]`.
//!
//! Invariants: the decoder checks the length against its limit as soon as the four header bytes
//! are in, before it reserves anything, so an oversize length costs nothing; a body buffer grows
//! with the bytes actually received (at most [`BODY_RESERVE_BYTES_MAX`] reserved up front), so a
//! sender that announces a large frame and stalls pins only what it sent. Partial reads are
//! normal: [`FrameDecoder::feed`] consumes what it is given and keeps the unfinished frame.
//! The decoder never looks inside a payload.

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Most bytes reserved for a body before they arrive; larger bodies grow as data comes in.
pub const BODY_RESERVE_BYTES_MAX: usize = 64 * 1024;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the decoder's limit.
    Oversize {
        len_bytes: usize,
        limit_bytes: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Oversize {
                len_bytes,
                limit_bytes,
            } => write!(
                f,
                "frame length {len_bytes} bytes exceeds the limit of {limit_bytes} bytes"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends a length prefix for a payload of `len_bytes`.
pub fn encode_header(len_bytes: usize, out: &mut Vec<u8>) {
    // Callers check lengths against `max_frame_bytes` (far below 4 GiB) before framing.
    let len = u32::try_from(len_bytes).expect("frame length checked against the frame limit");
    out.extend_from_slice(&len.to_le_bytes());
}

/// Appends one whole frame (prefix and payload).
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    encode_header(payload.len(), out);
    out.extend_from_slice(payload);
}

/// Reassembles frames from arbitrary slices of the stream.
#[derive(Debug)]
pub struct FrameDecoder {
    limit_bytes: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_filled: usize,
    /// The body being filled and its announced length, once the header passed the limit check.
    body: Option<(Vec<u8>, usize)>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            header: [0; FRAME_HEADER_BYTES],
            header_filled: 0,
            body: None,
        }
    }

    /// Changes the limit for frames whose header has not arrived yet (e.g. after a handshake).
    pub fn set_limit_bytes(&mut self, limit_bytes: usize) {
        self.limit_bytes = limit_bytes;
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Bytes allocated for the body being received (0 between frames).
    pub fn body_capacity_bytes(&self) -> usize {
        self.body.as_ref().map_or(0, |(body, _)| body.capacity())
    }

    /// True when no frame is partly received.
    pub fn is_idle(&self) -> bool {
        self.header_filled == 0 && self.body.is_none()
    }

    /// Consumes bytes from the front of `input` until one frame completes or `input` is empty.
    /// Returns the completed frame's payload, if any; call again while `input` is non-empty.
    pub fn feed(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if self.body.is_none() {
            let take = (FRAME_HEADER_BYTES - self.header_filled).min(input.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&input[..take]);
            self.header_filled += take;
            *input = &input[take..];
            if self.header_filled < FRAME_HEADER_BYTES {
                return Ok(None);
            }
            let len_bytes = u32::from_le_bytes(self.header) as usize;
            if len_bytes > self.limit_bytes {
                return Err(FrameError::Oversize {
                    len_bytes,
                    limit_bytes: self.limit_bytes,
                });
            }
            self.header_filled = 0;
            let reserve = len_bytes.min(BODY_RESERVE_BYTES_MAX);
            self.body = Some((Vec::with_capacity(reserve), len_bytes));
        }
        let Some((body, len_bytes)) = self.body.as_mut() else {
            unreachable!("body was set above");
        };
        let take = (*len_bytes - body.len()).min(input.len());
        body.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if body.len() < *len_bytes {
            return Ok(None);
        }
        Ok(self.body.take().map(|(body, _)| body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut FrameDecoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Vec::new();
        while !input.is_empty() {
            if let Some(frame) = dec.feed(&mut input)? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut wire = Vec::new();
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; usize::from(i) * 7]).collect();
        for p in &payloads {
            encode_frame(p, &mut wire);
        }
        let mut dec = FrameDecoder::new(1024);
        assert_eq!(decode_all(&mut dec, &wire).unwrap(), payloads);
        assert!(dec.is_idle());
    }

    #[test]
    fn partial_reads_byte_by_byte_and_in_odd_chunks() {
        let mut wire = Vec::new();
        let payloads = vec![vec![1u8; 300], Vec::new(), vec![2u8; 5], vec![3u8; 200_000]];
        for p in &payloads {
            encode_frame(p, &mut wire);
        }
        for chunk_bytes in [1usize, 3, 4, 5, 7, 4096, 65_537] {
            let mut dec = FrameDecoder::new(1 << 20);
            let mut frames = Vec::new();
            for chunk in wire.chunks(chunk_bytes) {
                frames.extend(decode_all(&mut dec, chunk).unwrap());
            }
            assert_eq!(frames, payloads, "chunk size {chunk_bytes}");
            assert!(dec.is_idle());
        }
    }

    #[test]
    fn oversize_length_rejected_from_the_header_alone() {
        let mut dec = FrameDecoder::new(100);
        let header = 101u32.to_le_bytes();
        // Only the header arrives: the decision must not wait for (or allocate) the body.
        let err = decode_all(&mut dec, &header).unwrap_err();
        assert_eq!(
            err,
            FrameError::Oversize {
                len_bytes: 101,
                limit_bytes: 100
            }
        );
        let mut dec = FrameDecoder::new(100);
        let err = decode_all(&mut dec, &u32::MAX.to_le_bytes()).unwrap_err();
        assert!(matches!(err, FrameError::Oversize { .. }));
    }

    #[test]
    fn frame_at_the_limit_is_accepted() {
        let mut wire = Vec::new();
        encode_frame(&[9u8; 100], &mut wire);
        let mut dec = FrameDecoder::new(100);
        assert_eq!(decode_all(&mut dec, &wire).unwrap(), vec![vec![9u8; 100]]);
    }

    #[test]
    fn announced_large_body_reserves_only_the_cap() {
        let mut dec = FrameDecoder::new(10 << 20);
        let mut input: &[u8] = &(8u32 << 20).to_le_bytes();
        assert_eq!(dec.feed(&mut input).unwrap(), None);
        let reserved = dec.body.as_ref().map(|(b, _)| b.capacity()).unwrap();
        assert!(reserved <= BODY_RESERVE_BYTES_MAX);
        assert!(!dec.is_idle());
    }
}
