//! Per-peer rate limits on the requests that are cheap to send and costly to answer (issue 13
//! item 8): sync requests (blocks, up to `sync_response_bytes_max` each), snapshot requests
//! (1 MiB chunk reads), `SyncInfo` (certificates to verify, and answered with ours) and
//! timeouts (a stale one is answered with our certificates), and, on the way out, the
//! `SyncInfo` answers themselves.
//!
//! One token bucket per (peer, kind): `rate_per_s` tokens a second up to `burst`. A message
//! that finds its bucket empty is dropped before any decoding past its kind or any signature
//! check, and counted per kind (`bftd_peer_requests_limited_total`). Honest peers stay far
//! below the rates: a syncing node sends one request per response, a snapshot download asks
//! for one chunk at a time, gossip is one `SyncInfo` per 2 s plus one per fast commit, and
//! timeouts come once per round. Every limited message is one its sender retries, so a
//! dropped honest one costs a retry, never safety.
//!
//! Time is passed in (milliseconds of a monotonic clock), so the limiter is a plain value:
//! tested without sleeping.

use std::time::Instant;

use parking_lot::Mutex;

use crate::types::NodeId;

/// What is limited, each with its own bucket per peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    SyncRequest,
    /// Snapshot offer and chunk requests.
    StateRequest,
    SyncInfo,
    Timeout,
    /// Our `SyncInfo` answers to a peer (to its stale timeouts and lagging `SyncInfo`s).
    SyncInfoAnswer,
    /// Read-barrier probes, and answers to our probes (each answer may carry a QC to check).
    ReadProbe,
    ReadAnswer,
}

impl Limited {
    pub const ALL: [Limited; 7] = [
        Limited::SyncRequest,
        Limited::StateRequest,
        Limited::SyncInfo,
        Limited::Timeout,
        Limited::SyncInfoAnswer,
        Limited::ReadProbe,
        Limited::ReadAnswer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limited::SyncRequest => "sync_request",
            Limited::StateRequest => "state_request",
            Limited::SyncInfo => "sync_info",
            Limited::Timeout => "timeout",
            Limited::SyncInfoAnswer => "sync_info_answer",
            Limited::ReadProbe => "read_probe",
            Limited::ReadAnswer => "read_answer",
        }
    }

    /// `(rate_per_s, burst)` of each bucket.
    fn budget(self) -> (u64, u64) {
        match self {
            // A catch-up round trip takes a few ms on a LAN: 50/s of responses of up to
            // `sync_response_bytes_max` each is far more than a lagging node can insert.
            Limited::SyncRequest => (50, 100),
            // One chunk (1 MiB) in flight per download.
            Limited::StateRequest => (50, 100),
            // One per fast commit from the leader: generous, as commits can run at hundreds
            // a second; what matters is the cap on a flood of them.
            Limited::SyncInfo => (500, 1_000),
            Limited::Timeout => (100, 200),
            Limited::SyncInfoAnswer => (20, 40),
            // One probe per barrier, one barrier in flight per node: a barrier takes at
            // least a commit (a few ms), so a few hundred a second is what an honest node
            // sends at most; each probe may cost an empty block (`ReadsWaiting`).
            Limited::ReadProbe => (500, 1_000),
            Limited::ReadAnswer => (500, 1_000),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
}

/// Token bucket: `tokens_milli` thousandths of a token, refilled by elapsed time.
impl Bucket {
    fn full(burst: u64, now_ms: u64) -> Self {
        Self {
            tokens_milli: burst * 1_000,
            last_ms: now_ms,
        }
    }

    fn take(&mut self, rate_per_s: u64, burst: u64, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // rate_per_s tokens per 1000 ms = rate_per_s milli-tokens per ms.
        let refill = elapsed.saturating_mul(rate_per_s);
        self.tokens_milli = self.tokens_milli.saturating_add(refill).min(burst * 1_000);
        if self.tokens_milli >= 1_000 {
            self.tokens_milli -= 1_000;
            true
        } else {
            false
        }
    }
}

/// `(rate_per_s, burst)` of the one bucket all clients' snapshot requests share (offers and
/// chunks of up to 1 MiB, for `bftctl snapshot save`): at most ~20 MiB/s of reads for
/// clients, whatever their number, so backups never crowd out peers or the disk. One download
/// asks for one chunk at a time and retries what is dropped.
pub const CLIENT_SNAPSHOT_BUDGET: (u64, u64) = (20, 40);

/// The buckets of every (peer, kind), and the count of what each kind dropped.
pub struct PeerLimits {
    inner: Mutex<Inner>,
    /// Clients' snapshot requests, all clients together ([`CLIENT_SNAPSHOT_BUDGET`]).
    clients: Mutex<Option<Bucket>>,
    /// The clock of [`PeerLimits::allow_now`].
    epoch: Instant,
}

struct Inner {
    /// `buckets[peer][kind]`, created full on first use.
    buckets: Vec<[Option<Bucket>; Limited::ALL.len()]>,
    dropped: [u64; Limited::ALL.len()],
}

impl PeerLimits {
    pub fn new(members: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buckets: vec![[None; Limited::ALL.len()]; members],
                dropped: [0; Limited::ALL.len()],
            }),
            clients: Mutex::new(None),
            epoch: Instant::now(),
        }
    }

    /// [`PeerLimits::allow`] at the current time.
    pub fn allow_now(&self, peer: NodeId, kind: Limited) -> bool {
        self.allow(peer, kind, self.epoch.elapsed().as_millis() as u64)
    }

    /// Whether one more `kind` from (or to) `peer` fits its budget at `now_ms`; counts it
    /// as dropped when not. Unknown peers (outside the committee) are refused.
    pub fn allow(&self, peer: NodeId, kind: Limited, now_ms: u64) -> bool {
        let (rate, burst) = kind.budget();
        let mut inner = self.inner.lock();
        let allowed = match inner.buckets.get_mut(peer.index()) {
            Some(slots) => slots[kind.index()]
                .get_or_insert_with(|| Bucket::full(burst, now_ms))
                .take(rate, burst, now_ms),
            None => false,
        };
        if !allowed {
            inner.dropped[kind.index()] += 1;
        }
        allowed
    }

    /// Whether one more client snapshot request fits [`CLIENT_SNAPSHOT_BUDGET`] at `now_ms`.
    pub fn allow_client_snapshot(&self, now_ms: u64) -> bool {
        let (rate, burst) = CLIENT_SNAPSHOT_BUDGET;
        self.clients
            .lock()
            .get_or_insert_with(|| Bucket::full(burst, now_ms))
            .take(rate, burst, now_ms)
    }

    /// [`PeerLimits::allow_client_snapshot`] at the current time.
    pub fn allow_client_snapshot_now(&self) -> bool {
        self.allow_client_snapshot(self.epoch.elapsed().as_millis() as u64)
    }

    /// Messages dropped so far, per kind (in `Limited::ALL` order).
    pub fn dropped(&self) -> [(Limited, u64); Limited::ALL.len()] {
        let inner = self.inner.lock();
        Limited::ALL.map(|k| (k, inner.dropped[k.index()]))
    }

    pub fn dropped_of(&self, kind: Limited) -> u64 {
        self.inner.lock().dropped[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_peer_and_kind() {
        let limits = PeerLimits::new(4);
        let (rate, burst) = Limited::SyncRequest.budget();
        let p = NodeId(1);
        let passed = (0..burst * 3)
            .filter(|_| limits.allow(p, Limited::SyncRequest, 0))
            .count() as u64;
        assert_eq!(passed, burst, "only the burst passes at one instant");
        assert_eq!(limits.dropped_of(Limited::SyncRequest), burst * 2);
        // Another peer, and another kind of the same peer, have buckets of their own.
        assert!(limits.allow(NodeId(2), Limited::SyncRequest, 0));
        assert!(limits.allow(p, Limited::StateRequest, 0));
        // Over ten seconds of a flood (one try per ms), about rate * 10 more pass.
        let flood = (1..=10_000u64)
            .filter(|ms| limits.allow(p, Limited::SyncRequest, *ms))
            .count() as u64;
        assert!(
            (rate * 10 - 1..=rate * 10 + 1).contains(&flood),
            "{flood} passed in 10 s at {rate}/s"
        );
    }

    #[test]
    fn clients_share_one_snapshot_bucket() {
        let limits = PeerLimits::new(1);
        let (rate, burst) = CLIENT_SNAPSHOT_BUDGET;
        let passed = (0..burst * 3)
            .filter(|_| limits.allow_client_snapshot(0))
            .count() as u64;
        assert_eq!(passed, burst);
        let later = (1..=1_000u64)
            .filter(|ms| limits.allow_client_snapshot(*ms))
            .count() as u64;
        assert!((rate - 1..=rate + 1).contains(&later), "{later} in 1 s");
        // Peers' buckets are their own.
        assert!(limits.allow(NodeId(0), Limited::StateRequest, 1_000));
    }

    #[test]
    fn an_idle_bucket_refills_up_to_its_burst_only() {
        let limits = PeerLimits::new(2);
        let (_, burst) = Limited::Timeout.budget();
        let p = NodeId(0);
        while limits.allow(p, Limited::Timeout, 0) {}
        let later = (0..burst * 2)
            .filter(|_| limits.allow(p, Limited::Timeout, 3_600_000))
            .count() as u64;
        assert_eq!(later, burst);
    }

    #[test]
    fn a_peer_outside_the_committee_is_refused() {
        let limits = PeerLimits::new(2);
        assert!(!limits.allow(NodeId(7), Limited::SyncInfo, 0));
        assert_eq!(limits.dropped_of(Limited::SyncInfo), 1);
    }
}
