//! A power-cut model of the file system, for tests: what would be on the disk if the power
//! failed at a given moment.
//!
//! A handle made by [`super::Fs::with_power_log`] appends every mutating call (mkdir, create,
//! write, truncate, `sync_data`, directory sync, rename, remove) to an operation log, holding
//! the log's lock across the real call, so the log order is the order the calls took effect.
//! Tests add [`FsOp::Note`]s to the same log when something is acknowledged, so a prefix of
//! the log says both what happened and what had been promised before a cut.
//!
//! [`PowerCut`] replays a prefix of the log and writes its *durable image* into a fresh
//! directory, the way a strict POSIX file system may leave it after a power cut:
//! - a file holds what it held at its last `sync_data`; bytes written after that may land in
//!   part: each 512-byte sector (aligned to the file offset) of the unsynced tail up to a
//!   random length is kept, lost as zeros, or replaced by garbage, chosen by the caller's
//!   random source (so a hole of zeros followed by valid data is one of the outcomes);
//! - a directory entry (a create, mkdir, rename or remove) counts only once its parent
//!   directory was synced; until then the old entry (or none) is what survives.
//!
//! Limits: files are assumed append-only between truncations (true of every engine file:
//! WAL segments, tables, manifests and snapshots are written front to back once); the root
//! passed to [`PowerCut::write_image`] is taken as durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Sector size the image is torn at: a disk writes at least this much atomically.
const SECTOR_BYTES: u64 = 512;

/// One logged file-system call (paths as the engine passed them).
#[derive(Debug, Clone)]
pub enum FsOp {
    Mkdir(PathBuf),
    /// A new, empty file (replacing any entry of that name).
    Create(PathBuf),
    /// Bytes appended to the file now at the path.
    Write(PathBuf, Vec<u8>),
    SetLen(PathBuf, u64),
    SyncData(PathBuf),
    SyncDir(PathBuf),
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Remove(PathBuf),
    /// A test's annotation (e.g. "write 7 acknowledged"); no effect on the image.
    Note(String),
}

#[derive(Debug, Default)]
struct Inode {
    is_dir: bool,
    data: Vec<u8>,
    /// Content as of the last `sync_data`.
    durable: Vec<u8>,
    /// Truncated since the last sync: `data` no longer extends `durable`.
    rewritten: bool,
}

/// Replays a prefix of an operation log; cut points only move forward.
pub struct PowerCut<'a> {
    ops: &'a [FsOp],
    applied: usize,
    inodes: Vec<Inode>,
    /// What a directory listing shows now.
    live: BTreeMap<PathBuf, usize>,
    /// What survives a power cut now.
    durable: BTreeMap<PathBuf, usize>,
    notes: Vec<String>,
}

impl<'a> PowerCut<'a> {
    pub fn new(ops: &'a [FsOp]) -> Self {
        PowerCut {
            ops,
            applied: 0,
            inodes: Vec::new(),
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Applies the log up to (not including) operation `cut`.
    pub fn advance_to(&mut self, cut: usize) {
        assert!(cut >= self.applied, "cut points only move forward");
        let ops = self.ops;
        for op in &ops[self.applied..cut.min(ops.len())] {
            self.apply(op);
        }
        self.applied = cut.min(ops.len());
    }

    /// The notes logged before the current cut, in order.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    fn new_inode(&mut self, is_dir: bool) -> usize {
        self.inodes.push(Inode {
            is_dir,
            ..Inode::default()
        });
        self.inodes.len() - 1
    }

    fn live_inode(&mut self, path: &Path) -> usize {
        match self.live.get(path) {
            Some(&id) => id,
            None => {
                // A file the log never saw created: it starts empty here.
                let id = self.new_inode(false);
                self.live.insert(path.to_path_buf(), id);
                id
            }
        }
    }

    fn apply(&mut self, op: &FsOp) {
        match op {
            FsOp::Mkdir(path) => {
                if !self.live.contains_key(path) {
                    let id = self.new_inode(true);
                    self.live.insert(path.clone(), id);
                }
            }
            FsOp::Create(path) => {
                let id = self.new_inode(false);
                self.live.insert(path.clone(), id);
            }
            FsOp::Write(path, bytes) => {
                let id = self.live_inode(path);
                self.inodes[id].data.extend_from_slice(bytes);
            }
            FsOp::SetLen(path, len_bytes) => {
                let id = self.live_inode(path);
                let inode = &mut self.inodes[id];
                inode.data.resize(*len_bytes as usize, 0);
                inode.rewritten = true;
            }
            FsOp::SyncData(path) => {
                let id = self.live_inode(path);
                let inode = &mut self.inodes[id];
                if inode.rewritten || inode.data.len() < inode.durable.len() {
                    inode.durable = inode.data.clone();
                } else {
                    let synced = inode.durable.len();
                    inode.durable.extend_from_slice(&inode.data[synced..]);
                }
                inode.rewritten = false;
            }
            FsOp::SyncDir(dir) => {
                self.durable.retain(|path, _| path.parent() != Some(dir));
                for (path, &id) in &self.live {
                    if path.parent() == Some(dir.as_path()) {
                        self.durable.insert(path.clone(), id);
                    }
                }
            }
            FsOp::Rename { from, to } => {
                if let Some(id) = self.live.remove(from) {
                    self.live.insert(to.clone(), id);
                }
            }
            FsOp::Remove(path) => {
                self.live.remove(path);
            }
            FsOp::Note(note) => self.notes.push(note.clone()),
        }
    }

    /// Writes the durable image of everything under `from_root` into `to_root` (which must
    /// exist), tearing unsynced tails with `random`.
    pub fn write_image(
        &self,
        from_root: &Path,
        to_root: &Path,
        random: &mut dyn FnMut() -> u64,
    ) -> std::io::Result<()> {
        for (path, &id) in &self.durable {
            let Ok(relative) = path.strip_prefix(from_root) else {
                continue;
            };
            if relative.as_os_str().is_empty() || !self.parents_durable(from_root, path) {
                continue;
            }
            let inode = &self.inodes[id];
            let target = to_root.join(relative);
            if inode.is_dir {
                std::fs::create_dir_all(&target)?;
            } else {
                std::fs::write(&target, landed_content(inode, random))?;
            }
        }
        Ok(())
    }

    /// Every directory between `root` (exclusive) and `path` has a durable entry.
    fn parents_durable(&self, root: &Path, path: &Path) -> bool {
        path.ancestors()
            .skip(1)
            .take_while(|a| *a != root)
            .all(|a| {
                self.durable
                    .get(a)
                    .is_some_and(|&id| self.inodes[id].is_dir)
            })
    }
}

/// Operations that recreate everything under `root` as durable: the starting point of a log
/// over a directory that already holds data (e.g. an image written by [`PowerCut`]).
pub fn baseline_ops(root: &Path) -> std::io::Result<Vec<FsOp>> {
    let mut ops = Vec::new();
    add_tree(root, &mut ops)?;
    Ok(ops)
}

fn add_tree(dir: &Path, ops: &mut Vec<FsOp>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            ops.push(FsOp::Mkdir(path.clone()));
            add_tree(&path, ops)?;
        } else {
            ops.push(FsOp::Create(path.clone()));
            ops.push(FsOp::Write(path.clone(), std::fs::read(&path)?));
            ops.push(FsOp::SyncData(path));
        }
    }
    ops.push(FsOp::SyncDir(dir.to_path_buf()));
    Ok(())
}

/// The synced content plus whatever part of the unsynced tail `random` lets land.
fn landed_content(inode: &Inode, random: &mut dyn FnMut() -> u64) -> Vec<u8> {
    let mut out = inode.durable.clone();
    if inode.rewritten || inode.data.len() <= out.len() {
        return out;
    }
    let tail = &inode.data[out.len()..];
    let mode = random() % 4;
    if mode == 0 {
        return out; // nothing of the tail reached the disk
    }
    let landed_len = (random() % (tail.len() as u64 + 1)) as usize;
    let mut at = 0usize;
    while at < landed_len {
        let offset = out.len() as u64;
        let sector_end = ((offset / SECTOR_BYTES + 1) * SECTOR_BYTES - offset) as usize;
        let chunk = &tail[at..landed_len.min(at + sector_end)];
        let kept = mode == 1 || random().is_multiple_of(2);
        if kept {
            out.extend_from_slice(chunk);
        } else if mode == 2 {
            out.resize(out.len() + chunk.len(), 0); // a hole: the sector never landed
        } else {
            out.extend(chunk.iter().map(|_| random() as u8)); // stale garbage
        }
        at += chunk.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(root: &Path) -> Vec<FsOp> {
        let a = root.join("a");
        let tmp = root.join("b.tmp");
        let b = root.join("b");
        vec![
            FsOp::Create(a.clone()),                    // 0
            FsOp::Write(a.clone(), b"synced".to_vec()), // 1
            FsOp::SyncData(a.clone()),                  // 2
            FsOp::SyncDir(root.to_path_buf()),          // 3
            FsOp::Write(a.clone(), vec![7; 2000]),      // 4
            FsOp::Create(tmp.clone()),                  // 5
            FsOp::Write(tmp.clone(), b"new".to_vec()),  // 6
            FsOp::SyncData(tmp.clone()),                // 7
            FsOp::Rename { from: tmp, to: b },          // 8
            FsOp::Note("renamed".into()),               // 9
            FsOp::SyncDir(root.to_path_buf()),          // 10
        ]
    }

    fn image(log: &[FsOp], root: &Path, cut: usize, seed: u64) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        let mut cut_at = PowerCut::new(log);
        cut_at.advance_to(cut);
        let mut state = seed;
        let mut random = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        cut_at.write_image(root, out.path(), &mut random).unwrap();
        out
    }

    #[test]
    fn entries_need_a_directory_sync_and_data_a_file_sync() {
        let root = Path::new("/root");
        let log = ops(root);
        let before_dir_sync = image(&log, root, 3, 1);
        assert!(!before_dir_sync.path().join("a").exists());
        for seed in 0..20 {
            let cut = image(&log, root, 10, seed);
            let a = std::fs::read(cut.path().join("a")).unwrap();
            assert!(a.starts_with(b"synced") && a.len() <= 2006, "{}", a.len());
            assert!(!cut.path().join("b").exists(), "rename not durable yet");
        }
        let after = image(&log, root, 11, 3);
        assert_eq!(std::fs::read(after.path().join("b")).unwrap(), b"new");
        assert!(!after.path().join("b.tmp").exists());
    }

    #[test]
    fn unsynced_tails_are_torn_by_sector() {
        let root = Path::new("/root");
        let log = ops(root);
        let mut shapes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let cut = image(&log, root, 10, seed);
            let a = std::fs::read(cut.path().join("a")).unwrap();
            let tail = &a[6..];
            let zeros = tail.contains(&0);
            let sevens_after_zero = tail
                .iter()
                .position(|&b| b == 0)
                .is_some_and(|z| tail[z..].contains(&7));
            shapes.insert((tail.is_empty(), zeros, sevens_after_zero));
        }
        assert!(
            shapes.contains(&(true, false, false)),
            "tail lost: {shapes:?}"
        );
        assert!(
            shapes.contains(&(false, true, true)),
            "hole then data: {shapes:?}"
        );
    }
}
