//! The byte bound of the outbound channel (node threads to the net thread).
//!
//! The channel counts frames; this gauge counts the bytes of the frames in it. A sender
//! reserves a frame's bytes before it enters the channel, and the net thread releases them
//! when it takes the frame out. A blocking send waits while the frame would pass
//! `outbound_channel_bytes_max` (backpressure on the caller, as a full channel already was);
//! a non-blocking one is refused. An empty channel always takes one frame, so a frame larger
//! than the bound cannot wait forever. When the net thread ends it closes the gauge, which
//! wakes every waiting sender with `TransportClosed`.
//!
//! Invariant: `queued_bytes` is the sum of the reserved frames not yet released.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

pub(crate) struct OutboundBytes {
    state: Mutex<State>,
    room: Condvar,
    bytes_max: usize,
}

struct State {
    queued_bytes: usize,
    closed: bool,
}

/// The net thread is gone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closed;

/// How long a waiting sender sleeps before it looks again (a wake-up is never lost: every
/// release notifies; this only bounds the cost of a missed one).
const WAIT_SLICE: Duration = Duration::from_millis(100);

impl OutboundBytes {
    pub(crate) fn new(bytes_max: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queued_bytes: 0,
                closed: false,
            }),
            room: Condvar::new(),
            bytes_max,
        }
    }

    /// Reserves `len_bytes`, waiting while they would pass the bound.
    pub(crate) fn reserve(&self, len_bytes: usize) -> Result<(), Closed> {
        let mut s = self.state.lock();
        loop {
            if s.closed {
                return Err(Closed);
            }
            if self.fits(&s, len_bytes) {
                s.queued_bytes += len_bytes;
                return Ok(());
            }
            self.room.wait_for(&mut s, WAIT_SLICE);
        }
    }

    /// Reserves `len_bytes` if they fit now.
    pub(crate) fn try_reserve(&self, len_bytes: usize) -> bool {
        let mut s = self.state.lock();
        let ok = !s.closed && self.fits(&s, len_bytes);
        if ok {
            s.queued_bytes += len_bytes;
        }
        ok
    }

    /// Frames of `len_bytes` in all left the channel (or never entered it).
    pub(crate) fn release(&self, len_bytes: usize) {
        if len_bytes == 0 {
            return;
        }
        let mut s = self.state.lock();
        debug_assert!(s.queued_bytes >= len_bytes, "released more than reserved");
        s.queued_bytes = s.queued_bytes.saturating_sub(len_bytes);
        drop(s);
        self.room.notify_all();
    }

    /// The net thread ended: every sender, waiting or not, gets `Closed` from now on.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_all();
    }

    fn fits(&self, s: &State, len_bytes: usize) -> bool {
        s.queued_bytes == 0 || s.queued_bytes + len_bytes <= self.bytes_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_bound_holds_and_an_empty_queue_takes_any_frame() {
        let g = OutboundBytes::new(1000);
        assert!(g.try_reserve(600));
        assert!(g.try_reserve(400));
        assert!(!g.try_reserve(1));
        g.release(1000);
        assert!(
            g.try_reserve(5000),
            "an empty queue takes a frame above the bound"
        );
        assert!(!g.try_reserve(1));
        g.release(5000);
        assert!(g.reserve(10).is_ok());
    }

    #[test]
    fn a_blocked_sender_proceeds_on_release_and_fails_on_close() {
        let g = Arc::new(OutboundBytes::new(100));
        assert!(g.try_reserve(100));
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.reserve(50))
        };
        g.release(100);
        assert_eq!(waiter.join().unwrap(), Ok(()));

        assert!(g.try_reserve(50)); // 100 queued now
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.reserve(50))
        };
        g.close();
        assert_eq!(waiter.join().unwrap(), Err(Closed));
        assert!(!g.try_reserve(1));
    }
}
