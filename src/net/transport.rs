//! The handle the node holds: starts the net thread, sends, receives, reads counters, stops it.
//!
//! Invariants: `start` binds the listener before returning (so bind errors surface to the
//! caller and `local_addr` is final); both channels are bounded by `NetLimits`; every send
//! wakes the loop; dropping the handle (or `shutdown`) stops the thread and closes every socket
//! before returning, so the port can be bound again at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use super::config::TransportConfig;
use super::envelope::{Inbound, Outbound};
use super::event_loop::{EventLoop, LISTENER, LoopIo, WAKER};
use super::outbound_bytes::OutboundBytes;
use super::stats::{NetCounters, NetStats};

/// Why a transport could not start.
#[derive(Debug)]
pub enum StartError {
    Config(String),
    Io { what: &'static str, err: io::Error },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(why) => write!(f, "transport config: {why}"),
            StartError::Io { what, err } => write!(f, "transport: {what}: {err}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The net thread is gone (shut down or failed); nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportClosed;

/// A cloneable way for any thread to hand frames to the net thread.
#[derive(Clone)]
pub struct OutboundSender {
    tx: Sender<Outbound>,
    waker: Arc<Waker>,
    /// Bytes of the frames in the channel, bounded by `outbound_channel_bytes_max`.
    bytes: Arc<OutboundBytes>,
}

impl OutboundSender {
    /// Queues a request, blocking while the channel is full in frames or in bytes
    /// (backpressure on the caller).
    pub fn send(&self, msg: Outbound) -> Result<(), TransportClosed> {
        let len_bytes = msg.len_bytes();
        self.bytes.reserve(len_bytes).map_err(|_| TransportClosed)?;
        if self.tx.send(msg).is_err() {
            self.bytes.release(len_bytes);
            return Err(TransportClosed);
        }
        self.wake()
    }

    /// Queues a request unless the channel is full in frames or in bytes; hands the request
    /// back if it is.
    pub fn try_send(&self, msg: Outbound) -> Result<(), TrySendError<Outbound>> {
        let len_bytes = msg.len_bytes();
        if !self.bytes.try_reserve(len_bytes) {
            return Err(TrySendError::Full(msg));
        }
        if let Err(e) = self.tx.try_send(msg) {
            self.bytes.release(len_bytes);
            return Err(e);
        }
        // A failed wake means the poll is gone, i.e. the thread stopped; the request is moot.
        let _ = self.wake();
        Ok(())
    }

    fn wake(&self) -> Result<(), TransportClosed> {
        self.waker.wake().map_err(|_| TransportClosed)
    }
}

/// A running transport. See the module doc of `net` for the whole picture.
pub struct Transport {
    local_addr: SocketAddr,
    outbound: OutboundSender,
    inbound_rx: Receiver<Inbound>,
    counters: Arc<NetCounters>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |err| StartError::Io { what, err }
}

impl Transport {
    /// Validates the config, binds the listener and starts the net thread.
    pub fn start(config: TransportConfig) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let poll = Poll::new().map_err(io_err("creating the poll"))?;
        let mut listener =
            TcpListener::bind(config.listen_addr).map_err(io_err("binding the listener"))?;
        let local_addr = listener
            .local_addr()
            .map_err(io_err("reading the bound address"))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err("registering the listener"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err("creating the waker"))?);
        let limits = &config.limits;
        let (inbound_tx, inbound_rx) = bounded(limits.inbound_channel_frames_max);
        let (outbound_tx, outbound_rx) = bounded(limits.outbound_channel_frames_max);
        let peer_slots = config
            .peers
            .iter()
            .map(|p| p.id.index() + 1)
            .max()
            .unwrap_or(0);
        let counters = Arc::new(NetCounters::new(peer_slots.max(config.self_id.index() + 1)));
        let shutdown = Arc::new(AtomicBool::new(false));
        let outbound_bytes = Arc::new(OutboundBytes::new(limits.outbound_channel_bytes_max));
        let io = LoopIo {
            poll,
            listener,
            inbound_tx,
            outbound_rx,
            outbound_bytes: Arc::clone(&outbound_bytes),
            counters: Arc::clone(&counters),
            shutdown: Arc::clone(&shutdown),
        };
        let event_loop = EventLoop::new(&config, io);
        let thread = std::thread::Builder::new()
            .name(format!("net-{}", config.self_id))
            .spawn(move || event_loop.run())
            .map_err(io_err("spawning the net thread"))?;
        Ok(Self {
            local_addr,
            outbound: OutboundSender {
                tx: outbound_tx,
                waker,
                bytes: outbound_bytes,
            },
            inbound_rx,
            counters,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The address the listener is bound to (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A sender other threads can keep.
    pub fn sender(&self) -> OutboundSender {
        self.outbound.clone()
    }

    /// Shorthand for `sender().send(msg)`.
    pub fn send(&self, msg: Outbound) -> Result<(), TransportClosed> {
        self.outbound.send(msg)
    }

    /// Frames from authenticated remotes. Clone it to hand it to another thread.
    pub fn inbound(&self) -> &Receiver<Inbound> {
        &self.inbound_rx
    }

    /// The live counters, for a metrics thread to keep.
    pub fn counters(&self) -> Arc<NetCounters> {
        Arc::clone(&self.counters)
    }

    /// A copy of every counter now.
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    /// Stops the net thread and closes every socket; returns when they are closed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        let _ = self.outbound.waker.wake();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("net: the net thread panicked");
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}
