//! Runs the real `bftd` binary: `testnet` writes a cluster whose every file loads, `keygen`
//! writes 0600 key pairs and never replaces one, and a hand-broken config gets the error an
//! operator is promised (file and field named).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use bftd::config::{ClientConfig, NodeConfig};

fn bftd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bftd"))
        .args(args)
        .output()
        .expect("bftd binary runs")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn check_cluster(dir: &Path, n: usize, f: usize) {
    for name in ["client.signing.key", "client.noise.key"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    for i in 0..n {
        for kind in ["signing", "noise"] {
            let key = dir.join(format!("node{i}.{kind}.key"));
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }
        let loaded = NodeConfig::load(&dir.join(format!("node{i}.toml"))).unwrap();
        let committee = loaded.committee();
        assert_eq!((committee.n(), committee.f()), (n, f));
        assert_eq!(loaded.listen_addr.port() as usize, 7000 + i);
        loaded.transport_config().validate().unwrap();
    }
    let client = ClientConfig::load(&dir.join("client.toml")).unwrap();
    assert_eq!(client.committee.n(), n);
}

#[test]
fn testnet_of_4_loads_and_a_broken_f_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let out = bftd(&["testnet", "--nodes", "4", "--dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node3.toml"));
    check_cluster(&dir, 4, 1);

    let path = dir.join("node0.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("f = 1\n", "f = 2\n")).unwrap();
    let err = NodeConfig::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cluster has 4 members but f = 2 needs at least 7",
            path.display()
        )
    );
}

#[test]
fn testnet_of_7_with_2_faults_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net7");
    let d = dir.to_str().unwrap();
    let out = bftd(&["testnet", "--nodes", "7", "--faults", "2", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_cluster(&dir, 7, 2);
}

#[test]
fn testnet_refuses_a_non_empty_dir_and_impossible_f() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    fs::write(tmp.path().join("keep.txt"), "x").unwrap();
    let out = bftd(&["testnet", "--dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = bftd(&["testnet", "--dir", d, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("keep.txt").exists());
    let out = bftd(&[
        "testnet", "--nodes", "4", "--faults", "2", "--dir", d, "--force",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 7"));
}

#[test]
fn keygen_writes_0600_keys_prints_public_keys_and_never_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let out = bftd(&["keygen", "--out", d, "--name", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("signing_public_key = \""), "{stdout}");
    assert!(stdout.contains("noise_public_key = \""), "{stdout}");
    for name in ["alice.signing.key", "alice.noise.key"] {
        assert_eq!(mode(&tmp.path().join(name)), 0o600);
    }
    let before = fs::read(tmp.path().join("alice.signing.key")).unwrap();
    let out = bftd(&["keygen", "--out", d, "--name", "alice"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(
        fs::read(tmp.path().join("alice.signing.key")).unwrap(),
        before
    );
}

#[test]
fn help_is_printed_for_each_command() {
    for cmd in ["keygen", "testnet"] {
        let out = bftd(&[cmd, "--help"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("bftd {cmd}")));
    }
    let out = bftd(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("keygen")
            && help.contains("testnet")
            && help.contains("dev")
            && help.contains("--config")
    );
}
