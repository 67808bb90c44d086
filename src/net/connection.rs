//! One TCP connection: its socket, frame decoder, bounded write buffer and Noise phase.
//!
//! Invariants: bytes are fed to the decoder in arrival order, and the decoder's limit switches
//! from the handshake limit to the application limit right after the handshake's last frame,
//! before the next header is read. Nothing is delivered before the handshake finished and the
//! remote's key passed the allow-list. At most one received frame waits for room in the inbound
//! channel (`pending`), and at most one socket read waits behind it (`unfed`): while either is
//! non-empty the connection reads nothing more, which pushes back on the sender through TCP.
//! The write buffer holds at most `write_buffer_bytes_max` (plus the small handshake messages).
//! A partly received frame is timed from its first byte (`frame_started`), and what a client's
//! partial frame holds beyond `BODY_RESERVE_BYTES_MAX` is charged to the loop-wide budget
//! (`charged_bytes` is this connection's share, always equal to what the budget counts).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use mio::net::TcpStream;

use crate::types::NodeId;

use super::auth::KeyDirectory;
use super::envelope::{Inbound, Remote};
use super::frame::{BODY_RESERVE_BYTES_MAX, FRAME_HEADER_BYTES, FrameDecoder};
use super::inbound_queue::InboundQueue;
use super::noise::{HANDSHAKE_MESSAGE_BYTES_MAX, Handshake, NoiseLink, sealed_len};
use super::stats::{NetCounters, RejectReason, bump};

/// Where a connection is in its life.
pub(crate) enum Phase {
    Handshaking {
        hs: Box<Handshake>,
        /// The peer we dialled, or `None` for an inbound connection.
        dialled: Option<NodeId>,
        deadline: Instant,
    },
    Established {
        link: Box<NoiseLink>,
        remote: Remote,
    },
    /// Transient, while the handshake state moves into the link; never seen between calls.
    Switching,
}

/// Why a connection must close.
#[derive(Debug)]
pub(crate) enum Close {
    Eof,
    Io(io::Error),
    Reject(RejectReason),
    /// A newer authenticated link to the same peer took over, or a client key holds too many.
    Replaced,
    /// The inbound channel's receiver is gone: the node is shutting down.
    ReceiverGone,
}

/// How a call to [`Connection::pump`] ended.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// The socket has no more bytes for now.
    Drained,
    /// The per-event read budget is spent; call again later.
    BudgetSpent,
    /// The inbound channel is full; call again when it may have room.
    Paused,
    /// The handshake just finished as this remote; register it, then call again.
    Established(Remote),
    Closed(Close),
}

/// What a pump needs from the event loop, borrowed for one call.
pub(crate) struct PumpCtx<'a> {
    pub scratch: &'a mut [u8],
    pub keys: &'a KeyDirectory,
    pub inbound: &'a mut InboundQueue,
    pub counters: &'a NetCounters,
    pub max_frame_bytes: usize,
    pub client_frame_bytes_max: usize,
    pub read_bytes_per_event_max: usize,
    /// Bytes charged by all connections' partial client frames, and its limit.
    pub partial_bytes: &'a mut usize,
    pub partial_bytes_max: usize,
}

pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) phase: Phase,
    /// An outbound connect not yet confirmed; writes wait for it.
    pub(crate) connecting: bool,
    decoder: FrameDecoder,
    write_buf: Vec<u8>,
    write_pos: usize,
    pending: Option<Inbound>,
    unfed: Vec<u8>,
    unfed_pos: usize,
    /// When the frame now partly received began; `None` between frames.
    frame_started: Option<Instant>,
    /// This connection's share of `PumpCtx::partial_bytes`.
    charged_bytes: usize,
}

impl Connection {
    /// A connection whose handshake starts now; a dialler queues the first message at once.
    pub(crate) fn new(
        stream: TcpStream,
        mut hs: Handshake,
        dialled: Option<NodeId>,
        deadline: Instant,
    ) -> Result<Self, Close> {
        let mut write_buf = Vec::new();
        if dialled.is_some() {
            hs.write_message(&mut write_buf)
                .map_err(|_| Close::Reject(RejectReason::HandshakeFailed))?;
        }
        Ok(Self {
            stream,
            phase: Phase::Handshaking {
                hs: Box::new(hs),
                dialled,
                deadline,
            },
            connecting: dialled.is_some(),
            decoder: FrameDecoder::new(HANDSHAKE_MESSAGE_BYTES_MAX),
            write_buf,
            write_pos: 0,
            pending: None,
            unfed: Vec::new(),
            unfed_pos: 0,
            frame_started: None,
            charged_bytes: 0,
        })
    }

    /// Renames an established link's remote (the event loop numbers client links).
    pub(crate) fn set_remote(&mut self, new: Remote) {
        if let Phase::Established { remote, .. } = &mut self.phase {
            *remote = new;
        }
    }

    pub(crate) fn remote(&self) -> Option<Remote> {
        match &self.phase {
            Phase::Established { remote, .. } => Some(*remote),
            _ => None,
        }
    }

    pub(crate) fn handshake_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Handshaking { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// When the partly received frame must be complete, given the frame timeout.
    pub(crate) fn frame_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.frame_started.map(|t| t + timeout)
    }

    /// Bytes this connection holds in the loop-wide partial-frame budget; the loop subtracts
    /// them when it closes the connection.
    pub(crate) fn charged_bytes(&self) -> usize {
        self.charged_bytes
    }

    pub(crate) fn dialled(&self) -> Option<NodeId> {
        match &self.phase {
            Phase::Handshaking { dialled, .. } => *dialled,
            _ => None,
        }
    }

    /// Seals and queues one application frame, unless it would overflow the write buffer.
    /// Returns false when the frame was not queued (caller counts the drop).
    pub(crate) fn queue_frame(&mut self, plain: &[u8], write_buffer_bytes_max: usize) -> bool {
        let Phase::Established { link, .. } = &mut self.phase else {
            return false;
        };
        let wire_bytes = FRAME_HEADER_BYTES + sealed_len(plain.len());
        if self.write_buf.len() - self.write_pos + wire_bytes > write_buffer_bytes_max {
            return false;
        }
        // Sealing our own bytes with an established state fails only on nonce exhaustion
        // (2^64 messages); treat it as a full buffer rather than crash the net thread.
        link.seal(plain, &mut self.write_buf).is_ok()
    }

    /// Writes queued bytes until the buffer is empty or the socket would block.
    pub(crate) fn flush(&mut self) -> Result<(), Close> {
        if self.connecting {
            return Ok(());
        }
        while self.write_pos < self.write_buf.len() {
            match self.stream.write(&self.write_buf[self.write_pos..]) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => self.write_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
        if self.write_pos == self.write_buf.len() {
            self.write_buf.clear();
            self.write_pos = 0;
        } else if self.write_pos > self.write_buf.len() / 2 {
            // Compact so the buffer's footprint tracks the backlog, not the history.
            self.write_buf.drain(..self.write_pos);
            self.write_pos = 0;
        }
        Ok(())
    }

    /// On a writable event of a dialled socket: confirms the connect (or reports its failure).
    pub(crate) fn confirm_connect(&mut self) -> Result<(), Close> {
        if !self.connecting {
            return Ok(());
        }
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            return Err(Close::Io(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connecting = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(Close::Io(e)),
        }
    }

    /// Delivers what is waiting, then reads and handles frames until something stops it.
    pub(crate) fn pump(&mut self, ctx: &mut PumpCtx<'_>) -> Pumped {
        let mut read_bytes = 0usize;
        loop {
            if let Some(msg) = self.pending.take() {
                match ctx.inbound.try_send(msg) {
                    Ok(()) => {}
                    Err(TrySendError::Full(msg)) => {
                        self.pending = Some(msg);
                        return Pumped::Paused;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Pumped::Closed(Close::ReceiverGone);
                    }
                }
            }
            if let Some(stop) = self.feed_unfed(ctx) {
                return stop;
            }
            if self.connecting {
                return Pumped::Drained;
            }
            if read_bytes >= ctx.read_bytes_per_event_max {
                return Pumped::BudgetSpent;
            }
            match self.stream.read(ctx.scratch) {
                Ok(0) => return Pumped::Closed(Close::Eof),
                Ok(n) => {
                    read_bytes += n;
                    self.unfed.clear();
                    self.unfed.extend_from_slice(&ctx.scratch[..n]);
                    self.unfed_pos = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pumped::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Pumped::Closed(Close::Io(e)),
            }
        }
    }

    /// Feeds `unfed` to the decoder and handles each frame; `Some` when pumping must stop.
    fn feed_unfed(&mut self, ctx: &mut PumpCtx<'_>) -> Option<Pumped> {
        while self.unfed_pos < self.unfed.len() {
            let mut input = &self.unfed[self.unfed_pos..];
            let before = input.len();
            let fed = self.decoder.feed(&mut input);
            self.unfed_pos += before - input.len();
            if let Err(close) = self.account_partial(ctx) {
                return Some(Pumped::Closed(close));
            }
            let frame = match fed {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(_) => return Some(Pumped::Closed(Close::Reject(RejectReason::OversizeFrame))),
            };
            match self.on_frame(frame, ctx) {
                Ok(None) => {}
                Ok(Some(remote)) => return Some(Pumped::Established(remote)),
                Err(close) => return Some(Pumped::Closed(close)),
            }
            if self.pending.is_some() {
                return Some(Pumped::Paused);
            }
        }
        None
    }

    /// Times the frame in progress and charges a client's partial frame to the budget.
    fn account_partial(&mut self, ctx: &mut PumpCtx<'_>) -> Result<(), Close> {
        if self.decoder.is_idle() {
            self.frame_started = None;
        } else if self.frame_started.is_none() {
            self.frame_started = Some(Instant::now());
        }
        // Peer links are one per member, each bounded by `max_frame_bytes`.
        let charge = if matches!(self.remote(), Some(Remote::Peer(_))) {
            0
        } else {
            self.decoder
                .body_capacity_bytes()
                .saturating_sub(BODY_RESERVE_BYTES_MAX)
        };
        *ctx.partial_bytes = *ctx.partial_bytes - self.charged_bytes + charge;
        self.charged_bytes = charge;
        if charge > 0 && *ctx.partial_bytes > ctx.partial_bytes_max {
            return Err(Close::Reject(RejectReason::MemoryBudget));
        }
        Ok(())
    }

    /// Handles one complete frame; returns the remote when this frame finished the handshake.
    fn on_frame(&mut self, frame: Vec<u8>, ctx: &mut PumpCtx<'_>) -> Result<Option<Remote>, Close> {
        let (link, remote) = match &mut self.phase {
            Phase::Established { link, remote } => (link, *remote),
            Phase::Handshaking { .. } => return self.on_handshake_frame(&frame, ctx),
            // Only left behind by a failed switch, after which the connection is closed.
            Phase::Switching => return Err(Close::Reject(RejectReason::HandshakeFailed)),
        };
        let bytes = link
            .open(&frame)
            .map_err(|_| Close::Reject(RejectReason::Garbage))?;
        count_in(ctx.counters, remote, bytes.len());
        let msg = Inbound {
            from: remote,
            bytes,
        };
        match ctx.inbound.try_send(msg) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(msg)) => {
                self.pending = Some(msg);
                Ok(None)
            }
            Err(TrySendError::Disconnected(_)) => Err(Close::ReceiverGone),
        }
    }

    fn on_handshake_frame(
        &mut self,
        frame: &[u8],
        ctx: &mut PumpCtx<'_>,
    ) -> Result<Option<Remote>, Close> {
        let Phase::Handshaking { hs, dialled, .. } = &mut self.phase else {
            unreachable!("called only while handshaking");
        };
        let failed = |_| Close::Reject(RejectReason::HandshakeFailed);
        hs.read_message(frame).map_err(failed)?;
        let dialled = *dialled;
        // A dialler checks the responder's key before revealing its own in the last message.
        let identify = |hs: &Handshake| -> Result<Remote, Close> {
            let key = hs
                .remote_static()
                .ok_or(Close::Reject(RejectReason::HandshakeFailed))?;
            match dialled {
                Some(id) => ctx.keys.check_dialled(id, &key),
                None => ctx.keys.identify_inbound(&key),
            }
            .map_err(Close::Reject)
        };
        if dialled.is_some() && hs.remote_static().is_some() {
            identify(hs)?;
        }
        if hs.is_my_turn() && !hs.is_finished() {
            hs.write_message(&mut self.write_buf).map_err(failed)?;
        }
        if !hs.is_finished() {
            return Ok(None);
        }
        let remote = match identify(hs) {
            Err(Close::Reject(RejectReason::UnknownKey)) if dialled.is_none() => {
                self.send_refusal(ctx.keys.refusal_notice());
                return Err(Close::Reject(RejectReason::UnknownKey));
            }
            identified => identified?,
        };
        let Phase::Handshaking { hs, .. } = std::mem::replace(&mut self.phase, Phase::Switching)
        else {
            unreachable!("matched above");
        };
        let link = hs.into_link().map_err(failed)?;
        self.phase = Phase::Established {
            link: Box::new(link),
            remote,
        };
        // A client never needs more than the largest valid request.
        let frame_bytes_max = match remote {
            Remote::Peer(_) => ctx.max_frame_bytes,
            Remote::Client(_) => ctx.client_frame_bytes_max,
        };
        self.decoder.set_limit_bytes(sealed_len(frame_bytes_max));
        Ok(Some(remote))
    }
}

impl Connection {
    /// Seals `notice` on the just-finished handshake and writes it without waiting (a
    /// fresh socket's send buffer takes a small frame whole); the caller closes the link
    /// next. Best effort: a failure only means the remote learns nothing, as before.
    fn send_refusal(&mut self, notice: Option<&[u8]>) {
        let Some(notice) = notice else {
            return;
        };
        let Phase::Handshaking { hs, .. } = std::mem::replace(&mut self.phase, Phase::Switching)
        else {
            return;
        };
        let Ok(mut link) = hs.into_link() else {
            return;
        };
        if link.seal(notice, &mut self.write_buf).is_ok() {
            let _ = self.flush();
        }
    }
}

fn count_in(counters: &NetCounters, remote: Remote, len_bytes: usize) {
    match remote {
        Remote::Peer(id) => {
            if let Some(p) = counters.peer(id) {
                bump(&p.frames_in, 1);
                bump(&p.bytes_in, len_bytes as u64);
            }
        }
        Remote::Client(_) => {
            bump(&counters.client_frames_in, 1);
            bump(&counters.client_bytes_in, len_bytes as u64);
        }
    }
}
