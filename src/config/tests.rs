//! Parsing and every validation error of node configs, checked against a real `testnet`
//! directory so the happy path is exactly what `bftd testnet` writes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{ClientConfig, ConfigError, NodeConfig};
use crate::cli::testnet::{TestnetSpec, write_testnet};
use crate::keys_file::to_hex;

fn testnet(nodes: usize, faults: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let spec = TestnetSpec {
        nodes,
        faults,
        dir: dir.clone(),
        base_port: 7000,
        force: false,
    };
    write_testnet(&spec).unwrap();
    (tmp, dir)
}

/// Rewrites node0.toml with `edit` applied and returns the load error.
fn broken(edit: impl Fn(String) -> String) -> (ConfigError, PathBuf) {
    let (_tmp, dir) = testnet(4, 1);
    let path = dir.join("node0.toml");
    let text = fs::read_to_string(&path).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit did not apply");
    fs::write(&path, edited).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_eq!(err.file, path);
    (err, path)
}

fn assert_field(err: &ConfigError, path: &Path, field: &str, words: &str) {
    assert_eq!(err.field.as_deref(), Some(field), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: {field}: ", path.display())),
        "{text}"
    );
    assert!(text.contains(words), "{text}");
}

fn member_key(text: &str, nth: usize, name: &str) -> String {
    let needle = format!("{name} = \"");
    let at = text.match_indices(&needle).nth(nth).unwrap().0 + needle.len();
    text[at..at + 64].to_string()
}

#[test]
fn testnet_configs_load_and_convert() {
    let (_tmp, dir) = testnet(4, 1);
    for i in 0..4 {
        let loaded = NodeConfig::load(&dir.join(format!("node{i}.toml"))).unwrap();
        assert_eq!(loaded.node_id.0, i);
        assert_eq!(loaded.committee().n(), 4);
        assert_eq!(loaded.committee().f(), 1);
        assert_eq!(
            loaded.signer().public_key(),
            loaded.members[i as usize].signing_public_key
        );
        assert_eq!(loaded.data_dir, dir.join(format!("data/node{i}")));
        let t = loaded.transport_config();
        assert_eq!(t.peers.len(), 3);
        t.validate().unwrap();
        assert_eq!(loaded.core_config().round_timeout_base_ms, 500);
        assert!(
            matches!(loaded.client_policy(), crate::crypto::ClientPolicy::AllowList(m) if m.len() == 1)
        );
    }
    let client = ClientConfig::load(&dir.join("client.toml")).unwrap();
    assert_eq!(client.committee.n(), 4);
}

#[test]
fn optional_sections_take_defaults_and_overrides() {
    let (_tmp, dir) = testnet(4, 1);
    let path = dir.join("node0.toml");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[consensus]\n",
            "[consensus]\nround_timeout_base_ms = 250\n",
        )
        .replace("[limits]\n", "[limits]\nconnections_max = 7\n");
    fs::write(&path, text).unwrap();
    let loaded = NodeConfig::load(&path).unwrap();
    assert_eq!(loaded.core_config().round_timeout_base_ms, 250);
    assert_eq!(loaded.core_config().round_timeout_max_ms, 30_000);
    assert_eq!(loaded.transport_config().limits.connections_max, 7);
}

#[test]
fn too_few_members_for_f_names_the_file() {
    let (err, path) = broken(|t| t.replace("f = 1\n", "f = 2\n"));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cluster has 4 members but f = 2 needs at least 7",
            path.display()
        )
    );
    let (err, path) = broken(|t| t.replace("f = 1\n", "f = 18446744073709551615\n"));
    assert_field(&err, &path, "f", "larger than any supported cluster");
}

#[test]
fn typos_and_wrong_types_are_errors_naming_the_line() {
    let (err, path) = broken(|t| t.replace("f = 1\n", "f = 1\nfaults = 1\n"));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: line ", path.display())),
        "{text}"
    );
    assert!(text.contains("faults"), "{text}");
    let (err, _) = broken(|t| t.replace("[limits]\n", "[limits]\nconection_max = 3\n"));
    assert!(err.to_string().contains("conection_max"), "{err}");
    let (err, _) = broken(|t| t.replace("node_id = 0", "node_id = \"zero\""));
    assert!(err.to_string().contains("node_id = \"zero\""), "{err}");
    let (err, _) = broken(|t| t.replace("node_id = 0\n", ""));
    assert!(err.to_string().contains("node_id"), "{err}");
    let (err, _) = broken(|t| t.replace("f = 1\n", "f = -1\n"));
    assert!(err.to_string().contains("f = -1"), "{err}");
}

/// `[faults] byzantine` (test-only) accepts exactly the kinds a process can play; anything
/// else is a config error that lists them, with or without the `byzantine` feature.
#[test]
fn an_unknown_byzantine_kind_is_an_error_listing_the_valid_ones() {
    let (err, path) = broken(|t| format!("{t}\n[faults]\nbyzantine = \"liar\"\n"));
    assert_field(
        &err,
        &path,
        "faults.byzantine",
        "unknown Byzantine kind 'liar' (expected one of: silent, equivocate, double-vote",
    );
    assert!(err.to_string().contains("lie-to-clients"), "{err}");
    let (err, path) = broken(|t| format!("{t}\n[faults]\nbyzantine = \"twins\"\n"));
    assert_field(
        &err,
        &path,
        "faults.byzantine",
        "unknown Byzantine kind 'twins'",
    );
    let (_tmp, dir) = testnet(4, 1);
    let path = dir.join("node0.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        format!("{text}\n[faults]\nbyzantine = \"forge-sync\"\n"),
    )
    .unwrap();
    let cfg = NodeConfig::load(&path).unwrap();
    assert_eq!(
        cfg.raw.faults.byzantine_kind(),
        Ok(Some(crate::adversary::ByzKind::ForgeSync))
    );
}

#[test]
fn member_list_errors_name_the_entry() {
    let (err, path) = broken(|t| t.replacen("id = 1\n", "id = 2\n", 1));
    assert_field(&err, &path, "members[1].id", "must be 1");
    let (err, path) =
        broken(|t| t.replace("addr = \"127.0.0.1:7002\"", "addr = \"127.0.0.1:7000\""));
    assert_field(&err, &path, "members[2].addr", "also members[0].addr");
    let (err, path) = broken(|t| t.replace("addr = \"127.0.0.1:7003\"", "addr = \"nowhere\""));
    assert_field(&err, &path, "members[3].addr", "not an IP:port");
    let (err, path) =
        broken(|t| t.replace("listen_addr = \"127.0.0.1:7000\"", "listen_addr = \":7\""));
    assert_field(&err, &path, "listen_addr", "not an IP:port");
    let (err, path) = broken(|t| t.replace("node_id = 0", "node_id = 9"));
    assert_field(&err, &path, "node_id", "not among the 4 members");
    let (err, path) = broken(|t| t.replace("cluster_name = \"testnet\"", "cluster_name = \" \""));
    assert_field(&err, &path, "cluster_name", "must not be empty");
}

#[test]
fn bad_public_keys_are_refused() {
    let (err, path) = broken(|t| {
        let k = member_key(&t, 1, "signing_public_key");
        t.replace(&k, &k[..60])
    });
    assert_field(
        &err,
        &path,
        "members[0].signing_public_key",
        "64 hex characters",
    );
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let (err, path) = broken(|t| {
        let k = member_key(&t, 3, "signing_public_key");
        t.replace(&k, &to_hex(&identity))
    });
    assert_field(&err, &path, "members[2].signing_public_key", "weak");
    let (err, path) = broken(|t| {
        let (a, b) = (
            member_key(&t, 2, "signing_public_key"),
            member_key(&t, 4, "signing_public_key"),
        );
        t.replace(&b, &a)
    });
    assert_field(
        &err,
        &path,
        "members[3].signing_public_key",
        "same public key",
    );
    let (err, path) = broken(|t| {
        let k = member_key(&t, 2, "noise_public_key");
        t.replace(&k, &"00".repeat(32))
    });
    assert_field(&err, &path, "members[1].noise_public_key", "small-order");
    let (err, path) = broken(|t| {
        let (a, b) = (
            member_key(&t, 1, "noise_public_key"),
            member_key(&t, 2, "noise_public_key"),
        );
        t.replace(&b, &a)
    });
    assert_field(
        &err,
        &path,
        "members[1].noise_public_key",
        "also members[0]",
    );
}

#[test]
fn client_allow_list_errors() {
    let (err, path) = broken(|t| {
        let start = t.find("allow = [").unwrap();
        let end = t[start..].find("]\n").unwrap() + start + 2;
        format!("{}allow = \"anyone\"\n{}", &t[..start], &t[end..])
    });
    assert_field(&err, &path, "clients.allow", "neither \"any\"");
    let (err, _) = broken(|t| t.replace("allow = [", "allow = 5\nx = ["));
    assert!(
        err.to_string()
            .contains("clients.allow must be \"any\" or a list"),
        "{err}"
    );
    let (err, path) = broken(|t| {
        let client = member_key(&t, 0, "noise_public_key");
        let member = member_key(&t, 1, "noise_public_key");
        t.replacen(&client, &member, 1)
    });
    assert_field(
        &err,
        &path,
        "clients.allow[0].noise_public_key",
        "also a member's",
    );
}

#[test]
fn consensus_and_limits_are_checked() {
    let (err, path) =
        broken(|t| t.replace("[consensus]\n", "[consensus]\nblock_requests_max = 0\n"));
    assert_field(&err, &path, "consensus.block_requests_max", "above zero");
    let (err, path) =
        broken(|t| t.replace("[consensus]\n", "[consensus]\nround_timeout_max_ms = 10\n"));
    assert_field(&err, &path, "consensus.round_timeout_max_ms", "below");
    let (err, path) = broken(|t| {
        t.replace(
            "[consensus]\n",
            "[consensus]\nblock_time_ahead_max_ms = 5\n",
        )
    });
    assert_field(
        &err,
        &path,
        "consensus.block_time_ahead_max_ms",
        "is 5, must be between 100 and 86400000",
    );
    let (err, path) = broken(|t| t.replace("[consensus]\n", "[consensus]\nroot_linger_ms = 126\n"));
    assert_field(
        &err,
        &path,
        "consensus.root_linger_ms",
        "is 126, must be at most a quarter of consensus.round_timeout_base_ms (500 ms)",
    );
    let (err, path) = broken(|t| t.replace("[limits]\n", "[limits]\nconnections_max = 0\n"));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: limits: connections_max must be above zero",
            path.display()
        )
    );
}

#[test]
fn sync_responses_must_fit_a_frame_and_retention_must_cover_the_snapshot_interval() {
    // Two 8 MiB blocks cannot go in one 16 MiB frame (issue 13 item 6).
    let (err, path) = broken(|t| {
        t.replace(
            "[consensus]\n",
            "[consensus]\nblock_bytes_max = 8388608\nmempool_bytes_max = 67108864\n",
        )
    });
    assert_field(
        &err,
        &path,
        "consensus.block_bytes_max",
        "limits.max_frame_bytes",
    );
    let (err, path) = broken(|t| {
        t.replace(
            "[consensus]\n",
            "[consensus]\nsync_response_bytes_max = 16777216\n",
        )
    });
    assert_field(
        &err,
        &path,
        "consensus.sync_response_bytes_max",
        "limits.max_frame_bytes",
    );
    // Blocks kept on disk must outlast a snapshot interval, or a node that falls behind
    // by less than one finds neither blocks nor a newer snapshot.
    let (err, path) = broken(|t| {
        t.replace(
            "[consensus]\n",
            "[consensus]\ncommitted_blocks_retained = 100\n",
        )
        .replace("[node]\n", "[node]\nsnapshot_interval_blocks = 100\n")
    });
    assert_field(
        &err,
        &path,
        "node.snapshot_interval_blocks",
        "consensus.committed_blocks_retained (100",
    );
}

#[test]
fn key_file_problems_name_the_field_and_the_fix() {
    let (_tmp, dir) = testnet(4, 1);
    let path = dir.join("node0.toml");
    let key = dir.join("node0.signing.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_field(&err, &path, "signing_key_path", "chmod 600");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    // Another node's keys: readable, but not this member's.
    fs::copy(dir.join("node1.noise.key"), dir.join("node0.noise.key")).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_field(
        &err,
        &path,
        "noise_key_path",
        "does not match members[0].noise_public_key",
    );
    fs::copy(dir.join("node1.signing.key"), &key).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_field(
        &err,
        &path,
        "signing_key_path",
        "does not match members[0].signing_public_key",
    );
    fs::remove_file(&key).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_field(&err, &path, "signing_key_path", "does not exist");
    fs::write(&key, "xyz").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_field(&err, &path, "signing_key_path", "64 hex");
}

#[test]
fn missing_and_garbage_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nope.toml");
    let err = NodeConfig::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", path.display()))
    );
    for garbage in ["", "=", "[[members]]\nid = 0", "\u{0}\u{1}", "members = 3"] {
        fs::write(&path, garbage).unwrap();
        assert!(NodeConfig::load(&path).is_err(), "{garbage:?}");
    }
}

#[test]
fn testnet_refuses_a_non_empty_dir_without_force() {
    let (_tmp, dir) = testnet(4, 1);
    let mut spec = TestnetSpec {
        nodes: 4,
        faults: 1,
        dir,
        base_port: 7000,
        force: false,
    };
    assert!(write_testnet(&spec).unwrap_err().contains("--force"));
    spec.force = true;
    write_testnet(&spec).unwrap();
    NodeConfig::load(&spec.dir.join("node3.toml")).unwrap();
}

#[test]
fn a_misspelled_consensus_or_limits_field_is_an_error_and_known_ones_apply() {
    for (table, typo) in [
        ("[consensus]", "round_timeout_bse_ms"),
        ("[limits]", "max_frame_byte"),
    ] {
        let (err, _) = broken(|t| t.replacen(table, &format!("{table}\n{typo} = 5"), 1));
        assert!(err.to_string().contains(typo), "{table}: {err}");
    }
    let (_tmp, dir) = testnet(4, 1);
    let path = dir.join("node0.toml");
    let text = fs::read_to_string(&path).unwrap();
    let text = text.replacen("[consensus]", "[consensus]\nround_timeout_base_ms = 250", 1);
    fs::write(&path, text).unwrap();
    let loaded = NodeConfig::load(&path).unwrap();
    assert_eq!(loaded.core_config().round_timeout_base_ms, 250);
    assert_eq!(
        loaded.core_config().round_timeout_max_ms,
        crate::consensus::CoreConfig::default().round_timeout_max_ms
    );
}
