//! Client-side batching against real `bftd` processes: many threads put through one
//! [`Coalescer`]; every put is acknowledged once with its own result, and every write is
//! readable afterwards with the value its thread wrote.

#[path = "cluster_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bftd::client::{Client, ClientOptions, CoalesceOptions, Coalescer};
use bftd::config::ClientConfig;
use bftd::kv::{Op, OpReply, OpResult};
use support::*;

const THREADS: usize = 16;
const PUTS_PER_THREAD: usize = 25;

#[test]
fn many_threads_putting_through_one_coalescer_each_get_their_own_acknowledged_write() {
    let net = Testnet::new(4, "round_timeout_base_ms = 500", "");
    let _procs = start_all(&net);
    let cfg = ClientConfig::load(&net.client_config()).expect("client.toml");
    let options = ClientOptions {
        request_timeout: DEADLINE,
        resend_interval: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let client = Client::connect(&cfg, options).expect("client");
    let coalescer = Coalescer::new(
        client.clone(),
        CoalesceOptions {
            requests_in_flight_max: 2,
            ops_per_request_max: 16,
        },
    )
    .expect("coalescer");
    let coalescer = Arc::new(coalescer);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let c = Arc::clone(&coalescer);
            std::thread::spawn(move || {
                for i in 0..PUTS_PER_THREAD {
                    // Every key twice: the second put must see the first's version.
                    let key = format!("co/{t}/{}", i / 2);
                    let version = c
                        .put(key.as_bytes(), format!("{t}-{i}").as_bytes())
                        .unwrap_or_else(|e| panic!("thread {t} put {i}: {e}"));
                    assert_eq!(version, (i % 2) as u64 + 1, "thread {t} put {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a putting thread failed");
    }
    let (requests, ops) = coalescer.sent();
    assert_eq!(ops, (THREADS * PUTS_PER_THREAD) as u64);
    assert!(requests >= 1 && requests <= ops, "{requests} requests");
    for t in 0..THREADS {
        for i in (1..PUTS_PER_THREAD).step_by(2) {
            let key = format!("co/{t}/{}", i / 2);
            let got = client.get(key.as_bytes()).expect("get").expect("found");
            assert_eq!(got.value, format!("{t}-{i}").into_bytes(), "{key}");
            assert_eq!(got.version, 2, "{key}");
        }
        // The odd put count leaves one key written once.
        let last = format!("co/{t}/{}", (PUTS_PER_THREAD - 1) / 2);
        let got = client.get(last.as_bytes()).expect("get").expect("found");
        assert_eq!(got.version, 1, "{last}");
    }
    // Other operations than puts coalesce too, each with its own result shape.
    let reply = coalescer
        .op(Op::Get {
            key: b"co/0/0".to_vec(),
        })
        .expect("get through the coalescer");
    assert!(matches!(
        reply,
        OpReply::Simple(OpResult::Get { found: Some(_) })
    ));
    eprintln!("{ops} puts in {requests} requests");
}
