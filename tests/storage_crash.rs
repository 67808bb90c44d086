//! Real crash tests for the storage engine (custom harness: `harness = false`).
//!
//! Part 1, SIGKILL: the test binary re-executes itself in child mode (env `BFTD_CRASH_CHILD`),
//! where writer threads put keys through the engine and print `ack <thread> <index>` after
//! each durable write. The parent reads acks until a seeded random count, kills the child
//! (`Child::kill` = SIGKILL), reads the acks still in the pipe, reopens the store and checks:
//! every acknowledged write is present with its value, each thread's keys form a prefix of
//! its write order (nothing unacknowledged appears out of order), and each batch was atomic.
//! Rounds reuse one directory, so recovery after recovery is exercised, with flushes,
//! compactions and WAL purges happening at random points.
//!
//! Part 2, injected damage: torn WAL tails, flipped bits in WAL segments, SSTables and the
//! manifest. Each must give a correct recovery (a torn tail loses only the last records) or a
//! clear error naming the file, never a wrong value.
//!
//! Set `BFTD_CRASH_SEED` to replay a seed; the seed is printed at start.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bftd::kv::{Compare, CompareOp, CompareTarget, KvRequest, KvStore, Op, Txn, TxnOp, encode_ops};
use bftd::storage::{Engine, EngineOptions, WalOptions, WriteBatch};

const CHILD_ENV: &str = "BFTD_CRASH_CHILD";
const KV_CHILD_ENV: &str = "BFTD_CRASH_KV_CHILD";
const KV_ROUNDS: u32 = 10;
/// Blocks a KV child applies at most before stopping by itself.
const KV_CHILD_BLOCKS_MAX: u64 = 100_000;
const ROUNDS: u32 = 30;
const WRITER_THREADS: u32 = 4;
/// Writes per thread after which a child stops by itself (it is normally killed long before).
const CHILD_WRITES_MAX: u32 = 200_000;
/// A round fails if the child produces no ack for this long (a hang, not timing luck).
const ROUND_DEADLINE: Duration = Duration::from_secs(120);

fn options() -> EngineOptions {
    EngineOptions {
        flush_threshold_bytes: 24 * 1024,
        compaction_trigger_tables: 3,
        caller_pins_wal: false,
        wal: WalOptions {
            segment_bytes_max: 48 * 1024,
            ..WalOptions::default()
        },
        ..EngineOptions::default()
    }
}

fn key(round: u32, thread: u32, index: u32) -> Vec<u8> {
    format!("r{round:03}/t{thread}/{index:08}").into_bytes()
}

fn last_key(round: u32, thread: u32) -> Vec<u8> {
    format!("r{round:03}/t{thread}/last").into_bytes()
}

fn value(round: u32, thread: u32, index: u32) -> Vec<u8> {
    let mut value = format!("value-{round}-{thread}-{index}-").into_bytes();
    value.resize(100, b'.');
    value
}

/// splitmix64: a tiny seeded generator, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    if let Ok(dir) = std::env::var(KV_CHILD_ENV) {
        kv_child_main(Path::new(&dir));
        return;
    }
    let seed = std::env::var("BFTD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    println!("storage_crash: seed {seed} (set BFTD_CRASH_SEED={seed} to replay)");
    let mut rng = Rng(seed);
    kill_rounds(&mut rng);
    kv_kill_rounds(&mut rng);
    torn_wal_tails(&mut rng);
    flipped_bits_in_wal(&mut rng);
    flipped_bits_in_tables_and_manifest(&mut rng);
    println!("storage_crash: all checks passed");
}

/// Child mode: `spec` is `<dir>:<round>`. Writes until killed.
fn child_main(spec: &str) {
    let (dir, round) = spec.rsplit_once(':').expect("child spec is <dir>:<round>");
    let round: u32 = round.parse().expect("round number");
    let engine = Arc::new(
        Engine::open(Path::new(dir), options(), |_, _, _| Ok(())).expect("child opens the store"),
    );
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let writers: Vec<_> = (0..WRITER_THREADS)
        .map(|thread| {
            let (engine, stdout) = (Arc::clone(&engine), Arc::clone(&stdout));
            std::thread::spawn(move || {
                for index in 0..CHILD_WRITES_MAX {
                    let mut batch = WriteBatch::new();
                    batch.put(key(round, thread, index), value(round, thread, index));
                    batch.put(last_key(round, thread), index.to_le_bytes().to_vec());
                    engine.write(&batch).expect("child write");
                    let mut out = stdout.lock().expect("stdout lock");
                    writeln!(out, "ack {thread} {index}")
                        .and_then(|()| out.flush())
                        .expect("parent reads acks");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
}

/// Highest acknowledged index per (round, thread).
type Acks = BTreeMap<(u32, u32), u32>;

fn kill_rounds(rng: &mut Rng) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acks = Acks::new();
    for round in 0..ROUNDS {
        let kill_after_acks = 1 + rng.below(300);
        run_child_round(dir.path(), round, kill_after_acks, &mut acks);
        verify_store(dir.path(), round, &acks);
    }
    println!(
        "kill rounds: {ROUNDS} rounds, {} acknowledged writes verified",
        acks.values().map(|&i| u64::from(i) + 1).sum::<u64>()
    );
}

fn run_child_round(dir: &Path, round: u32, kill_after_acks: u64, acks: &mut Acks) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env(CHILD_ENV, format!("{}:{round}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let receiver = spawn_line_reader(child.stdout.take().expect("child stdout"));
    let mut seen = 0;
    while seen < kill_after_acks {
        let line = receiver
            .recv_timeout(ROUND_DEADLINE)
            .unwrap_or_else(|_| panic!("round {round}: child stopped acknowledging"));
        record_ack(&line, round, acks);
        seen += 1;
    }
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    // Acks already in the pipe were acknowledged before the kill: they must survive too.
    for line in receiver.iter() {
        record_ack(&line, round, acks);
    }
}

fn record_ack(line: &str, round: u32, acks: &mut Acks) {
    let mut parts = line.split_whitespace();
    let (Some("ack"), Some(thread), Some(index)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("unexpected child output {line:?}");
    };
    let (thread, index): (u32, u32) = (
        thread.parse().expect("thread"),
        index.parse().expect("index"),
    );
    let entry = acks.entry((round, thread)).or_insert(index);
    *entry = (*entry).max(index);
}

/// Every acked write is there; each thread's keys are a gap-free prefix; `last` matches.
fn verify_store(dir: &Path, through_round: u32, acks: &Acks) {
    let engine = Engine::open(dir, options(), |_, _, _| Ok(()))
        .unwrap_or_else(|e| panic!("reopen after round {through_round}: {e}"));
    for round in 0..=through_round {
        for thread in 0..WRITER_THREADS {
            let prefix = format!("r{round:03}/t{thread}/0").into_bytes();
            let mut end = prefix.clone();
            end.push(0xff);
            let rows = engine.range(&prefix, Some(&end), usize::MAX);
            for (position, (row_key, row_value)) in rows.iter().enumerate() {
                let index = position as u32;
                assert_eq!(
                    row_key,
                    &key(round, thread, index),
                    "round {round} thread {thread}: gap or stray key"
                );
                assert_eq!(
                    row_value,
                    &value(round, thread, index),
                    "round {round} thread {thread}: wrong value"
                );
            }
            let present = rows.len() as u32;
            if let Some(&acked) = acks.get(&(round, thread)) {
                assert!(
                    present > acked,
                    "round {round} thread {thread}: acked {acked} but only {present} present"
                );
            }
            let last = engine
                .get(&last_key(round, thread))
                .map(|v| u32::from_le_bytes(v[..4].try_into().expect("4 bytes")));
            assert_eq!(
                last,
                present.checked_sub(1),
                "round {round} thread {thread}: batch not atomic"
            );
        }
    }
}

/// Writes `count` single-key batches into a fresh store; returns the expected key → value.
fn populate(dir: &Path, options: EngineOptions, count: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let engine = Engine::open(dir, options, |_, _, _| Ok(())).expect("open");
    let mut written = Vec::new();
    for index in 0..count {
        let (k, v) = (key(0, 0, index), value(0, 0, index));
        let mut batch = WriteBatch::new();
        batch.put(k.clone(), v.clone());
        engine.write(&batch).expect("write");
        written.push((k, v));
    }
    written
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    paths
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(from)
        .expect("read_dir")
        .filter_map(Result::ok)
    {
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
    }
    to
}

/// Opens a damaged store. `Ok(rows)` if it opened, `Err(message)` if it refused.
/// Key/value rows as read back from a store.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn open_damaged(dir: &Path, options: EngineOptions) -> Result<Rows, String> {
    let engine = Engine::open(dir, options, |_, _, _| Ok(())).map_err(|e| e.to_string())?;
    Ok(engine.range(&[], None, usize::MAX))
}

/// Present rows must be exactly a prefix of what was written (in write order).
fn assert_prefix(rows: &[(Vec<u8>, Vec<u8>)], written: &[(Vec<u8>, Vec<u8>)], what: &str) {
    assert!(
        rows.len() <= written.len(),
        "{what}: more rows than written"
    );
    assert_eq!(
        rows,
        &written[..rows.len()],
        "{what}: not a prefix of the writes"
    );
}

fn torn_wal_tails(rng: &mut Rng) {
    let base = tempfile::tempdir().expect("tempdir");
    let options = EngineOptions {
        flush_threshold_bytes: 1 << 30,
        ..options()
    };
    let written = populate(base.path(), options.clone(), 300);
    let segments = files_with(base.path(), ".log");
    let last = segments
        .iter()
        .rfind(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .expect("a non-empty segment");
    let full_len = std::fs::metadata(last).expect("stat").len();
    for case in 0..40 {
        let copy = copy_dir(base.path());
        // Drop the empty active segment the last open created, so the cut one is the tail.
        for empty in files_with(copy.path(), ".log")
            .iter()
            .filter(|p| std::fs::metadata(p).map(|m| m.len() == 0).unwrap_or(false))
        {
            std::fs::remove_file(empty).expect("remove empty segment");
        }
        let cut = rng.below(full_len);
        let target = copy.path().join(last.file_name().expect("name"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .expect("open segment");
        file.set_len(cut).expect("truncate");
        let rows = open_damaged(copy.path(), options.clone())
            .unwrap_or_else(|e| panic!("torn case {case} (cut {cut}): {e}"));
        assert_prefix(&rows, &written, &format!("torn case {case}"));
    }
    println!("torn WAL tails: 40 random cuts recovered to a prefix");
}

fn flip_random_bit(rng: &mut Rng, path: &Path) -> u64 {
    let mut bytes = std::fs::read(path).expect("read");
    let offset = rng.below(bytes.len() as u64);
    bytes[offset as usize] ^= 1 << rng.below(8);
    std::fs::write(path, &bytes).expect("write");
    offset
}

fn flipped_bits_in_wal(rng: &mut Rng) {
    let base = tempfile::tempdir().expect("tempdir");
    let options = EngineOptions {
        flush_threshold_bytes: 1 << 30,
        wal: WalOptions {
            segment_bytes_max: 8 * 1024,
            ..WalOptions::default()
        },
        ..options()
    };
    let written = populate(base.path(), options.clone(), 300);
    let (mut errors, mut recoveries) = (0, 0);
    for case in 0..60 {
        let copy = copy_dir(base.path());
        let segments: Vec<PathBuf> = files_with(copy.path(), ".log")
            .into_iter()
            .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .collect();
        let target = &segments[rng.below(segments.len() as u64) as usize];
        let offset = flip_random_bit(rng, target);
        match open_damaged(copy.path(), options.clone()) {
            Ok(rows) => {
                // Only a flip in the very last record can pass as a torn tail; it loses that record only.
                assert_prefix(
                    &rows,
                    &written,
                    &format!("wal flip case {case} at {offset}"),
                );
                assert!(
                    rows.len() + 1 >= written.len(),
                    "wal flip case {case}: lost {} records",
                    written.len() - rows.len()
                );
                recoveries += 1;
            }
            Err(message) => {
                assert!(
                    message.contains(&target.display().to_string()),
                    "case {case}: error does not name the file: {message}"
                );
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "no WAL flip was detected as corruption");
    println!(
        "flipped WAL bits: 60 cases, {errors} clear errors, {recoveries} torn-tail recoveries, no wrong value"
    );
}

fn flipped_bits_in_tables_and_manifest(rng: &mut Rng) {
    let base = tempfile::tempdir().expect("tempdir");
    let options = EngineOptions {
        background_compaction: false,
        ..options()
    };
    populate(base.path(), options.clone(), 600);
    {
        let engine = Engine::open(base.path(), options.clone(), |_, _, _| Ok(())).expect("open");
        engine.flush().expect("flush");
    }
    for case in 0..40 {
        let copy = copy_dir(base.path());
        let mut targets = files_with(copy.path(), ".sst");
        targets.push(copy.path().join("MANIFEST"));
        let target = &targets[rng.below(targets.len() as u64) as usize];
        let offset = flip_random_bit(rng, target);
        let message = open_damaged(copy.path(), options.clone())
            .err()
            .unwrap_or_else(|| {
                panic!(
                    "case {case}: flip at {offset} in {} went unnoticed",
                    target.display()
                )
            });
        assert!(
            message.contains(&target.display().to_string()),
            "case {case}: error does not name the file: {message}"
        );
    }
    for case in 0..10 {
        let copy = copy_dir(base.path());
        let tables = files_with(copy.path(), ".sst");
        let target = &tables[rng.below(tables.len() as u64) as usize];
        let len = std::fs::metadata(target).expect("stat").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(target)
            .expect("open")
            .set_len(rng.below(len))
            .expect("truncate");
        let message = open_damaged(copy.path(), options.clone())
            .err()
            .unwrap_or_else(|| panic!("truncated table case {case} went unnoticed"));
        assert!(message.contains(&target.display().to_string()), "{message}");
    }
    println!("flipped SSTable/manifest bits and truncated tables: 50 cases, all clear errors");
}

/// The requests of block `height`: a deterministic function of the height.
fn kv_block(height: u64) -> Vec<([u8; 32], Vec<u8>)> {
    let key = |n: u64| format!("key{:02}", n % 40).into_bytes();
    let mut requests = vec![
        (
            [1; 32],
            encode_ops(&[Op::Put {
                key: key(height),
                value: height.to_le_bytes().to_vec(),
            }]),
        ),
        (
            [2; 32],
            encode_ops(&[
                Op::Delete {
                    key: key(height * 7),
                },
                Op::Get {
                    key: key(height * 3),
                },
            ]),
        ),
    ];
    let txn = Txn {
        compare: vec![Compare {
            key: key(height * 5),
            op: CompareOp::Equal,
            target: CompareTarget::Exists(true),
        }],
        success: vec![TxnOp::Put {
            key: key(height * 5 + 1),
            value: b"txn".to_vec(),
        }],
        failure: vec![TxnOp::Range {
            start: key(0),
            end: None,
            limit: 3,
        }],
    };
    requests.push(([3; 32], encode_ops(&[Op::Txn(txn)])));
    requests
}

fn kv_apply(store: &mut KvStore, height: u64) {
    let block = kv_block(height);
    let requests: Vec<KvRequest<'_>> = block
        .iter()
        .map(|(client, ops)| KvRequest {
            client: *client,
            session: 1,
            seq: height,
            ops,
        })
        .collect();
    store.apply(height, &requests).expect("apply");
}

fn kv_options() -> EngineOptions {
    EngineOptions {
        flush_threshold_bytes: 16 * 1024,
        ..options()
    }
}

/// KV child mode: applies blocks after the stored height, printing `applied <height>` once
/// each `apply` has returned (the block is durable).
fn kv_child_main(dir: &Path) {
    let mut store = KvStore::open(dir, kv_options()).expect("child opens the KV store");
    let first = store.applied_height() + 1;
    let mut out = std::io::stdout();
    for height in first..first + KV_CHILD_BLOCKS_MAX {
        kv_apply(&mut store, height);
        writeln!(out, "applied {height}")
            .and_then(|()| out.flush())
            .expect("parent reads acks");
    }
}

/// Kills a KV child at random points; after each reopen the applied height covers every
/// acknowledged block and the state digest equals that of a store that applied exactly the
/// blocks up to that height (so no block was half applied or applied twice).
fn kv_kill_rounds(rng: &mut Rng) {
    let (dir, reference_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut reference = KvStore::open(reference_dir.path(), kv_options()).expect("reference store");
    let mut acked_height = 0;
    for round in 0..KV_ROUNDS {
        let kill_after_acks = 1 + rng.below(80);
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .env(KV_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let lines = spawn_line_reader(child.stdout.take().expect("child stdout"));
        let mut record = |line: &str| {
            let height = line
                .strip_prefix("applied ")
                .and_then(|h| h.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            acked_height = acked_height.max(height);
        };
        for _ in 0..kill_after_acks {
            record(
                &lines
                    .recv_timeout(ROUND_DEADLINE)
                    .unwrap_or_else(|_| panic!("kv round {round}: child stopped")),
            );
        }
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        lines.iter().for_each(|line| record(&line));
        let store = KvStore::open(dir.path(), kv_options())
            .unwrap_or_else(|e| panic!("kv reopen after round {round}: {e}"));
        assert!(
            store.applied_height() >= acked_height,
            "acknowledged block {acked_height} lost"
        );
        while reference.applied_height() < store.applied_height() {
            let next = reference.applied_height() + 1;
            kv_apply(&mut reference, next);
        }
        assert_eq!(
            store.state_digest(),
            reference.state_digest(),
            "kv round {round}: digest differs at height {}",
            store.applied_height()
        );
    }
    println!(
        "kv kill rounds: {KV_ROUNDS} rounds, {acked_height} blocks, digests match a clean replay"
    );
}

fn spawn_line_reader(stdout: std::process::ChildStdout) -> crossbeam_channel::Receiver<String> {
    let (sender, receiver) = crossbeam_channel::bounded::<String>(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
