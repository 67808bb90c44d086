//! Injected faults on outgoing peer frames (`[faults]`, `bftd dev --lossy`): drop, duplicate,
//! or delay a share of them, to watch the protocol ride out a bad network.
//!
//! Delayed frames go to one small thread that holds them in a time-ordered heap (bounded:
//! beyond `DELAYED_FRAMES_MAX` a frame is sent at once instead) and hands them to the
//! transport when due. The random draws use a SplitMix64 stream seeded from the clock: these
//! faults are for demonstrations, not for reproducible tests (the simulator is for those).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::settings::FaultSettings;
use crate::net::{Outbound, OutboundSender};
use crate::types::NodeId;
use crate::util::rng::SimRng;

const DELAYED_FRAMES_MAX: usize = 10_000;

pub struct FaultyLink {
    settings: FaultSettings,
    rng: SimRng,
    delay_tx: Sender<(Instant, Outbound)>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyLink {
    pub fn start(settings: FaultSettings, out: OutboundSender) -> std::io::Result<Self> {
        let (delay_tx, delay_rx) = bounded(DELAYED_FRAMES_MAX);
        let thread = std::thread::Builder::new()
            .name("bftd-delay".into())
            .spawn(move || run_delayer(delay_rx, out))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ok(Self {
            settings,
            rng: SimRng::new(seed),
            delay_tx,
            thread: Some(thread),
        })
    }

    /// Decides the fate of one frame to `to`: the frames to send now (0, 1 or 2), and queues
    /// the delayed ones itself.
    pub fn filter(&mut self, to: NodeId, bytes: Vec<u8>) -> Vec<Outbound> {
        let s = &self.settings;
        if self.rng.chance(s.drop_share) {
            return Vec::new();
        }
        let copies = if self.rng.chance(s.duplicate_share) {
            2
        } else {
            1
        };
        let mut now = Vec::with_capacity(copies);
        for _ in 0..copies {
            let frame = Outbound::ToPeer(to, bytes.clone());
            if self.rng.chance(s.delay_share) {
                let delay = Duration::from_millis(self.rng.range(1, s.delay_ms_max.max(1)));
                if let Err(e) = self.delay_tx.try_send((Instant::now() + delay, frame)) {
                    now.push(e.into_inner().1);
                }
            } else {
                now.push(frame);
            }
        }
        now
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        // Closing the channel stops the delayer.
        let (tx, _) = bounded(1);
        drop(std::mem::replace(&mut self.delay_tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_delayer(rx: Receiver<(Instant, Outbound)>, out: OutboundSender) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut frames = std::collections::HashMap::new();
    let mut seq = 0u64;
    loop {
        let wait = heap
            .peek()
            .map_or(Duration::from_millis(200), |Reverse((at, _))| {
                at.saturating_duration_since(Instant::now())
            });
        match rx.recv_timeout(wait) {
            Ok((at, frame)) => {
                seq += 1;
                heap.push(Reverse((at, seq)));
                frames.insert(seq, frame);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Some(Reverse((at, id))) = heap.peek().copied() {
            if at > Instant::now() {
                break;
            }
            heap.pop();
            if let Some(frame) = frames.remove(&id)
                && out.send(frame).is_err()
            {
                return;
            }
        }
    }
}
