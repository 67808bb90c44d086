//! What a run measured: an HDR histogram of request latencies (microseconds, 3 significant
//! digits, 1 µs to 1 h) for the whole run and one for the current progress interval, request
//! and operation counts, and errors counted by kind.
//!
//! Invariants: a request is recorded exactly once, as a success (in both histograms) or as an
//! error of one [`ErrorKind`]; a latency beyond the histogram's range is clamped to its top, so
//! recording never fails. One mutex guards it all: a worker holds it for one record (well under
//! a microsecond), far below the cluster's per-request cost.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bftd::client::ClientError;
use hdrhistogram::Histogram;

pub const LATENCY_US_MAX: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// Why a request failed, one word each (the `ClientError` variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Busy,
    NotAuthorised,
    Invalid,
    Unreachable,
    Rejected,
    BadReply,
    TooLarge,
    Usage,
    Closed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Timeout,
        ErrorKind::Busy,
        ErrorKind::NotAuthorised,
        ErrorKind::Invalid,
        ErrorKind::Unreachable,
        ErrorKind::Rejected,
        ErrorKind::BadReply,
        ErrorKind::TooLarge,
        ErrorKind::Usage,
        ErrorKind::Closed,
    ];

    pub fn of(e: &ClientError) -> Self {
        match e {
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Busy { .. } => ErrorKind::Busy,
            ClientError::NotAuthorised { .. } => ErrorKind::NotAuthorised,
            ClientError::Invalid { .. } => ErrorKind::Invalid,
            // A node that will not answer from its (diverged) state counts as not reached.
            ClientError::Unreachable { .. }
            | ClientError::Unavailable { .. }
            | ClientError::WrongCluster { .. } => ErrorKind::Unreachable,
            // Loadgen does not watch or use leases; a compacted watch or a failed lease
            // operation is the cluster declining the request.
            ClientError::Rejected { .. }
            | ClientError::Compacted { .. }
            | ClientError::Failed(_) => ErrorKind::Rejected,
            // A verified read that failed its checks is a bad reply from that node.
            ClientError::BadReply(_) | ClientError::Unverified { .. } => ErrorKind::BadReply,
            ClientError::TooLarge(_) => ErrorKind::TooLarge,
            ClientError::Usage(_) => ErrorKind::Usage,
            ClientError::Closed => ErrorKind::Closed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Busy => "busy",
            ErrorKind::NotAuthorised => "not_authorised",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BadReply => "bad_reply",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Usage => "usage",
            ErrorKind::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts and latencies of a span of time (the whole run, or one progress interval).
#[derive(Clone, Debug)]
pub struct Tally {
    pub latency_us: Histogram<u64>,
    pub requests_ok: u64,
    pub ops_ok: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
}

impl Tally {
    pub fn new() -> Self {
        Self {
            // 1 µs ..= 1 h at 3 digits: a fixed, small (~200 KiB) allocation.
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
            requests_ok: 0,
            ops_ok: 0,
            errors: [0; ErrorKind::ALL.len()],
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    pub fn record_ok(&mut self, latency: Duration, ops: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(LATENCY_US_MAX);
        self.latency_us
            .saturating_record(us.clamp(1, LATENCY_US_MAX));
        self.requests_ok += 1;
        self.ops_ok += ops;
    }

    pub fn record_error(&mut self, kind: ErrorKind) {
        self.errors[kind.index()] += 1;
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

struct Inner {
    total: Tally,
    interval: Tally,
    /// The first error's full text (it names what each node answered).
    first_error: Option<String>,
}

/// Shared by all workers and the progress printer.
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                total: Tally::new(),
                interval: Tally::new(),
                first_error: None,
            }),
        }
    }

    /// A panicking worker is a bug in loadgen; the counts it leaves are still whole, so a
    /// poisoned lock is used as-is rather than losing the run.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn ok(&self, latency: Duration, ops: u64) {
        let mut inner = self.lock();
        inner.total.record_ok(latency, ops);
        inner.interval.record_ok(latency, ops);
    }

    pub fn error(&self, e: &ClientError) {
        let kind = ErrorKind::of(e);
        let mut inner = self.lock();
        inner.total.record_error(kind);
        inner.interval.record_error(kind);
        inner.first_error.get_or_insert_with(|| e.to_string());
    }

    /// The interval since the last call, and a fresh one started.
    pub fn take_interval(&self) -> Tally {
        let mut fresh = Tally::new();
        std::mem::swap(&mut self.lock().interval, &mut fresh);
        fresh
    }

    /// The whole run and the first error.
    pub fn finish(&self) -> (Tally, Option<String>) {
        let mut inner = self.lock();
        (inner.total.clone(), inner.first_error.take())
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
