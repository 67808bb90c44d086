//! Checks shared by node and client configs: the member list, public keys, `f`, key files.
//!
//! Invariants of a [`Member`] list that passed [`parse_members`]: ids are exactly `0..n` in
//! order, addresses are distinct, every key is 32 bytes that form a valid, non-weak point, no two
//! members share a key, and `n >= 3f + 1` (the last three via [`Committee::new`], whose error
//! text is reused so the wording is the same everywhere).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use curve25519_dalek::montgomery::MontgomeryPoint;

use super::ConfigError;
use super::file::MemberConfig;
use crate::crypto::{Committee, CommitteeError};
use crate::keys_file::{self, KeyFileError};
use crate::types::{ClusterId, NodeId};

/// A validated `[[members]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub signing_public_key: [u8; 32],
    pub noise_public_key: [u8; 32],
}

/// Parses a 64-hex-character Ed25519 public key (validity is checked by `Committee::new`).
pub(super) fn hex_key(file: &Path, field: &str, text: &str) -> Result<[u8; 32], ConfigError> {
    keys_file::from_hex32(text)
        .ok_or_else(|| ConfigError::field(file, field, "must be 64 hex characters (a 32-byte key)"))
}

/// Parses an X25519 public key and refuses small-order points: a peer "authenticated" by one
/// would prove nothing, since its shared secret is predictable.
pub(super) fn noise_key(file: &Path, field: &str, text: &str) -> Result<[u8; 32], ConfigError> {
    let key = hex_key(file, field, text)?;
    // A clamped scalar is a multiple of the cofactor 8, so it sends exactly the small-order
    // points (and only them) to u = 0.
    if MontgomeryPoint(key).mul_clamped([0x55; 32]).to_bytes() == [0; 32] {
        return Err(ConfigError::field(
            file,
            field,
            "is a small-order (weak) X25519 point and is refused",
        ));
    }
    Ok(key)
}

pub(super) fn socket_addr(file: &Path, field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::field(
            file,
            field,
            format!("'{text}' is not an IP:port address (e.g. 127.0.0.1:7000)"),
        )
    })
}

/// Validates the member list and `f`, and builds the committee.
pub fn parse_members(
    file: &Path,
    cluster: ClusterId,
    raw: &[MemberConfig],
    f: usize,
) -> Result<(Vec<Member>, Committee), ConfigError> {
    // Committee::new computes 3f + 1; refuse an f no cluster could satisfy before it overflows.
    if f > usize::from(u16::MAX) {
        return Err(ConfigError::field(
            file,
            "f",
            "is larger than any supported cluster",
        ));
    }
    let mut members = Vec::with_capacity(raw.len());
    let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
    let mut noise: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, m) in raw.iter().enumerate() {
        let at = |name: &str| format!("members[{i}].{name}");
        if usize::from(m.id) != i {
            return Err(ConfigError::field(
                file,
                at("id"),
                format!(
                    "is {} but must be {i}: ids run 0..n-1, in order, once each",
                    m.id
                ),
            ));
        }
        let addr = socket_addr(file, &at("addr"), &m.addr)?;
        if let Some(j) = addrs.insert(addr, i) {
            return Err(ConfigError::field(
                file,
                at("addr"),
                format!("{addr} is also members[{j}].addr"),
            ));
        }
        let signing = hex_key(file, &at("signing_public_key"), &m.signing_public_key)?;
        let noise_key = noise_key(file, &at("noise_public_key"), &m.noise_public_key)?;
        if let Some(j) = noise.insert(noise_key, i) {
            return Err(ConfigError::field(
                file,
                at("noise_public_key"),
                format!("is also members[{j}].noise_public_key"),
            ));
        }
        members.push(Member {
            id: NodeId(m.id),
            addr,
            signing_public_key: signing,
            noise_public_key: noise_key,
        });
    }
    let keys: Vec<[u8; 32]> = members.iter().map(|m| m.signing_public_key).collect();
    let committee = Committee::new(cluster, &keys, f).map_err(|e| committee_error(file, e))?;
    Ok((members, committee))
}

fn committee_error(file: &Path, e: CommitteeError) -> ConfigError {
    let text = e.to_string();
    match e {
        // The text names `f` and the member count itself.
        CommitteeError::TooSmall { .. } => ConfigError::whole(file, text),
        CommitteeError::TooLarge { .. } => ConfigError::field(file, "members", text),
        CommitteeError::BadKey { node } | CommitteeError::WeakKey { node } => {
            ConfigError::field(file, format!("members[{node}].signing_public_key"), text)
        }
        CommitteeError::DuplicateKey { b, .. } => {
            ConfigError::field(file, format!("members[{b}].signing_public_key"), text)
        }
    }
}

/// Resolves a path from the config against the config file's directory.
pub(super) fn resolve(file: &Path, path: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Reads the secret named by `field`; the error names the field and the resolved path.
pub(super) fn read_key_file(
    file: &Path,
    field: &str,
    path: &Path,
) -> Result<[u8; 32], ConfigError> {
    let resolved = resolve(file, path);
    keys_file::read_secret(&resolved).map_err(|e| {
        let problem = match e {
            KeyFileError::TooOpen { mode } => format!(
                "{}: key file has mode {mode:04o}, readable beyond its owner; refusing it. \
                 Fix with: chmod 600 {}",
                resolved.display(),
                resolved.display()
            ),
            other => format!("{}: {other}", resolved.display()),
        };
        ConfigError::field(file, field, problem)
    })
}

/// The X25519 public key of a static secret (Noise clamps the scalar the same way).
pub fn noise_public_key(secret: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
}
