//! systemd readiness notification (`Type=notify`), the documented protocol without libsystemd:
//! one datagram of newline-separated `KEY=VALUE` lines to the `AF_UNIX` socket named by
//! `NOTIFY_SOCKET`. A name starting with `@` is an abstract socket (Linux).
//!
//! `bftd --config` sends `READY=1` once `Node::start` returned (WALs replayed, port open) and
//! `STOPPING=1` when a stop begins. Without `NOTIFY_SOCKET` (not under systemd) it does
//! nothing. A failed notification is logged, never fatal: the node itself is fine.

use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1"`) if `NOTIFY_SOCKET` is set. `Ok(false)`: not asked to.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    if target.is_empty() {
        return Ok(false);
    }
    send_to(&target, state)?;
    Ok(true)
}

/// Like [`notify`], logging instead of returning a failure.
pub fn notify_logged(state: &str) {
    match notify(state) {
        Ok(true) => log::debug!("told systemd {state}"),
        Ok(false) => {}
        Err(e) => log::warn!("cannot notify systemd ({NOTIFY_SOCKET_ENV}) of {state}: {e}"),
    }
}

fn send_to(target: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = match target.strip_prefix('@') {
        Some(name) => send_abstract(&socket, name, state)?,
        None => socket.send_to(state.as_bytes(), target)?,
    };
    if sent != state.len() {
        return Err(std::io::Error::other("short datagram write"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("bftd-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        assert!(send_to("/nonexistent/bftd/notify.sock", "READY=1").is_err());
    }
}
