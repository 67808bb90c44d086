//! Power-cut tests (issue 13 item 2): the storage engine, and the node's two engines as the
//! storage thread uses them, run once against a file system that logs every call
//! (`Fs::with_power_log`); then seeded random cut points of that log are rebuilt as the durable
//! image a power cut would leave (`storage::power_cut`: data only as of its last `sync_data`,
//! unsynced tails torn by sector into kept / zero / garbage pieces, directory entries only
//! after a directory sync) and reopened. At every cut:
//! - the store opens (a power cut is not corruption: refusing would keep a node down);
//! - every acknowledged write is there, and nothing but a prefix of each writer's writes (at
//!   most the one write in flight at the cut beyond the acknowledged ones);
//! - the safety record never goes backwards; the KV state equals a clean replay's (digest);
//! - a block acknowledged to clients that the state lost is in the consensus store, above the
//!   state's block, so a restart replays it (replies do not wait for the state's sync).
//!
//! The engine test runs a second generation on each image (writes, then cuts again), because
//! a mistake in recovery (such as reused WAL numbers) shows only at the open after the next.
//! Set `BFTD_POWERCUT_SEED` to replay a seed; the seed is printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bftd::consensus::{PersistItem, SafetyData};
use bftd::kv::{KvRequest, KvStore, Op, encode_ops};
use bftd::node::block_store::{BlockStore, COMMITTED_META_KEY, decode_header, encode_header};
use bftd::sim::SimRng;
use bftd::storage::manifest::Manifest;
use bftd::storage::power_cut::{FsOp, PowerCut};
use bftd::storage::segment::{parse_segment_file_name, scan_segment};
use bftd::storage::{Engine, EngineOptions, Fs, WalOptions, WriteBatch};
use bftd::types::{Block, ClusterId, NodeId, QuorumCert, Sig};

/// Writers of the first generation, and writes each.
const GEN0_THREADS: u32 = 3;
const GEN0_WRITES: u32 = 80;
/// Cut points taken in the first generation's log.
const GEN0_CUTS: usize = 24;
/// Writers and writes of the second generation (run on each first-generation image).
const GEN1_THREADS: u32 = 2;
const GEN1_WRITES: u32 = 15;
const GEN1_CUTS: usize = 3;
/// Slots (keys) each writer overwrites in turn.
const SLOTS: u32 = 6;
/// Blocks the node-storage test commits, and its cut points.
const NODE_HEIGHTS: u64 = 60;
const NODE_CUTS: usize = 40;

fn seed() -> u64 {
    let seed = std::env::var("BFTD_POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9c07);
    println!("storage_powercut: seed {seed} (set BFTD_POWERCUT_SEED={seed} to replay)");
    seed
}

fn options(fs: Fs) -> EngineOptions {
    EngineOptions {
        flush_threshold_bytes: 2048,
        compaction_trigger_tables: 3,
        caller_pins_wal: false,
        wal: WalOptions {
            segment_bytes_max: 4096,
            fs,
            ..WalOptions::default()
        },
        ..EngineOptions::default()
    }
}

/// Sorted random cut points in `from..=len`.
fn cut_points(rng: &mut SimRng, from: usize, len: usize, count: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..count)
        .map(|_| rng.range(from as u64, len as u64) as usize)
        .collect();
    points.push(len); // and the very end: everything that happened, nothing synced after
    points.sort_unstable();
    points
}

fn write_image(cut: &PowerCut<'_>, from: &Path, rng: &mut SimRng) -> tempfile::TempDir {
    let image = tempfile::tempdir().expect("tempdir");
    cut.write_image(from, image.path(), &mut || rng.next_u64())
        .expect("write image");
    image
}

fn prefix(generation: u32, thread: u32) -> Vec<u8> {
    format!("g{generation}/t{thread}/").into_bytes()
}

fn slot_key(generation: u32, thread: u32, slot: u32) -> Vec<u8> {
    let mut key = prefix(generation, thread);
    key.extend_from_slice(format!("s{slot}").as_bytes());
    key
}

/// Write `index` of writer (generation, thread): one atomic batch.
fn writer_batch(generation: u32, thread: u32, index: u32) -> WriteBatch {
    let mut batch = WriteBatch::new();
    let mut value = format!("{generation}:{thread}:{index}:").into_bytes();
    // Some values span sectors, so a torn group commit can be a hole followed by valid data.
    value.resize(if index.is_multiple_of(5) { 900 } else { 90 }, b'.');
    batch.put(slot_key(generation, thread, index % SLOTS), value);
    let mut last = prefix(generation, thread);
    last.extend_from_slice(b"last");
    batch.put(last, index.to_le_bytes().to_vec());
    if index % 4 == 3 {
        batch.delete(slot_key(generation, thread, (index + 2) % SLOTS));
    }
    batch
}

/// The writer's keys after its first `count` writes.
fn expected(generation: u32, thread: u32, count: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut state = BTreeMap::new();
    for index in 0..count {
        for (key, slot) in writer_batch(generation, thread, index).ops {
            match slot {
                bftd::storage::Slot::Put(value) => state.insert(key, value),
                bftd::storage::Slot::Delete => state.remove(&key),
            };
        }
    }
    state
}

fn writer_rows(engine: &Engine, generation: u32, thread: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let start = prefix(generation, thread);
    let mut end = start.clone();
    *end.last_mut().expect("non-empty prefix") += 1;
    engine
        .range(&start, Some(&end), usize::MAX)
        .into_iter()
        .collect()
}

/// Writers that note `w <generation> <thread> <index>` in the log once each write is durable.
fn run_writers(engine: &Arc<Engine>, fs: &Fs, generation: u32, threads: u32, writes: u32) {
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (engine, fs) = (Arc::clone(engine), fs.clone());
            std::thread::spawn(move || {
                for index in 0..writes {
                    engine
                        .write(&writer_batch(generation, thread, index))
                        .expect("write");
                    fs.note(format!("w {generation} {thread} {index}"));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("writer thread");
    }
}

/// Writes of (generation, thread) acknowledged in `notes`.
fn acked(notes: &[String], generation: u32, thread: u32) -> u32 {
    let tag = format!("w {generation} {thread} ");
    notes
        .iter()
        .filter_map(|n| n.strip_prefix(&tag)?.parse::<u32>().ok())
        .map(|index| index + 1)
        .max()
        .unwrap_or(0)
}

/// The writer's keys hold exactly its first `acked` writes, or `acked + 1` (the one in flight
/// at the cut); returns which.
fn check_writer(engine: &Engine, generation: u32, thread: u32, acked: u32, what: &str) -> u32 {
    let rows = writer_rows(engine, generation, thread);
    for count in [acked, acked + 1] {
        if rows == expected(generation, thread, count) {
            return count;
        }
    }
    panic!(
        "{what}: writer {generation}/{thread} has {} acknowledged writes, but the store holds {:?}",
        acked,
        rows.iter()
            .map(|(k, v)| (
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(&v[..v.len().min(12)])
            ))
            .collect::<Vec<_>>()
    );
}

/// Issue 13 item 1: the manifest never claims more of the log than a power cut leaves of it
/// (else recovery would number new writes among the LSNs it skips).
fn assert_manifest_within_wal(dir: &Path, what: &str) {
    let fs = Fs::default();
    let Some(manifest) = Manifest::load(&fs, dir).expect("manifest decodes") else {
        return;
    };
    let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let first = parse_segment_file_name(path.file_name()?.to_str()?)?;
            Some((first, path))
        })
        .collect();
    segments.sort();
    let mut wal_end_lsn = 0;
    for (index, (first_lsn, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).expect("read segment");
        let scan = scan_segment(&bytes, path, *first_lsn, index + 1 == segments.len())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        wal_end_lsn = first_lsn + scan.records.len() as u64 - 1;
    }
    assert!(
        manifest.flushed_lsn <= wal_end_lsn,
        "{what}: the manifest covers LSN {} but the durable WAL ends at {wal_end_lsn}",
        manifest.flushed_lsn
    );
}

fn open_image(dir: &Path, fs: Fs, what: &str) -> Engine {
    Engine::open(dir, options(fs), |_, _, _| Ok(()))
        .unwrap_or_else(|e| panic!("{what}: the store refused to open after a power cut: {e}"))
}

#[test]
fn engine_survives_power_cuts_at_random_points_over_two_generations() {
    let mut rng = SimRng::new(seed());
    let live = tempfile::tempdir().expect("tempdir");
    let fs = Fs::with_power_log();
    {
        let engine = Arc::new(open_image(live.path(), fs.clone(), "first open"));
        run_writers(&engine, &fs, 0, GEN0_THREADS, GEN0_WRITES);
    }
    let log: Vec<FsOp> = fs.power_log();
    let mut cut = PowerCut::new(&log);
    let (mut images, mut in_flight_kept) = (0, 0);
    for point in cut_points(&mut rng, 0, log.len(), GEN0_CUTS) {
        cut.advance_to(point);
        let what = format!("cut at op {point} of {}", log.len());
        let image = write_image(&cut, live.path(), &mut rng);
        assert_manifest_within_wal(image.path(), &what);
        let fs1 = Fs::with_power_log_over(image.path()).expect("baseline");
        let baseline_ops = fs1.power_log().len(); // the image as found: never cut into
        let engine = Arc::new(open_image(image.path(), fs1.clone(), &what));
        let held: Vec<u32> = (0..GEN0_THREADS)
            .map(|t| {
                let acked = acked(cut.notes(), 0, t);
                let held = check_writer(&engine, 0, t, acked, &what);
                in_flight_kept += u32::from(held > acked);
                held
            })
            .collect();
        run_writers(&engine, &fs1, 1, GEN1_THREADS, GEN1_WRITES);
        drop(engine);
        let log1 = fs1.power_log();
        let mut cut1 = PowerCut::new(&log1);
        for point1 in cut_points(&mut rng, baseline_ops, log1.len(), GEN1_CUTS) {
            cut1.advance_to(point1);
            let what = format!("{what}, then at op {point1} of {}", log1.len());
            let image1 = write_image(&cut1, image.path(), &mut rng);
            let engine = open_image(image1.path(), Fs::default(), &what);
            for (t, &count) in held.iter().enumerate() {
                assert_eq!(
                    writer_rows(&engine, 0, t as u32),
                    expected(0, t as u32, count),
                    "{what}: what the first restart found went away"
                );
            }
            for t in 0..GEN1_THREADS {
                check_writer(&engine, 1, t, acked(cut1.notes(), 1, t), &what);
            }
            images += 1;
        }
    }
    println!(
        "engine power cuts: {images} two-generation images, {in_flight_kept} in-flight writes kept"
    );
}

// ---- the node's storage: safety data and blocks in consensus/, the KV state in state/ ----

fn node_block(cluster: &ClusterId, height: u64) -> Block {
    Block {
        round: height,
        height,
        timestamp_ms: 1_000 * height,
        qc: QuorumCert::genesis(cluster),
        tc: None,
        roots_after: 0,
        state_roots: Vec::new(),
        payload: Vec::new(),
        author: NodeId(0),
        signature: Sig::ZERO,
    }
}

/// The KV requests block `height` carries (a deterministic function of the height).
fn node_requests(height: u64) -> Vec<([u8; 32], Vec<u8>)> {
    let key = |n: u64| format!("key{:02}", n % 24).into_bytes();
    vec![
        (
            [1; 32],
            encode_ops(&[Op::Put {
                key: key(height),
                value: height.to_le_bytes().repeat(8),
            }]),
        ),
        (
            [2; 32],
            encode_ops(&[Op::Delete {
                key: key(height * 5),
            }]),
        ),
    ]
}

fn kv_requests(requests: &[([u8; 32], Vec<u8>)], height: u64) -> Vec<KvRequest<'_>> {
    requests
        .iter()
        .map(|(client, ops)| KvRequest {
            client: *client,
            session: 1,
            seq: height,
            ops,
        })
        .collect()
}

/// Persists the safety record (voted round = `round`) and `block` in consensus/ as one batch;
/// returns its LSN.
fn node_persist(cluster: &ClusterId, blocks: &mut BlockStore, round: u64, block: &Block) -> u64 {
    let safety = SafetyData {
        highest_voted_round: round,
        ..SafetyData::genesis(cluster)
    };
    let id = block.compute_id();
    blocks
        .persist(&[
            PersistItem::Block {
                id,
                block: block.clone(),
            },
            PersistItem::Safety(safety),
        ])
        .expect("persist")
}

/// Block `height` as the node handles it: the block and the safety record (voted round =
/// height) are persisted in consensus/ and durable before the vote leaves; once the block is
/// committed, one storage-thread group applies it to state/ with the committed-block meta and
/// acknowledges at once, then waits for both engines (`node/storage_loop.rs::release`: replies
/// do not wait for the state's sync, because a committed block is durable in the consensus
/// store, here this node's own, and a restart replays the committed blocks the state lost).
fn node_commit(
    cluster: &ClusterId,
    kv: &mut KvStore,
    blocks: &mut BlockStore,
    fs: &Fs,
    height: u64,
) {
    let block = node_block(cluster, height);
    let persisted = node_persist(cluster, blocks, height, &block);
    blocks
        .engine()
        .wait_durable(persisted)
        .expect("consensus durable before the vote");
    let requests = node_requests(height);
    let meta = encode_header(&block.header(block.compute_id()));
    let (_, kv_lsn) = kv
        .apply_nowait(
            height,
            block.timestamp_ms,
            &kv_requests(&requests, height),
            &[(COMMITTED_META_KEY, &meta)],
        )
        .expect("apply");
    let pruned = blocks
        .prune_below(height.saturating_sub(8), 256)
        .expect("prune");
    fs.note(format!("h {height}"));
    if let Some(lsn) = pruned {
        blocks
            .engine()
            .wait_durable(lsn)
            .expect("consensus durable");
    }
    kv.engine().wait_durable(kv_lsn).expect("state durable");
}

/// A snapshot of the state at `height` (from a store that applied blocks 1..=height).
fn reference_snapshot(height: u64, dir: &Path) -> std::path::PathBuf {
    let mut kv = KvStore::open(&dir.join("state"), options(Fs::default())).expect("kv");
    for h in 1..=height {
        let requests = node_requests(h);
        kv.apply(h, &kv_requests(&requests, h)).expect("apply");
    }
    let path = dir.join("snap");
    kv.save_snapshot(&path).expect("save snapshot");
    path
}

/// Installs the snapshot at `path` (state at `height`) as the storage thread does, then
/// persists the safety record of that round.
fn node_install(
    cluster: &ClusterId,
    kv: &mut KvStore,
    blocks: &mut BlockStore,
    path: &Path,
    height: u64,
) {
    let block = node_block(cluster, height);
    let meta = encode_header(&block.header(block.compute_id()));
    kv.install_snapshot_with_meta(path, &[(COMMITTED_META_KEY, &meta)])
        .expect("install");
    let lsn = node_persist(cluster, blocks, height, &block);
    blocks
        .engine()
        .wait_durable(lsn)
        .expect("consensus durable");
}

/// Heights the node-storage run reaches, in order: it commits block by block, except that it
/// installs a snapshot from `NODE_INSTALL_AT` straight to `NODE_INSTALL_TO`.
const NODE_INSTALL_AT: u64 = 30;
const NODE_INSTALL_TO: u64 = 40;

fn node_steps() -> Vec<u64> {
    (0..=NODE_HEIGHTS)
        .filter(|h| !(NODE_INSTALL_AT + 1..NODE_INSTALL_TO).contains(h))
        .collect()
}

#[test]
fn node_storage_survives_power_cuts_and_the_safety_record_never_goes_back() {
    let mut rng = SimRng::new(seed() ^ 0x6e6f_6465);
    let cluster = ClusterId::from_name("powercut");
    let live = tempfile::tempdir().expect("tempdir");
    let data_dir = live.path().join("data");
    let reference = tempfile::tempdir().expect("tempdir");
    let snapshot = reference_snapshot(NODE_INSTALL_TO, reference.path());
    let fs = Fs::with_power_log();
    let steps = node_steps();
    let mut digests = BTreeMap::new();
    {
        let mut kv = KvStore::open(&data_dir.join("state"), options(fs.clone())).expect("kv");
        let mut blocks =
            BlockStore::open(&data_dir.join("consensus"), options(fs.clone())).expect("blocks");
        digests.insert(0, kv.state_digest());
        for &height in &steps[1..] {
            if height == NODE_INSTALL_TO {
                node_install(&cluster, &mut kv, &mut blocks, &snapshot, height);
                fs.note(format!("h {height}"));
            } else {
                node_commit(&cluster, &mut kv, &mut blocks, &fs, height);
            }
            digests.insert(height, kv.state_digest());
        }
    }
    let log = fs.power_log();
    let mut cut = PowerCut::new(&log);
    for point in cut_points(&mut rng, 0, log.len(), NODE_CUTS) {
        cut.advance_to(point);
        let what = format!("node cut at op {point} of {}", log.len());
        let acked: u64 = cut
            .notes()
            .iter()
            .filter_map(|n| n.strip_prefix("h ")?.parse().ok())
            .max()
            .unwrap_or(0);
        let next = steps.iter().copied().find(|&h| h > acked).unwrap_or(acked);
        let allowed = [acked, next];
        let image = write_image(&cut, live.path(), &mut rng);
        let data = image.path().join("data");
        let kv = KvStore::open(&data.join("state"), options(Fs::default()))
            .unwrap_or_else(|e| panic!("{what}: state/ refused to open: {e}"));
        let mut blocks = BlockStore::open(&data.join("consensus"), options(Fs::default()))
            .unwrap_or_else(|e| panic!("{what}: consensus/ refused to open: {e}"));
        let applied = kv.applied_height();
        // Acknowledging no longer waits for the state's sync, but the next block waits for it:
        // the state is at most one block behind the acknowledgements, and never past the block
        // in flight.
        let previous = steps
            .iter()
            .copied()
            .rev()
            .find(|&h| h < acked)
            .unwrap_or(0);
        assert!(
            [previous, acked, next].contains(&applied),
            "{what}: acknowledged up to height {acked}, state at height {applied}"
        );
        assert_eq!(
            Some(&kv.state_digest()),
            digests.get(&applied),
            "{what}: wrong state"
        );
        let committed = match kv.meta(COMMITTED_META_KEY) {
            None => {
                assert_eq!(applied, 0, "{what}: state without its block");
                Block::genesis_header(&cluster)
            }
            Some(bytes) => decode_header(&bytes).expect("committed header decodes"),
        };
        assert_eq!(committed.height, applied, "{what}: meta and state disagree");
        let durable = blocks
            .load(&cluster, committed, 8)
            .unwrap_or_else(|e| panic!("{what}: consensus state does not load: {e}"));
        // Acknowledged blocks the state lost are in the consensus store, above the state's
        // block: the restarted core commits them again and the state replays them.
        for height in steps.iter().filter(|h| (applied + 1..=acked).contains(*h)) {
            assert!(
                durable.blocks.iter().any(|(_, b)| b.height == *height),
                "{what}: block {height} was acknowledged, the state is at {applied}, and the \
                 consensus store does not hold it to replay"
            );
        }
        let voted = durable.safety.highest_voted_round;
        assert!(
            allowed.contains(&voted),
            "{what}: the safety record went back: round {voted} after {acked} acknowledged"
        );
    }
    println!(
        "node power cuts: {} cut points over {} ops",
        NODE_CUTS + 1,
        log.len()
    );
}

/// Issue 13 item 4: a snapshot this node installed is kept to serve to others. Its offer is
/// written durably, so its data must be durable first: at every cut point of keeping it, an
/// image that holds the offer holds the whole file, and the node never offers a short one.
#[test]
fn a_kept_snapshot_is_complete_whenever_its_offer_survived() {
    use bftd::node::snapshots::SnapshotDir;
    use bftd::types::BlockId;
    use bftd::wire::SnapshotOffer;

    let mut rng = SimRng::new(seed() ^ 0x736e_6170);
    let live = tempfile::tempdir().expect("tempdir");
    let download = live.path().join("incoming.part");
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&download, &contents).expect("write download");
    let offer = SnapshotOffer {
        height: 40,
        block_id: BlockId([4; 32]),
        parent_id: BlockId([3; 32]),
        round: 41,
        state_digest: [9; 32],
        file_bytes: contents.len() as u64,
    };
    let fs = Fs::with_power_log();
    let snapshots_dir = live.path().join("snapshots");
    let mut snapshots = SnapshotDir::open_with(&snapshots_dir, 2, fs.clone()).expect("open");
    snapshots.keep(&download, offer.clone()).expect("keep");
    fs.note("kept");
    let log = fs.power_log();
    let mut cut = PowerCut::new(&log);
    let mut offered = 0;
    for point in 0..=log.len() {
        cut.advance_to(point);
        for _ in 0..8 {
            let image = write_image(&cut, live.path(), &mut rng);
            let dir = image.path().join("snapshots");
            let snap = dir.join(format!("snap-{:020}.snap", offer.height));
            if dir
                .join(format!("snap-{:020}.offer", offer.height))
                .exists()
            {
                let kept = std::fs::read(&snap).unwrap_or_default();
                assert!(
                    kept == contents,
                    "cut at op {point}: the offer survived but the file has {} of {} bytes",
                    kept.len(),
                    contents.len()
                );
                offered += 1;
            }
            if !dir.exists() {
                assert!(
                    cut.notes().is_empty(),
                    "cut at op {point}: the directory is gone"
                );
                continue;
            }
            let reopened = SnapshotDir::open(&dir, 2).expect("reopen");
            if let Some(newest) = reopened.newest() {
                assert_eq!(newest, &offer);
                let served = reopened.chunk(offer.height, 0, 1 << 20);
                assert_eq!(
                    served, contents,
                    "cut at op {point}: a short file is offered"
                );
            } else {
                assert!(
                    cut.notes().is_empty(),
                    "cut at op {point}: the kept snapshot is lost"
                );
            }
        }
    }
    assert!(offered > 0, "no cut point kept the offer");
    // A data dir damaged before this fix (an offer for a short file) is not offered either.
    let damaged = tempfile::tempdir().expect("tempdir");
    {
        let mut snapshots = SnapshotDir::open(damaged.path(), 2).expect("open");
        snapshots.keep(&download, offer.clone()).expect("keep");
    }
    let snap = damaged
        .path()
        .join(format!("snap-{:020}.snap", offer.height));
    std::fs::write(&snap, &contents[..1000]).expect("truncate");
    let leftover = damaged
        .path()
        .join(format!("snap-{:020}.snap.tmp", offer.height + 1));
    std::fs::write(&leftover, &contents[..10]).expect("leftover");
    let reopened = SnapshotDir::open(damaged.path(), 2).expect("reopen");
    assert!(!leftover.exists(), "an interrupted copy is deleted");
    assert!(
        reopened.newest().is_none(),
        "a truncated snapshot is offered"
    );
    assert!(!snap.exists(), "the truncated snapshot is deleted");
    println!(
        "kept snapshot: {} cut points, {offered} images with the offer",
        log.len() + 1
    );
}
