//! The one wire and disk encoding: `rkyv` 0.8 archives, always validated on decode.
//!
//! Invariants: [`decode`] never panics on any input; it checks the length bound first, then
//! validates the archive with bytecheck (`rkyv::access`), then deserialises into owned values.
//! Bytes that arrive unaligned are copied into an aligned buffer first (rkyv needs 16-byte
//! alignment). Frame and record layouts (length prefixes, CRCs) live with the transport and the
//! WAL; this module only turns values into bytes and back.

use std::fmt;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor::BoxedError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::types::Message;

/// Largest message the codec accepts. The transport's `max_frame_bytes` may be lower.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why bytes could not be decoded. Carries the validator's reason for logs and counters.
#[derive(Debug)]
pub enum CodecError {
    TooLarge { len: usize, max: usize },
    Invalid(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooLarge { len, max } => {
                write!(
                    f,
                    "encoded value is {len} bytes, more than the limit of {max}"
                )
            }
            CodecError::Invalid(why) => write!(f, "invalid encoding: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Encodes any archivable value.
pub fn encode<T>(value: &T) -> AlignedVec
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>,
{
    // Serialising an owned, in-memory value into a growable buffer cannot fail for our types
    // (no fallible custom serialisers); a failure here is a bug in this crate.
    match rkyv::to_bytes::<BoxedError>(value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("rkyv serialisation of an in-memory value failed: {e}"),
    }
}

/// Decodes and validates bytes from outside (network, disk) into an owned value.
pub fn decode<T>(bytes: &[u8], max_bytes: usize) -> Result<T, CodecError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    if bytes.len() > max_bytes {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: max_bytes,
        });
    }
    if (bytes.as_ptr() as usize).is_multiple_of(16) {
        from_aligned::<T>(bytes)
    } else {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        from_aligned::<T>(&aligned)
    }
}

fn from_aligned<T>(bytes: &[u8]) -> Result<T, CodecError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    rkyv::from_bytes::<T, BoxedError>(bytes).map_err(|e| CodecError::Invalid(e.to_string()))
}

/// Decodes a node-to-node message.
pub fn decode_message(bytes: &[u8]) -> Result<Message, CodecError> {
    decode::<Message>(bytes, MESSAGE_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn sample_block() -> Block {
        let cluster = ClusterId::from_name("test");
        Block {
            round: 7,
            height: 5,
            timestamp_ms: 0,
            qc: QuorumCert {
                block_id: BlockId([3; 32]),
                round: 6,
                votes: vec![SignerSig {
                    node: NodeId(1),
                    sig: Sig([9; 64]),
                }],
            },
            tc: Some(TimeoutCert {
                round: 6,
                high_qc: QuorumCert::genesis(&cluster),
                timeouts: vec![TimeoutSig {
                    node: NodeId(2),
                    high_qc_round: 0,
                    sig: Sig([4; 64]),
                }],
            }),
            roots_after: 2,
            state_roots: vec![(3, [8; 32])],
            payload: vec![ClientRequest {
                client: ClientKey([5; 32]),
                session: 3,
                seq: 42,
                ops: b"put k v".to_vec(),
                signature: Sig([6; 64]),
            }],
            author: NodeId(3),
            signature: Sig([8; 64]),
        }
    }

    fn all_messages() -> Vec<Message> {
        let b = sample_block();
        vec![
            Message::Proposal(b.clone()),
            Message::Vote(Vote {
                block_id: BlockId([1; 32]),
                round: 3,
                voter: NodeId(0),
                signature: Sig([2; 64]),
            }),
            Message::Timeout(Timeout {
                round: 9,
                high_qc: b.qc.clone(),
                author: NodeId(2),
                signature: Sig([7; 64]),
            }),
            Message::SyncInfo(SyncInfo {
                high_qc: b.qc.clone(),
                high_tc: b.tc.clone(),
            }),
            Message::SyncRequest(SyncRequest {
                target: BlockId([1; 32]),
                committed_height: 4,
                max_blocks: 100,
            }),
            Message::SyncResponse(SyncResponse {
                blocks: vec![b.clone(), b],
            }),
        ]
    }

    #[test]
    fn every_message_kind_round_trips() {
        for msg in all_messages() {
            let bytes = encode(&msg);
            let back = decode_message(&bytes).expect("valid encoding decodes");
            assert_eq!(back, msg, "{} changed in a round trip", msg.kind());
        }
    }

    #[test]
    fn unaligned_input_is_copied_and_decodes() {
        let msg = all_messages().remove(0);
        let bytes = encode(&msg);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        assert_eq!(decode_message(&shifted[1..]).expect("decodes"), msg);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for msg in all_messages() {
            let bytes = encode(&msg);
            for len in 0..bytes.len() {
                // A prefix may by chance form a different valid value, but it must never panic,
                // and the empty and most-of-it prefixes must fail.
                let r = decode_message(&bytes[..len]);
                if len == 0 {
                    assert!(r.is_err());
                }
            }
            assert!(decode_message(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A deterministic xorshift stream of garbage of many lengths.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rejected = 0;
        for len in 0..2000usize {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if decode_message(&buf).is_err() {
                rejected += 1;
            }
        }
        assert!(
            rejected > 1900,
            "garbage should almost always be rejected, got {rejected}"
        );
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let msg = all_messages().remove(0);
        let bytes = encode(&msg).to_vec();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode_message(&b);
        }
    }

    #[test]
    fn oversize_input_is_refused_before_decoding() {
        let err = decode::<Message>(&[0u8; 100], 10).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { len: 100, max: 10 }));
    }
}
