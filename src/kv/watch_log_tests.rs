//! Watch log tests: what a block records, pruning by heights and bytes, and that the log is
//! outside the state (tree, digest, snapshots).

use super::watch_log::{LOG_PREFIX, WatchRetention};
use super::*;
use crate::storage::EngineOptions;

fn open(dir: &std::path::Path) -> KvStore {
    KvStore::open(dir, EngineOptions::default()).unwrap()
}

fn apply_ops(store: &mut KvStore, height: u64, ops: Vec<Op>) {
    let ops = encode_ops(&ops);
    let request = KvRequest {
        client: [5; 32],
        session: 1,
        seq: height,
        ops: &ops,
    };
    store.apply(height, &[request]).unwrap();
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn put_event(key: &str, value: &str, version: u64, height: u64) -> WatchEvent {
    WatchEvent {
        key: key.into(),
        value: Some(VersionedValue {
            value: value.into(),
            version,
            mod_height: height,
            expires_at_ms: None,
        }),
    }
}

fn delete_event(key: &str) -> WatchEvent {
    WatchEvent {
        key: key.into(),
        value: None,
    }
}

fn all_records(store: &KvStore) -> Vec<(u64, Vec<WatchEvent>)> {
    store.watch_read(1, usize::MAX, usize::MAX).unwrap().0
}

#[test]
fn a_block_records_its_final_changes_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    apply_ops(
        &mut store,
        1,
        vec![put("b", "1"), put("a", "1"), put("b", "2")],
    );
    // A read-only block records nothing; a key created and deleted within a block is no change.
    apply_ops(&mut store, 2, vec![Op::Get { key: "a".into() }]);
    apply_ops(
        &mut store,
        3,
        vec![
            put("tmp", "x"),
            Op::Delete { key: "tmp".into() },
            Op::Delete { key: "a".into() },
            Op::DeleteRange {
                start: "b".into(),
                end: Some("c".into()),
            },
        ],
    );
    let expected = vec![
        (
            1,
            vec![put_event("a", "1", 1, 1), put_event("b", "2", 2, 1)],
        ),
        (3, vec![delete_event("a"), delete_event("b")]),
    ];
    assert_eq!(all_records(&store), expected);
    assert_eq!(store.watch_floor(), 0);
    // Reads start where asked and are bounded.
    assert_eq!(
        store.watch_read(2, 10, usize::MAX).unwrap(),
        (expected[1..].to_vec(), true)
    );
    assert_eq!(
        store.watch_read(1, 1, usize::MAX).unwrap(),
        (expected[..1].to_vec(), false)
    );
    assert_eq!(
        store.watch_read(1, 10, 1).unwrap(),
        (expected[..1].to_vec(), false)
    );
    assert_eq!(store.watch_read(4, 10, 1).unwrap(), (Vec::new(), true));
    // The log survives a reopen.
    drop(store);
    let store = open(dir.path());
    assert_eq!(all_records(&store), expected);
}

#[test]
fn pruning_keeps_the_retained_heights_and_bytes_and_moves_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.set_watch_retention(WatchRetention {
        heights: 5,
        bytes: u64::MAX,
    });
    for height in 1..=12 {
        apply_ops(&mut store, height, vec![put("k", &height.to_string())]);
    }
    let heights: Vec<u64> = all_records(&store).iter().map(|r| r.0).collect();
    assert_eq!(heights, (8..=12).collect::<Vec<_>>());
    assert_eq!(store.watch_floor(), 7);
    // Heights without changes still move the floor.
    for height in 13..=20 {
        apply_ops(&mut store, height, vec![Op::Get { key: "k".into() }]);
    }
    assert!(all_records(&store).is_empty());
    assert_eq!((store.watch_floor(), store.watch_log_bytes()), (15, 0));
    // A byte cap drops the oldest records first, never the newest.
    let one_record = {
        apply_ops(&mut store, 21, vec![put("k", "v")]);
        store.watch_log_bytes()
    };
    store.set_watch_retention(WatchRetention {
        heights: 1000,
        bytes: 2 * one_record,
    });
    for height in 22..=25 {
        apply_ops(&mut store, height, vec![put("k", "v")]);
    }
    let heights: Vec<u64> = all_records(&store).iter().map(|r| r.0).collect();
    assert_eq!(heights, vec![24, 25]);
    assert_eq!(store.watch_floor(), 23);
    assert_eq!(store.watch_log_bytes(), 2 * one_record);
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        (store.watch_floor(), store.watch_log_bytes()),
        (23, 2 * one_record)
    );
}

#[test]
fn the_log_is_outside_the_state_tree_digest_and_snapshots() {
    let (a_dir, b_dir, c_dir, snap_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mut a, mut b) = (open(a_dir.path()), open(b_dir.path()));
    // Different retention, so different logs: the state must not differ.
    b.set_watch_retention(WatchRetention {
        heights: 1,
        bytes: u64::MAX,
    });
    for height in 1..=6 {
        for store in [&mut a, &mut b] {
            apply_ops(store, height, vec![put(&format!("k{}", height % 3), "v")]);
        }
    }
    assert_ne!(all_records(&a), all_records(&b));
    assert_eq!(a.state_digest(), b.state_digest());
    assert_eq!(a.tree_root(), b.tree_root());
    let audit = a.audit_tree().unwrap();
    assert!(audit.consistent(), "{audit:?}");
    // A snapshot holds no log entry; the installed store's log starts at its height.
    let path = snap_dir.path().join("snap");
    a.save_snapshot(&path).unwrap();
    let mut c = open(c_dir.path());
    apply_ops(&mut c, 1, vec![put("old", "x")]);
    c.install_snapshot(&path).unwrap();
    assert_eq!(c.state_digest(), a.state_digest());
    assert!(all_records(&c).is_empty());
    assert_eq!(c.watch_floor(), 6);
    let mut log_keys = 0;
    c.engine()
        .scan(&[LOG_PREFIX], Some(&[LOG_PREFIX + 1]), |_, _| {
            log_keys += 1;
            true
        });
    assert_eq!(log_keys, 0);
    apply_ops(&mut c, 7, vec![put("new", "y")]);
    assert_eq!(
        all_records(&c),
        vec![(7, vec![put_event("new", "y", 1, 7)])]
    );
    drop(c);
    assert_eq!(open(c_dir.path()).watch_floor(), 6);
}
