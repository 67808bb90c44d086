//! What can go wrong for a client call, worded so a person can act on it.
//!
//! Every error that depends on the cluster says what each node did ([`NodeAnswer`]): which
//! reply it sent (a short fingerprint of the bytes, so disagreeing nodes are visible), which
//! refusal, or that it stayed silent and what its link was doing. Nothing here is built from a
//! panic: bytes from nodes that do not decode become [`ClientError::BadReply`].

use std::fmt;

use crate::api::{OpError, Rejection};
use crate::types::NodeId;
use crate::wire::Refusal;

/// What one node had said about a request when the client gave up on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAnswer {
    pub node: NodeId,
    pub said: Said,
}

/// One node's answer, as reported in an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Said {
    /// A reply whose bytes hash to `fingerprint` (first 4 bytes of blake3, hex).
    Reply {
        fingerprint: String,
    },
    Refused(Refusal),
    /// No answer; `link` says whether the node was connected (e.g. "connected",
    /// "unreachable: connection refused").
    Nothing {
        link: String,
    },
}

impl fmt::Display for NodeAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.said {
            Said::Reply { fingerprint } => write!(f, "{} replied #{fingerprint}", self.node),
            Said::Refused(r) => write!(f, "{} refused ({})", self.node, refusal_text(*r)),
            Said::Nothing { link } => write!(f, "{} no answer ({link})", self.node),
        }
    }
}

/// A short human word for a refusal.
pub fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::Busy => "busy",
        Refusal::NotAuthorised => "not authorised",
        Refusal::Invalid => "invalid request",
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// No `f + 1` matching replies before the deadline, and no clearer cause.
    Timeout {
        seq: u64,
        waited_ms: u64,
        needed: usize,
        answers: Vec<NodeAnswer>,
    },
    /// At least `f + 1` nodes were still refusing with `Busy` at the deadline.
    Busy { seq: u64, answers: Vec<NodeAnswer> },
    /// `f + 1` nodes refused the request's signing key (not on the cluster's allow-list).
    NotAuthorised { seq: u64, answers: Vec<NodeAnswer> },
    /// `f + 1` nodes refused the request as invalid (bad signature or over a limit).
    Invalid { seq: u64, answers: Vec<NodeAnswer> },
    /// No link to any node came up before the deadline, or too few nodes listen to reach
    /// `f + 1` answers (connections refused).
    Unreachable { answers: Vec<NodeAnswer> },
    /// Too many of the configured addresses are held by nodes of another cluster (or by nodes
    /// with other keys than the client config lists) to reach `f + 1` answers.
    WrongCluster { answers: Vec<NodeAnswer> },
    /// The cluster agreed (`f + 1` nodes) that the request was not executed, and why.
    Rejected { seq: u64, rejection: Rejection },
    /// The cluster agreed (`f + 1` nodes) that the operation failed and changed nothing, and
    /// why (e.g. its lease does not exist).
    Failed(OpError),
    /// Agreed reply bytes that do not decode, or decode to the wrong shape for the call.
    BadReply(String),
    /// The request (or a stale read's key) is over a limit; nothing was sent.
    TooLarge(String),
    /// A caller mistake, e.g. an empty batch.
    Usage(String),
    /// The client was shut down.
    Closed,
    /// The node asked would not answer from its state, and said why (e.g. its state diverged
    /// from the certified one); ask another node.
    Unavailable { node: NodeId, reason: String },
    /// A verified read's reply failed a check (certificate, header, proof or height): the node
    /// sent something the committee did not certify. Nothing of it was returned.
    Unverified { node: NodeId, reason: String },
    /// A watch needed history from `asked_from`, which `f + 1` nodes no longer keep; it can
    /// resume from `resume_from` (the changes in between are not available any more).
    Compacted { asked_from: u64, resume_from: u64 },
}

fn list(answers: &[NodeAnswer]) -> String {
    let parts: Vec<String> = answers.iter().map(|a| a.to_string()).collect();
    parts.join("; ")
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Timeout {
                seq,
                waited_ms,
                needed,
                answers,
            } => write!(
                f,
                "timed out after {:.1} s waiting for {needed} matching replies to request \
                 {seq}: {}",
                *waited_ms as f64 / 1000.0,
                list(answers)
            ),
            ClientError::Busy { seq, answers } => write!(
                f,
                "cluster busy: request {seq} was still refused as busy at the deadline: {}",
                list(answers)
            ),
            ClientError::NotAuthorised { seq, answers } => write!(
                f,
                "not authorised: the nodes refuse this client's signing key (request {seq}): {}",
                list(answers)
            ),
            ClientError::Invalid { seq, answers } => write!(
                f,
                "request {seq} refused as invalid (signature or limits): {}",
                list(answers)
            ),
            ClientError::Unreachable { answers } => {
                write!(f, "cluster unreachable: {}", list(answers))
            }
            ClientError::WrongCluster { answers } => write!(
                f,
                "wrong cluster: the nodes at the configured addresses are not this cluster's \
                 members: {}",
                list(answers)
            ),
            ClientError::Rejected { seq, rejection } => {
                write!(f, "request {seq} rejected by the cluster: {rejection}")
            }
            ClientError::Failed(error) => write!(f, "failed: {error}"),
            ClientError::BadReply(why) => write!(f, "bad reply: {why}"),
            ClientError::TooLarge(why) => write!(f, "too large, nothing was sent: {why}"),
            ClientError::Usage(why) => f.write_str(why),
            ClientError::Closed => f.write_str("the client was shut down"),
            ClientError::Unavailable { node, reason } => {
                write!(f, "{node} will not answer from its state: {reason}")
            }
            ClientError::Unverified { node, reason } => {
                write!(f, "verified read from {node} rejected: {reason}")
            }
            ClientError::Compacted {
                asked_from,
                resume_from,
            } => write!(
                f,
                "compacted: the cluster no longer keeps the changes from height {asked_from}; \
                 resume from {resume_from} (--from-height {resume_from}; changes in between \
                 are gone)"
            ),
        }
    }
}

impl std::error::Error for ClientError {}
