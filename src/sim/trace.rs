//! One-line descriptions of a replica's inputs and effects, for `bftd sim --trace NODES`.

use crate::replica::{Effect, Input};
use crate::types::Message;
use crate::wire::StateMsg;

fn trace_msg(m: &Message) -> String {
    match m {
        Message::Proposal(b) => format!(
            "proposal r{} h{} qc(r{} {:?}) tc{:?} by {:?} payload {} roots after {} {:?}",
            b.round,
            b.height,
            b.qc.round,
            b.qc.block_id,
            b.tc.as_ref().map(|t| (t.round, t.high_qc.round)),
            b.author,
            b.payload.len(),
            b.roots_after,
            b.state_roots.iter().map(|(h, _)| *h).collect::<Vec<_>>()
        ),
        Message::Vote(v) => format!("vote r{} {:?} by {:?}", v.round, v.block_id, v.voter),
        Message::Timeout(t) => format!(
            "timeout r{} hqc r{} by {:?}",
            t.round, t.high_qc.round, t.author
        ),
        Message::SyncInfo(s) => format!(
            "syncinfo qc r{} {:?} tc {:?}",
            s.high_qc.round,
            s.high_qc.block_id,
            s.high_tc.as_ref().map(|t| t.round)
        ),
        Message::SyncRequest(r) => format!("syncreq {:?} above h{}", r.target, r.committed_height),
        Message::SyncResponse(r) => format!(
            "syncresp {:?}",
            r.blocks
                .iter()
                .map(|b| (b.height, b.round))
                .collect::<Vec<_>>()
        ),
    }
}

pub fn trace_input(e: &Input) -> String {
    match e {
        Input::MessageReceived { from, msg } => {
            let m = match &**msg {
                crate::crypto::VerifiedMessage::Proposal { id, block } => {
                    format!(
                        "{id:?} {}",
                        trace_msg(&Message::Proposal((**block).clone()))
                    )
                }
                crate::crypto::VerifiedMessage::Vote(v) => trace_msg(&Message::Vote(v.clone())),
                crate::crypto::VerifiedMessage::Timeout(t) => {
                    trace_msg(&Message::Timeout(t.clone()))
                }
                crate::crypto::VerifiedMessage::SyncInfo(s) => {
                    trace_msg(&Message::SyncInfo(s.clone()))
                }
                crate::crypto::VerifiedMessage::SyncRequest(r) => {
                    trace_msg(&Message::SyncRequest(r.clone()))
                }
                crate::crypto::VerifiedMessage::SyncResponse { blocks } => {
                    format!(
                        "syncresp {:?}",
                        blocks
                            .iter()
                            .map(|(_, b)| (b.height, b.round))
                            .collect::<Vec<_>>()
                    )
                }
            };
            format!("from {from:?}: {m}")
        }
        Input::RequestReceived(r) => format!("request {}", r.seq),
        Input::StateReceived { from, msg } => format!("from {from:?}: state {}", trace_state(msg)),
        Input::Durable { ticket } => format!("durable {ticket}"),
        Input::Installed(r) => format!("installed {:?}", r.as_ref().map(|h| h.height)),
        Input::DownloadFailed => "download failed".into(),
        Input::Applied { height, root } => {
            format!("applied {height} root {:02x}{:02x}..", root[0], root[1])
        }
        Input::Tick => "tick".into(),
        Input::ReadsWaiting { round } => format!("reads waiting for round {round}"),
    }
}

fn trace_state(m: &StateMsg) -> String {
    match m {
        StateMsg::OfferRequest => "offer request".into(),
        StateMsg::Offer(o) => format!("offer {:?}", o.as_ref().map(|o| o.height)),
        StateMsg::ChunkRequest { height, offset, .. } => {
            format!("chunk request h{height} @{offset}")
        }
        StateMsg::Chunk {
            height,
            offset,
            bytes,
        } => format!("chunk h{height} @{offset} ({} bytes)", bytes.len()),
    }
}

pub fn trace_effect(a: &Effect) -> String {
    match a {
        Effect::Send { to, msg } => format!("send {to:?} {}", trace_msg(msg)),
        Effect::Broadcast { msg } => format!("broadcast {}", trace_msg(msg)),
        Effect::SendState { to, msg } => format!("send {to:?} state {}", trace_state(msg)),
        Effect::BroadcastState { msg } => format!("broadcast state {}", trace_state(msg)),
        Effect::Persist { ticket, items } => format!("persist {ticket} ({} items)", items.len()),
        Effect::Commit { id, block } => format!("COMMIT h{} r{} {id:?}", block.height, block.round),
        Effect::ServeCommitted {
            to,
            from_height,
            to_height,
            ..
        } => format!("serve {to:?} committed h{from_height}..=h{to_height} from disk"),
        Effect::ReplyFromTable { id, .. } => format!("reply from table {}", id.seq),
        Effect::RefuseBusy { id } => format!("refuse busy {}", id.seq),
        Effect::DownloadBegin { offer } => format!("download h{}", offer.height),
        Effect::DownloadAppend { offset, bytes } => {
            format!("append @{offset} ({} bytes)", bytes.len())
        }
        Effect::InstallSnapshot { offer } => format!("INSTALL h{}", offer.height),
    }
}
