//! The outbound path: turns requests from the node into sealed frames in write buffers.
//!
//! Invariants: a frame above `max_frame_bytes`, for a remote with no established link, or that
//! would overflow that link's write buffer is dropped and counted, never queued elsewhere
//! (consensus retransmits or syncs what matters; an unbounded queue would not be bounded).
//! Frames are only queued here; the loop flushes each touched connection once per batch.

use mio::Token;

use crate::types::NodeId;

use super::envelope::{ClientId, Outbound};
use super::event_loop::OutboundParts;
use super::stats::bump;

impl OutboundParts<'_> {
    /// Handles up to `max` queued requests; returns the connections that got bytes.
    pub(super) fn send_batch(&mut self, max: usize) -> Vec<Token> {
        let mut touched = Vec::new();
        let mut taken_bytes = 0usize;
        for msg in self.outbound_rx.try_iter().take(max) {
            taken_bytes += msg.len_bytes();
            match msg {
                Outbound::ToPeer(id, bytes) => self.send_to_peer(id, &bytes, &mut touched),
                Outbound::Broadcast(bytes) => {
                    let ids: Vec<NodeId> = self.peers.iter().map(|s| s.id).collect();
                    for id in ids {
                        self.send_to_peer(id, &bytes, &mut touched);
                    }
                }
                Outbound::ToClient(client, bytes) => {
                    self.send_to_client(client, &bytes, &mut touched)
                }
            }
        }
        self.outbound_bytes.release(taken_bytes);
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    fn send_to_peer(&mut self, id: NodeId, bytes: &[u8], touched: &mut Vec<Token>) {
        let Some(peer) = self.counters.peer(id) else {
            log::warn!("net: frame for unknown peer {id} dropped");
            bump(&self.counters.dropped_not_connected, 1);
            return;
        };
        let token = self.peers.get(id).and_then(|s| s.conn);
        if self.queue(token, bytes, touched) {
            bump(&peer.frames_out, 1);
            bump(&peer.bytes_out, bytes.len() as u64);
        } else {
            bump(&peer.frames_dropped, 1);
        }
    }

    fn send_to_client(&mut self, client: ClientId, bytes: &[u8], touched: &mut Vec<Token>) {
        let token = self.clients.get(&client).copied();
        if self.queue(token, bytes, touched) {
            bump(&self.counters.client_frames_out, 1);
            bump(&self.counters.client_bytes_out, bytes.len() as u64);
        }
    }

    /// Queues on `token`'s established link; false (and counted) when dropped.
    fn queue(&mut self, token: Option<Token>, bytes: &[u8], touched: &mut Vec<Token>) -> bool {
        if bytes.len() > self.limits.max_frame_bytes {
            log::error!(
                "net: outbound frame of {} bytes exceeds max_frame_bytes {}; dropped",
                bytes.len(),
                self.limits.max_frame_bytes
            );
            bump(&self.counters.dropped_oversize, 1);
            return false;
        }
        let conn = token.and_then(|t| self.conns.get_mut(&t).map(|c| (t, c)));
        let Some((token, conn)) = conn.filter(|(_, c)| c.remote().is_some()) else {
            bump(&self.counters.dropped_not_connected, 1);
            return false;
        };
        if !conn.queue_frame(bytes, self.limits.write_buffer_bytes_max) {
            bump(&self.counters.dropped_backlog, 1);
            return false;
        }
        touched.push(token);
        true
    }
}
