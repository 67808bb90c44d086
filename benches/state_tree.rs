//! Cost of maintaining the state tree (criterion).
//!
//! A store is loaded with 100,000 keys (100-byte values), then each iteration applies one block
//! of 100 puts to random existing keys:
//! - `state_tree/apply_block_100_puts`: the whole `KvStore::apply_nowait` of the block (ops,
//!   exactly-once table, tree update, one engine batch; not the fsync), the state tree included;
//! - `state_tree/tree_update_100_leaves`: only the tree's part of it, `TreeUpdate::apply` of
//!   100 changed leaves over the same store, reading (and decoding) every chunk from the
//!   engine: the cost without the store's chunk cache (`kv::node_cache`), as after a restart or
//!   for the part of a tree larger than the cache. Its chunk writes are what the block's batch
//!   then carries.
//!
//! Elements are puts, so criterion reports puts/s; the time per put is the cost per write.
//! Data directories live under `target/` (a real disk, see `benches/storage.rs`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bftd::api::proof::{key_path, value_hash};
use bftd::kv::keys::data_key;
use bftd::kv::state_tree::{Change, TreeUpdate, decoding};
use bftd::kv::{KvRequest, KvStore, Op, encode_ops};
use bftd::storage::EngineOptions;
use bftd::util::rng::SimRng;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const STORE_KEYS: u64 = 100_000;
const BLOCK_PUTS: u64 = 100;
const VALUE_BYTES: usize = 100;
const LOAD_OPS_PER_REQUEST: u64 = 250;
const LOAD_REQUESTS_PER_BLOCK: u64 = 8;

fn bench_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

/// Applies one block of `requests` (each a list of ops) with fresh seqs.
fn apply_block(store: &mut KvStore, height: u64, seq: &mut u64, requests: Vec<Vec<Op>>) {
    let encoded: Vec<Vec<u8>> = requests.iter().map(|ops| encode_ops(ops)).collect();
    let batch: Vec<KvRequest<'_>> = encoded
        .iter()
        .map(|ops| {
            *seq += 1;
            KvRequest {
                client: [5; 32],
                session: 1,
                seq: *seq,
                ops,
            }
        })
        .collect();
    let (_, lsn) = store.apply_nowait(height, 0, &batch, &[]).expect("apply");
    black_box(lsn);
}

/// A store of `STORE_KEYS` keys, its next height and next seq.
fn loaded_store(dir: &std::path::Path) -> (KvStore, u64, u64) {
    let options = EngineOptions {
        caller_pins_wal: false,
        ..EngineOptions::default()
    };
    let mut store = KvStore::open(dir, options).expect("open");
    let (mut height, mut seq) = (0, 0);
    let mut next = 0;
    while next < STORE_KEYS {
        height += 1;
        let mut requests = Vec::new();
        for _ in 0..LOAD_REQUESTS_PER_BLOCK {
            let end = (next + LOAD_OPS_PER_REQUEST).min(STORE_KEYS);
            let ops = (next..end)
                .map(|i| Op::Put {
                    key: key(i),
                    value: vec![7; VALUE_BYTES],
                })
                .collect();
            requests.push(ops);
            next = end;
        }
        apply_block(&mut store, height, &mut seq, requests);
    }
    store.engine().flush().expect("flush");
    (store, height + 1, seq)
}

fn state_tree(c: &mut Criterion) {
    let dir = bench_dir();
    let (mut store, mut height, mut seq) = loaded_store(dir.path());
    let mut rng = SimRng::new(1);
    let mut group = c.benchmark_group("state_tree");
    group.throughput(Throughput::Elements(BLOCK_PUTS));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("apply_block_100_puts", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let ops: Vec<Op> = (0..BLOCK_PUTS)
                    .map(|_| Op::Put {
                        key: key(rng.range(0, STORE_KEYS - 1)),
                        value: rng.next_u64().to_le_bytes().repeat(VALUE_BYTES / 8),
                    })
                    .collect();
                let started = Instant::now();
                apply_block(&mut store, height, &mut seq, vec![ops]);
                total += started.elapsed();
                height += 1;
            }
            total
        })
    });
    group.bench_function("tree_update_100_leaves", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut changes: Vec<Change> = (0..BLOCK_PUTS)
                    .map(|_| {
                        let engine_key = data_key(&key(rng.range(0, STORE_KEYS - 1)));
                        let value = rng.next_u64().to_le_bytes();
                        (key_path(&engine_key), Some(value_hash(&value)))
                    })
                    .collect();
                changes.sort_unstable_by_key(|a| a.0);
                changes.dedup_by(|a, b| a.0 == b.0);
                let engine = store.engine();
                let bytes = |k: &[u8]| engine.get(k);
                let read = decoding(&bytes);
                let started = Instant::now();
                let mut update = TreeUpdate::new(&read);
                black_box(update.apply(&changes).expect("tree update"));
                black_box(update.into_writes().expect("tree update"));
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, state_tree);
criterion_main!(benches);
