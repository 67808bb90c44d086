//! Node and client configuration files (TOML): parse, validate, load secrets, convert.
//!
//! - [`file`]: the TOML shape, with defaults and `deny_unknown_fields`;
//! - [`members`]: checks shared by node and client files (member list, keys, `f`, key files);
//! - [`load`]: [`NodeConfig::load`] and the [`LoadedConfig`] conversions;
//! - [`client`]: `client.toml` for `bftctl` and `loadgen`.
//!
//! Invariant: every problem with a file is a [`ConfigError`] reading `FILE: field: problem`;
//! nothing here panics on what a file says. Relative paths inside a config file resolve against
//! the directory of that file, so a cluster directory works from any working directory.

pub mod client;
mod error;
pub mod file;
pub mod load;
pub mod members;
pub mod render;

#[cfg(test)]
mod tests;

pub use client::{ClientConfig, LoadedClientConfig};
pub use error::ConfigError;
pub use file::{
    ClientAllow, ClientKeysConfig, ClientsConfig, ConsensusConfig, LimitsConfig, MemberConfig,
    NodeConfig,
};
pub use load::{AllowedClient, LoadedConfig};
pub use members::{Member, noise_public_key};
