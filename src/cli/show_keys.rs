//! `bftd show-keys FILE...`: the public keys of existing key files, for a cluster's
//! `[[members]]` or `[clients]` entries (e.g. after `bftd keygen`, when its output is lost).
//!
//! A key file holds one 32-byte secret in hex; which kind it is comes from its name
//! (`*.signing.key`: Ed25519, `*.noise.key`: X25519), or from `--signing` / `--noise`. A file is
//! read with the same checks the node applies (mode 0600, 64 hex characters), and only the
//! public half is printed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

use crate::config::noise_public_key;
use crate::crypto::Signer;
use crate::keys_file::{read_secret, to_hex};
use crate::types::ClusterId;

const HELP: &str = "\
bftd show-keys: print the public keys of existing key files

USAGE:
    bftd show-keys [OPTIONS] FILE...

OPTIONS:
    --signing       Read every FILE as an Ed25519 signing key
    --noise         Read every FILE as an X25519 Noise static key
    --json          Print one JSON array instead of text
    -h, --help      Print this help

Without --signing or --noise, the kind comes from the file name: NAME.signing.key or
NAME.noise.key (as 'bftd keygen' and 'bftd testnet' write them). Prints, per file,
'FILE: signing_public_key = \"HEX\"' or 'FILE: noise_public_key = \"HEX\"'. Key files must
have mode 0600, like the node requires. Exit status: 0 ok, 1 unreadable key, 2 usage mistake.
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Signing,
    Noise,
}

impl Kind {
    fn of(path: &Path) -> Option<Kind> {
        let name = path.file_name()?.to_str()?;
        if name.ends_with(".signing.key") {
            Some(Kind::Signing)
        } else if name.ends_with(".noise.key") {
            Some(Kind::Noise)
        } else {
            None
        }
    }

    fn field(self) -> &'static str {
        match self {
            Kind::Signing => "signing_public_key",
            Kind::Noise => "noise_public_key",
        }
    }
}

struct Spec {
    files: Vec<(PathBuf, Kind)>,
    json: bool,
}

fn parse(args: Vec<OsString>) -> Result<Option<Spec>, String> {
    let (mut forced, mut json, mut paths) = (None, false, Vec::new());
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("signing") => forced = Some(Kind::Signing),
            Long("noise") => forced = Some(Kind::Noise),
            Long("json") => json = true,
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Value(v) => paths.push(PathBuf::from(v)),
            other => {
                return Err(format!(
                    "{}; see 'bftd show-keys --help'",
                    other.unexpected()
                ));
            }
        }
    }
    if paths.is_empty() {
        return Err("no key file given; see 'bftd show-keys --help'".into());
    }
    let files = paths
        .into_iter()
        .map(|p| match forced.or_else(|| Kind::of(&p)) {
            Some(kind) => Ok((p, kind)),
            None => Err(format!(
                "{}: cannot tell the key's kind from its name; pass --signing or --noise; \
                 see 'bftd show-keys --help'",
                p.display()
            )),
        })
        .collect::<Result<_, String>>()?;
    Ok(Some(Spec { files, json }))
}

fn public_key(path: &Path, kind: Kind) -> Result<[u8; 32], String> {
    let secret = read_secret(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match kind {
        Kind::Signing => Signer::new(secret, ClusterId::ZERO).public_key(),
        Kind::Noise => noise_public_key(&secret),
    })
}

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let Some(spec) = parse(args)? else {
        return Ok(());
    };
    let mut rows = Vec::with_capacity(spec.files.len());
    for (path, kind) in &spec.files {
        rows.push((path, *kind, to_hex(&public_key(path, *kind)?)));
    }
    if spec.json {
        use crate::client::cli::json::Json;
        let list = rows
            .iter()
            .map(|(path, kind, hex)| {
                Json::obj(vec![
                    ("file", Json::str(path.display().to_string())),
                    ("field", Json::str(kind.field())),
                    ("public_key", Json::str(hex)),
                ])
            })
            .collect();
        println!("{}", Json::Arr(list).render());
    } else {
        for (path, kind, hex) in rows {
            println!("{}: {} = \"{hex}\"", path.display(), kind.field());
        }
    }
    Ok(())
}
