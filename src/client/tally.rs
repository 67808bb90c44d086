//! The `f + 1` rule: deciding a request's outcome from what each node has answered so far.
//!
//! Invariants: each node counts at most once (the caller keeps one [`Answer`] per node, and a
//! node's first `Reply` is final: a later, different reply from the same node is ignored, so a
//! Byzantine node cannot vote twice); a result is accepted only when at least `f + 1` distinct
//! nodes sent byte-identical reply bytes, so at least one honest node vouches for it. A refusal
//! ends a request early only when `f + 1` nodes give the same final refusal (`NotAuthorised`
//! or `Invalid`); `Busy` is transient and is retried until the deadline. Pure logic: no I/O,
//! no clock.

use crate::types::NodeId;
use crate::wire::Refusal;

/// One node's latest word on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Committed reply bytes (`api::encode_reply`); final.
    Reply(Vec<u8>),
    /// The node did not take the request; `Busy` may later become a reply.
    Refused(Refusal),
}

/// What the answers so far decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: keep waiting (and resending).
    Open,
    /// `f + 1` or more nodes sent these bytes; the nodes are listed in id order.
    Accepted { reply: Vec<u8>, nodes: Vec<NodeId> },
    /// `f + 1` or more nodes refused for this final reason.
    Refused(Refusal),
}

/// Records `new` from one node into `slot`: a reply is final, a refusal may be replaced.
/// Returns false when the answer was ignored (the node already sent a reply).
pub fn record(slot: &mut Option<Answer>, new: Answer) -> bool {
    if matches!(slot, Some(Answer::Reply(_))) {
        return false;
    }
    *slot = Some(new);
    true
}

/// Applies the `f + 1` rule to `answers` (index = node id).
pub fn judge(answers: &[Option<Answer>], f: usize) -> Verdict {
    let needed = f + 1;
    for (i, answer) in answers.iter().enumerate() {
        let Some(Answer::Reply(bytes)) = answer else {
            continue;
        };
        // Only count from the first node sending these bytes, so each group is seen once.
        let first = answers[..i]
            .iter()
            .all(|a| !matches!(a, Some(Answer::Reply(b)) if b == bytes));
        if !first {
            continue;
        }
        let nodes: Vec<NodeId> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Some(Answer::Reply(b)) if b == bytes))
            .map(|(j, _)| NodeId(j as u16))
            .collect();
        if nodes.len() >= needed {
            return Verdict::Accepted {
                reply: bytes.clone(),
                nodes,
            };
        }
    }
    for reason in [Refusal::NotAuthorised, Refusal::Invalid] {
        if count_refused(answers, reason) >= needed {
            return Verdict::Refused(reason);
        }
    }
    Verdict::Open
}

/// Nodes whose latest answer is this refusal.
pub fn count_refused(answers: &[Option<Answer>], reason: Refusal) -> usize {
    answers
        .iter()
        .filter(|a| matches!(a, Some(Answer::Refused(r)) if *r == reason))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(b: &[u8]) -> Option<Answer> {
        Some(Answer::Reply(b.to_vec()))
    }

    #[test]
    fn f_plus_one_identical_replies_are_needed() {
        // f = 1: one matching reply is never enough, two are.
        assert_eq!(judge(&[reply(b"a"), None, None, None], 1), Verdict::Open);
        let v = judge(&[reply(b"bad"), reply(b"a"), None, reply(b"a")], 1);
        assert_eq!(
            v,
            Verdict::Accepted {
                reply: b"a".to_vec(),
                nodes: vec![NodeId(1), NodeId(3)]
            }
        );
        // Two different lies and two silent nodes decide nothing.
        assert_eq!(
            judge(&[reply(b"x"), reply(b"y"), None, None], 1),
            Verdict::Open
        );
    }

    #[test]
    fn a_node_counts_once_and_its_first_reply_is_final() {
        let mut slot = None;
        assert!(record(&mut slot, Answer::Refused(Refusal::Busy)));
        assert!(record(&mut slot, Answer::Reply(b"a".to_vec())));
        assert!(!record(&mut slot, Answer::Reply(b"b".to_vec())));
        assert!(!record(&mut slot, Answer::Refused(Refusal::Busy)));
        assert_eq!(slot, reply(b"a"));
    }

    #[test]
    fn refusals_end_a_request_only_from_f_plus_one_nodes() {
        let na = Some(Answer::Refused(Refusal::NotAuthorised));
        let busy = Some(Answer::Refused(Refusal::Busy));
        assert_eq!(judge(&[na.clone(), None, None, None], 1), Verdict::Open);
        assert_eq!(
            judge(&[na.clone(), na.clone(), None, None], 1),
            Verdict::Refused(Refusal::NotAuthorised)
        );
        // Busy is transient: even from everyone it decides nothing (the deadline does).
        let all_busy = vec![busy; 4];
        assert_eq!(judge(&all_busy, 1), Verdict::Open);
        assert_eq!(count_refused(&all_busy, Refusal::Busy), 4);
    }
}
