//! The TOML shape of a node's config file, exactly as written, before validation.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored setting.
//! Every optional field defaults to the value the library uses when no config is given
//! (`CoreConfig::default()`, `NetLimits::default()`), so the two can never drift apart.

use std::path::PathBuf;

use serde::Deserialize;

use crate::consensus::CoreConfig;
use crate::net::NetLimits;

/// One node's config file (`nodeN.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Hashed into the cluster id that every signature and handshake is bound to.
    pub cluster_name: String,
    pub node_id: u16,
    /// `IP:port` to listen on for peers and clients.
    pub listen_addr: String,
    /// Relative paths resolve against the config file's directory.
    pub data_dir: PathBuf,
    pub signing_key_path: PathBuf,
    pub noise_key_path: PathBuf,
    /// Byzantine members tolerated; needs `members.len() >= 3f + 1`.
    pub f: usize,
    pub members: Vec<MemberConfig>,
    pub clients: ClientsConfig,
    #[serde(default)]
    pub consensus: ConsensusConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// One `[[members]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u16,
    pub addr: String,
    /// Ed25519, 64 hex characters.
    pub signing_public_key: String,
    /// X25519 (Noise static key), 64 hex characters.
    pub noise_public_key: String,
}

/// `[clients]`: deliberately required, so opening a cluster to any client is a written choice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    pub allow: ClientAllow,
}

/// `allow = "any"` or `allow = [{ signing_public_key = "..", noise_public_key = ".." }, ..]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "clients.allow must be \"any\" or a list of { signing_public_key, noise_public_key }"
)]
pub enum ClientAllow {
    Keyword(String),
    List(Vec<ClientKeysConfig>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeysConfig {
    pub signing_public_key: String,
    pub noise_public_key: String,
}

/// `[consensus]`: mirrors [`CoreConfig`] field by field.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    pub round_timeout_base_ms: u64,
    pub round_timeout_max_ms: u64,
    pub block_requests_max: usize,
    pub block_bytes_max: usize,
    pub mempool_requests_max: usize,
    pub mempool_bytes_max: usize,
    pub round_window: u64,
    pub committed_blocks_retained: usize,
    pub uncommitted_blocks_max: usize,
    pub orphan_blocks_max: usize,
    pub sync_blocks_max: u32,
    pub sync_retry_ms: u64,
    pub committed_requests_remembered: usize,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        let c = CoreConfig::default();
        Self {
            round_timeout_base_ms: c.round_timeout_base_ms,
            round_timeout_max_ms: c.round_timeout_max_ms,
            block_requests_max: c.block_requests_max,
            block_bytes_max: c.block_bytes_max,
            mempool_requests_max: c.mempool_requests_max,
            mempool_bytes_max: c.mempool_bytes_max,
            round_window: c.round_window,
            committed_blocks_retained: c.committed_blocks_retained,
            uncommitted_blocks_max: c.uncommitted_blocks_max,
            orphan_blocks_max: c.orphan_blocks_max,
            sync_blocks_max: c.sync_blocks_max,
            sync_retry_ms: c.sync_retry_ms,
            committed_requests_remembered: c.committed_requests_remembered,
        }
    }
}

impl ConsensusConfig {
    pub fn to_core_config(&self) -> CoreConfig {
        CoreConfig {
            round_timeout_base_ms: self.round_timeout_base_ms,
            round_timeout_max_ms: self.round_timeout_max_ms,
            block_requests_max: self.block_requests_max,
            block_bytes_max: self.block_bytes_max,
            mempool_requests_max: self.mempool_requests_max,
            mempool_bytes_max: self.mempool_bytes_max,
            round_window: self.round_window,
            committed_blocks_retained: self.committed_blocks_retained,
            uncommitted_blocks_max: self.uncommitted_blocks_max,
            orphan_blocks_max: self.orphan_blocks_max,
            sync_blocks_max: self.sync_blocks_max,
            sync_retry_ms: self.sync_retry_ms,
            committed_requests_remembered: self.committed_requests_remembered,
        }
    }
}

/// `[limits]`: the net thread's bounds; mirrors [`NetLimits`] field by field.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_frame_bytes: usize,
    pub write_buffer_bytes_max: usize,
    pub handshakes_max: usize,
    pub connections_max: usize,
    pub handshake_timeout_ms: u64,
    pub reconnect_backoff_ms_min: u64,
    pub reconnect_backoff_ms_max: u64,
    pub inbound_channel_frames_max: usize,
    pub outbound_channel_frames_max: usize,
    pub read_bytes_per_event_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = NetLimits::default();
        Self {
            max_frame_bytes: l.max_frame_bytes,
            write_buffer_bytes_max: l.write_buffer_bytes_max,
            handshakes_max: l.handshakes_max,
            connections_max: l.connections_max,
            handshake_timeout_ms: l.handshake_timeout_ms,
            reconnect_backoff_ms_min: l.reconnect_backoff_ms_min,
            reconnect_backoff_ms_max: l.reconnect_backoff_ms_max,
            inbound_channel_frames_max: l.inbound_channel_frames_max,
            outbound_channel_frames_max: l.outbound_channel_frames_max,
            read_bytes_per_event_max: l.read_bytes_per_event_max,
        }
    }
}

impl LimitsConfig {
    pub fn to_net_limits(&self) -> NetLimits {
        NetLimits {
            max_frame_bytes: self.max_frame_bytes,
            write_buffer_bytes_max: self.write_buffer_bytes_max,
            handshakes_max: self.handshakes_max,
            connections_max: self.connections_max,
            handshake_timeout_ms: self.handshake_timeout_ms,
            reconnect_backoff_ms_min: self.reconnect_backoff_ms_min,
            reconnect_backoff_ms_max: self.reconnect_backoff_ms_max,
            inbound_channel_frames_max: self.inbound_channel_frames_max,
            outbound_channel_frames_max: self.outbound_channel_frames_max,
            read_bytes_per_event_max: self.read_bytes_per_event_max,
        }
    }
}
