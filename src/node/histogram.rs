//! A fixed-bucket latency histogram for the metrics endpoint, in the Prometheus shape:
//! cumulative `le` buckets in seconds, a sum and a count.
//!
//! Invariants: the bucket bounds are fixed at compile time (one of the `*_BOUNDS_SECONDS`
//! sets) and strictly increasing; each
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

/// Finer bounds for the request stages (some take tens of microseconds): 10 µs to 10 s.
pub const FINE_BOUNDS_SECONDS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts, one per bound; the last slot is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::with_bounds(&BUCKET_BOUNDS_SECONDS)
    }
}

/// A plain copy of a [`Histogram`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// The bucket bounds in seconds (see [`Histogram::with_bounds`]).
    pub bounds: &'static [f64],
    /// Cumulative counts per bound of `bounds` (the `+Inf` one is `count`).
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    /// A histogram with these bucket bounds (strictly increasing seconds).
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let cumulative = self.buckets[..self.bounds.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        let inf = self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            bounds: self.bounds,
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
        for (bound, n) in self.bounds.iter().zip(&self.cumulative) {
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
        assert!(FINE_BOUNDS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn fine_bounds_start_at_ten_microseconds() {
        let h = Histogram::with_bounds(&FINE_BOUNDS_SECONDS);
        h.observe(Duration::from_micros(8));
        h.observe(Duration::from_micros(40));
        let s = h.snapshot();
        assert_eq!(s.cumulative.len(), FINE_BOUNDS_SECONDS.len());
        assert_eq!(s.cumulative[0], 1, "le=0.00001");
        assert_eq!(s.cumulative[2], 2, "le=0.00005");
        let mut text = String::new();
        s.write_prometheus(&mut text, "z_seconds", "");
        assert!(text.contains("z_seconds_bucket{le=\"0.00001\"} 1\n"));
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
