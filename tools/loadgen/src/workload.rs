//! What each request does: which keys, gets or puts, how many operations per request.
//!
//! Keys are `lg/` and a 10-digit index in `0..keys`, chosen uniformly or by Zipf rank (rank 1 is
//! key 0, the hottest). With `--read-ratio P` each operation is independently a get with
//! probability `P`, else a put of `--value-size` bytes. Invariant: a request carries exactly
//! `batch` operations, each within the state machine's key and value limits (checked by `args`).

use bftd::api::Op;

use crate::args::{Dist, Spec};
use crate::rng::Rng;
use crate::zipf::Zipf;

/// One request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A signed request through consensus (`--batch` operations).
    Ops(Vec<Op>),
    /// A one-node stale read (`--stale-reads`), outside consensus.
    StaleGet(Vec<u8>),
    /// A one-node verified read (`--verified-reads`): proof and certificate checked here.
    VerifiedGet(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Keys {
    Uniform(u64),
    Zipf(Zipf),
}

/// Shared by all workers (read-only); each worker brings its own [`Rng`].
#[derive(Clone, Debug)]
pub struct Workload {
    keys: Keys,
    read_ratio: f64,
    batch: usize,
    stale_reads: bool,
    verified_reads: bool,
    value: Vec<u8>,
}

impl Workload {
    pub fn new(spec: &Spec) -> Result<Self, String> {
        let keys = match spec.dist {
            Dist::Uniform => Keys::Uniform(spec.keys),
            Dist::Zipf(s) => Keys::Zipf(Zipf::new(spec.keys, s)?),
        };
        Ok(Self {
            keys,
            read_ratio: spec.read_ratio,
            batch: spec.batch,
            stale_reads: spec.stale_reads,
            verified_reads: spec.verified_reads,
            value: (0..spec.value_bytes)
                .map(|i| b'a' + (i % 26) as u8)
                .collect(),
        })
    }

    /// Operations per request.
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn key_index(&self, rng: &mut Rng) -> u64 {
        match &self.keys {
            Keys::Uniform(n) => rng.below(*n),
            Keys::Zipf(z) => z.sample(rng) - 1,
        }
    }

    pub fn next(&self, rng: &mut Rng) -> Request {
        let one_node_reads = self.stale_reads || self.verified_reads;
        if one_node_reads && self.is_read(rng) {
            let key = key(self.key_index(rng));
            return if self.verified_reads {
                Request::VerifiedGet(key)
            } else {
                Request::StaleGet(key)
            };
        }
        let ops = (0..self.batch)
            .map(|_| {
                // With one-node reads the read/write choice was made above, per request.
                let read = !one_node_reads && self.is_read(rng);
                let key = key(self.key_index(rng));
                if read {
                    Op::Get { key }
                } else {
                    Op::Put {
                        key,
                        value: self.value.clone(),
                    }
                }
            })
            .collect();
        Request::Ops(ops)
    }

    fn is_read(&self, rng: &mut Rng) -> bool {
        self.read_ratio > 0.0 && rng.next_f64() < self.read_ratio
    }
}

pub fn key(index: u64) -> Vec<u8> {
    format!("lg/{index:010}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Parsed, parse};

    fn workload(args: &[&str]) -> Workload {
        match parse(args.iter().copied()) {
            Ok(Parsed::Run(spec)) => Workload::new(&spec).expect("valid workload"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_mix_reads_and_writes_by_ratio() {
        let w = workload(&["--batch", "16", "--read-ratio", "0.25", "--keys", "10"]);
        let mut rng = Rng::new(3);
        let (mut gets, mut puts) = (0, 0);
        for _ in 0..1000 {
            let Request::Ops(ops) = w.next(&mut rng) else {
                panic!("linearizable reads go through consensus")
            };
            assert_eq!(ops.len(), 16);
            for op in ops {
                match op {
                    Op::Get { key } => {
                        gets += 1;
                        assert!(key.as_slice() < b"lg/0000000010".as_slice());
                    }
                    Op::Put { value, .. } => {
                        puts += 1;
                        assert_eq!(value.len(), 64);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        let share = f64::from(gets) / f64::from(gets + puts);
        assert!((0.23..0.27).contains(&share), "{share}");
    }

    #[test]
    fn verified_reads_are_separate_queries() {
        let w = workload(&["--read-ratio", "1", "--verified-reads", "--keys", "5"]);
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            match w.next(&mut rng) {
                Request::VerifiedGet(key) => assert!(key.starts_with(b"lg/")),
                other => panic!("expected a verified get, got {other:?}"),
            }
        }
    }

    #[test]
    fn stale_reads_are_separate_queries() {
        let w = workload(&["--read-ratio", "1", "--stale-reads", "--keys", "5"]);
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            match w.next(&mut rng) {
                Request::StaleGet(key) => assert!(key.as_slice() < b"lg/0000000005".as_slice()),
                other => panic!("expected a stale get, got {other:?}"),
            }
        }
    }

    #[test]
    fn zipf_keys_favour_key_zero() {
        let w = workload(&["--keys", "100000", "--dist", "zipf:0.99"]);
        let mut rng = Rng::new(9);
        let hot = (0..10_000).filter(|_| w.key_index(&mut rng) == 0).count();
        // P(rank 1) = 1 / H(100000, 0.99), about 0.081.
        assert!((650..1000).contains(&hot), "{hot}");
    }
}
