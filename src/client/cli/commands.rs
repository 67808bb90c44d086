//! Running one `bftctl` command against a cluster and printing the result, as text for people
//! or as one JSON document (`--json`) for scripts.
//!
//! Invariant: on success exactly one result is printed to stdout; on failure nothing but the
//! error is returned (printed once by `main`), except `status`, which prints the table and
//! then fails if a node did not answer.

use std::path::Path;
use std::time::Duration;

use crate::api::{KeyValue, OpResult, TxnOp, VersionedValue};
use crate::client::{Client, ClientOptions, NodeStatusReport, StaleRead};
use crate::config::ClientConfig;
use crate::keys_file::to_hex;

use super::json::{Json, bytes_field};
use super::{Args, Command, bench, txn};

/// Bytes as text: UTF-8 as is, anything else as `0x` + hex.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", to_hex(bytes)),
    }
}

fn connect(args: &Args) -> Result<Client, String> {
    let config = ClientConfig::load(&args.config).map_err(|e| {
        let hint = if args.config == Path::new(super::DEFAULT_CONFIG) && !args.config.exists() {
            " (start a local cluster with 'bftd dev', or pass --config FILE)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    let mut options = ClientOptions::default();
    if let Some(ms) = args.timeout_ms {
        if ms == 0 {
            return Err("--timeout-ms must be above zero".into());
        }
        options.request_timeout = Duration::from_millis(ms);
        options.query_timeout = Duration::from_millis(ms);
    }
    if let Command::Bench(spec) = &args.command {
        options.in_flight_max = options.in_flight_max.max(spec.concurrency);
    }
    Client::connect(&config, options).map_err(|e| format!("{}: {e}", args.config.display()))
}

/// Runs the parsed command.
pub fn run(args: &Args) -> Result<(), String> {
    let client = connect(args)?;
    let json = args.json;
    let out = match &args.command {
        Command::Put { key, value } => {
            let version = client
                .put(key.as_bytes(), value.as_bytes())
                .map_err(|e| e.to_string())?;
            if json {
                Json::obj(vec![
                    ("key", Json::str(key)),
                    ("version", Json::U64(version)),
                ])
                .render()
            } else {
                format!("OK (version {version})")
            }
        }
        Command::Get { key, stale: false } => {
            let found = client.get(key.as_bytes()).map_err(|e| e.to_string())?;
            get_output(key, found.as_ref(), None, json)
        }
        Command::Get { key, stale: true } => {
            let read = client
                .get_stale(key.as_bytes())
                .map_err(|e| e.to_string())?;
            get_output(key, read.value.as_ref(), Some(&read), json)
        }
        Command::Del { key } => {
            let existed = client.delete(key.as_bytes()).map_err(|e| e.to_string())?;
            if json {
                Json::obj(vec![
                    ("key", Json::str(key)),
                    ("existed", Json::Bool(existed)),
                ])
                .render()
            } else if existed {
                "deleted".to_string()
            } else {
                format!("{key}: not found (nothing deleted)")
            }
        }
        Command::Range { start, end, limit } => {
            let r = client
                .range(start.as_bytes(), end.as_deref().map(str::as_bytes), *limit)
                .map_err(|e| e.to_string())?;
            range_output(&r.entries, r.more, json)
        }
        Command::Txn { ifs, then, els } => {
            let t = txn::build(ifs, then.as_deref(), els.as_deref())?;
            let branch = |ok: bool| {
                if ok {
                    t.success.clone()
                } else {
                    t.failure.clone()
                }
            };
            let r = client.txn(t.clone()).map_err(|e| e.to_string())?;
            txn_output(r.succeeded, &branch(r.succeeded), &r.results, json)
        }
        Command::Status => return status(&client, json),
        Command::Bench(spec) => {
            let report = bench::run(&client, spec);
            if report.ok == 0 {
                let why = report
                    .first_error
                    .map_or("no op succeeded".into(), |e| e.to_string());
                return Err(format!("bench: every op failed; first error: {why}"));
            }
            if json {
                report.json().render()
            } else {
                report.text().trim_end().to_string()
            }
        }
    };
    println!("{out}");
    Ok(())
}

fn value_json(fields: &mut Vec<(String, Json)>, v: &VersionedValue) {
    fields.push(bytes_field("value", &v.value));
    fields.push(("version".into(), Json::U64(v.version)));
    fields.push(("mod_height".into(), Json::U64(v.mod_height)));
}

fn value_text(v: &VersionedValue) -> String {
    format!(
        "{} (version {}, mod height {})",
        show(&v.value),
        v.version,
        v.mod_height
    )
}

fn get_output(
    key: &str,
    found: Option<&VersionedValue>,
    stale: Option<&StaleRead>,
    json: bool,
) -> String {
    if json {
        let mut f = vec![
            ("key".to_string(), Json::str(key)),
            ("found".into(), Json::Bool(found.is_some())),
        ];
        if let Some(v) = found {
            value_json(&mut f, v);
        }
        f.push(("linearizable".into(), Json::Bool(stale.is_none())));
        if let Some(s) = stale {
            f.push(("stale_node".into(), Json::U64(u64::from(s.node.0))));
            f.push(("applied_height".into(), Json::U64(s.applied_height)));
        }
        return Json::Obj(f).render();
    }
    let body = found.map_or(format!("{key}: not found"), |v| {
        format!("{key} = {}", value_text(v))
    });
    match stale {
        Some(s) => format!(
            "{body}  [stale read from {} at applied height {}]",
            s.node, s.applied_height
        ),
        None => body,
    }
}

fn entry_json(kv: &KeyValue) -> Json {
    let mut f = vec![bytes_field("key", &kv.key)];
    value_json(&mut f, &kv.value);
    Json::Obj(f)
}

fn range_output(entries: &[KeyValue], more: bool, json: bool) -> String {
    if json {
        let list = entries.iter().map(entry_json).collect();
        return Json::obj(vec![
            ("entries", Json::Arr(list)),
            ("more", Json::Bool(more)),
        ])
        .render();
    }
    let mut lines: Vec<String> = entries
        .iter()
        .map(|kv| format!("{} = {}", show(&kv.key), value_text(&kv.value)))
        .collect();
    if entries.is_empty() {
        lines.push("(no keys in range)".into());
    }
    if more {
        lines.push("(more keys beyond --limit)".into());
    }
    lines.join("\n")
}

fn op_text(op: &TxnOp) -> String {
    match op {
        TxnOp::Put { key, .. } => format!("put {}", show(key)),
        TxnOp::Get { key } => format!("get {}", show(key)),
        TxnOp::Delete { key } => format!("del {}", show(key)),
        TxnOp::Range { start, .. } => format!("range {}", show(start)),
    }
}

fn result_text(r: &OpResult) -> String {
    match r {
        OpResult::Put { version } => format!("version {version}"),
        OpResult::Get { found: Some(v) } => value_text(v),
        OpResult::Get { found: None } => "not found".into(),
        OpResult::Delete { existed } => if *existed { "deleted" } else { "not found" }.into(),
        OpResult::Range { entries, more } => format!(
            "{} entries{}",
            entries.len(),
            if *more { " (more)" } else { "" }
        ),
    }
}

fn result_json(op: &TxnOp, r: &OpResult) -> Json {
    let mut f = vec![("op".to_string(), Json::str(op_text(op)))];
    match r {
        OpResult::Put { version } => f.push(("version".into(), Json::U64(*version))),
        OpResult::Get { found } => {
            f.push(("found".into(), Json::Bool(found.is_some())));
            if let Some(v) = found {
                value_json(&mut f, v);
            }
        }
        OpResult::Delete { existed } => f.push(("existed".into(), Json::Bool(*existed))),
        OpResult::Range { entries, more } => {
            f.push((
                "entries".into(),
                Json::Arr(entries.iter().map(entry_json).collect()),
            ));
            f.push(("more".into(), Json::Bool(*more)));
        }
    }
    Json::Obj(f)
}

fn txn_output(succeeded: bool, ops: &[TxnOp], results: &[OpResult], json: bool) -> String {
    if json {
        let list = ops
            .iter()
            .zip(results)
            .map(|(o, r)| result_json(o, r))
            .collect();
        return Json::obj(vec![
            ("succeeded", Json::Bool(succeeded)),
            ("results", Json::Arr(list)),
        ])
        .render();
    }
    let mut lines = vec![if succeeded {
        "succeeded: the --then branch ran".to_string()
    } else {
        "failed: the --else branch ran".to_string()
    }];
    lines.extend(
        ops.iter()
            .zip(results)
            .map(|(o, r)| format!("  {}: {}", op_text(o), result_text(r))),
    );
    lines.join("\n")
}

/// `1h02m`, `5m03s`, `12s`, `3d04h`.
pub fn uptime_text(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn status(client: &Client, json: bool) -> Result<(), String> {
    let reports = client.status().map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            Json::Arr(reports.iter().map(status_json).collect()).render()
        );
    } else {
        println!(
            "{:<7} {:<21} {:<9} {:>8} {:>9} {:<7} {:<8} {:>7}",
            "node", "addr", "reachable", "round", "committed", "leader", "digest", "uptime"
        );
        for r in &reports {
            println!("{}", status_line(r));
        }
    }
    let down = reports.iter().filter(|r| r.status.is_err()).count();
    if down > 0 {
        return Err(format!("{down} of {} nodes did not answer", reports.len()));
    }
    Ok(())
}

fn status_line(r: &NodeStatusReport) -> String {
    let head = format!("{:<7} {:<21}", r.node.to_string(), r.addr.to_string());
    match &r.status {
        Ok(s) => {
            let id_note = if s.node_id == r.node.0 {
                String::new()
            } else {
                format!("  (reports id {}!)", s.node_id)
            };
            format!(
                "{head} {:<9} {:>8} {:>9} {:<7} {:<8} {:>7}{id_note}",
                "yes",
                s.round,
                s.committed_height,
                format!("node{}", s.leader),
                to_hex(&s.state_digest[..4]),
                uptime_text(s.uptime_ms),
            )
        }
        Err(why) => format!("{head} no: {why}"),
    }
}

fn status_json(r: &NodeStatusReport) -> Json {
    let mut f = vec![
        ("node".to_string(), Json::U64(u64::from(r.node.0))),
        ("addr".into(), Json::str(r.addr.to_string())),
        ("reachable".into(), Json::Bool(r.status.is_ok())),
    ];
    match &r.status {
        Ok(s) => f.extend([
            ("reported_id".to_string(), Json::U64(u64::from(s.node_id))),
            ("round".into(), Json::U64(s.round)),
            ("committed_height".into(), Json::U64(s.committed_height)),
            ("applied_height".into(), Json::U64(s.applied_height)),
            ("leader".into(), Json::U64(u64::from(s.leader))),
            ("state_digest".into(), Json::str(to_hex(&s.state_digest))),
            ("uptime_ms".into(), Json::U64(s.uptime_ms)),
            ("mempool_requests".into(), Json::U64(s.mempool_requests)),
            (
                "peers_connected".into(),
                Json::U64(u64::from(s.peers_connected)),
            ),
        ]),
        Err(why) => f.push(("error".into(), Json::str(why.clone()))),
    }
    Json::Obj(f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptime_reads_well() {
        assert_eq!(super::uptime_text(12_345), "12s");
        assert_eq!(super::uptime_text(303_000), "5m03s");
        assert_eq!(super::uptime_text(3_720_000), "1h02m");
        assert_eq!(super::uptime_text(277_200_000), "3d05h");
    }
}
