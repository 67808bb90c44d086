//! Loading a node config: read, parse, validate every field, load and check the secrets.
//!
//! Invariant: a [`LoadedConfig`] exists only if every check passed, so the conversions to
//! [`CoreConfig`], [`Committee`], [`ClientPolicy`] and [`TransportConfig`] cannot fail. Nothing
//! here panics on what the file says; every problem is a [`ConfigError`] naming file and field.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::file::{ClientAllow, NodeConfig};
use super::members::{self, Member};
use crate::consensus::{
    BLOCK_TIME_AHEAD_MAX_MS, BLOCK_TIME_AHEAD_MIN_MS, CoreConfig, ROOT_LINGER_TIMEOUT_SHARE,
};
use crate::crypto::{ClientPolicy, Committee, Signer};
use crate::net::{ClientAccess, NetLimits, PeerConfig, TransportConfig};
use crate::types::{ClusterId, NodeId};

/// A client allowed by `[clients] allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedClient {
    pub signing_public_key: [u8; 32],
    pub noise_public_key: [u8; 32],
}

/// A node config that passed every check, with its secrets loaded.
#[derive(Clone)]
pub struct LoadedConfig {
    /// The config file this came from (relative paths in it were resolved against its dir).
    pub path: PathBuf,
    pub raw: NodeConfig,
    pub cluster: ClusterId,
    pub node_id: NodeId,
    pub listen_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub members: Vec<Member>,
    /// `None` means `allow = "any"`.
    pub allowed_clients: Option<Vec<AllowedClient>>,
    committee: Committee,
    client_policy: ClientPolicy,
    signing_secret: [u8; 32],
    noise_secret: [u8; 32],
}

impl fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secrets.
        write!(
            f,
            "LoadedConfig {{ path: {:?}, node_id: {} }}",
            self.path, self.node_id
        )
    }
}

impl NodeConfig {
    /// Parses TOML text; `file` is only used to name errors.
    pub fn parse(file: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| toml_error(file, text, &e))
    }

    /// Reads, parses and validates `path`, and loads this node's secrets.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole(path, format!("cannot read config file: {e}")))?;
        let raw = NodeConfig::parse(path, &text)?;
        raw.validate(path)
    }

    /// Checks every field and loads the secrets the config points at.
    pub fn validate(self, file: &Path) -> Result<LoadedConfig, ConfigError> {
        if self.cluster_name.trim().is_empty() {
            return Err(ConfigError::field(
                file,
                "cluster_name",
                "must not be empty",
            ));
        }
        let cluster = ClusterId::from_name(&self.cluster_name);
        let (members, committee) = members::parse_members(file, cluster, &self.members, self.f)?;
        let node_id = NodeId(self.node_id);
        let Some(me) = members.get(node_id.index()) else {
            return Err(ConfigError::field(
                file,
                "node_id",
                format!(
                    "{} is not among the {} members (ids 0..{})",
                    self.node_id,
                    members.len(),
                    members.len().saturating_sub(1)
                ),
            ));
        };
        let listen_addr = members::socket_addr(file, "listen_addr", &self.listen_addr)?;
        let (allowed_clients, client_policy) = self.parse_clients(file, &members)?;
        self.check_consensus(file)?;
        self.node
            .validate(self.consensus.committed_blocks_retained)
            .and_then(|()| self.faults.validate())
            .map_err(|(field, problem)| ConfigError::field(file, field, problem))?;
        let signing_secret =
            members::read_key_file(file, "signing_key_path", &self.signing_key_path)?;
        let noise_secret = members::read_key_file(file, "noise_key_path", &self.noise_key_path)?;
        check_own_keys(file, me, &signing_secret, &noise_secret)?;
        let loaded = LoadedConfig {
            path: file.to_path_buf(),
            cluster,
            node_id,
            listen_addr,
            data_dir: members::resolve(file, &self.data_dir),
            members,
            allowed_clients,
            committee,
            client_policy,
            signing_secret,
            noise_secret,
            raw: self,
        };
        // The transport's own invariants (limits, client keys vs peer keys), worded by section.
        loaded
            .transport_config()
            .validate()
            .map_err(|e| ConfigError::whole(file, e))?;
        Ok(loaded)
    }

    fn parse_clients(
        &self,
        file: &Path,
        members: &[Member],
    ) -> Result<(Option<Vec<AllowedClient>>, ClientPolicy), ConfigError> {
        let list = match &self.clients.allow {
            ClientAllow::Keyword(k) if k == "any" => return Ok((None, ClientPolicy::Any)),
            ClientAllow::Keyword(k) => {
                return Err(ConfigError::field(
                    file,
                    "clients.allow",
                    format!("'{k}' is neither \"any\" nor a list of client keys"),
                ));
            }
            ClientAllow::List(list) => list,
        };
        let mut allowed = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            let at = |name: &str| format!("clients.allow[{i}].{name}");
            let signing = members::hex_key(file, &at("signing_public_key"), &c.signing_public_key)?;
            let noise = members::noise_key(file, &at("noise_public_key"), &c.noise_public_key)?;
            if members.iter().any(|m| m.noise_public_key == noise) {
                return Err(ConfigError::field(
                    file,
                    at("noise_public_key"),
                    "is also a member's noise_public_key",
                ));
            }
            allowed.push(AllowedClient {
                signing_public_key: signing,
                noise_public_key: noise,
            });
        }
        let keys: Vec<[u8; 32]> = allowed.iter().map(|c| c.signing_public_key).collect();
        let policy = ClientPolicy::allow_list(&keys)
            .map_err(|e| ConfigError::field(file, "clients.allow", e))?;
        Ok((Some(allowed), policy))
    }

    fn check_consensus(&self, file: &Path) -> Result<(), ConfigError> {
        let c = &self.consensus;
        let nonzero = [
            ("round_timeout_base_ms", c.round_timeout_base_ms),
            ("block_requests_max", c.block_requests_max as u64),
            ("block_bytes_max", c.block_bytes_max as u64),
            ("mempool_requests_max", c.mempool_requests_max as u64),
            ("mempool_bytes_max", c.mempool_bytes_max as u64),
            ("round_window", c.round_window),
            ("uncommitted_blocks_max", c.uncommitted_blocks_max as u64),
            ("sync_blocks_max", u64::from(c.sync_blocks_max)),
            ("sync_retry_ms", c.sync_retry_ms),
            ("sync_response_bytes_max", c.sync_response_bytes_max as u64),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::field(
                file,
                format!("consensus.{name}"),
                "must be above zero",
            ));
        }
        if c.round_timeout_max_ms < c.round_timeout_base_ms {
            return Err(ConfigError::field(
                file,
                "consensus.round_timeout_max_ms",
                "is below consensus.round_timeout_base_ms",
            ));
        }
        if c.root_linger_ms > c.round_timeout_base_ms / ROOT_LINGER_TIMEOUT_SHARE {
            return Err(ConfigError::field(
                file,
                "consensus.root_linger_ms",
                format!(
                    "is {}, must be at most a quarter of consensus.round_timeout_base_ms ({} \
                     ms): the other members would time out a leader that waits that long",
                    c.root_linger_ms, c.round_timeout_base_ms
                ),
            ));
        }
        let ahead = c.block_time_ahead_max_ms;
        if !(BLOCK_TIME_AHEAD_MIN_MS..=BLOCK_TIME_AHEAD_MAX_MS).contains(&ahead) {
            return Err(ConfigError::field(
                file,
                "consensus.block_time_ahead_max_ms",
                format!(
                    "is {ahead}, must be between {BLOCK_TIME_AHEAD_MIN_MS} and \
                     {BLOCK_TIME_AHEAD_MAX_MS} (how far ahead of a voter's clock a block's \
                     timestamp may be; it must exceed the clock skew between the nodes)"
                ),
            ));
        }
        self.check_sync_fits_a_frame(file)
    }

    /// A sync response holds up to `sync_response_bytes_max`, and always two blocks (see
    /// `BlockTree::chain_segment`): either must fit one peer frame, or the sender's transport
    /// drops the response and a lagging node never catches up (issue 13 item 6).
    fn check_sync_fits_a_frame(&self, file: &Path) -> Result<(), ConfigError> {
        let c = &self.consensus;
        let frame = self.limits.max_frame_bytes;
        let block = c.block_bytes_max.saturating_add(SYNC_BLOCK_ALLOWANCE_BYTES);
        let (field, needed) = if c.sync_response_bytes_max >= block.saturating_mul(2) {
            ("sync_response_bytes_max", c.sync_response_bytes_max)
        } else {
            ("block_bytes_max", block.saturating_mul(2))
        };
        if needed.saturating_add(SYNC_FRAME_MARGIN_BYTES) > frame {
            return Err(ConfigError::field(
                file,
                format!("consensus.{field}"),
                format!(
                    "makes sync responses of up to {needed} bytes (the larger of \
                     consensus.sync_response_bytes_max = {} and two blocks of \
                     consensus.block_bytes_max = {}), which must fit limits.max_frame_bytes = \
                     {frame} with {SYNC_FRAME_MARGIN_BYTES} bytes to spare",
                    c.sync_response_bytes_max, c.block_bytes_max
                ),
            ));
        }
        Ok(())
    }
}

/// What a block counts for beyond its payload in a sync response (`consensus::sync_bytes`).
const SYNC_BLOCK_ALLOWANCE_BYTES: usize = 4096;
/// Room left in a frame for the encoding's own overhead around a sync response.
const SYNC_FRAME_MARGIN_BYTES: usize = 64 * 1024;

/// The node's key files must hold the secrets of its own member entry, or its peers would
/// reject every message it signs and every handshake it makes.
fn check_own_keys(
    file: &Path,
    me: &Member,
    signing_secret: &[u8; 32],
    noise_secret: &[u8; 32],
) -> Result<(), ConfigError> {
    let i = me.id.index();
    if Signer::new(*signing_secret, ClusterId::ZERO).public_key() != me.signing_public_key {
        return Err(ConfigError::field(
            file,
            "signing_key_path",
            format!("the key file does not match members[{i}].signing_public_key"),
        ));
    }
    if members::noise_public_key(noise_secret) != me.noise_public_key {
        return Err(ConfigError::field(
            file,
            "noise_key_path",
            format!("the key file does not match members[{i}].noise_public_key"),
        ));
    }
    Ok(())
}

/// A TOML error as `FILE: line L: `the line`: what is wrong` (toml's message names the field
/// for unknown and missing fields; the quoted line names it for type errors).
pub(super) fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return ConfigError::whole(file, message);
    };
    // `get` rather than slicing: a span off a char boundary must not panic.
    let before = text.get(..span.start.min(text.len())).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    ConfigError::whole(file, format!("line {line_no}: `{line}`: {message}"))
}

impl LoadedConfig {
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn signer(&self) -> Signer {
        Signer::new(self.signing_secret, self.cluster)
    }

    pub fn core_config(&self) -> CoreConfig {
        self.raw.consensus.clone()
    }

    pub fn client_policy(&self) -> &ClientPolicy {
        &self.client_policy
    }

    /// This node's X25519 static secret (also inside [`Self::transport_config`]).
    pub fn noise_secret(&self) -> &[u8; 32] {
        &self.noise_secret
    }

    pub fn transport_config(&self) -> TransportConfig {
        let peers = self
            .members
            .iter()
            .filter(|m| m.id != self.node_id)
            .map(|m| PeerConfig {
                id: m.id,
                addr: m.addr,
                static_public_key: m.noise_public_key,
            })
            .collect();
        let clients = match &self.allowed_clients {
            None => ClientAccess::Any,
            Some(list) => {
                ClientAccess::AllowList(list.iter().map(|c| c.noise_public_key).collect())
            }
        };
        TransportConfig {
            self_id: self.node_id,
            listen_addr: self.listen_addr,
            static_private_key: self.noise_secret,
            peers,
            clients,
            prologue: self.cluster.0.to_vec(),
            refusal_notice: crate::wire::client::encode_node_frame(
                &crate::wire::NodeFrame::LinkRefused {
                    reason: crate::wire::Refusal::NotAuthorised,
                },
            ),
            limits: NetLimits {
                client_frame_bytes_max: self.client_frame_bytes_max(),
                ..self.raw.limits.clone()
            },
        }
    }

    /// The largest valid request's frame: ops within the verifier's limit and within a block.
    fn client_frame_bytes_max(&self) -> usize {
        let ops_bytes_max = crate::crypto::VerifierLimits::default()
            .request_ops_bytes_max
            .min(self.raw.consensus.block_bytes_max);
        crate::wire::client::submit_frame_bytes_max(ops_bytes_max)
    }
}
