//! One authenticated link to one member: dial, Noise handshake, read, write, redial.
//!
//! Each member gets a link thread that loops: dial (`connect_timeout`), run the XX handshake as
//! initiator with the cluster id as prologue, check the node's static key against the
//! configured one *before* sending the last handshake message (so our identity is never
//! revealed to an impostor), then read frames until the link fails. A writer thread per live
//! session drains a bounded queue, so a node that stops reading can never block a caller:
//! when the queue is full the frame is dropped and counted (requests are resent on a timer).
//!
//! Invariants: every received frame is bounded (`FrameDecoder` limit = sealed size of
//! `frame_bytes_max`), opened and decoded without panicking; a frame that fails any check —
//! Noise, decoding, or the client core's protocol check — counts as garbage and closes the
//! link. Redials back off exponentially from `reconnect_backoff_min` to `..._max`; the backoff
//! resets after a session that ended without garbage. Shutdown wakes every sleep and read.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use parking_lot::Mutex;

use crate::net::frame::FrameDecoder;
use crate::net::noise::{
    HANDSHAKE_MESSAGE_BYTES_MAX, Handshake, NoiseError, NoiseLink, sealed_len,
};
use crate::types::ClusterId;
use crate::wire::Refusal;
use crate::wire::client::{NodeFrame, decode_node_frame};

use super::options::{ClientOptions, Endpoint};

/// Sessions in a row that a node closed right after the handshake, before sending one frame,
/// after which the link counts as refused by that node's allow-list. One such close can be a
/// node shutting down at that moment; a second one at once after a fresh handshake cannot.
const SILENT_CLOSES_REFUSED: u32 = 2;

/// Why a link cannot serve requests, when waiting will not fix it: the core fails a request at
/// once when too few links are left without one (see `Core::tick`). Cleared by the next
/// successful dial (for `Refused` and `WrongNode`) or the next frame received (for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Nothing listens at the address (the connection was refused).
    Refused,
    /// Whoever listens there is not this member of this cluster: the handshake does not
    /// decrypt under this cluster's id, or the node proved another noise key.
    WrongNode,
    /// The node closes every session right after the handshake: this client's noise key is
    /// not on its allow-list.
    NotAuthorised,
}

/// What the link reports to the client core. `frame` returns `Err(why)` for a frame that
/// breaks the protocol (e.g. a reply addressed to another client): the link is then closed.
pub(crate) trait LinkEvents: Send + Sync + 'static {
    fn link_up(&self, node: usize);
    fn frame(&self, node: usize, frame: NodeFrame) -> Result<(), String>;
}

/// Counters of one link, for `Client::links()` and tests.
#[derive(Default, Debug)]
pub(crate) struct LinkCounters {
    pub sessions: AtomicU64,
    pub dial_failures: AtomicU64,
    pub garbage: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub frames_dropped: AtomicU64,
}

/// A copy of one link's state and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkReport {
    pub node: crate::types::NodeId,
    pub addr: std::net::SocketAddr,
    pub connected: bool,
    /// Why the link is down, or was last closed ("" before any failure).
    pub last_error: String,
    /// Handshakes completed (1 + reconnects).
    pub sessions: u64,
    pub dial_failures: u64,
    /// Frames from this node that failed a check; each one closed the link.
    pub garbage_frames: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames not queued because this node's writer queue was full.
    pub frames_dropped: u64,
}

struct Session {
    queue: Sender<Vec<u8>>,
    stream: TcpStream,
}

/// The part of a link other threads touch.
pub(crate) struct Link {
    pub endpoint: Endpoint,
    session: Mutex<Option<Session>>,
    last_error: Mutex<String>,
    fault: Mutex<Option<Fault>>,
    /// Sessions in a row closed by the node before it sent a frame.
    silent_closes: std::sync::atomic::AtomicU32,
    counters: LinkCounters,
}

impl Link {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            session: Mutex::new(None),
            last_error: Mutex::new(String::new()),
            fault: Mutex::new(None),
            silent_closes: std::sync::atomic::AtomicU32::new(0),
            counters: LinkCounters::default(),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.session.lock().is_some()
    }

    /// Queues one plaintext frame; false if the link is down or its queue is full.
    pub(crate) fn send(&self, frame: &[u8]) -> bool {
        let session = self.session.lock();
        let Some(s) = session.as_ref() else {
            return false;
        };
        match s.queue.try_send(frame.to_vec()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Why this link cannot serve requests for now, if waiting will not fix it.
    pub(crate) fn fault(&self) -> Option<Fault> {
        *self.fault.lock()
    }

    /// "connected", or why not, for error messages.
    pub(crate) fn describe(&self) -> String {
        let fault = self.fault();
        if self.is_up() && fault.is_none() {
            return "connected".into();
        }
        let err = self.last_error.lock();
        match fault {
            // Already a sentence that names the cause.
            Some(Fault::NotAuthorised | Fault::WrongNode) => err.clone(),
            _ if err.is_empty() => "not connected yet".into(),
            _ => format!("unreachable: {err}"),
        }
    }

    pub(crate) fn report(&self) -> LinkReport {
        let c = &self.counters;
        // The count before the error, with Acquire: a report that counts a garbage frame also
        // carries the error it set (see `count`).
        let garbage_frames = c.garbage.load(Ordering::Acquire);
        LinkReport {
            node: self.endpoint.id,
            addr: self.endpoint.addr,
            connected: self.is_up(),
            last_error: self.last_error.lock().clone(),
            sessions: c.sessions.load(Ordering::Relaxed),
            dial_failures: c.dial_failures.load(Ordering::Relaxed),
            garbage_frames,
            frames_in: c.frames_in.load(Ordering::Relaxed),
            frames_out: c.frames_out.load(Ordering::Relaxed),
            frames_dropped: c.frames_dropped.load(Ordering::Relaxed),
        }
    }

    /// Records a fault and its reason, the reason first so a reader that sees the fault also
    /// sees why; returns the reason.
    fn set_fault(&self, fault: Fault, why: String) -> String {
        *self.last_error.lock() = why.clone();
        *self.fault.lock() = Some(fault);
        why
    }

    /// A handshake completed: whoever listens is this member, so only an allow-list refusal
    /// (seen after the handshake) can still stand.
    fn dialled(&self) {
        let mut fault = self.fault.lock();
        if *fault != Some(Fault::NotAuthorised) {
            *fault = None;
        }
    }

    /// Notes how a session ended: a node that sent frames is fine, one that closed a fresh
    /// session before saying anything, `SILENT_CLOSES_REFUSED` times in a row, refuses us.
    fn session_ended(&self, end: End, silent: bool) -> End {
        let End::Closed(why) = end else {
            return end;
        };
        if !silent {
            self.silent_closes.store(0, Ordering::Relaxed);
            *self.fault.lock() = None;
            return End::Closed(why);
        }
        let closes = self.silent_closes.fetch_add(1, Ordering::Relaxed) + 1;
        if closes < SILENT_CLOSES_REFUSED {
            return End::Closed(why);
        }
        let why = format!(
            "not authorised: the node closed {closes} sessions in a row right after the \
             handshake ({why}), which is what it does to a client whose noise key is not on \
             its allow-list ([clients] allow in its config)"
        );
        End::Closed(self.set_fault(Fault::NotAuthorised, why))
    }

    /// Closes the live session, if any, which wakes its reader.
    pub(crate) fn close(&self) {
        if let Some(s) = self.session.lock().take() {
            let _ = s.stream.shutdown(Shutdown::Both);
        }
    }
}

/// What the link thread needs besides the [`Link`].
pub(crate) struct LinkContext {
    pub node: usize,
    pub cluster: ClusterId,
    pub noise_secret: [u8; 32],
    pub options: ClientOptions,
    pub shutdown: Arc<AtomicBool>,
    /// Closed (dropped) on shutdown: wakes backoff sleeps at once.
    pub shutdown_rx: Receiver<()>,
}

/// How a session ended.
enum End {
    /// The node closed, an I/O error, or shutdown: not the node's fault as far as we know.
    Closed(String),
    /// The node sent something that failed a check.
    Garbage(String),
}

/// Spawns the link thread of `link`.
pub(crate) fn spawn(
    link: Arc<Link>,
    ctx: LinkContext,
    events: Arc<dyn LinkEvents>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("client-link-{}", ctx.node))
        .spawn(move || run(&link, &ctx, &*events))
}

fn run(link: &Link, ctx: &LinkContext, events: &dyn LinkEvents) {
    let mut backoff = ctx.options.reconnect_backoff_min;
    while !ctx.shutdown.load(Ordering::Acquire) {
        let (end, established) = match dial(link, ctx) {
            Ok((stream, noise, decoder)) => {
                link.dialled();
                let frames_before = link.counters.frames_in.load(Ordering::Relaxed);
                let end = session(link, ctx, events, stream, noise, decoder);
                let silent = link.counters.frames_in.load(Ordering::Relaxed) == frames_before;
                (link.session_ended(end, silent), true)
            }
            Err(why) => {
                link.counters.dial_failures.fetch_add(1, Ordering::Relaxed);
                (End::Closed(why), false)
            }
        };
        let (why, garbage) = match end {
            End::Closed(why) => (why, false),
            End::Garbage(why) => (why, true),
        };
        if ctx.shutdown.load(Ordering::Acquire) {
            break;
        }
        log::debug!("client: link to {} down: {why}", link.endpoint.id);
        *link.last_error.lock() = why;
        if established && !garbage {
            backoff = ctx.options.reconnect_backoff_min;
        }
        // Returns at once when the shutdown sender is dropped.
        let _ = ctx.shutdown_rx.recv_timeout(backoff);
        backoff = (backoff * 2).min(ctx.options.reconnect_backoff_max);
    }
    link.close();
}

/// Dials and runs the handshake; on success the stream is ready for transport frames.
fn dial(link: &Link, ctx: &LinkContext) -> Result<(TcpStream, NoiseLink, FrameDecoder), String> {
    let addr = link.endpoint.addr;
    let mut stream =
        TcpStream::connect_timeout(&addr, ctx.options.connect_timeout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                let why = format!("connect {addr}: connection refused (is the node running?)");
                link.set_fault(Fault::Refused, why)
            } else {
                format!("connect {addr}: {e}")
            }
        })?;
    let setup = |s: &TcpStream| -> std::io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(ctx.options.io_timeout))?;
        s.set_write_timeout(Some(ctx.options.io_timeout))
    };
    setup(&stream).map_err(|e| format!("socket setup: {e}"))?;
    let mut decoder = FrameDecoder::new(HANDSHAKE_MESSAGE_BYTES_MAX);
    let mut pending = Vec::new();
    let noise = handshake(link, ctx, &mut stream, &mut decoder, &mut pending)?;
    if !pending.is_empty() {
        // The node speaks only after our last handshake message: early bytes break the protocol.
        return Err("node sent data before the handshake finished".into());
    }
    decoder.set_limit_bytes(sealed_len(ctx.options.frame_bytes_max));
    stream
        .set_read_timeout(None)
        .map_err(|e| format!("socket setup: {e}"))?;
    Ok((stream, noise, decoder))
}

fn handshake(
    link: &Link,
    ctx: &LinkContext,
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    pending: &mut Vec<u8>,
) -> Result<NoiseLink, String> {
    let noise_err = |e: crate::net::noise::NoiseError| format!("handshake: {e}");
    let mut hs = Handshake::initiator(&ctx.noise_secret, &ctx.cluster.0).map_err(noise_err)?;
    let mut out = Vec::new();
    hs.write_message(&mut out).map_err(noise_err)?;
    stream
        .write_all(&out)
        .map_err(|e| format!("handshake: {e}"))?;
    let msg = read_frame(stream, decoder, pending).map_err(|e| match e {
        End::Closed(why) | End::Garbage(why) => format!("handshake: {why}"),
    })?;
    hs.read_message(&msg).map_err(|e| {
        if matches!(e, NoiseError::Snow(snow::Error::Decrypt)) {
            // The prologue (the cluster id) is mixed into what the node's second message is
            // encrypted under: a node of another cluster is the one way a well-formed
            // message fails to decrypt.
            let why = format!(
                "the node at {} belongs to another cluster: its handshake does not decrypt \
                 under this cluster's name (check cluster_name in the client config)",
                link.endpoint.addr
            );
            link.set_fault(Fault::WrongNode, why)
        } else {
            noise_err(e)
        }
    })?;
    if hs.remote_static() != Some(link.endpoint.noise_public_key) {
        let why = format!(
            "the node at {} is not {} of this cluster: it proved another noise key than the \
             client config lists; refusing it",
            link.endpoint.addr, link.endpoint.id
        );
        return Err(link.set_fault(Fault::WrongNode, why));
    }
    out.clear();
    hs.write_message(&mut out).map_err(noise_err)?;
    stream
        .write_all(&out)
        .map_err(|e| format!("handshake: {e}"))?;
    hs.into_link().map_err(noise_err)
}

/// Reads until one whole frame is in; bytes after it stay in `pending`.
fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    pending: &mut Vec<u8>,
) -> Result<Vec<u8>, End> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut input = &pending[..];
        let fed = decoder
            .feed(&mut input)
            .map_err(|e| End::Garbage(e.to_string()))?;
        let used = pending.len() - input.len();
        pending.drain(..used);
        if let Some(frame) = fed {
            return Ok(frame);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(End::Closed("closed by the node".into())),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(End::Closed(e.to_string())),
        }
    }
}

/// Runs one established session until it fails.
fn session(
    link: &Link,
    ctx: &LinkContext,
    events: &dyn LinkEvents,
    stream: TcpStream,
    noise: NoiseLink,
    mut decoder: FrameDecoder,
) -> End {
    let started = Instant::now();
    let noise = Arc::new(Mutex::new(noise));
    let (queue, rx) = bounded(ctx.options.link_queue_frames_max);
    let (writer_stream, closer) = match (stream.try_clone(), stream.try_clone()) {
        (Ok(w), Ok(c)) => (w, c),
        (Err(e), _) | (_, Err(e)) => return End::Closed(format!("socket clone: {e}")),
    };
    let writer = {
        let noise = Arc::clone(&noise);
        let frames_out = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&frames_out);
        let handle = std::thread::Builder::new()
            .name(format!("client-write-{}", ctx.node))
            .spawn(move || write_loop(writer_stream, &noise, &rx, &counter));
        match handle {
            Ok(h) => (h, frames_out),
            Err(e) => return End::Closed(format!("spawning the writer: {e}")),
        }
    };
    *link.session.lock() = Some(Session {
        queue,
        stream: closer,
    });
    link.counters.sessions.fetch_add(1, Ordering::Relaxed);
    log::debug!("client: link to {} up", link.endpoint.id);
    events.link_up(ctx.node);
    let end = read_loop(link, ctx, events, stream, &noise, &mut decoder);
    link.close(); // drops the queue sender, so the writer exits
    let (handle, frames_out) = writer;
    let _ = handle.join();
    link.counters
        .frames_out
        .fetch_add(frames_out.load(Ordering::Relaxed), Ordering::Relaxed);
    log::debug!(
        "client: session with {} lasted {:?}",
        link.endpoint.id,
        started.elapsed()
    );
    end
}

fn write_loop(
    mut stream: TcpStream,
    noise: &Mutex<NoiseLink>,
    rx: &Receiver<Vec<u8>>,
    frames_out: &AtomicU64,
) {
    let mut out = Vec::new();
    while let Ok(plain) = rx.recv() {
        out.clear();
        // Seal under the lock, write outside it: only this thread writes, so the nonce order
        // matches the byte order on the wire.
        if noise.lock().seal(&plain, &mut out).is_err() || stream.write_all(&out).is_err() {
            let _ = stream.shutdown(Shutdown::Both); // wakes the reader, which ends the session
            return;
        }
        frames_out.fetch_add(1, Ordering::Relaxed);
    }
}

fn read_loop(
    link: &Link,
    ctx: &LinkContext,
    events: &dyn LinkEvents,
    mut stream: TcpStream,
    noise: &Mutex<NoiseLink>,
    decoder: &mut FrameDecoder,
) -> End {
    let mut pending = Vec::new();
    loop {
        if ctx.shutdown.load(Ordering::Acquire) {
            return End::Closed("client shut down".into());
        }
        let wire = match read_frame(&mut stream, decoder, &mut pending) {
            Ok(w) => w,
            Err(end) => return count(link, end),
        };
        let plain = match noise.lock().open(&wire) {
            Ok(p) => p,
            Err(e) => return count(link, End::Garbage(e.to_string())),
        };
        let frame = match decode_node_frame(&plain) {
            Ok(f) => f,
            Err(e) => return count(link, End::Garbage(format!("undecodable frame: {e}"))),
        };
        if let NodeFrame::LinkRefused { reason } = frame {
            return End::Closed(link.set_fault(Fault::NotAuthorised, refused_why(reason)));
        }
        link.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        if let Err(why) = events.frame(ctx.node, frame) {
            return count(link, End::Garbage(why));
        }
    }
}

/// The error for a node's `LinkRefused` frame.
fn refused_why(reason: Refusal) -> String {
    match reason {
        Refusal::NotAuthorised => {
            "not authorised: the node refused this client's noise key: it is \
             not on its allow-list ([clients] allow in its config)"
                .into()
        }
        Refusal::Busy => "the node refused the link: busy".into(),
        Refusal::Invalid => "the node refused the link: invalid".into(),
    }
}

/// Records a garbage frame: the error first, then the counter (Release), so whoever sees the
/// count also sees why (a test once read the counter before the error was set).
fn count(link: &Link, end: End) -> End {
    if let End::Garbage(why) = &end {
        log::warn!(
            "client: {} sent garbage, closing the link: {why}",
            link.endpoint.id
        );
        let why = format!("garbage from the node: {why}");
        *link.last_error.lock() = why.clone();
        link.counters.garbage.fetch_add(1, Ordering::Release);
        return End::Garbage(why);
    }
    end
}
