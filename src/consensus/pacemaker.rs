//! Round timing: an exponential-backoff round timer, armed only while there is work.
//!
//! The timeout is `base * 1.5^k`, capped, where `k` counts timer expiries since the last round
//! entered through a QC (progress resets it). An idle cluster (no pending requests, nothing
//! uncommitted, the last payload height's state root certified) lets the timer sleep instead
//! of churning through view changes.
//!
//! Why 1.5 and not 2: the leader schedule passes over a crashed member after one or two
//! timeouts, so consecutive timeouts mostly mean a slow network or a partition, where a gentler
//! growth finds a long-enough round in a few more steps without overshooting by up to 2x
//! (Aptos went from 2x to 1.2x for the same reason).

use super::TimeMs;

/// Backoff steps computed at most: 1.5^128 overflows any cap, so more steps change nothing.
const BACKOFF_STEPS_MAX: u32 = 128;

pub struct Pacemaker {
    base_ms: u64,
    max_ms: u64,
    consecutive_timeouts: u32,
    deadline: Option<TimeMs>,
}

impl Pacemaker {
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Self {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms.max(1)),
            consecutive_timeouts: 0,
            deadline: None,
        }
    }

    pub fn timeout_ms(&self) -> u64 {
        let mut ms = self.base_ms;
        // Bounded: each step grows by half (base >= 1, so at least by 1 once ms >= 2), and the
        // loop ends at the cap; `BACKOFF_STEPS_MAX` bounds it for any cap.
        for _ in 0..self.consecutive_timeouts.min(BACKOFF_STEPS_MAX) {
            if ms >= self.max_ms {
                break;
            }
            ms = ms.saturating_add(ms.div_ceil(2));
        }
        ms.min(self.max_ms)
    }

    pub fn deadline(&self) -> Option<TimeMs> {
        self.deadline
    }

    /// Progress: a QC moved us to a new round.
    pub fn on_progress(&mut self) {
        self.consecutive_timeouts = 0;
    }

    /// The timer expired without progress: back off.
    pub fn on_expired(&mut self) {
        self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
    }

    /// Starts a fresh full timeout from `now` (on entering a round, or after expiry).
    pub fn restart(&mut self, now: TimeMs) {
        self.deadline = Some(now + self.timeout_ms());
    }

    /// Arms the timer if it sleeps; leaves a running one alone.
    pub fn arm(&mut self, now: TimeMs) {
        if self.deadline.is_none() {
            self.restart(now);
        }
    }

    pub fn disarm(&mut self) {
        self.deadline = None;
    }

    pub fn is_due(&self, now: TimeMs) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_caps_and_resets_on_progress() {
        let mut p = Pacemaker::new(100, 1000);
        let seen: Vec<u64> = (0..8)
            .map(|_| {
                let t = p.timeout_ms();
                p.on_expired();
                t
            })
            .collect();
        assert_eq!(seen, vec![100, 150, 225, 338, 507, 761, 1000, 1000]);
        p.on_progress();
        assert_eq!(p.timeout_ms(), 100);
    }

    #[test]
    fn arm_keeps_a_running_timer_and_restart_replaces_it() {
        let mut p = Pacemaker::new(100, 1000);
        assert!(!p.is_due(1_000_000));
        p.arm(10);
        p.arm(50);
        assert_eq!(p.deadline(), Some(110));
        p.restart(50);
        assert_eq!(p.deadline(), Some(150));
        assert!(p.is_due(150) && !p.is_due(149));
    }
}
