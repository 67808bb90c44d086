//! Root memory tests: the roots of recent heights survive a reopen, stay bounded, and are
//! replaced by the new state's own root on a snapshot install and a tree realignment; a store
//! without them (an old data dir) remembers just its current root.

use super::root_memory::{ROOT_MEMORY_HEIGHTS, root_key};
use super::*;
use crate::storage::{EngineOptions, WriteBatch};

fn open(dir: &std::path::Path) -> KvStore {
    KvStore::open(dir, EngineOptions::default()).unwrap()
}

/// Applies `heights` blocks of one put each and returns each height's state digest.
fn apply_blocks(
    store: &mut KvStore,
    heights: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, [u8; 32])> {
    let mut roots = Vec::new();
    for height in heights {
        let ops = encode_ops(&[Op::Put {
            key: format!("k{}", height % 7).into_bytes(),
            value: height.to_le_bytes().to_vec(),
        }]);
        let request = KvRequest {
            client: [3; 32],
            session: 1,
            seq: height,
            ops: &ops,
        };
        store.apply(height, &[request]).unwrap();
        roots.push((height, store.state_digest()));
    }
    roots
}

#[test]
fn a_reopened_store_remembers_the_roots_of_the_heights_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    assert_eq!(
        store.recent_roots().unwrap(),
        vec![(0, store.state_digest())]
    );
    let roots = apply_blocks(&mut store, 1..=20);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.recent_roots().unwrap(), roots);
}

#[test]
fn the_memory_keeps_only_the_last_heights() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let last = ROOT_MEMORY_HEIGHTS + 40;
    let roots = apply_blocks(&mut store, 1..=last);
    let recent = store.recent_roots().unwrap();
    assert_eq!(recent.len(), ROOT_MEMORY_HEIGHTS as usize);
    assert_eq!(recent, roots[roots.len() - ROOT_MEMORY_HEIGHTS as usize..]);
    // The entries that fell out were deleted in their blocks' batches, not just skipped.
    let stored = root_memory::stored(store.engine()).unwrap();
    assert_eq!(stored.len(), ROOT_MEMORY_HEIGHTS as usize);
    assert_eq!(stored.first().map(|r| r.0), Some(41));
}

#[test]
fn a_store_without_the_memory_remembers_only_its_current_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    apply_blocks(&mut store, 1..=5);
    // As a data dir written before the memory existed: no entries at all.
    let mut batch = WriteBatch::new();
    for height in 0..=5 {
        batch.delete(root_key(height));
    }
    store.engine().write(&batch).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.recent_roots().unwrap(),
        vec![(5, store.state_digest())]
    );
}

#[test]
fn only_the_unbroken_run_ending_at_the_current_root_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let roots = apply_blocks(&mut store, 1..=10);
    let mut batch = WriteBatch::new();
    batch.delete(root_key(6));
    store.engine().write(&batch).unwrap();
    assert_eq!(store.recent_roots().unwrap(), roots[6..]);
    // A top entry that is not the current root: nothing older is trusted either.
    let mut batch = WriteBatch::new();
    batch.put(root_key(10), vec![9; 32]);
    store.engine().write(&batch).unwrap();
    assert_eq!(
        store.recent_roots().unwrap(),
        vec![(10, store.state_digest())]
    );
    // A malformed entry is an error, not a root.
    let mut batch = WriteBatch::new();
    batch.put(root_key(9), vec![9; 31]);
    store.engine().write(&batch).unwrap();
    let error = store.recent_roots().unwrap_err();
    assert!(error.is_corruption(), "{error}");
}

#[test]
fn a_snapshot_install_replaces_the_memory_by_the_installed_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = open(&dir.path().join("source"));
    apply_blocks(&mut source, 1..=30);
    let path = dir.path().join("snap");
    source.save_snapshot(&path).unwrap();
    let mut target = open(&dir.path().join("target"));
    apply_blocks(&mut target, 1..=12);
    target.install_snapshot(&path).unwrap();
    let installed = vec![(30, source.state_digest())];
    assert_eq!(target.recent_roots().unwrap(), installed);
    assert_eq!(root_memory::stored(target.engine()).unwrap(), installed);
    let roots = apply_blocks(&mut target, 31..=33);
    drop(target);
    let target = open(&dir.path().join("target"));
    let mut expected = installed;
    expected.extend(roots);
    assert_eq!(target.recent_roots().unwrap(), expected);
}

#[test]
fn a_realigned_tree_forgets_the_roots_of_the_tree_found_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    apply_blocks(&mut store, 1..=8);
    // Damage a data entry behind the state machine's back (checksums stay valid).
    let mut batch = WriteBatch::new();
    batch.put(keys::data_key(b"k1"), vec![0; 17]);
    store.engine().write(&batch).unwrap();
    drop(store);
    let mut store = open(dir.path());
    assert!(store.realign_tree().unwrap().is_some());
    let realigned = vec![(8, store.state_digest())];
    assert_eq!(store.recent_roots().unwrap(), realigned);
    assert_eq!(root_memory::stored(store.engine()).unwrap(), realigned);
}
