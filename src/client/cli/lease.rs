//! `bftctl lease ...`: grant, keep-alive (once, or every third of the TTL until Ctrl-C), revoke,
//! time-to-live and list, as text or `--json` (one JSON object per result; `keep-alive`
//! without `--once` prints one per renewal).

use std::io::Write;

use crate::client::lease::keep_alive_interval;
use crate::client::{Client, LeaseGrant, LeaseId};

use super::commands::{Out, show};
use super::json::Json;

/// One `lease` subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseCommand {
    Grant { ttl_ms: u64 },
    KeepAlive { id: LeaseId, once: bool },
    Revoke { id: LeaseId },
    TimeToLive { id: LeaseId, keys: bool },
    List,
}

/// A lease id as typed: a decimal number from 1 to `LEASE_ID_MAX`.
pub fn parse_id(raw: &str) -> Result<LeaseId, String> {
    let max = crate::api::ops::LEASE_ID_MAX;
    raw.parse::<u64>()
        .ok()
        .filter(|id| (1..=max).contains(id))
        .ok_or_else(|| format!("'{raw}' is not a lease id (a number from 1 to {max})"))
}

/// A lease TTL as typed: a duration (`500ms`, `30s`, `5m`, `1h`) or, as etcdctl takes it, a
/// bare number of seconds.
pub fn parse_ttl(raw: &str) -> Result<u64, String> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return super::parse_duration_ms(&format!("{raw}s"));
    }
    super::parse_duration_ms(raw)
}

/// Runs one `lease` subcommand, printing its result.
pub fn run<W: Write>(
    client: &Client,
    command: &LeaseCommand,
    json: bool,
    out: &mut Out<W>,
) -> Result<(), String> {
    let text = match command {
        LeaseCommand::Grant { ttl_ms } => {
            let grant = client
                .lease_grant_with_id(0, *ttl_ms)
                .map_err(|e| e.to_string())?;
            if json {
                grant_json(&grant)
            } else {
                format!(
                    "lease {} granted with TTL {} ms (expires at {} ms since the epoch)",
                    grant.id, grant.ttl_ms, grant.expires_at_ms
                )
            }
        }
        LeaseCommand::KeepAlive { id, once } => return keep_alive(client, *id, *once, json, out),
        LeaseCommand::Revoke { id } => {
            let deleted = client.lease_revoke(*id).map_err(|e| e.to_string())?;
            if json {
                Json::obj(vec![
                    ("id", Json::U64(*id)),
                    ("revoked", Json::Bool(true)),
                    ("deleted", Json::U64(deleted)),
                ])
                .render()
            } else {
                format!("lease {id} revoked ({deleted} keys deleted)")
            }
        }
        LeaseCommand::TimeToLive { id, keys } => {
            let status = client
                .lease_time_to_live(*id, *keys)
                .map_err(|e| e.to_string())?;
            let remaining_ms = status.expires_at_ms.saturating_sub(status.block_time_ms);
            let shown: Option<Vec<String>> = status
                .keys
                .as_ref()
                .map(|keys| keys.iter().map(|k| show(k)).collect());
            if json {
                let mut f = vec![
                    ("id", Json::U64(status.id)),
                    ("ttl_ms", Json::U64(status.ttl_ms)),
                    ("remaining_ms", Json::U64(remaining_ms)),
                    ("expires_at_ms", Json::U64(status.expires_at_ms)),
                    ("key_count", Json::U64(status.key_count)),
                ];
                if let Some(keys) = shown {
                    f.push(("keys", Json::Arr(keys.into_iter().map(Json::Str).collect())));
                }
                Json::obj(f).render()
            } else {
                let mut text = format!(
                    "lease {} granted with TTL {} ms, remaining {} ms, {} keys attached",
                    status.id, status.ttl_ms, remaining_ms, status.key_count
                );
                for key in shown.unwrap_or_default() {
                    text.push('\n');
                    text.push_str(&key);
                }
                text
            }
        }
        LeaseCommand::List => {
            let ids = client.lease_list().map_err(|e| e.to_string())?;
            if json {
                Json::obj(vec![(
                    "leases",
                    Json::Arr(ids.into_iter().map(Json::U64).collect()),
                )])
                .render()
            } else if ids.is_empty() {
                "(no leases)".to_string()
            } else {
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    };
    out.line(&text)
}

fn grant_json(grant: &LeaseGrant) -> String {
    Json::obj(vec![
        ("id", Json::U64(grant.id)),
        ("ttl_ms", Json::U64(grant.ttl_ms)),
        ("expires_at_ms", Json::U64(grant.expires_at_ms)),
    ])
    .render()
}

/// `lease keep-alive`: once, or every third of the TTL until interrupted, the lease is gone
/// (exit 1 with the reason), or the reader of the output went away.
fn keep_alive<W: Write>(
    client: &Client,
    id: LeaseId,
    once: bool,
    json: bool,
    out: &mut Out<W>,
) -> Result<(), String> {
    loop {
        let grant = client.lease_keep_alive(id).map_err(|e| e.to_string())?;
        let line = if json {
            grant_json(&grant)
        } else {
            format!(
                "lease {id} kept alive with TTL {} ms (expires at {} ms since the epoch)",
                grant.ttl_ms, grant.expires_at_ms
            )
        };
        out.line(&line)?;
        if once || out.is_closed() {
            return Ok(());
        }
        std::thread::sleep(keep_alive_interval(grant.ttl_ms));
    }
}
