//! Backups of a running cluster (`bftctl snapshot save FILE`): download a periodic snapshot
//! that `f + 1` members vouch for, verify it whole, and write a backup file that
//! `bftd snapshot restore` takes.
//!
//! Trust, as in the node's own state transfer (`replica::transfer`): every member is asked for
//! its newest snapshot offer; only an offer sent identically (height, block, state digest,
//! size) by at least `f + 1` members is used, so at least one honest node vouches for it. The
//! bytes come from one of those members at a time, in chunks of at most `CHUNK_BYTES_MAX`; a
//! member that does not answer, sends an empty chunk (it pruned the snapshot) or a chunk that
//! overruns the agreed size is replaced by the next one. The finished file is verified whole
//! by the [`BackupTarget`] (checksum, structure, the state digest recomputed from the
//! entries) and must hold the agreed height and digest; if it does not, the members that
//! served it are dropped and the download starts over from the others.
//!
//! Durability (`node::backup::FileTarget`): the file is written under `FILE.tmp`, fsynced,
//! renamed to `FILE` and its directory fsynced only once verified, so `FILE` is never a
//! partial or unverified backup. Memory: one chunk at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::api::Client;
use crate::keys_file::to_hex;
use crate::replica::CHUNK_BYTES_MAX;
use crate::types::NodeId;
use crate::wire::SnapshotOffer;

/// Unanswered or unusable chunk requests in a row, per member that can serve, before giving
/// up on a download.
const MISSES_PER_SOURCE_MAX: usize = 3;
/// Times the whole process (offers, download, verify) starts over: the newest snapshot can
/// change between the offers and the download (nodes keep a few and prune the oldest), or
/// members can be caught offering different newest snapshots while cutting one.
const ATTEMPTS_MAX: usize = 3;
/// Wait before asking for offers again when members disagreed on the newest snapshot.
const DISAGREEMENT_RETRY: Duration = Duration::from_millis(500);

/// What was saved.
#[derive(Debug, Clone)]
pub struct SavedBackup {
    pub offer: SnapshotOffer,
    /// State entries in the snapshot.
    pub entry_count: u64,
    /// The members that sent this offer identically (at least `f + 1`).
    pub vouched_by: Vec<NodeId>,
    /// The members the bytes came from.
    pub downloaded_from: Vec<NodeId>,
    /// Members whose bytes did not verify (discarded; not read from again).
    pub distrusted: Vec<NodeId>,
    /// Bytes of the backup file written (header included).
    pub backup_bytes: u64,
    pub elapsed: Duration,
}

/// Where the downloaded bytes go, and how a finished file is checked. The library knows no
/// state machine, so the caller supplies it: `node::backup::FileTarget` writes a backup file
/// (temp name, fsync, rename) and verifies it with `kv::snapshot` (what `bftctl` uses).
pub trait BackupTarget {
    /// Starts a file for `offer`, discarding any earlier attempt.
    fn begin(&mut self, offer: &SnapshotOffer) -> Result<(), String>;
    fn append(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// Makes what was appended durable (an error here blames no member).
    fn sync(&mut self) -> Result<(), String>;
    /// Checks the whole snapshot from scratch; an error means its bytes are bad.
    fn verify(&mut self) -> Result<VerifiedSnapshot, String>;
    /// Gives the verified file its final name, durably.
    fn commit(&mut self) -> Result<(), String>;
    /// Deletes an unfinished or unverified file.
    fn abandon(&mut self);
    /// Bytes of the final file when it holds a snapshot of `snapshot_bytes`.
    fn file_bytes(&self, snapshot_bytes: u64) -> u64;
}

/// What a verified snapshot holds (the digest recomputed from its entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedSnapshot {
    pub height: u64,
    pub state_digest: [u8; 32],
    pub entry_count: u64,
}

/// Progress of a download: bytes done, bytes in all, the member being read.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64, NodeId);

/// Downloads a snapshot `f + 1` members vouch for into `target`;
/// `prefer`: read from this member first (it must be among those vouching). Errors are
/// sentences for a person.
pub fn save(
    client: &Client,
    target: &mut dyn BackupTarget,
    prefer: Option<NodeId>,
    progress: Progress,
) -> Result<SavedBackup, String> {
    let started = Instant::now();
    let mut last_error = String::new();
    // Members whose bytes did not verify: never read from again.
    let mut distrusted: Vec<NodeId> = Vec::new();
    for attempt in 1..=ATTEMPTS_MAX {
        let (offer, vouched_by) = match agreed_offer(client, prefer) {
            Ok(found) => found,
            // Members caught between two snapshots offer different newest ones: ask again.
            Err((e, true)) if attempt < ATTEMPTS_MAX => {
                last_error = e;
                std::thread::sleep(DISAGREEMENT_RETRY);
                continue;
            }
            Err((e, _)) => return Err(e),
        };
        let mut sources = vouched_by.clone();
        if let Some(p) = prefer {
            sources.retain(|n| *n != p);
            sources.insert(0, p);
        }
        sources.retain(|n| !distrusted.contains(n));
        if sources.is_empty() {
            return Err(format!(
                "every member offering the snapshot at height {} served bytes that do not \
                 verify ({}); last: {last_error}",
                offer.height,
                names(&distrusted)
            ));
        }
        match download(client, target, &offer, sources, progress) {
            Ok((entry_count, downloaded_from)) => {
                return Ok(SavedBackup {
                    entry_count,
                    backup_bytes: target.file_bytes(offer.file_bytes),
                    offer,
                    vouched_by,
                    downloaded_from,
                    distrusted,
                    elapsed: started.elapsed(),
                });
            }
            Err((e, bad)) => {
                last_error = e;
                distrusted.extend(bad);
            }
        }
    }
    Err(format!(
        "no verified snapshot after {ATTEMPTS_MAX} attempts; last: {last_error}"
    ))
}

/// The newest offer at least `f + 1` members sent identically, and who sent it; or why not,
/// and whether asking again may help (members offered different snapshots).
fn agreed_offer(
    client: &Client,
    prefer: Option<NodeId>,
) -> Result<(SnapshotOffer, Vec<NodeId>), (String, bool)> {
    let answers = client
        .snapshot_offers()
        .map_err(|e| (e.to_string(), false))?;
    let needed = client.f() + 1;
    let mut groups: BTreeMap<Vec<u8>, (SnapshotOffer, Vec<NodeId>)> = BTreeMap::new();
    for (node, answer) in &answers {
        if let Ok(Some(offer)) = answer {
            groups
                .entry(crate::codec::encode(offer).to_vec())
                .or_insert_with(|| (offer.clone(), Vec::new()))
                .1
                .push(*node);
        }
    }
    let agreed = groups
        .into_values()
        .filter(|(_, nodes)| nodes.len() >= needed)
        .filter(|(_, nodes)| prefer.is_none_or(|p| nodes.contains(&p)))
        .max_by_key(|(offer, _)| offer.height);
    if let Some(found) = agreed {
        return Ok(found);
    }
    let said: Vec<String> = answers
        .iter()
        .map(|(node, answer)| match answer {
            Ok(Some(o)) => format!(
                "{node}: height {} digest {}",
                o.height,
                to_hex(&o.state_digest[..4])
            ),
            Ok(None) => format!("{node}: no snapshot yet"),
            Err(why) => format!("{node}: {why}"),
        })
        .collect();
    let none_yet = answers
        .iter()
        .filter(|(_, a)| matches!(a, Ok(None)))
        .count();
    if none_yet >= needed || answers.iter().all(|(_, a)| !matches!(a, Ok(Some(_)))) {
        return Err((
            format!(
                "no snapshot to save yet: nodes save one every snapshot_interval_blocks committed \
             blocks ([node] section of their config; default 5000), and {none_yet} of {} have \
             none so far; wait for the cluster to commit that many blocks, or lower the \
             setting ({})",
                answers.len(),
                said.join("; ")
            ),
            false,
        ));
    }
    let whom = prefer.map_or(String::new(), |p| format!(" including {p}"));
    let offered = answers
        .iter()
        .filter(|(_, a)| matches!(a, Ok(Some(_))))
        .count();
    Err((
        format!(
            "no snapshot is offered identically by f+1 = {needed} members{whom} ({}); they \
             snapshot at the same heights, so try again after the next one",
            said.join("; ")
        ),
        offered >= needed,
    ))
}

/// Downloads `offer` into `file` (through `FILE.tmp`) from `sources` in turn and verifies
/// it; returns its entry count and who served it, or why not and who served bytes that did
/// not verify.
fn download(
    client: &Client,
    target: &mut dyn BackupTarget,
    offer: &SnapshotOffer,
    sources: Vec<NodeId>,
    progress: Progress,
) -> Result<(u64, Vec<NodeId>), (String, Vec<NodeId>)> {
    target.begin(offer).map_err(|e| (e, vec![]))?;
    // Set when the whole file is in: a failure after that blames who served it.
    let mut served: Vec<NodeId> = Vec::new();
    let result = (|| {
        let mut offset = 0u64;
        let mut source = 0usize;
        let mut misses = 0usize;
        let mut served_by: Vec<NodeId> = Vec::new();
        let mut why_missed = String::new();
        while offset < offer.file_bytes {
            if misses >= MISSES_PER_SOURCE_MAX * sources.len() {
                return Err(format!(
                    "the download of the snapshot at height {} stopped at byte {offset} of {}: \
                     no member served the next chunk ({why_missed})",
                    offer.height, offer.file_bytes
                ));
            }
            let node = sources[source % sources.len()];
            let len = (offer.file_bytes - offset).min(u64::from(CHUNK_BYTES_MAX)) as u32;
            let chunk = client
                .snapshot_chunk(node, offer.height, offset, len)
                .map_err(|e| e.to_string());
            match chunk {
                Ok(Some(bytes)) if !bytes.is_empty() && bytes.len() <= len as usize => {
                    target.append(&bytes)?;
                    offset += bytes.len() as u64;
                    misses = 0;
                    if !served_by.contains(&node) {
                        served_by.push(node);
                    }
                    progress(offset, offer.file_bytes, node);
                    continue;
                }
                Ok(Some(bytes)) if bytes.is_empty() => {
                    why_missed = format!("{node} no longer has it");
                }
                Ok(Some(bytes)) => {
                    why_missed = format!("{node} sent {} bytes for {len}", bytes.len());
                }
                Ok(None) => why_missed = format!("{node} did not answer in time"),
                Err(e) => why_missed = format!("{node}: {e}"),
            }
            misses += 1;
            source += 1;
        }
        target.sync()?;
        served.clone_from(&served_by);
        let info = target.verify().map_err(|e| {
            format!(
                "the snapshot served by {} does not verify: {e}",
                names(&served_by)
            )
        })?;
        if info.height != offer.height || info.state_digest != offer.state_digest {
            return Err(format!(
                "the snapshot served by {} holds height {} digest {}, not the agreed height {} \
                 digest {}",
                names(&served_by),
                info.height,
                to_hex(&info.state_digest[..4]),
                offer.height,
                to_hex(&offer.state_digest[..4])
            ));
        }
        Ok((info.entry_count, served_by))
    })();
    match result {
        Ok(done) => {
            target.commit().map_err(|e| (e, vec![]))?;
            Ok(done)
        }
        Err(e) => {
            target.abandon();
            Err((e, served))
        }
    }
}

fn names(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    names.join(", ")
}
