//! Engine tests: a `BTreeMap` model under random operations (proptest), plus targeted tests
//! of flush, compaction, recovery, caller records, replacement and fault handling.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::batch::WriteBatch;
use super::engine::{Engine, EngineOptions};
use super::error::StorageError;
use super::fs::Fs;
use super::sstable::TableEntry;
use super::wal::WalOptions;

fn small_options() -> EngineOptions {
    EngineOptions {
        flush_threshold_bytes: 512,
        compaction_trigger_tables: 3,
        caller_pins_wal: false,
        wal: WalOptions {
            segment_bytes_max: 1024,
            ..WalOptions::default()
        },
        ..EngineOptions::default()
    }
}

fn open(dir: &Path, options: EngineOptions) -> Engine {
    Engine::open(dir, options, |_, _, _| Ok(())).unwrap()
}

fn put(engine: &Engine, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(key, value);
    engine.write(&batch).unwrap();
}

fn delete(engine: &Engine, key: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.delete(key);
    engine.write(&batch).unwrap();
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, Vec<u8>),
    Delete(u8),
    Range(u8, u8, usize),
    Flush,
    Compact,
    Reopen,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        6 => (0u8..24, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| ModelOp::Put(k, v)),
        3 => (0u8..24).prop_map(ModelOp::Delete),
        2 => (0u8..24, 0u8..24, 0usize..8).prop_map(|(a, b, l)| ModelOp::Range(a, b, l)),
        1 => Just(ModelOp::Flush),
        1 => Just(ModelOp::Compact),
        1 => Just(ModelOp::Reopen),
    ]
}

fn key_of(k: u8) -> Vec<u8> {
    vec![b'k', k]
}

fn check_ranges(engine: &Engine, model: &BTreeMap<Vec<u8>, Vec<u8>>, a: u8, b: u8, limit: usize) {
    let (start, end) = (key_of(a), key_of(b));
    let got = engine.range(&start, Some(&end), limit);
    let want: Vec<_> = if start < end {
        model
            .range(start..end)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    } else {
        Vec::new()
    };
    assert_eq!(got, want, "range {a}..{b} limit {limit}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_btreemap_model(ops in proptest::collection::vec(model_op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open(dir.path(), small_options());
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                ModelOp::Put(k, v) => { put(&engine, &key_of(k), &v); model.insert(key_of(k), v); }
                ModelOp::Delete(k) => { delete(&engine, &key_of(k)); model.remove(&key_of(k)); }
                ModelOp::Range(a, b, limit) => check_ranges(&engine, &model, a, b, limit),
                ModelOp::Flush => engine.flush().unwrap(),
                ModelOp::Compact => { engine.compact().unwrap(); }
                ModelOp::Reopen => { drop(engine); engine = open(dir.path(), small_options()); }
            }
        }
        for k in 0..24u8 {
            prop_assert_eq!(engine.get(&key_of(k)), model.get(&key_of(k)).cloned());
        }
        let all = engine.range(&[], None, usize::MAX);
        let want: Vec<_> = model.into_iter().collect();
        prop_assert_eq!(all, want);
    }
}

#[test]
fn data_survives_flush_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        background_compaction: false,
        compaction_inputs_max: 1000,
        ..small_options()
    };
    {
        let engine = open(dir.path(), options.clone());
        for i in 0..200u32 {
            put(&engine, &i.to_be_bytes(), &[i as u8; 16]);
        }
        for i in (0..200u32).step_by(2) {
            delete(&engine, &i.to_be_bytes());
        }
        engine.flush().unwrap();
        assert!(engine.table_count() > 2);
        assert!(engine.compact().unwrap());
        assert_eq!(engine.table_count(), 1);
    }
    let engine = open(dir.path(), options);
    for i in 0..200u32 {
        let want = (i % 2 == 1).then(|| vec![i as u8; 16]);
        assert_eq!(engine.get(&i.to_be_bytes()), want, "key {i}");
    }
    // Compaction of everything dropped every tombstone: the one table holds only live keys.
    let view = engine.inner.view.read().clone();
    assert_eq!(
        view.tables.iter().map(|t| t.entry_count()).sum::<usize>(),
        100
    );
}

#[test]
fn caller_records_are_replayed_and_pin_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        caller_pins_wal: true,
        ..small_options()
    };
    {
        let engine = open(dir.path(), options.clone());
        let lsn = engine.append_record(7, b"safety state").unwrap();
        engine.wait_durable(lsn).unwrap();
        assert!(engine.append_record(super::WRITE_BATCH_KIND, b"x").is_err());
        for i in 0..100u32 {
            put(&engine, &i.to_be_bytes(), &[1; 32]);
        }
        engine.flush().unwrap();
    }
    let mut seen = Vec::new();
    let engine = Engine::open(dir.path(), options, |lsn, kind, body| {
        seen.push((lsn, kind, body.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![(1, 7, b"safety state".to_vec())]);
    let segments_before = engine.wal().segment_count();
    engine.release_wal_before(engine.wal().last_lsn()).unwrap();
    assert!(engine.wal().segment_count() < segments_before);
}

#[test]
fn replace_all_swaps_content_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path(), small_options());
        for i in 0..50u32 {
            put(&engine, &i.to_be_bytes(), b"old");
        }
        let entries = (100..110u32)
            .map(|i| TableEntry {
                key: i.to_be_bytes().to_vec(),
                tombstone: false,
                value: b"new".to_vec(),
            })
            .collect();
        engine.replace_all(entries).unwrap();
        assert_eq!(engine.get(&5u32.to_be_bytes()), None);
        put(&engine, &200u32.to_be_bytes(), b"after");
    }
    let engine = open(dir.path(), small_options());
    let all = engine.range(&[], None, usize::MAX);
    assert_eq!(all.len(), 11);
    assert_eq!(
        engine.get(&105u32.to_be_bytes()).as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(
        engine.get(&200u32.to_be_bytes()).as_deref(),
        Some(&b"after"[..])
    );
}

#[test]
fn corrupt_sstable_fails_open_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path(), small_options());
        put(&engine, b"key", b"value");
        engine.flush().unwrap();
    }
    let table = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&table).unwrap();
    bytes[3] ^= 0x10;
    std::fs::write(&table, &bytes).unwrap();
    let error = Engine::open(dir.path(), small_options(), |_, _, _| Ok(()))
        .err()
        .unwrap();
    assert!(error.is_corruption(), "{error}");
    assert!(
        error.to_string().contains(&table.display().to_string()),
        "{error}"
    );
    std::fs::write(&table, &bytes[..10]).unwrap();
    let error = Engine::open(dir.path(), small_options(), |_, _, _| Ok(()))
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("shorter than a footer"),
        "{error}"
    );
}

#[test]
fn flush_failure_poisons_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::with_faults();
    let options = EngineOptions {
        wal: WalOptions {
            fs: fs.clone(),
            ..WalOptions::default()
        },
        ..small_options()
    };
    let engine = open(dir.path(), options);
    put(&engine, b"a", b"1");
    fs.fail_writes_after_bytes(0); // the SSTable write hits a full disk
    assert!(engine.flush().is_err());
    assert!(engine.poisoned().is_some());
    let mut batch = WriteBatch::new();
    batch.put(b"b".to_vec(), b"2".to_vec());
    assert!(matches!(
        engine.write(&batch),
        Err(StorageError::Poisoned { .. })
    ));
    assert_eq!(engine.get(b"a").as_deref(), Some(&b"1"[..]));
}

/// Readers racing with writes, flushes and compactions never see a key vanish or go back
/// in time: the view swap is atomic for them.
#[test]
fn readers_see_a_consistent_view_during_flush_and_compaction() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const KEYS: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(open(
        dir.path(),
        EngineOptions {
            flush_threshold_bytes: 2048,
            ..small_options()
        },
    ));
    let written = Arc::new(AtomicU64::new(0)); // number of fully written rounds
    let done = Arc::new(AtomicBool::new(false));
    let mut batch = WriteBatch::new();
    for k in 0..KEYS {
        batch.put(k.to_be_bytes().to_vec(), 0u64.to_le_bytes().repeat(25));
    }
    engine.write(&batch).unwrap();
    let reader = {
        let (engine, written, done) =
            (Arc::clone(&engine), Arc::clone(&written), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut checks = 0u64;
            let mut seen = [0u64; KEYS as usize];
            while !done.load(Ordering::SeqCst) {
                let floor = written.load(Ordering::SeqCst);
                for k in 0..KEYS {
                    let value = engine
                        .get(&k.to_be_bytes())
                        .map(|v| u64::from_le_bytes(v[..8].try_into().unwrap()));
                    let value = value.unwrap_or_else(|| panic!("key {k} vanished (floor {floor})"));
                    assert!(
                        value >= floor && value >= seen[k as usize],
                        "key {k} went back in time"
                    );
                    seen[k as usize] = value;
                    checks += 1;
                }
            }
            checks
        })
    };
    for round in 1..=300u64 {
        let mut batch = WriteBatch::new();
        for k in 0..KEYS {
            batch.put(k.to_be_bytes().to_vec(), round.to_le_bytes().repeat(25));
        }
        engine.write(&batch).unwrap();
        written.store(round, Ordering::SeqCst);
        if round % 50 == 0 {
            engine.compact().unwrap();
        }
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() >= KEYS);
    assert!(
        engine.table_count() >= 1,
        "the writes should have flushed tables"
    );
}

#[test]
fn a_second_engine_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), small_options());
    let error = Engine::open(dir.path(), small_options(), |_, _, _| Ok(()))
        .err()
        .unwrap();
    assert!(error.to_string().contains("in use"), "{error}");
    drop(engine);
    open(dir.path(), small_options());
}

/// A tiered compaction of the newest tables (not including the oldest) must keep tombstones:
/// dropping one would resurrect the older value below it.
#[test]
fn tiered_compaction_of_a_middle_run_keeps_tombstones() {
    use super::compaction::{Choice, compact_once};

    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        background_compaction: false,
        flush_threshold_bytes: 1 << 30,
        ..small_options()
    };
    let engine = open(dir.path(), options);
    let mut batch = WriteBatch::new();
    for i in 0..2000u32 {
        batch.put(i.to_be_bytes().to_vec(), vec![1; 64]);
    }
    engine.write(&batch).unwrap();
    engine.flush().unwrap();
    delete(&engine, &7u32.to_be_bytes());
    engine.flush().unwrap();
    for key in [b"a", b"b"] {
        put(&engine, key, b"small");
        engine.flush().unwrap();
    }
    assert_eq!(engine.table_count(), 4);
    assert!(compact_once(&engine.inner, Choice::Tiered).unwrap());
    assert_eq!(
        engine.table_count(),
        2,
        "the three small tables merged, the big one stayed"
    );
    assert_eq!(
        engine.get(&7u32.to_be_bytes()),
        None,
        "tombstone dropped: old value resurrected"
    );
    let newest = engine.inner.view.read().tables[0].clone();
    assert_eq!(newest.entry_count(), 3, "a, b and the tombstone");
    assert!(!compact_once(&engine.inner, Choice::Tiered).unwrap());
    assert!(engine.compact().unwrap());
    assert_eq!(
        engine.inner.view.read().tables[0].entry_count(),
        2001,
        "full merge drops the tombstone"
    );
}

/// Issue 13 item 1: a manifest whose `flushed_lsn` is above the last LSN that survived in the
/// WAL (what a flush that ran ahead of the WAL's fsync leaves after a power cut) must not make
/// recovery number new writes at or below `flushed_lsn`: the next replay would skip them
/// although they were acknowledged.
#[test]
fn writes_after_a_manifest_ahead_of_the_wal_survive_the_next_reopen() {
    use super::manifest::Manifest;

    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path(), small_options());
        put(&engine, b"a", b"1");
        put(&engine, b"b", b"2");
        engine.flush().unwrap();
    }
    let fs = Fs::default();
    let mut manifest = Manifest::load(&fs, dir.path()).unwrap().unwrap();
    assert!(manifest.flushed_lsn < 10);
    manifest.flushed_lsn = 10; // records 3..=10 were in the tables, lost from the WAL
    manifest.store(&fs, dir.path()).unwrap();
    {
        let engine = open(dir.path(), small_options());
        assert!(
            engine.wal().last_lsn() >= 10,
            "numbering restarts above flushed_lsn"
        );
        put(&engine, b"c", b"3"); // acknowledged
    }
    for _ in 0..2 {
        let engine = open(dir.path(), small_options());
        assert_eq!(engine.get(b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!(
            engine.get(b"c").as_deref(),
            Some(&b"3"[..]),
            "acked write lost"
        );
    }
}

/// Issue 13 item 1, the flush side: while a write's WAL fsync is still pending (held here),
/// a flush of the memtable holding it must not store a manifest that covers it. Before the
/// fix the flush returned with `flushed_lsn` one above the durable WAL.
#[test]
fn a_flush_never_covers_wal_records_that_are_not_durable() {
    use std::sync::Arc;

    use super::manifest::Manifest;

    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::with_faults();
    let options = EngineOptions {
        flush_threshold_bytes: 1 << 20,
        wal: WalOptions {
            fs: fs.clone(),
            ..WalOptions::default()
        },
        ..small_options()
    };
    let engine = Arc::new(open(dir.path(), options));
    put(&engine, b"a", b"1");
    fs.hold_syncs("wal-");
    let mut batch = WriteBatch::new();
    batch.put(b"b".to_vec(), b"2".to_vec());
    let lsn = engine.write_nowait(&batch).unwrap();
    let flush = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || engine.flush())
    };
    // Either the flush finished (the bug) or the flusher waits for the WAL (the fix).
    while !flush.is_finished() && engine.wal().durable_waiters() == 0 {
        std::thread::yield_now();
    }
    let covered_lsn = Manifest::load(&Fs::default(), dir.path())
        .unwrap()
        .map_or(0, |m| m.flushed_lsn);
    let durable_lsn = engine.wal().durable_lsn();
    fs.release_syncs(); // before asserting: a held committer would hang the engine's drop
    assert!(
        covered_lsn <= durable_lsn,
        "the manifest covers LSN {covered_lsn}, the WAL is durable to {durable_lsn}"
    );
    flush.join().unwrap().unwrap();
    let stored = Manifest::load(&Fs::default(), dir.path()).unwrap().unwrap();
    assert_eq!(stored.flushed_lsn, lsn);
}
