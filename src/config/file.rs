//! The TOML shape of a node's config file, exactly as written, before validation.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored setting.
//! Every optional field defaults to the value the library uses when no config is given
//! (`CoreConfig::default()`, `NetLimits::default()`), so the two can never drift apart.

use std::path::PathBuf;

use serde::Deserialize;

use crate::consensus::CoreConfig;
use crate::net::NetLimits;
use crate::node::settings::{FaultSettings, NodeSettings};

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
    #[serde(default)]
    pub node: NodeSettings,
    #[serde(default)]
    pub faults: FaultSettings,
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

/// `[consensus]`: the core's tunables, read straight into [`CoreConfig`] (its `Default` fills
/// what the file leaves out; unknown fields are errors).
pub type ConsensusConfig = CoreConfig;

/// `[limits]`: the net thread's bounds, read straight into [`NetLimits`].
pub type LimitsConfig = NetLimits;
