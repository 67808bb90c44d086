//! The Noise layer over `snow`: static keys, the XX handshake, and sealing application frames.
//!
//! Pattern: `Noise_XX_25519_ChaChaPoly_BLAKE2s`. XX rather than IK because one listener serves
//! both peers and clients and the responder learns who is calling from the handshake itself (IK
//! would make every client know, and every initiator pick, the responder's key before the first
//! byte, and IK's first message is replayable); the extra half round trip is paid once per
//! long-lived link. Each side checks the other's static key against the cluster config after
//! the handshake (see `auth`); the initiator checks the responder's key before it reveals its own.
//!
//! Wire layout. Every handshake message is one frame `[u32 LE len][noise handshake message]`,
//! at most [`HANDSHAKE_MESSAGE_BYTES_MAX`]. After the handshake every application frame of `P`
//! plaintext bytes is one frame `[u32 LE W][c_1 .. c_n]` where the plaintext is cut into
//! `n = max(1, ceil(P / CHUNK_PLAIN_BYTES_MAX))` chunks, each sealed as one Noise transport
//! message `c_i` (plaintext + 16-byte tag): every chunk but the last is exactly
//! [`NOISE_MESSAGE_BYTES_MAX`] bytes, so `W` alone tells the receiver where each chunk ends
//! (`n = ceil(W / 65535)`, the last chunk has `W - 65535 (n - 1)` bytes and must hold at least a
//! tag). Nonces advance one per chunk; TCP keeps them in order. Any decryption failure, and any
//! `W` that does not fit this layout, is garbage and closes the link.

use snow::{Builder, HandshakeState, TransportState};

/// The Noise protocol name; both ends must use exactly this.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Noise's hard limit on one message, handshake or transport.
pub const NOISE_MESSAGE_BYTES_MAX: usize = 65_535;
/// The AEAD tag each transport message carries.
pub const NOISE_TAG_BYTES: usize = 16;
/// Plaintext bytes that fit in one transport message.
pub const CHUNK_PLAIN_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - NOISE_TAG_BYTES;
/// Largest handshake frame we accept: XX messages with empty payloads are 32, 96 and 64 bytes.
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 1024;
/// Length of an X25519 key, public or private.
pub const KEY_BYTES: usize = 32;

/// An X25519 static key pair for a node or a client.
#[derive(Clone)]
pub struct StaticKeypair {
    pub private: [u8; KEY_BYTES],
    pub public: [u8; KEY_BYTES],
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private half.
        write!(
            f,
            "StaticKeypair {{ public: {:02x?}.. }}",
            &self.public[..4]
        )
    }
}

/// A Noise failure: from snow, or bytes that do not fit our frame layout.
#[derive(Debug)]
pub enum NoiseError {
    Snow(snow::Error),
    Garbage(&'static str),
}

impl std::fmt::Display for NoiseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseError::Snow(e) => write!(f, "noise: {e}"),
            NoiseError::Garbage(why) => write!(f, "noise: malformed frame: {why}"),
        }
    }
}

impl std::error::Error for NoiseError {}

impl From<snow::Error> for NoiseError {
    fn from(e: snow::Error) -> Self {
        NoiseError::Snow(e)
    }
}

fn builder() -> Builder<'static> {
    // The protocol name is a constant of this module; failing to parse it is a bug here.
    Builder::new(
        NOISE_PARAMS
            .parse()
            .expect("NOISE_PARAMS is a valid Noise protocol name"),
    )
}

/// Generates a fresh X25519 static key pair from the OS RNG.
pub fn generate_static_keypair() -> Result<StaticKeypair, NoiseError> {
    let kp = builder().generate_keypair()?;
    let mut pair = StaticKeypair {
        private: [0; KEY_BYTES],
        public: [0; KEY_BYTES],
    };
    if kp.private.len() != KEY_BYTES || kp.public.len() != KEY_BYTES {
        return Err(NoiseError::Garbage("generated key has the wrong length"));
    }
    pair.private.copy_from_slice(&kp.private);
    pair.public.copy_from_slice(&kp.public);
    Ok(pair)
}

/// Bytes on the wire (after the length prefix) for an application frame of `plain_bytes`.
pub fn sealed_len(plain_bytes: usize) -> usize {
    let chunks = plain_bytes.div_ceil(CHUNK_PLAIN_BYTES_MAX).max(1);
    plain_bytes + chunks * NOISE_TAG_BYTES
}

/// One side of an XX handshake in progress.
pub struct Handshake {
    state: HandshakeState,
}

impl Handshake {
    pub fn initiator(local_private: &[u8; KEY_BYTES], prologue: &[u8]) -> Result<Self, NoiseError> {
        let state = builder()
            .local_private_key(local_private)?
            .prologue(prologue)?
            .build_initiator()?;
        Ok(Self { state })
    }

    pub fn responder(local_private: &[u8; KEY_BYTES], prologue: &[u8]) -> Result<Self, NoiseError> {
        let state = builder()
            .local_private_key(local_private)?
            .prologue(prologue)?
            .build_responder()?;
        Ok(Self { state })
    }

    pub fn is_my_turn(&self) -> bool {
        self.state.is_my_turn()
    }

    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The remote's static key, once the handshake has carried it.
    pub fn remote_static(&self) -> Option<[u8; KEY_BYTES]> {
        self.state
            .get_remote_static()
            .and_then(|k| <[u8; KEY_BYTES]>::try_from(k).ok())
    }

    /// Writes our next handshake message, framed, onto `out`.
    pub fn write_message(&mut self, out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let mut msg = [0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
        let len = self.state.write_message(&[], &mut msg)?;
        super::frame::encode_frame(&msg[..len], out);
        Ok(())
    }

    /// Reads the remote's next handshake message (one frame's payload). Payloads must be empty.
    pub fn read_message(&mut self, msg: &[u8]) -> Result<(), NoiseError> {
        let mut payload = [0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
        let len = self.state.read_message(msg, &mut payload)?;
        if len != 0 {
            return Err(NoiseError::Garbage("handshake message carries a payload"));
        }
        Ok(())
    }

    /// Switches to transport mode; only valid once [`Handshake::is_finished`].
    pub fn into_link(self) -> Result<NoiseLink, NoiseError> {
        Ok(NoiseLink {
            state: self.state.into_transport_mode()?,
        })
    }
}

/// An established, encrypted link: seals outgoing and opens incoming application frames.
pub struct NoiseLink {
    state: TransportState,
}

impl NoiseLink {
    /// Appends `[u32 LE W][chunks]` for `plain` onto `out` (layout in the module doc).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let wire_bytes = sealed_len(plain.len());
        super::frame::encode_header(wire_bytes, out);
        let mut at = out.len();
        out.resize(at + wire_bytes, 0);
        let mut chunks = plain.chunks(CHUNK_PLAIN_BYTES_MAX);
        let empty: &[u8] = &[];
        // An empty frame still sends one tag-only chunk, so every frame is authenticated.
        let first = chunks.next().unwrap_or(empty);
        for chunk in std::iter::once(first).chain(chunks) {
            let end = at + chunk.len() + NOISE_TAG_BYTES;
            let n = self.state.write_message(chunk, &mut out[at..end])?;
            debug_assert_eq!(n, chunk.len() + NOISE_TAG_BYTES);
            at = end;
        }
        debug_assert_eq!(at, out.len());
        Ok(())
    }

    /// Opens one frame payload `wire` into its plaintext.
    pub fn open(&mut self, wire: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if wire.is_empty() {
            return Err(NoiseError::Garbage("empty transport frame"));
        }
        let chunks = wire.len().div_ceil(NOISE_MESSAGE_BYTES_MAX);
        let last_bytes = wire.len() - NOISE_MESSAGE_BYTES_MAX * (chunks - 1);
        if last_bytes < NOISE_TAG_BYTES {
            return Err(NoiseError::Garbage("last chunk shorter than a tag"));
        }
        let mut plain = vec![0u8; wire.len() - chunks * NOISE_TAG_BYTES];
        let mut at = 0;
        for chunk in wire.chunks(NOISE_MESSAGE_BYTES_MAX) {
            let end = at + chunk.len() - NOISE_TAG_BYTES;
            let n = self.state.read_message(chunk, &mut plain[at..end])?;
            if n != end - at {
                return Err(NoiseError::Garbage(
                    "chunk decrypted to an unexpected length",
                ));
            }
            at = end;
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frame::FrameDecoder;

    fn next_frame(dec: &mut FrameDecoder, wire: &mut Vec<u8>) -> Vec<u8> {
        let mut input: &[u8] = wire;
        let frame = dec.feed(&mut input).unwrap().unwrap();
        let used = wire.len() - input.len();
        wire.drain(..used);
        frame
    }

    fn pair() -> (NoiseLink, NoiseLink, [u8; 32], [u8; 32]) {
        let (a, b) = (
            generate_static_keypair().unwrap(),
            generate_static_keypair().unwrap(),
        );
        let mut i = Handshake::initiator(&a.private, b"test").unwrap();
        let mut r = Handshake::responder(&b.private, b"test").unwrap();
        let mut dec = FrameDecoder::new(HANDSHAKE_MESSAGE_BYTES_MAX);
        let mut wire = Vec::new();
        i.write_message(&mut wire).unwrap();
        r.read_message(&next_frame(&mut dec, &mut wire)).unwrap();
        r.write_message(&mut wire).unwrap();
        i.read_message(&next_frame(&mut dec, &mut wire)).unwrap();
        assert_eq!(i.remote_static(), Some(b.public));
        i.write_message(&mut wire).unwrap();
        r.read_message(&next_frame(&mut dec, &mut wire)).unwrap();
        assert!(i.is_finished() && r.is_finished());
        assert_eq!(r.remote_static(), Some(a.public));
        (
            i.into_link().unwrap(),
            r.into_link().unwrap(),
            a.public,
            b.public,
        )
    }

    #[test]
    fn sealed_len_matches_layout() {
        assert_eq!(sealed_len(0), 16);
        assert_eq!(sealed_len(CHUNK_PLAIN_BYTES_MAX), NOISE_MESSAGE_BYTES_MAX);
        assert_eq!(
            sealed_len(CHUNK_PLAIN_BYTES_MAX + 1),
            NOISE_MESSAGE_BYTES_MAX + 17
        );
    }

    #[test]
    fn frames_of_every_chunking_round_trip() {
        let (mut a, mut b, _, _) = pair();
        let sizes = [0, 1, CHUNK_PLAIN_BYTES_MAX - 1, CHUNK_PLAIN_BYTES_MAX];
        let more = [
            CHUNK_PLAIN_BYTES_MAX + 1,
            3 * CHUNK_PLAIN_BYTES_MAX,
            1_000_000,
        ];
        let mut dec = FrameDecoder::new(sealed_len(1_000_000));
        for (k, size) in sizes.iter().chain(more.iter()).enumerate() {
            let plain: Vec<u8> = (0..*size).map(|x| (x + k) as u8).collect();
            let mut wire = Vec::new();
            a.seal(&plain, &mut wire).unwrap();
            assert_eq!(wire.len(), 4 + sealed_len(*size));
            let frame = next_frame(&mut dec, &mut wire);
            assert_eq!(b.open(&frame).unwrap(), plain, "size {size}");
        }
    }

    #[test]
    fn tampered_or_misshapen_frames_are_rejected() {
        let (mut a, mut b, _, _) = pair();
        let mut wire = Vec::new();
        a.seal(b"hello", &mut wire).unwrap();
        wire[6] ^= 1;
        assert!(b.open(&wire[4..]).is_err());
        assert!(b.open(&[]).is_err());
        assert!(b.open(&[0u8; 15]).is_err());
        assert!(b.open(&[0u8; NOISE_MESSAGE_BYTES_MAX + 3]).is_err());
    }
}
