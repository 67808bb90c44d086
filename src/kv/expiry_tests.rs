//! Key expiry tests: the entry layout, expiry order, the per-block bound and its carry-over,
//! the index kept with every write and delete, determinism of the state root (two stores,
//! and a snapshot), and that expired keys are ordinary deletes for the watch log.

use super::expiry::{EXPIRED_PER_BLOCK_MAX, next_expiry_ms};
use super::keys::{EXPIRY_PREFIX, decode_versioned, encode_entry, encode_versioned};
use super::*;
use crate::storage::EngineOptions;

fn open(dir: &std::path::Path) -> KvStore {
    KvStore::open(dir, EngineOptions::default()).unwrap()
}

/// Applies `ops` as one request of block `height` at block time `time_ms`.
fn apply_at(store: &mut KvStore, height: u64, time_ms: u64, ops: Vec<Op>) -> Vec<KvReply> {
    let ops = encode_ops(&ops);
    let request = KvRequest {
        client: [5; 32],
        session: 1,
        seq: height,
        ops: &ops,
    };
    store.apply_at(height, time_ms, &[request]).unwrap()
}

/// An empty block (no requests) at `time_ms`.
fn tick(store: &mut KvStore, height: u64, time_ms: u64) {
    store.apply_at(height, time_ms, &[]).unwrap();
}

fn put_ttl(key: &str, ttl_ms: u64) -> Op {
    Op::PutTtl {
        key: key.into(),
        value: b"v".to_vec(),
        ttl_ms,
    }
}

fn put(key: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: b"p".to_vec(),
    }
}

fn index_len(store: &KvStore) -> usize {
    store
        .engine()
        .range(&[EXPIRY_PREFIX], Some(&[EXPIRY_PREFIX + 1]), usize::MAX)
        .len()
}

#[test]
fn entries_without_expiry_keep_their_layout_and_expiring_ones_carry_it() {
    let plain = encode_versioned(3, 7, b"abc");
    assert_eq!(plain.len(), 16 + 3, "the pre-TTL layout is unchanged");
    let v = decode_versioned(&plain, b"dk").unwrap();
    assert_eq!((v.version, v.mod_height, v.expires_at_ms), (3, 7, None));
    let timed = encode_entry(3, 7, Some(1_234), b"abc");
    let v = decode_versioned(&timed, b"dk").unwrap();
    assert_eq!(
        (v.version, v.mod_height, v.expires_at_ms, v.value.as_slice()),
        (3, 7, Some(1_234), &b"abc"[..])
    );
    assert!(
        decode_versioned(&timed[..20], b"dk").is_err(),
        "a cut expiry is an error"
    );
}

#[test]
fn keys_expire_in_time_order_at_the_first_block_past_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let replies = apply_at(
        &mut s,
        1,
        1_000,
        vec![put_ttl("late", 500), put_ttl("early", 100), put("keep")],
    );
    match &replies[0].reply {
        Reply::Done(ops) => assert_eq!(
            ops[1],
            OpReply::Simple(OpResult::PutTtl {
                version: 1,
                expires_at_ms: 1_100
            })
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get(b"early").unwrap().unwrap().expires_at_ms, Some(1_100));
    assert_eq!(s.next_expiry_ms(), Some(1_100));
    tick(&mut s, 2, 1_099);
    assert!(
        s.get(b"early").unwrap().is_some(),
        "not due before its time"
    );
    assert_eq!(s.expired_last_block(), 0);
    tick(&mut s, 3, 1_100);
    assert_eq!(s.expired_last_block(), 1, "the runtime tells consensus");
    assert!(
        s.get(b"early").unwrap().is_none(),
        "due at exactly its time"
    );
    assert!(s.get(b"late").unwrap().is_some());
    assert_eq!(s.next_expiry_ms(), Some(1_500));
    tick(&mut s, 4, 9_000);
    assert!(s.get(b"late").unwrap().is_none());
    assert!(s.get(b"keep").unwrap().is_some(), "a key without TTL stays");
    assert_eq!(
        (s.next_expiry_ms(), index_len(&s), s.key_count()),
        (None, 0, 1)
    );
}

#[test]
fn expiry_runs_before_the_block_requests_and_writes_keep_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    apply_at(&mut s, 1, 1_000, vec![put_ttl("a", 100), put_ttl("b", 100)]);
    apply_at(
        &mut s,
        2,
        1_050,
        vec![put("a"), Op::Delete { key: b"b".to_vec() }],
    );
    assert_eq!(
        index_len(&s),
        0,
        "a plain put and a delete drop the index entry"
    );
    assert_eq!(s.get(b"a").unwrap().unwrap().expires_at_ms, None);
    tick(&mut s, 3, 5_000);
    assert!(
        s.get(b"a").unwrap().is_some(),
        "made permanent by the plain put"
    );
    // Re-putting with a new TTL moves the expiry; the block's own requests see the key gone
    // when it expired in that block.
    apply_at(&mut s, 4, 6_000, vec![put_ttl("c", 100)]);
    apply_at(&mut s, 5, 6_050, vec![put_ttl("c", 1_000)]);
    assert_eq!(index_len(&s), 1);
    let replies = apply_at(&mut s, 6, 7_050, vec![Op::Get { key: b"c".to_vec() }]);
    match &replies[0].reply {
        Reply::Done(ops) => assert_eq!(ops[0], OpReply::Simple(OpResult::Get { found: None })),
        other => panic!("{other:?}"),
    }
    // A range delete removes the index entries of what it deletes.
    apply_at(
        &mut s,
        7,
        8_000,
        vec![put_ttl("d1", 100), put_ttl("d2", 100)],
    );
    apply_at(
        &mut s,
        8,
        8_001,
        vec![Op::DeleteRange {
            start: b"d".to_vec(),
            end: None,
        }],
    );
    assert_eq!((index_len(&s), s.next_expiry_ms()), (0, None));
}

#[test]
fn work_per_block_is_bounded_and_the_rest_carries_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let total = EXPIRED_PER_BLOCK_MAX + 250;
    let mut height = 0;
    for chunk in (0..total).collect::<Vec<_>>().chunks(200) {
        height += 1;
        let ops = chunk
            .iter()
            .map(|i| put_ttl(&format!("k{i:05}"), 10 + (*i as u64 % 7)))
            .collect();
        apply_at(&mut s, height, 1_000, ops);
    }
    assert_eq!(s.key_count(), total as u64);
    tick(&mut s, height + 1, 1_000_000);
    assert_eq!(s.key_count(), 250, "one block expires at most the bound");
    let next = s.next_expiry_ms().unwrap();
    assert!(next <= 1_016, "the rest is still due: {next}");
    tick(&mut s, height + 2, 1_000_001);
    assert_eq!((s.key_count(), index_len(&s)), (0, 0));
}

#[test]
fn two_stores_reach_the_same_root_and_a_snapshot_carries_the_index() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = open(a_dir.path());
    let mut b = open(b_dir.path());
    let blocks: Vec<(u64, Vec<Op>)> = vec![
        (1_000, vec![put_ttl("x", 50), put_ttl("y", 300), put("z")]),
        (1_040, vec![put_ttl("x", 50)]),
        (1_100, vec![]),
        (1_400, vec![put_ttl("w", 10_000)]),
    ];
    for (i, (time_ms, ops)) in blocks.iter().enumerate() {
        apply_at(&mut a, i as u64 + 1, *time_ms, ops.clone());
        apply_at(&mut b, i as u64 + 1, *time_ms, ops.clone());
        assert_eq!(a.state_digest(), b.state_digest(), "block {i}");
    }
    assert_eq!(
        a.get(b"y").unwrap(),
        None,
        "expired at 1300, gone by the 1400 block"
    );
    // The same blocks at other times give another state: the time is part of it.
    let c_dir = tempfile::tempdir().unwrap();
    let mut c = open(c_dir.path());
    for (i, (time_ms, ops)) in blocks.iter().enumerate() {
        apply_at(&mut c, i as u64 + 1, time_ms + 1, ops.clone());
    }
    assert_ne!(a.state_digest(), c.state_digest());
    // A snapshot holds the expiry index: the installed store expires like the source.
    let snap = a_dir.path().join("snap");
    a.save_snapshot(&snap).unwrap();
    let d_dir = tempfile::tempdir().unwrap();
    let mut d = open(d_dir.path());
    d.install_snapshot(&snap).unwrap();
    assert_eq!(d.state_digest(), a.state_digest());
    assert_eq!(next_expiry_ms(d.engine()), Some(11_400));
    tick(&mut a, 5, 20_000);
    tick(&mut d, 5, 20_000);
    assert_eq!(d.state_digest(), a.state_digest());
    assert_eq!(d.get(b"w").unwrap(), None);
}

#[test]
fn expired_keys_are_deletes_in_the_watch_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    apply_at(&mut s, 1, 1_000, vec![put_ttl("t", 100)]);
    tick(&mut s, 2, 1_100);
    let (records, _) = s.watch_read(2, usize::MAX, usize::MAX).unwrap();
    assert_eq!(
        records,
        vec![(
            2,
            vec![WatchEvent {
                key: b"t".to_vec(),
                value: None
            }]
        )]
    );
}

#[test]
fn ttl_bounds_are_checked_by_the_decoder() {
    for ttl_ms in [0, ops::TTL_MS_MAX + 1] {
        let bytes = encode_ops(&[put_ttl("k", ttl_ms)]);
        assert_eq!(decode_ops(&bytes), Err(Rejection::TtlOutOfRange));
    }
    assert!(decode_ops(&encode_ops(&[put_ttl("k", ops::TTL_MS_MAX)])).is_ok());
}
