//! The kinds of Byzantine member, their names (as written in `bftd sim --byzantine` and in a
//! node config's `[faults] byzantine`), and which of them the simulator and a `bftd` process
//! can play.

use std::str::FromStr;

/// How a Byzantine member misbehaves. Every kind signs with the member's real key, so it
/// attacks the protocol, not the signature scheme (except `BadSig`, which attacks the verifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByzKind {
    /// Sends nothing at all: no consensus message, no state-transfer answer, no client reply.
    Silent,
    /// As leader, proposes two different blocks, both to everyone in opposite orders.
    Equivocate,
    /// Votes for every proposal it sees, and for a conflicting block of the same round.
    DoubleVote,
    /// Every signature it sends is corrupted.
    BadSig,
    /// Re-sends old messages (its own and others') to random members.
    Replay,
    /// Floods far-future votes and timeouts and invalid proposals.
    Flood,
    /// Two honest copies run with one key, each talking to half the cluster (Twins).
    Twins,
    /// As leader after a timeout, extends an older QC than its highest, trying to orphan a
    /// block that may have committed (only the TC voting rule stops it); and tells only one
    /// node of the QCs it forms.
    Fork,
    /// Answers block-sync requests with blocks it re-authored (other payload, its own valid
    /// signature), which the requested chain's QCs do not certify.
    ForgeSync,
    /// Returns wrong values, versions and outcomes in its replies to clients, for reads and
    /// writes alike, and snapshot chunks with a flipped byte to clients downloading a backup
    /// (a `bftd` process only: the simulator has no clients).
    LieToClients,
    /// Copies the honest snapshot offer but serves a forged snapshot file whose checksum is
    /// valid (a `bftd` process only: the simulator does not transfer state by snapshot).
    ForgeSnapshot,
    /// As leader, carries a wrong state root in its proposals (one byte of the last root it
    /// carries flipped, re-signed): honest voters must refuse them, or the chain would
    /// certify a state no honest node has.
    WrongRoot,
    /// Otherwise honest, floods every other member with requests that are cheap to send and
    /// costly to answer: sync requests from height 0, `SyncInfo` with the genesis QC (which
    /// looks behind and asks for certificates back), replays of its own old timeouts, and
    /// snapshot chunk requests (a `bftd` process only: the simulator has no rate limits to
    /// test and no snapshot files).
    FloodRequests,
    /// Answers verified reads with a wrong value made to look plausible: alternately the
    /// honest proof with a changed value, and a made-up root (under the honest certificate's
    /// height) with a proof that matches it (a `bftd` process only: the simulator has no
    /// clients).
    LieVerifiedReads,
    /// As leader, stamps its proposals with a bad time (re-signed): alternately an hour ahead
    /// of its clock and 0 (not above the parent's). Honest voters must refuse both, or
    /// consensus time (and with it key expiry) would jump or run backwards.
    BadTime,
    /// Answers read-barrier probes with lies, in turn: a QC for a far-future round with
    /// made-up signatures, the genesis QC (valid, but as low as can be), and bytes that do not
    /// decode (a `bftd` process only: the simulator runs no read barriers).
    LieToProbes,
}

impl ByzKind {
    /// The kinds the simulator plays (`bftd sim --byzantine`, and its `mix`).
    pub const ALL: [ByzKind; 11] = [
        ByzKind::Silent,
        ByzKind::Equivocate,
        ByzKind::DoubleVote,
        ByzKind::BadSig,
        ByzKind::Replay,
        ByzKind::Flood,
        ByzKind::Twins,
        ByzKind::Fork,
        ByzKind::ForgeSync,
        ByzKind::WrongRoot,
        ByzKind::BadTime,
    ];

    /// The kinds a `bftd` process plays (`[faults] byzantine`, with the `byzantine` feature).
    /// Not `Twins`: a process runs one core.
    pub const DAEMON: [ByzKind; 14] = [
        ByzKind::Silent,
        ByzKind::Equivocate,
        ByzKind::DoubleVote,
        ByzKind::BadSig,
        ByzKind::Replay,
        ByzKind::Flood,
        ByzKind::Fork,
        ByzKind::ForgeSync,
        ByzKind::LieToClients,
        ByzKind::ForgeSnapshot,
        ByzKind::WrongRoot,
        ByzKind::FloodRequests,
        ByzKind::LieVerifiedReads,
        ByzKind::LieToProbes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ByzKind::Silent => "silent",
            ByzKind::Equivocate => "equivocate",
            ByzKind::DoubleVote => "double-vote",
            ByzKind::BadSig => "bad-sig",
            ByzKind::Replay => "replay",
            ByzKind::Flood => "flood",
            ByzKind::Twins => "twins",
            ByzKind::Fork => "fork",
            ByzKind::ForgeSync => "forge-sync",
            ByzKind::LieToClients => "lie-to-clients",
            ByzKind::ForgeSnapshot => "forge-snapshot",
            ByzKind::WrongRoot => "wrong-root",
            ByzKind::FloodRequests => "flood-requests",
            ByzKind::LieVerifiedReads => "lie-verified-reads",
            ByzKind::BadTime => "bad-time",
            ByzKind::LieToProbes => "lie-to-probes",
        }
    }

    /// The kind named `s` among `kinds`, or an error listing the names there are.
    pub fn parse_among(s: &str, kinds: &[ByzKind]) -> Result<ByzKind, String> {
        kinds
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                format!(
                    "unknown Byzantine kind '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Parses a simulator kind (one of [`ByzKind::ALL`]).
impl FromStr for ByzKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ByzKind::parse_among(s, &ByzKind::ALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for k in ByzKind::ALL.iter().chain(ByzKind::DAEMON.iter()) {
            assert_eq!(
                ByzKind::parse_among(
                    k.name(),
                    &ByzKind::DAEMON
                        .iter()
                        .chain(ByzKind::ALL.iter())
                        .copied()
                        .collect::<Vec<_>>()
                ),
                Ok(*k)
            );
        }
        let err = ByzKind::parse_among("liar", &ByzKind::DAEMON).unwrap_err();
        assert!(
            err.contains("'liar'")
                && err.contains("lie-to-clients, forge-snapshot, wrong-root, flood-requests"),
            "{err}"
        );
        assert!(ByzKind::parse_among("twins", &ByzKind::DAEMON).is_err());
        assert!(
            "lie-to-clients".parse::<ByzKind>().is_err(),
            "the simulator has no clients"
        );
    }
}
