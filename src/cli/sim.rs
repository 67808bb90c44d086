//! `bftd sim`: one seeded run, or many seeds across threads with a progress line and a summary.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lexopt::prelude::*;

use crate::sim::{self, ByzKind, Scenario, SimConfig, SimReport};

const HELP: &str = "\
bftd sim: run consensus cores in a deterministic simulated network and check safety

USAGE:
    bftd sim [OPTIONS]

OPTIONS:
    --seed N            Run exactly this seed (prints the run's report)
    --seeds N           Run N seeds (from --seed-start, default 0) and print a summary
    --seed-start S      First seed of a --seeds sweep [default: 0]
    --nodes N           Cluster size [default: 4]
    --scenario NAME     happy | leader-crash | partition | crash-restart-all | lossy | random |
                        snapshot-install,
                        or 'mix' to draw one per seed [default: mix for --seeds, random for --seed]
    --byzantine KINDS   Comma-separated Byzantine members: silent, equivocate, double-vote,
                        bad-sig, replay, flood, twins, fork, forge-sync, wrong-root,
                        bad-time; 'none'; or 'mix' to draw up to f per seed [default: mix for --seeds, none for --seed]
    --jobs J            Worker threads for --seeds [default: number of cores]
    --trace NODES       Print every event and action of these nodes (e.g. 0,2) to stderr
    -h, --help          Print this help

A failing seed prints the exact command that replays it, and the exit status is 1.
Soak: bftd sim --seeds 100000 --nodes 4   (and --nodes 7, --nodes 10)
";

#[derive(Clone, Copy)]
enum Choice<T> {
    Fixed(T),
    Mix,
}

struct Options {
    seed: Option<u64>,
    seeds: Option<u64>,
    seed_start: u64,
    nodes: usize,
    scenario: Option<Choice<Scenario>>,
    byzantine: Option<Choice<Vec<ByzKind>>>,
    jobs: usize,
    trace: Vec<usize>,
}

fn parse(args: Vec<std::ffi::OsString>) -> Result<Option<Options>, String> {
    let mut o = Options {
        seed: None,
        seeds: None,
        seed_start: 0,
        nodes: 4,
        scenario: None,
        byzantine: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        trace: Vec::new(),
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("seed") => o.seed = Some(num(&mut p, "--seed")?),
            Long("seeds") => o.seeds = Some(num(&mut p, "--seeds")?),
            Long("seed-start") => o.seed_start = num(&mut p, "--seed-start")?,
            Long("nodes") => o.nodes = num(&mut p, "--nodes")? as usize,
            Long("trace") => {
                let v = text(&mut p, "--trace")?;
                for part in v.split(',') {
                    let id = part
                        .parse()
                        .map_err(|_| format!("sim: --trace expects node numbers, got '{part}'"))?;
                    o.trace.push(id);
                }
            }
            Long("jobs") => o.jobs = (num(&mut p, "--jobs")? as usize).max(1),
            Long("scenario") => {
                let v = text(&mut p, "--scenario")?;
                o.scenario = Some(if v == "mix" {
                    Choice::Mix
                } else {
                    Choice::Fixed(v.parse()?)
                });
            }
            Long("byzantine") => {
                let v = text(&mut p, "--byzantine")?;
                o.byzantine = Some(match v.as_str() {
                    "mix" => Choice::Mix,
                    "none" | "" => Choice::Fixed(Vec::new()),
                    list => Choice::Fixed(
                        list.split(',')
                            .map(str::parse)
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                });
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            other => {
                return Err(format!(
                    "sim: {}; see 'bftd sim --help'",
                    other.unexpected()
                ));
            }
        }
    }
    if o.seed.is_some() && o.seeds.is_some() {
        return Err("sim: give either --seed or --seeds, not both; see 'bftd sim --help'".into());
    }
    Ok(Some(o))
}

fn num(p: &mut lexopt::Parser, flag: &str) -> Result<u64, String> {
    let v = text(p, flag)?;
    v.parse()
        .map_err(|_| format!("sim: {flag} expects a number, got '{v}'"))
}

fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    p.value()
        .map_err(|e| format!("sim: {flag}: {e}"))?
        .into_string()
        .map_err(|_| format!("sim: {flag}: value is not UTF-8"))
}

/// The concrete configuration of one seed, drawing `mix` choices from the seed.
fn config_for(o: &Options, seed: u64, sweep: bool) -> SimConfig {
    let mut pick = sim::SimRng::new(seed ^ 0x05ee_d0f5_ce7a_7105);
    let scenario = match o.scenario.unwrap_or(if sweep {
        Choice::Mix
    } else {
        Choice::Fixed(Scenario::Random)
    }) {
        Choice::Fixed(s) => s,
        Choice::Mix => Scenario::ALL[pick.range(0, Scenario::ALL.len() as u64 - 1) as usize],
    };
    let f = o.nodes.saturating_sub(1) / 3;
    let byzantine = match o.byzantine.clone().unwrap_or(if sweep {
        Choice::Mix
    } else {
        Choice::Fixed(Vec::new())
    }) {
        Choice::Fixed(v) => v,
        Choice::Mix => {
            let count = pick.range(0, f as u64) as usize;
            (0..count)
                .map(|_| ByzKind::ALL[pick.range(0, ByzKind::ALL.len() as u64 - 1) as usize])
                .collect()
        }
    };
    let mut cfg = SimConfig::new(seed, o.nodes, byzantine, scenario);
    cfg.trace_nodes = o.trace.clone();
    cfg
}

pub fn main(args: Vec<std::ffi::OsString>) -> Result<(), String> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    match (o.seed, o.seeds) {
        (Some(seed), _) => run_one(&config_for(&o, seed, false)),
        (None, Some(count)) => run_sweep(&o, count),
        (None, None) => run_one(&config_for(&o, 0, false)),
    }
}

fn run_one(cfg: &SimConfig) -> Result<(), String> {
    let started = Instant::now();
    let r = sim::run(cfg)?;
    println!("run: {}", cfg.repro_command());
    println!(
        "simulated {} ms in {} steps ({:.2}s wall): height {}, {} requests committed of {} \
         submitted (summed over honest nodes), {} view changes, {} timeouts, {} messages \
         delivered, {} dropped, {} rejected by the verifier, {} far-future dropped, {} \
         equivocations seen, {} snapshots installed, {} votes refused for a forgotten root",
        r.end_ms,
        r.steps,
        started.elapsed().as_secs_f64(),
        r.max_height,
        r.requests_committed,
        r.requests_submitted,
        r.view_changes,
        r.timeouts_sent,
        r.messages_delivered,
        r.messages_dropped,
        r.rejected_by_verifier,
        r.dropped_far_future,
        r.equivocations_seen,
        r.snapshots_installed,
        r.votes_refused_root_unknown
    );
    if r.ok() {
        println!("ok: no violations");
        Ok(())
    } else {
        for v in &r.violations {
            println!("VIOLATION {v}");
        }
        Err(format!(
            "seed {} violated safety or liveness; reproduce: {}",
            cfg.seed,
            cfg.repro_command()
        ))
    }
}

#[derive(Default)]
struct Totals {
    runs: u64,
    failed: Vec<SimReport>,
    heights: u64,
    requests: u64,
    view_changes: u64,
    votes_refused_root_unknown: u64,
}

fn run_sweep(o: &Options, count: u64) -> Result<(), String> {
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Totals::default());
    let started = Instant::now();
    let mut error: Option<String> = None;
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for _ in 0..o.jobs.min(count.max(1) as usize) {
            workers.push(s.spawn(|| -> Result<(), String> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok(());
                    }
                    let cfg = config_for(o, o.seed_start + i, true);
                    let r = sim::run(&cfg)?;
                    let mut t = totals.lock().map_err(|_| "a worker panicked".to_string())?;
                    t.runs += 1;
                    t.heights += r.max_height;
                    t.requests += r.requests_committed;
                    t.view_changes += r.view_changes;
                    t.votes_refused_root_unknown += r.votes_refused_root_unknown;
                    if !r.ok() {
                        t.failed.push(r);
                    }
                }
            }));
        }
        let mut last = Instant::now();
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                if let Ok(t) = totals.lock() {
                    eprint!(
                        "\rsim: {}/{} runs, {} failing, {:.1} runs/s   ",
                        t.runs,
                        count,
                        t.failed.len(),
                        t.runs as f64 / started.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                }
            }
        }
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error = Some(e),
                Err(_) => error = Some("a simulation worker panicked".into()),
            }
        }
    });
    eprintln!();
    if let Some(e) = error {
        return Err(e);
    }
    let t = totals
        .into_inner()
        .map_err(|_| "a worker panicked".to_string())?;
    for r in &t.failed {
        println!(
            "FAIL seed {}: {}",
            r.config.seed,
            r.violations.first().map_or("", String::as_str)
        );
        println!("  reproduce: {}", r.config.repro_command());
    }
    println!(
        "sim: {} runs, {} failing seeds, {} blocks committed (sum of max heights), {} requests \
         committed, {} view changes, {} votes refused for a forgotten root, in {:.1}s",
        t.runs,
        t.failed.len(),
        t.heights,
        t.requests,
        t.view_changes,
        t.votes_refused_root_unknown,
        started.elapsed().as_secs_f64()
    );
    if t.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {} seeds failed", t.failed.len(), t.runs))
    }
}
