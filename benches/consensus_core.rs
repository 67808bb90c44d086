//! The consensus core's own cost: `n` cores in one thread on an instant, lossless in-memory
//! network with immediate persistence, every message encoded, decoded and verified as in the
//! daemon. Reports committed blocks per second (each block carries `BATCH` requests whose
//! client signatures were verified on arrival, as in the daemon).
//!
//! `cargo bench --bench consensus_core`

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bftd::codec;
use bftd::consensus::{Action, Core, CoreConfig, Event};
use bftd::crypto::{ClientPolicy, Committee, Signer, Verified, Verifier, VerifierLimits, domain};
use bftd::types::{ClientKey, ClientRequest, ClusterId, Message, NodeId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 100;

struct Harness {
    cores: Vec<Core>,
    verifiers: Vec<Verifier>,
    queue: VecDeque<(usize, NodeId, Vec<u8>)>,
    local: VecDeque<(usize, Event)>,
    committed: u64,
    now: u64,
}

fn requests(cluster: ClusterId, count: usize) -> Vec<ClientRequest> {
    let signer = Signer::new([42; 32], cluster);
    let client = ClientKey(signer.public_key());
    (0..count as u64)
        .map(|seq| {
            let ops = format!("put key{seq} value{seq}").into_bytes();
            ClientRequest {
                client,
                session: 1,
                seq,
                signature: signer.sign(
                    domain::REQUEST,
                    &domain::request_body(&client, 1, seq, &ops),
                ),
                ops,
            }
        })
        .collect()
}

impl Harness {
    fn new(n: usize, reqs: &[ClientRequest]) -> Self {
        let cluster = ClusterId::from_name("bench");
        let secret = |i: usize| [i as u8 + 1; 32];
        let keys: Vec<[u8; 32]> = (0..n)
            .map(|i| Signer::new(secret(i), cluster).public_key())
            .collect();
        let committee = Arc::new(Committee::new(cluster, &keys, (n - 1) / 3).expect("committee"));
        let cfg = CoreConfig {
            block_requests_max: BATCH,
            mempool_requests_max: reqs.len() + 1,
            ..CoreConfig::default()
        };
        let mut h = Self {
            cores: Vec::new(),
            verifiers: Vec::new(),
            queue: VecDeque::new(),
            local: VecDeque::new(),
            committed: 0,
            now: 0,
        };
        for i in 0..n {
            let signer = Signer::new(secret(i), cluster);
            h.cores.push(Core::new(
                cfg.clone(),
                committee.clone(),
                signer,
                NodeId(i as u16),
                None,
            ));
            h.verifiers.push(Verifier::new(
                committee.clone(),
                VerifierLimits::default(),
                ClientPolicy::Any,
            ));
        }
        for i in 0..n {
            let verified: Vec<Verified<ClientRequest>> = h.verifiers[i]
                .verify_requests(reqs.to_vec())
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            for r in verified {
                h.local.push_back((i, Event::RequestReceived(r)));
            }
        }
        h
    }

    fn dispatch(&mut self, node: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => self.push(node, to.index(), &msg),
                Action::Broadcast { msg } => {
                    for to in (0..self.cores.len()).filter(|&t| t != node) {
                        self.push(node, to, &msg);
                    }
                }
                Action::Persist { ticket, .. } => {
                    self.local.push_back((node, Event::Persisted { ticket }))
                }
                Action::Commit { .. } if node == 0 => self.committed += 1,
                _ => {}
            }
        }
    }

    fn push(&mut self, from: usize, to: usize, msg: &Message) {
        self.queue
            .push_back((to, NodeId(from as u16), codec::encode(msg).to_vec()));
    }

    /// Runs until node 0 committed `blocks` more blocks (or the cluster went idle).
    fn run(&mut self, blocks: u64) -> u64 {
        let target = self.committed + blocks;
        while self.committed < target {
            self.now += 1;
            if let Some((node, ev)) = self.local.pop_front() {
                let actions = self.cores[node].handle(self.now, ev);
                self.dispatch(node, actions);
            } else if let Some((to, from, bytes)) = self.queue.pop_front() {
                let Ok(msg) = codec::decode_message(&bytes) else {
                    continue;
                };
                let Ok(msg) = self.verifiers[to].verify_message(msg) else {
                    continue;
                };
                let actions = self.cores[to].handle(self.now, Event::MessageReceived { from, msg });
                self.dispatch(to, actions);
            } else {
                break;
            }
        }
        self.committed - (target - blocks)
    }
}

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_commits");
    group.sample_size(10);
    for n in [4usize, 7] {
        let blocks = 50u64;
        group.throughput(Throughput::Elements(blocks));
        let cluster = ClusterId::from_name("bench");
        let reqs = requests(cluster, BATCH * 80);
        group.bench_function(format!("{n}_nodes_{BATCH}_requests_per_block"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut h = Harness::new(n, &reqs);
                    let started = Instant::now();
                    let done = h.run(blocks);
                    total += started.elapsed();
                    assert_eq!(
                        done, blocks,
                        "cluster went idle before committing {blocks} blocks"
                    );
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
