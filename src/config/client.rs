//! `client.toml`: what `bftctl` and `loadgen` need to reach a cluster — its name, `f`, the
//! members' addresses and public keys — and where the client's own two secrets are.
//!
//! Invariant: a [`LoadedClientConfig`] passed the same member checks as a node config, and its
//! secrets were read from files with mode 0600.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use super::file::MemberConfig;
use super::members::{self, Member};
use crate::crypto::{Committee, Signer};
use crate::types::ClusterId;

/// The TOML shape of `client.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub cluster_name: String,
    pub f: usize,
    /// Relative paths resolve against the config file's directory.
    pub signing_key_path: PathBuf,
    pub noise_key_path: PathBuf,
    pub members: Vec<MemberConfig>,
}

/// A client config that passed every check, with its secrets loaded.
#[derive(Clone)]
pub struct LoadedClientConfig {
    pub path: PathBuf,
    pub cluster: ClusterId,
    pub members: Vec<Member>,
    pub committee: Committee,
    signing_secret: [u8; 32],
    noise_secret: [u8; 32],
}

impl fmt::Debug for LoadedClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secrets.
        write!(f, "LoadedClientConfig {{ path: {:?} }}", self.path)
    }
}

impl ClientConfig {
    /// Reads, parses and validates `path`, and loads the client's secrets.
    pub fn load(path: &Path) -> Result<LoadedClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole(path, format!("cannot read config file: {e}")))?;
        let raw: ClientConfig =
            toml::from_str(&text).map_err(|e| super::load::toml_error(path, &text, &e))?;
        if raw.cluster_name.trim().is_empty() {
            return Err(ConfigError::field(
                path,
                "cluster_name",
                "must not be empty",
            ));
        }
        let cluster = ClusterId::from_name(&raw.cluster_name);
        let (members, committee) = members::parse_members(path, cluster, &raw.members, raw.f)?;
        let f_max = (members.len().max(1) - 1) / 3;
        if raw.f != f_max {
            return Err(ConfigError::field(
                path,
                "f",
                format!(
                    "is {} but a cluster of {} members tolerates f = {f_max}: a client accepts \
                     a result from f + 1 matching nodes, so a smaller f lets fewer nodes than \
                     the cluster's Byzantine bound decide what it reads; set f = {f_max}",
                    raw.f,
                    members.len()
                ),
            ));
        }
        let signing_secret =
            members::read_key_file(path, "signing_key_path", &raw.signing_key_path)?;
        let noise_secret = members::read_key_file(path, "noise_key_path", &raw.noise_key_path)?;
        Ok(LoadedClientConfig {
            path: path.to_path_buf(),
            cluster,
            members,
            committee,
            signing_secret,
            noise_secret,
        })
    }
}

impl LoadedClientConfig {
    pub fn signer(&self) -> Signer {
        Signer::new(self.signing_secret, self.cluster)
    }

    pub fn noise_secret(&self) -> &[u8; 32] {
        &self.noise_secret
    }
}
