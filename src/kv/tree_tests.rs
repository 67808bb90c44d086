//! The state tree inside the store: root maintenance across many blocks, reopen, flush and
//! compaction, snapshot install and `verify_file`, proofs, and the old meta layout refused.

use std::path::Path;

use super::keys::{self, decode_versioned};
use super::node_cache::NodeCache;
use super::snapshot::verify_file;
use super::state_tree::Chunk;
use super::{KvRequest, KvStore, Op, encode_ops};
use crate::api::proof::{EMPTY_SUBTREE_HASH, ProofError, ProofTerminal, state_digest};
use crate::storage::{EngineOptions, WalOptions, WriteBatch};
use crate::util::rng::SimRng;

fn options() -> EngineOptions {
    EngineOptions {
        flush_threshold_bytes: 16 * 1024,
        caller_pins_wal: false,
        wal: WalOptions {
            segment_bytes_max: 64 * 1024,
            ..WalOptions::default()
        },
        ..EngineOptions::default()
    }
}

fn open(dir: &Path) -> KvStore {
    KvStore::open(dir, options()).unwrap()
}

/// Applies `ops` as one request of a fresh seq, as block `height`.
fn apply(store: &mut KvStore, height: u64, ops: Vec<Op>) {
    let encoded = encode_ops(&ops);
    let request = KvRequest {
        client: [3; 32],
        session: 1,
        seq: height,
        ops: &encoded,
    };
    store.apply(height, &[request]).unwrap();
}

/// Random puts and deletes over `keys` keys, `blocks` blocks from height `first`.
fn random_blocks(store: &mut KvStore, rng: &mut SimRng, first: u64, blocks: u64, keys: u64) {
    for height in first..first + blocks {
        let ops = (0..rng.range(1, 40))
            .map(|_| {
                let key = format!("key{}", rng.range(0, keys - 1)).into_bytes();
                if rng.chance(0.25) {
                    Op::Delete { key }
                } else {
                    let value = format!("v{}", rng.next_u64()).into_bytes();
                    Op::Put { key, value }
                }
            })
            .collect();
        apply(store, height, ops);
    }
}

fn assert_consistent(store: &KvStore) {
    let audit = store.audit_tree().unwrap();
    assert!(audit.consistent(), "{audit:?}");
    assert_eq!(
        store.state_digest(),
        state_digest(store.applied_height(), &audit.recomputed_root)
    );
}

/// Every key of `0..keys` proves what the store holds: present keys their entry, absent keys
/// their absence.
fn assert_proofs(store: &KvStore, keys: u64) -> (usize, usize) {
    let root = store.tree_root();
    let (mut present, mut absent) = (0, 0);
    for i in 0..keys {
        let key = format!("key{i}").into_bytes();
        let proof = store.prove(&key).unwrap();
        let proven = proof.verify(&root, &key).unwrap();
        let proven = proven.map(|bytes| decode_versioned(&bytes, &key).unwrap());
        assert_eq!(proven, store.get(&key).unwrap(), "key{i}");
        if proven.is_some() {
            present += 1;
        } else {
            absent += 1;
        }
    }
    (present, absent)
}

#[test]
fn the_incremental_root_matches_a_recomputation_through_reopen_flush_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    assert_eq!(store.tree_root(), EMPTY_SUBTREE_HASH);
    let mut rng = SimRng::new(12);
    for round in 0..6u64 {
        random_blocks(&mut store, &mut rng, round * 20 + 1, 20, 400);
        assert_consistent(&store);
        let digest = store.state_digest();
        match round % 3 {
            0 => store.engine().flush().unwrap(),
            1 => {
                store.engine().flush().unwrap();
                store.engine().compact().unwrap();
            }
            _ => {}
        }
        drop(store);
        store = open(dir.path());
        assert_eq!(store.state_digest(), digest, "round {round}");
        assert_consistent(&store);
    }
    let (present, absent) = assert_proofs(&store, 450);
    assert!(present > 100 && absent > 50, "{present} {absent}");
}

#[test]
fn snapshot_install_rebuilds_the_tree_and_verify_file_recomputes_the_root() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut source = open(dirs[0].path());
    let mut rng = SimRng::new(5);
    random_blocks(&mut source, &mut rng, 1, 40, 300);
    let path = dirs[2].path().join("state.snap");
    let saved = source.save_snapshot(&path).unwrap();
    assert_eq!(verify_file(&path).unwrap(), saved);
    assert_eq!(saved.state_digest, source.state_digest());

    let mut target = open(dirs[1].path());
    random_blocks(&mut target, &mut rng, 1, 3, 50); // state the install replaces
    assert_eq!(target.install_snapshot(&path).unwrap(), saved);
    assert_eq!(target.tree_root(), source.tree_root());
    assert_consistent(&target);
    assert_proofs(&target, 320);
    drop(target);
    let mut target = open(dirs[1].path());
    assert_eq!(target.state_digest(), source.state_digest());
    // Both go on identically from the installed state.
    random_blocks(&mut source, &mut SimRng::new(9), 41, 10, 300);
    random_blocks(&mut target, &mut SimRng::new(9), 41, 10, 300);
    assert_eq!(target.state_digest(), source.state_digest());
    assert_consistent(&target);
}

#[test]
fn verify_file_refuses_a_changed_entry_with_a_recomputed_checksum() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut source = open(dirs[0].path());
    apply(
        &mut source,
        1,
        vec![Op::Put {
            key: b"k".to_vec(),
            value: b"honest".to_vec(),
        }],
    );
    let path = dirs[1].path().join("s.snap");
    source.save_snapshot(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"honest")
        .expect("the value is in the file");
    bytes[at] = b'H';
    let body = bytes.len() - 32;
    let checksum = *blake3::hash(&bytes[..body]).as_bytes();
    bytes[body..].copy_from_slice(&checksum);
    std::fs::write(&path, &bytes).unwrap();
    let error = verify_file(&path).unwrap_err();
    assert!(error.to_string().contains("state tree"), "{error}");
    // A truncated file and trailing garbage are refused too.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(verify_file(&path).unwrap_err().is_corruption());
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(verify_file(&path).unwrap_err().is_corruption());
}

#[test]
fn proofs_from_the_store_reject_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    random_blocks(&mut store, &mut SimRng::new(77), 1, 30, 200);
    let root = store.tree_root();
    let present = (0..200)
        .map(|i| format!("key{i}").into_bytes())
        .find(|k| store.get(k).unwrap().is_some())
        .unwrap();
    let proof = store.prove(&present).unwrap();
    let ProofTerminal::Entry(entry) = &proof.terminal else {
        panic!("a present key has a membership proof");
    };
    let mut wrong = entry.clone();
    *wrong.last_mut().unwrap() ^= 1;
    let mut forged = proof.clone();
    forged.terminal = ProofTerminal::Entry(wrong);
    assert_eq!(
        forged.verify(&root, &present),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        proof.verify(&root, b"not-the-key"),
        Err(ProofError::RootMismatch)
    );
    let mut other_root = root;
    other_root[0] ^= 1;
    assert_eq!(
        proof.verify(&other_root, &present),
        Err(ProofError::RootMismatch)
    );
    // A proof of the state before a write does not verify against the state after it.
    apply(
        &mut store,
        31,
        vec![Op::Put {
            key: present.clone(),
            value: b"new".to_vec(),
        }],
    );
    assert_eq!(
        proof.verify(&store.tree_root(), &present),
        Err(ProofError::RootMismatch)
    );
}

#[test]
fn a_state_written_with_the_additive_digest_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    apply(&mut store, 1, vec![Op::Delete { key: b"x".to_vec() }]);
    let mut old_meta = 1u64.to_le_bytes().to_vec();
    old_meta.extend_from_slice(&[9; 32]);
    let mut batch = WriteBatch::new();
    batch.put(keys::META_KEY.to_vec(), old_meta);
    store.engine().write(&batch).unwrap();
    drop(store);
    let error = KvStore::open(dir.path(), options()).err().expect("refused");
    assert!(
        error.to_string().contains("additive state digest"),
        "{error}"
    );
}

#[test]
fn a_store_of_an_earlier_tree_layout_is_refused_clearly() {
    for layout in [2u32, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        random_blocks(&mut store, &mut SimRng::new(4), 1, 3, 50);
        let mut meta = store.applied_height().to_le_bytes().to_vec();
        meta.extend_from_slice(&store.tree_root());
        meta.extend_from_slice(&layout.to_le_bytes());
        let mut batch = WriteBatch::new();
        batch.put(keys::META_KEY.to_vec(), meta);
        store.engine().write(&batch).unwrap();
        drop(store);
        let error = KvStore::open(dir.path(), options()).err().expect("refused");
        let text = error.to_string();
        assert!(
            text.contains(&format!("meta layout {layout}")) && text.contains("empty data dirs"),
            "{text}"
        );
    }
}

/// Blocks of several pipelined requests from a few sessions, seqs out of order within a block
/// and the window sliding past 256: reply groups are created, changed and emptied, and the
/// incremental root stays the recomputed one (through a reopen too).
#[test]
fn reply_groups_follow_sliding_windows_of_pipelining_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut rng = SimRng::new(11);
    let mut next_seq = [1000u64, 5_000_000, 17];
    for height in 1..=60u64 {
        let mut batch: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for (session, next) in next_seq.iter_mut().enumerate() {
            let count = rng.range(0, 30);
            let mut seqs: Vec<u64> = (*next..*next + count).collect();
            *next += count;
            // Pipelined requests commit out of order.
            if seqs.len() > 2 {
                seqs.swap(0, 2);
            }
            for seq in seqs {
                let key = format!("key{}", rng.range(0, 200)).into_bytes();
                let ops = encode_ops(&[Op::Put {
                    key,
                    value: seq.to_le_bytes().to_vec(),
                }]);
                batch.push((session as u64 + 1, seq, ops));
            }
        }
        let requests: Vec<KvRequest<'_>> = batch
            .iter()
            .map(|(session, seq, ops)| KvRequest {
                client: [4; 32],
                session: *session,
                seq: *seq,
                ops,
            })
            .collect();
        store.apply(height, &requests).unwrap();
        if height % 10 == 0 {
            assert_eq!(
                super::tests::digest_from_scratch(&store),
                store.state_digest(),
                "height {height}"
            );
        }
    }
    let digest = store.state_digest();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.state_digest(), digest);
    assert_consistent(&store);
}

#[test]
fn a_meta_entry_of_an_unknown_layout_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    apply(&mut store, 1, vec![Op::Delete { key: b"x".to_vec() }]);
    let mut meta = 1u64.to_le_bytes().to_vec();
    meta.extend_from_slice(&[9; 32]);
    meta.extend_from_slice(&9u32.to_le_bytes());
    let mut batch = WriteBatch::new();
    batch.put(keys::META_KEY.to_vec(), meta);
    store.engine().write(&batch).unwrap();
    drop(store);
    let error = KvStore::open(dir.path(), options()).err().expect("refused");
    assert!(error.to_string().contains("layout 9"), "{error}");
}

#[test]
fn a_verified_read_from_the_store_checks_against_its_state_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    random_blocks(&mut store, &mut SimRng::new(3), 1, 10, 100);
    let certified = store.state_digest();
    let height = store.applied_height();
    for i in 0..110 {
        let key = format!("key{i}").into_bytes();
        let read = store.verified_read(&key).unwrap();
        assert_eq!(read.height, height);
        let value = read.verify(&key, &certified, height).unwrap();
        assert_eq!(value, store.get(&key).unwrap(), "key{i}");
    }
}

/// An entry changed behind the state machine's back (as an edited WAL record with a fixed CRC
/// would) leaves the kept tree describing the old entry; `realign_tree` finds it, rebuilds the
/// tree from the entries, and the published root then describes what the store holds.
#[test]
fn realign_rebuilds_a_tree_that_no_longer_describes_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut rng = SimRng::new(7);
    random_blocks(&mut store, &mut rng, 1, 30, 200);
    assert_eq!(
        store.realign_tree().unwrap(),
        None,
        "an intact store is left alone"
    );
    let honest = store.state_digest();
    let (key, entry) = {
        let mut found = None;
        store.engine().scan(&[keys::DATA_PREFIX], None, |k, v| {
            found = Some((k.to_vec(), v.to_vec()));
            false
        });
        found.expect("a data entry")
    };
    let mut damaged = entry.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x55;
    let mut batch = WriteBatch::new();
    batch.put(key, damaged);
    store.engine().write(&batch).unwrap();
    drop(store);

    let mut store = open(dir.path());
    assert_eq!(
        store.state_digest(),
        honest,
        "the kept tree still claims the old state"
    );
    let audit = store.realign_tree().unwrap().expect("the damage is found");
    assert!(!audit.consistent());
    assert_ne!(store.state_digest(), honest);
    assert_consistent(&store);
    assert_eq!(store.realign_tree().unwrap(), None);
    drop(store);
    let store = open(dir.path());
    assert_consistent(&store);
}

/// Every chunk the store's tree cache holds is the chunk its engine holds under that key.
fn assert_cache_matches_engine(store: &KvStore) {
    for (key, cached) in store.tree_cache.entries() {
        let stored = store
            .engine()
            .get(&key)
            .map(|b| Chunk::decode(&b, &key).unwrap());
        assert_eq!(stored.as_ref(), Some(&*cached), "cached chunk {key:02x?}");
    }
}

#[test]
fn the_tree_node_cache_never_disagrees_with_the_engine() {
    // A store with the default cache, one whose cache fills up after 12 KiB, and one with
    // none: the same blocks give the same roots, and every cached chunk is the stored chunk.
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut stores: Vec<KvStore> = dirs[..3].iter().map(|d| open(d.path())).collect();
    stores[1].tree_cache = NodeCache::new(12 * 1024);
    stores[2].tree_cache = NodeCache::new(0);
    for round in 0..8u64 {
        for store in &mut stores {
            random_blocks(store, &mut SimRng::new(round), round * 10 + 1, 10, 300);
            assert_cache_matches_engine(store);
        }
        assert_eq!(
            stores[0].tree_root(),
            stores[2].tree_root(),
            "round {round}"
        );
        assert_eq!(
            stores[1].tree_root(),
            stores[2].tree_root(),
            "round {round}"
        );
        if round == 3 {
            stores[0].engine().flush().unwrap();
            stores[0].engine().compact().unwrap();
        }
    }
    assert!(stores[0].tree_cache.len() > 40, "the tree is cached");
    assert!(stores[1].tree_cache.bytes() <= 12 * 1024, "the bound holds");
    assert!(
        stores[1].tree_cache.len() < stores[0].tree_cache.len() && !stores[1].tree_cache.is_empty(),
        "the small cache is full"
    );
    assert!(stores[2].tree_cache.is_empty());
    assert_consistent(&stores[0]);
    assert_eq!(
        assert_proofs(&stores[0], 320),
        assert_proofs(&stores[2], 320)
    );

    // Reopened without its cache, the store has the same root and goes on like the others.
    let root = stores[0].tree_root();
    drop(stores.remove(0));
    let mut reopened = open(dirs[0].path());
    assert!(reopened.tree_cache.is_empty());
    assert_eq!(reopened.tree_root(), root);
    random_blocks(&mut reopened, &mut SimRng::new(99), 81, 5, 300);
    random_blocks(&mut stores[1], &mut SimRng::new(99), 81, 5, 300);
    assert_eq!(reopened.tree_root(), stores[1].tree_root());
    assert_cache_matches_engine(&reopened);

    // A snapshot install replaces the tree: the cache is cleared, and stays in step after.
    let path = dirs[3].path().join("state.snap");
    stores[0].save_snapshot(&path).unwrap(); // the small-cache store, at height 80
    let fresh = tempfile::tempdir().unwrap();
    let mut target = open(fresh.path());
    random_blocks(&mut target, &mut SimRng::new(8), 1, 10, 300);
    assert!(!target.tree_cache.is_empty());
    target.install_snapshot(&path).unwrap();
    assert!(target.tree_cache.is_empty(), "install clears the cache");
    assert_eq!(target.tree_root(), stores[0].tree_root());
    random_blocks(&mut target, &mut SimRng::new(5), 81, 10, 300);
    random_blocks(&mut stores[0], &mut SimRng::new(5), 81, 10, 300);
    assert_eq!(target.tree_root(), stores[0].tree_root());
    assert_cache_matches_engine(&target);
    assert_consistent(&target);
}

/// Reads as of a recent height through the undo log prove exactly what the store held at that
/// height (a model of every height's state), against that height's root; older heights and
/// wrong roots are refused.
#[test]
fn verified_reads_as_of_recent_heights_match_every_height_state() {
    use std::collections::BTreeMap;

    use super::ReadAsOfError;
    use crate::api::verified_read::decode_entry;

    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.set_undo_bounds(4, usize::MAX);
    let mut rng = SimRng::new(7);
    let keys = 24u64;
    let mut roots: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    let mut states: BTreeMap<u64, Vec<Option<Vec<u8>>>> = BTreeMap::new();
    for height in 1..=30u64 {
        random_blocks(&mut store, &mut rng, height, 1, keys);
        roots.insert(height, store.state_digest());
        let state = (0..keys)
            .map(|i| {
                let key = format!("key{i}").into_bytes();
                store.get(&key).unwrap().map(|v| v.value)
            })
            .collect();
        states.insert(height, state);
        let from = store.readable_from();
        assert_eq!(from, height.saturating_sub(4), "height {height}");
        for h in from.max(1)..=height {
            for i in 0..keys {
                let key = format!("key{i}").into_bytes();
                let read = store.verified_read_as_of(&key, h, &roots[&h]).unwrap();
                assert_eq!(read.height, h);
                assert_eq!(state_digest(h, &read.tree_root), roots[&h]);
                let proven = read.proof.verify(&read.tree_root, &key).unwrap();
                let value = proven.map(|e| decode_entry(&e).unwrap().value);
                assert_eq!(
                    value, states[&h][i as usize],
                    "as of {h} at {height}, key{i}"
                );
            }
        }
        if height > 5 {
            let old = height - 5;
            assert!(matches!(
                store.verified_read_as_of(b"key1", old, &roots[&old]),
                Err(ReadAsOfError::NotReadable { .. })
            ));
            // The current state against an older root: the tree does not fold to it.
            let prev = roots[&(height - 1)];
            if prev != roots[&height] {
                assert!(matches!(
                    store.verified_read_as_of(b"key1", height, &prev),
                    Err(ReadAsOfError::Unprovable(_))
                ));
            }
        }
    }
    // New bounds start empty: only the applied height reads.
    store.set_undo_bounds(4, usize::MAX);
    assert_eq!(store.readable_from(), store.applied_height());
}
