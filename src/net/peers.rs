//! The peer table: each peer's address, its link, and when to dial it again.
//!
//! Link rule: of each pair, the node with the lower id dials and the higher one only accepts,
//! so a pair has one link and no tie-break is needed. A new authenticated link from a peer
//! replaces the old one (the remote only dials again when it believes the old link dead).
//! Backoff: after a failed dial or a lost link the next dial waits `backoff_ms`, which doubles
//! per failure up to `reconnect_backoff_ms_max` and resets to the minimum when a handshake
//! finishes. Invariant: a peer we dial has at most one connection (dialling or established).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::Token;

use crate::types::NodeId;

pub(crate) struct PeerSlot {
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
    /// True when we dial this peer (our id is lower).
    pub(crate) we_dial: bool,
    /// The connection to this peer: established, or (when we dial) still handshaking.
    pub(crate) conn: Option<Token>,
    /// When to dial next; `None` while a connection exists or for peers that dial us.
    pub(crate) dial_at: Option<Instant>,
    backoff_ms: u64,
}

pub(crate) struct PeerTable {
    slots: Vec<PeerSlot>,
    backoff_ms_min: u64,
    backoff_ms_max: u64,
}

impl PeerTable {
    /// Peers we dial are due at once.
    pub(crate) fn new(
        self_id: NodeId,
        peers: &[(NodeId, SocketAddr)],
        backoff_ms_min: u64,
        backoff_ms_max: u64,
        now: Instant,
    ) -> Self {
        let slots = peers
            .iter()
            .filter(|(id, _)| *id != self_id)
            .map(|&(id, addr)| PeerSlot {
                id,
                addr,
                we_dial: self_id < id,
                conn: None,
                dial_at: (self_id < id).then_some(now),
                backoff_ms: backoff_ms_min,
            })
            .collect();
        Self {
            slots,
            backoff_ms_min,
            backoff_ms_max,
        }
    }

    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut PeerSlot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<&PeerSlot> {
        self.slots.iter().find(|s| s.id == id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &PeerSlot> {
        self.slots.iter()
    }

    /// Peers due for a dial at `now`.
    pub(crate) fn due(&self, now: Instant) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|s| s.conn.is_none() && s.dial_at.is_some_and(|t| t <= now))
            .map(|s| s.id)
            .collect()
    }

    /// The earliest pending dial.
    pub(crate) fn next_dial_at(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.dial_at).min()
    }

    /// A dial started on `token`.
    pub(crate) fn dialling(&mut self, id: NodeId, token: Token) {
        if let Some(s) = self.get_mut(id) {
            s.conn = Some(token);
            s.dial_at = None;
        }
    }

    /// The handshake with `id` finished on `token`; returns the connection it replaces.
    pub(crate) fn established(&mut self, id: NodeId, token: Token) -> Option<Token> {
        let min = self.backoff_ms_min;
        let s = self.get_mut(id)?;
        s.backoff_ms = min;
        s.dial_at = None;
        s.conn.replace(token).filter(|old| *old != token)
    }

    /// `token` (if it is this peer's connection) closed: schedule the next dial with backoff.
    pub(crate) fn closed(&mut self, id: NodeId, token: Token, now: Instant) {
        let max = self.backoff_ms_max;
        let Some(s) = self.get_mut(id) else { return };
        if s.conn != Some(token) {
            return;
        }
        s.conn = None;
        if s.we_dial {
            s.dial_at = Some(now + Duration::from_millis(s.backoff_ms));
            s.backoff_ms = (s.backoff_ms.saturating_mul(2)).min(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(now: Instant) -> PeerTable {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peers = [(NodeId(0), addr), (NodeId(1), addr), (NodeId(2), addr)];
        PeerTable::new(NodeId(1), &peers, 10, 40, now)
    }

    #[test]
    fn lower_id_dials_and_higher_waits() {
        let now = Instant::now();
        let t = table(now);
        assert_eq!(t.due(now), vec![NodeId(2)]);
        assert!(
            t.get(NodeId(0))
                .is_some_and(|s| !s.we_dial && s.dial_at.is_none())
        );
        assert!(t.get(NodeId(1)).is_none(), "no slot for ourselves");
    }

    #[test]
    fn backoff_doubles_caps_and_resets_on_a_link() {
        let now = Instant::now();
        let mut t = table(now);
        let ms = |t: &PeerTable| t.get(NodeId(2)).unwrap().dial_at.unwrap() - now;
        for (k, expect_ms) in [10u64, 20, 40, 40].into_iter().enumerate() {
            t.dialling(NodeId(2), Token(k));
            t.closed(NodeId(2), Token(k), now);
            assert_eq!(ms(&t), Duration::from_millis(expect_ms));
        }
        t.dialling(NodeId(2), Token(9));
        assert_eq!(t.established(NodeId(2), Token(9)), None);
        t.closed(NodeId(2), Token(9), now);
        assert_eq!(ms(&t), Duration::from_millis(10));
    }

    #[test]
    fn a_stale_close_does_not_touch_the_current_link() {
        let now = Instant::now();
        let mut t = table(now);
        assert_eq!(t.established(NodeId(0), Token(5)), None);
        assert_eq!(t.established(NodeId(0), Token(6)), Some(Token(5)));
        t.closed(NodeId(0), Token(5), now);
        assert_eq!(t.get(NodeId(0)).unwrap().conn, Some(Token(6)));
    }
}
