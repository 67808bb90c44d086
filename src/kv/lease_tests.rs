//! Lease tests: grant, attach, keep-alive, revoke and expiry from block time; a plain put or a
//! delete detaches; the bounds (leases, keys per lease, deletions per block); transactions
//! with puts on a lease are all or nothing; the same state root on two stores, after a
//! snapshot install and after reopening; and the table's invariants after every step.

use std::collections::BTreeMap;

use super::expiry::EXPIRED_PER_BLOCK_MAX;
use super::keys::{
    self, LEASE_COUNT_KEY, LEASE_EXPIRY_PREFIX, LEASE_KEYS_PREFIX, LEASE_PREFIX, data_end,
    decode_entry_with_lease,
};
use super::ops::{LEASE_ID_MAX, LEASE_KEYS_MAX, LEASES_MAX};
use super::*;
use crate::storage::EngineOptions;

fn open(dir: &std::path::Path) -> KvStore {
    KvStore::open(dir, EngineOptions::default()).unwrap()
}

/// Applies `ops` as one request of block `height` at `time_ms`; its per-op replies.
fn run(store: &mut KvStore, height: u64, time_ms: u64, ops: Vec<Op>) -> Vec<OpReply> {
    let ops = encode_ops(&ops);
    let request = KvRequest {
        client: [6; 32],
        session: 1,
        seq: height,
        ops: &ops,
    };
    let mut replies = store.apply_at(height, time_ms, &[request]).unwrap();
    check_invariants(store);
    match replies.pop().map(|r| r.reply) {
        Some(Reply::Done(ops)) => ops,
        other => panic!("{other:?}"),
    }
}

fn tick(store: &mut KvStore, height: u64, time_ms: u64) {
    store.apply_at(height, time_ms, &[]).unwrap();
    check_invariants(store);
}

fn grant(id: u64, ttl_ms: u64) -> Op {
    Op::LeaseGrant { id, ttl_ms }
}

fn put_lease(key: &str, lease: u64) -> Op {
    Op::PutLease {
        key: key.into(),
        value: b"l".to_vec(),
        lease,
    }
}

fn put(key: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: b"p".to_vec(),
    }
}

fn ttl(id: u64) -> Op {
    Op::LeaseTimeToLive { id, keys: true }
}

fn lease_status(reply: &OpReply) -> LeaseStatus {
    match reply {
        OpReply::Simple(OpResult::LeaseTimeToLive(status)) => (**status).clone(),
        other => panic!("{other:?}"),
    }
}

fn not_found(id: u64) -> OpReply {
    OpReply::Failed(OpError::LeaseNotFound { id })
}

/// The lease table against the data entries: every record has its expiry entry, every key
/// naming a lease has its index entry and the record counts them, `nleases` counts records.
fn check_invariants(store: &KvStore) {
    let engine = store.engine();
    let scan = |prefix: u8| engine.range(&[prefix], Some(&[prefix + 1]), usize::MAX);
    let mut records = BTreeMap::new();
    for (key, value) in scan(LEASE_PREFIX) {
        let id = keys::parse_lease_key(&key).unwrap();
        let words: Vec<u64> = value
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        records.insert(id, (words[1], words[2]));
    }
    let expiry: Vec<(u64, u64)> = scan(LEASE_EXPIRY_PREFIX)
        .iter()
        .map(|(k, _)| keys::parse_lease_expiry_key(k).unwrap())
        .collect();
    let mut from_records: Vec<(u64, u64)> =
        records.iter().map(|(id, (at, _))| (*at, *id)).collect();
    from_records.sort_unstable();
    assert_eq!(expiry, from_records, "one expiry entry per lease");
    let mut attached: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, value) in engine.range(&[keys::DATA_PREFIX], Some(&data_end()), usize::MAX) {
        if let (_, Some(id)) = decode_entry_with_lease(&value, &key).unwrap() {
            attached.entry(id).or_default().push(key[1..].to_vec());
        }
    }
    let mut indexed: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, _) in scan(LEASE_KEYS_PREFIX) {
        let id = u64::from_be_bytes(key[1..9].try_into().unwrap());
        indexed.entry(id).or_default().push(key[9..].to_vec());
    }
    assert_eq!(attached, indexed, "the key index is the entries' leases");
    for (id, (_, count)) in &records {
        let n = attached.get(id).map_or(0, Vec::len) as u64;
        assert_eq!(*count, n, "lease {id} counts its keys");
        assert!(n <= LEASE_KEYS_MAX as u64);
    }
    assert!(
        attached.keys().all(|id| records.contains_key(id)),
        "no key names a missing lease"
    );
    let count = engine
        .get(LEASE_COUNT_KEY)
        .map_or(0, |b| u64::from_le_bytes(b[..8].try_into().unwrap()));
    assert_eq!(count, records.len() as u64, "nleases counts the records");
}

#[test]
fn grant_attach_keep_alive_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let r = run(&mut s, 1, 1_000, vec![grant(0, 500), grant(0, 500)]);
    assert_eq!(
        r,
        vec![
            OpReply::Simple(OpResult::Lease {
                id: 1,
                ttl_ms: 500,
                expires_at_ms: 1_500
            }),
            OpReply::Simple(OpResult::Lease {
                id: 2,
                ttl_ms: 500,
                expires_at_ms: 1_500
            }),
        ],
        "id 0 picks the lowest free id from the counter"
    );
    let r = run(
        &mut s,
        2,
        1_100,
        vec![put_lease("b", 1), put_lease("a", 1), ttl(1)],
    );
    assert_eq!(r[0], OpReply::Simple(OpResult::Put { version: 1 }));
    let status = lease_status(&r[2]);
    assert_eq!(
        (status.ttl_ms, status.expires_at_ms, status.block_time_ms),
        (500, 1_500, 1_100)
    );
    assert_eq!(status.key_count, 2);
    assert_eq!(status.keys, Some(vec![b"a".to_vec(), b"b".to_vec()]));
    assert_eq!(s.next_expiry_ms(), Some(1_500));
    let r = run(&mut s, 3, 1_400, vec![Op::LeaseKeepAlive { id: 1 }]);
    assert_eq!(
        r[0],
        OpReply::Simple(OpResult::Lease {
            id: 1,
            ttl_ms: 500,
            expires_at_ms: 1_900
        })
    );
    tick(&mut s, 4, 1_600); // lease 2 (no keys) expires; lease 1 was kept alive
    assert_eq!(s.expired_last_block(), 1);
    assert!(s.get(b"a").unwrap().is_some());
    assert_eq!(
        run(&mut s, 5, 1_601, vec![Op::LeaseList])[0],
        OpReply::Simple(OpResult::LeaseList { ids: vec![1] })
    );
    let r = run(&mut s, 6, 1_700, vec![Op::LeaseRevoke { id: 1 }, ttl(1)]);
    assert_eq!(
        r,
        vec![
            OpReply::Simple(OpResult::LeaseRevoke { id: 1, deleted: 2 }),
            not_found(1)
        ]
    );
    assert_eq!((s.get(b"a").unwrap(), s.get(b"b").unwrap()), (None, None));
    assert_eq!((s.key_count(), s.next_expiry_ms()), (0, None));
    let (records, _) = s.watch_read(6, usize::MAX, usize::MAX).unwrap();
    let deleted: Vec<(Vec<u8>, bool)> = records[0]
        .1
        .iter()
        .map(|e| (e.key.clone(), e.value.is_none()))
        .collect();
    assert_eq!(
        deleted,
        vec![(b"a".to_vec(), true), (b"b".to_vec(), true)],
        "watchers see the revoke's deletes"
    );
    super::tests::digest_from_scratch(&s);
}

#[test]
fn a_plain_put_or_a_delete_detaches_and_a_lease_put_moves_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    run(&mut s, 1, 1_000, vec![grant(7, 1_000), grant(8, 1_000)]);
    run(
        &mut s,
        2,
        1_000,
        vec![
            put_lease("a", 7),
            put_lease("b", 7),
            put_lease("c", 7),
            put_lease("c", 7),
        ],
    );
    assert_eq!(
        lease_status(&run(&mut s, 3, 1_000, vec![ttl(7)])[0]).key_count,
        3
    );
    let r = run(
        &mut s,
        4,
        1_000,
        vec![
            put("a"),
            Op::Delete { key: b"b".to_vec() },
            put_lease("c", 8),
            ttl(7),
            ttl(8),
        ],
    );
    assert_eq!(r[0], OpReply::Simple(OpResult::Put { version: 2 }));
    assert_eq!(lease_status(&r[3]).keys, Some(vec![]));
    assert_eq!(lease_status(&r[4]).keys, Some(vec![b"c".to_vec()]));
    let r = run(
        &mut s,
        5,
        1_000,
        vec![Op::LeaseRevoke { id: 7 }, Op::LeaseRevoke { id: 8 }],
    );
    assert_eq!(
        r[0],
        OpReply::Simple(OpResult::LeaseRevoke { id: 7, deleted: 0 })
    );
    assert_eq!(
        r[1],
        OpReply::Simple(OpResult::LeaseRevoke { id: 8, deleted: 1 })
    );
    assert_eq!(s.get(b"a").unwrap().map(|v| v.value), Some(b"p".to_vec()));
    assert_eq!((s.get(b"c").unwrap(), s.key_count()), (None, 1));
    // A range delete detaches too.
    run(
        &mut s,
        6,
        1_000,
        vec![grant(9, 1_000), put_lease("r1", 9), put_lease("r2", 9)],
    );
    let r = run(
        &mut s,
        7,
        1_000,
        vec![
            Op::DeleteRange {
                start: b"r".to_vec(),
                end: Some(b"s".to_vec()),
            },
            ttl(9),
        ],
    );
    assert_eq!(lease_status(&r[1]).key_count, 0);
}

#[test]
fn a_lease_not_kept_alive_expires_with_its_keys_at_the_first_block_past_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    run(
        &mut s,
        1,
        1_000,
        vec![
            grant(3, 100),
            put_lease("x", 3),
            put_lease("y", 3),
            put("z"),
        ],
    );
    assert_eq!(s.next_expiry_ms(), Some(1_100), "the idle leader's cue");
    tick(&mut s, 2, 1_099);
    assert_eq!((s.expired_last_block(), s.key_count()), (0, 3));
    tick(&mut s, 3, 1_100);
    assert_eq!(s.expired_last_block(), 3, "two keys and the lease record");
    assert_eq!((s.get(b"x").unwrap(), s.key_count()), (None, 1));
    assert_eq!(s.next_expiry_ms(), None);
    let r = run(
        &mut s,
        4,
        1_200,
        vec![
            Op::LeaseKeepAlive { id: 3 },
            put_lease("x", 3),
            Op::LeaseRevoke { id: 3 },
        ],
    );
    assert_eq!(r, vec![not_found(3), not_found(3), not_found(3)]);
    assert_eq!(s.get(b"x").unwrap(), None, "a failed put changes nothing");
    // Expired but not yet collected (due in this very block, after the expiry pass would
    // have run had it been due before): keep-alive at exactly the expiry time fails.
    run(&mut s, 5, 2_000, vec![grant(4, 100)]);
    let r = run(
        &mut s,
        6,
        2_100,
        vec![Op::LeaseKeepAlive { id: 4 }, grant(4, 5)],
    );
    assert_eq!(r[0], not_found(4));
    assert_eq!(
        r[1],
        OpReply::Simple(OpResult::Lease {
            id: 4,
            ttl_ms: 5,
            expires_at_ms: 2_105
        }),
        "the expired lease was collected first, so its id is free again"
    );
}

#[test]
fn errors_are_per_operation_and_ids_are_checked_by_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let r = run(
        &mut s,
        1,
        1_000,
        vec![grant(5, 100), grant(5, 100), put("after")],
    );
    assert_eq!(r[1], OpReply::Failed(OpError::LeaseExists { id: 5 }));
    assert_eq!(r[2], OpReply::Simple(OpResult::Put { version: 1 }));
    for op in [
        grant(LEASE_ID_MAX + 1, 100),
        Op::LeaseKeepAlive { id: 0 },
        Op::LeaseRevoke { id: 0 },
        put_lease("k", 0),
        ttl(u64::MAX),
    ] {
        assert_eq!(
            decode_ops(&encode_ops(&[op])),
            Err(Rejection::LeaseIdOutOfRange)
        );
    }
    assert_eq!(
        decode_ops(&encode_ops(&[grant(1, 0)])),
        Err(Rejection::TtlOutOfRange)
    );
    assert!(decode_ops(&encode_ops(&[grant(LEASE_ID_MAX, ops::TTL_MS_MAX)])).is_ok());
    assert!(
        OpError::LeaseFull { id: 3 }
            .to_string()
            .contains(&LEASE_KEYS_MAX.to_string()),
        "errors name the limit"
    );
}

#[test]
fn keys_per_lease_and_leases_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    run(&mut s, 1, 0, vec![grant(1, 1_000_000)]);
    let mut height = 1;
    let keys: Vec<String> = (0..LEASE_KEYS_MAX).map(|i| format!("k{i:05}")).collect();
    for chunk in keys.chunks(250) {
        height += 1;
        run(
            &mut s,
            height,
            0,
            chunk.iter().map(|k| put_lease(k, 1)).collect(),
        );
    }
    height += 1;
    let r = run(
        &mut s,
        height,
        0,
        vec![put_lease("one-more", 1), put_lease("k00000", 1)],
    );
    assert_eq!(r[0], OpReply::Failed(OpError::LeaseFull { id: 1 }));
    assert_eq!(
        r[1],
        OpReply::Simple(OpResult::Put { version: 2 }),
        "re-putting an attached key does not count twice"
    );
    // The lease table's own bound.
    let ids: Vec<u64> = (2..=LEASES_MAX as u64 + 1).collect();
    for chunk in ids.chunks(250) {
        height += 1;
        let r = run(
            &mut s,
            height,
            0,
            chunk.iter().map(|id| grant(*id, 10)).collect(),
        );
        if chunk.contains(&(LEASES_MAX as u64 + 1)) {
            assert_eq!(r.last(), Some(&OpReply::Failed(OpError::TooManyLeases)));
        }
    }
    match &run(&mut s, height + 1, 0, vec![Op::LeaseList])[0] {
        OpReply::Simple(OpResult::LeaseList { ids }) => assert_eq!(ids.len(), LEASES_MAX),
        other => panic!("{other:?}"),
    }
}

#[test]
fn expiry_of_a_large_lease_stays_within_the_per_block_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    run(&mut s, 1, 1_000, vec![grant(1, 100)]);
    let mut height = 1;
    for chunk in (0..LEASE_KEYS_MAX).collect::<Vec<_>>().chunks(250) {
        height += 1;
        let ops = chunk
            .iter()
            .map(|i| put_lease(&format!("l{i:05}"), 1))
            .collect();
        run(&mut s, height, 1_000, ops);
    }
    // TTL keys due at the same time take part of the same budget, first.
    let ttl_keys = 300;
    for chunk in (0..ttl_keys).collect::<Vec<_>>().chunks(150) {
        height += 1;
        let ops = chunk
            .iter()
            .map(|i| Op::PutTtl {
                key: format!("t{i:05}").into(),
                value: vec![],
                ttl_ms: 50,
            })
            .collect();
        run(&mut s, height, 1_000, ops);
    }
    let total = (LEASE_KEYS_MAX + ttl_keys) as u64;
    assert_eq!(s.key_count(), total);
    height += 1;
    tick(&mut s, height, 5_000);
    assert_eq!(s.expired_last_block(), EXPIRED_PER_BLOCK_MAX);
    assert_eq!(s.key_count(), total - EXPIRED_PER_BLOCK_MAX as u64);
    assert!(
        s.next_expiry_ms().is_some_and(|at| at <= 5_000),
        "the rest is due at once, so the idle leader proposes again"
    );
    // The lease is expired while its keys are being deleted: it is gone for every operation.
    height += 1;
    let r = run(
        &mut s,
        height,
        5_001,
        vec![Op::LeaseKeepAlive { id: 1 }, ttl(1)],
    );
    assert_eq!(r, vec![not_found(1), not_found(1)]);
    assert_eq!(s.key_count(), 0, "that block took the rest");
    assert_eq!(s.next_expiry_ms(), None, "and the lease record");
}

#[test]
fn a_transaction_with_puts_on_a_lease_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    run(&mut s, 1, 1_000, vec![grant(1, 10_000)]);
    let txn = |lease: u64| {
        Op::Txn(Txn {
            compare: vec![],
            success: vec![
                TxnOp::Put {
                    key: b"plain".to_vec(),
                    value: b"v".to_vec(),
                },
                TxnOp::PutLease {
                    key: b"leased".to_vec(),
                    value: b"v".to_vec(),
                    lease,
                },
            ],
            failure: vec![],
        })
    };
    let r = run(&mut s, 2, 1_000, vec![txn(2)]);
    assert_eq!(r[0], not_found(2));
    assert_eq!(s.key_count(), 0, "nothing of the failed transaction ran");
    let r = run(&mut s, 3, 1_000, vec![txn(1), ttl(1)]);
    assert_eq!(
        r[0],
        OpReply::Txn {
            succeeded: true,
            results: vec![OpResult::Put { version: 1 }, OpResult::Put { version: 1 }]
        }
    );
    assert_eq!(lease_status(&r[1]).key_count, 1);
    // A transaction's delete detaches.
    let del = Op::Txn(Txn {
        compare: vec![],
        success: vec![TxnOp::Delete {
            key: b"leased".to_vec(),
        }],
        failure: vec![],
    });
    let r = run(&mut s, 4, 1_000, vec![del, ttl(1)]);
    assert_eq!(lease_status(&r[1]).key_count, 0);
}

#[test]
fn two_stores_a_snapshot_and_a_reopen_agree_on_leases() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = open(a_dir.path());
    let mut b = open(b_dir.path());
    let blocks: Vec<(u64, Vec<Op>)> = vec![
        (
            1_000,
            vec![grant(0, 300), grant(0, 5_000), put_lease("a", 1)],
        ),
        (1_100, vec![put_lease("b", 2), put_lease("c", 1), put("d")]),
        (1_200, vec![Op::LeaseKeepAlive { id: 1 }]),
        (1_400, vec![put("c")]),
    ];
    for (i, (time_ms, ops)) in blocks.iter().enumerate() {
        run(&mut a, i as u64 + 1, *time_ms, ops.clone());
        run(&mut b, i as u64 + 1, *time_ms, ops.clone());
        assert_eq!(a.state_digest(), b.state_digest(), "block {i}");
    }
    assert_eq!(a.state_digest(), super::tests::digest_from_scratch(&a));
    let snap = a_dir.path().join("snap");
    a.save_snapshot(&snap).unwrap();
    let d_dir = tempfile::tempdir().unwrap();
    let mut d = open(d_dir.path());
    d.install_snapshot(&snap).unwrap();
    assert_eq!(d.state_digest(), a.state_digest());
    assert_eq!(d.next_expiry_ms(), Some(1_500));
    drop(b);
    let mut b = open(b_dir.path());
    assert_eq!(b.state_digest(), a.state_digest(), "reopened");
    for store in [&mut a, &mut b, &mut d] {
        tick(store, 5, 1_500);
        assert_eq!(store.get(b"a").unwrap(), None, "lease 1 expired at 1500");
        assert!(
            store.get(b"c").unwrap().is_some(),
            "detached by the plain put"
        );
        assert!(store.get(b"b").unwrap().is_some(), "lease 2 is live");
    }
    assert_eq!(a.state_digest(), b.state_digest());
    assert_eq!(a.state_digest(), d.state_digest());
    let audit = d.audit_tree().unwrap();
    assert!(audit.consistent(), "{audit:?}");
}
