//! `bftctl bench`: `ops` puts of `value_size`-byte values from `concurrency` threads sharing
//! one client (so up to `concurrency` requests are in flight), with exact latency percentiles.
//! With `coalesce`, the threads put through one [`Coalescer`] (client-side batching): fewer,
//! larger requests; latency is still per put.
//!
//! Invariants: memory is bounded by `ops` (one `u32` of latency per op, `ops <= OPS_MAX`);
//! every op either succeeds or is counted as an error with the first error kept for the
//! report. Latencies are sorted once and read by nearest rank, so the percentiles are exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::CLIENT_WINDOW_SEQS;
use crate::client::{Client, ClientError, CoalesceOptions, Coalescer};

use super::json::Json;

pub const OPS_MAX: u64 = 10_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchSpec {
    pub ops: u64,
    pub value_size: usize,
    pub concurrency: usize,
    /// Put through a [`Coalescer`] with its default options.
    pub coalesce: bool,
}

impl BenchSpec {
    pub fn new(
        ops: Option<u64>,
        value_size: Option<usize>,
        conc: Option<usize>,
    ) -> Result<Self, String> {
        let spec = Self {
            ops: ops.unwrap_or(1000),
            value_size: value_size.unwrap_or(64),
            concurrency: conc.unwrap_or(16),
            coalesce: false,
        };
        if spec.ops == 0 || spec.ops > OPS_MAX {
            return Err(format!("--ops must be 1..={OPS_MAX}"));
        }
        if spec.value_size > crate::api::ops::VALUE_BYTES_MAX {
            return Err(format!(
                "--value-size must be at most {}",
                crate::api::ops::VALUE_BYTES_MAX
            ));
        }
        if spec.concurrency == 0 || spec.concurrency as u64 > CLIENT_WINDOW_SEQS {
            return Err(format!("--concurrency must be 1..={CLIENT_WINDOW_SEQS}"));
        }
        Ok(spec)
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub spec: BenchSpec,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<ClientError>,
    pub elapsed: Duration,
    /// Sorted latencies of the successful ops, in microseconds.
    latencies_us: Vec<u32>,
}

impl BenchReport {
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile in milliseconds (`p` in 0..=100); 0 with no successes.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        f64::from(self.latencies_us[rank.clamp(1, n) - 1]) / 1000.0
    }

    pub fn text(&self) -> String {
        let s = &self.spec;
        format!(
            "{} puts of {} B, concurrency {}{}: {} ok, {} failed in {:.2} s\n\
             throughput: {:.0} ops/s\n\
             latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
            s.ops,
            s.value_size,
            s.concurrency,
            if s.coalesce { " (coalesced)" } else { "" },
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0),
        )
    }

    pub fn json(&self) -> Json {
        let s = &self.spec;
        Json::obj(vec![
            ("ops", Json::U64(s.ops)),
            ("value_size", Json::U64(s.value_size as u64)),
            ("concurrency", Json::U64(s.concurrency as u64)),
            ("coalesce", Json::Bool(s.coalesce)),
            ("ok", Json::U64(self.ok)),
            ("errors", Json::U64(self.errors)),
            (
                "first_error",
                self.first_error
                    .as_ref()
                    .map_or(Json::Null, |e| Json::str(e.to_string())),
            ),
            ("elapsed_s", Json::F64(self.elapsed.as_secs_f64())),
            ("ops_per_sec", Json::F64(self.ops_per_sec())),
            ("latency_ms_p50", Json::F64(self.percentile_ms(50.0))),
            ("latency_ms_p90", Json::F64(self.percentile_ms(90.0))),
            ("latency_ms_p99", Json::F64(self.percentile_ms(99.0))),
            ("latency_ms_max", Json::F64(self.percentile_ms(100.0))),
        ])
    }
}

/// Runs the benchmark; the client's `in_flight_max` must be at least `concurrency`.
pub fn run(client: &Client, spec: &BenchSpec) -> BenchReport {
    let next = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None));
    let value = vec![b'x'; spec.value_size];
    let prefix = format!("bench/{}/", std::process::id());
    // Valid options: `Coalescer::new` cannot refuse the defaults.
    let coalescer = spec
        .coalesce
        .then(|| Coalescer::new(client.clone(), CoalesceOptions::default()).ok())
        .flatten();
    let start = Instant::now();
    let workers: Vec<_> = (0..spec.concurrency)
        .map(|_| {
            let (client, next, first_error) =
                (client.clone(), Arc::clone(&next), Arc::clone(&first_error));
            let coalescer = coalescer.clone();
            let (value, prefix, ops) = (value.clone(), prefix.clone(), spec.ops);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ops {
                        return latencies;
                    }
                    let key = format!("{prefix}{i}");
                    let t = Instant::now();
                    let put = match &coalescer {
                        Some(c) => c.put(key.as_bytes(), &value),
                        None => client.put(key.as_bytes(), &value),
                    };
                    match put {
                        Ok(_) => {
                            latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32)
                        }
                        Err(e) => {
                            first_error.lock().get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    let mut latencies_us = Vec::with_capacity(spec.ops as usize);
    for w in workers {
        // A worker only panics on a bug; its ops then count as failed rather than abort.
        if let Ok(l) = w.join() {
            latencies_us.extend(l);
        }
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    let first_error = first_error.lock().take();
    BenchReport {
        spec: spec.clone(),
        ok: latencies_us.len() as u64,
        errors: spec.ops - latencies_us.len() as u64,
        first_error,
        elapsed,
        latencies_us,
    }
}
