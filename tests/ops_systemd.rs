//! Operations: the systemd side of a node. A real `bftd --config` process with `NOTIFY_SOCKET`
//! pointing at a socket this test listens on reports `READY=1` only once its port accepts
//! connections, and `STOPPING=1` on SIGTERM before it exits 0 (path and abstract sockets).
//! And `tools/systemd/bftd@.service` passes `systemd-analyze verify` (skipped, saying so, when
//! the tool is missing; `.ci/run` installs it).

#[path = "cluster_support.rs"]
mod support;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn spawn_with_notify(net: &Testnet, notify_socket: &str) -> Child {
    let log = std::fs::File::create(net.log_path(0)).expect("node log");
    Command::new(bftd_bin())
        .arg("--config")
        .arg(net.config(0))
        .env("NOTIFY_SOCKET", notify_socket)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn bftd")
}

fn recv_text(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification before the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        assert!(start.elapsed() < DEADLINE, "bftd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One node of a 4-node testnet (it needs no peers to listen): READY after the port is open,
/// STOPPING on SIGTERM, exit 0.
fn ready_and_stopping(socket: &UnixDatagram, notify_socket: &str) {
    let net = Testnet::new(4, "", "");
    let mut child = spawn_with_notify(&net, notify_socket);
    let ready = recv_text(socket);
    assert_eq!(
        ready.lines().collect::<Vec<_>>(),
        ["READY=1"],
        "first notification"
    );
    TcpStream::connect_timeout(&net.addr(0), Duration::from_secs(5))
        .expect("the node accepts connections once it said READY=1");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(recv_text(socket), "STOPPING=1");
    let code = wait_exit(&mut child);
    if code != Some(0) {
        dump_logs(&net);
    }
    assert_eq!(code, Some(0), "clean stop after SIGTERM");
}

#[test]
fn notifies_ready_then_stopping_on_a_path_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    ready_and_stopping(&socket, path.to_str().expect("utf-8 path"));
}

#[cfg(target_os = "linux")]
#[test]
fn notifies_ready_then_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("bftd-ops-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
    ready_and_stopping(&socket, &format!("@{name}"));
}

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd/bftd@.service")
}

/// The settings the brief and the README promise, checked on the file as shipped.
#[test]
fn unit_has_the_promised_settings() {
    let text = std::fs::read_to_string(unit_path()).expect("read the unit");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "ExecStart=/usr/local/bin/bftd --config /etc/bftd/%i.toml",
        "User=bftd",
        "StateDirectory=bftd/%i",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/bftd",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(lines.contains(&want), "the unit lacks `{want}`");
    }
    let stop_s: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec=<seconds>");
    assert!(stop_s >= 60, "a clean stop may need a slow fsync or two");
}

/// `systemd-analyze verify` on an instance of the unit. The shipped `ExecStart` binary
/// (/usr/local/bin/bftd) is not installed on a build machine, so the copy verified points at
/// the freshly built binary instead; everything else is verified as shipped. `verify` does not
/// check that `User=` exists, and it reports unknown keys on stderr with exit 0, so any
/// stderr line about the unit fails the test too.
#[test]
fn unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "SKIPPED unit_passes_systemd_analyze_verify: systemd-analyze is not installed \
             (apt-get install systemd; .ci/run does this)"
        );
        return;
    };
    eprintln!(
        "verifying with {}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(unit_path()).expect("read the unit");
    let bin = bftd_bin();
    let text = text.replace("/usr/local/bin/bftd", bin.to_str().expect("utf-8 path"));
    let instance = dir.path().join("bftd@node0.service");
    std::fs::write(&instance, text).expect("write the instance");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("bftd@")).collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze said about other units (ignored):\n{stderr}");
    }
}
