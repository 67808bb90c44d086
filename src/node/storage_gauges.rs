//! What the storage thread publishes about its data for `/metrics`: bytes on disk per engine
//! (the KV state, the consensus store, the snapshot files), the state's user key count, and
//! the newest snapshot's height and age.
//!
//! Cheap by construction: the key count is kept by the state machine (O(1)); engine bytes are
//! the SSTable sizes the engine knows plus a `stat` per WAL segment, and the snapshot sizes
//! are in their offers. Bytes and the snapshot's file time are refreshed by the storage
//! thread at most once a second (and at once after a snapshot is saved or installed), so a
//! scrape never touches the disk or waits for the storage thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::snapshots::SnapshotDir;
use crate::kv::KvStore;
use crate::storage::Engine;

/// The storage thread refreshes byte counts at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct StorageGauges {
    pub state_bytes: AtomicU64,
    pub consensus_bytes: AtomicU64,
    pub snapshots_bytes: AtomicU64,
    pub state_keys: AtomicU64,
    /// Height of the newest snapshot kept (0: none).
    pub snapshot_height: AtomicU64,
    /// When the newest snapshot's file was written, in ms since the Unix epoch (0: none).
    pub snapshot_written_unix_ms: AtomicU64,
    refreshed_at: Mutex<Option<Instant>>,
}

impl StorageGauges {
    /// Storage thread: the key count always (it is O(1)); the rest when `force` or at most
    /// once per [`REFRESH_INTERVAL`].
    pub fn refresh(&self, kv: &KvStore, blocks: &Engine, snapshots: &SnapshotDir, force: bool) {
        self.state_keys.store(kv.key_count(), Ordering::Relaxed);
        let now = Instant::now();
        {
            let mut at = self.refreshed_at.lock();
            let fresh = at.is_some_and(|t| now.duration_since(t) < REFRESH_INTERVAL);
            if fresh && !force {
                return;
            }
            *at = Some(now);
        }
        self.state_bytes
            .store(kv.engine().disk_bytes(), Ordering::Relaxed);
        self.consensus_bytes
            .store(blocks.disk_bytes(), Ordering::Relaxed);
        self.snapshots_bytes
            .store(snapshots.total_bytes(), Ordering::Relaxed);
        let (height, written_ms) = match snapshots.newest() {
            Some(offer) => {
                let written = std::fs::metadata(snapshots.snap_path(offer.height))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                (offer.height, written)
            }
            None => (0, 0),
        };
        self.snapshot_height.store(height, Ordering::Relaxed);
        self.snapshot_written_unix_ms
            .store(written_ms, Ordering::Relaxed);
    }

    /// The next [`StorageGauges::refresh`] reads everything (a snapshot was saved or
    /// installed: its height and age should not wait out the interval).
    pub fn mark_stale(&self) {
        *self.refreshed_at.lock() = None;
    }

    /// Seconds since the newest snapshot was written, `None` without one.
    pub fn snapshot_age_seconds(&self, now: SystemTime) -> Option<f64> {
        let written_ms = self.snapshot_written_unix_ms.load(Ordering::Relaxed);
        if written_ms == 0 {
            return None;
        }
        let now_ms = now.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
        Some(now_ms.saturating_sub(written_ms) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_age_counts_from_the_write_and_is_none_without_one() {
        let g = StorageGauges::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(g.snapshot_age_seconds(now), None);
        g.snapshot_written_unix_ms.store(990_500, Ordering::Relaxed);
        assert_eq!(g.snapshot_age_seconds(now), Some(9.5));
        // A clock stepped back shows age 0, not a negative one.
        g.snapshot_written_unix_ms
            .store(2_000_000, Ordering::Relaxed);
        assert_eq!(g.snapshot_age_seconds(now), Some(0.0));
    }
}
