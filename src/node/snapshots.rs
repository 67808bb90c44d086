//! The node's snapshot files (`<data_dir>/snapshots`): saved every
//! `snapshot_interval_blocks` committed blocks, served in chunks to peers that fell behind,
//! and the landing place of a snapshot this node downloads.
//!
//! Each snapshot is two files: `snap-<height>.snap` (the KV snapshot format, self-checking:
//! blake3 over the file and a recomputed state digest) and `snap-<height>.offer` (the rkyv
//! [`SnapshotOffer`]: which committed block the state is after). The `.offer` file is written
//! last, durably, so a snapshot without one is incomplete and ignored (and deleted).
//!
//! Durability order (STYLE rule 8), for a saved and for an installed snapshot alike: the
//! `.snap` data is synced under a temporary name, renamed, the directory synced, and only
//! then the `.offer` written (temp, sync, rename, directory sync). A power cut can therefore
//! leave a `.snap` without an offer, never an offer for a missing or truncated `.snap`; as a
//! second line, `open` drops a snapshot whose file length differs from its offer's.
//! All writes go through [`Fs`], so the power-cut model sees them.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::codec;
use crate::storage::fs::tmp_path;
use crate::storage::{Fs, StorageError};
use crate::wire::SnapshotOffer;

/// Bytes copied per write when keeping an installed snapshot.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Largest chunk served or asked for (the replica's state transfer asks for these).
pub use crate::replica::CHUNK_BYTES_MAX;

pub struct SnapshotDir {
    fs: Fs,
    dir: PathBuf,
    kept: usize,
    /// Complete snapshots, oldest first.
    offers: Vec<SnapshotOffer>,
}

impl SnapshotDir {
    /// Opens (creating) the directory, lists complete snapshots, deletes incomplete ones.
    pub fn open(dir: &Path, kept: usize) -> std::io::Result<Self> {
        SnapshotDir::open_with(dir, kept, Fs::default())
    }

    /// [`SnapshotDir::open`] writing through `fs` (tests pass a fault or power-cut plan).
    pub fn open_with(dir: &Path, kept: usize, fs: Fs) -> std::io::Result<Self> {
        fs.create_dir_all(dir).map_err(std::io::Error::other)?;
        let mut offers = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A write a crash stopped before its rename: never complete, never offered.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(height) = name
                .strip_prefix("snap-")
                .and_then(|n| n.strip_suffix(".snap"))
                .and_then(|h| h.parse::<u64>().ok())
            else {
                continue;
            };
            let file_bytes = fs::metadata(&path).map(|m| m.len()).ok();
            match read_offer(&offer_path(dir, height)) {
                Some(offer) if offer.height == height && Some(offer.file_bytes) == file_bytes => {
                    offers.push(offer)
                }
                _ => {
                    log::warn!("{}: incomplete snapshot, deleting it", path.display());
                    let _ = fs::remove_file(offer_path(dir, height));
                    let _ = fs::remove_file(&path);
                }
            }
        }
        offers.sort_by_key(|o| o.height);
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
            kept: kept.max(1),
            offers,
        })
    }

    /// Bytes of the complete snapshot files kept (as their offers record them).
    pub fn total_bytes(&self) -> u64 {
        self.offers.iter().map(|o| o.file_bytes).sum()
    }

    pub fn newest(&self) -> Option<&SnapshotOffer> {
        self.offers.last()
    }

    pub fn snap_path(&self, height: u64) -> PathBuf {
        self.dir.join(format!("snap-{height:020}.snap"))
    }

    /// Where a download in progress is written.
    pub fn incoming_path(&self) -> PathBuf {
        self.dir.join("incoming.part")
    }

    /// Records a complete snapshot file at `snap_path(offer.height)`, then drops the oldest
    /// beyond the number kept.
    pub fn add(&mut self, offer: SnapshotOffer) -> Result<(), StorageError> {
        let path = offer_path(&self.dir, offer.height);
        self.fs.write_file_durably(&path, &codec::encode(&offer))?;
        self.offers.retain(|o| o.height != offer.height);
        self.offers.push(offer);
        self.offers.sort_by_key(|o| o.height);
        while self.offers.len() > self.kept {
            let old = self.offers.remove(0);
            let _ = fs::remove_file(offer_path(&self.dir, old.height));
            let _ = fs::remove_file(self.snap_path(old.height));
        }
        Ok(())
    }

    /// Keeps a copy of the snapshot file at `from` (one this node installed) as
    /// `snap_path(offer.height)`, durably, and only then records its offer: a power cut
    /// never leaves an offer for a truncated file (issue 13 item 4).
    pub fn keep(&mut self, from: &Path, offer: SnapshotOffer) -> Result<(), StorageError> {
        let path = self.snap_path(offer.height);
        let tmp = tmp_path(&path);
        let mut source = fs::File::open(from).map_err(|e| StorageError::io(from, "open", e))?;
        let mut file = self.fs.create(&tmp)?;
        let mut buffer = vec![0u8; COPY_CHUNK_BYTES];
        loop {
            let read = match source.read(&mut buffer) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StorageError::io(from, "read", e)),
            };
            if read == 0 {
                break;
            }
            self.fs.write_all(&mut file, &tmp, &buffer[..read])?;
        }
        self.fs.sync_data(&file, &tmp)?;
        drop(file);
        self.fs.rename(&tmp, &path)?;
        self.fs.sync_dir(&self.dir)?;
        self.add(offer)
    }

    /// Up to `len` bytes at `offset` of the snapshot at `height`; empty if it is gone or the
    /// offset is past its end.
    pub fn chunk(&self, height: u64, offset: u64, len: u32) -> Vec<u8> {
        self.offered_path(height)
            .map_or_else(Vec::new, |p| read_chunk(&p, height, offset, len))
    }

    /// The file of the snapshot at `height`, if it is one this node offers.
    pub fn offered_path(&self, height: u64) -> Option<PathBuf> {
        self.offers
            .iter()
            .any(|o| o.height == height)
            .then(|| self.snap_path(height))
    }
}

/// Up to `len` (at most `CHUNK_BYTES_MAX`) bytes at `offset` of the snapshot file `path`
/// (of height `height`, for the log); empty if it is gone (pruned meanwhile) or the offset
/// is past its end.
pub fn read_chunk(path: &Path, height: u64, offset: u64, len: u32) -> Vec<u8> {
    let len = len.min(CHUNK_BYTES_MAX) as usize;
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    };
    read().unwrap_or_else(|e| {
        log::warn!("reading snapshot {height} for a peer: {e}");
        Vec::new()
    })
}

fn offer_path(dir: &Path, height: u64) -> PathBuf {
    dir.join(format!("snap-{height:020}.offer"))
}

fn read_offer(path: &Path) -> Option<SnapshotOffer> {
    let bytes = fs::read(path).ok()?;
    codec::decode::<SnapshotOffer>(&bytes, 4096).ok()
}

/// Height and state digest from a snapshot file's header (see `kv::snapshot`), to check a
/// downloaded file against the agreed offer before installing it.
pub fn read_header(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut head = [0u8; 52];
    fs::File::open(path)?.read_exact(&mut head)?;
    let mut height = [0u8; 8];
    height.copy_from_slice(&head[12..20]);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&head[20..52]);
    Ok((u64::from_le_bytes(height), digest))
}
