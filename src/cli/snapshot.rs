//! `bftd snapshot save|restore`: offline backups of a node's replicated state.
//!
//! A backup file (`node::backup`) is a committed block header and a KV snapshot file (its
//! own blake3 checksum and a state digest recomputed on install). Restore also takes a
//! node's periodic snapshot `snap-H.snap` (with its `snap-H.offer` next to it, which names
//! the block), and a file `bftctl snapshot save` downloaded from a running cluster. Restore
//! checks all of it before it replaces anything, and only ever replaces `state/`: the safety
//! data in `consensus/` stays, so a restored node cannot forget a vote it cast. Both need the
//! node stopped (the engines' directory lock enforces it).

use std::ffi::OsString;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

use crate::keys_file::to_hex;
use crate::kv::KvStore;
use crate::node::backup::{self, KV_OFFSET, Source};
use crate::node::block_store::{COMMITTED_META_KEY, decode_header, encode_header};
use crate::node::data_dir::{DataDir, offline_engine_options as options};
use crate::node::snapshots::read_header;

const HELP: &str = "\
bftd snapshot: offline backup and restore of a node's state

USAGE:
    bftd snapshot save --data-dir DIR FILE
    bftd snapshot restore --data-dir DIR FILE

save writes the state of the stopped node at DIR to FILE (atomically). restore replaces the
state of the stopped node at DIR with FILE after verifying its checksum and state digest; it
refuses a backup older than the state already there, and it never touches DIR/consensus (the
node's safety data). After a restore, start the node: it fetches the blocks after the backup
from its peers.

FILE for restore is a backup file (from 'bftd snapshot save' or, from a running cluster,
'bftctl snapshot save FILE'), or a periodic snapshot DATA_DIR/snapshots/snap-H.snap with its
snap-H.offer next to it (the offer names the block the state is after).
";

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let mut parser = lexopt::Parser::from_args(args);
    let (mut action, mut dir, mut file) = (None::<String>, None::<PathBuf>, None::<PathBuf>);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("data-dir") => {
                dir = Some(parser.value().map_err(|e| e.to_string())?.into());
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(());
            }
            Value(v) if action.is_none() => action = Some(v.to_string_lossy().into()),
            Value(v) if file.is_none() => file = Some(v.into()),
            other => {
                return Err(format!(
                    "{}; see 'bftd snapshot --help'",
                    other.unexpected()
                ));
            }
        }
    }
    let usage = "usage: bftd snapshot save|restore --data-dir DIR FILE; see 'bftd snapshot --help'";
    let (Some(action), Some(dir), Some(file)) = (action, dir, file) else {
        return Err(usage.into());
    };
    match action.as_str() {
        "save" => save(&dir, &file),
        "restore" => restore(&dir, &file),
        _ => Err(usage.into()),
    }
}

fn save(dir: &Path, file: &Path) -> Result<(), String> {
    let state = DataDir::new(dir).state();
    if !state.is_dir() {
        return Err(format!(
            "{}: no state/ here; is it a node's data_dir?",
            dir.display()
        ));
    }
    let kv = KvStore::open(&state, options()).map_err(|e| e.to_string())?;
    let header = match kv.meta(COMMITTED_META_KEY) {
        Some(bytes) => decode_header(&bytes).ok_or("the committed-block record is corrupt")?,
        None => {
            return Err("the state is empty (nothing committed yet): nothing to back up".into());
        }
    };
    let kv_file = file.with_extension("kvsnap.tmp");
    let info = kv.save_snapshot(&kv_file).map_err(|e| e.to_string())?;
    let written = backup::write(file, &header, &kv_file);
    let _ = std::fs::remove_file(&kv_file);
    written.map_err(|e| format!("{}: {e}", file.display()))?;
    println!(
        "saved height {} ({} entries, state digest {}) to {}",
        info.applied_height,
        info.entry_count,
        to_hex(&info.state_digest),
        file.display()
    );
    Ok(())
}

fn restore(dir: &Path, file: &Path) -> Result<(), String> {
    let shown = file.display();
    let source = backup::identify(file)?;
    let header = *source.header();
    if !DataDir::new(dir).consensus().is_dir() {
        eprintln!(
            "bftd snapshot: warning: {} has no consensus/ (safety data); if this node id ever \
             voted before, do not start it until the cluster is past its last round",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The KV snapshot to install: a periodic snapshot is one already (installing reads it
    // whole before replacing anything, so it may even live in DIR/snapshots); a backup's is
    // copied out from behind its header.
    let (kv_file, copied) = match &source {
        Source::Periodic { offer, .. } => {
            let (height, digest) = read_header(file).map_err(|e| format!("{shown}: {e}"))?;
            if height != offer.height || digest != offer.state_digest {
                return Err(format!(
                    "{shown}: the snapshot is at height {height} with state digest {}, but its \
                     offer file says height {} with {}",
                    to_hex(&digest[..4]),
                    offer.height,
                    to_hex(&offer.state_digest[..4])
                ));
            }
            (file.to_path_buf(), false)
        }
        Source::Backup { .. } => {
            let kv_file = dir.join("restore.kvsnap.tmp");
            let copy = || -> std::io::Result<()> {
                let mut input = std::fs::File::open(file)?;
                input.seek(SeekFrom::Start(KV_OFFSET))?;
                let mut out = std::fs::File::create(&kv_file)?;
                std::io::copy(&mut input, &mut out)?;
                out.sync_all()
            };
            copy().map_err(|e| format!("{}: {e}", kv_file.display()))?;
            // Checked before anything is replaced (install verifies the rest).
            match read_header(&kv_file) {
                Ok((height, _)) if height == header.height => {}
                Ok((height, _)) => {
                    let _ = std::fs::remove_file(&kv_file);
                    return Err(format!(
                        "{shown}: the snapshot is at height {height} but its header says {}",
                        header.height
                    ));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&kv_file);
                    return Err(format!("{shown}: too short to hold a snapshot: {e}"));
                }
            }
            (kv_file, true)
        }
    };
    let result = (|| {
        let mut kv =
            KvStore::open(&DataDir::new(dir).state(), options()).map_err(|e| e.to_string())?;
        let meta = encode_header(&header);
        let info = kv
            .install_snapshot_with_meta(&kv_file, &[(COMMITTED_META_KEY, &meta)])
            .map_err(|e| format!("{shown}: {e}"))?;
        if info.applied_height != header.height {
            return Err(format!(
                "{shown}: the snapshot is at height {} but its header says {}",
                info.applied_height, header.height
            ));
        }
        Ok(info)
    })();
    if copied {
        let _ = std::fs::remove_file(&kv_file);
    }
    let info = result?;
    println!(
        "restored height {} ({} entries, state digest {}) into {}",
        info.applied_height,
        info.entry_count,
        to_hex(&info.state_digest),
        dir.display()
    );
    Ok(())
}
