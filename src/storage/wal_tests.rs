//! Tests of the WAL: replay order, torn tails, corruption, rolling and purging, poisoning.

use std::path::Path;
use std::sync::Arc;

use super::error::StorageError;
use super::fs::Fs;
use super::segment::{parse_segment_file_name, segment_file_name};
use super::wal::{Lsn, Wal, WalOptions};

/// Records as replayed: (LSN, kind, body).
type Replayed = Vec<(Lsn, u8, Vec<u8>)>;

fn replay(dir: &Path, options: WalOptions) -> Result<(Wal, Replayed), StorageError> {
    let mut records = Vec::new();
    let (wal, _) = Wal::open(dir, options, |lsn, kind, body| {
        records.push((lsn, kind, body.to_vec()));
        Ok(())
    })?;
    Ok((wal, records))
}

fn segment_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| parse_segment_file_name(&e.file_name().to_string_lossy()).is_some())
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

#[test]
fn concurrent_appends_replay_in_lsn_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = replay(dir.path(), WalOptions::default()).unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4u8)
        .map(|thread| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    let mut body = vec![thread];
                    body.extend_from_slice(&i.to_le_bytes());
                    wal.append_durable(10 + thread, &body).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(wal.durable_lsn(), 200);
    drop(wal);
    let (_wal, records) = replay(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(records.len(), 200);
    assert!(records.iter().enumerate().all(|(i, r)| r.0 == i as u64 + 1));
    for thread in 0..4u8 {
        let seqs: Vec<u32> = records
            .iter()
            .filter(|r| r.1 == 10 + thread)
            .map(|r| u32::from_le_bytes(r.2[1..5].try_into().unwrap()))
            .collect();
        assert_eq!(
            seqs,
            (0..50).collect::<Vec<_>>(),
            "thread {thread} records out of order"
        );
    }
}

#[test]
fn torn_tail_is_truncated_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = replay(dir.path(), WalOptions::default()).unwrap();
        for i in 0..5u8 {
            wal.append_durable(2, &[i; 20]).unwrap();
        }
    }
    let path = segment_paths(dir.path()).into_iter().next_back().unwrap();
    let full = std::fs::read(&path).unwrap();
    let record_len = full.len() / 5;
    for cut in (0..full.len()).step_by(7) {
        let case = tempfile::tempdir().unwrap();
        std::fs::write(case.path().join(path.file_name().unwrap()), &full[..cut]).unwrap();
        let (wal, records) = replay(case.path(), WalOptions::default()).unwrap();
        assert_eq!(records.len(), cut / record_len, "cut at {cut}");
        // The log continues after the truncated record and survives another reopen.
        let lsn = wal.append_durable(3, b"after").unwrap();
        assert_eq!(lsn, records.len() as u64 + 1);
        drop(wal);
        let (_wal, again) = replay(case.path(), WalOptions::default()).unwrap();
        assert_eq!(again.len(), records.len() + 1);
        assert_eq!(again.last().unwrap().2, b"after");
    }
}

#[test]
fn corruption_before_the_tail_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = replay(dir.path(), WalOptions::default()).unwrap();
        for i in 0..5u8 {
            wal.append_durable(2, &[i; 20]).unwrap();
        }
    }
    let path = segment_paths(dir.path()).into_iter().next_back().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let record_len = bytes.len() / 5;
    bytes[record_len + 12] ^= 0x01; // body of the second record; three valid records follow
    std::fs::write(&path, &bytes).unwrap();
    let error = replay(dir.path(), WalOptions::default()).err().unwrap();
    let text = error.to_string();
    assert!(error.is_corruption(), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(&format!("offset {record_len}")), "{text}");
}

#[test]
fn segments_roll_and_purge_keeps_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes_max: 256,
        ..WalOptions::default()
    };
    {
        let (wal, _) = replay(dir.path(), options.clone()).unwrap();
        for i in 0..40u8 {
            wal.append_durable(2, &[i; 30]).unwrap();
        }
        assert!(wal.segment_count() > 5, "{} segments", wal.segment_count());
        let before = wal.segment_count();
        let deleted = wal.purge_before(21).unwrap();
        assert!(deleted > 0 && wal.segment_count() == before - deleted);
    }
    let (_wal, records) = replay(dir.path(), options).unwrap();
    let first = records.first().unwrap().0;
    assert!(
        first <= 21,
        "purge removed a needed record: first LSN {first}"
    );
    assert_eq!(records.last().unwrap().0, 40);
    assert!(records.iter().all(|r| r.2 == vec![(r.0 - 1) as u8; 30]));
}

#[test]
fn a_missing_middle_segment_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes_max: 100,
        ..WalOptions::default()
    };
    {
        let (wal, _) = replay(dir.path(), options.clone()).unwrap();
        for i in 0..10u8 {
            wal.append_durable(2, &[i; 40]).unwrap();
        }
    }
    let paths = segment_paths(dir.path());
    std::fs::remove_file(&paths[2]).unwrap();
    let error = replay(dir.path(), options).err().unwrap();
    assert!(error.to_string().contains("missing segment"), "{error}");
}

#[test]
fn fsync_failure_poisons_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::with_faults();
    let options = WalOptions {
        fs: fs.clone(),
        ..WalOptions::default()
    };
    let (wal, _) = replay(dir.path(), options).unwrap();
    wal.append_durable(2, b"ok").unwrap();
    fs.fail_syncs_after(0);
    let lsn = wal.append(2, b"lost").unwrap();
    assert!(matches!(
        wal.wait_durable(lsn),
        Err(StorageError::Poisoned { .. })
    ));
    fs.fail_syncs_after(u64::MAX); // the disk "recovers": the WAL must stay poisoned
    assert!(matches!(
        wal.append(2, b"later"),
        Err(StorageError::Poisoned { .. })
    ));
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn full_disk_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::with_faults();
    let options = WalOptions {
        fs: fs.clone(),
        ..WalOptions::default()
    };
    let (wal, _) = replay(dir.path(), options).unwrap();
    fs.fail_writes_after_bytes(100);
    wal.append_durable(2, &[0; 50]).unwrap();
    let error = wal.append_durable(2, &[0; 50]).unwrap_err();
    assert!(error.to_string().contains("no space left"), "{error}");
    assert!(wal.poisoned().is_some());
}

#[test]
fn oversized_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        queue_bytes_max: 1024,
        ..WalOptions::default()
    };
    let (wal, _) = replay(dir.path(), options).unwrap();
    assert!(matches!(
        wal.append(2, &[0; 2000]),
        Err(StorageError::Invalid { .. })
    ));
    assert_eq!(segment_file_name(1), "wal-00000000000000000001.log");
}

#[test]
fn a_segment_named_lsn_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(segment_file_name(0)), b"").unwrap();
    let error = replay(dir.path(), WalOptions::default()).err().unwrap();
    assert!(error.to_string().contains("LSN 0"), "{error}");
}

/// Power-cut model: while writers run, copy every segment truncated to its length at its last
/// `fdatasync` (plus garbage where unsynced bytes may have landed). Every record acknowledged
/// before the copy must replay from that image: durability is never reported before the sync.
#[test]
fn acknowledged_records_are_in_the_synced_image() {
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::with_faults();
    let options = WalOptions {
        fs: fs.clone(),
        segment_bytes_max: 4096,
        ..WalOptions::default()
    };
    let (wal, _) = replay(dir.path(), options).unwrap();
    let wal = Arc::new(wal);
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..4u8)
        .map(|writer| {
            let (wal, acked) = (Arc::clone(&wal), Arc::clone(&acked));
            std::thread::spawn(move || {
                for count in 1..=150u64 {
                    let mut body = vec![writer];
                    body.extend_from_slice(&count.to_le_bytes());
                    wal.append_durable(5, &body).unwrap();
                    acked[writer as usize].store(count, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let check_image = || {
        let acked_before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let image = tempfile::tempdir().unwrap();
        let synced = fs.synced_lengths();
        for (path, len) in &synced {
            let mut bytes = std::fs::read(path).unwrap();
            bytes.truncate(*len as usize);
            std::fs::write(image.path().join(path.file_name().unwrap()), &bytes).unwrap();
        }
        if let Some((path, _)) = synced.last() {
            // Unsynced bytes that did reach the disk before the cut: zeros.
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(image.path().join(path.file_name().unwrap()))
                .unwrap();
            std::io::Write::write_all(&mut file, &[0u8; 37]).unwrap();
        }
        let (_copy, records) = replay(image.path(), WalOptions::default()).unwrap();
        for (writer, &count) in acked_before.iter().enumerate() {
            let present = records.iter().filter(|r| r.2[0] == writer as u8).count() as u64;
            assert!(
                present >= count,
                "writer {writer}: {count} acknowledged, {present} in the synced image"
            );
        }
    };
    while writers.iter().any(|w| !w.is_finished()) {
        check_image(); // images cut at whatever point the writers have reached
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
    assert!(acked.iter().all(|a| a.load(Ordering::SeqCst) == 150));
    check_image(); // and one after every record was acknowledged
}

/// Appends `bytes` to the newest non-empty segment and deletes the empty active segment the
/// last open created, so the damaged one is the tail again.
fn append_to_tail(dir: &Path, bytes: &[u8]) {
    let paths = segment_paths(dir);
    for path in &paths {
        if std::fs::metadata(path).unwrap().len() == 0 {
            std::fs::remove_file(path).unwrap();
        }
    }
    let tail = segment_paths(dir).pop().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(tail).unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
}

/// A power cut can leave an unsynced tail in which a later page reached the disk and an
/// earlier one did not (it reads back as zeros). Nothing in it was acknowledged, so it is a
/// torn tail, not corruption: the node must start after an ordinary power loss.
#[test]
fn a_hole_then_valid_data_in_the_unsynced_tail_is_a_torn_tail() {
    use super::record::encode_record;

    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = replay(dir.path(), WalOptions::default()).unwrap();
        for i in 0..3u8 {
            wal.append_durable(2, &[i; 20]).unwrap();
        }
    }
    let mut tail = vec![0u8; 512]; // the unsynced page that never landed
    encode_record(&mut tail, 2, &[9; 20]); // the one after it, which did
    append_to_tail(dir.path(), &tail);
    let (wal, records) = replay(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        records.len(),
        3,
        "the acknowledged records, nothing of the tail"
    );
    assert_eq!(wal.last_lsn(), 3);
}

/// The same damage inside the durable prefix (a later group commit proves it was synced) is
/// corruption: the store refuses to open rather than drop acknowledged records.
#[test]
fn a_hole_inside_the_synced_prefix_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = replay(dir.path(), WalOptions::default()).unwrap();
        for i in 0..3u8 {
            wal.append_durable(2, &[i; 20]).unwrap();
        }
    }
    let path = segment_paths(dir.path())[0].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].fill(0); // the first group commit's bytes
    std::fs::write(&path, &bytes).unwrap();
    let error = replay(dir.path(), WalOptions::default()).err().unwrap();
    assert!(error.is_corruption(), "{error}");
    assert!(error.to_string().contains("offset 0"), "{error}");
}

/// Kind 0 is the WAL's batch marker; a caller record of that kind would be skipped on replay.
#[test]
fn the_batch_marker_kind_is_refused_to_callers() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = replay(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(
        wal.append(0, b"x"),
        Err(StorageError::Invalid { .. })
    ));
    wal.append_durable(1, b"y").unwrap();
    drop(wal);
    let (_, records) = replay(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        records,
        vec![(1, 1, b"y".to_vec())],
        "markers are not replayed"
    );
}
