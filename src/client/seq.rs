//! Where a client's request seqs start, and why.
//!
//! Nodes keep, per client signing key, the replies of the last 256 seqs (the exactly-once
//! window, `kv::exactly_once`): a seq in the window that already ran gets its stored reply, a
//! new seq runs. So seqs must never repeat for one signing key, *across process restarts*, or a
//! new request would be answered with an old reply. We do not persist a counter: a process
//! starts at the wall clock in microseconds since 1970 and counts up by one per request. A
//! restarted process therefore starts above every seq its predecessor used as long as that
//! predecessor averaged under one request per microsecond (a million per second, far beyond
//! one client), and the clock did not step back by more than the restart took.
//!
//! Not covered: two processes using the same signing key *at the same time* (their seqs
//! interleave and each may see `SeqTooOld` or the other's reply). Give each concurrent client
//! process its own key.

use std::time::{SystemTime, UNIX_EPOCH};

/// The first seq of a new client process: microseconds since the Unix epoch (at least 1).
pub fn initial_seq() -> u64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    u64::try_from(micros).unwrap_or(u64::MAX / 2).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn later_processes_start_higher() {
        let a = super::initial_seq();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::initial_seq();
        assert!(b > a + 1000, "{a} {b}");
    }
}
