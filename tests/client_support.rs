//! Helpers for the client tests: a cluster of FAKE nodes built on the real node-side transport
//! (`bftd::net::Transport`), each with a switchable behaviour (honest, silent, lying, busy,
//! refusing, sending garbage), sharing one state machine so honest replies are identical.
//!
//! Included by the client test files with `#[path]`; compiled alone it holds no tests.

#![allow(dead_code)]

#[path = "support/mod.rs"]
mod common;
#[allow(unused_imports)] // each test binary uses a different part
pub use common::{DEADLINE, wait_until};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bftd::api::{LeaseOp, NotSimple, OpError};
use bftd::client::{Client, ClientOptions, ClusterEndpoints, Endpoint};
use bftd::crypto::{Signer, domain};
use bftd::kv::{
    CompareOp, CompareTarget, KeyValue, Op, OpReply, OpResult, Reply, Txn, TxnOp, VersionedValue,
    decode_ops, encode_reply,
};
use bftd::net::{
    ClientAccess, NetLimits, Outbound, PeerConfig, Remote, StaticKeypair, Transport,
    TransportConfig, generate_static_keypair,
};
use bftd::types::{ClusterId, NodeId};
use bftd::wire::client::{
    ClientFrame, NodeFrame, NodeStatus, Refusal, decode_client_frame, encode_node_frame,
};
use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Reads and drops everything.
    Silent,
    /// Replies to submits with a well-formed but wrong reply, different per node.
    Lie,
    Busy,
    NotAuthorised,
    /// Answers every frame with bytes that are not a node frame.
    Garbage,
}

/// The one "consensus order" all honest fakes share: the first node to see a request executes
/// it, the others return the stored reply bytes, as real nodes would after a commit.
#[derive(Default)]
pub struct SharedState {
    pub kv: BTreeMap<Vec<u8>, VersionedValue>,
    pub height: u64,
    pub replies: HashMap<([u8; 32], u64, u64), Vec<u8>>,
    /// Requests executed (each (client, seq) once).
    pub executed: u64,
}

pub struct FakeNode {
    pub behaviour: Arc<Mutex<Behaviour>>,
    /// Submit frames this node received (including resends).
    pub submits_seen: Arc<AtomicU64>,
    transport: Option<Arc<Transport>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct FakeCluster {
    pub cluster: ClusterId,
    pub keys: Vec<StaticKeypair>,
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<FakeNode>,
    pub state: Arc<Mutex<SharedState>>,
    pub client_signing_secret: [u8; 32],
    pub client_noise: StaticKeypair,
}

fn limits() -> NetLimits {
    NetLimits {
        max_frame_bytes: 4 << 20,
        write_buffer_bytes_max: 32 << 20,
        handshake_timeout_ms: 2000,
        ..NetLimits::default()
    }
}

impl FakeCluster {
    /// Starts `n` honest fake nodes on 127.0.0.1, on ports outside the ephemeral range (a
    /// restarted fake binds its old port again, which an outgoing connection could have taken
    /// in the meantime if the kernel had handed it out).
    pub fn start(n: usize) -> Self {
        let mut c = Self {
            cluster: ClusterId::from_name("client-test"),
            keys: (0..n).map(|_| generate_static_keypair().unwrap()).collect(),
            addrs: (0..n).map(|_| common::free_addr()).collect(),
            nodes: Vec::new(),
            state: Arc::new(Mutex::new(SharedState::default())),
            client_signing_secret: [7; 32],
            client_noise: generate_static_keypair().unwrap(),
        };
        for i in 0..n {
            let node = c.spawn(i, c.addrs[i], Arc::new(Mutex::new(Behaviour::Honest)));
            c.nodes.push(node);
        }
        c
    }

    fn spawn(&mut self, i: usize, addr: SocketAddr, behaviour: Arc<Mutex<Behaviour>>) -> FakeNode {
        let config = TransportConfig {
            self_id: NodeId(i as u16),
            listen_addr: addr,
            static_private_key: self.keys[i].private,
            // No peer links: each fake serves only clients.
            peers: vec![PeerConfig {
                id: NodeId(i as u16),
                addr,
                static_public_key: self.keys[i].public,
            }],
            clients: ClientAccess::Any,
            prologue: self.cluster.0.to_vec(),
            refusal_notice: Vec::new(),
            limits: limits(),
        };
        let transport = Arc::new(Transport::start(config).unwrap());
        self.addrs[i] = transport.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let submits_seen = Arc::new(AtomicU64::new(0));
        let ctx = NodeCtx {
            id: i as u16,
            cluster: self.cluster,
            behaviour: Arc::clone(&behaviour),
            state: Arc::clone(&self.state),
            submits_seen: Arc::clone(&submits_seen),
            started: Instant::now(),
        };
        let (t, s) = (Arc::clone(&transport), Arc::clone(&stop));
        let thread = std::thread::spawn(move || serve(&t, &s, &ctx));
        FakeNode {
            behaviour,
            submits_seen,
            transport: Some(transport),
            stop,
            thread: Some(thread),
        }
    }

    pub fn set(&self, i: usize, b: Behaviour) {
        *self.nodes[i].behaviour.lock() = b;
    }

    /// Stops node `i` (its listener and every connection close).
    pub fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.stop.store(true, Ordering::Release);
        if let Some(t) = node.thread.take() {
            t.join().unwrap();
        }
        if let Some(t) = node.transport.take() {
            match Arc::try_unwrap(t) {
                Ok(t) => t.shutdown(),
                Err(_) => panic!("transport still shared"),
            }
        }
    }

    /// Starts node `i` again on its old address, with its old behaviour.
    pub fn restart(&mut self, i: usize) {
        let behaviour = Arc::clone(&self.nodes[i].behaviour);
        let node = self.spawn(i, self.addrs[i], behaviour);
        self.nodes[i] = node;
    }

    pub fn endpoints(&self) -> ClusterEndpoints {
        ClusterEndpoints {
            cluster: self.cluster,
            f: (self.keys.len() - 1) / 3,
            members: (0..self.keys.len())
                .map(|i| Endpoint {
                    id: NodeId(i as u16),
                    addr: self.addrs[i],
                    noise_public_key: self.keys[i].public,
                })
                .collect(),
            signer: Signer::new(self.client_signing_secret, self.cluster),
            noise_secret: self.client_noise.private,
            // The fake nodes here sign no votes: verified reads are tested against real nodes.
            committee: None,
        }
    }

    /// A client with fast resends and redials, and the given request timeout.
    pub fn client(&self, request_timeout: Duration) -> Client {
        Client::start(self.endpoints(), test_options(request_timeout)).unwrap()
    }

    pub fn executed(&self) -> u64 {
        self.state.lock().executed
    }
}

pub fn test_options(request_timeout: Duration) -> ClientOptions {
    ClientOptions {
        request_timeout,
        resend_interval: Duration::from_millis(100),
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(200),
        query_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

struct NodeCtx {
    id: u16,
    cluster: ClusterId,
    behaviour: Arc<Mutex<Behaviour>>,
    state: Arc<Mutex<SharedState>>,
    submits_seen: Arc<AtomicU64>,
    started: Instant,
}

fn serve(transport: &Transport, stop: &AtomicBool, ctx: &NodeCtx) {
    while !stop.load(Ordering::Acquire) {
        let Ok(msg) = transport.inbound().recv_timeout(Duration::from_millis(20)) else {
            continue;
        };
        let Remote::Client(client_id) = msg.from else {
            continue;
        };
        let behaviour = *ctx.behaviour.lock();
        let reply = match behaviour {
            Behaviour::Silent => None,
            Behaviour::Garbage => Some(b"\xffthis is not a node frame".to_vec()),
            _ => match decode_client_frame(&msg.bytes) {
                Ok(frame) => answer(ctx, behaviour, frame).map(|f| encode_node_frame(&f)),
                Err(_) => None,
            },
        };
        if let Some(bytes) = reply {
            let _ = transport.send(Outbound::ToClient(client_id, bytes));
        }
    }
}

fn answer(ctx: &NodeCtx, behaviour: Behaviour, frame: ClientFrame) -> Option<NodeFrame> {
    match frame {
        ClientFrame::Submit(req) => {
            ctx.submits_seen.fetch_add(1, Ordering::Relaxed);
            let (client, session, seq) = (req.client.0, req.session, req.seq);
            let ops_digest = bftd::types::ops_digest(&req.ops);
            let refuse = |reason| {
                Some(NodeFrame::Refused {
                    client,
                    session,
                    seq,
                    reason,
                })
            };
            match behaviour {
                Behaviour::Busy => return refuse(Refusal::Busy),
                Behaviour::NotAuthorised => return refuse(Refusal::NotAuthorised),
                _ => {}
            }
            if !signature_ok(ctx.cluster, &req) {
                return refuse(Refusal::Invalid);
            }
            let reply = if behaviour == Behaviour::Lie {
                let lie = OpResult::Put {
                    version: 1000 + u64::from(ctx.id),
                };
                encode_reply(&Reply::Done(vec![OpReply::Simple(lie)]))
            } else {
                execute(&ctx.state, (client, session, seq), &req.ops)
            };
            Some(NodeFrame::Reply {
                client,
                session,
                seq,
                ops_digest,
                reply,
            })
        }
        ClientFrame::StaleGet { id, key } => {
            let s = ctx.state.lock();
            Some(NodeFrame::StaleValue {
                id,
                applied_height: s.height,
                value: s.kv.get(&key).cloned(),
            })
        }
        // No consensus to probe: the client falls back to an ordered get.
        ClientFrame::BarrierGet { id, .. } => Some(NodeFrame::Unavailable {
            id,
            reason: "a fake node runs no read barrier".into(),
        }),
        // These fake nodes keep no state tree and sign no votes: they cannot prove anything.
        ClientFrame::VerifiedGet { id, .. } => Some(NodeFrame::Unavailable {
            id,
            reason: "a fake node proves nothing".into(),
        }),
        ClientFrame::Status { id } => {
            let s = ctx.state.lock();
            Some(NodeFrame::Status {
                id,
                status: NodeStatus {
                    node_id: ctx.id,
                    round: s.height + 5,
                    leader: 1,
                    committed_height: s.height,
                    applied_height: s.height,
                    applied_block_time_ms: 0,
                    state_digest: [0xab; 32],
                    certified_height: s.height,
                    certified_root: [0xcd; 32],
                    uptime_ms: ctx.started.elapsed().as_millis() as u64,
                    mempool_requests: 0,
                    peers_connected: 3,
                },
            })
        }
        // The fakes keep no snapshots (a cluster younger than snapshot_interval_blocks).
        ClientFrame::SnapshotOffer { id } => Some(NodeFrame::SnapshotOffer { id, offer: None }),
        ClientFrame::SnapshotChunk {
            id, height, offset, ..
        } => Some(NodeFrame::SnapshotChunk {
            id,
            height,
            offset,
            bytes: Vec::new(),
        }),
        // The fakes keep no change log: watches are tested against real nodes.
        ClientFrame::Watch { id, .. } => Some(NodeFrame::Unavailable {
            id,
            reason: "this fake node does not serve watches".into(),
        }),
        ClientFrame::Unwatch { .. } => None,
    }
}

fn signature_ok(cluster: ClusterId, req: &bftd::types::ClientRequest) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&req.client.0) else {
        return false;
    };
    let body = domain::request_body(&req.client, req.session, req.seq, &req.ops);
    let msg = domain::signing_bytes(domain::REQUEST, &cluster, &body);
    let sig = ed25519_dalek::Signature::from_bytes(&req.signature.0);
    key.verify_strict(&msg, &sig).is_ok()
}

/// Executes a request once in the shared order; later calls return the stored bytes.
fn execute(state: &Mutex<SharedState>, id: ([u8; 32], u64, u64), ops: &[u8]) -> Vec<u8> {
    let mut s = state.lock();
    if let Some(r) = s.replies.get(&id) {
        return r.clone();
    }
    s.height += 1;
    s.executed += 1;
    let reply = match decode_ops(ops) {
        Ok(ops) => Reply::Done(ops.into_iter().map(|op| apply(&mut s, op)).collect()),
        Err(rejection) => Reply::Rejected(rejection),
    };
    let bytes = encode_reply(&reply);
    s.replies.insert(id, bytes.clone());
    bytes
}

fn apply(s: &mut SharedState, op: Op) -> OpReply {
    match op.into_simple() {
        // The fakes keep no lease table: every lease names a lease that does not exist.
        Ok(TxnOp::PutLease { lease, .. }) => OpReply::Failed(OpError::LeaseNotFound { id: lease }),
        Ok(simple) => OpReply::Simple(apply_simple(s, simple)),
        Err(NotSimple::Txn(txn)) => apply_txn(s, txn),
        Err(NotSimple::Lease(op)) => OpReply::Failed(match op {
            LeaseOp::Grant { .. } | LeaseOp::List => OpError::TooManyLeases,
            LeaseOp::KeepAlive { id } | LeaseOp::Revoke { id } | LeaseOp::TimeToLive { id, .. } => {
                OpError::LeaseNotFound { id }
            }
        }),
    }
}

fn apply_txn(s: &mut SharedState, txn: Txn) -> OpReply {
    let holds = txn.compare.iter().all(|c| {
        let cur = s.kv.get(&c.key);
        let ord = match (&c.target, cur) {
            (CompareTarget::Version(v), _) => cur.map_or(0, |x| x.version).cmp(v),
            (CompareTarget::Value(v), Some(x)) => x.value.cmp(v),
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Exists(e), _) => cur.is_some().cmp(e),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Less => ord.is_lt(),
            CompareOp::Greater => ord.is_gt(),
        }
    });
    let branch = if holds { txn.success } else { txn.failure };
    if let Some(lease) = branch.iter().find_map(|op| match op {
        TxnOp::PutLease { lease, .. } => Some(*lease),
        _ => None,
    }) {
        return OpReply::Failed(OpError::LeaseNotFound { id: lease });
    }
    let results = branch.into_iter().map(|op| apply_simple(s, op)).collect();
    OpReply::Txn {
        succeeded: holds,
        results,
    }
}

fn apply_simple(s: &mut SharedState, op: TxnOp) -> OpResult {
    let height = s.height;
    match op {
        TxnOp::Put { key, value } => {
            let version = s.kv.get(&key).map_or(0, |v| v.version) + 1;
            s.kv.insert(
                key,
                VersionedValue {
                    value,
                    version,
                    mod_height: height,
                    expires_at_ms: None,
                },
            );
            OpResult::Put { version }
        }
        // The fakes keep no consensus time: the height stands in for it, and nothing expires.
        TxnOp::PutTtl { key, value, ttl_ms } => {
            let version = s.kv.get(&key).map_or(0, |v| v.version) + 1;
            let expires_at_ms = height + ttl_ms;
            s.kv.insert(
                key,
                VersionedValue {
                    value,
                    version,
                    mod_height: height,
                    expires_at_ms: Some(expires_at_ms),
                },
            );
            OpResult::PutTtl {
                version,
                expires_at_ms,
            }
        }
        TxnOp::Get { key } => OpResult::Get {
            found: s.kv.get(&key).cloned(),
        },
        TxnOp::PutLease { .. } => unreachable!("answered by apply and apply_txn"),
        TxnOp::Delete { key } => OpResult::Delete {
            existed: s.kv.remove(&key).is_some(),
        },
        TxnOp::DeleteRange { start, end } => {
            let doomed: Vec<Vec<u8>> =
                s.kv.range(start..)
                    .take_while(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
                    .map(|(k, _)| k.clone())
                    .take(1001)
                    .collect();
            let more = doomed.len() > 1000;
            let mut deleted = 0;
            for k in doomed.iter().take(1000) {
                s.kv.remove(k);
                deleted += 1;
            }
            OpResult::DeleteRange { deleted, more }
        }
        TxnOp::Range { start, end, limit } => {
            let mut entries: Vec<KeyValue> =
                s.kv.range(start..)
                    .take_while(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect();
            let more = entries.len() > limit as usize;
            entries.truncate(limit as usize);
            OpResult::Range { entries, more }
        }
    }
}
