//! A fixed-bucket latency histogram for the metrics endpoint, in the Prometheus shape:
//! cumulative `le` buckets in seconds, a sum and a count.
//!
//! Invariants: the bucket bounds are fixed at compile time and strictly increasing; each
//! observation bumps exactly one bucket (the first whose bound is `>=` it, or the `+Inf`
//! slot), the count and the sum. Relaxed atomics: a reader may see an observation in the
//! count before the sum (statistics, not synchronisation); every value only grows.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds: 100 µs to 10 s, roughly 1-2.5-5 per decade.
pub const BUCKET_BOUNDS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKET_BOUNDS_SECONDS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A plain copy of a [`Histogram`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bound of [`BUCKET_BOUNDS_SECONDS`] (the `+Inf` one is `count`).
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let slot = BUCKET_BOUNDS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKET_BOUNDS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let cumulative = self.buckets[..BUCKET_BOUNDS_SECONDS.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        let inf = self.buckets[BUCKET_BOUNDS_SECONDS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            // Derived from the buckets so `+Inf` always equals the last cumulative count plus
            // the overflow, whatever order the relaxed loads saw.
            count: running + inf,
        }
    }
}

impl HistogramSnapshot {
    /// Appends the `_bucket`, `_sum` and `_count` lines of metric `name` (whose `# HELP` and
    /// `# TYPE` lines the caller writes); `labels` is empty or `key="value",...` without braces.
    pub fn write_prometheus(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKET_BOUNDS_SECONDS.iter().zip(&self.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_increase() {
        assert!(BUCKET_BOUNDS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // <= 0.0001
        h.observe(Duration::from_millis(1)); // == 0.001, inclusive
        h.observe(Duration::from_millis(30)); // <= 0.05
        h.observe(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[3], 2, "le=0.001 holds the 50 µs and the 1 ms");
        assert_eq!(s.cumulative[8], 3, "le=0.05");
        assert_eq!(*s.cumulative.last().unwrap(), 3, "60 s is only in +Inf");
        assert!((s.sum_seconds - 60.03105).abs() < 1e-9);
        let mut text = String::new();
        s.write_prometheus(&mut text, "x_seconds", "engine=\"state\"");
        assert!(text.contains("x_seconds_bucket{engine=\"state\",le=\"0.001\"} 2\n"));
        assert!(text.contains("x_seconds_bucket{engine=\"state\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("x_seconds_count{engine=\"state\"} 4\n"));
        let mut bare = String::new();
        s.write_prometheus(&mut bare, "y_seconds", "");
        assert!(bare.contains("y_seconds_bucket{le=\"10\"} 3\n"));
        assert!(bare.contains("y_seconds_count 4\n"));
    }
}
