//! `bftctl watch` against four real `bftd` processes: the exact lines of puts, deletes and a
//! range delete in order, as text and JSON; no gap and no duplicate while a node is SIGKILLed
//! and restarted; `--from-height` replaying history; a too-old `--from-height` failing with
//! "compacted ... resume from"; and a closed pipe ending the watch quietly.

#[path = "cluster_support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

use support::*;

/// The watch log keeps this many heights on every node of the test cluster.
// An idle cluster adds empty blocks after each write until its root is certified (about
// three heights per lone write), so the log must keep well more heights than the writes here.
const WATCH_LOG_HEIGHTS: u64 = 400;

/// A running `bftctl watch` whose output lines arrive on a channel.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
}

impl Watcher {
    fn start(config: &Path, args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bftctl"))
            .arg("--config")
            .arg(config)
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bftctl watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines }
    }

    fn next_line(&self, what: &str) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => panic!("no watch line in {DEADLINE:?} waiting for {what}"),
        }
    }

    /// The next `n` lines.
    fn take(&self, n: usize, what: &str) -> Vec<String> {
        (0..n).map(|_| self.next_line(what)).collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `"12 PUT w/a = 1 (version 1)"` -> `(12, "PUT w/a = 1 (version 1)")`.
fn split_height(line: &str) -> (u64, String) {
    let (height, rest) = line.split_once(' ').expect("a height, then the change");
    (height.parse().expect("a height"), rest.to_string())
}

fn applied_height(net: &Testnet) -> u64 {
    (0..net.nodes)
        .filter_map(|i| status_of(net, i))
        .map(|s| s.applied_height)
        .max()
        .unwrap_or(0)
}

#[test]
fn watch_streams_committed_changes_in_order_across_a_node_restart() {
    let net = Testnet::new(4, "", &format!("watch_log_heights = {WATCH_LOG_HEIGHTS}"));
    let mut procs = start_all(&net);
    let config = net.client_config();

    // A watch from "now": write a marker until the watch shows one, so it is subscribed.
    let text = Watcher::start(&config, &["w/", "--prefix"]);
    let mut marker_line = None;
    for i in 0..100 {
        ok(bftctl(&config, &["put", "w/0", &i.to_string()]));
        if let Ok(line) = text.lines.recv_timeout(std::time::Duration::from_secs(2)) {
            marker_line = Some(line);
            break;
        }
    }
    let marker_line = marker_line.expect("the watch shows the marker");
    let (start_height, marker) = split_height(&marker_line);
    assert!(marker.starts_with("PUT w/0 = "), "{marker_line}");
    // Markers written before the watch saw one may still follow; drain to the last one.
    let json = Watcher::start(
        &config,
        &[
            "--json",
            "w/",
            "--prefix",
            "--from-height",
            &start_height.to_string(),
        ],
    );

    ok(bftctl(&config, &["put", "w/a", "1"]));
    ok(bftctl(&config, &["put", "x/other", "not watched"]));
    ok(bftctl(&config, &["put", "w/b", "2"]));
    ok(bftctl(&config, &["put", "w/a", "3"]));
    ok(bftctl(&config, &["del", "w/a"]));
    ok(bftctl(&config, &["put", "w/c", "4"]));
    ok(bftctl(&config, &["del", "w/", "--prefix"]));
    let expected = [
        "PUT w/a = 1 (version 1)",
        "PUT w/b = 2 (version 1)",
        "PUT w/a = 3 (version 2)",
        "DELETE w/a",
        "PUT w/c = 4 (version 1)",
        // The range delete: one height, in key order (w/0 is the marker).
        "DELETE w/0",
        "DELETE w/b",
        "DELETE w/c",
    ];
    let mut seen: Vec<(u64, String)> = Vec::new();
    while seen.len() < expected.len() {
        let (height, change) = split_height(&text.next_line("the changes"));
        if change.starts_with("PUT w/0 = ") && seen.is_empty() {
            continue; // a later marker write
        }
        seen.push((height, change));
    }
    let changes: Vec<&str> = seen.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(changes, expected);
    let heights: Vec<u64> = seen.iter().map(|(h, _)| *h).collect();
    assert!(heights[..5].windows(2).all(|w| w[0] < w[1]), "{heights:?}");
    assert!(heights[5..].iter().all(|h| *h == heights[5]) && heights[5] > heights[4]);

    // The JSON watch from the marker's height saw the same changes, one object per line.
    let json_lines: Vec<String> = std::iter::from_fn(|| Some(json.next_line("JSON changes")))
        .skip_while(|l| l.contains(r#""key":"w/0""#) && l.contains(r#""type":"put""#))
        .take(expected.len())
        .collect();
    assert_eq!(
        json_lines[0],
        format!(
            r#"{{"height":{},"type":"put","key":"w/a","value":"1","version":1,"mod_height":{}}}"#,
            heights[0], heights[0]
        )
    );
    assert_eq!(
        json_lines[3],
        format!(r#"{{"height":{},"type":"delete","key":"w/a"}}"#, heights[3])
    );
    assert_eq!(
        json_lines[7],
        format!(r#"{{"height":{},"type":"delete","key":"w/c"}}"#, heights[5])
    );

    // SIGKILL a node while watching, write while it is down and after it is back.
    procs[1].take().expect("node 1 runs").kill();
    ok(bftctl(&config, &["put", "w/e", "5"]));
    ok(bftctl(&config, &["put", "w/f", "6"]));
    procs[1] = Some(NodeProc::start(&net, 1));
    wait_until("node 1 answers again", || status_of(&net, 1).is_some());
    ok(bftctl(&config, &["put", "w/g", "7"]));
    let after: Vec<String> = text
        .take(3, "changes around the restart")
        .iter()
        .map(|l| split_height(l).1)
        .collect();
    assert_eq!(
        after,
        [
            "PUT w/e = 5 (version 1)",
            "PUT w/f = 6 (version 1)",
            "PUT w/g = 7 (version 1)"
        ]
    );
    // Nothing more: no duplicate of any of them comes later either.
    ok(bftctl(&config, &["put", "w/h", "8"]));
    assert_eq!(
        split_height(&text.next_line("the last put")).1,
        "PUT w/h = 8 (version 1)"
    );

    // --from-height replays the history exactly as it was streamed.
    let replay = Watcher::start(
        &config,
        &["w/", "--prefix", "--from-height", &heights[0].to_string()],
    );
    let replayed = replay.take(expected.len(), "the replay");
    let streamed: Vec<String> = seen.iter().map(|(h, c)| format!("{h} {c}")).collect();
    assert_eq!(replayed, streamed);
    drop(replay);

    // A reader that goes away ends the watch quietly (exit 0, no panic).
    let mut piped = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(&config)
        .args([
            "watch",
            "w/",
            "--prefix",
            "--from-height",
            &heights[0].to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bftctl watch");
    drop(piped.stdout.take());
    wait_until("the watch with a closed pipe exits", || {
        matches!(piped.try_wait(), Ok(Some(_)))
    });

    // History older than the log keeps is refused with the height to resume from.
    let target = applied_height(&net) + WATCH_LOG_HEIGHTS + 5;
    while applied_height(&net) < target {
        ok(bftctl(
            &config,
            &["bench", "--ops", "20", "--concurrency", "1"],
        ));
    }
    let old = bftctl(&config, &["watch", "w/", "--prefix", "--from-height", "1"]);
    let err = String::from_utf8_lossy(&old.stderr).into_owned();
    assert_eq!(old.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("bftctl: compacted: ") && err.contains("resume from "),
        "{err}"
    );
    let out = piped.wait_with_output().expect("bftctl watch ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// A height whose watched changes do not fit one frame ends the watch with a refusal that
/// says so (here: a range delete of 40 keys of 4000 bytes against 128 KiB frames), rather
/// than a watch that silently stops.
#[test]
fn a_height_too_large_for_a_frame_is_refused_with_a_reason() {
    let net = Testnet::new(
        4,
        "block_bytes_max = 16384\nsync_response_bytes_max = 40960",
        "",
    );
    for i in 0..net.nodes {
        let path = net.config(i);
        let text = std::fs::read_to_string(&path).expect("read node config");
        let text = text.replace("[limits]\n", "[limits]\nmax_frame_bytes = 131072\n");
        std::fs::write(&path, text).expect("write node config");
    }
    let _procs = start_all(&net);
    let config = net.client_config();
    let long = "x".repeat(4000);
    for i in 0..40 {
        ok(bftctl(&config, &["put", &format!("big/{long}{i:02}"), "v"]));
    }
    let before = applied_height(&net);
    ok(bftctl(&config, &["del", "big/", "--prefix"]));
    let from = (before + 1).to_string();
    let out = bftctl(
        &config,
        &["watch", "big/", "--prefix", "--from-height", &from],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("more than the 131072 a watch frame may carry; watch a narrower key"),
        "{err}"
    );
}
