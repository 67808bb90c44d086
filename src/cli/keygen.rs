//! `bftd keygen`: one node's or client's key pair — an Ed25519 signing key and an X25519 Noise
//! static key — written as `NAME.signing.key` and `NAME.noise.key` (mode 0600), public keys
//! printed in hex for the cluster's member list.
//!
//! Invariant: keygen never replaces an existing key file (a lost secret cannot be recovered);
//! `bftd testnet --force` is the only writer that overwrites.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

use crate::config::noise_public_key;
use crate::crypto::Signer;
use crate::keys_file::{self, to_hex};
use crate::net::generate_static_keypair;
use crate::types::ClusterId;

const HELP: &str = "\
bftd keygen: make one key pair (Ed25519 signing + X25519 Noise static key)

USAGE:
    bftd keygen [OPTIONS]

OPTIONS:
    --out DIR       Directory to write the key files into [default: .]
    --name NAME     File name stem: NAME.signing.key, NAME.noise.key [default: node]
    -h, --help      Print this help

Key files hold 64 hex characters and are written with mode 0600. Existing files are never
replaced. The public keys are printed for the cluster's [[members]] or [clients] entries.
";

/// The two public keys of a freshly written key pair.
#[derive(Debug, Clone, Copy)]
pub struct PublicKeys {
    pub signing: [u8; 32],
    pub noise: [u8; 32],
}

/// Paths of the key files of `name` in `dir`.
pub fn key_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.signing.key")),
        dir.join(format!("{name}.noise.key")),
    )
}

/// Generates a key pair from OS randomness and writes both secrets (0600, atomically).
pub fn write_key_pair(dir: &Path, name: &str) -> Result<PublicKeys, String> {
    let (signing_path, noise_path) = key_paths(dir, name);
    let signing_secret = keys_file::new_signing_secret()?;
    let noise = generate_static_keypair().map_err(|e| format!("cannot make a Noise key: {e}"))?;
    // Derive rather than trust snow's public half, so a config check recomputes the same value.
    let noise_public = noise_public_key(&noise.private);
    keys_file::write_secret(&signing_path, &signing_secret)
        .map_err(|e| format!("{}: {e}", signing_path.display()))?;
    keys_file::write_secret(&noise_path, &noise.private)
        .map_err(|e| format!("{}: {e}", noise_path.display()))?;
    Ok(PublicKeys {
        signing: Signer::new(signing_secret, ClusterId::ZERO).public_key(),
        noise: noise_public,
    })
}

fn parse(args: Vec<OsString>) -> Result<Option<(PathBuf, String)>, String> {
    let mut out = PathBuf::from(".");
    let mut name = String::from("node");
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("out") => out = parser.value().map_err(|e| e.to_string())?.into(),
            Long("name") => {
                name = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .into_string()
                    .map_err(|_| "--name must be valid UTF-8".to_string())?;
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            other => return Err(format!("{}; see 'bftd keygen --help'", other.unexpected())),
        }
    }
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!(
            "--name '{name}' must be a plain file name stem; see 'bftd keygen --help'"
        ));
    }
    Ok(Some((out, name)))
}

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let Some((out, name)) = parse(args)? else {
        return Ok(());
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (signing_path, noise_path) = key_paths(&out, &name);
    for p in [&signing_path, &noise_path] {
        if p.exists() {
            return Err(format!(
                "{}: already exists; not replacing a key",
                p.display()
            ));
        }
    }
    let keys = write_key_pair(&out, &name)?;
    println!("wrote {} (mode 0600)", signing_path.display());
    println!("wrote {} (mode 0600)", noise_path.display());
    println!("signing_public_key = \"{}\"", to_hex(&keys.signing));
    println!("noise_public_key = \"{}\"", to_hex(&keys.noise));
    Ok(())
}
