//! Which state entries each leaf of the state tree covers: the leaf's path and value hash.
//!
//! Every state entry `(k, v)` is its own leaf at path `blake3(k)` with value hash
//! `blake3(v)`, except the replies of the exactly-once table (`r` entries): the replies of one
//! session's seqs `16g .. 16g + 15` share one leaf, a *reply group*, at path
//! `blake3('R' ++ client ++ u64 BE session ++ u64 BE g)` whose value hash is
//! `blake3` of the group's replies in seq order, each `u64 BE seq ++ u32 LE length ++ stored
//! reply`. An emptied group has no leaf.
//!
//! Why: a session stores its reply with each request and, as its window slides, deletes the
//! reply 256 seqs below, so a put changed three leaves (its data entry and two replies), and
//! each changed leaf costs a path of tree chunks rewritten, hashed and written. The replies are
//! never proven to clients one by one; grouping them makes a session that pipelines `B`
//! requests per block change about `2B / 16` reply leaves instead of `2B`. The cost: a changed
//! group is read back (at most 16 entries, one range read) to hash it. Data entries stay one
//! leaf each: verified reads prove them.
//!
//! Invariants: the leaves depend only on the set of entries (never on the order they were
//! written); a group path can equal no entry path (`R` is not a state prefix, so it would take
//! a blake3 collision); a reply key that is not 49 bytes long (the state machine never writes
//! one) is its own leaf, in every function here alike, so damage of that kind still shows as a
//! root mismatch and never as two leaves on one path.

use std::ops::Range;

use super::keys::{REPLY_PREFIX, is_covered_prefix};
use super::state_tree::{Change, Leaf};
use crate::api::proof::{key_path, value_hash};

/// Consecutive seqs of one session whose replies share a leaf.
pub const REPLY_GROUP_SEQS: u64 = 16;
/// First byte of a reply group's path preimage (not a state prefix, see the module doc).
const REPLY_GROUP_TAG: u8 = b'R';
/// `'r' ++ client(32) ++ session(8) ++ seq(8)`.
const REPLY_KEY_BYTES: usize = 49;

/// A reply group: `'R' ++ client ++ session BE ++ group BE` (sorts like its replies' keys).
pub type GroupKey = [u8; REPLY_KEY_BYTES];

/// The group of a well-formed reply key, and the key's seq.
pub fn reply_group(key: &[u8]) -> Option<(GroupKey, u64)> {
    if key.len() != REPLY_KEY_BYTES || key[0] != REPLY_PREFIX {
        return None;
    }
    let seq = u64::from_be_bytes(key[41..49].try_into().ok()?);
    let mut group = [0u8; REPLY_KEY_BYTES];
    group[0] = REPLY_GROUP_TAG;
    group[1..41].copy_from_slice(&key[1..41]);
    group[41..].copy_from_slice(&(seq / REPLY_GROUP_SEQS).to_be_bytes());
    Some((group, seq))
}

/// The engine keys a group's replies lie in (`start..end`; every well-formed reply key in it
/// belongs to the group).
pub fn group_range(group: &GroupKey) -> Range<Vec<u8>> {
    let g = u64::from_be_bytes(group[41..].try_into().unwrap_or_default());
    let first = g.saturating_mul(REPLY_GROUP_SEQS);
    let last = first.saturating_add(REPLY_GROUP_SEQS - 1);
    let key = |seq: u64| {
        let mut key = Vec::with_capacity(REPLY_KEY_BYTES + 1);
        key.push(REPLY_PREFIX);
        key.extend_from_slice(&group[1..41]);
        key.extend_from_slice(&seq.to_be_bytes());
        key
    };
    let mut end = key(last);
    end.push(0);
    key(first)..end
}

/// Hashes one group's replies, fed in seq order.
struct GroupHasher {
    hasher: blake3::Hasher,
    replies: usize,
}

impl GroupHasher {
    fn new() -> Self {
        GroupHasher {
            hasher: blake3::Hasher::new(),
            replies: 0,
        }
    }

    fn add(&mut self, seq: u64, reply: &[u8]) {
        self.hasher.update(&seq.to_be_bytes());
        self.hasher.update(&(reply.len() as u32).to_le_bytes());
        self.hasher.update(reply);
        self.replies += 1;
    }

    /// The group's leaf value hash (`None`: no reply, no leaf).
    fn finish(&self) -> Option<[u8; 32]> {
        (self.replies > 0).then(|| *self.hasher.finalize().as_bytes())
    }
}

/// The value hash of a group holding `replies` (engine key and stored reply, key order).
pub fn group_value_hash<'a>(
    replies: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<[u8; 32]> {
    let mut hasher = GroupHasher::new();
    for (key, reply) in replies {
        if let Some((_, seq)) = reply_group(key) {
            hasher.add(seq, reply);
        }
    }
    hasher.finish()
}

/// Turns state entries, fed in strictly increasing key order, into the tree's leaves.
/// Entries under other prefixes (meta, tree chunks, watch log) are skipped.
#[derive(Default)]
pub struct LeafFolder {
    leaves: Vec<Leaf>,
    open: Option<(GroupKey, GroupHasher)>,
}

impl LeafFolder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        if !key.first().is_some_and(|b| is_covered_prefix(*b)) {
            return;
        }
        let Some((group, seq)) = reply_group(key) else {
            self.leaves.push((key_path(key), value_hash(value)));
            return;
        };
        if self.open.as_ref().is_none_or(|(open, _)| *open != group) {
            self.close();
            self.open = Some((group, GroupHasher::new()));
        }
        if let Some((_, hasher)) = self.open.as_mut() {
            hasher.add(seq, value);
        }
    }

    fn close(&mut self) {
        if let Some((group, hasher)) = self.open.take()
            && let Some(hash) = hasher.finish()
        {
            self.leaves.push((key_path(&group), hash));
        }
    }

    /// The leaves (in no particular order).
    pub fn finish(mut self) -> Vec<Leaf> {
        self.close();
        self.leaves
    }
}

/// The leaf changes of a block's state writes (`writes` in key order, `None`: deleted):
/// one per written entry, and one per touched reply group, rehashed from `group_after` (the
/// group's replies after the block, key order). Sorted by path.
pub fn changes<'a>(
    writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    mut group_after: impl FnMut(&GroupKey) -> Option<[u8; 32]>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut last_group: Option<GroupKey> = None;
    for (key, value) in writes {
        if !key.first().is_some_and(|b| is_covered_prefix(*b)) {
            continue;
        }
        let Some((group, _)) = reply_group(key) else {
            changes.push((key_path(key), value.map(value_hash)));
            continue;
        };
        // Writes come in key order, so a group's writes are adjacent.
        if last_group != Some(group) {
            changes.push((key_path(&group), group_after(&group)));
            last_group = Some(group);
        }
    }
    changes.sort_unstable_by_key(|a| a.0);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::keys::{data_key, reply_key, session_key};

    #[test]
    fn replies_of_sixteen_seqs_share_a_leaf_and_other_entries_do_not() {
        let client = [7; 32];
        let mut folder = LeafFolder::new();
        let mut entries = vec![
            (data_key(b"k"), b"v".to_vec()),
            (session_key(&client, 1), vec![0; 24]),
        ];
        for seq in 14..40 {
            entries.push((reply_key(&client, 1, seq), vec![seq as u8]));
        }
        entries.push((b"mstate".to_vec(), vec![1]));
        entries.sort();
        for (key, value) in &entries {
            folder.push(key, value);
        }
        let leaves = folder.finish();
        // d, s, and groups 0 (seqs 14, 15), 1 (16..31) and 2 (32..39); no leaf for `m`.
        assert_eq!(leaves.len(), 5);
        let (group, seq) = reply_group(&reply_key(&client, 1, 20)).unwrap();
        assert_eq!(seq, 20);
        let range = group_range(&group);
        assert_eq!(range.start, reply_key(&client, 1, 16));
        assert!(range.end > reply_key(&client, 1, 31) && range.end < reply_key(&client, 1, 32));
        let members: Vec<_> = entries
            .iter()
            .filter(|(k, _)| range.contains(k))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(members.len(), 16);
        let hash = group_value_hash(members).unwrap();
        assert!(leaves.contains(&(key_path(&group), hash)));
        assert_eq!(group_value_hash([]), None);
    }

    #[test]
    fn the_last_group_of_the_seq_space_has_a_range() {
        let (group, _) = reply_group(&reply_key(&[1; 32], 2, u64::MAX)).unwrap();
        let range = group_range(&group);
        assert!(range.contains(&reply_key(&[1; 32], 2, u64::MAX)));
        assert!(range.contains(&reply_key(&[1; 32], 2, u64::MAX - 15)));
        assert!(!range.contains(&reply_key(&[1; 32], 2, u64::MAX - 16)));
    }

    #[test]
    fn a_malformed_reply_key_is_its_own_leaf_and_does_not_split_its_group() {
        let client = [3; 32];
        let mut long = reply_key(&client, 1, 17);
        long.push(0);
        let mut entries = vec![
            (reply_key(&client, 1, 16), vec![1]),
            (long.clone(), vec![2]),
            (reply_key(&client, 1, 18), vec![3]),
        ];
        entries.sort();
        let mut folder = LeafFolder::new();
        for (key, value) in &entries {
            folder.push(key, value);
        }
        let leaves = folder.finish();
        assert_eq!(leaves.len(), 2);
        assert!(leaves.contains(&(key_path(&long), value_hash(&[2]))));
        let writes = entries
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())));
        let changes = changes(writes, |_| Some([9; 32]));
        assert_eq!(
            changes.len(),
            2,
            "one change for the group, one for the odd key"
        );
    }
}
