//! What a watch delivers: the committed changes of one block height to the keys a watcher
//! asked for, in key order, identical on every honest node (they come from the replicated
//! state machine's change log, `kv::watch_log`).

use rkyv::{Archive, Deserialize, Serialize};

use super::reply::VersionedValue;

/// One key's change at a height: its new value (with version and `mod_height`, which equals
/// the height), or `None` for a delete. Several writes of one key within a block are one
/// change, the last.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub key: Vec<u8>,
    pub value: Option<VersionedValue>,
}

/// Whether a watch on `watched` (a key, or a prefix when `prefix`) sees changes to `key`.
pub fn watch_matches(watched: &[u8], prefix: bool, key: &[u8]) -> bool {
    if prefix {
        key.starts_with(watched)
    } else {
        key == watched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_watch_sees_only_its_key_and_a_prefix_watch_its_prefix() {
        assert!(watch_matches(b"a/b", false, b"a/b"));
        assert!(!watch_matches(b"a/b", false, b"a/bc"));
        assert!(watch_matches(b"a/", true, b"a/b"));
        assert!(watch_matches(b"", true, b"anything"));
        assert!(!watch_matches(b"a/", true, b"b/a"));
    }
}
