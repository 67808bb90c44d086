//! Where a client process's request ids start, and why.
//!
//! Nodes name a request by `(client key, session, seq)` and keep, per session, the replies of
//! the last 256 seqs (the exactly-once window, `kv::exactly_once`): a seq in the window that
//! already ran gets its stored reply (if the ops match), a new seq runs. So one session's seqs
//! must never repeat.
//!
//! - **Session**: 64 random bits from the OS, drawn once per process ([`Start::new`]). Processes
//!   that share one `client.toml` (scripts, cron, parallel shells) therefore never share a
//!   session, however close together they start; a collision needs two equal 64-bit draws.
//! - **Seq**: starts at the wall clock in microseconds since 1970 and counts up by one per
//!   request. The table forgets old sessions (it is bounded) and then refuses, per client key,
//!   seqs below the highest one a forgotten session used; a new process starts above those as
//!   long as earlier processes averaged under one request per microsecond and the clock did
//!   not step back by more than the restart took.
//! - **Query ids** (status, stale reads) start at a random value too, so two processes'
//!   queries are never confused.

use std::time::{SystemTime, UNIX_EPOCH};

/// The random and clock-derived starting points of one client process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub session: u64,
    pub first_seq: u64,
    pub first_query: u64,
}

impl Start {
    /// Fails only if the OS has no randomness to give.
    pub fn new() -> Result<Start, String> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| format!("no OS randomness: {e}"))?;
        let (session, query) = random.split_at(8);
        Ok(Start {
            session: u64::from_le_bytes(session.try_into().unwrap_or_default()),
            first_seq: initial_seq(),
            // Half the range, so counting up from it never wraps in practice.
            first_query: u64::from_le_bytes(query.try_into().unwrap_or_default()) >> 1,
        })
    }
}

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
    use super::Start;

    #[test]
    fn later_processes_start_higher() {
        let a = super::initial_seq();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::initial_seq();
        assert!(b > a + 1000, "{a} {b}");
    }

    #[test]
    fn processes_started_together_get_different_sessions_and_query_ids() {
        let starts: Vec<Start> = (0..64).map(|_| Start::new().unwrap()).collect();
        let sessions: std::collections::HashSet<u64> = starts.iter().map(|s| s.session).collect();
        let queries: std::collections::HashSet<u64> =
            starts.iter().map(|s| s.first_query).collect();
        assert_eq!(sessions.len(), starts.len());
        assert_eq!(queries.len(), starts.len());
    }
}
