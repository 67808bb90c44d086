//! `bftctl`: the command-line client over [`crate::client::Client`].
//!
//! - this file: the help text and argument parsing (`lexopt`; options may come before or
//!   after the command);
//! - [`commands`]: running one command and printing its result (text or `--json`);
//! - [`txn`]: the `--if` / `--then` / `--else` mini-language;
//! - [`bench`]: `bftctl bench`;
//! - [`lease`]: `bftctl lease ...`;
//! - [`json`]: a minimal JSON writer.
//!
//! Invariant: every failure reaches `main` as one line (`bftctl: ...`, exit status 1; usage
//! mistakes exit 2); nothing here panics on user input or on what nodes send.

pub mod bench;
pub mod commands;
pub mod json;
pub mod lease;
pub mod txn;

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

/// Where `bftd dev` writes its local test cluster; `bftctl` reads `client.toml` from there
/// unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "./bftd-dev/client.toml";

pub const HELP: &str = "\
bftctl: command-line client of a bftd cluster

USAGE:
    bftctl [OPTIONS] <COMMAND> [ARGS]

COMMANDS:
    put KEY VALUE                 Write VALUE under KEY; prints the key's new version
    put KEY -                     ... the value is read from stdin (raw bytes, up to 1 MiB)
    put KEY --file F              ... the value is the contents of file F (up to 1 MiB)
    put KEY VALUE --ttl DURATION  ... the key expires DURATION (500ms, 30s, 5m, 1h; at most
                                  87600h) after the committing block's consensus time; the
                                  first block past that time deletes it (so it may stay
                                  readable up to one block interval longer). Prints
                                  expires_at_ms; a later put without --ttl keeps the key.
    put KEY VALUE --lease ID      ... the key is attached to lease ID (which must exist) and
                                  deleted with it; a later put without --lease, or a delete,
                                  detaches it
    get KEY [--stale] [--print-value-only]
                                  Read KEY. Linearizable (ordered through consensus, checked
                                  by f+1 nodes) unless --stale: then one node answers from
                                  its last applied state, and the output says which node.
                                  --print-value-only: the value's raw bytes and nothing else
                                  (no newline); a missing key prints nothing and exits 1
    get KEY --verified [--node N] [--min-height H]
                                  One node (N, or the first connected) answers with a Merkle
                                  proof against a state root 2f+1 members certified, and the
                                  certificate; bftctl checks all of it, so a lying node is
                                  caught. No consensus round: NOT linearizable, the value is
                                  the state at the printed height, which may be a few blocks
                                  old. --min-height H: refuse a state older than height H
                                  (e.g. the commit height of a write you want to see)
    get PREFIX --prefix           Every key that starts with PREFIX (like range, below)
    get KEY --from-key            Every key >= KEY (same as 'range KEY')
    del KEY                       Delete KEY; says whether it existed
    del PREFIX --prefix           Delete every key that starts with PREFIX, atomically in
                                  steps of at most 1000 keys; prints how many were deleted
    range START [END]             Keys in START <= key < END (no END: to the last key)
    range/get options:
        --limit N                 At most N keys [default: 1000]; more than 1000 are read in
                                  pages of 1000, each a linearizable read of its own
        --after KEY               Start after KEY: the cursor printed when --limit cut a list
        --keys-only               Print the keys only, one per line
    txn [--if COND]... [--then OPS] [--else OPS]
                                  Atomically: if every COND holds run --then, else --else.
                                  COND: version(K) = 3, value(K) != 'x', exists(K) = true
                                  (operators = != < >; several: repeat --if or use ';').
                                  OPS: 'put K V; get K; del K'. Quote words with ' or \".
    snapshot save FILE [--node N] Save a backup of the running cluster to FILE: the newest
                                  periodic snapshot that f+1 nodes offer identically (nodes
                                  save one every snapshot_interval_blocks blocks), downloaded
                                  from node N first if given, verified whole (checksum and
                                  state digest), written atomically. Restore it into a stopped
                                  node with 'bftd snapshot restore --data-dir DIR FILE'.
                                  Progress goes to stderr
    watch KEY [--prefix] [--from-height H]
                                  Print the committed changes to KEY (with --prefix: to every
                                  key that starts with KEY; \"\" --prefix is every key), one
                                  line each, in commit order, as they commit, until Ctrl-C:
                                  'HEIGHT PUT KEY = VALUE (version V)' or 'HEIGHT DELETE KEY'
                                  (--json: one JSON object per line). A change is printed only
                                  when f+1 nodes sent it identically. From height H (history
                                  the nodes still keep: by default the last 10000 heights);
                                  without it, after the height f+1 nodes have applied when
                                  the command starts. When the nodes no longer keep height H,
                                  fails with 'compacted: ... resume from N'
    lease grant TTL               Grant a lease of TTL (30 = 30s, or 500ms, 30s, 5m, 1h);
                                  prints its id. It expires TTL after the consensus time of
                                  the block that granted (or last kept alive) it, and then
                                  its keys are deleted
    lease keep-alive ID [--once]  Renew lease ID (TTL from now, consensus time) every third
                                  of its TTL, one line per renewal, until Ctrl-C (--once:
                                  renew once); fails when the lease is gone
    lease revoke ID               Delete lease ID and every key attached to it, atomically
    lease timetolive ID [--keys]  Lease ID's granted TTL, the time left and how many keys are
                                  attached (--keys: which)
    lease list                    The ids of all leases
    status                        Each node's id, round, committed height, leader, state
                                  digest and uptime; unreachable nodes are shown as such
    bench [--ops N] [--value-size B] [--concurrency C] [--coalesce]
                                  N puts of B-byte values from C threads [1000, 64, 16];
                                  prints throughput and latency p50/p90/p99/max. With
                                  --coalesce the threads' puts are batched by the client
                                  into shared signed requests (client-side batching)

OPTIONS:
    -c, --config FILE     Client config [default: ./bftd-dev/client.toml, the directory
                          'bftd dev' writes; 'bftd testnet' writes DIR/client.toml]
    --json                Print one JSON document instead of text
    --timeout-ms MS       Give up on a request after MS [default: 10000]
    -h, --help            Print this help
    -V, --version         Print the version

Every request is signed, sent to all nodes, retried with the same sequence number (so a
write applies exactly once), and accepted only when f+1 nodes return identical replies.
Keys may not be empty. Exit status: 0 on success; 1 on failure, with one line
'bftctl: REASON' on stderr naming what each node answered (timeout, busy, not authorised,
unreachable, wrong cluster); 2 for a usage mistake. 'status' exits 1 when any node did not
answer (after printing what it has). Output into a closed pipe ('| head') stops quietly.
";

/// Where `put` takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    Arg(String),
    /// `put KEY -`
    Stdin,
    /// `put KEY --file F`
    File(PathBuf),
}

/// A listing: `range`, `get --prefix`, `get --from-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSpec {
    /// The first key, or the prefix.
    pub start: String,
    pub end: Option<String>,
    /// `start` is a prefix: the list ends past the last key that starts with it.
    pub prefix: bool,
    /// Resume strictly after this key.
    pub after: Option<String>,
    pub limit: usize,
    pub keys_only: bool,
}

/// Where and how fresh a verified read must be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifiedSpec {
    pub node: Option<u16>,
    pub min_height: u64,
}

/// One parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: String,
        value: ValueSource,
        /// `--ttl`: the key expires this long after the committing block's time.
        ttl_ms: Option<u64>,
        /// `--lease`: the key is attached to this lease.
        lease: Option<u64>,
    },
    Lease(lease::LeaseCommand),
    Get {
        key: String,
        stale: bool,
        value_only: bool,
        /// `Some`: a verified read.
        verified: Option<VerifiedSpec>,
    },
    Del {
        key: String,
    },
    DelPrefix {
        prefix: String,
    },
    Range(ListSpec),
    Txn {
        ifs: Vec<String>,
        then: Option<String>,
        els: Option<String>,
    },
    Status,
    Bench(bench::BenchSpec),
    SnapshotSave {
        file: PathBuf,
        node: Option<u16>,
    },
    Watch {
        key: String,
        prefix: bool,
        from_height: Option<u64>,
    },
}

/// Parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub config: PathBuf,
    pub json: bool,
    pub timeout_ms: Option<u64>,
    pub command: Command,
}

/// A parse result: run, or print something and stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Args),
    Help,
    Version,
}

/// Options that belong to one command, collected wherever they appear.
#[derive(Default)]
struct Flags {
    stale: bool,
    verified: bool,
    node: Option<u16>,
    min_height: Option<u64>,
    value_only: bool,
    prefix: bool,
    from_key: bool,
    keys_only: bool,
    after: Option<String>,
    file: Option<PathBuf>,
    limit: Option<usize>,
    ifs: Vec<String>,
    then: Option<String>,
    els: Option<String>,
    ops: Option<u64>,
    value_size: Option<usize>,
    concurrency: Option<usize>,
    coalesce: bool,
    from_height: Option<u64>,
    ttl_ms: Option<u64>,
    lease: Option<u64>,
    once: bool,
    keys: bool,
    /// Names of the command-specific flags given, to refuse them on other commands.
    given: Vec<&'static str>,
}

fn text(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    parser
        .value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| format!("{flag}: value must be valid UTF-8"))
}

/// A duration for `--ttl`: a whole number with a unit, `ms`, `s`, `m` or `h` (`500ms`, `30s`,
/// `5m`, `1h`), at least 1 ms and at most `TTL_MS_MAX`.
pub fn parse_duration_ms(raw: &str) -> Result<u64, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "'{raw}' is not a duration: use a whole number and a unit, ms, s, m or h \
                 (500ms, 30s, 5m, 1h)"
            ));
        }
    };
    let max = crate::api::ops::TTL_MS_MAX;
    let ms = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .filter(|ms| (1..=max).contains(ms));
    ms.ok_or_else(|| {
        format!(
            "'{raw}' is out of range: a TTL is at least 1ms and at most {}h",
            max / 3_600_000
        )
    })
}

fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let raw = text(parser, flag)?;
    raw.parse()
        .map_err(|_| format!("{flag}: '{raw}' is not a valid number"))
}

/// Parses `bftctl`'s arguments (without the program name). Errors are usage mistakes.
pub fn parse(args: Vec<OsString>) -> Result<Parsed, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let (mut json, mut timeout_ms) = (false, None);
    let mut flags = Flags::default();
    let mut words: Vec<String> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                config = parser.value().map_err(|e| e.to_string())?.into()
            }
            Long("json") => json = true,
            Long("timeout-ms") => {
                let ms: u64 = number(&mut parser, "--timeout-ms")?;
                if ms == 0 {
                    return Err("--timeout-ms must be above zero".into());
                }
                timeout_ms = Some(ms);
            }
            Long("print-value-only") => {
                flag(&mut flags, "--print-value-only", |f| f.value_only = true)
            }
            Long("prefix") => flag(&mut flags, "--prefix", |f| f.prefix = true),
            Long("from-key") => flag(&mut flags, "--from-key", |f| f.from_key = true),
            Long("keys-only") => flag(&mut flags, "--keys-only", |f| f.keys_only = true),
            Long("after") => {
                let v = text(&mut parser, "--after")?;
                flag(&mut flags, "--after", |f| f.after = Some(v));
            }
            Long("file") => {
                let v: PathBuf = parser.value().map_err(|e| e.to_string())?.into();
                flag(&mut flags, "--file", |f| f.file = Some(v));
            }
            Long("ttl") => {
                let raw = text(&mut parser, "--ttl")?;
                let v = parse_duration_ms(&raw).map_err(|e| format!("--ttl: {e}"))?;
                flag(&mut flags, "--ttl", |f| f.ttl_ms = Some(v));
            }
            Long("lease") => {
                let raw = text(&mut parser, "--lease")?;
                let v = lease::parse_id(&raw).map_err(|e| format!("--lease: {e}"))?;
                flag(&mut flags, "--lease", |f| f.lease = Some(v));
            }
            Long("once") => flag(&mut flags, "--once", |f| f.once = true),
            Long("keys") => flag(&mut flags, "--keys", |f| f.keys = true),
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Long("stale") => flag(&mut flags, "--stale", |f| f.stale = true),
            Long("verified") => flag(&mut flags, "--verified", |f| f.verified = true),
            Long("node") => {
                let v = number(&mut parser, "--node")?;
                flag(&mut flags, "--node", |f| f.node = Some(v));
            }
            Long("min-height") => {
                let v = number(&mut parser, "--min-height")?;
                flag(&mut flags, "--min-height", |f| f.min_height = Some(v));
            }
            Long("limit") => {
                let v = number(&mut parser, "--limit")?;
                flag(&mut flags, "--limit", |f| f.limit = Some(v));
            }
            Long("if") => {
                let v = text(&mut parser, "--if")?;
                flag(&mut flags, "--if", |f| f.ifs.push(v));
            }
            Long("then") => {
                let v = text(&mut parser, "--then")?;
                flag(&mut flags, "--then", |f| f.then = Some(v));
            }
            Long("else") => {
                let v = text(&mut parser, "--else")?;
                flag(&mut flags, "--else", |f| f.els = Some(v));
            }
            Long("ops") => {
                let v = number(&mut parser, "--ops")?;
                flag(&mut flags, "--ops", |f| f.ops = Some(v));
            }
            Long("value-size") => {
                let v = number(&mut parser, "--value-size")?;
                flag(&mut flags, "--value-size", |f| f.value_size = Some(v));
            }
            Long("from-height") => {
                let v: u64 = number(&mut parser, "--from-height")?;
                if v == 0 {
                    return Err("--from-height: heights start at 1".into());
                }
                flag(&mut flags, "--from-height", |f| f.from_height = Some(v));
            }
            Long("concurrency") => {
                let v = number(&mut parser, "--concurrency")?;
                flag(&mut flags, "--concurrency", |f| f.concurrency = Some(v));
            }
            Long("coalesce") => flag(&mut flags, "--coalesce", |f| f.coalesce = true),
            Value(v) => words.push(
                v.into_string()
                    .map_err(|_| "arguments must be valid UTF-8".to_string())?,
            ),
            other => return Err(format!("{}; see 'bftctl --help'", other.unexpected())),
        }
    }
    let command = command(words, flags)?;
    Ok(Parsed::Run(Args {
        config,
        json,
        timeout_ms,
        command,
    }))
}

fn flag(flags: &mut Flags, name: &'static str, set: impl FnOnce(&mut Flags)) {
    set(flags);
    flags.given.push(name);
}

const LIST_FLAGS: &[&str] = &["--limit", "--after", "--keys-only"];

fn list(start: &str, end: Option<&String>, flags: &Flags, prefix: bool) -> Result<Command, String> {
    let limit = flags
        .limit
        .unwrap_or(crate::api::ops::RANGE_LIMIT_MAX as usize);
    if limit == 0 {
        return Err("--limit must be above zero".into());
    }
    Ok(Command::Range(ListSpec {
        start: start.to_string(),
        end: end.cloned(),
        prefix,
        after: flags.after.clone(),
        limit,
        keys_only: flags.keys_only,
    }))
}

fn get(key: &str, flags: &Flags) -> Result<(Command, Vec<&'static str>), String> {
    if flags.prefix && flags.from_key {
        return Err("--prefix and --from-key do not go together; see 'bftctl --help'".into());
    }
    if flags.prefix || flags.from_key {
        let mut allowed = LIST_FLAGS.to_vec();
        allowed.push(if flags.prefix {
            "--prefix"
        } else {
            "--from-key"
        });
        return Ok((list(key, None, flags, flags.prefix)?, allowed));
    }
    if flags.verified {
        if flags.stale {
            return Err("--stale and --verified do not go together; see 'bftctl --help'".into());
        }
        let cmd = Command::Get {
            key: key.to_string(),
            stale: false,
            value_only: flags.value_only,
            verified: Some(VerifiedSpec {
                node: flags.node,
                min_height: flags.min_height.unwrap_or(0),
            }),
        };
        let allowed = vec!["--verified", "--node", "--min-height", "--print-value-only"];
        return Ok((cmd, allowed));
    }
    let cmd = Command::Get {
        key: key.to_string(),
        stale: flags.stale,
        value_only: flags.value_only,
        verified: None,
    };
    Ok((cmd, vec!["--stale", "--print-value-only"]))
}

fn put(key: &str, value: Option<&String>, flags: &Flags) -> Result<Command, String> {
    let value = match (value.map(String::as_str), &flags.file) {
        (Some("-"), None) => ValueSource::Stdin,
        (Some(v), None) => ValueSource::Arg(v.to_string()),
        (None, Some(path)) => ValueSource::File(path.clone()),
        (None, None) => {
            return Err("'put' needs a VALUE, '-' (stdin) or --file F; see 'bftctl --help'".into());
        }
        (Some(_), Some(_)) => {
            return Err("'put' takes a VALUE or --file F, not both".into());
        }
    };
    if flags.ttl_ms.is_some() && flags.lease.is_some() {
        return Err(
            "--ttl and --lease do not go together (a leased key lives as long as its lease)".into(),
        );
    }
    Ok(Command::Put {
        key: key.to_string(),
        value,
        ttl_ms: flags.ttl_ms,
        lease: flags.lease,
    })
}

fn lease_command(rest: &[String], flags: &Flags) -> Result<(Command, Vec<&'static str>), String> {
    use lease::{LeaseCommand, parse_id, parse_ttl};
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (command, allowed) = match words.as_slice() {
        ["grant", ttl] => (
            LeaseCommand::Grant {
                ttl_ms: parse_ttl(ttl).map_err(|e| format!("lease grant: {e}"))?,
            },
            vec![],
        ),
        ["keep-alive" | "keepalive", id] => (
            LeaseCommand::KeepAlive {
                id: parse_id(id)?,
                once: flags.once,
            },
            vec!["--once"],
        ),
        ["revoke", id] => (LeaseCommand::Revoke { id: parse_id(id)? }, vec![]),
        ["timetolive" | "time-to-live", id] => (
            LeaseCommand::TimeToLive {
                id: parse_id(id)?,
                keys: flags.keys,
            },
            vec!["--keys"],
        ),
        ["list"] => (LeaseCommand::List, vec![]),
        _ => {
            return Err(
                "usage: bftctl lease grant TTL | keep-alive ID [--once] | revoke ID | \
                 timetolive ID [--keys] | list; see 'bftctl --help'"
                    .into(),
            );
        }
    };
    Ok((Command::Lease(command), allowed))
}

fn command(words: Vec<String>, flags: Flags) -> Result<Command, String> {
    let mut words = words.into_iter();
    let Some(name) = words.next() else {
        return Err("no command given; see 'bftctl --help'".into());
    };
    let rest: Vec<String> = words.collect();
    let (command, allowed): (Command, Vec<&str>) = match (name.as_str(), rest.as_slice()) {
        ("put", [k, v @ ..]) if v.len() <= 1 => (
            put(k, v.first(), &flags)?,
            vec!["--file", "--ttl", "--lease"],
        ),
        ("get", [k]) => get(k, &flags)?,
        ("del" | "delete", [k]) if flags.prefix => {
            (Command::DelPrefix { prefix: k.clone() }, vec!["--prefix"])
        }
        ("del" | "delete", [k]) => (Command::Del { key: k.clone() }, vec![]),
        ("range", [start, end @ ..]) if end.len() <= 1 => (
            list(start, end.first(), &flags, false)?,
            LIST_FLAGS.to_vec(),
        ),
        ("txn", []) => {
            let cmd = Command::Txn {
                ifs: flags.ifs.clone(),
                then: flags.then.clone(),
                els: flags.els.clone(),
            };
            (cmd, vec!["--if", "--then", "--else"])
        }
        ("status", []) => (Command::Status, vec![]),
        ("lease", rest) => lease_command(rest, &flags)?,
        ("snapshot", [action, file]) if action == "save" => {
            let cmd = Command::SnapshotSave {
                file: PathBuf::from(file),
                node: flags.node,
            };
            (cmd, vec!["--node"])
        }
        ("snapshot", _) => {
            return Err("usage: bftctl snapshot save FILE [--node N]; see 'bftctl --help'".into());
        }
        ("watch", [k]) => {
            let cmd = Command::Watch {
                key: k.clone(),
                prefix: flags.prefix,
                from_height: flags.from_height,
            };
            (cmd, vec!["--prefix", "--from-height"])
        }
        ("bench", []) => {
            let mut spec = bench::BenchSpec::new(flags.ops, flags.value_size, flags.concurrency)?;
            spec.coalesce = flags.coalesce;
            (
                Command::Bench(spec),
                vec!["--ops", "--value-size", "--concurrency", "--coalesce"],
            )
        }
        ("put" | "get" | "del" | "delete" | "range" | "txn" | "status" | "bench" | "watch", _) => {
            return Err(format!(
                "'{name}' got {} argument(s), which does not fit its usage; see 'bftctl --help'",
                rest.len()
            ));
        }
        _ => return Err(format!("unknown command '{name}'; see 'bftctl --help'")),
    };
    if let Some(bad) = flags.given.iter().find(|f| !allowed.contains(f)) {
        return Err(format!(
            "{bad} does not apply to '{name}' here; see 'bftctl --help'"
        ));
    }
    if let Some(empty) = empty_key(&command) {
        return Err(format!("{empty}: keys may not be empty"));
    }
    Ok(command)
}

/// The argument that is an empty key, if any (a range's start may be empty: the first key).
fn empty_key(command: &Command) -> Option<&'static str> {
    match command {
        Command::Put { key, .. } | Command::Get { key, .. } | Command::Del { key }
            if key.is_empty() =>
        {
            Some("KEY")
        }
        Command::Watch {
            key, prefix: false, ..
        } if key.is_empty() => Some("KEY (watch every key with '\"\" --prefix')"),
        Command::DelPrefix { prefix } if prefix.is_empty() => {
            Some("PREFIX (deleting every key is not offered)")
        }
        _ => None,
    }
}

/// Runs `bftctl` with `args`; returns the process exit status (messages already printed).
pub fn main(args: Vec<OsString>) -> i32 {
    let args = match parse(args) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return 0;
        }
        Ok(Parsed::Version) => {
            println!("bftctl {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            eprintln!("bftctl: {e}");
            return 2;
        }
    };
    let mut out = commands::Out::new(std::io::stdout().lock());
    match commands::run(&args, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bftctl: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from).collect())
    }

    fn cmd(args: &[&str]) -> Command {
        match run(args) {
            Ok(Parsed::Run(a)) => a.command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lease_commands_parse_and_misuse_is_a_usage_error() {
        use lease::LeaseCommand;
        let lease = |args: &[&str]| match cmd(args) {
            Command::Lease(l) => l,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            lease(&["lease", "grant", "30"]),
            LeaseCommand::Grant { ttl_ms: 30_000 }
        );
        assert_eq!(
            lease(&["lease", "grant", "500ms"]),
            LeaseCommand::Grant { ttl_ms: 500 }
        );
        assert_eq!(
            lease(&["--json", "lease", "keep-alive", "7", "--once"]),
            LeaseCommand::KeepAlive { id: 7, once: true }
        );
        assert_eq!(
            lease(&["lease", "timetolive", "7", "--keys"]),
            LeaseCommand::TimeToLive { id: 7, keys: true }
        );
        assert_eq!(
            lease(&["lease", "revoke", "9"]),
            LeaseCommand::Revoke { id: 9 }
        );
        assert_eq!(lease(&["lease", "list"]), LeaseCommand::List);
        assert_eq!(
            cmd(&["put", "k", "v", "--lease", "7"]),
            Command::Put {
                key: "k".into(),
                value: ValueSource::Arg("v".into()),
                ttl_ms: None,
                lease: Some(7),
            }
        );
        for bad in [
            &["lease"][..],
            &["lease", "grant"],
            &["lease", "grant", "0"],
            &["lease", "grant", "soon"],
            &["lease", "revoke", "0"],
            &["lease", "revoke", "x"],
            &["lease", "revoke", "7", "--once"],
            &["lease", "list", "--keys"],
            &["lease", "frobnicate", "1"],
            &["put", "k", "v", "--lease", "0"],
            &["put", "k", "v", "--lease", "7", "--ttl", "1s"],
            &["get", "k", "--lease", "7"],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bench_coalesces_only_when_asked() {
        let Command::Bench(plain) = cmd(&["bench", "--ops", "10"]) else {
            panic!()
        };
        assert!(!plain.coalesce);
        let Command::Bench(coalesced) = cmd(&["bench", "--concurrency", "64", "--coalesce"]) else {
            panic!()
        };
        assert!(coalesced.coalesce && coalesced.concurrency == 64);
    }

    #[test]
    fn watch_takes_a_key_prefix_and_from_height() {
        assert_eq!(
            cmd(&["watch", "w/", "--prefix", "--from-height", "7"]),
            Command::Watch {
                key: "w/".into(),
                prefix: true,
                from_height: Some(7)
            }
        );
        assert_eq!(
            cmd(&["--json", "watch", "k"]),
            Command::Watch {
                key: "k".into(),
                prefix: false,
                from_height: None
            }
        );
        assert_eq!(
            cmd(&["watch", "", "--prefix"]),
            Command::Watch {
                key: "".into(),
                prefix: true,
                from_height: None
            }
        );
        assert!(run(&["watch", ""]).unwrap_err().contains("KEY"));
        assert!(run(&["watch", "k", "--from-height", "0"]).is_err());
        assert!(run(&["watch", "k", "--limit", "3"]).is_err());
        assert!(run(&["get", "k", "--from-height", "3"]).is_err());
        assert!(run(&["watch"]).is_err());
    }

    #[test]
    fn commands_and_options_anywhere() {
        assert_eq!(
            cmd(&["put", "k", "v"]),
            Command::Put {
                key: "k".into(),
                value: ValueSource::Arg("v".into()),
                ttl_ms: None,
                lease: None,
            }
        );
        assert_eq!(
            cmd(&["put", "k", "-"]),
            Command::Put {
                key: "k".into(),
                value: ValueSource::Stdin,
                ttl_ms: None,
                lease: None,
            }
        );
        assert_eq!(
            cmd(&["put", "k", "--file", "f.bin"]),
            Command::Put {
                key: "k".into(),
                value: ValueSource::File("f.bin".into()),
                ttl_ms: None,
                lease: None,
            }
        );
        assert_eq!(
            cmd(&["get", "k", "--stale"]),
            Command::Get {
                key: "k".into(),
                stale: true,
                value_only: false,
                verified: None
            }
        );
        assert_eq!(
            cmd(&["get", "k", "--verified", "--node", "2", "--min-height", "9"]),
            Command::Get {
                key: "k".into(),
                stale: false,
                value_only: false,
                verified: Some(VerifiedSpec {
                    node: Some(2),
                    min_height: 9
                })
            }
        );
        assert_eq!(
            cmd(&["get", "p/", "--prefix", "--keys-only", "--limit", "5000"]),
            Command::Range(ListSpec {
                start: "p/".into(),
                end: None,
                prefix: true,
                after: None,
                limit: 5000,
                keys_only: true
            })
        );
        assert_eq!(
            cmd(&["del", "p/", "--prefix"]),
            Command::DelPrefix {
                prefix: "p/".into()
            }
        );
        let Ok(Parsed::Run(a)) = run(&["get", "k", "--json", "--config", "x.toml"]) else {
            panic!()
        };
        assert!(a.json);
        assert_eq!(a.config, PathBuf::from("x.toml"));
        assert_eq!(
            cmd(&["range", "a", "--limit", "5", "--after", "a7"]),
            Command::Range(ListSpec {
                start: "a".into(),
                end: None,
                prefix: false,
                after: Some("a7".into()),
                limit: 5,
                keys_only: false
            })
        );
        assert_eq!(
            cmd(&["--", "put", "-k", "-v"]),
            Command::Put {
                key: "-k".into(),
                value: ValueSource::Arg("-v".into()),
                ttl_ms: None,
                lease: None,
            }
        );
        let Ok(Parsed::Run(default)) = run(&["status"]) else {
            panic!()
        };
        assert_eq!(default.config, PathBuf::from(DEFAULT_CONFIG));
    }

    #[test]
    fn ttl_durations_parse_with_units() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        let err = parse_duration_ms("2x").unwrap_err();
        assert!(err.contains("ms, s, m or h"), "{err}");
        let err = parse_duration_ms("0ms").unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        assert_eq!(
            cmd(&["put", "k", "v", "--ttl", "2s"]),
            Command::Put {
                key: "k".into(),
                value: ValueSource::Arg("v".into()),
                ttl_ms: Some(2_000),
                lease: None,
            }
        );
    }

    #[test]
    fn usage_mistakes_are_errors() {
        for bad in [
            &["put", "k"][..],
            &["get", "k", "--limit", "3"],
            &["frob"],
            &[],
            &["range", "a", "b", "c"],
            &["bench", "--ops", "x"],
            &["put", "k", "v", "--coalesce"],
            &["put", "k", "v", "--stale"],
            &["range", "a", "--limit", "0"],
            &["put", "", "v"],
            &["get", ""],
            &["del", "", "--prefix"],
            &["put", "k", "v", "--file", "f"],
            &["put", "k", "v", "--ttl", "0s"],
            &["put", "k", "v", "--ttl", "30"],
            &["put", "k", "v", "--ttl", "1d"],
            &["put", "k", "v", "--ttl", "-5s"],
            &["put", "k", "v", "--ttl", "99999999h"],
            &["get", "k", "--ttl", "5s"],
            &["get", "k", "--prefix", "--from-key"],
            &["get", "k", "--keys-only"],
            &["del", "k", "--keys-only"],
            &["status", "--timeout-ms", "0"],
            &["snapshot", "save"],
            &["snapshot", "load", "f"],
            &["snapshot", "save", "f", "--node", "x"],
            &["status", "--node", "1"],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
        assert_eq!(run(&["--help"]), Ok(Parsed::Help));
        assert_eq!(
            cmd(&["snapshot", "save", "b.bak", "--node", "2", "--json"]),
            Command::SnapshotSave {
                file: "b.bak".into(),
                node: Some(2),
            }
        );
    }
}
