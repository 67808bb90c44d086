//! The sending end of the inbound channel (net thread to verifier pool), bounded in bytes as
//! well as in frames.
//!
//! The channel itself counts frames; frames are up to `max_frame_bytes`, so a frame bound
//! alone would allow `inbound_channel_frames_max` x 16 MiB. The net thread is the only sender
//! and the channel is FIFO, so it can know the bytes still queued without any help from the
//! receivers: it remembers each queued frame's size, and when the channel holds `k` frames,
//! all but the last `k` sizes were taken. A frame that would pass `inbound_channel_bytes_max`
//! is refused as if the channel were full (the connection pauses, TCP pushes back), unless the
//! channel is empty, so a frame larger than the bound still gets through alone.
//!
//! Invariants: `sizes.len()` is at least the frames in the channel (at most its capacity);
//! `queued_bytes` is the sum of `sizes`; both only overestimate what the channel holds.

use std::collections::VecDeque;

use crossbeam_channel::{Sender, TrySendError};

use super::envelope::Inbound;

pub(crate) struct InboundQueue {
    tx: Sender<Inbound>,
    sizes: VecDeque<usize>,
    queued_bytes: usize,
    bytes_max: usize,
}

impl InboundQueue {
    pub(crate) fn new(tx: Sender<Inbound>, bytes_max: usize) -> Self {
        Self {
            tx,
            sizes: VecDeque::new(),
            queued_bytes: 0,
            bytes_max,
        }
    }

    /// Queues `msg` unless the channel is full in frames or in bytes; hands it back if so.
    pub(crate) fn try_send(&mut self, msg: Inbound) -> Result<(), TrySendError<Inbound>> {
        self.forget_taken();
        let len_bytes = msg.bytes.len();
        if !self.sizes.is_empty() && self.queued_bytes + len_bytes > self.bytes_max {
            return Err(TrySendError::Full(msg));
        }
        self.tx.try_send(msg)?;
        self.sizes.push_back(len_bytes);
        self.queued_bytes += len_bytes;
        Ok(())
    }

    /// Drops the sizes of frames the receivers took (the oldest ones: the channel is FIFO).
    fn forget_taken(&mut self) {
        let in_channel = self.tx.len();
        while self.sizes.len() > in_channel {
            if let Some(taken) = self.sizes.pop_front() {
                self.queued_bytes -= taken;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Remote;
    use crate::types::NodeId;

    fn frame(len: usize) -> Inbound {
        Inbound {
            from: Remote::Peer(NodeId(0)),
            bytes: vec![0; len],
        }
    }

    #[test]
    fn bytes_bound_the_channel_and_taking_frames_frees_them() {
        let (tx, rx) = crossbeam_channel::bounded(100);
        let mut q = InboundQueue::new(tx, 1000);
        for _ in 0..4 {
            assert!(q.try_send(frame(250)).is_ok());
        }
        assert!(matches!(q.try_send(frame(1)), Err(TrySendError::Full(_))));
        rx.recv().unwrap();
        assert!(q.try_send(frame(250)).is_ok());
        assert!(matches!(q.try_send(frame(250)), Err(TrySendError::Full(_))));
        while rx.try_recv().is_ok() {}
        // An empty channel takes one frame of any size.
        assert!(q.try_send(frame(5000)).is_ok());
        assert!(matches!(q.try_send(frame(1)), Err(TrySendError::Full(_))));
    }
}
