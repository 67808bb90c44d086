//! Processes that share one `client.toml`, as scripts, cron jobs and parallel shells do: 8
//! workers each run 50 `bftctl` processes one after another against a real 4-node cluster, all
//! with the same client keys. Every process writes a key of its own and reads it back in the
//! same transaction. Before request ids carried a per-process session, such processes collided
//! (`SeqTooOld`, timeouts, one process answered with another's reply); now every process
//! succeeds, its reply shows its own value, and every acknowledged write is in the store.

#[path = "cluster_support.rs"]
mod support;

use std::process::{Command, Output};

use support::*;

const WORKERS: usize = 8;
const BURSTS_PER_WORKER: usize = 50;

fn bftctl(net: &Testnet, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("-c")
        .arg(net.client_config())
        // Generous: a busy 2-core machine must not fail the test.
        .args(["--timeout-ms", "60000"])
        .args(args)
        .output()
        .expect("run bftctl")
}

/// What one `bftctl` process was asked to write and what it printed.
struct Burst {
    key: String,
    value: String,
    output: Output,
}

fn worker(net: &Testnet, worker: usize) -> Vec<Burst> {
    (0..BURSTS_PER_WORKER)
        .map(|burst| {
            let key = format!("shared/w{worker}/b{burst:02}");
            let value = format!("from-worker-{worker}-burst-{burst}");
            let ops = format!("put {key} {value}; get {key}");
            let output = bftctl(net, &["txn", "--then", &ops]);
            Burst { key, value, output }
        })
        .collect()
}

/// Why a burst is wrong, if it is.
fn check(burst: &Burst) -> Result<(), String> {
    let stdout = String::from_utf8_lossy(&burst.output.stdout);
    let stderr = String::from_utf8_lossy(&burst.output.stderr);
    if !burst.output.status.success() {
        return Err(format!("{} failed: {stderr}", burst.key));
    }
    // Its own put (a new key: version 1) and its own value read back, nothing else.
    let expected_put = format!("put {}: version 1", burst.key);
    let expected_get = format!("get {}: {} (version 1,", burst.key, burst.value);
    if !stdout.contains(&expected_put) || !stdout.contains(&expected_get) {
        return Err(format!(
            "{}: a reply that is not its own: {stdout}",
            burst.key
        ));
    }
    Ok(())
}

#[test]
fn processes_sharing_one_client_key_all_succeed_with_their_own_replies() {
    let net = Testnet::new(4, "", "");
    let _procs: Vec<NodeProc> = (0..4).map(|i| NodeProc::start(&net, i)).collect();
    wait_for("every node answers status", DEADLINE, || {
        (0..4).all(|i| status_of(&net, i).is_some())
    });
    let bursts: Vec<Burst> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let net = &net;
                s.spawn(move || worker(net, w))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    });
    let failures: Vec<String> = bursts.iter().filter_map(|b| check(b).err()).collect();
    if !failures.is_empty() {
        dump_logs(&net);
    }
    assert!(
        failures.is_empty(),
        "{} of {} processes failed; first: {:#?}",
        failures.len(),
        bursts.len(),
        &failures[..failures.len().min(5)]
    );
    // Every acknowledged write is in the store, with its own value (a linearizable range
    // through consensus, by one more process sharing the key).
    let read = bftctl(&net, &["range", "shared/", "shared0", "--limit", "1000"]);
    assert!(read.status.success(), "{read:?}");
    let listing = String::from_utf8_lossy(&read.stdout);
    assert_eq!(
        listing.lines().count(),
        WORKERS * BURSTS_PER_WORKER,
        "{listing}"
    );
    for b in &bursts {
        let line = format!("{} = {} (version 1,", b.key, b.value);
        assert!(listing.contains(&line), "{line} missing from:\n{listing}");
    }
}
