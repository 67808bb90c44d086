//! The allow-list: which static keys may hold a link, and who each one is.
//!
//! Invariants: a key maps to at most one identity (peer keys are unique and never client keys;
//! `TransportConfig::validate` checks it); only a key found here yields a [`Remote`]. The lower
//! id dials (see `event_loop`), so an inbound peer link is only accepted from a lower id.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::types::NodeId;
use crate::util::KeyedRateLimit;

use super::config::{ClientAccess, TransportConfig};
use super::envelope::{ClientId, Remote};
use super::noise::KEY_BYTES;
use super::stats::RejectReason;

pub(crate) struct KeyDirectory {
    self_id: NodeId,
    peer_by_key: HashMap<[u8; KEY_BYTES], NodeId>,
    key_by_peer: HashMap<NodeId, [u8; KEY_BYTES]>,
    /// `None` means any client key is accepted (development mode).
    clients: Option<HashSet<[u8; KEY_BYTES]>>,
    /// One log line per refused key per minute (a refused client tends to retry in a loop).
    refused_log: Mutex<KeyedRateLimit<[u8; KEY_BYTES]>>,
    /// See `TransportConfig::refusal_notice`.
    refusal_notice: Vec<u8>,
}

/// At most one "refused" line per key per this interval.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Refused keys remembered for the rate limit (a flood of fresh keys evicts the oldest).
const REFUSED_LOG_KEYS_MAX: usize = 1024;

impl KeyDirectory {
    pub(crate) fn new(config: &TransportConfig) -> Self {
        let peers = config.peers.iter().filter(|p| p.id != config.self_id);
        Self {
            self_id: config.self_id,
            peer_by_key: peers.clone().map(|p| (p.static_public_key, p.id)).collect(),
            key_by_peer: peers.map(|p| (p.id, p.static_public_key)).collect(),
            clients: match &config.clients {
                ClientAccess::Any => None,
                ClientAccess::AllowList(keys) => Some(keys.iter().copied().collect()),
            },
            refused_log: Mutex::new(KeyedRateLimit::new(
                REFUSED_LOG_INTERVAL,
                REFUSED_LOG_KEYS_MAX,
            )),
            refusal_notice: config.refusal_notice.clone(),
        }
    }

    /// Whether the dialled peer answered with the key the config lists for it.
    pub(crate) fn check_dialled(
        &self,
        expected: NodeId,
        key: &[u8; KEY_BYTES],
    ) -> Result<Remote, RejectReason> {
        match self.key_by_peer.get(&expected) {
            Some(k) if k == key => Ok(Remote::Peer(expected)),
            _ => Err(RejectReason::UnknownKey),
        }
    }

    /// Who an inbound link authenticated as, or why it is refused.
    pub(crate) fn identify_inbound(&self, key: &[u8; KEY_BYTES]) -> Result<Remote, RejectReason> {
        if let Some(&id) = self.peer_by_key.get(key) {
            return if id < self.self_id {
                Ok(Remote::Peer(id))
            } else {
                Err(RejectReason::WrongDirection)
            };
        }
        match &self.clients {
            None => Ok(Remote::Client(ClientId(*key, 0))),
            Some(allowed) if allowed.contains(key) => Ok(Remote::Client(ClientId(*key, 0))),
            Some(_) => {
                self.log_refused(key);
                Err(RejectReason::UnknownKey)
            }
        }
    }

    /// What to send a refused inbound link before closing it (`None`: nothing).
    pub(crate) fn refusal_notice(&self) -> Option<&[u8]> {
        Some(self.refusal_notice.as_slice()).filter(|n| !n.is_empty())
    }

    fn log_refused(&self, key: &[u8; KEY_BYTES]) {
        let Some(left_out) = self.refused_log.lock().allow(key, Instant::now()) else {
            return;
        };
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let also = match left_out {
            0 => String::new(),
            n => format!("; {n} more links with this key refused since its last line"),
        };
        log::warn!(
            "net: refused a link with noise key {hex}: neither a member's key nor a client's \
             noise_public_key in [clients] allow{also}"
        );
    }
}
