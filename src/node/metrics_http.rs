//! The optional metrics listener (`[node] metrics_addr`): a tiny HTTP/1.0-style server on one
//! thread with a blocking `std` socket, serving `GET /metrics` (Prometheus text) and
//! `GET /health` (200 or 503 with a JSON body saying why).
//!
//! Bounded by construction: one connection at a time, a request head of at most
//! [`REQUEST_BYTES_MAX`] read within [`REQUEST_DEADLINE`], one reply, then the connection is
//! closed. Requests are outside input: anything malformed gets a 400, an unknown path 404,
//! another method 405, an oversized head 431 — never a panic. The listener is polled
//! (non-blocking accept, [`ACCEPT_POLL`] sleeps) so the thread sees the stop flag.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics::MetricsSources;

/// Largest request head (request line and headers) read; beyond it the answer is 431.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Time a client has to send its whole request head, and to take the reply.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// After replying, what is still read and discarded (and for how long) before closing, so a
/// client that sent more than was read gets the reply instead of a reset.
const DRAIN_BYTES_MAX: usize = 64 * 1024;
const DRAIN_DEADLINE: Duration = Duration::from_millis(500);
/// How often the idle listener looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// A running metrics listener; dropping it stops the thread.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, sources: MetricsSources) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bftd-metrics".into())
            .spawn(move || serve(listener, sources, flag))?;
        Ok(Self {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, sources: MetricsSources, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, &sources) {
                    log::debug!("metrics connection: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                log::warn!("metrics listener: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// One parsed answer: status code, reason, content type, body.
struct Response {
    code: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(code: u16, reason: &'static str, body: &str) -> Self {
        Self {
            code,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }
}

fn handle(mut stream: TcpStream, sources: &MetricsSources) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let response = match read_head(&mut stream) {
        Ok(head) => route(&head, sources),
        Err(HeadError::TooLarge) => Response::text(
            431,
            "Request Header Fields Too Large",
            "request head too large",
        ),
        Err(HeadError::Malformed) => Response::text(400, "Bad Request", "bad request"),
        Err(HeadError::Io(e)) => return Err(e),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.code,
        response.reason,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)?;
    drain(&mut stream);
    Ok(())
}

/// Reads and drops what the client still sends, bounded by [`DRAIN_BYTES_MAX`] and
/// [`DRAIN_DEADLINE`]: closing with unread data would reset the connection and could discard
/// the reply before the client read it.
fn drain(stream: &mut TcpStream) {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    let mut drained = 0usize;
    while drained < DRAIN_BYTES_MAX {
        let Some(left) = DRAIN_DEADLINE
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

enum HeadError {
    TooLarge,
    Malformed,
    Io(std::io::Error),
}

/// Reads up to the blank line ending the request head, within the size and time limits.
fn read_head(stream: &mut TcpStream) -> Result<String, HeadError> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = REQUEST_DEADLINE
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or(HeadError::Malformed)?;
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Malformed),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HeadError::Malformed);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| HeadError::Malformed);
        }
        if buf.len() > REQUEST_BYTES_MAX {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .filter(|&end| end <= REQUEST_BYTES_MAX)
}

fn route(head: &str, sources: &MetricsSources) -> Response {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "bad request line");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "Bad Request", "unsupported HTTP version");
    }
    if method != "GET" {
        return Response::text(405, "Method Not Allowed", "only GET is served");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => Response {
            code: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: sources.render(),
        },
        "/health" => {
            let health = sources.health();
            let (code, reason) = if health.healthy {
                (200, "OK")
            } else {
                (503, "Service Unavailable")
            };
            Response {
                code,
                reason,
                content_type: "application/json",
                body: health.json,
            }
        }
        _ => Response::text(404, "Not Found", "not found; try /metrics or /health"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_is_found_with_either_line_ending() {
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\nxx"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n"), None);
    }
}
