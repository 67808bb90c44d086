//! Running one `bftctl` command against a cluster and printing the result, as text for people
//! or as one JSON document (`--json`) for scripts.
//!
//! Invariant: on success exactly one result is printed to stdout; on failure nothing but the
//! error is returned (printed once by `main`), except `status`, which prints the table and
//! then fails if a node did not answer. Output goes through [`Out`], so a reader that closed
//! the pipe (`bftctl range a | head`) ends the output quietly instead of a panic.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::ops::VALUE_BYTES_MAX;
use crate::api::{KeyValue, OpResult, TxnOp, VersionedValue, WatchEvent};
use crate::client::{
    Client, ClientOptions, NodeStatusReport, RangeResult, StaleRead, VerifiedReadOptions,
    VerifiedValue, prefix_end,
};
use crate::config::ClientConfig;
use crate::keys_file::to_hex;
use crate::types::NodeId;

use super::json::{Json, bytes_field};
use super::{Args, Command, ListSpec, ValueSource, bench, txn};

/// Standard output that treats a closed pipe as the end of the output, not an error.
pub struct Out<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> Out<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            closed: false,
        }
    }

    /// Writes `bytes`; after the reader went away, writes nothing and succeeds.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        match self
            .inner
            .write_all(bytes)
            .and_then(|()| self.inner.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(format!("writing the output: {e}")),
        }
    }

    /// True once the reader went away (a closed pipe).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes `line` and a newline.
    pub fn line(&mut self, line: &str) -> Result<(), String> {
        self.bytes(format!("{line}\n").as_bytes())
    }
}

/// Reads a value from `from`, refusing more than the state machine's value limit without
/// reading all of it.
fn read_value(mut from: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut value = Vec::new();
    from.by_ref()
        .take(VALUE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| format!("reading {what}: {e}"))?;
    if value.len() > VALUE_BYTES_MAX {
        return Err(format!(
            "{what} holds more than the limit of {VALUE_BYTES_MAX} bytes (1 MiB) for one value"
        ));
    }
    Ok(value)
}

fn value_bytes(source: &ValueSource) -> Result<Vec<u8>, String> {
    match source {
        ValueSource::Arg(v) => Ok(v.as_bytes().to_vec()),
        ValueSource::Stdin => read_value(std::io::stdin().lock(), "stdin"),
        ValueSource::File(path) => {
            let shown = path.display();
            let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
            read_value(file, &shown.to_string())
        }
    }
}

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
    let mut options = ClientOptions {
        refused_fails_fast: true,
        ..ClientOptions::default()
    };
    if let Some(ms) = args.timeout_ms {
        options.request_timeout = Duration::from_millis(ms);
        options.query_timeout = Duration::from_millis(ms);
    }
    if let Command::Bench(spec) = &args.command {
        options.in_flight_max = options.in_flight_max.max(spec.concurrency);
    }
    Client::connect(&config, options).map_err(|e| format!("{}: {e}", args.config.display()))
}

/// Runs the parsed command, printing its result to `out`.
pub fn run<W: Write>(args: &Args, out: &mut Out<W>) -> Result<(), String> {
    // Read a value before connecting: a file that is missing or too large is the user's
    // mistake, reported at once.
    let value = match &args.command {
        Command::Put { value, .. } => Some(value_bytes(value)?),
        _ => None,
    };
    let client = connect(args)?;
    let json = args.json;
    let text = match &args.command {
        Command::Put {
            key, ttl_ms, lease, ..
        } => {
            let value = value.unwrap_or_default();
            let (version, expires_at_ms) = match (ttl_ms, lease) {
                (Some(ttl_ms), _) => client
                    .put_with_ttl(key.as_bytes(), &value, *ttl_ms)
                    .map(|(v, at)| (v, Some(at))),
                (None, Some(id)) => client
                    .put_with_lease(key.as_bytes(), &value, *id)
                    .map(|v| (v, None)),
                (None, None) => client.put(key.as_bytes(), &value).map(|v| (v, None)),
            }
            .map_err(|e| e.to_string())?;
            if json {
                let mut f = vec![
                    ("key", Json::str(key)),
                    ("version", Json::U64(version)),
                    ("value_bytes", Json::U64(value.len() as u64)),
                ];
                if let Some(at) = expires_at_ms {
                    f.push(("expires_at_ms", Json::U64(at)));
                }
                if let Some(id) = lease {
                    f.push(("lease", Json::U64(*id)));
                }
                Json::obj(f).render()
            } else if let Some(at) = expires_at_ms {
                format!("OK (version {version}, expires at {at} ms since the epoch)")
            } else if let Some(id) = lease {
                format!("OK (version {version}, lease {id})")
            } else {
                format!("OK (version {version})")
            }
        }
        Command::Lease(command) => return super::lease::run(&client, command, json, out),
        Command::Get {
            key,
            value_only,
            verified: Some(spec),
            ..
        } => {
            let options = VerifiedReadOptions {
                node: spec.node.map(NodeId),
                min_height: spec.min_height,
            };
            let read = client
                .get_verified_with(key.as_bytes(), &options)
                .map_err(|e| e.to_string())?;
            if *value_only {
                return value_only_output(key, read.value.as_ref(), out);
            }
            verified_output(key, &read, json)
        }
        Command::Get {
            key,
            stale: false,
            value_only,
            ..
        } => {
            let found = client.get(key.as_bytes()).map_err(|e| e.to_string())?;
            if *value_only {
                return value_only_output(key, found.as_ref(), out);
            }
            get_output(key, found.as_ref(), None, json)
        }
        Command::Get {
            key,
            stale: true,
            value_only,
            ..
        } => {
            let read = client
                .get_stale(key.as_bytes())
                .map_err(|e| e.to_string())?;
            if *value_only {
                return value_only_output(key, read.value.as_ref(), out);
            }
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
        Command::DelPrefix { prefix } => del_prefix(&client, prefix, json)?,
        Command::Range(spec) => {
            let r = list(&client, spec)?;
            return list_output(&r, spec, json, out);
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
        Command::Status => return status(&client, json, out),
        Command::SnapshotSave { file, node } => snapshot_save(&client, file, *node, json)?,
        Command::Watch {
            key,
            prefix,
            from_height,
        } => return watch(&client, key, *prefix, *from_height, json, out),
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
    out.line(&text)
}

/// `watch`: one line per change, flushed as it comes, until the reader goes away or an error.
fn watch<W: Write>(
    client: &Client,
    key: &str,
    prefix: bool,
    from_height: Option<u64>,
    json: bool,
    out: &mut Out<W>,
) -> Result<(), String> {
    let mut watch = client
        .watch(key.as_bytes(), prefix, from_height)
        .map_err(|e| e.to_string())?;
    loop {
        let Some(batch) = watch
            .next(Duration::from_secs(1))
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        for event in &batch.events {
            out.line(&watch_line(batch.height, event, json))?;
        }
        if out.is_closed() {
            return Ok(());
        }
    }
}

/// One change as `bftctl watch` prints it.
pub fn watch_line(height: u64, event: &WatchEvent, json: bool) -> String {
    if json {
        let mut f = vec![
            ("height".to_string(), Json::U64(height)),
            (
                "type".into(),
                Json::str(if event.value.is_some() {
                    "put"
                } else {
                    "delete"
                }),
            ),
            bytes_field("key", &event.key),
        ];
        if let Some(v) = &event.value {
            value_json(&mut f, v);
        }
        return Json::Obj(f).render();
    }
    match &event.value {
        Some(v) => format!(
            "{height} PUT {} = {} (version {})",
            show(&event.key),
            show(&v.value),
            v.version
        ),
        None => format!("{height} DELETE {}", show(&event.key)),
    }
}

/// `get --print-value-only`: the raw value, or nothing and a failure when the key is missing.
fn value_only_output<W: Write>(
    key: &str,
    found: Option<&VersionedValue>,
    out: &mut Out<W>,
) -> Result<(), String> {
    match found {
        Some(v) => out.bytes(&v.value),
        None => Err(format!("{key}: not found")),
    }
}

/// Runs a listing: the range it names, paged by the library past 1000 keys.
fn list(client: &Client, spec: &ListSpec) -> Result<RangeResult, String> {
    let mut start = spec.start.as_bytes().to_vec();
    let end = if spec.prefix {
        prefix_end(&start)
    } else {
        spec.end.as_ref().map(|e| e.as_bytes().to_vec())
    };
    if let Some(after) = &spec.after {
        let mut next = after.as_bytes().to_vec();
        next.push(0);
        start = start.max(next);
    }
    client
        .range_paged(&start, end.as_deref(), spec.limit)
        .map_err(|e| e.to_string())
}

/// `del --prefix`: one atomic delete of at most 1000 keys per step, until none remain.
fn del_prefix(client: &Client, prefix: &str, json: bool) -> Result<String, String> {
    let (mut deleted, mut steps) = (0u64, 0u64);
    loop {
        let (n, more) = client
            .delete_prefix(prefix.as_bytes())
            .map_err(|e| format!("{e} (after deleting {deleted} keys in {steps} steps)"))?;
        deleted += n;
        steps += 1;
        if !more {
            break;
        }
    }
    Ok(if json {
        Json::obj(vec![
            ("prefix", Json::str(prefix)),
            ("deleted", Json::U64(deleted)),
            ("steps", Json::U64(steps)),
        ])
        .render()
    } else if steps == 1 {
        format!("deleted {deleted} keys")
    } else {
        format!("deleted {deleted} keys in {steps} atomic steps of at most 1000 keys")
    })
}

fn value_json(fields: &mut Vec<(String, Json)>, v: &VersionedValue) {
    fields.push(bytes_field("value", &v.value));
    fields.push(("version".into(), Json::U64(v.version)));
    fields.push(("mod_height".into(), Json::U64(v.mod_height)));
    if let Some(at) = v.expires_at_ms {
        fields.push(("expires_at_ms".into(), Json::U64(at)));
    }
}

fn value_text(v: &VersionedValue) -> String {
    let expiry = v
        .expires_at_ms
        .map_or(String::new(), |at| format!(", expires at {at} ms"));
    format!(
        "{} (version {}, mod height {}{expiry})",
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

/// A verified read: the value, `"verified": true`, the height it is valid at and the node.
fn verified_output(key: &str, read: &VerifiedValue, json: bool) -> String {
    if json {
        let mut f = vec![
            ("key".to_string(), Json::str(key)),
            ("found".into(), Json::Bool(read.value.is_some())),
        ];
        if let Some(v) = &read.value {
            value_json(&mut f, v);
        }
        f.push(("linearizable".into(), Json::Bool(false)));
        f.push(("verified".into(), Json::Bool(true)));
        f.push(("height".into(), Json::U64(read.height)));
        f.push(("node".into(), Json::U64(u64::from(read.node.0))));
        return Json::Obj(f).render();
    }
    let body = read
        .value
        .as_ref()
        .map_or(format!("{key}: not found"), |v| {
            format!("{key} = {}", value_text(v))
        });
    format!(
        "{body}  [verified read from {} at height {}: proof and 2f+1 certificate checked]",
        read.node, read.height
    )
}

fn entry_json(kv: &KeyValue) -> Json {
    let mut f = vec![bytes_field("key", &kv.key)];
    value_json(&mut f, &kv.value);
    Json::Obj(f)
}

fn list_output<W: Write>(
    r: &RangeResult,
    spec: &ListSpec,
    json: bool,
    out: &mut Out<W>,
) -> Result<(), String> {
    let cursor = if r.more {
        r.entries.last().map(|kv| kv.key.as_slice())
    } else {
        None
    };
    if json {
        let mut f = if spec.keys_only {
            // A key that is not UTF-8 shows as 0x + hex, as in the text output.
            let keys = r
                .entries
                .iter()
                .map(|kv| Json::str(show(&kv.key)))
                .collect();
            vec![("keys".to_string(), Json::Arr(keys))]
        } else {
            let list = r.entries.iter().map(entry_json).collect();
            vec![("entries".to_string(), Json::Arr(list))]
        };
        f.push(("count".into(), Json::U64(r.entries.len() as u64)));
        f.push(("more".into(), Json::Bool(r.more)));
        if let Some(last) = cursor {
            f.push(bytes_field("next_after", last));
        }
        return out.line(&Json::Obj(f).render());
    }
    for kv in &r.entries {
        let line = if spec.keys_only {
            show(&kv.key)
        } else {
            format!("{} = {}", show(&kv.key), value_text(&kv.value))
        };
        out.line(&line)?;
    }
    if r.entries.is_empty() && !spec.keys_only {
        out.line("(no keys in range)")?;
    }
    if let Some(last) = cursor {
        // On stderr with --keys-only, so a script reading the keys gets keys only.
        let note = format!(
            "(more keys beyond --limit {}; continue with --after '{}')",
            spec.limit,
            show(last)
        );
        if spec.keys_only {
            eprintln!("{note}");
        } else {
            out.line(&note)?;
        }
    }
    Ok(())
}

fn op_text(op: &TxnOp) -> String {
    match op {
        TxnOp::Put { key, .. } => format!("put {}", show(key)),
        TxnOp::PutTtl { key, ttl_ms, .. } => format!("put {} --ttl {ttl_ms}ms", show(key)),
        TxnOp::PutLease { key, lease, .. } => format!("put {} --lease {lease}", show(key)),
        TxnOp::Get { key } => format!("get {}", show(key)),
        TxnOp::Delete { key } => format!("del {}", show(key)),
        TxnOp::Range { start, .. } => format!("range {}", show(start)),
        TxnOp::DeleteRange { start, .. } => format!("del-range {}", show(start)),
    }
}

fn result_text(r: &OpResult) -> String {
    match r {
        OpResult::Put { version } => format!("version {version}"),
        OpResult::PutTtl {
            version,
            expires_at_ms,
        } => format!("version {version}, expires at {expires_at_ms} ms"),
        OpResult::Get { found: Some(v) } => value_text(v),
        OpResult::Get { found: None } => "not found".into(),
        OpResult::Delete { existed } => if *existed { "deleted" } else { "not found" }.into(),
        OpResult::Range { entries, more } => format!(
            "{} entries{}",
            entries.len(),
            if *more { " (more)" } else { "" }
        ),
        OpResult::DeleteRange { deleted, more } => format!(
            "{deleted} deleted{}",
            if *more { " (more remain)" } else { "" }
        ),
        // Lease operations are not allowed in a transaction; shown plainly all the same.
        other => format!("{other:?}"),
    }
}

fn result_json(op: &TxnOp, r: &OpResult) -> Json {
    let mut f = vec![("op".to_string(), Json::str(op_text(op)))];
    match r {
        OpResult::Put { version } => f.push(("version".into(), Json::U64(*version))),
        OpResult::PutTtl {
            version,
            expires_at_ms,
        } => {
            f.push(("version".into(), Json::U64(*version)));
            f.push(("expires_at_ms".into(), Json::U64(*expires_at_ms)));
        }
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
        OpResult::DeleteRange { deleted, more } => {
            f.push(("deleted".into(), Json::U64(*deleted)));
            f.push(("more".into(), Json::Bool(*more)));
        }
        // Lease operations are not allowed in a transaction; shown plainly all the same.
        other => f.push(("result".into(), Json::str(format!("{other:?}")))),
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

/// `bftctl snapshot save FILE [--node N]`: progress on stderr (at most once a second), the
/// summary on stdout.
fn snapshot_save(
    client: &Client,
    file: &Path,
    node: Option<u16>,
    json: bool,
) -> Result<String, String> {
    let prefer = match node {
        Some(n) if usize::from(n) >= client.links().len() => {
            return Err(format!(
                "--node {n}: the cluster has nodes 0..={}",
                client.links().len().saturating_sub(1)
            ));
        }
        other => other.map(NodeId),
    };
    let mut last_shown = Instant::now();
    let mut progress = |done: u64, total: u64, from: NodeId| {
        if last_shown.elapsed() >= Duration::from_secs(1) && done < total {
            last_shown = Instant::now();
            eprintln!(
                "bftctl: downloading the snapshot from {from}: {:.1} of {:.1} MiB ({}%)",
                done as f64 / MIB,
                total as f64 / MIB,
                done * 100 / total.max(1)
            );
        }
    };
    let mut target = crate::node::backup::FileTarget::new(file);
    let saved = crate::client::backup::save(client, &mut target, prefer, &mut progress)?;
    let o = &saved.offer;
    let nodes =
        |list: &[NodeId]| Json::Arr(list.iter().map(|n| Json::U64(u64::from(n.0))).collect());
    Ok(if json {
        Json::obj(vec![
            ("file", Json::str(file.display().to_string())),
            ("height", Json::U64(o.height)),
            ("block_id", Json::str(to_hex(&o.block_id.0))),
            ("round", Json::U64(o.round)),
            ("state_digest", Json::str(to_hex(&o.state_digest))),
            ("entries", Json::U64(saved.entry_count)),
            ("snapshot_bytes", Json::U64(o.file_bytes)),
            ("backup_bytes", Json::U64(saved.backup_bytes)),
            ("vouched_by", nodes(&saved.vouched_by)),
            ("downloaded_from", nodes(&saved.downloaded_from)),
            ("distrusted", nodes(&saved.distrusted)),
            ("elapsed_ms", Json::U64(saved.elapsed.as_millis() as u64)),
        ])
        .render()
    } else {
        let from: Vec<String> = saved
            .downloaded_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        let by: Vec<String> = saved.vouched_by.iter().map(|n| n.to_string()).collect();
        let bad: Vec<String> = saved.distrusted.iter().map(|n| n.to_string()).collect();
        let bad = if bad.is_empty() {
            String::new()
        } else {
            format!(
                "\nbytes from {} did not verify and were discarded",
                bad.join(", ")
            )
        };
        format!(
            "saved height {} ({} entries, state digest {}, {} bytes) to {}\n\
             offered identically by {}; downloaded from {} and verified{bad}",
            o.height,
            saved.entry_count,
            to_hex(&o.state_digest),
            saved.backup_bytes,
            file.display(),
            by.join(", "),
            from.join(", ")
        )
    })
}

const MIB: f64 = 1024.0 * 1024.0;

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

fn status<W: Write>(client: &Client, json: bool, out: &mut Out<W>) -> Result<(), String> {
    let reports = client.status().map_err(|e| e.to_string())?;
    if json {
        out.line(&Json::Arr(reports.iter().map(status_json).collect()).render())?;
    } else {
        // Each root sits next to the height it belongs to: the applied height's own root,
        // then the highest certified height and the root the chain certified for it.
        out.line(&format!(
            "{:<7} {:<21} {:<9} {:>8} {:>9} {:>9} {:<8} {:>9} {:<8} {:<7} {:>7}",
            "node",
            "addr",
            "reachable",
            "round",
            "committed",
            "applied",
            "root",
            "certified",
            "root",
            "leader",
            "uptime"
        ))?;
        for r in &reports {
            out.line(&status_line(r))?;
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
            let (certified, certified_root) = match s.certified_height {
                0 => ("-".to_string(), "-".to_string()),
                h => (h.to_string(), to_hex(&s.certified_root[..4])),
            };
            format!(
                "{head} {:<9} {:>8} {:>9} {:>9} {:<8} {:>9} {:<8} {:<7} {:>7}{id_note}",
                "yes",
                s.round,
                s.committed_height,
                s.applied_height,
                to_hex(&s.state_digest[..4]),
                certified,
                certified_root,
                format!("node{}", s.leader),
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
            (
                "applied_block_time_ms".into(),
                Json::U64(s.applied_block_time_ms),
            ),
            ("leader".into(), Json::U64(u64::from(s.leader))),
            // The root of `applied_height` (named `state_digest` before roots were certified).
            ("applied_root".into(), Json::str(to_hex(&s.state_digest))),
            ("certified_height".into(), Json::U64(s.certified_height)),
            (
                "certified_root".into(),
                match s.certified_height {
                    0 => Json::Null,
                    _ => Json::str(to_hex(&s.certified_root)),
                },
            ),
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
