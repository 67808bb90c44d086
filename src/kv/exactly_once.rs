//! The exactly-once table: per client session, the replies of a bounded window of recent seqs.
//!
//! A request is named by `(client, session, seq)`: every client process draws a random session
//! id, so processes that share one signing key never share seqs. Sessions pipeline requests, so
//! one session's seqs may commit out of order. For each session we keep `highest` (the highest
//! seq executed), `floor` (seqs below it may have run in an earlier life of the session and are
//! refused) and `last_height` (the block that last executed one of its requests), and the reply
//! of every executed seq in `[highest - CLIENT_WINDOW_SEQS + 1, highest]`, stored with the
//! digest of the request's ops. A request with seq
//! - below `floor`: is rejected with `SessionExpired`;
//! - below the window: is rejected with `SeqTooOld` (its reply, if it ever ran, is gone);
//! - in the window and stored with the same ops digest: is not executed again; the stored reply
//!   is returned;
//! - in the window and stored with another ops digest: is rejected with `SeqReused` (a different
//!   request already used this id; it never gets that request's reply);
//! - otherwise: is executed and its reply stored.
//!
//! Rejections carry no values, so every honest node answers a retry identically whatever
//! height it has applied. Nothing is stored for a rejection.
//!
//! Bounds: at most `CLIENT_SESSIONS_MAX` sessions per client key and `SESSIONS_MAX` in all.
//! A request that would open one more evicts first the client's own least recently used
//! session, then the cluster's. "Least recently used" is the lowest `(last_height, client,
//! session)`, read from the `a` index, so every node evicts the same session. An evicted
//! session's replies are deleted and the client's `expired_below` rises to the session's
//! `highest + 1`: a seq below it of a session the table does not know is rejected with
//! `SessionExpired` (it may have run before the eviction), and a session opened later keeps
//! that value as its `floor`. Client seqs start at the wall clock in microseconds
//! (`client::seq`), so a new process starts above the seqs of every session it could
//! collide with. One `c` record (16 bytes) stays per client key that ever wrote; the allow-list
//! bounds those.
//!
//! The table is replicated state: it is in the digest and in snapshots.

use super::keys::{
    AGE_PREFIX, SESSION_COUNT_KEY, age_key, client_key, decode_u64, parse_age_key,
    parse_session_key, reply_end, reply_key, session_end, session_key,
};
use super::overlay::BlockOverlay;
use crate::storage::StorageError;

/// Seqs per session whose replies are kept (a client limit too, so it lives in `api`).
pub use crate::api::CLIENT_WINDOW_SEQS;
/// Live sessions per client key (concurrent processes sharing one key, plus recent ones).
pub const CLIENT_SESSIONS_MAX: u64 = 128;
/// Live sessions of all clients together.
pub const SESSIONS_MAX: u64 = 16_384;

const DIGEST_BYTES: usize = 32;
/// A window sliding by at most this many seqs drops its replies by point lookups, not a scan.
const POINT_DROPS_MAX: u64 = 8;

/// One request as the table sees it.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub client: &'a [u8; 32],
    pub session: u64,
    pub seq: u64,
    pub ops_digest: &'a [u8; 32],
}

#[derive(Debug, PartialEq, Eq)]
pub enum SeqStatus {
    Fresh,
    /// Already executed: the stored reply bytes.
    Cached(Vec<u8>),
    /// Already used by a request with different ops.
    Reused,
    TooOld,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    highest: u64,
    floor: u64,
    last_height: u64,
}

impl Session {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        for v in [self.highest, self.floor, self.last_height] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn decode(stored: &[u8]) -> Result<Session, StorageError> {
        if stored.len() != 24 {
            return Err(StorageError::invalid(format!(
                "stored session is {} bytes, expected 24",
                stored.len()
            )));
        }
        let (highest, rest) = stored.split_at(8);
        let (floor, last_height) = rest.split_at(8);
        Ok(Session {
            highest: decode_u64(highest, "session highest seq")?,
            floor: decode_u64(floor, "session floor")?,
            last_height: decode_u64(last_height, "session height")?,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClientRecord {
    expired_below: u64,
    sessions: u64,
}

impl ClientRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.expired_below.to_le_bytes());
        out.extend_from_slice(&self.sessions.to_le_bytes());
        out
    }
}

fn client_record(
    overlay: &BlockOverlay<'_>,
    client: &[u8; 32],
) -> Result<ClientRecord, StorageError> {
    let Some(stored) = overlay.get(&client_key(client)) else {
        return Ok(ClientRecord::default());
    };
    if stored.len() != 16 {
        return Err(StorageError::invalid(format!(
            "stored client record is {} bytes, expected 16",
            stored.len()
        )));
    }
    Ok(ClientRecord {
        expired_below: decode_u64(&stored[..8], "client record")?,
        sessions: decode_u64(&stored[8..], "client record")?,
    })
}

fn session(
    overlay: &BlockOverlay<'_>,
    client: &[u8; 32],
    session: u64,
) -> Result<Option<Session>, StorageError> {
    overlay
        .get(&session_key(client, session))
        .map(|stored| Session::decode(&stored))
        .transpose()
}

fn sessions_total(overlay: &BlockOverlay<'_>) -> Result<u64, StorageError> {
    overlay
        .get(SESSION_COUNT_KEY)
        .map_or(Ok(0), |stored| decode_u64(&stored, "session count"))
}

fn window_start(highest: u64) -> u64 {
    highest.saturating_sub(CLIENT_WINDOW_SEQS - 1)
}

pub fn classify(overlay: &BlockOverlay<'_>, slot: Slot<'_>) -> Result<SeqStatus, StorageError> {
    let Some(s) = session(overlay, slot.client, slot.session)? else {
        let expired_below = client_record(overlay, slot.client)?.expired_below;
        return Ok(if slot.seq < expired_below {
            SeqStatus::Expired
        } else {
            SeqStatus::Fresh
        });
    };
    if slot.seq < s.floor {
        return Ok(SeqStatus::Expired);
    }
    if slot.seq < window_start(s.highest) {
        return Ok(SeqStatus::TooOld);
    }
    let Some(stored) = overlay.get(&reply_key(slot.client, slot.session, slot.seq)) else {
        return Ok(SeqStatus::Fresh);
    };
    if stored.len() < DIGEST_BYTES {
        return Err(StorageError::invalid(
            "stored reply is shorter than its digest",
        ));
    }
    let (digest, reply) = stored.split_at(DIGEST_BYTES);
    Ok(if digest == slot.ops_digest {
        SeqStatus::Cached(reply.to_vec())
    } else {
        SeqStatus::Reused
    })
}

/// Stores the reply of a request executed at `height` (which [`classify`] found `Fresh`),
/// opens its session if needed (evicting to stay in bounds) and slides the window.
pub fn record(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    slot: Slot<'_>,
    reply: Vec<u8>,
) -> Result<(), StorageError> {
    let s = match session(overlay, slot.client, slot.session)? {
        Some(s) => advance(overlay, height, slot, s)?,
        None => open(overlay, height, slot)?,
    };
    overlay.put(session_key(slot.client, slot.session), s.encode());
    let mut stored = Vec::with_capacity(DIGEST_BYTES + reply.len());
    stored.extend_from_slice(slot.ops_digest);
    stored.extend_from_slice(&reply);
    overlay.put(reply_key(slot.client, slot.session, slot.seq), stored);
    Ok(())
}

/// A known session executed `slot.seq` at `height`: its new record (the caller stores it).
fn advance(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    slot: Slot<'_>,
    mut s: Session,
) -> Result<Session, StorageError> {
    if slot.seq < window_start(s.highest) || slot.seq < s.floor {
        return Err(StorageError::invalid(
            "recording a reply below the session window",
        ));
    }
    if s.last_height != height {
        overlay.delete(age_key(s.last_height, slot.client, slot.session));
        overlay.put(age_key(height, slot.client, slot.session), Vec::new());
        s.last_height = height;
    }
    if slot.seq > s.highest {
        let (old_start, new_start) = (window_start(s.highest), window_start(slot.seq));
        s.highest = slot.seq;
        if new_start - old_start <= POINT_DROPS_MAX {
            // The usual slide (a session's next seq): look the few dropped seqs up one by one,
            // which the engine's bloom filters make far cheaper than a range scan over every
            // memtable and SSTable.
            for seq in old_start..new_start {
                overlay.delete(reply_key(slot.client, slot.session, seq));
            }
        } else {
            let doomed = overlay.range(
                &reply_key(slot.client, slot.session, old_start),
                &reply_key(slot.client, slot.session, new_start),
                CLIENT_WINDOW_SEQS as usize,
            );
            for (key, _) in doomed {
                overlay.delete(key);
            }
        }
    }
    Ok(s)
}

/// Opens a session for `slot`, first evicting to make room: its record (the caller stores it).
fn open(
    overlay: &mut BlockOverlay<'_>,
    height: u64,
    slot: Slot<'_>,
) -> Result<Session, StorageError> {
    // The floor is what `classify` checked against: evictions below belong to other sessions.
    let floor = client_record(overlay, slot.client)?.expired_below;
    if client_record(overlay, slot.client)?.sessions >= CLIENT_SESSIONS_MAX {
        let (victim, _) = oldest_session_of(overlay, slot.client)?;
        evict(overlay, slot.client, victim)?;
    }
    if sessions_total(overlay)? >= SESSIONS_MAX {
        let (client, victim) = oldest_session(overlay)?;
        evict(overlay, &client, victim)?;
    }
    let mut record = client_record(overlay, slot.client)?;
    record.sessions += 1;
    overlay.put(client_key(slot.client), record.encode());
    let total = sessions_total(overlay)? + 1;
    overlay.put(SESSION_COUNT_KEY.to_vec(), total.to_le_bytes().to_vec());
    overlay.put(age_key(height, slot.client, slot.session), Vec::new());
    Ok(Session {
        highest: slot.seq,
        floor,
        last_height: height,
    })
}

/// The client's session with the lowest `(last_height, session)`.
fn oldest_session_of(
    overlay: &BlockOverlay<'_>,
    client: &[u8; 32],
) -> Result<(u64, Session), StorageError> {
    let rows = overlay.range(
        &session_key(client, 0),
        &session_end(client),
        CLIENT_SESSIONS_MAX as usize + 1,
    );
    let mut oldest: Option<(u64, Session)> = None;
    for (key, stored) in rows {
        let id = parse_session_key(&key)?;
        let s = Session::decode(&stored)?;
        if oldest.is_none_or(|(old_id, old)| (s.last_height, id) < (old.last_height, old_id)) {
            oldest = Some((id, s));
        }
    }
    oldest.ok_or_else(|| StorageError::invalid("client record counts sessions that are absent"))
}

/// The cluster's session with the lowest `(last_height, client, session)`.
fn oldest_session(overlay: &BlockOverlay<'_>) -> Result<([u8; 32], u64), StorageError> {
    let first = overlay.range(&[AGE_PREFIX], &[AGE_PREFIX + 1], 1);
    let (key, _) = first
        .first()
        .ok_or_else(|| StorageError::invalid("session count is positive but no session is"))?;
    parse_age_key(key)
}

/// Forgets a session and its replies; its seqs stay refused through the client's
/// `expired_below`.
fn evict(
    overlay: &mut BlockOverlay<'_>,
    client: &[u8; 32],
    victim: u64,
) -> Result<(), StorageError> {
    let s = session(overlay, client, victim)?
        .ok_or_else(|| StorageError::invalid("evicting a session that is absent"))?;
    let replies = overlay.range(
        &reply_key(client, victim, 0),
        &reply_end(client, victim),
        CLIENT_WINDOW_SEQS as usize,
    );
    for (key, _) in replies {
        overlay.delete(key);
    }
    overlay.delete(session_key(client, victim));
    overlay.delete(age_key(s.last_height, client, victim));
    let mut record = client_record(overlay, client)?;
    record.expired_below = record.expired_below.max(s.highest.saturating_add(1));
    record.sessions = record.sessions.saturating_sub(1);
    overlay.put(client_key(client), record.encode());
    let total = sessions_total(overlay)?.saturating_sub(1);
    overlay.put(SESSION_COUNT_KEY.to_vec(), total.to_le_bytes().to_vec());
    Ok(())
}

#[cfg(test)]
pub(super) fn live_sessions(overlay: &BlockOverlay<'_>, client: &[u8; 32]) -> Vec<u64> {
    overlay
        .range(&session_key(client, 0), &session_end(client), usize::MAX)
        .into_iter()
        .filter_map(|(key, _)| parse_session_key(&key).ok())
        .collect()
}
