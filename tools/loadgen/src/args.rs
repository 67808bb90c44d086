//! The command line: every flag, its default and its bounds, and the `--help` text.
//!
//! Invariant: a [`Spec`] returned by [`parse`] is within every bound below, so the run never
//! has to check its inputs again; any bad argument is one line of error (the caller exits 2).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use bftd::api::CLIENT_WINDOW_SEQS;
use bftd::api::ops::{OPS_PER_REQUEST_MAX, VALUE_BYTES_MAX};

pub const DEFAULT_CONFIG: &str = "./bftd-dev/client.toml";
pub const CLIENTS_DEFAULT: usize = 16;
/// One client key may have at most this many requests in flight (the nodes' exactly-once
/// window), and loadgen signs everything with the one key of `client.toml`.
pub const CLIENTS_MAX: usize = CLIENT_WINDOW_SEQS as usize;
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
pub const KEYS_MAX: u64 = 1_000_000_000;
pub const RATE_MAX: f64 = 10_000_000.0;
/// Value bytes one request may carry (`--batch` x `--value-size`): well under the nodes'
/// default `block_bytes_max` (4 MiB), so every request fits in a block.
pub const REQUEST_VALUE_BYTES_MAX: usize = 2 << 20;

pub const HELP: &str = "\
loadgen: throughput and latency of a running bftd cluster

USAGE: loadgen [OPTIONS]

Load (closed loop unless --rate is given):
  --clients N        requests in flight at once, 1..=256 [default: 16; with --rate: 256]
                     (one client key may have at most 256 requests in flight, and every
                     request is signed with the one key of the config file)
  --rate R           open loop: start R requests/s on a fixed schedule, whatever the cluster
                     does; latency is measured from each request's intended start time, so a
                     stalled cluster shows up in the percentiles (no coordinated omission).
                     --clients caps the requests in flight; a late schedule catches up.
  --duration D       how long to send: 10s, 500ms, 2m or plain seconds [default: 10s]

Workload:
  --batch B          operations per signed request, 1..=256 [default: 1]
  --value-size BYTES bytes per put value [default: 64]
  --keys N           key space: keys lg/0000000000 .. lg/(N-1) [default: 100000]
  --dist D           key choice: uniform, or zipf:S (P(k) ~ 1/k^S, key 0 hottest),
                     e.g. zipf:0.99 [default: uniform]
  --read-ratio P     share of operations that are gets, 0..=1 [default: 0]
  --stale-reads      reads are one-node stale gets (not ordered, not checked by f + 1 nodes)
                     instead of linearizable gets through consensus; needs --batch 1
  --ordered-reads    linearizable gets are ordered through consensus (signed, in a block)
                     instead of served by read barrier (the default; see the README, read modes)
  --verified-reads   reads are one-node verified gets (a Merkle proof against a root 2f+1
                     members certified, checked by the client; not linearizable); needs
                     --batch 1
  --coalesce         client-side batching: the workers' single operations are coalesced by
                     the client library into few signed requests (at most 4 in flight, up to
                     256 operations each); latency is still per operation; needs --batch 1
                     and linearizable reads
  --seed N           seed for key and operation choice [default: from the clock]

Connection and output:
  -c, --config FILE  client config [default: ./bftd-dev/client.toml, written by 'bftd dev']
  --timeout-ms MS    give up on one request after this [default: 10000]
  --json FILE        also write the final summary as JSON to FILE ('-' for stdout)
  -h, --help         this text

Ctrl-C (or SIGTERM) stops the run early: requests in flight finish, then the summary of what
ran is printed. A progress line goes to stderr every second (requests/s, ops/s, p50, p99, errors of that
second); the summary goes to stdout. Latency is per request (a request of --batch B
operations counts once in the histogram, B times in ops/s). Requests still unsent when the
time is up in open loop are reported as 'unsent' (the cluster could not keep the rate).

Exit status: 0 when the run finished with at least one success, 1 if the cluster is
unreachable or refused everything, 2 for a bad argument.
";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    Uniform,
    Zipf(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// `clients` workers, each with one request in flight, back to back.
    Closed { clients: usize },
    /// Requests start at `rate_per_s` on a fixed schedule; at most `clients` in flight.
    Open { rate_per_s: f64, clients: usize },
}

impl Load {
    pub fn clients(&self) -> usize {
        match *self {
            Load::Closed { clients } | Load::Open { clients, .. } => clients,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub config: PathBuf,
    pub load: Load,
    pub duration: Duration,
    pub batch: usize,
    pub value_bytes: usize,
    pub keys: u64,
    pub dist: Dist,
    pub read_ratio: f64,
    pub stale_reads: bool,
    pub verified_reads: bool,
    /// Linearizable gets ordered through consensus instead of by read barrier.
    pub ordered_reads: bool,
    /// Coalesce the workers' operations into shared requests (`bftd::client::Coalescer`).
    pub coalesce: bool,
    pub seed: Option<u64>,
    pub timeout: Duration,
    pub json: Option<PathBuf>,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Spec),
    Help,
}

#[derive(Default)]
struct Raw {
    config: Option<PathBuf>,
    clients: Option<usize>,
    rate: Option<f64>,
    duration: Option<Duration>,
    batch: Option<usize>,
    value_bytes: Option<usize>,
    keys: Option<u64>,
    dist: Option<Dist>,
    read_ratio: Option<f64>,
    stale_reads: bool,
    verified_reads: bool,
    ordered_reads: bool,
    coalesce: bool,
    seed: Option<u64>,
    timeout_ms: Option<u64>,
    json: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Parsed, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut raw = Raw::default();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('c') | Long("config") => raw.config = Some(p.value().map_err(err)?.into()),
            Long("clients") => raw.clients = Some(number(&mut p, "--clients")?),
            Long("rate") => raw.rate = Some(number(&mut p, "--rate")?),
            Long("duration") => raw.duration = Some(duration(&text(&mut p, "--duration")?)?),
            Long("batch") => raw.batch = Some(number(&mut p, "--batch")?),
            Long("value-size") => raw.value_bytes = Some(number(&mut p, "--value-size")?),
            Long("keys") => raw.keys = Some(number(&mut p, "--keys")?),
            Long("dist") => raw.dist = Some(dist(&text(&mut p, "--dist")?)?),
            Long("read-ratio") => raw.read_ratio = Some(number(&mut p, "--read-ratio")?),
            Long("stale-reads") => raw.stale_reads = true,
            Long("verified-reads") => raw.verified_reads = true,
            Long("ordered-reads") => raw.ordered_reads = true,
            Long("coalesce") => raw.coalesce = true,
            Long("seed") => raw.seed = Some(number(&mut p, "--seed")?),
            Long("timeout-ms") => raw.timeout_ms = Some(number(&mut p, "--timeout-ms")?),
            Long("json") => raw.json = Some(p.value().map_err(err)?.into()),
            _ => return Err(format!("{} (see --help)", arg.unexpected())),
        }
    }
    raw.check().map(Parsed::Run)
}

impl Raw {
    fn check(self) -> Result<Spec, String> {
        let load = self.load()?;
        let batch = self.batch.unwrap_or(1);
        if batch == 0 || batch > OPS_PER_REQUEST_MAX {
            return Err(format!(
                "--batch must be 1..={OPS_PER_REQUEST_MAX}, not {batch}"
            ));
        }
        let value_bytes = self.value_bytes.unwrap_or(64);
        if value_bytes > VALUE_BYTES_MAX {
            return Err(format!(
                "--value-size must be at most {VALUE_BYTES_MAX} bytes"
            ));
        }
        if batch * value_bytes > REQUEST_VALUE_BYTES_MAX {
            return Err(format!(
                "--batch x --value-size is {} bytes; at most {REQUEST_VALUE_BYTES_MAX} per request",
                batch * value_bytes
            ));
        }
        let keys = self.keys.unwrap_or(100_000);
        if keys == 0 || keys > KEYS_MAX {
            return Err(format!("--keys must be 1..={KEYS_MAX}, not {keys}"));
        }
        let read_ratio = self.read_ratio.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&read_ratio) {
            return Err(format!("--read-ratio must be 0..=1, not {read_ratio}"));
        }
        if self.stale_reads && batch != 1 {
            return Err("--stale-reads reads one key per query: use it with --batch 1".into());
        }
        if self.verified_reads && batch != 1 {
            return Err("--verified-reads reads one key per query: use it with --batch 1".into());
        }
        if self.verified_reads && self.stale_reads {
            return Err("--stale-reads and --verified-reads are two read modes: pick one".into());
        }
        if self.coalesce && (batch != 1 || self.stale_reads || self.verified_reads) {
            return Err(
                "--coalesce batches single linearizable operations: use it with --batch 1 \
                 and without --stale-reads or --verified-reads"
                    .into(),
            );
        }
        let duration = self.duration.unwrap_or(Duration::from_secs(10));
        let timeout_ms = self.timeout_ms.unwrap_or(10_000);
        if timeout_ms == 0 || timeout_ms > 3_600_000 {
            return Err(format!(
                "--timeout-ms must be 1..=3600000, not {timeout_ms}"
            ));
        }
        Ok(Spec {
            config: self.config.unwrap_or_else(|| DEFAULT_CONFIG.into()),
            load,
            duration,
            batch,
            value_bytes,
            keys,
            dist: self.dist.unwrap_or(Dist::Uniform),
            read_ratio,
            stale_reads: self.stale_reads,
            verified_reads: self.verified_reads,
            ordered_reads: self.ordered_reads,
            coalesce: self.coalesce,
            seed: self.seed,
            timeout: Duration::from_millis(timeout_ms),
            json: self.json,
        })
    }

    fn load(&self) -> Result<Load, String> {
        let default = if self.rate.is_some() {
            CLIENTS_MAX
        } else {
            CLIENTS_DEFAULT
        };
        let clients = self.clients.unwrap_or(default);
        if clients == 0 || clients > CLIENTS_MAX {
            return Err(format!(
                "--clients must be 1..={CLIENTS_MAX}, not {clients}: one client key may have at \
                 most {CLIENTS_MAX} requests in flight (for more, run another loadgen with \
                 another client key)"
            ));
        }
        match self.rate {
            None => Ok(Load::Closed { clients }),
            Some(r) if r > 0.0 && r <= RATE_MAX => Ok(Load::Open {
                rate_per_s: r,
                clients,
            }),
            Some(r) => Err(format!(
                "--rate must be above 0 and at most {RATE_MAX}, not {r}"
            )),
        }
    }
}

fn err(e: lexopt::Error) -> String {
    e.to_string()
}

fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    p.value()
        .map_err(err)?
        .into_string()
        .map_err(|_| format!("{flag}: not valid UTF-8"))
}

fn number<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let s = text(p, flag)?;
    s.parse()
        .map_err(|_| format!("{flag}: '{s}' is not a valid number"))
}

/// `10s`, `500ms`, `2m`, `1h` or plain seconds (`10`, `0.5`); above zero, at most a day.
pub fn duration(s: &str) -> Result<Duration, String> {
    let (number, unit_s) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let bad = || format!("--duration: '{s}' is not a duration like 10s, 500ms or 2m");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = value * unit_s;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad());
    }
    if secs > DURATION_MAX.as_secs_f64() {
        return Err(format!("--duration: at most {} s", DURATION_MAX.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `uniform` or `zipf:S` with `S` above 0 (and at most 10, beyond which one key takes all).
pub fn dist(s: &str) -> Result<Dist, String> {
    if s == "uniform" {
        return Ok(Dist::Uniform);
    }
    let bad = || format!("--dist: '{s}' is neither 'uniform' nor 'zipf:S' (e.g. zipf:0.99)");
    let exponent: f64 = s
        .strip_prefix("zipf:")
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if !(exponent > 0.0 && exponent <= 10.0) {
        return Err(format!(
            "--dist: the zipf exponent must be above 0 and at most 10, not {exponent}"
        ));
    }
    Ok(Dist::Zipf(exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Spec, String> {
        match parse(args.iter().copied())? {
            Parsed::Run(spec) => Ok(spec),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_are_a_closed_loop_of_16() {
        let spec = run(&[]).expect("no arguments is valid");
        assert_eq!(spec.load, Load::Closed { clients: 16 });
        assert_eq!(spec.config, PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(spec.duration, Duration::from_secs(10));
        assert_eq!((spec.batch, spec.value_bytes, spec.keys), (1, 64, 100_000));
        assert_eq!(spec.dist, Dist::Uniform);
    }

    #[test]
    fn dash_c_names_the_config_as_in_bftctl() {
        let spec = run(&["-c", "x/client.toml"]).expect("-c is --config");
        assert_eq!(spec.config, PathBuf::from("x/client.toml"));
    }

    #[test]
    fn a_full_open_loop_line() {
        let spec = run(&[
            "--rate",
            "5000",
            "--duration",
            "500ms",
            "--keys",
            "1000",
            "--dist",
            "zipf:0.99",
            "--read-ratio",
            "0.9",
            "--batch",
            "16",
            "--value-size",
            "128",
            "--json",
            "out.json",
        ])
        .expect("valid");
        assert_eq!(
            spec.load,
            Load::Open {
                rate_per_s: 5000.0,
                clients: 256
            }
        );
        assert_eq!(spec.duration, Duration::from_millis(500));
        assert_eq!(spec.dist, Dist::Zipf(0.99));
        assert_eq!(
            (spec.batch, spec.value_bytes, spec.read_ratio),
            (16, 128, 0.9)
        );
        assert_eq!(spec.json, Some(PathBuf::from("out.json")));
        assert_eq!(parse(["--help"]), Ok(Parsed::Help));
    }

    #[test]
    fn bad_arguments_are_one_line_errors() {
        for (args, needle) in [
            (&["--clients", "257"][..], "--clients must be 1..=256"),
            (&["--clients", "0"], "--clients must be"),
            (&["--clients", "x"], "'x' is not a valid number"),
            (&["--rate", "0"], "--rate must be above 0"),
            (&["--batch", "300"], "--batch must be 1..=256"),
            (&["--dist", "zipf"], "--dist"),
            (&["--dist", "zipf:-1"], "--dist"),
            (&["--read-ratio", "1.5"], "--read-ratio"),
            (&["--duration", "0s"], "--duration"),
            (&["--duration", "ten"], "--duration"),
            (&["--stale-reads", "--batch", "2"], "--batch 1"),
            (&["--verified-reads", "--batch", "2"], "--batch 1"),
            (&["--verified-reads", "--stale-reads"], "pick one"),
            (&["--coalesce", "--batch", "2"], "--batch 1"),
            (&["--coalesce", "--stale-reads"], "--batch 1"),
            (&["--batch", "256", "--value-size", "65536"], "per request"),
            (&["--frobnicate"], "--frobnicate"),
            (&["--keys"], "--keys"),
        ] {
            let e = run(args).expect_err(needle);
            assert!(e.contains(needle), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{args:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(duration("25h").is_err());
        assert!(duration("-1s").is_err());
    }
}
