//! `loadgen`: throughput and latency of a running bftd cluster, in closed loop (`--clients N`
//! requests in flight) or open loop (`--rate R` requests/s, latency from each request's
//! intended start). See `loadgen --help` and the README section "Load generator".
//!
//! Modules: `args` (flags and bounds), `workload` (what a request does), `rng` and `zipf` (key
//! choice), `run` (the loops and progress), `stats` (HDR histograms, error kinds), `report`
//! (summary text and JSON). Exit status: 0 after a run with at least one success, 1 when the
//! cluster cannot be reached or answers nothing, 2 for a bad argument.

mod args;
mod report;
mod rng;
mod run;
mod stats;
mod workload;
mod zipf;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bftd::client::{Client, ClientOptions, ReadMode};
use bftd::config::ClientConfig;

use args::{CLIENTS_MAX, Parsed, Spec};
use report::Summary;
use stats::Recorder;
use workload::Workload;

/// How long to wait for links to come up before declaring the cluster unreachable.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

fn main() {
    let spec = match args::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(spec)) => spec,
        Ok(Parsed::Help) => {
            print!("{}", args::HELP);
            return;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    match run_spec(&spec) {
        Ok(summary) if summary.total.requests_ok > 0 => {}
        Ok(_) => {
            eprintln!("loadgen: no request succeeded");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

fn run_spec(spec: &Spec) -> Result<Summary, String> {
    let workload = Workload::new(spec)?;
    let client = connect(spec)?;
    let seed = spec.seed.unwrap_or_else(clock_seed);
    let recorder = Arc::new(Recorder::new());
    // Installed before the load starts: Ctrl-C then ends the run early with its summary
    // instead of killing the process with nothing printed.
    let stop = bftd::cli::start::stop_flag()?;
    let ran = run::run(&client, spec, workload, seed, &recorder, &stop)?;
    let fallbacks = client.barrier_fallbacks();
    if fallbacks > 0 {
        eprintln!("loadgen: {fallbacks} barrier reads fell back to ordered reads");
    }
    client.shutdown();
    let (total, first_error) = recorder.finish();
    let summary = Summary {
        spec: spec.clone(),
        seed,
        elapsed: ran.elapsed,
        total,
        unsent: ran.unsent,
        first_error,
        interrupted: ran.interrupted,
    };
    print!("{}", summary.text());
    if let Some(path) = &spec.json {
        write_json(path, &summary)?;
    }
    Ok(summary)
}

/// Loads the config, waits for links, and sends one linearizable get so that a cluster that
/// is down, or that refuses this client's key, fails here with a clear error.
fn connect(spec: &Spec) -> Result<Client, String> {
    let config = ClientConfig::load(&spec.config).map_err(|e| {
        let hint = if spec.config == Path::new(args::DEFAULT_CONFIG) && !spec.config.exists() {
            " (start a local cluster with 'bftd dev', or pass --config FILE)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    let options = ClientOptions {
        in_flight_max: CLIENTS_MAX,
        request_timeout: spec.timeout,
        read_mode: if spec.ordered_reads {
            ReadMode::Ordered
        } else {
            ReadMode::Barrier
        },
        ..ClientOptions::default()
    };
    let client =
        Client::connect(&config, options).map_err(|e| format!("{}: {e}", spec.config.display()))?;
    let members = client.links().len();
    let up = client.wait_connected(members, CONNECT_WAIT);
    if up <= client.f() {
        let why: Vec<String> = client
            .links()
            .iter()
            .map(|l| format!("{} ({}): {}", l.node, l.addr, link_state(l)))
            .collect();
        return Err(format!(
            "cluster unreachable: {up} of {members} nodes connected after {} s, {} needed: {}",
            CONNECT_WAIT.as_secs(),
            client.f() + 1,
            why.join("; ")
        ));
    }
    if up < members {
        eprintln!("loadgen: warning: only {up} of {members} nodes connected");
    }
    client
        .get(&workload::key(0))
        .map_err(|e| format!("the cluster did not serve a first request: {e}"))?;
    Ok(client)
}

fn link_state(l: &bftd::client::LinkReport) -> String {
    match (l.connected, l.last_error.is_empty()) {
        (true, _) => "connected".into(),
        (false, true) => "not connected".into(),
        (false, false) => l.last_error.clone(),
    }
}

fn write_json(path: &Path, summary: &Summary) -> Result<(), String> {
    let text = summary.json().render() + "\n";
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("--json {}: {e}", path.display()))
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
