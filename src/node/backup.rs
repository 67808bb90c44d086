//! The backup file: what `bftd snapshot save` and `bftctl snapshot save` write and
//! `bftd snapshot restore` reads, and the reading of a node's periodic snapshots
//! (`snapshots/snap-H.snap` with its `snap-H.offer`) as the same thing.
//!
//! Layout: `BFTDBAK1` (8 bytes), the committed block header the state is after (80 bytes,
//! `block_store::encode_header`: id, parent, round, height), then a KV snapshot file
//! (`kv::snapshot`, self-checking: its own blake3 and a state digest recomputed from the
//! entries). A periodic snapshot is the KV snapshot file alone; the header comes from its
//! `.offer` file (the rkyv `SnapshotOffer`).
//!
//! Invariant: a backup file is written under a temporary name, fsynced, renamed and its
//! directory fsynced, so a file under the final name is always complete; [`FileTarget`]
//! (downloads) renames only after the snapshot in it verified.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::block_store::{decode_header, encode_header};
use crate::client::backup::{BackupTarget, VerifiedSnapshot};
use crate::codec;
use crate::kv::snapshot::verify_file_at;
use crate::storage::fs::{parent_dir, tmp_path};
use crate::types::BlockHeader;
use crate::wire::SnapshotOffer;

pub const MAGIC: &[u8; 8] = b"BFTDBAK1";
/// The KV snapshot file's magic (`kv::snapshot`): a periodic snapshot starts with it.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"BFTDSNP1";
pub const HEADER_BYTES: usize = 80;
/// Where the KV snapshot starts in a backup file.
pub const KV_OFFSET: u64 = (MAGIC.len() + HEADER_BYTES) as u64;
/// Largest `.offer` file read.
const OFFER_BYTES_MAX: usize = 4096;

/// What a file handed to `restore` turned out to be.
#[derive(Debug)]
pub enum Source {
    /// A backup file: the KV snapshot starts at [`KV_OFFSET`].
    Backup { header: BlockHeader },
    /// A periodic snapshot (`snap-H.snap`): the KV snapshot is the whole file; the header
    /// came from its offer file.
    Periodic {
        header: BlockHeader,
        offer: SnapshotOffer,
    },
}

impl Source {
    pub fn header(&self) -> &BlockHeader {
        match self {
            Source::Backup { header } | Source::Periodic { header, .. } => header,
        }
    }
}

/// The header a snapshot offer names.
pub fn offer_header(offer: &SnapshotOffer) -> BlockHeader {
    BlockHeader {
        id: offer.block_id,
        parent: offer.parent_id,
        round: offer.round,
        height: offer.height,
    }
}

/// The `.offer` file next to a periodic snapshot `.snap` file.
pub fn offer_path_of(snap: &Path) -> PathBuf {
    snap.with_extension("offer")
}

/// Reads the start of `file` and says what it is; every error is a sentence naming the file.
pub fn identify(file: &Path) -> Result<Source, String> {
    let shown = file.display();
    let mut input = fs::File::open(file).map_err(|e| format!("{shown}: {e}"))?;
    let mut head = [0u8; KV_OFFSET as usize];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    }
    if got >= MAGIC.len() && &head[..8] == MAGIC {
        if got < head.len() {
            return Err(format!("{shown}: too short to be a bftd backup"));
        }
        let header = decode_header(&head[8..]).ok_or(format!("{shown}: corrupt block header"))?;
        return Ok(Source::Backup { header });
    }
    if got >= SNAPSHOT_MAGIC.len() && &head[..8] == SNAPSHOT_MAGIC {
        let offer_file = offer_path_of(file);
        let bytes = fs::read(&offer_file).map_err(|e| {
            format!(
                "{shown} is a periodic snapshot, but its offer file {} (which names the block \
                 the state is after) cannot be read: {e}; copy it next to the .snap file",
                offer_file.display()
            )
        })?;
        let offer = codec::decode::<SnapshotOffer>(&bytes, OFFER_BYTES_MAX)
            .map_err(|e| format!("{}: not a snapshot offer: {e}", offer_file.display()))?;
        let file_bytes = fs::metadata(file)
            .map_err(|e| format!("{shown}: {e}"))?
            .len();
        if file_bytes != offer.file_bytes {
            return Err(format!(
                "{shown}: {file_bytes} bytes, but its offer says {} (incomplete or not its \
                 offer)",
                offer.file_bytes
            ));
        }
        return Ok(Source::Periodic {
            header: offer_header(&offer),
            offer,
        });
    }
    Err(format!(
        "{shown}: neither a bftd backup (starts with BFTDBAK1) nor a periodic snapshot \
         (snap-H.snap, starts with BFTDSNP1)"
    ))
}

/// Starts a backup file at `tmp` (the temporary name of the final file): magic and header;
/// the caller appends the KV snapshot bytes and then calls [`finish`].
pub fn begin(tmp: &Path, header: &BlockHeader) -> std::io::Result<fs::File> {
    let mut out = fs::File::create(tmp)?;
    out.write_all(MAGIC)?;
    out.write_all(&encode_header(header))?;
    Ok(out)
}

/// Makes the backup at `tmp` durable and gives it its final name `file`.
pub fn finish(out: fs::File, tmp: &Path, file: &Path) -> std::io::Result<()> {
    out.sync_all()?;
    drop(out);
    fs::rename(tmp, file)?;
    fs::File::open(parent_dir(file))?.sync_all()
}

/// Writes a backup file `file` from the header and the KV snapshot file `kv_file`,
/// atomically.
pub fn write(file: &Path, header: &BlockHeader, kv_file: &Path) -> std::io::Result<()> {
    let tmp = tmp_path(file);
    let mut out = begin(&tmp, header)?;
    std::io::copy(&mut fs::File::open(kv_file)?, &mut out)?;
    finish(out, &tmp, file)
}

/// Where `bftctl snapshot save` downloads to: a backup file `file`, written under its
/// temporary name and renamed only once the snapshot in it verifies.
pub struct FileTarget {
    file: PathBuf,
    tmp: PathBuf,
    out: Option<fs::File>,
}

impl FileTarget {
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            tmp: tmp_path(file),
            out: None,
        }
    }

    fn io(&self, e: std::io::Error) -> String {
        format!("{}: {e}", self.tmp.display())
    }

    fn open(&mut self) -> Result<&mut fs::File, String> {
        let tmp = self.tmp.display().to_string();
        self.out
            .as_mut()
            .ok_or_else(|| format!("{tmp}: not started"))
    }
}

impl BackupTarget for FileTarget {
    fn begin(&mut self, offer: &SnapshotOffer) -> Result<(), String> {
        let out = begin(&self.tmp, &offer_header(offer)).map_err(|e| self.io(e))?;
        self.out = Some(out);
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        let written = self.open()?.write_all(bytes);
        written.map_err(|e| self.io(e))
    }

    fn sync(&mut self) -> Result<(), String> {
        let synced = self.open()?.sync_all();
        synced.map_err(|e| self.io(e))
    }

    fn verify(&mut self) -> Result<VerifiedSnapshot, String> {
        let info = verify_file_at(&self.tmp, KV_OFFSET).map_err(|e| e.to_string())?;
        Ok(VerifiedSnapshot {
            height: info.applied_height,
            state_digest: info.state_digest,
            entry_count: info.entry_count,
        })
    }

    fn commit(&mut self) -> Result<(), String> {
        let out = self
            .out
            .take()
            .ok_or_else(|| format!("{}: not started", self.tmp.display()))?;
        finish(out, &self.tmp, &self.file).map_err(|e| format!("{}: {e}", self.file.display()))
    }

    fn abandon(&mut self) {
        self.out = None;
        let _ = fs::remove_file(&self.tmp);
    }

    fn file_bytes(&self, snapshot_bytes: u64) -> u64 {
        KV_OFFSET + snapshot_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BlockId;

    fn offer(height: u64, file_bytes: u64) -> SnapshotOffer {
        SnapshotOffer {
            height,
            block_id: BlockId([1; 32]),
            parent_id: BlockId([2; 32]),
            round: 9,
            state_digest: [3; 32],
            file_bytes,
        }
    }

    #[test]
    fn identifies_backups_periodic_snapshots_and_neither() {
        let dir = tempfile::tempdir().unwrap();
        let header = offer_header(&offer(7, 0));
        // A backup: magic, header, then whatever the KV part is.
        let kv = dir.path().join("kv");
        fs::write(&kv, b"BFTDSNP1rest").unwrap();
        let backup = dir.path().join("b.bak");
        write(&backup, &header, &kv).unwrap();
        match identify(&backup).unwrap() {
            Source::Backup { header: h } => assert_eq!(h, header),
            other => panic!("{other:?}"),
        }
        // A periodic snapshot needs its offer, of the right length.
        let snap = dir.path().join("snap-00000000000000000007.snap");
        fs::write(&snap, b"BFTDSNP1rest").unwrap();
        let err = identify(&snap).unwrap_err();
        assert!(err.contains("offer file"), "{err}");
        fs::write(offer_path_of(&snap), codec::encode(&offer(7, 5))).unwrap();
        let err = identify(&snap).unwrap_err();
        assert!(err.contains("12 bytes, but its offer says 5"), "{err}");
        fs::write(offer_path_of(&snap), codec::encode(&offer(7, 12))).unwrap();
        match identify(&snap).unwrap() {
            Source::Periodic { header: h, offer } => {
                assert_eq!(h, header);
                assert_eq!(offer.file_bytes, 12);
            }
            other => panic!("{other:?}"),
        }
        // Anything else, and a truncated backup.
        let other = dir.path().join("x");
        fs::write(&other, b"hello world").unwrap();
        assert!(
            identify(&other)
                .unwrap_err()
                .contains("neither a bftd backup")
        );
        fs::write(&other, b"BFTDBAK1short").unwrap();
        assert!(identify(&other).unwrap_err().contains("too short"));
        assert!(identify(&dir.path().join("missing")).is_err());
    }
}
