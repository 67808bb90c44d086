//! [`Watch`]: a stream of committed changes to a key or a prefix, from a given height, that a
//! client can trust.
//!
//! The watch is subscribed at every member; a height's changes are emitted only when `f + 1`
//! nodes sent them identically, chained to the last emitted height (`watch_merge`), so one
//! lying node can neither forge, drop nor reorder events, and nothing is emitted twice or
//! skipped. A node whose link comes back (it restarted, or the link broke) is subscribed again
//! from the last emitted height + 1. When the watch makes no progress although nodes sent
//! frames it cannot use yet (a node dropped frames under load), or for `IDLE_RESUBSCRIBE`
//! while nothing came at all, every node is subscribed again from there: the nodes serve from
//! their log, so a re-subscription only costs a read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::wire::client::{ClientFrame, encode_client_frame};

use super::api::Client;
use super::error::ClientError;
use super::watch_merge::{WatchBatch, WatchInput, WatchMerge};

/// Notes the link threads hand to one watch; bounded, a note that finds it full is dropped
/// (the watch re-subscribes when it stops progressing).
pub(crate) const WATCH_NOTES_MAX: usize = 4096;
/// No progress for this long while frames wait: re-subscribe every node.
const STALLED_RESUBSCRIBE: Duration = Duration::from_secs(1);
/// Nothing at all for this long: re-subscribe every node (frames may have been dropped on
/// every link at once). Long, because a re-subscription makes every node re-read its log from
/// the last emitted height, which for a quiet key in a busy cluster is many records.
const IDLE_RESUBSCRIBE: Duration = Duration::from_secs(60);
/// Longest single wait for a note, so re-subscriptions happen on time.
const NOTE_WAIT_MAX: Duration = Duration::from_millis(200);

/// What a link thread tells a watch.
pub(crate) enum WatchNote {
    /// The link to this node came up: subscribe there.
    LinkUp(usize),
    Frame(usize, WatchInput),
    /// The node will not serve this watch, and why.
    Unavailable(usize, String),
}

/// A running watch; see [`Client::watch`]. Dropping it unsubscribes at every node.
pub struct Watch {
    client: Client,
    id: u64,
    key: Vec<u8>,
    prefix: bool,
    merge: WatchMerge,
    notes: Receiver<WatchNote>,
    ready: VecDeque<WatchBatch>,
    last_progress: Instant,
    /// Per node: why it refused the watch, if it did (cleared on re-subscription).
    unavailable: Vec<Option<String>>,
}

impl Watch {
    pub(crate) fn start(
        client: Client,
        key: Vec<u8>,
        prefix: bool,
        from_height: u64,
    ) -> Result<Watch, ClientError> {
        let nodes = client.core_links();
        let (id, notes) = client.register_watch()?;
        let mut watch = Watch {
            merge: WatchMerge::new(nodes, client.f(), from_height),
            client,
            id,
            key,
            prefix,
            notes,
            ready: VecDeque::new(),
            last_progress: Instant::now(),
            unavailable: vec![None; nodes],
        };
        for node in 0..nodes {
            watch.subscribe(node);
        }
        Ok(watch)
    }

    /// The last height emitted (the watch's `from_height - 1` before the first): to resume
    /// elsewhere without a gap or a duplicate, start from this + 1.
    pub fn last_height(&self) -> u64 {
        self.merge.last_height()
    }

    /// The next height's changes, waiting at most `timeout`; `Ok(None)` when none came in
    /// time. Errors: [`ClientError::Compacted`] when `f + 1` nodes no longer keep the history
    /// this watch needs (it says the height to resume from), [`ClientError::Unavailable`] when
    /// more than `n - (f + 1)` nodes refuse it, [`ClientError::Closed`].
    pub fn next(&mut self, timeout: Duration) -> Result<Option<WatchBatch>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            if let Some(resume_from) = self.merge.compacted() {
                return Err(ClientError::Compacted {
                    asked_from: self.merge.last_height() + 1,
                    resume_from,
                });
            }
            self.check_refusals()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match self.notes.recv_timeout((deadline - now).min(NOTE_WAIT_MAX)) {
                Ok(note) => self.take(note),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Closed),
            }
            self.resubscribe_if_stuck();
        }
    }

    fn take(&mut self, note: WatchNote) {
        match note {
            WatchNote::LinkUp(node) => self.subscribe(node),
            WatchNote::Frame(node, input) => {
                self.merge.offer(node, input);
                while let Some(batch) = self.merge.next_batch() {
                    self.ready.push_back(batch);
                    self.last_progress = Instant::now();
                }
            }
            WatchNote::Unavailable(node, reason) => {
                if let Some(slot) = self.unavailable.get_mut(node) {
                    *slot = Some(reason);
                }
            }
        }
    }

    /// Fails when so many nodes refuse that `f + 1` can no longer agree.
    fn check_refusals(&self) -> Result<(), ClientError> {
        let refusing = self.unavailable.iter().flatten().count();
        if refusing + self.client.f() < self.unavailable.len() {
            return Ok(());
        }
        let (node, reason) = self
            .unavailable
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.clone().map(|r| (i, r)))
            .unwrap_or_default();
        Err(ClientError::Unavailable {
            node: self.client.node_id(node),
            reason,
        })
    }

    fn resubscribe_if_stuck(&mut self) {
        let quiet = self.last_progress.elapsed();
        let stuck =
            (quiet >= STALLED_RESUBSCRIBE && self.merge.has_pending()) || quiet >= IDLE_RESUBSCRIBE;
        if stuck {
            for node in 0..self.unavailable.len() {
                self.subscribe(node);
            }
            self.last_progress = Instant::now();
        }
    }

    /// (Re-)subscribes `node` from the last emitted height + 1 (a no-op while its link is
    /// down: the link coming up subscribes it).
    fn subscribe(&mut self, node: usize) {
        self.merge.reset_node(node);
        if let Some(slot) = self.unavailable.get_mut(node) {
            *slot = None;
        }
        let frame = ClientFrame::Watch {
            id: self.id,
            key: self.key.clone(),
            prefix: self.prefix,
            from_height: self.merge.last_height() + 1,
        };
        self.client.send_to(node, &encode_client_frame(&frame));
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.client.unregister_watch(self.id);
        let frame = encode_client_frame(&ClientFrame::Unwatch { id: self.id });
        for node in 0..self.unavailable.len() {
            self.client.send_to(node, &frame);
        }
    }
}
