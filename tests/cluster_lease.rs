//! Leases with four real `bftd` processes, driven through `bftctl` (text and `--json`):
//! - grant a lease, attach two keys, revoke it: both keys are gone on every node;
//! - a lease nobody keeps alive expires and its keys vanish on every node with no further
//!   writes (the idle cluster proposes the block that expires it);
//! - `lease keep-alive` (running until killed, renewing every third of the 6 s TTL) keeps a
//!   lease and its key past the original expiry; once it stops, the lease expires;
//! - the library's `LeaseKeeper` does the same until dropped;
//! - usage mistakes exit 2, a lease that is gone fails with exit 1 and says so.
//!
//! Every wait has a generous deadline and polls a condition; nothing sleeps and hopes.

#[path = "cluster_support.rs"]
mod support;

use std::process::{Command, Stdio};

use support::*;

/// Waits until every node's own (stale) state holds `key` (`present`) or not.
fn wait_on_every_node(clients: &mut [RawClient], key: &str, present: bool, what: &str) {
    wait_for(what, DEADLINE, || {
        clients
            .iter_mut()
            .all(|c| c.stale_get(key).expect("stale get").is_some() == present)
    });
}

fn every_node_at_one_state(net: &Testnet) {
    wait_for("every node at one state", DEADLINE, || {
        let s: Vec<_> = (0..net.nodes).filter_map(|i| status_of(net, i)).collect();
        s.len() == net.nodes
            && s.iter().all(|x| {
                x.applied_height == s[0].applied_height && x.state_digest == s[0].state_digest
            })
    });
}

#[test]
fn leases_grant_attach_revoke_expire_and_keep_alive_across_four_nodes() {
    let net = Testnet::new(4, "", "");
    let _procs = start_all(&net);
    let config = net.client_config();
    let mut clients: Vec<RawClient> = (0..net.nodes)
        .map(|i| RawClient::connect(&net, i).expect("connect"))
        .collect();

    // Usage mistakes exit 2, before any connection.
    for bad in [
        &["lease", "grant"][..],
        &["lease", "grant", "soon"],
        &["lease", "revoke", "0"],
        &["lease", "keep-alive", "1", "--keys"],
        &["put", "k", "v", "--lease", "1", "--ttl", "1s"],
    ] {
        let out = bftctl(&config, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }

    // Grant, attach two keys, read the lease back, revoke: both keys gone everywhere.
    let grant = ok(bftctl(&config, &["--json", "lease", "grant", "60"]));
    let id = json_u64(&grant, "id").expect("id in lease grant --json");
    assert_eq!(json_u64(&grant, "ttl_ms"), Some(60_000), "{grant}");
    let id_text = id.to_string();
    let put = ok(bftctl(
        &config,
        &["--json", "put", "lease/a", "1", "--lease", &id_text],
    ));
    assert_eq!(json_u64(&put, "lease"), Some(id), "{put}");
    let put = ok(bftctl(
        &config,
        &["put", "lease/b", "2", "--lease", &id_text],
    ));
    assert_eq!(put.trim(), format!("OK (version 1, lease {id})"));
    let ttl = ok(bftctl(
        &config,
        &["--json", "lease", "timetolive", &id_text, "--keys"],
    ));
    assert_eq!(json_u64(&ttl, "key_count"), Some(2), "{ttl}");
    assert!(ttl.contains("\"keys\":[\"lease/a\",\"lease/b\"]"), "{ttl}");
    let remaining = json_u64(&ttl, "remaining_ms").expect("remaining_ms");
    assert!(remaining > 0 && remaining <= 60_000, "{ttl}");
    let list = ok(bftctl(&config, &["--json", "lease", "list"]));
    assert_eq!(list.trim(), format!("{{\"leases\":[{id}]}}"));
    wait_on_every_node(
        &mut clients,
        "lease/b",
        true,
        "the leased keys on every node",
    );
    let revoked = ok(bftctl(&config, &["lease", "revoke", &id_text]));
    assert_eq!(
        revoked.trim(),
        format!("lease {id} revoked (2 keys deleted)")
    );
    wait_on_every_node(&mut clients, "lease/a", false, "lease/a gone on every node");
    wait_on_every_node(&mut clients, "lease/b", false, "lease/b gone on every node");
    let gone = bftctl(&config, &["lease", "timetolive", &id_text]);
    assert_eq!(gone.status.code(), Some(1));
    let why = String::from_utf8_lossy(&gone.stderr);
    assert!(why.contains(&format!("lease {id} not found")), "{why}");

    // A lease nobody keeps alive expires with its key; nothing else is written meanwhile.
    let grant = ok(bftctl(&config, &["--json", "lease", "grant", "2s"]));
    let short = json_u64(&grant, "id").expect("id").to_string();
    let expires_at_ms = json_u64(&grant, "expires_at_ms").expect("expires_at_ms");
    ok(bftctl(
        &config,
        &["put", "lease/short", "s", "--lease", &short],
    ));
    ok(bftctl(&config, &["put", "lease/plain", "p"]));
    wait_on_every_node(
        &mut clients,
        "lease/short",
        false,
        "the expired lease's key gone on every node",
    );
    assert!(
        wall_clock_ms() + 1_000 >= expires_at_ms,
        "gone before its lease expired"
    );
    wait_on_every_node(&mut clients, "lease/plain", true, "a plain key stays");
    every_node_at_one_state(&net);

    // Kept alive by `bftctl lease keep-alive` (every third of the TTL) past its first expiry.
    let grant = ok(bftctl(&config, &["--json", "lease", "grant", "6s"]));
    let kept = json_u64(&grant, "id").expect("id").to_string();
    let first_expiry_ms = json_u64(&grant, "expires_at_ms").expect("expires_at_ms");
    ok(bftctl(
        &config,
        &["put", "lease/kept", "k", "--lease", &kept],
    ));
    let once = ok(bftctl(
        &config,
        &["--json", "lease", "keep-alive", &kept, "--once"],
    ));
    assert!(
        json_u64(&once, "expires_at_ms").is_some_and(|at| at >= first_expiry_ms),
        "{once}"
    );
    let mut keeper = Command::new(env!("CARGO_BIN_EXE_bftctl"))
        .arg("--config")
        .arg(&config)
        .args(["lease", "keep-alive", &kept])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bftctl lease keep-alive");
    wait_until("the wall clock past the lease's first expiry", || {
        wall_clock_ms() > first_expiry_ms + 2_000
    });
    let alive = ok(bftctl(&config, &["--json", "lease", "timetolive", &kept]));
    assert!(
        json_u64(&alive, "expires_at_ms").is_some_and(|at| at > first_expiry_ms + 2_000),
        "kept alive: {alive}"
    );
    wait_on_every_node(
        &mut clients,
        "lease/kept",
        true,
        "the kept lease's key stays",
    );
    let _ = keeper.kill();
    let _ = keeper.wait();
    wait_on_every_node(
        &mut clients,
        "lease/kept",
        false,
        "the key gone once nobody keeps its lease alive",
    );
    let list = ok(bftctl(&config, &["lease", "list"]));
    assert_eq!(list.trim(), "(no leases)");

    // The library: a LeaseKeeper renews from a thread until dropped.
    let client = library_client(&net);
    let id = client.lease_grant(3_000).expect("grant");
    client
        .put_with_lease(b"lease/lib", b"l", id)
        .expect("put on the lease");
    let first = client.lease_time_to_live(id, true).expect("time to live");
    assert_eq!(first.keys, Some(vec![b"lease/lib".to_vec()]));
    let keeper = client.lease_keeper(id).expect("keeper");
    wait_until(
        "the wall clock past the library lease's first expiry",
        || wall_clock_ms() > first.expires_at_ms + 1_500,
    );
    assert!(keeper.is_running(), "{:?}", keeper.error());
    assert!(keeper.last().expires_at_ms > first.expires_at_ms + 1_500);
    wait_on_every_node(&mut clients, "lease/lib", true, "the kept key stays");
    drop(keeper);
    wait_on_every_node(
        &mut clients,
        "lease/lib",
        false,
        "gone once the keeper is dropped",
    );
    match client.lease_keep_alive(id) {
        Err(bftd::client::ClientError::Failed(bftd::api::OpError::LeaseNotFound { id: gone })) => {
            assert_eq!(gone, id)
        }
        other => panic!("{other:?}"),
    }
    every_node_at_one_state(&net);
}
