//! The watch thread: serves clients' watches from the KV store's watch log, off the
//! consensus, storage and verifier threads.
//!
//! Pull-based: a watcher is a position in the log (`next_height`) and the last height it sent
//! (`prev_height`); each pass reads at most `READ_HEIGHTS_MAX` heights and `READ_BYTES_MAX`
//! bytes of the log per watcher and sends the matching changes, one `WatchEvents` frame per
//! height. Nothing is buffered per watcher beyond one read: a watcher whose frames do not fit
//! the outbound queue keeps its position and is read again from disk on a later pass.
//!
//! Bounds: `WATCHES_PER_CLIENT_MAX` watches per client key (a new one evicts that client's
//! oldest: links of a client that went away are found this way, since link numbers are never
//! reused), `WATCHERS_MAX` in all (beyond it a new watch is refused), `WATCH_COMMANDS_MAX`
//! queued commands (beyond it a command is dropped and counted: the client re-subscribes when
//! its watch makes no progress).
//!
//! Events are sent once the block is applied; its batch may not yet be synced, but the block
//! is committed, so after a crash the node applies it again and the same events come out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::RwLock;

use super::byzantine::ServingHook;
use super::counters::NodeCounters;
use super::status::StatusBoard;
use crate::api::{WatchEvent, watch_matches};
use crate::kv::KvStore;
use crate::net::{ClientId, Outbound, OutboundSender};
use crate::wire::NodeFrame;
use crate::wire::client::encode_node_frame;

/// Commands waiting for the watch thread.
pub const WATCH_COMMANDS_MAX: usize = 256;
/// Watches of one client key (over all its links).
pub const WATCHES_PER_CLIENT_MAX: usize = 64;
/// Watches on this node.
pub const WATCHERS_MAX: usize = 1024;
/// Log heights one pass reads for one watcher.
const READ_HEIGHTS_MAX: usize = 256;
/// Log bytes one pass reads for one watcher (at least one record is read).
const READ_BYTES_MAX: usize = 1 << 20;
/// Largest `WatchEvents` frame sent: under the client library's default frame limit (16 MiB)
/// and capped by the transport's `max_frame_bytes`. A height whose matching changes do not
/// fit ends the watch with a refusal that says so, never a silent stall.
pub const WATCH_FRAME_BYTES_MAX: usize = 8 << 20;
/// How long the thread waits for a command when every watcher is caught up.
const IDLE_WAIT: Duration = Duration::from_millis(20);

pub enum WatchCmd {
    Watch {
        conn: ClientId,
        id: u64,
        key: Vec<u8>,
        prefix: bool,
        from_height: u64,
    },
    Unwatch {
        conn: ClientId,
        id: u64,
    },
}

/// The producers' end (the verifier pool): a bounded queue whose overflow is counted.
#[derive(Clone)]
pub struct WatchQueue {
    tx: Sender<WatchCmd>,
    counters: Arc<NodeCounters>,
}

impl WatchQueue {
    pub fn new(counters: Arc<NodeCounters>) -> (Self, Receiver<WatchCmd>) {
        let (tx, rx) = crossbeam_channel::bounded(WATCH_COMMANDS_MAX);
        (Self { tx, counters }, rx)
    }

    pub fn offer(&self, cmd: WatchCmd) {
        if self.tx.try_send(cmd).is_err() {
            self.counters.watch_commands_dropped.bump();
        }
    }
}

pub struct WatchCtx {
    pub kv: Arc<RwLock<KvStore>>,
    pub status: Arc<StatusBoard>,
    pub out: OutboundSender,
    pub counters: Arc<NodeCounters>,
    pub stop: Arc<AtomicBool>,
    /// `WATCH_FRAME_BYTES_MAX`, or the transport's `max_frame_bytes` if lower.
    pub frame_bytes_max: usize,
    /// Test-only Byzantine answers (a no-op unless built with the `byzantine` feature).
    pub byzantine: ServingHook,
}

struct Watcher {
    key: Vec<u8>,
    prefix: bool,
    /// The next log height to read.
    next_height: u64,
    /// The last height sent (or `from_height - 1`).
    prev_height: u64,
    /// When it was added, for eviction (a counter, not a clock).
    added: u64,
}

/// What one pass over a watcher did.
enum Served {
    /// Caught up with the applied height (or waiting for room in the outbound queue).
    Idle,
    /// More log to read at once.
    More,
    /// Finished (compacted, or the node will not serve it).
    Done,
}

/// Runs until the verifiers are gone (their queue disconnects) or the node stops.
pub fn run(ctx: WatchCtx, commands: Receiver<WatchCmd>) {
    let mut watchers: BTreeMap<(ClientId, u64), Watcher> = BTreeMap::new();
    let mut added = 0u64;
    let mut busy = false;
    loop {
        let first = if busy {
            commands.try_recv().map_err(|_| RecvTimeoutError::Timeout)
        } else {
            commands.recv_timeout(IDLE_WAIT)
        };
        match first {
            Ok(cmd) => {
                added += 1;
                ctx.command(&mut watchers, cmd, added);
                while let Ok(cmd) = commands.try_recv() {
                    added += 1;
                    ctx.command(&mut watchers, cmd, added);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        busy = false;
        watchers.retain(|(conn, id), w| match ctx.serve(*conn, *id, w) {
            Served::Idle => true,
            Served::More => {
                busy = true;
                true
            }
            Served::Done => false,
        });
        ctx.counters.watchers.set(watchers.len() as u64);
    }
    log::debug!("watch thread done");
}

impl WatchCtx {
    fn command(
        &self,
        watchers: &mut BTreeMap<(ClientId, u64), Watcher>,
        cmd: WatchCmd,
        added: u64,
    ) {
        let (conn, id, key, prefix, from_height) = match cmd {
            WatchCmd::Unwatch { conn, id } => {
                watchers.remove(&(conn, id));
                return;
            }
            WatchCmd::Watch {
                conn,
                id,
                key,
                prefix,
                from_height,
            } => (conn, id, key, prefix, from_height),
        };
        if from_height == 0 {
            self.unavailable(conn, id, "a watch starts at height 1 or above".into());
            return;
        }
        watchers.remove(&(conn, id));
        let of_client: Vec<(ClientId, u64, u64)> = watchers
            .iter()
            .filter(|((c, _), _)| c.0 == conn.0)
            .map(|((c, i), w)| (*c, *i, w.added))
            .collect();
        if of_client.len() >= WATCHES_PER_CLIENT_MAX
            && let Some(&(old_conn, old_id, _)) = of_client.iter().min_by_key(|(.., a)| *a)
        {
            watchers.remove(&(old_conn, old_id));
            self.counters.watchers_evicted.bump();
            let reason =
                format!("evicted: more than {WATCHES_PER_CLIENT_MAX} watches of this client");
            self.unavailable(old_conn, old_id, reason);
        }
        if watchers.len() >= WATCHERS_MAX {
            self.counters.watchers_refused.bump();
            let reason = format!("this node serves {WATCHERS_MAX} watches already");
            self.unavailable(conn, id, reason);
            return;
        }
        let watcher = Watcher {
            key,
            prefix,
            next_height: from_height,
            prev_height: from_height - 1,
            added,
        };
        watchers.insert((conn, id), watcher);
    }

    fn serve(&self, conn: ClientId, id: u64, w: &mut Watcher) -> Served {
        if let Some(d) = self.status.divergence() {
            let reason = format!(
                "state diverged from the certified root at height {}; repairing",
                d.height
            );
            self.unavailable(conn, id, reason);
            return Served::Done;
        }
        let (floor, read) = {
            let kv = self.kv.read();
            let floor = kv.watch_floor();
            if w.next_height <= floor || w.next_height > kv.applied_height() {
                (floor, None)
            } else {
                let read = kv.watch_read(w.next_height, READ_HEIGHTS_MAX, READ_BYTES_MAX);
                (floor, Some((read, kv.applied_height())))
            }
        };
        if w.next_height <= floor {
            let frame = NodeFrame::WatchCompacted {
                id,
                oldest_height: floor + 1,
            };
            self.send(conn, &frame);
            return Served::Done;
        }
        let Some((read, applied)) = read else {
            return Served::Idle;
        };
        let (records, complete) = match read {
            Ok(read) => read,
            Err(e) => {
                log::error!("watch: reading the watch log failed: {e}");
                self.unavailable(conn, id, "this node cannot read its watch log".into());
                return Served::Done;
            }
        };
        for (height, events) in records {
            let events: Vec<WatchEvent> = events
                .into_iter()
                .filter(|e| watch_matches(&w.key, w.prefix, &e.key))
                .collect();
            if !events.is_empty() {
                let frame = NodeFrame::WatchEvents {
                    id,
                    height,
                    prev_height: w.prev_height,
                    events,
                };
                let bytes = encode_node_frame(&frame);
                if bytes.len() > self.frame_bytes_max {
                    let reason = format!(
                        "the watched changes of height {height} take {} bytes, more than the \
                         {} a watch frame may carry; watch a narrower key or prefix, or resume \
                         from height {}",
                        bytes.len(),
                        self.frame_bytes_max,
                        height + 1
                    );
                    self.unavailable(conn, id, reason);
                    return Served::Done;
                }
                if !self.send(conn, &frame) {
                    return Served::Idle; // no room: read again from `next_height` later
                }
                self.counters.watch_frames_sent.bump();
                w.prev_height = height;
            }
            w.next_height = height + 1;
        }
        if complete {
            w.next_height = applied + 1;
            Served::Idle
        } else {
            Served::More
        }
    }

    fn unavailable(&self, conn: ClientId, id: u64, reason: String) {
        self.send(conn, &NodeFrame::Unavailable { id, reason });
    }

    /// False when the outbound queue had no room.
    fn send(&self, conn: ClientId, frame: &NodeFrame) -> bool {
        let Some(bytes) = self.byzantine.encode_client_frame(frame) else {
            return true; // a silent Byzantine node
        };
        match self.out.try_send(Outbound::ToClient(conn, bytes)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true, // shutting down
        }
    }
}
