//! What every multi-process and socket test shares: one way to wait for a condition and one
//! way to pick ports.
//!
//! Ports: tests pick ports below the kernel's ephemeral range (Linux default 32768-60999),
//! which is where outgoing connections take their local ports. A port probed free inside that
//! range can be taken by any outgoing connection — a node dialling a peer, a client — before
//! the process meant to listen on it binds it, and the node then fails to start (this made
//! `ops_metrics` time out waiting for every node's status). Each call takes a fresh range
//! from a process-wide counter, spread by the process id, so tests of one binary and
//! concurrent test binaries do not probe the same ports.
//!
//! Included by the `*_support.rs` files (`#[path = "support/mod.rs"]`); cargo does not build
//! this directory as a test of its own.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Generous: a loaded 2-core machine building other code must not fail a test.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Where test listeners live: above the well-known and registered ports most services use,
/// below the ephemeral range.
pub const TEST_PORTS: Range<u16> = 10_000..32_000;

/// Polls `cond` until it holds; panics with `what` after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_for(what, DEADLINE, cond);
}

/// `n` consecutive ports on 127.0.0.1 in [`TEST_PORTS`] that were free when probed.
pub fn free_port_range(n: usize) -> u16 {
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let n = u32::try_from(n).expect("a handful of ports");
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    assert!(n > 0 && n < span / 2, "{n} ports");
    let stride = n + 3;
    let spread = (std::process::id() % 1_000) * 211;
    for _ in 0..span / stride {
        // Every attempt claims a fresh range, so a later call never probes one handed out.
        let offset = spread + TAKEN.fetch_add(stride, Ordering::Relaxed);
        let base = u32::from(TEST_PORTS.start) + offset % (span - n);
        let all_free =
            (base..base + n).all(|port| TcpListener::bind(("127.0.0.1", port as u16)).is_ok());
        if all_free {
            return base as u16;
        }
    }
    panic!("no {n} consecutive free ports in {TEST_PORTS:?}");
}

/// One free `127.0.0.1` address in [`TEST_PORTS`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port_range(1)))
}
