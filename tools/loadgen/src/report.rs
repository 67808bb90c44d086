//! The progress line and the final summary, as text (etcd `benchmark` / `wrk` style) and JSON.
//!
//! Invariant: the text and the JSON are built from the same [`Summary`], so scripts and people
//! see the same numbers. Latencies are per request; JSON latencies are integer microseconds
//! (`latency_us_p99`), text ones are scaled to µs, ms or s with their unit.

use std::time::Duration;

use bftd::client::cli::json::Json;

use crate::args::{Dist, Load, Spec};
use crate::stats::{ErrorKind, Tally};

/// Everything the final report says.
#[derive(Clone, Debug)]
pub struct Summary {
    pub spec: Spec,
    pub seed: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    pub total: Tally,
    /// Open loop: requests scheduled before the end that never started (the cluster was slower
    /// than the rate and `--clients` were all busy). Always 0 in closed loop.
    pub unsent: u64,
    pub first_error: Option<String>,
    /// Stopped early by Ctrl-C (SIGINT) or SIGTERM: the summary covers what ran until then.
    pub interrupted: bool,
}

/// Percentiles shown, as (label, quantile).
const PERCENTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// `1.23ms`, `845us`, `2.10s`.
pub fn latency_text(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn per_s(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// One line per progress interval: `3s  1520 req/s  1520 ops/s  p50 9.81ms  p99 21.3ms  errors 0`.
pub fn progress_line(at: Duration, interval: Duration, t: &Tally) -> String {
    let (p50, p99) = if t.requests_ok == 0 {
        ("-".to_string(), "-".to_string())
    } else {
        (
            latency_text(t.latency_us.value_at_quantile(0.5)),
            latency_text(t.latency_us.value_at_quantile(0.99)),
        )
    };
    format!(
        "{:>4.0}s  {:>8.0} req/s  {:>8.0} ops/s  p50 {p50:>8}  p99 {p99:>8}  errors {}",
        at.as_secs_f64(),
        per_s(t.requests_ok, interval),
        per_s(t.ops_ok, interval),
        t.errors_total()
    )
}

fn describe_load(spec: &Spec) -> String {
    match spec.load {
        Load::Closed { clients } => format!("closed loop, {clients} requests in flight"),
        Load::Open {
            rate_per_s,
            clients,
        } => format!("open loop, {rate_per_s} requests/s scheduled, at most {clients} in flight"),
    }
}

fn describe_workload(spec: &Spec) -> String {
    let dist = match spec.dist {
        Dist::Uniform => "uniform".to_string(),
        Dist::Zipf(s) => format!("zipf:{s}"),
    };
    let reads = if spec.stale_reads {
        "stale"
    } else if spec.verified_reads {
        "verified"
    } else if spec.ordered_reads {
        "linearizable (ordered)"
    } else {
        "linearizable"
    };
    let coalesced = if spec.coalesce { " (coalesced)" } else { "" };
    format!(
        "batch {}{coalesced}, values {} B, {} keys {dist}, {:.0}% {reads} reads",
        spec.batch,
        spec.value_bytes,
        spec.keys,
        spec.read_ratio * 100.0
    )
}

impl Summary {
    pub fn requests_total(&self) -> u64 {
        self.total.requests_ok + self.total.errors_total()
    }

    pub fn text(&self) -> String {
        let t = &self.total;
        let mut out = format!(
            "Summary:\n  Load:      {}\n  Workload:  {}\n  Duration:  {:.2} s (seed {})\n  \
             Requests:  {} ok, {} failed, {} total  {:.1} req/s\n  Ops:       {} ok  {:.1} ops/s\n",
            describe_load(&self.spec),
            describe_workload(&self.spec),
            self.elapsed.as_secs_f64(),
            self.seed,
            t.requests_ok,
            t.errors_total(),
            self.requests_total(),
            per_s(t.requests_ok, self.elapsed),
            t.ops_ok,
            per_s(t.ops_ok, self.elapsed),
        );
        if self.interrupted {
            out +=
                "  Stopped:   interrupted (Ctrl-C or SIGTERM); this covers what ran until then\n";
        }
        if self.unsent > 0 {
            out += &format!(
                "  Unsent:    {} scheduled requests never started: the cluster did not keep the \
                 rate, and their latency is missing from the histogram\n",
                self.unsent
            );
        }
        out += "\nLatency per request:\n";
        if t.requests_ok == 0 {
            out += "  (no successful requests)\n";
        } else {
            let h = &t.latency_us;
            let mut row = format!("  min {}", latency_text(h.min()));
            for (label, q) in PERCENTILES {
                row += &format!("  {label} {}", latency_text(h.value_at_quantile(q)));
            }
            row += &format!("  max {}\n", latency_text(h.max()));
            out += &row;
            out += &format!(
                "  mean {}  stdev {}\n",
                latency_text(h.mean().round() as u64),
                latency_text(h.stdev().round() as u64)
            );
        }
        out += &self.errors_text();
        out
    }

    fn errors_text(&self) -> String {
        if self.total.errors_total() == 0 {
            return "\nErrors: none\n".into();
        }
        let mut out = "\nErrors:\n".to_string();
        for kind in ErrorKind::ALL {
            let n = self.total.error_count(kind);
            if n > 0 {
                out += &format!("  {:<15} {n}\n", kind.name());
            }
        }
        if let Some(first) = &self.first_error {
            out += &format!("  first: {first}\n");
        }
        out
    }

    pub fn json(&self) -> Json {
        let t = &self.total;
        let h = &t.latency_us;
        let some = t.requests_ok > 0;
        let us = |v: u64| if some { Json::U64(v) } else { Json::Null };
        let mut fields = vec![
            (
                "mode",
                Json::str(match self.spec.load {
                    Load::Closed { .. } => "closed",
                    Load::Open { .. } => "open",
                }),
            ),
            ("clients", Json::U64(self.spec.load.clients() as u64)),
            (
                "rate_per_s",
                match self.spec.load {
                    Load::Open { rate_per_s, .. } => Json::F64(rate_per_s),
                    Load::Closed { .. } => Json::Null,
                },
            ),
            ("batch", Json::U64(self.spec.batch as u64)),
            ("value_bytes", Json::U64(self.spec.value_bytes as u64)),
            ("keys", Json::U64(self.spec.keys)),
            (
                "dist",
                Json::str(match self.spec.dist {
                    Dist::Uniform => "uniform".to_string(),
                    Dist::Zipf(s) => format!("zipf:{s}"),
                }),
            ),
            ("read_ratio", Json::F64(self.spec.read_ratio)),
            ("stale_reads", Json::Bool(self.spec.stale_reads)),
            ("verified_reads", Json::Bool(self.spec.verified_reads)),
            ("coalesce", Json::Bool(self.spec.coalesce)),
            ("seed", Json::U64(self.seed)),
            ("elapsed_s", Json::F64(self.elapsed.as_secs_f64())),
            ("interrupted", Json::Bool(self.interrupted)),
            ("requests_ok", Json::U64(t.requests_ok)),
            ("requests_failed", Json::U64(t.errors_total())),
            ("requests_unsent", Json::U64(self.unsent)),
            (
                "requests_per_s",
                Json::F64(per_s(t.requests_ok, self.elapsed)),
            ),
            ("ops_ok", Json::U64(t.ops_ok)),
            ("ops_per_s", Json::F64(per_s(t.ops_ok, self.elapsed))),
            ("latency_us_min", us(h.min())),
        ];
        let labels = [
            "latency_us_p50",
            "latency_us_p90",
            "latency_us_p99",
            "latency_us_p99_9",
        ];
        for (label, (_, q)) in labels.into_iter().zip(PERCENTILES) {
            fields.push((label, us(h.value_at_quantile(q))));
        }
        fields.push(("latency_us_max", us(h.max())));
        fields.push((
            "latency_us_mean",
            if some {
                Json::F64(h.mean())
            } else {
                Json::Null
            },
        ));
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| (k.name(), Json::U64(t.error_count(*k))))
            .collect();
        fields.push(("errors", Json::obj(errors)));
        fields.push((
            "first_error",
            self.first_error.as_ref().map_or(Json::Null, Json::str),
        ));
        Json::obj(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Parsed, parse};

    fn summary(tally: Tally) -> Summary {
        let Ok(Parsed::Run(spec)) = parse(["--clients", "4", "--batch", "2"]) else {
            panic!("valid arguments")
        };
        Summary {
            spec,
            seed: 5,
            elapsed: Duration::from_secs(2),
            total: tally,
            unsent: 0,
            first_error: Some("timed out after 10.0 s".into()),
            interrupted: false,
        }
    }

    #[test]
    fn latency_units() {
        assert_eq!(latency_text(845), "845us");
        assert_eq!(latency_text(1_234), "1.23ms");
        assert_eq!(latency_text(2_100_000), "2.10s");
    }

    #[test]
    fn summary_reports_percentiles_rates_and_errors() {
        let mut t = Tally::new();
        for ms in 1..=1000u64 {
            t.record_ok(Duration::from_micros(ms * 1000), 2);
        }
        t.record_error(ErrorKind::Timeout);
        t.record_error(ErrorKind::Busy);
        t.record_error(ErrorKind::Busy);
        let s = summary(t);
        let text = s.text();
        for needle in [
            "closed loop, 4 requests in flight",
            "batch 2, values 64 B, 100000 keys uniform, 0% linearizable reads",
            "1000 ok, 3 failed, 1003 total  500.0 req/s",
            "2000 ok  1000.0 ops/s",
            "min 1.00ms  p50 500.",
            "p99 990.",
            "max 1.00s",
            "timeout         1\n",
            "busy            2\n",
            "first: timed out",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let json = s.json().render();
        for needle in [
            "\"mode\":\"closed\"",
            "\"requests_ok\":1000",
            "\"ops_per_s\":1000",
            "\"latency_us_min\":1000",
            "\"errors\":{\"timeout\":1,\"busy\":2,",
        ] {
            assert!(json.contains(needle), "missing {needle:?} in {json}");
        }
    }

    #[test]
    fn no_successes_reads_as_such() {
        let s = summary(Tally::new());
        assert!(s.text().contains("(no successful requests)"));
        assert!(s.json().render().contains("\"latency_us_p99\":null"));
        let line = progress_line(
            Duration::from_secs(3),
            Duration::from_secs(1),
            &Tally::new(),
        );
        assert!(line.contains("p50        -"), "{line}");
    }
}
