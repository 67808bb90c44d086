//! The two load loops and the once-a-second progress line.
//!
//! - **Closed loop**: `clients` worker threads share one [`Client`]; each sends a request,
//!   waits for its outcome and sends the next, until the duration is up. Latency is from send
//!   to outcome.
//! - **Open loop**: request `i` is due at `start + i / rate`, whatever happened before. Workers
//!   (at most `clients` in flight) take the next index, sleep until it is due and send it; if
//!   all were busy, it goes out late and its latency still counts from when it was *due*, so a
//!   stall is charged to every request it delayed (no coordinated omission, as in wrk2).
//!   Requests due before the end that no worker could start in time are counted as unsent.
//!
//! With `--coalesce`, the workers' operations go through one [`Coalescer`], which sends them
//! as shared requests; each worker still waits for, and records, its own operation.
//!
//! Invariants: every request started is waited for and recorded once (success or error kind);
//! no request starts after the end or after the stop flag is raised (Ctrl-C, SIGTERM), so an
//! interrupted run still ends with a summary of what ran; threads are bounded by `--clients`
//! (at most 256).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bftd::api::Op;
use bftd::client::{Client, ClientError, CoalesceOptions, Coalescer};

use crate::args::{Load, Spec};
use crate::report::progress_line;
use crate::rng::Rng;
use crate::stats::Recorder;
use crate::workload::{Request, Workload};

const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the progress loop checks whether the workers are done.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How the load part of a run went (the counts are in the [`Recorder`]).
pub struct Ran {
    pub elapsed: Duration,
    pub unsent: u64,
    /// The stop flag ended the run before its duration.
    pub interrupted: bool,
}

struct Shared {
    client: Client,
    coalescer: Option<Coalescer>,
    workload: Workload,
    recorder: Arc<Recorder>,
    start: Instant,
    end: Instant,
    /// Open loop: the next schedule index to take; the number of requests started.
    next_index: AtomicU64,
    started: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl Shared {
    /// Whether a new request may still start.
    fn sending(&self) -> bool {
        Instant::now() < self.end && !self.stop.load(Ordering::Relaxed)
    }
}

/// Runs the load for `spec.duration`, printing progress to stderr; returns when every
/// request started has finished.
pub fn run(
    client: &Client,
    spec: &Spec,
    workload: Workload,
    seed: u64,
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
) -> Result<Ran, String> {
    let start = Instant::now();
    let coalescer = if spec.coalesce {
        Some(Coalescer::new(client.clone(), CoalesceOptions::default())?)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        coalescer,
        workload,
        recorder: Arc::clone(recorder),
        start,
        end: start + spec.duration,
        next_index: AtomicU64::new(0),
        started: AtomicU64::new(0),
        stop: Arc::clone(stop),
    });
    let mut workers = Vec::with_capacity(spec.load.clients());
    for index in 0..spec.load.clients() {
        let (shared, rng) = (Arc::clone(&shared), Rng::for_worker(seed, index));
        let load = spec.load;
        let worker = std::thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || match load {
                Load::Closed { .. } => closed_worker(&shared, rng),
                Load::Open { rate_per_s, .. } => open_worker(&shared, rng, rate_per_s),
            })
            .map_err(|e| format!("cannot start worker thread {index}: {e}"))?;
        workers.push(worker);
    }
    report_progress(&shared, &workers);
    for w in workers {
        // A worker only panics on a bug in loadgen; what it recorded before still counts.
        let _ = w.join();
    }
    let elapsed = start.elapsed();
    let interrupted = stop.load(Ordering::Relaxed) && elapsed < spec.duration;
    // An interrupted run owes only what was due before it stopped.
    let owed = if interrupted { elapsed } else { spec.duration };
    let unsent = match spec.load {
        Load::Closed { .. } => 0,
        Load::Open { rate_per_s, .. } => {
            scheduled(owed, rate_per_s).saturating_sub(shared.started.load(Ordering::Relaxed))
        }
    };
    Ok(Ran {
        elapsed,
        unsent,
        interrupted,
    })
}

fn closed_worker(shared: &Shared, mut rng: Rng) {
    while shared.sending() {
        let request = shared.workload.next(&mut rng);
        let sent = Instant::now();
        let outcome = execute(shared, request);
        record(shared, sent, outcome);
    }
}

fn open_worker(shared: &Shared, mut rng: Rng, rate_per_s: f64) {
    let due_count = scheduled(shared.end - shared.start, rate_per_s);
    loop {
        let i = shared.next_index.fetch_add(1, Ordering::Relaxed);
        if i >= due_count {
            return;
        }
        let due = shared.start + Duration::from_secs_f64(i as f64 / rate_per_s);
        if !shared.sending() {
            return; // late past the end (counted as unsent) or stopped
        }
        // Short naps, so a stop during a long gap (a low --rate) is seen at once.
        while let Some(wait) = due.checked_duration_since(Instant::now()) {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(wait.min(POLL_INTERVAL));
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        shared.started.fetch_add(1, Ordering::Relaxed);
        let request = shared.workload.next(&mut rng);
        let outcome = execute(shared, request);
        record(shared, due, outcome);
    }
}

/// Requests due in `[0, duration)` at `rate_per_s`: indices `i` with `i / rate < duration`.
fn scheduled(duration: Duration, rate_per_s: f64) -> u64 {
    (duration.as_secs_f64() * rate_per_s).ceil() as u64
}

fn execute(shared: &Shared, request: Request) -> Result<(), ClientError> {
    let client = &shared.client;
    match request {
        // A lone get is a linearizable read: by read barrier unless --ordered-reads.
        Request::Ops(ops)
            if shared.coalescer.is_none() && matches!(ops.as_slice(), [Op::Get { .. }]) =>
        {
            match ops.first() {
                Some(Op::Get { key }) => client.get(key).map(drop),
                _ => Ok(()),
            }
        }
        Request::Ops(mut ops) => match (&shared.coalescer, ops.len()) {
            (Some(coalescer), 1) => match ops.pop() {
                Some(op) => coalescer.op(op).map(drop),
                None => Ok(()),
            },
            _ => client.submit(ops)?.wait().map(drop),
        },
        Request::StaleGet(key) => client.get_stale(&key).map(drop),
        Request::VerifiedGet(key) => client.get_verified(&key).map(drop),
    }
}

fn record(shared: &Shared, since: Instant, outcome: Result<(), ClientError>) {
    match outcome {
        Ok(()) => shared
            .recorder
            .ok(since.elapsed(), shared.workload.batch() as u64),
        Err(e) => shared.recorder.error(&e),
    }
}

/// Prints one line per second until every worker has finished.
fn report_progress(shared: &Shared, workers: &[JoinHandle<()>]) {
    let mut last = shared.start;
    let mut next = shared.start + PROGRESS_INTERVAL;
    while !workers.iter().all(JoinHandle::is_finished) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(POLL_INTERVAL.min(next - now));
            continue;
        }
        let interval = shared.recorder.take_interval();
        eprintln!(
            "{}",
            progress_line(now - shared.start, now - last, &interval)
        );
        last = now;
        next += PROGRESS_INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use super::scheduled;
    use std::time::Duration;

    #[test]
    fn schedule_counts_requests_due_before_the_end() {
        assert_eq!(scheduled(Duration::from_secs(10), 100.0), 1000);
        assert_eq!(scheduled(Duration::from_millis(1500), 1.0), 2); // due at 0 s and 1 s
        assert_eq!(scheduled(Duration::from_millis(10), 1.0), 1);
    }
}
