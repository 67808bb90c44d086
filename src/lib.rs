//! bftd: a Byzantine-fault-tolerant replicated key-value store.
//!
//! The crate is laid out the way the node is built (see `ARCHITECTURE` in the README):
//! - [`types`] and [`codec`]: the protocol's data and its one validated wire/disk encoding;
//! - [`crypto`]: Ed25519 keys, domain-separated signing, the batch verifier;
//! - [`consensus`]: the sans-I/O chained-HotStuff core (no I/O, no clock, no RNG);
//! - [`replica`]: the one driver of the core (tickets, timers, state-transfer decisions), with
//!   no I/O either: the node and the simulator are shells around it;
//! - [`api`]: the client's vocabulary (operations, replies, their encodings and limits);
//! - [`storage`] and [`kv`]: the crash-safe storage engine and the replicated KV state machine;
//! - [`sim`]: the deterministic simulator that drives many replicas with faults and checks
//!   safety, replies and state digests;
//! - [`adversary`]: the Byzantine behaviours the simulator and the test-only Byzantine daemon
//!   (feature `byzantine`) share; [`util`]: the seeded RNG and other small shared parts;
//! - [`client`]: the client library (f + 1 matching replies) and the `bftctl` command.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod adversary;
pub mod api;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod consensus;
pub mod crypto;
pub mod keys_file;
pub mod kv;
pub mod net;
pub mod node;
pub mod replica;
pub mod sim;
pub mod storage;
pub mod types;
pub mod util;
pub mod wire;
