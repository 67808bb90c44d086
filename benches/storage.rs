//! Storage engine benchmarks (criterion).
//!
//! - `wal_group_commit/{1,8,64}`: 100-byte records appended durably by that many concurrent
//!   writer threads (each waits for its own record to be durable before the next); elements
//!   are records, so criterion reports records/s.
//! - `get/*`: point lookups from the memtable and from an mmapped SSTable (hit and miss),
//!   with a `BTreeMap` lookup as the yardstick; `get_with` borrows the value in place.
//! - `range_scan/sstable_1000`: a 1000-entry scan from an SSTable.
//! - `flush/4MiB` and `compaction/4x`: bytes/s of turning a memtable into a table and of
//!   merging four tables.
//!
//! Data directories live under `target/` (a real disk; `/tmp` could be tmpfs, where fsync is
//! free and the WAL figures would be meaningless).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bftd::storage::{Engine, EngineOptions, WalOptions, WriteBatch};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const RECORD_BYTES: usize = 100;
const TABLE_KEYS: u32 = 100_000;

fn bench_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

fn options() -> EngineOptions {
    EngineOptions {
        caller_pins_wal: false,
        background_compaction: false,
        ..EngineOptions::default()
    }
}

fn key(i: u32) -> [u8; 8] {
    (u64::from(i) * 2).to_be_bytes() // even keys present; odd keys are misses
}

fn wal_group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_group_commit");
    group.throughput(Throughput::Elements(1));
    for writers in [1usize, 8, 64] {
        let dir = bench_dir();
        let engine = Arc::new(
            Engine::open(
                dir.path(),
                EngineOptions {
                    wal: WalOptions::default(),
                    ..options()
                },
                |_, _, _| Ok(()),
            )
            .expect("open"),
        );
        group.bench_function(format!("{writers}"), |b| {
            b.iter_custom(|iters| {
                let per_writer = iters.div_ceil(writers as u64);
                let start = Instant::now();
                let threads: Vec<_> = (0..writers)
                    .map(|_| {
                        let engine = Arc::clone(&engine);
                        std::thread::spawn(move || {
                            let record = [7u8; RECORD_BYTES];
                            for _ in 0..per_writer {
                                let lsn = engine.append_record(9, &record).expect("append");
                                engine.wait_durable(lsn).expect("durable");
                            }
                        })
                    })
                    .collect();
                threads.into_iter().for_each(|t| t.join().expect("writer"));
                // Normalise to `iters` records (the last writer may have done a few extra).
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_writer * writers as u64) as f64)
            })
        });
    }
    group.finish();
}

fn filled_engine(flush: bool) -> (tempfile::TempDir, Engine) {
    let dir = bench_dir();
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            flush_threshold_bytes: 1 << 30,
            ..options()
        },
        |_, _, _| Ok(()),
    )
    .expect("open");
    let mut batch = WriteBatch::new();
    for i in 0..TABLE_KEYS {
        batch.put(key(i).to_vec(), vec![i as u8; RECORD_BYTES]);
        if batch.ops.len() == 1000 {
            engine.write_nowait(&batch).expect("write");
            batch = WriteBatch::new();
        }
    }
    let lsn = engine.wal().last_lsn();
    engine.wait_durable(lsn).expect("durable");
    if flush {
        engine.flush().expect("flush");
    }
    (dir, engine)
}

fn point_gets(c: &mut Criterion) {
    let mut group = c.benchmark_group("get");
    let mut model = BTreeMap::new();
    for i in 0..TABLE_KEYS {
        model.insert(key(i).to_vec(), vec![i as u8; RECORD_BYTES]);
    }
    let mut i = 0u32;
    group.bench_function("btreemap_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % TABLE_KEYS;
            black_box(model.get(&key(i)[..]).map(Vec::len))
        })
    });
    let (_mem_dir, in_memtable) = filled_engine(false);
    group.bench_function("memtable_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % TABLE_KEYS;
            black_box(in_memtable.get_with(&key(i), |v| v.map(<[u8]>::len)))
        })
    });
    let (_table_dir, in_table) = filled_engine(true);
    assert_eq!(in_table.table_count(), 1);
    group.bench_function("sstable_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % TABLE_KEYS;
            black_box(in_table.get_with(&key(i), |v| v.map(<[u8]>::len)))
        })
    });
    group.bench_function("sstable_miss", |b| {
        b.iter(|| {
            i = (i + 7919) % TABLE_KEYS;
            let odd = (u64::from(i) * 2 + 1).to_be_bytes();
            black_box(in_table.get_with(&odd, |v| v.map(<[u8]>::len)))
        })
    });
    group.finish();
}

fn range_scan(c: &mut Criterion) {
    let (_dir, engine) = filled_engine(true);
    let mut group = c.benchmark_group("range_scan");
    group.throughput(Throughput::Elements(1000));
    let mut start = 0u32;
    group.bench_function("sstable_1000", |b| {
        b.iter(|| {
            start = (start + 7919) % (TABLE_KEYS - 1000);
            let mut bytes = 0usize;
            let mut rows = 0;
            engine.scan(&key(start), None, |_, value| {
                bytes += value.len();
                rows += 1;
                rows < 1000
            });
            black_box(bytes)
        })
    });
    group.finish();
}

fn flush_and_compaction(c: &mut Criterion) {
    let mut group = c.benchmark_group("flush");
    group.sample_size(10);
    let table_bytes = u64::from(TABLE_KEYS) * (8 + RECORD_BYTES as u64);
    group.throughput(Throughput::Bytes(table_bytes));
    group.bench_function("100k_entries", |b| {
        b.iter_batched(
            || filled_engine(false),
            |(dir, engine)| {
                engine.flush().expect("flush");
                (dir, engine)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(table_bytes));
    group.bench_function("4_tables_100k_entries", |b| {
        b.iter_batched(
            four_tables,
            |(dir, engine)| {
                assert!(engine.compact().expect("compact"));
                (dir, engine)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Four overlapping tables of 25k entries each, 100k entries in all.
fn four_tables() -> (tempfile::TempDir, Engine) {
    let dir = bench_dir();
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            flush_threshold_bytes: 1 << 30,
            ..options()
        },
        |_, _, _| Ok(()),
    )
    .expect("open");
    for part in 0..4u32 {
        let mut batch = WriteBatch::new();
        for i in (part..TABLE_KEYS).step_by(4) {
            batch.put(key(i).to_vec(), vec![i as u8; RECORD_BYTES]);
        }
        engine.write(&batch).expect("write");
        engine.flush().expect("flush");
    }
    (dir, engine)
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = wal_group_commit, point_gets, range_scan, flush_and_compaction
}
criterion_main!(benches);
