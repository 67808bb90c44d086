//! Linearizability and exactly-once against real `bftd` processes.
//!
//! - Four clients (threads, each with its own `Client` and its own signing key) run puts, gets
//!   and compare-version-and-puts on three keys while the leader is SIGKILLed and restarted,
//!   and then the next leader too. The recorded history (invoke/return on one monotonic clock;
//!   a timeout is an unknown outcome, a refusal a failure) is checked with the Wing & Gong /
//!   Lowe checker in `kv_linearizability.rs`.
//! - The checker itself is shown able to fail: a stale read, a lost write and a doubly
//!   applied CAS are rejected, and their valid counterparts accepted.
//! - A write retried (same client key, same seq) after the node that first replied was
//!   SIGKILLed is applied once: every reply says version 1, and so does a later read.

#[path = "kv_linearizability.rs"]
mod lin;
#[path = "cluster_support.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bftd::client::{Client, ClientError, ClientOptions, ClusterEndpoints};
use bftd::config::ClientConfig;
use bftd::crypto::Signer;
use bftd::kv::{
    Compare, CompareOp, CompareTarget, OpReply, OpResult, Reply, Txn, TxnOp, VersionedValue,
};
use bftd::wire::{ClientFrame, NodeFrame};
use lin::{Input, Operation, Outcome, Output};
use support::*;

const CLIENTS: usize = 4;
const OPS_PER_CLIENT: usize = 50;
const KEYS: [&str; 3] = ["x", "y", "z"];

/// Rewrites every node config of `net` to `[clients] allow = "any"`, so each test client can
/// use a fresh signing key (`bftd testnet` allow-lists only its one client).
fn allow_any_client(net: &Testnet) {
    for i in 0..net.nodes {
        let path = net.config(i);
        let text = std::fs::read_to_string(&path).expect("read node config");
        let start = text.find("allow = [").expect("an allow list");
        let end = start + text[start..].find("\n]\n").expect("end of allow list") + 3;
        let text = format!("{}allow = \"any\"\n{}", &text[..start], &text[end..]);
        std::fs::write(&path, text).expect("write node config");
    }
}

fn wait_converged(net: &Testnet) {
    wait_for("nodes converge on one state digest", DEADLINE, || {
        let s: Vec<_> = (0..net.nodes).filter_map(|i| status_of(net, i)).collect();
        s.len() == net.nodes
            && s.iter().all(|x| {
                x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
            })
    });
}

/// A library client of `net` signing with its own key, derived from `id` and the process.
fn client_with_own_key(net: &Testnet, id: usize) -> Client {
    let cfg = ClientConfig::load(&net.client_config()).expect("client.toml");
    let mut endpoints = ClusterEndpoints::from_config(&cfg);
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
    secret[8] = id as u8 + 1;
    endpoints.signer = Signer::new(secret, cfg.cluster);
    secret[9] = 0xAA;
    endpoints.noise_secret = secret;
    let options = ClientOptions {
        resend_interval: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    Client::start(endpoints, options).expect("start client")
}

/// splitmix64: a seeded, dependency-free choice of operations per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// Counts of what the clients saw, for the report and the non-vacuity check.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    unknown: usize,
    failed: usize,
    /// Gets issued, and gets whose barrier read fell back to an ordered read.
    gets: usize,
    barrier_fallbacks: u64,
}

fn found(v: Option<VersionedValue>) -> Option<(Vec<u8>, u64)> {
    v.map(|v| (v.value, v.version))
}

/// Runs `input` on `key` through the library: `Some(outcome)` or `None` for a clear failure
/// (a refusal or rejection: it did not take effect).
fn execute(client: &Client, key: &[u8], input: &Input) -> Option<Outcome> {
    let result = match input {
        Input::Put { value } => client
            .put(key, value)
            .map(|version| Output::Put { version }),
        Input::Get => client.get(key).map(|v| Output::Get { found: found(v) }),
        Input::Cas {
            expect_version,
            value,
        } => client.txn(cas(key, *expect_version, value)).map(|r| {
            match (r.succeeded, r.results.as_slice()) {
                (true, [OpResult::Put { version }]) => Output::CasSwapped { version: *version },
                (false, [OpResult::Get { found: f }]) => Output::CasFailed {
                    found: found(f.clone()),
                },
                other => panic!("CAS returned an unexpected shape: {other:?}"),
            }
        }),
    };
    match result {
        Ok(out) => Some(Outcome::Ok(out)),
        Err(
            ClientError::Timeout { .. }
            | ClientError::Busy { .. }
            | ClientError::Unreachable { .. }
            | ClientError::Closed,
        ) => Some(Outcome::Unknown),
        Err(ClientError::BadReply(why)) => panic!("f + 1 nodes agreed on a bad reply: {why}"),
        Err(e) => {
            eprintln!("refused: {e}");
            None
        }
    }
}

fn cas(key: &[u8], expect_version: u64, value: &[u8]) -> Txn {
    Txn {
        compare: vec![Compare {
            key: key.to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(expect_version),
        }],
        success: vec![TxnOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }],
        failure: vec![TxnOp::Get { key: key.to_vec() }],
    }
}

/// The version this client last saw for a key, from an output (a CAS guesses with it).
fn seen_version(out: &Output) -> Option<u64> {
    match out {
        Output::Put { version } | Output::CasSwapped { version } => Some(*version),
        Output::Get { found } | Output::CasFailed { found } => {
            Some(found.as_ref().map_or(0, |f| f.1))
        }
    }
}

struct Shared {
    started: Instant,
    done_ops: AtomicUsize,
    history: Mutex<Vec<Operation>>,
    tally: Mutex<Tally>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Runs one operation and records it.
    fn record(
        &self,
        client_id: usize,
        client: &Client,
        key: &str,
        input: Input,
    ) -> Option<Outcome> {
        let invoke_ns = self.now_ns();
        let outcome = execute(client, key.as_bytes(), &input);
        let return_ns = self.now_ns();
        let mut tally = self.tally.lock().unwrap();
        match &outcome {
            Some(Outcome::Ok(_)) => tally.ok += 1,
            Some(Outcome::Unknown) => tally.unknown += 1,
            None => tally.failed += 1,
        }
        // A failed op took no effect; an unknown read observed nothing: neither is checked.
        let keep = matches!(&outcome, Some(Outcome::Ok(_)))
            || matches!(&outcome, Some(Outcome::Unknown)) && input != Input::Get;
        if let (true, Some(o)) = (keep, &outcome) {
            self.history.lock().unwrap().push(Operation {
                client: client_id,
                key: key.as_bytes().to_vec(),
                input,
                outcome: o.clone(),
                invoke_ns,
                return_ns,
            });
        }
        outcome
    }
}

fn run_client(id: usize, client: Client, shared: Arc<Shared>) {
    let mut rng = Rng(id as u64 * 7919 + 17);
    let mut versions = [0u64; KEYS.len()];
    let mut gets = 0;
    for n in 0..OPS_PER_CLIENT {
        let k = rng.below(KEYS.len() as u64) as usize;
        let value = format!("c{id}-{n}").into_bytes();
        let input = match rng.below(10) {
            0..=3 => Input::Put { value },
            4..=6 => {
                gets += 1;
                Input::Get
            }
            _ => Input::Cas {
                expect_version: versions[k],
                value,
            },
        };
        if let Some(Outcome::Ok(out)) = shared.record(id, &client, KEYS[k], input) {
            versions[k] = seen_version(&out).unwrap_or(versions[k]);
        }
        shared.done_ops.fetch_add(1, Ordering::Relaxed);
    }
    note_reads(&shared, &client, gets);
    client.shutdown();
}

/// Adds a client's gets and barrier fallbacks to the tally.
fn note_reads(shared: &Shared, client: &Client, gets: usize) {
    let mut tally = shared.tally.lock().unwrap();
    tally.gets += gets;
    tally.barrier_fallbacks += client.barrier_fallbacks();
}

/// SIGKILLs the current leader once `kill_at` ops are done, restarts it at `restart_at`.
fn kill_and_restart_leader(
    net: &Testnet,
    procs: &mut [Option<NodeProc>],
    shared: &Shared,
    (kill_at, restart_at): (usize, usize),
) {
    let total = CLIENTS * OPS_PER_CLIENT;
    let done = || shared.done_ops.load(Ordering::Relaxed);
    wait_for("clients make progress", DEADLINE, || done() >= kill_at);
    let leader = (0..net.nodes)
        .find_map(|i| status_of(net, i))
        .expect("a node answers status")
        .leader as usize;
    procs[leader].take().expect("leader is running").kill();
    eprintln!("SIGKILLed leader {leader} after {} ops", done());
    wait_for("clients make progress without it", DEADLINE, || {
        done() >= restart_at.min(total)
    });
    procs[leader] = Some(NodeProc::start(net, leader));
    wait_for("the restarted node answers status", DEADLINE, || {
        status_of(net, leader).is_some()
    });
    eprintln!("restarted node {leader} after {} ops", done());
}

#[test]
fn concurrent_clients_see_a_linearizable_history_across_leader_crashes() {
    let began = Instant::now();
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    allow_any_client(&net);
    let mut procs = start_all(&net);
    let shared = Arc::new(Shared {
        started: Instant::now(),
        done_ops: AtomicUsize::new(0),
        history: Mutex::new(Vec::new()),
        tally: Mutex::new(Tally::default()),
    });
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = client_with_own_key(&net, id);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || run_client(id, client, shared))
        })
        .collect();
    kill_and_restart_leader(&net, &mut procs, &shared, (30, 80));
    kill_and_restart_leader(&net, &mut procs, &shared, (110, 160));
    for t in threads {
        t.join().expect("client thread");
    }
    // Final reads, after every client returned, pin down each key's last value.
    let reader = client_with_own_key(&net, CLIENTS);
    for key in KEYS {
        shared.record(CLIENTS, &reader, key, Input::Get);
    }
    note_reads(&shared, &reader, KEYS.len());
    reader.shutdown();
    let history = std::mem::take(&mut *shared.history.lock().unwrap());
    let tally = shared.tally.lock().unwrap();
    eprintln!("{tally:?}; {} ops in the checked history", history.len());
    let total = CLIENTS * OPS_PER_CLIENT + KEYS.len();
    assert!(
        tally.ok * 10 >= total * 8,
        "too few operations succeeded for the check to mean much: {tally:?}"
    );
    // Gets go by read barrier (`ReadMode::Barrier`, the default): most must have been
    // answered that way, or this test would only check the ordered path.
    assert!(
        tally.barrier_fallbacks * 2 < tally.gets as u64,
        "most gets fell back to ordered reads: {tally:?}"
    );
    let checked = Instant::now();
    if let Err(v) = lin::check(&history) {
        panic!("{v}");
    }
    eprintln!(
        "history linearizable (checked in {:?}); test took {:?}",
        checked.elapsed(),
        began.elapsed()
    );
    assert_stale_final_read_is_caught(&history);
    wait_converged(&net);
}

/// The value an acknowledged write gave `key` at `version`, if the history has it.
fn acked_value(history: &[Operation], key: &[u8], version: u64) -> Option<Vec<u8>> {
    history.iter().find_map(|w| match (&w.input, &w.outcome) {
        (
            Input::Put { value } | Input::Cas { value, .. },
            Outcome::Ok(Output::Put { version: v } | Output::CasSwapped { version: v }),
        ) if w.key == key && *v == version => Some(value.clone()),
        _ => None,
    })
}

/// Non-vacuity on the real history: make one final read (it started after every other
/// operation returned) see the value one version older, written by an acknowledged write;
/// the checker must reject that.
fn assert_stale_final_read_is_caught(history: &[Operation]) {
    let mut mutated = history.to_vec();
    let injected = mutated.iter_mut().any(|o| {
        let Outcome::Ok(Output::Get {
            found: Some((_, version)),
        }) = &o.outcome
        else {
            return false;
        };
        let older = version - 1;
        match acked_value(history, &o.key, older) {
            Some(value) if o.client == CLIENTS && older > 0 => {
                o.outcome = Outcome::Ok(Output::Get {
                    found: Some((value, older)),
                });
                true
            }
            _ => false,
        }
    });
    if !injected {
        eprintln!("no final read with an acknowledged older version: mutation check skipped");
        return;
    }
    let started = Instant::now();
    assert!(
        lin::check(&mutated).is_err(),
        "a stale read injected into the real history was accepted"
    );
    eprintln!(
        "a stale read injected into the real history is rejected ({:?})",
        started.elapsed()
    );
}

// ---- The checker can fail ----

fn op(client: usize, t: (u64, u64), input: Input, output: Option<Output>) -> Operation {
    Operation {
        client,
        key: b"k".to_vec(),
        input,
        outcome: output.map_or(Outcome::Unknown, Outcome::Ok),
        invoke_ns: t.0,
        return_ns: t.1,
    }
}

fn put_op(client: usize, t: (u64, u64), value: &str, version: u64) -> Operation {
    let input = Input::Put {
        value: value.into(),
    };
    op(client, t, input, Some(Output::Put { version }))
}

fn get_op(client: usize, t: (u64, u64), value: Option<(&str, u64)>) -> Operation {
    let found = value.map(|(v, n)| (v.as_bytes().to_vec(), n));
    op(client, t, Input::Get, Some(Output::Get { found }))
}

#[test]
fn checker_rejects_a_stale_read() {
    // Put a (v1), then put b (v2) completes; a read that starts after it returns a: stale.
    let stale = [
        put_op(0, (0, 10), "a", 1),
        put_op(0, (20, 30), "b", 2),
        get_op(1, (40, 50), Some(("a", 1))),
    ];
    let started = Instant::now();
    let verdict = lin::check(&stale);
    eprintln!("stale read rejected in {:?}", started.elapsed());
    let violation = verdict.expect_err("a stale read must be rejected");
    assert_eq!(violation.key, b"k");
    // The same read overlapping the second put may linearize before it: accepted.
    let concurrent = [
        put_op(0, (0, 10), "a", 1),
        put_op(0, (20, 45), "b", 2),
        get_op(1, (40, 50), Some(("a", 1))),
    ];
    assert!(lin::check(&concurrent).is_ok());
}

#[test]
fn checker_rejects_a_lost_write_and_a_doubly_applied_cas() {
    // An acknowledged put that a later read does not see.
    let lost = [put_op(0, (0, 10), "a", 1), get_op(1, (20, 30), None)];
    assert!(lin::check(&lost).is_err(), "lost write accepted");
    // Two CASes from version 0 cannot both succeed.
    let cas = |client, t, value: &str, version| {
        let input = Input::Cas {
            expect_version: 0,
            value: value.into(),
        };
        op(client, t, input, Some(Output::CasSwapped { version }))
    };
    let double = [cas(0, (0, 10), "a", 1), cas(1, (5, 15), "b", 2)];
    assert!(lin::check(&double).is_err(), "two winning CASes accepted");
    // A put applied twice: the version counter shows it.
    let twice = [put_op(0, (0, 10), "a", 2)];
    assert!(lin::check(&twice).is_err(), "put applied twice accepted");
}

#[test]
fn checker_accepts_unknown_outcomes_either_way() {
    let unknown_put = |t| {
        let input = Input::Put { value: "u".into() };
        op(0, t, input, None)
    };
    // It took effect...
    let took = [unknown_put((0, 5)), get_op(1, (20, 30), Some(("u", 1)))];
    assert!(lin::check(&took).is_ok());
    // ... or it did not.
    let did_not = [unknown_put((0, 5)), get_op(1, (20, 30), None)];
    assert!(lin::check(&did_not).is_ok());
    // But not before it was invoked.
    let too_early = [get_op(1, (0, 3), Some(("u", 1))), unknown_put((5, 6))];
    assert!(lin::check(&too_early).is_err());
}

#[test]
fn checker_is_fast_on_a_large_concurrent_history() {
    // 4 clients, 60 rounds of 4 mutually overlapping writes, then a read of the final value:
    // each round's writes may be ordered 4! ways, which the memoisation must keep cheap.
    let mut ops = Vec::new();
    let mut version = 0;
    for round in 0..60u64 {
        for c in 0..4u64 {
            version += 1;
            let t = round * 100;
            ops.push(put_op(
                c as usize,
                (t + c, t + 50 + c),
                &format!("{round}-{c}"),
                version,
            ));
        }
    }
    let last = "59-3";
    ops.push(get_op(9, (10_000, 10_010), Some((last, version))));
    let started = Instant::now();
    assert!(lin::check(&ops).is_ok());
    let took = started.elapsed();
    eprintln!("{} ops checked in {took:?}", ops.len());
    assert!(took < Duration::from_secs(10), "checker too slow: {took:?}");
}

// ---- Exactly-once ----

/// Sends request `seq` to every node; returns (node, reply bytes) of the first to reply.
fn first_reply(net: &Testnet, seq: u64, ops: &[bftd::kv::Op]) -> (usize, Vec<u8>) {
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..net.nodes {
        let mut raw = RawClient::connect(net, i).expect("connect");
        let req = raw.request(seq, ops);
        let tx = tx.clone();
        std::thread::spawn(move || {
            raw.send(&ClientFrame::Submit(req))?;
            loop {
                if let NodeFrame::Reply { seq: s, reply, .. } = raw.recv()?
                    && s == seq
                {
                    let _ = tx.send((i, reply));
                    return Ok::<(), std::io::Error>(());
                }
            }
        });
    }
    rx.recv_timeout(DEADLINE).expect("no node replied")
}

fn put_version(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Done(ops) => match ops.as_slice() {
            [OpReply::Simple(OpResult::Put { version })] => Some(*version),
            _ => None,
        },
        Reply::Rejected(_) => None,
    }
}

#[test]
fn a_write_retried_after_the_replying_node_dies_is_applied_once() {
    let began = Instant::now();
    let net = Testnet::new(4, "round_timeout_base_ms = 300", "");
    let mut procs = start_all(&net);
    let seq = 1_000;
    let write = [put("once", "v1")];
    let (x, bytes) = first_reply(&net, seq, &write);
    let first = bftd::kv::decode_reply(&bytes).expect("decode reply");
    assert_eq!(put_version(&first), Some(1), "first reply: {first:?}");
    eprintln!("first reply at {:?}", began.elapsed());
    procs[x].take().expect("node x runs").kill();
    eprintln!("node {x} replied first; SIGKILLed it");
    // The client retries the same signed request (same key, same seq) on the others.
    let mut all = AllNodes::connect(&net, 1);
    let retried = Instant::now();
    let again = loop {
        match all.try_submit(seq, &write) {
            Ok(r) => break r,
            Err(e) => assert!(retried.elapsed() < DEADLINE, "retry never answered: {e}"),
        }
    };
    assert_eq!(
        again, first,
        "the retry must get the stored reply, not a new write"
    );
    eprintln!("retry answered in {:?}", retried.elapsed());
    // X comes back, catches up, and answers the same seq from the replicated table.
    procs[x] = Some(NodeProc::start(&net, x));
    wait_converged(&net);
    let mut alone = RawClient::connect(&net, x).expect("connect to the restarted node");
    let from_x = alone
        .submit(seq, &write)
        .expect("restarted node answers the retry");
    assert_eq!(from_x, first, "restarted node {x}");
    eprintln!(
        "restarted node answered the retry; at {:?}",
        began.elapsed()
    );
    // A read after all the retries: still version 1.
    let mut read = None;
    wait_for("a read commits", DEADLINE, || {
        read = all.try_submit(seq + 1, &[get("once")]).ok();
        read.is_some()
    });
    eprintln!("read answered; at {:?}", began.elapsed());
    let silent: Vec<usize> = (0..net.nodes)
        .filter(|&i| all.clients[i].is_none())
        .collect();
    if !silent.is_empty() {
        eprintln!("nodes {silent:?} did not answer the read (f + 1 others did)");
    }
    let found = match read {
        Some(Reply::Done(ops)) => match ops.as_slice() {
            [OpReply::Simple(OpResult::Get { found })] => found.clone(),
            other => panic!("a get returned {other:?}"),
        },
        other => panic!("a get returned {other:?}"),
    };
    let found = found.expect("the key exists");
    assert_eq!(found.value, b"v1");
    assert_eq!(found.version, 1, "the write was applied more than once");
    eprintln!("exactly-once test took {:?}", began.elapsed());
}
