//! The node's transport: authenticated, encrypted, length-framed TCP on one `mio` thread.
//!
//! A [`Transport`] owns one thread with one `mio::Poll` for a single listener (peers and clients
//! alike; the Noise handshake says which), an outbound link to every peer with a higher id,
//! and every accepted connection. Each link starts with a `Noise_XX_25519_ChaChaPoly_BLAKE2s`
//! handshake ([`noise`]); the remote's static key must be a configured peer's or an allowed
//! client's ([`auth`]). Frames are `[u32 LE length][payload]` ([`frame`]); application frames
//! are Noise-sealed in chunks of at most 65535 bytes (layout in [`noise`]). Received frames go
//! out on a bounded channel as [`Inbound`]; requests come in on a bounded channel as
//! [`Outbound`] and wake the loop. Every failure from outside closes that one connection and
//! is counted in [`NetCounters`]; the rest keep being served.
//!
//! Files: `frame` (framing), `noise` (handshake and sealing), `auth` (allow-list), `config`
//! (limits), `admission` (handshake slots by source address), `connection` (one socket), `inbound_queue` (the received-frames channel, bounded in bytes), `peers` (link rule and backoff), `outbound` (send
//! path), `outbound_bytes` (the outbound channel's byte bound), `event_loop` (the thread), `transport` (the handle), `stats` (counters).

mod admission;
mod auth;
mod config;
mod connection;
mod envelope;
mod event_loop;
pub mod frame;
mod inbound_queue;
pub mod noise;
mod outbound;
mod outbound_bytes;
mod peers;
mod stats;
mod transport;

pub use config::{ClientAccess, NetLimits, PeerConfig, TransportConfig};
pub use envelope::{ClientId, Inbound, Outbound, Remote};
pub use noise::{StaticKeypair, generate_static_keypair};
pub use stats::{NetCounters, NetStats, PeerCounters, PeerStats, RejectReason};
pub use transport::{OutboundSender, StartError, Transport, TransportClosed};
