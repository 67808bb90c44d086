//! `bftd inspect --data-dir DIR`: what is in a node's data dir, with every checksum verified.
//!
//! Invariant: nothing under the data dir is written. It holds both engines' `LOCK` files
//! (opened read-only, locked like the node does), so a running node makes it stop with "in
//! use" and no node can start while it reads. Then a read-only pass over both engines
//! (`state/`, `consensus/`): the manifest, every SSTable (opened, which checks its CRC and
//! layout) and every WAL segment (every record's length and CRC, LSN continuity between
//! segments). Only if all of that is clean does it open the stores the way the node does to
//! report the applied height, state digest, committed block, safety state and stored blocks,
//! and to recompute the state tree root from the state entries and compare it with the stored
//! one; opening writes (the WAL starts a new segment, leftovers are removed), so it opens a
//! private copy in the system's temp dir: immutable files (SSTables, snapshots) hard-linked
//! where the file system allows, the rest copied. Exit status 1 if anything is wrong.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

use crate::keys_file::to_hex;
use crate::kv::KvStore;
use crate::node::block_store::{BlockStore, COMMITTED_META_KEY, decode_header};
use crate::node::data_dir::{DataDir, offline_engine_options as engine_options};
use crate::node::snapshots::SnapshotDir;
use crate::storage::Fs;
use crate::storage::manifest::Manifest;
use crate::storage::segment::{parse_segment_file_name, scan_segment};
use crate::storage::sstable::{SsTable, parse_table_file_name};
use crate::types::{Block, ClusterId};

const HELP: &str = "\
bftd inspect: report what a node's data dir holds and verify every checksum

USAGE:
    bftd inspect --data-dir DIR [--cluster NAME]

OPTIONS:
    --data-dir DIR    The node's data_dir (holds state/, consensus/, snapshots/)
    --cluster NAME    The cluster_name, to name the genesis block [default: testnet]
    -h, --help        Print this help

The node must be stopped. Writes nothing in DIR: checks every SSTable and WAL record in
place; then, if all are clean, opens a private copy of the stores (in the system's temp dir,
removed afterwards) as the node would, to print heights and safety state, and recomputes the
state tree root from the entries (it must equal the stored root), and lists the heights
whose state roots the node remembers across a restart.
Exit status: 0 when everything checked out, 1 otherwise.
";

/// Largest WAL segment read whole (segments roll at 64 MiB by default).
const SEGMENT_BYTES_MAX: u64 = 1 << 30;

pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let mut dir = None;
    let mut cluster = String::from("testnet");
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("data-dir") => {
                dir = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("cluster") => {
                cluster = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into()
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(());
            }
            other => return Err(format!("{}; see 'bftd inspect --help'", other.unexpected())),
        }
    }
    let dir = dir.ok_or("--data-dir DIR is required; see 'bftd inspect --help'")?;
    let layout = DataDir::new(&dir);
    if !layout.state().is_dir() || !layout.consensus().is_dir() {
        return Err(format!(
            "{}: not a bftd data dir (no state/ and consensus/)",
            dir.display()
        ));
    }
    let _locks = [
        lock_read_only(&layout.state())?,
        lock_read_only(&layout.consensus())?,
    ];
    let mut problems = 0;
    for engine in [layout.state(), layout.consensus()] {
        problems += check_engine(&engine);
    }
    if problems > 0 {
        return Err(format!(
            "{problems} problem(s) found; the node would refuse to start (or, for a torn WAL tail, \
             truncate it); see the README on a damaged data dir"
        ));
    }
    let scratch = Scratch::new()?;
    let copied = private_copy(&dir, &scratch.0).map_err(|e| {
        format!(
            "copying the stores to {} to open them: {e}",
            scratch.0.display()
        )
    })?;
    println!(
        "(opening a private copy in {}: {copied} bytes copied, immutable files linked)",
        scratch.0.display()
    );
    report_contents(&scratch.0, ClusterId::from_name(&cluster))
}

/// Locks `dir/LOCK` as the engine does, through a read-only handle, so nothing is created; a
/// directory without one was never opened by a node and needs no lock.
fn lock_read_only(dir: &Path) -> Result<Option<std::fs::File>, String> {
    let path = dir.join("LOCK");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{}: in use by a running node; stop it first",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: flock: {e}", path.display())),
    }
}

/// A directory of our own under the system's temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("bftd-inspect-{}-{nanos}", std::process::id()));
        // `create_dir` (not `_all`) fails if the name is taken: the directory is ours alone.
        std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the tree at `from` into `to`, except `LOCK` files; SSTables and snapshot files,
/// which are never changed once written, are hard-linked when possible. Returns the bytes
/// copied (not linked).
fn private_copy(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, name) = (entry.path(), entry.file_name());
        let dst = to.join(&name);
        let text = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            std::fs::create_dir(&dst)?;
            copied += private_copy(&src, &dst)?;
        } else if text == "LOCK" {
            continue;
        } else {
            let immutable = parse_table_file_name(&text).is_some() || text.ends_with(".snap");
            if !(immutable && std::fs::hard_link(&src, &dst).is_ok()) {
                copied += std::fs::copy(&src, &dst)?;
            }
        }
    }
    Ok(copied)
}

/// Verifies one engine's files without writing; prints one line per file; returns the
/// number of problems.
fn check_engine(dir: &Path) -> usize {
    let fs = Fs::default();
    let mut problems = 0;
    println!("{}:", dir.display());
    let manifest = match Manifest::load(&fs, dir) {
        Ok(Some(m)) => {
            println!(
                "  MANIFEST: {} tables, WAL flushed through LSN {}",
                m.table_ids.len(),
                m.flushed_lsn
            );
            Some(m)
        }
        Ok(None) => {
            println!("  MANIFEST: none yet (nothing flushed)");
            None
        }
        Err(e) => {
            println!("  MANIFEST: CORRUPT: {e}");
            problems += 1;
            None
        }
    };
    let names = match fs.list_dir(dir) {
        Ok(n) => n,
        Err(e) => {
            println!("  cannot list: {e}");
            return problems + 1;
        }
    };
    let live = |id: u64| manifest.as_ref().is_some_and(|m| m.table_ids.contains(&id));
    for name in &names {
        let Some(id) = parse_table_file_name(name) else {
            continue;
        };
        let path = dir.join(name);
        match SsTable::open(&fs, &path, id) {
            Ok(t) if live(id) => println!(
                "  {name}: ok, {} entries, {} bytes",
                t.entry_count(),
                t.file_len_bytes()
            ),
            Ok(_) => println!("  {name}: ok, not in the manifest (left over; deleted on start)"),
            Err(e) => {
                println!("  {name}: CORRUPT: {e}");
                problems += 1;
            }
        }
    }
    if let Some(m) = &manifest {
        for id in m
            .table_ids
            .iter()
            .filter(|id| !names.iter().any(|n| parse_table_file_name(n) == Some(**id)))
        {
            println!("  table {id}: MISSING (named by the manifest)");
            problems += 1;
        }
    }
    let segments: Vec<(u64, &String)> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n).map(|lsn| (lsn, n)))
        .collect();
    let mut expected_lsn = None;
    // LSNs up to `flushed_lsn` are in the tables; a power cut may have taken them from the log.
    let captured_lsn = manifest.as_ref().map_or(0, |m| m.flushed_lsn);
    for (i, &(first_lsn, name)) in segments.iter().enumerate() {
        let path = dir.join(name);
        let is_last = i + 1 == segments.len();
        let bytes = match fs.read_file(&path, SEGMENT_BYTES_MAX) {
            Ok(b) => b,
            Err(e) => {
                println!("  {name}: UNREADABLE: {e}");
                problems += 1;
                continue;
            }
        };
        let covered_gap = |e: u64| first_lsn > e && first_lsn <= captured_lsn + 1;
        if expected_lsn.is_some_and(|e| e != first_lsn && !covered_gap(e)) {
            println!(
                "  {name}: GAP: expected a segment starting at LSN {}",
                expected_lsn.unwrap_or(0)
            );
            problems += 1;
        }
        match scan_segment(&bytes, &path, first_lsn, is_last) {
            Ok(scan) => {
                expected_lsn = Some(first_lsn + scan.records.len() as u64);
                match scan.torn_reason {
                    None => println!(
                        "  {name}: ok, {} records, {} bytes",
                        scan.records.len(),
                        bytes.len()
                    ),
                    Some(why) => {
                        println!(
                            "  {name}: {} records, then a TORN TAIL at byte {} ({why}): a crash mid-write; the node truncates it on start",
                            scan.records.len(),
                            scan.valid_len_bytes
                        );
                        problems += 1;
                    }
                }
            }
            Err(e) => {
                println!("  {name}: CORRUPT: {e}");
                problems += 1;
            }
        }
    }
    if segments.is_empty() {
        println!("  no WAL segments");
    }
    problems
}

/// Opens the stores as the node does and prints what they hold.
fn report_contents(dir: &Path, cluster: ClusterId) -> Result<(), String> {
    let layout = DataDir::new(dir);
    let kv = KvStore::open(&layout.state(), engine_options()).map_err(|e| e.to_string())?;
    let committed = match kv.meta(COMMITTED_META_KEY) {
        Some(bytes) => decode_header(&bytes).ok_or("the committed-block record is corrupt")?,
        None => Block::genesis_header(&cluster),
    };
    println!(
        "state: applied height {}, state digest {}, at block {} (round {})",
        kv.applied_height(),
        to_hex(&kv.state_digest()),
        to_hex(&committed.id.0[..8]),
        committed.round
    );
    let tree_ok = report_tree(&kv)?;
    let memory_ok = report_root_memory(&kv);
    drop(kv);
    let mut blocks =
        BlockStore::open(&layout.consensus(), engine_options()).map_err(|e| e.to_string())?;
    let durable = blocks
        .load(&cluster, committed, u64::MAX)
        .map_err(|e| e.to_string())?;
    let s = &durable.safety;
    println!(
        "safety: highest voted round {}, highest proposed round {}, high QC round {}, high TC round {}",
        s.highest_voted_round,
        s.highest_proposed_round,
        s.high_qc.round,
        s.high_tc
            .as_ref()
            .map_or("none".to_string(), |t| t.round.to_string())
    );
    let heights = durable.blocks.iter().map(|(_, b)| b.height);
    match (heights.clone().min(), heights.max()) {
        (Some(lo), Some(hi)) => println!(
            "blocks: {} stored, heights {lo}..={hi}",
            durable.blocks.len()
        ),
        _ => println!("blocks: none stored"),
    }
    match SnapshotDir::open(&layout.snapshots(), usize::MAX) {
        Ok(snaps) => match snaps.newest() {
            Some(o) => println!(
                "snapshots: newest at height {} ({} bytes, digest {})",
                o.height,
                o.file_bytes,
                to_hex(&o.state_digest[..8])
            ),
            None => println!("snapshots: none"),
        },
        Err(e) => println!("snapshots: cannot read: {e}"),
    }
    println!("all checksums verified");
    if !memory_ok {
        return Err(
            "the root memory holds a malformed entry: the node would refuse to start".into(),
        );
    }
    if !tree_ok {
        return Err(
            "the state tree does not match the state entries: the state was changed \
             outside the state machine (or by a bug); this node's state must not be trusted"
                .into(),
        );
    }
    Ok(())
}

/// Prints which heights' roots the state remembers (`kv::root_memory`) and whether the node
/// would use them; false if an entry is malformed (the node would not start).
fn report_root_memory(kv: &KvStore) -> bool {
    let stored = match crate::kv::root_memory::stored(kv.engine()) {
        Ok(stored) => stored,
        Err(e) => {
            println!("root memory: MALFORMED: {e}");
            return false;
        }
    };
    let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
        println!(
            "root memory: empty (a data dir written before it existed): a restart remembers only \
             the current root"
        );
        return true;
    };
    let used = kv.recent_roots().map_or(0, |r| r.len());
    let current = (kv.applied_height(), kv.state_digest());
    if *last == current {
        println!(
            "root memory: {} roots, heights {}..={}; the newest is the state digest; a restart \
             remembers {used}",
            stored.len(),
            first.0,
            last.0
        );
    } else {
        println!(
            "root memory: {} roots, heights {}..={}; the newest is NOT the state at height {} \
             (digest {}): a restart ignores it and remembers only the current root",
            stored.len(),
            first.0,
            last.0,
            current.0,
            to_hex(&current.1[..8])
        );
    }
    true
}

/// Recomputes the state tree root from the entries and prints it beside the stored ones;
/// false on a mismatch.
fn report_tree(kv: &KvStore) -> Result<bool, String> {
    let audit = kv.audit_tree().map_err(|e| e.to_string())?;
    println!(
        "state tree: {} entries; root published {}, stored root node {}, recomputed from the \
         entries {}",
        audit.entry_count,
        to_hex(&audit.published_root),
        to_hex(&audit.stored_node_root),
        to_hex(&audit.recomputed_root)
    );
    if audit.consistent() {
        println!("state tree: matches the entries");
    } else {
        println!(
            "state tree: MISMATCH: the entries give state digest {}, the store publishes {}",
            to_hex(&audit.recomputed_digest()),
            to_hex(&kv.state_digest())
        );
    }
    Ok(audit.consistent())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvRequest, Op, encode_ops};
    use crate::storage::WriteBatch;

    fn inspect(dir: &Path) -> Result<(), String> {
        main(vec!["--data-dir".into(), dir.as_os_str().to_owned()])
    }

    /// A data value rewritten behind the state machine's back (a valid engine write, so every
    /// checksum passes) is caught by the recomputed state tree root.
    #[test]
    fn inspect_recomputes_the_state_tree_and_refuses_a_changed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataDir::new(dir.path());
        std::fs::create_dir_all(layout.state()).unwrap();
        std::fs::create_dir_all(layout.consensus()).unwrap();
        drop(BlockStore::open(&layout.consensus(), engine_options()).unwrap());
        let mut kv = KvStore::open(&layout.state(), engine_options()).unwrap();
        let ops = encode_ops(&[Op::Put {
            key: b"k".to_vec(),
            value: b"honest".to_vec(),
        }]);
        let request = KvRequest {
            client: [1; 32],
            session: 1,
            seq: 1,
            ops: &ops,
        };
        kv.apply(1, &[request]).unwrap();
        drop(kv);
        inspect(dir.path()).unwrap();

        let kv = KvStore::open(&layout.state(), engine_options()).unwrap();
        let mut batch = WriteBatch::new();
        let mut stored = kv.engine().get(b"dk").unwrap();
        *stored.last_mut().unwrap() ^= 1;
        batch.put(b"dk".to_vec(), stored);
        kv.engine().write(&batch).unwrap();
        drop(kv);
        let error = inspect(dir.path()).unwrap_err();
        assert!(error.contains("state tree does not match"), "{error}");
    }
}
