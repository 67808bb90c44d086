//! The exactly-once table: per client, the replies of a bounded window of recent seqs.
//!
//! Clients pipeline requests, so one client's seqs may commit out of order. For each client we
//! keep `highest` (the highest seq executed) and the reply of every executed seq in
//! `[highest - CLIENT_WINDOW_SEQS + 1, highest]`. A request with seq
//! - in the window and stored: is not executed again; its stored reply is returned;
//! - in the window and not stored, or above `highest`: is executed and its reply stored;
//! - below the window: is rejected with `SeqTooOld` (its reply, if it ever ran, is gone), and
//!   nothing is stored.
//!
//! When `highest` rises, replies that fall below the new window are deleted (at most
//! `CLIENT_WINDOW_SEQS` per request). The table is replicated state: it is in the digest.

use super::keys::{client_key, decode_u64, reply_key};
use super::overlay::BlockOverlay;
use crate::storage::StorageError;

/// Seqs per client whose replies are kept.
pub const CLIENT_WINDOW_SEQS: u64 = 256;

#[derive(Debug, PartialEq, Eq)]
pub enum SeqStatus {
    Fresh,
    /// Already executed: the stored reply bytes.
    Cached(Vec<u8>),
    TooOld {
        oldest_kept_seq: u64,
    },
}

fn highest_seq(overlay: &BlockOverlay<'_>, client: &[u8; 32]) -> Result<Option<u64>, StorageError> {
    overlay
        .get(&client_key(client))
        .map(|stored| decode_u64(&stored, "client seq"))
        .transpose()
}

fn window_start(highest: u64) -> u64 {
    highest.saturating_sub(CLIENT_WINDOW_SEQS - 1)
}

pub fn classify(
    overlay: &BlockOverlay<'_>,
    client: &[u8; 32],
    seq: u64,
) -> Result<SeqStatus, StorageError> {
    let Some(highest) = highest_seq(overlay, client)? else {
        return Ok(SeqStatus::Fresh);
    };
    let oldest_kept_seq = window_start(highest);
    if seq < oldest_kept_seq {
        return Ok(SeqStatus::TooOld { oldest_kept_seq });
    }
    Ok(match overlay.get(&reply_key(client, seq)) {
        Some(reply) => SeqStatus::Cached(reply),
        None => SeqStatus::Fresh,
    })
}

/// Stores the reply of an executed request and slides the window.
pub fn record(
    overlay: &mut BlockOverlay<'_>,
    client: &[u8; 32],
    seq: u64,
    reply: Vec<u8>,
) -> Result<(), StorageError> {
    let highest = highest_seq(overlay, client)?;
    if highest.is_some_and(|h| seq < window_start(h)) {
        return Err(StorageError::invalid(
            "recording a reply below the client window",
        ));
    }
    overlay.put(reply_key(client, seq), reply);
    if highest.is_some_and(|h| seq <= h) {
        return Ok(());
    }
    overlay.put(client_key(client), seq.to_le_bytes().to_vec());
    let old_start = highest.map_or(0, window_start);
    let new_start = window_start(seq);
    if new_start > old_start {
        let doomed = overlay.range(
            &reply_key(client, old_start),
            &reply_key(client, new_start),
            CLIENT_WINDOW_SEQS as usize,
        );
        for (key, _) in doomed {
            overlay.delete(key);
        }
    }
    Ok(())
}
