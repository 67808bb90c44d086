//! Backups against real `bftd` processes: `bftctl snapshot save` from a running cluster that
//! keeps taking writes, `bftd snapshot restore` of that file into a stopped node, and of a
//! periodic `snap-H.snap` straight from a node's data dir; the restored nodes catch up and
//! serve every key. Text and JSON output are checked.

#[path = "cluster_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bftd::client::{Client, ClientOptions};
use bftd::config::ClientConfig;
use support::*;

fn restore(data_dir: &Path, file: &Path) -> Output {
    Command::new(bftd_bin())
        .args(["snapshot", "restore", "--data-dir"])
        .arg(data_dir)
        .arg(file)
        .output()
        .expect("run bftd snapshot restore")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The number after `"field":` in a one-line JSON document.
fn json_u64(json: &str, field: &str) -> u64 {
    let at = json
        .find(&format!("\"{field}\":"))
        .unwrap_or_else(|| panic!("{field} in {json}"));
    json[at + field.len() + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{field} is a number in {json}"))
}

/// Heights of the complete periodic snapshots in a data dir (those with an offer file).
fn snapshot_heights(data_dir: &Path) -> Vec<u64> {
    let mut heights: Vec<u64> = std::fs::read_dir(data_dir.join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_prefix("snap-")?
                        .strip_suffix(".offer")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    heights.sort();
    heights
}

fn snap_file(data_dir: &Path, height: u64) -> PathBuf {
    data_dir
        .join("snapshots")
        .join(format!("snap-{height:020}.snap"))
}

fn connect(net: &Testnet) -> Client {
    let config = ClientConfig::load(&net.client_config()).expect("client config");
    Client::connect(&config, ClientOptions::default()).expect("connect")
}

fn put_all(client: &Client, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let key = format!("{prefix}{n}");
            client
                .put(key.as_bytes(), format!("value-{key}").as_bytes())
                .unwrap_or_else(|e| panic!("put {key}: {e}"));
            key
        })
        .collect()
}

/// Waits until node `i` answers stale reads of every key with its value.
fn wait_serves(net: &Testnet, i: usize, keys: &[String]) {
    wait_until(&format!("node {i} serves {} keys", keys.len()), || {
        let Ok(mut c) = RawClient::connect(net, i) else {
            return false;
        };
        keys.iter()
            .all(|k| c.stale_get(k).ok().flatten() == Some(format!("value-{k}").into_bytes()))
    });
}

#[test]
fn online_backup_restores_into_a_stopped_node_and_periodic_snapshots_restore_too() {
    let net = Testnet::new(
        4,
        "round_timeout_base_ms = 300",
        "snapshot_interval_blocks = 20",
    );
    let mut procs = start_all(&net);
    let client = connect(&net);
    let config = net.client_config();
    let early = put_all(&client, "early-", 5);
    // Node 3 goes down: its state stays behind, the backup will bring it forward.
    if let Some(p) = procs[3].take() {
        p.terminate();
    }
    let written = put_all(&client, "k", 30);
    let after_keys = client.status().expect("status")[0]
        .status
        .as_ref()
        .expect("node 0 answers")
        .committed_height;
    // The cluster keeps taking writes from here on: blocks keep coming, so snapshots do, and
    // the backups download while the state moves.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, during) = (client.clone(), stop.clone(), during.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = during.load(Ordering::Relaxed);
                let key = format!("during-{n}");
                if client
                    .put(key.as_bytes(), format!("value-{key}").as_bytes())
                    .is_ok()
                {
                    during.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // Every running node cuts a snapshot that holds the keys.
    wait_until("nodes 0-2 hold a snapshot above the keys", || {
        (0..3).all(|i| {
            snapshot_heights(&net.data_dir(i))
                .last()
                .is_some_and(|h| *h >= after_keys)
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("cluster.bak");
    let json = ok(&bftctl(
        &config,
        &["snapshot", "save", backup.to_str().unwrap(), "--json"],
    ));
    let height = json_u64(&json, "height");
    assert!(height >= after_keys, "{json}");
    assert!(json_u64(&json, "entries") >= 35, "{json}");
    assert_eq!(
        json_u64(&json, "backup_bytes"),
        std::fs::metadata(&backup).unwrap().len(),
        "{json}"
    );
    assert!(json.contains("\"vouched_by\":["), "{json}");
    assert!(
        json.contains(&format!("\"file\":\"{}\"", backup.display())),
        "{json}"
    );
    // Text, from a chosen node; the same snapshot or a newer one.
    let text_file = dir.path().join("text.bak");
    let text = ok(&bftctl(
        &config,
        &[
            "snapshot",
            "save",
            text_file.to_str().unwrap(),
            "--node",
            "1",
        ],
    ));
    assert!(text.starts_with("saved height "), "{text}");
    assert!(
        text.contains("downloaded from node1 and verified"),
        "{text}"
    );
    assert!(text.contains("offered identically by "), "{text}");
    // Node 3 is down: asking it first is refused with a reason, not a hang.
    let err = failed(&bftctl(
        &config,
        &[
            "snapshot",
            "save",
            "unused.bak",
            "--node",
            "3",
            "--timeout-ms",
            "2000",
        ],
    ));
    assert!(err.contains("including node3"), "{err}");
    assert!(!Path::new("unused.bak").exists());
    wait_until("writes went on during the backups", || {
        during.load(Ordering::Relaxed) >= 5
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let during_keys: Vec<String> = (0..during.load(Ordering::Relaxed))
        .map(|n| format!("during-{n}"))
        .collect();

    // Restore the online backup into node 3 (stopped), start it: it catches up from the
    // backup's height and serves everything, including what was written after the backup.
    let restored = ok(&restore(&net.data_dir(3), &backup));
    assert!(
        restored.starts_with(&format!("restored height {height} (")),
        "{restored}"
    );
    procs[3] = Some(NodeProc::start(&net, 3));
    let all: Vec<String> = [early.clone(), written.clone(), during_keys.clone()].concat();
    wait_serves(&net, 3, &all);

    // A periodic snapshot, straight from node 2's data dir, into node 2 after its state is
    // lost (the safety data in consensus/ stays).
    if let Some(p) = procs[2].take() {
        p.terminate();
    }
    let newest = *snapshot_heights(&net.data_dir(2)).last().unwrap();
    let snap = snap_file(&net.data_dir(2), newest);
    // Anything else is refused with a reason, before anything is replaced.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a snapshot at all").unwrap();
    let err = failed(&restore(&net.data_dir(2), &junk));
    assert!(err.contains("neither a bftd backup"), "{err}");
    let lonely = dir.path().join("snap-00000000000000000001.snap");
    std::fs::copy(&snap, &lonely).unwrap();
    let err = failed(&restore(&net.data_dir(2), &lonely));
    assert!(err.contains("offer file"), "{err}");
    std::fs::remove_dir_all(net.data_dir(2).join("state")).unwrap();
    let restored = ok(&restore(&net.data_dir(2), &snap));
    assert!(
        restored.starts_with(&format!("restored height {newest} (")),
        "{restored}"
    );
    procs[2] = Some(NodeProc::start(&net, 2));
    let more = put_all(&client, "after-", 5);
    wait_serves(&net, 2, &[all, more].concat());
}
