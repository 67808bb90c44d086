//! KV state machine tests: semantics against a model, exactly-once, determinism of the
//! digest, snapshots, and bad input.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::storage::EngineOptions;
use crate::storage::WalOptions;

fn options() -> EngineOptions {
    EngineOptions {
        flush_threshold_bytes: 2048,
        caller_pins_wal: false,
        wal: WalOptions {
            segment_bytes_max: 4096,
            ..WalOptions::default()
        },
        ..EngineOptions::default()
    }
}

fn open(dir: &Path) -> KvStore {
    KvStore::open(dir, options()).unwrap()
}

const ALICE: [u8; 32] = [1; 32];
const BOB: [u8; 32] = [2; 32];

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

/// The session of requests that do not name one.
const SESSION: u64 = 9;

/// Applies one request per `(client, seq, ops)` (in session `SESSION`) as block `height`.
fn apply(store: &mut KvStore, height: u64, requests: &[([u8; 32], u64, Vec<Op>)]) -> Vec<KvReply> {
    let with_session: Vec<_> = requests
        .iter()
        .map(|(client, seq, ops)| (*client, SESSION, *seq, ops.clone()))
        .collect();
    apply_in_sessions(store, height, &with_session)
}

/// Applies one request per `(client, session, seq, ops)` as block `height`.
fn apply_in_sessions(
    store: &mut KvStore,
    height: u64,
    requests: &[([u8; 32], u64, u64, Vec<Op>)],
) -> Vec<KvReply> {
    let encoded: Vec<Vec<u8>> = requests.iter().map(|(.., ops)| encode_ops(ops)).collect();
    let batch: Vec<KvRequest<'_>> = requests
        .iter()
        .zip(&encoded)
        .map(|((client, session, seq, _), ops)| KvRequest {
            client: *client,
            session: *session,
            seq: *seq,
            ops,
        })
        .collect();
    store.apply(height, &batch).unwrap()
}

fn simple(reply: &KvReply, index: usize) -> &OpResult {
    match &reply.reply {
        Reply::Done(results) => match &results[index] {
            OpReply::Simple(result) => result,
            other => panic!("not a simple reply: {other:?}"),
        },
        other => panic!("rejected: {other:?}"),
    }
}

#[test]
fn versions_heights_txn_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let replies = apply(
        &mut store,
        1,
        &[(ALICE, 1, vec![put("a", "1"), put("a", "2"), put("b", "x")])],
    );
    assert_eq!(simple(&replies[0], 1), &OpResult::Put { version: 2 });
    let got = store.get(b"a").unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), got.version, got.mod_height),
        (&b"2"[..], 2, 1)
    );
    let txn = Txn {
        compare: vec![Compare {
            key: b"a".to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(2),
        }],
        success: vec![
            TxnOp::Delete { key: b"b".to_vec() },
            TxnOp::Get { key: b"b".to_vec() },
        ],
        failure: vec![TxnOp::Put {
            key: b"c".to_vec(),
            value: b"no".to_vec(),
        }],
    };
    let replies = apply(&mut store, 5, &[(BOB, 1, vec![Op::Txn(txn.clone())])]);
    assert_eq!(
        replies[0].reply,
        Reply::Done(vec![OpReply::Txn {
            succeeded: true,
            results: vec![
                OpResult::Delete { existed: true },
                OpResult::Get { found: None }
            ]
        }])
    );
    let txn = Txn {
        compare: vec![Compare {
            key: b"b".to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Exists(true),
        }],
        ..txn
    };
    let replies = apply(&mut store, 6, &[(BOB, 2, vec![Op::Txn(txn)])]);
    assert!(
        matches!(&replies[0].reply, Reply::Done(r) if matches!(&r[0], OpReply::Txn { succeeded: false, .. }))
    );
    let replies = apply(
        &mut store,
        7,
        &[(
            BOB,
            3,
            vec![
                put("d", "4"),
                Op::Range {
                    start: b"a".to_vec(),
                    end: None,
                    limit: 2,
                },
            ],
        )],
    );
    let OpResult::Range { entries, more } = simple(&replies[0], 1) else {
        panic!()
    };
    let keys: Vec<&[u8]> = entries.iter().map(|e| e.key.as_slice()).collect();
    assert_eq!((keys, *more), (vec![&b"a"[..], &b"c"[..]], true));
    assert_eq!(store.applied_height(), 7);
    assert!(store.apply(7, &[]).is_err(), "heights must increase");
}

#[test]
fn exactly_once_window_out_of_order_and_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    apply(
        &mut store,
        1,
        &[
            (ALICE, 5, vec![put("k", "a")]),
            (ALICE, 3, vec![put("k", "b")]),
        ],
    );
    // Retries of 5 and 3 return the stored replies and do not run again.
    let replies = apply(
        &mut store,
        2,
        &[
            (ALICE, 3, vec![put("k", "b")]),
            (ALICE, 5, vec![put("k", "a")]),
        ],
    );
    assert!(replies.iter().all(|r| r.from_cache));
    assert_eq!(simple(&replies[0], 0), &OpResult::Put { version: 2 });
    assert_eq!(store.get(b"k").unwrap().unwrap().version, 2);
    // Seq 4 was never run: it runs now, although 5 is higher.
    let replies = apply(&mut store, 3, &[(ALICE, 4, vec![put("k", "c")])]);
    assert_eq!(
        (replies[0].from_cache, simple(&replies[0], 0)),
        (false, &OpResult::Put { version: 3 })
    );
    // Jump far ahead: seq 5 falls out of the window and is rejected as too old.
    apply(&mut store, 4, &[(ALICE, 1000, vec![put("k", "d")])]);
    let replies = apply(&mut store, 5, &[(ALICE, 5, vec![put("k", "e")])]);
    assert_eq!(replies[0].reply, Reply::Rejected(Rejection::SeqTooOld));
    // Bob's window is independent.
    let replies = apply(&mut store, 6, &[(BOB, 5, vec![put("k", "f")])]);
    assert!(!replies[0].from_cache);
    assert_eq!(store.get(b"k").unwrap().unwrap().value, b"f");
}

/// As a session's window slides (by one seq, by a few, and by a jump), exactly the replies of
/// executed seqs inside the window stay stored: the point drops of small slides and the range
/// drop of large ones leave nothing behind and remove nothing still in the window.
#[test]
fn a_sliding_window_keeps_exactly_the_replies_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let window = crate::api::CLIENT_WINDOW_SEQS;
    let (mut seq, mut height) = (0u64, 0u64);
    let mut executed = Vec::new();
    for step in 0..(window + 80) {
        // Mostly the next seq; every 37th step skips 3, every 101st jumps by 20.
        seq += match step % 101 {
            100 => 20,
            _ if step % 37 == 36 => 4,
            _ => 1,
        };
        height += 1;
        apply(&mut store, height, &[(ALICE, seq, vec![put("k", "v")])]);
        executed.push(seq);
        let start = seq.saturating_sub(window - 1);
        let expected: Vec<Vec<u8>> = (executed.iter())
            .filter(|s| **s >= start)
            .map(|s| keys::reply_key(&ALICE, SESSION, *s))
            .collect();
        let stored: Vec<Vec<u8>> = store
            .engine()
            .range(
                &keys::reply_key(&ALICE, SESSION, 0),
                Some(&keys::reply_key(&ALICE, SESSION, u64::MAX)),
                usize::MAX,
            )
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(stored, expected, "after seq {seq} (height {height})");
    }
}

#[test]
fn undecodable_ops_get_a_deterministic_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let garbage = [0xde, 0xad, 0xbe, 0xef, 1, 2, 3];
    let replies = store
        .apply(
            1,
            &[KvRequest {
                client: ALICE,
                session: SESSION,
                seq: 1,
                ops: &garbage,
            }],
        )
        .unwrap();
    assert_eq!(replies[0].reply, Reply::Rejected(Rejection::Malformed));
    let replies = store
        .apply(
            2,
            &[KvRequest {
                client: ALICE,
                session: SESSION,
                seq: 1,
                ops: &garbage,
            }],
        )
        .unwrap();
    assert!(replies[0].from_cache);
    assert_eq!(
        decode_reply(&encode_reply(&replies[0].reply)).unwrap(),
        replies[0].reply
    );
    assert!(decode_reply(&garbage).is_err());
}

#[test]
fn snapshot_round_trip_and_rejections() {
    let (a_dir, b_dir, snap_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut a = open(a_dir.path());
    let mut b = open(b_dir.path());
    for height in 1..=30u64 {
        let key = format!("key{}", height % 7);
        apply(
            &mut a,
            height,
            &[(ALICE, height, vec![put(&key, &height.to_string())])],
        );
    }
    apply(&mut b, 1, &[(BOB, 1, vec![put("stale", "x")])]);
    let path = snap_dir.path().join("snap");
    let info = a.save_snapshot(&path).unwrap();
    assert_eq!(b.install_snapshot(&path).unwrap(), info);
    assert_eq!(
        (b.state_digest(), b.applied_height()),
        (a.state_digest(), 30)
    );
    assert_eq!(b.get(b"stale").unwrap(), None);
    // key0..key6: the install replaced b's one key by a's seven.
    assert_eq!((a.key_count(), b.key_count()), (7, 7));
    // Both continue identically, including the exactly-once table, across a reopen.
    drop(b);
    let mut b = open(b_dir.path());
    for store in [&mut a, &mut b] {
        let replies = apply(
            store,
            31,
            &[
                (ALICE, 30, vec![put("key2", "30")]),
                (ALICE, 31, vec![put("x", "z")]),
            ],
        );
        assert!(replies[0].from_cache && !replies[1].from_cache);
    }
    assert_eq!(a.state_digest(), b.state_digest());
    assert_eq!(
        (a.key_count(), b.key_count()),
        (8, 8),
        "x is new, across the reopen"
    );
    // An ahead store refuses; corrupt files give errors naming the path.
    assert!(b.install_snapshot(&path).is_err());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 4;
    std::fs::write(&path, &bytes).unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut fresh = open(fresh_dir.path());
    let error = fresh.install_snapshot(&path).unwrap_err();
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    std::fs::write(&path, &bytes[..10]).unwrap();
    assert!(fresh.install_snapshot(&path).unwrap_err().is_corruption());
}

/// Recomputes the state tree from a full scan of the state entries, to check the incremental
/// one: the stored nodes must be exactly the tree's (nothing stale, nothing missing).
pub(super) fn digest_from_scratch(store: &KvStore) -> [u8; 32] {
    let mut leaves = super::leaves::LeafFolder::new();
    let mut stored_nodes = Vec::new();
    store.engine().scan(&[], None, |key, value| {
        if key[0] == keys::TREE_PREFIX {
            stored_nodes.push((key.to_vec(), value.to_vec()));
        } else {
            leaves.push(key, value);
        }
        true
    });
    let (nodes, root) = state_tree::build_from_leaves(&mut leaves.finish());
    assert!(
        stored_nodes == nodes,
        "the stored nodes are the tree of the entries"
    );
    let audit = store.audit_tree().unwrap();
    assert!(audit.consistent(), "{audit:?}");
    assert_eq!(audit.recomputed_root, root);
    crate::api::proof::state_digest(store.applied_height(), &root)
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, u8),
    Delete(u8),
    Get(u8),
    Range(u8, u8, u32),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0u8..12, any::<u8>()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        2 => (0u8..12).prop_map(ModelOp::Delete),
        1 => (0u8..12).prop_map(ModelOp::Get),
        1 => (0u8..12, 0u8..12, 0u32..6).prop_map(|(a, b, l)| ModelOp::Range(a, b, l)),
    ]
}

fn to_op(op: &ModelOp) -> Op {
    let key = |k: u8| vec![b'k', k];
    match *op {
        ModelOp::Put(k, v) => Op::Put {
            key: key(k),
            value: vec![v],
        },
        ModelOp::Delete(k) => Op::Delete { key: key(k) },
        ModelOp::Get(k) => Op::Get { key: key(k) },
        ModelOp::Range(a, b, limit) => Op::Range {
            start: key(a),
            end: Some(key(b)),
            limit,
        },
    }
}

/// The model's answer: (value, version, mod_height) per key.
fn model_result(
    model: &mut BTreeMap<Vec<u8>, (Vec<u8>, u64, u64)>,
    height: u64,
    op: &Op,
) -> OpResult {
    let versioned = |(value, version, mod_height): &(Vec<u8>, u64, u64)| VersionedValue {
        value: value.clone(),
        version: *version,
        mod_height: *mod_height,
        expires_at_ms: None,
    };
    match op {
        Op::Put { key, value } => {
            let version = model.get(key).map_or(1, |e| e.1 + 1);
            model.insert(key.clone(), (value.clone(), version, height));
            OpResult::Put { version }
        }
        Op::Delete { key } => OpResult::Delete {
            existed: model.remove(key).is_some(),
        },
        Op::Get { key } => OpResult::Get {
            found: model.get(key).map(versioned),
        },
        Op::Range {
            start,
            end: Some(end),
            limit,
        } => {
            let all: Vec<KeyValue> = if start < end {
                model
                    .range(start.clone()..end.clone())
                    .map(|(k, e)| KeyValue {
                        key: k.clone(),
                        value: versioned(e),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let more = all.len() > *limit as usize;
            OpResult::Range {
                entries: all.into_iter().take(*limit as usize).collect(),
                more,
            }
        }
        _ => unreachable!("the model generates no other ops"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Two stores fed the same blocks, one of them reopened, flushed and compacted along the
    /// way, answer like the model and agree on the digest, which matches a full recomputation
    /// of the state tree; proofs of present and absent keys verify against the root.
    #[test]
    fn kv_matches_model_and_digests_agree(blocks in proptest::collection::vec(proptest::collection::vec(model_op(), 1..6), 1..25), reopen_every in 2usize..6) {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (open(a_dir.path()), open(b_dir.path()));
        let mut model = BTreeMap::new();
        for (index, block) in blocks.iter().enumerate() {
            let height = index as u64 + 1;
            let ops: Vec<Op> = block.iter().map(to_op).collect();
            let request = [(ALICE, height, ops.clone())];
            let replies_a = apply(&mut a, height, &request);
            let replies_b = apply(&mut b, height, &request);
            prop_assert_eq!(&replies_a, &replies_b);
            let want: Vec<OpReply> = ops.iter().map(|op| OpReply::Simple(model_result(&mut model, height, op))).collect();
            prop_assert_eq!(&replies_a[0].reply, &Reply::Done(want));
            prop_assert_eq!(a.state_digest(), b.state_digest());
            prop_assert_eq!(digest_from_scratch(&a), a.state_digest());
            // The kept key count is exact, in the store that never reopened and in the other.
            prop_assert_eq!(a.key_count(), model.len() as u64);
            prop_assert_eq!(b.key_count(), model.len() as u64);
            for k in 0u8..14 {
                let key = [b'k', k];
                let proven = b.prove(&key).unwrap().verify(&b.tree_root(), &key).unwrap();
                let proven = proven.map(|bytes| keys::decode_versioned(&bytes, &key).unwrap());
                prop_assert_eq!(proven, b.get(&key).unwrap());
            }
            if index % reopen_every == 0 {
                b.engine().flush().unwrap();
                b.engine().compact().unwrap();
                drop(b);
                b = open(b_dir.path());
                prop_assert_eq!(a.state_digest(), b.state_digest());
            }
        }
        prop_assert_eq!(digest_from_scratch(&b), b.state_digest());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes as ops (and mutated valid encodings) never panic, and every node
    /// answers them identically.
    #[test]
    fn hostile_ops_bytes_are_deterministic(garbage in proptest::collection::vec(any::<u8>(), 0..200), flip in any::<usize>()) {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (open(a_dir.path()), open(b_dir.path()));
        let mut mutated = encode_ops(&[put("k", "v"), Op::Get { key: b"k".to_vec() }]);
        let at = flip % mutated.len();
        mutated[at] ^= 0x5a;
        let requests = [
            KvRequest { client: ALICE, session: SESSION, seq: 1, ops: &garbage },
            KvRequest { client: BOB, session: SESSION, seq: 1, ops: &mutated },
        ];
        let replies_a = a.apply(1, &requests).unwrap();
        let replies_b = b.apply(1, &requests).unwrap();
        prop_assert_eq!(replies_a, replies_b);
        prop_assert_eq!(a.state_digest(), b.state_digest());
    }
}

mod sessions {
    //! The exactly-once table keyed by `(client, session, seq)`: processes sharing a key.

    use super::*;
    use crate::kv::exactly_once::{self, CLIENT_SESSIONS_MAX, SESSIONS_MAX};
    use crate::kv::overlay::BlockOverlay;

    fn ops_digest(ops: &[Op]) -> [u8; 32] {
        *blake3::hash(&encode_ops(ops)).as_bytes()
    }

    #[test]
    fn two_sessions_with_the_same_seq_both_run_and_keep_their_own_replies() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let replies = apply_in_sessions(
            &mut store,
            1,
            &[
                (ALICE, 1, 100, vec![put("a", "1")]),
                (ALICE, 2, 100, vec![put("b", "2")]),
            ],
        );
        assert!(replies.iter().all(|r| !r.from_cache));
        assert_eq!(store.get(b"a").unwrap().unwrap().value, b"1");
        assert_eq!(store.get(b"b").unwrap().unwrap().value, b"2");
        let retry = store
            .cached_reply(&ALICE, 2, 100, &ops_digest(&[put("b", "2")]))
            .unwrap();
        assert_eq!(retry, Some(replies[1].reply.clone()));
    }

    #[test]
    fn another_request_under_a_used_id_gets_seq_reused_never_the_stored_reply() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        apply_in_sessions(&mut store, 1, &[(ALICE, 1, 7, vec![put("k", "mine")])]);
        let other = vec![put("k", "theirs")];
        let replies = apply_in_sessions(&mut store, 2, &[(ALICE, 1, 7, other.clone())]);
        assert_eq!(replies[0].reply, Reply::Rejected(Rejection::SeqReused));
        assert!(!replies[0].from_cache);
        assert_eq!(replies[0].ops_digest, ops_digest(&other));
        assert_eq!(
            store.get(b"k").unwrap().unwrap().value,
            b"mine",
            "not executed"
        );
        let retry = store
            .cached_reply(&ALICE, 1, 7, &ops_digest(&other))
            .unwrap();
        assert_eq!(retry, Some(Reply::Rejected(Rejection::SeqReused)));
        let same = store
            .cached_reply(&ALICE, 1, 7, &ops_digest(&[put("k", "mine")]))
            .unwrap();
        assert!(matches!(same, Some(Reply::Done(_))), "{same:?}");
    }

    #[test]
    fn refusals_of_retries_carry_no_node_local_value() {
        // Two nodes at different applied heights answer a too-old retry with the same bytes.
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (open(a_dir.path()), open(b_dir.path()));
        for store in [&mut a, &mut b] {
            apply(store, 1, &[(ALICE, 5, vec![put("k", "1")])]);
            apply(store, 2, &[(ALICE, 1000, vec![put("k", "2")])]);
        }
        apply(&mut a, 3, &[(ALICE, 5000, vec![put("k", "3")])]);
        let digest = ops_digest(&[put("k", "1")]);
        let answer_a = a.cached_reply(&ALICE, SESSION, 5, &digest).unwrap();
        let answer_b = b.cached_reply(&ALICE, SESSION, 5, &digest).unwrap();
        assert_eq!(answer_a, Some(Reply::Rejected(Rejection::SeqTooOld)));
        assert_eq!(
            answer_a.map(|r| encode_reply(&r)),
            answer_b.map(|r| encode_reply(&r))
        );
    }

    /// Opens `count` sessions of `client` (session ids `first..`), one block each from `height`.
    fn open_sessions(store: &mut KvStore, client: [u8; 32], first: u64, count: u64, height: u64) {
        for i in 0..count {
            let seq = 1_000 + i;
            apply_in_sessions(
                store,
                height + i,
                &[(client, first + i, seq, vec![put("x", "y")])],
            );
        }
    }

    #[test]
    fn a_client_keeps_at_most_its_session_limit_and_evicts_the_least_recently_used() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (open(a_dir.path()), open(b_dir.path()));
        for store in [&mut a, &mut b] {
            open_sessions(store, ALICE, 0, CLIENT_SESSIONS_MAX, 1);
            // Session 0 is used again, so session 1 is now the least recently used.
            let h = CLIENT_SESSIONS_MAX + 1;
            apply_in_sessions(store, h, &[(ALICE, 0, 1_000_000, vec![put("x", "z")])]);
            // One more session evicts session 1.
            apply_in_sessions(
                store,
                h + 1,
                &[(ALICE, 999, 2_000_000, vec![put("n", "1")])],
            );
        }
        assert_eq!(
            a.state_digest(),
            b.state_digest(),
            "eviction is deterministic"
        );
        let overlay = BlockOverlay::new(&a.engine);
        let live = exactly_once::live_sessions(&overlay, &ALICE);
        drop(overlay);
        assert_eq!(live.len() as u64, CLIENT_SESSIONS_MAX);
        assert!(!live.contains(&1) && live.contains(&0) && live.contains(&999));
        // A retry of the evicted session's seq may have run: refused, never run again.
        let retry = vec![put("x", "y")];
        let replies = apply_in_sessions(&mut a, 1_000, &[(ALICE, 1, 1_001, retry.clone())]);
        assert_eq!(replies[0].reply, Reply::Rejected(Rejection::SessionExpired));
        let answer = a
            .cached_reply(&ALICE, 1, 1_001, &ops_digest(&retry))
            .unwrap();
        assert_eq!(answer, Some(Reply::Rejected(Rejection::SessionExpired)));
        // Bob's sessions are not Alice's business.
        let replies = apply_in_sessions(&mut a, 1_001, &[(BOB, 1, 1, vec![put("b", "1")])]);
        assert!(matches!(replies[0].reply, Reply::Done(_)));
    }

    #[test]
    fn all_clients_together_keep_at_most_the_session_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        // Every client key opens one session; the first client's is the oldest.
        let blocks = 8;
        let per_block = SESSIONS_MAX / blocks;
        let client = |i: u64| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_be_bytes());
            key[8] = 0xc1;
            key
        };
        for block in 0..blocks {
            let requests: Vec<_> = (block * per_block..(block + 1) * per_block)
                .map(|i| (client(i), 5, 10, vec![Op::Get { key: b"g".to_vec() }]))
                .collect();
            apply_in_sessions(&mut store, block + 1, &requests);
        }
        let newcomer = (client(SESSIONS_MAX), 5, 10, vec![put("n", "1")]);
        let replies = apply_in_sessions(&mut store, blocks + 1, &[newcomer]);
        assert!(matches!(replies[0].reply, Reply::Done(_)));
        let overlay = BlockOverlay::new(&store.engine);
        assert!(
            exactly_once::live_sessions(&overlay, &client(0)).is_empty(),
            "oldest evicted"
        );
        assert_eq!(exactly_once::live_sessions(&overlay, &client(1)), vec![5]);
        drop(overlay);
        let replies = apply_in_sessions(&mut store, blocks + 2, &[(client(0), 5, 10, vec![])]);
        assert_eq!(replies[0].reply, Reply::Rejected(Rejection::SessionExpired));
    }
}

#[test]
fn delete_range_is_atomic_bounded_and_seen_by_later_ops() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let keys = ["a", "ab", "abc", "b"];
    apply(
        &mut store,
        1,
        &[(ALICE, 1, keys.iter().map(|k| put(k, "v")).collect())],
    );
    let replies = apply(
        &mut store,
        2,
        &[(
            ALICE,
            2,
            vec![
                Op::DeleteRange {
                    start: b"a".to_vec(),
                    end: Some(b"b".to_vec()),
                },
                Op::Range {
                    start: vec![],
                    end: None,
                    limit: 10,
                },
            ],
        )],
    );
    assert_eq!(
        simple(&replies[0], 0),
        &OpResult::DeleteRange {
            deleted: 3,
            more: false
        }
    );
    let OpResult::Range { entries, .. } = simple(&replies[0], 1) else {
        panic!("expected a range result")
    };
    let left: Vec<&[u8]> = entries.iter().map(|e| e.key.as_slice()).collect();
    assert_eq!(left, vec![&b"b"[..]]);
    // More keys than one delete may remove: the first RANGE_LIMIT_MAX go, `more` says so.
    use crate::api::ops::{OPS_PER_REQUEST_MAX, RANGE_LIMIT_MAX};
    let many: Vec<String> = (0..=RANGE_LIMIT_MAX).map(|i| format!("k{i:05}")).collect();
    let requests: Vec<([u8; 32], u64, Vec<Op>)> = many
        .chunks(OPS_PER_REQUEST_MAX)
        .enumerate()
        .map(|(i, chunk)| {
            (
                BOB,
                i as u64 + 1,
                chunk.iter().map(|k| put(k, "v")).collect(),
            )
        })
        .collect();
    apply(&mut store, 3, &requests);
    let delete = Op::DeleteRange {
        start: b"k".to_vec(),
        end: Some(b"l".to_vec()),
    };
    let replies = apply(&mut store, 4, &[(ALICE, 3, vec![delete.clone()])]);
    assert_eq!(
        simple(&replies[0], 0),
        &OpResult::DeleteRange {
            deleted: u64::from(RANGE_LIMIT_MAX),
            more: true
        }
    );
    let replies = apply(&mut store, 5, &[(ALICE, 4, vec![delete])]);
    assert_eq!(
        simple(&replies[0], 0),
        &OpResult::DeleteRange {
            deleted: 1,
            more: false
        }
    );
}
