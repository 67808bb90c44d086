//! Multi-process tests of real `bftd` processes on 127.0.0.1: a cluster commits client
//! writes on every node, and survives SIGTERM/restart with every acknowledged write intact.

#[path = "cluster_support.rs"]
mod support;

use bftd::kv::{OpReply, OpResult, Reply};
use support::*;

fn version_of(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Done(ops) => ops.iter().find_map(|op| match op {
            OpReply::Simple(OpResult::Put { version }) => Some(*version),
            _ => None,
        }),
        Reply::Rejected(_) => None,
    }
}

fn value_of(reply: &Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Done(ops) => ops.iter().find_map(|op| match op {
            OpReply::Simple(OpResult::Get { found }) => found.as_ref().map(|v| v.value.clone()),
            _ => None,
        }),
        Reply::Rejected(_) => None,
    }
}

#[test]
fn writes_commit_on_every_node_and_survive_a_clean_restart() {
    let net = Testnet::new(4, "round_timeout_base_ms = 500", "");
    let procs: Vec<NodeProc> = (0..4).map(|i| NodeProc::start(&net, i)).collect();
    wait_for("every node answers status", DEADLINE, || {
        (0..4).all(|i| status_of(&net, i).is_some())
    });
    let mut all = AllNodes::connect(&net, 1);
    for seq in 1..=20u64 {
        let reply = all.submit(seq, &[put(&format!("k{seq}"), &format!("v{seq}"))]);
        assert_eq!(version_of(&reply), Some(1), "put {seq}: {reply:?}");
    }
    let reply = all.submit(21, &[get("k7")]);
    assert_eq!(value_of(&reply), Some(b"v7".to_vec()));
    wait_for("all nodes applied the same state", DEADLINE, || {
        let s: Vec<_> = (0..4).filter_map(|i| status_of(&net, i)).collect();
        s.len() == 4
            && s.iter().all(|x| {
                x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
            })
    });
    drop(all);
    for p in procs {
        assert_eq!(p.terminate(), Some(0), "clean exit on SIGTERM");
    }
    let _procs: Vec<NodeProc> = (0..4).map(|i| NodeProc::start(&net, i)).collect();
    wait_for("every node answers status after restart", DEADLINE, || {
        (0..4).all(|i| status_of(&net, i).is_some())
    });
    let mut all = AllNodes::connect(&net, 1);
    let reply = all.submit(22, &[get("k20")]);
    assert_eq!(
        value_of(&reply),
        Some(b"v20".to_vec()),
        "write survived the restart"
    );
}

/// Runs `bftd --config` to completion and returns its exit code and last stderr line.
fn run_to_exit(net: &Testnet, i: usize) -> (Option<i32>, String) {
    let out = std::process::Command::new(bftd_bin())
        .arg("--config")
        .arg(net.config(i))
        .output()
        .expect("run bftd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("").to_string();
    (out.status.code(), last)
}

#[test]
fn a_node_that_cannot_start_exits_1_with_the_reason() {
    let net = Testnet::new(4, "", "");
    // The port is taken.
    let taken = std::net::TcpListener::bind(net.addr(1)).expect("bind the node's port");
    let (code, why) = run_to_exit(&net, 1);
    drop(taken);
    assert_eq!(code, Some(1));
    assert!(
        why.contains("cannot listen on") && why.contains("in use"),
        "{why}"
    );
    // The data dir is held by a running node.
    let running = NodeProc::start(&net, 0);
    wait_for("node 0 is up", DEADLINE, || status_of(&net, 0).is_some());
    let (code, why) = run_to_exit(&net, 0);
    assert_eq!(code, Some(1));
    assert!(why.contains("in use"), "{why}");
    drop(running);
    // A config mistake names the file and the field.
    let path = net.config(2);
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(&path, text.replace("f = 1", "f = 2")).expect("write config");
    let (code, why) = run_to_exit(&net, 2);
    assert_eq!(code, Some(1));
    assert!(
        why.contains("node2.toml: cluster has 4 members but f = 2 needs at least 7"),
        "{why}"
    );
}

fn inspect(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(bftd_bin())
        .arg("inspect")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run bftd inspect");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn inspect_verifies_a_data_dir_and_a_damaged_one_is_refused() {
    let net = Testnet::new(4, "", "");
    let procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    for seq in 1..=5u64 {
        all.submit(seq, &[put(&format!("k{seq}"), "v")]);
    }
    drop(all);
    for p in procs.into_iter().flatten() {
        assert_eq!(p.terminate(), Some(0));
    }
    let (code, text) = inspect(&net.data_dir(0));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("all checksums verified")
            && text.contains("applied height")
            && text.contains("state tree: matches the entries")
            && text.contains("the newest is the state digest"),
        "{text}"
    );

    // Flip one byte inside the first WAL record of the state engine: records after it are
    // still valid, so this is corruption, not a torn tail.
    let wal_dir = net.data_dir(0).join("state");
    let wal = std::fs::read_dir(&wal_dir)
        .expect("list state dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .find(|p| std::fs::metadata(p).map(|m| m.len() > 64).unwrap_or(false))
        .expect("a non-empty WAL segment");
    let mut bytes = std::fs::read(&wal).expect("read WAL");
    bytes[12] ^= 0xff;
    std::fs::write(&wal, bytes).expect("write WAL");
    let (code, text) = inspect(&net.data_dir(0));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("CORRUPT"), "{text}");
    let (code, why) = run_to_exit(&net, 0);
    assert_eq!(code, Some(1), "a node must refuse a corrupt data dir");
    assert!(why.contains("corrupt"), "{why}");
}

#[test]
fn a_backup_restores_into_a_wiped_node_which_then_rejoins() {
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    let procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    for seq in 1..=10u64 {
        all.submit(seq, &[put(&format!("k{seq}"), "v")]);
    }
    drop(all);
    for p in procs.into_iter().flatten() {
        assert_eq!(p.terminate(), Some(0));
    }
    let backup = net.dir.path().join("node0.bak");
    let bftd = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(bftd_bin())
            .args(args)
            .output()
            .expect("run bftd");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = bftd(&[
        "snapshot".as_ref(),
        "save".as_ref(),
        "--data-dir".as_ref(),
        net.data_dir(0).as_os_str(),
        backup.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    // Node 3 loses its state (not its safety data) and gets the backup.
    std::fs::remove_dir_all(net.data_dir(3).join("state")).expect("wipe node3 state");
    let (code, text) = bftd(&[
        "snapshot".as_ref(),
        "restore".as_ref(),
        "--data-dir".as_ref(),
        net.data_dir(3).as_os_str(),
        backup.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("restored height"), "{text}");
    // A damaged backup is refused before anything is replaced.
    let mut bytes = std::fs::read(&backup).expect("read backup");
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    let bad = net.dir.path().join("bad.bak");
    std::fs::write(&bad, bytes).expect("write bad backup");
    let (code, text) = bftd(&[
        "snapshot".as_ref(),
        "restore".as_ref(),
        "--data-dir".as_ref(),
        net.data_dir(2).as_os_str(),
        bad.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{text}");

    let _procs = start_all(&net);
    let mut all = AllNodes::connect(&net, 1);
    all.submit(11, &[put("after", "restore")]);
    let mut node3 = RawClient::connect(&net, 3).expect("connect node3");
    assert_eq!(
        node3.stale_get("k5").expect("stale get"),
        Some(b"v".to_vec())
    );
    wait_for(
        "node3 applies the write after the restore",
        DEADLINE,
        || {
            RawClient::connect(&net, 3)
                .and_then(|mut c| c.stale_get("after"))
                .is_ok_and(|v| v == Some(b"restore".to_vec()))
        },
    );
}
