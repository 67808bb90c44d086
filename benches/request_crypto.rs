//! The cost of client-request signatures: signing one request (what a client pays per
//! request) and `Verifier::verify_requests` on batches of 1, 16 and 128 distinct requests
//! (what a node's verifier thread pays; one Ed25519 batch verification per call).
//!
//! The verifier remembers the digests of requests it verified (its seen-cache), so each
//! measured call gets a fresh verifier; building it and cloning the batch are not timed.
//!
//! `cargo bench --bench request_crypto`

use std::sync::Arc;

use bftd::crypto::{ClientPolicy, Committee, Signer, Verifier, VerifierLimits};
use bftd::kv::{Op, encode_ops};
use bftd::types::{ClientRequest, ClusterId};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BATCH_SIZES: [usize; 3] = [1, 16, 128];
/// Nodes in the committee the verifier checks against (irrelevant to request checks).
const NODES: usize = 4;
/// Distinct clients signing the batch: batches from several clients, as in a real block.
const CLIENTS: usize = 8;

fn cluster() -> ClusterId {
    ClusterId::from_name("bench")
}

/// A typical small request: one put of a 64-byte value.
fn ops_bytes(seq: u64) -> Vec<u8> {
    encode_ops(&[Op::Put {
        key: format!("key-{seq}").into_bytes(),
        value: vec![0xAB; 64],
    }])
}

fn sign(signer: &Signer, seq: u64) -> ClientRequest {
    signer.sign_request(1, seq, ops_bytes(seq))
}

fn client_signers() -> Vec<Signer> {
    (0..CLIENTS)
        .map(|i| Signer::new([100 + i as u8; 32], cluster()))
        .collect()
}

fn verifier(clients: &[Signer]) -> Verifier {
    let keys: Vec<[u8; 32]> = (0..NODES)
        .map(|i| Signer::new([i as u8 + 1; 32], cluster()).public_key())
        .collect();
    let committee = Arc::new(Committee::new(cluster(), &keys, (NODES - 1) / 3).expect("committee"));
    let allowed: Vec<[u8; 32]> = clients.iter().map(Signer::public_key).collect();
    let policy = ClientPolicy::allow_list(&allowed).expect("allow list");
    Verifier::new(committee, VerifierLimits::default(), policy)
}

fn signing(c: &mut Criterion) {
    let signer = Signer::new([100; 32], cluster());
    let mut group = c.benchmark_group("request_sign");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    group.bench_function("one_put_64B", |b| {
        b.iter(|| {
            seq += 1;
            sign(&signer, seq)
        })
    });
    group.finish();
}

fn verifying(c: &mut Criterion) {
    let clients = client_signers();
    let mut group = c.benchmark_group("request_verify_batch");
    for size in BATCH_SIZES {
        let batch: Vec<ClientRequest> = (0..size as u64)
            .map(|seq| sign(&clients[seq as usize % CLIENTS], seq))
            .collect();
        // Sanity: the batch is valid, so the measured path is the accepting one.
        let results = verifier(&clients).verify_requests(batch.clone());
        assert!(results.iter().all(Result::is_ok), "bench batch must verify");
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size}_requests"), |b| {
            b.iter_batched(
                || (verifier(&clients), batch.clone()),
                |(v, reqs)| v.verify_requests(reqs),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, signing, verifying);
criterion_main!(benches);
