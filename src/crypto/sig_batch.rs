//! Batched Ed25519 verification under one acceptance rule, with bisection to name the bad ones.
//!
//! The rule is ZIP-215, as the `ed25519-consensus` crate implements it: `s` must be canonical
//! (`s < L`); `A` and `R` may be any encoding that decompresses to a curve point (non-canonical
//! encodings and small-order components included); and the equation is the cofactored one,
//! `[8]([s]B - R - [k]A) = 0` with `k = SHA-512(R || A || M)` over the encodings as sent.
//!
//! Why this rule: the cofactorless equation of `verify_strict` and the batch equation disagree on
//! an `R` with a small-order component (the batch passes about half the time, depending on its
//! coefficients), so two honest nodes could judge one proposal differently. With the cofactor,
//! a single check and a batch check compute the same predicate: if every item holds, the batch
//! holds; if one fails, its error lies in the prime-order subgroup after the `[8]`, and random
//! 128-bit coefficients cancel it with probability 2^-128. So the answer for a signature does
//! not depend on which batch it travels in, nor on the node.
//!
//! Weak (small-order) keys would let anyone forge under this rule, so they are refused where a
//! key is registered (`Committee::new`, `ClientPolicy`), never here.
//!
//! A failed batch is bisected: each half is checked as a batch, down to single items, so `b` bad
//! signatures among `n` cost `O(b log n)` batch checks, not `n` single ones.

use std::collections::HashMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

use crate::types::Sig;

/// A set of (message, signature, key) checks run together.
#[derive(Default)]
pub struct SigBatch {
    messages: Vec<Vec<u8>>,
    sigs: Vec<Sig>,
    keys: Vec<VerifyingKey>,
}

/// One signature decoded for the equation: everything but the coefficient.
struct Prepared {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
    a: EdwardsPoint,
    r_bytes: [u8; 32],
    a_bytes: [u8; 32],
}

impl SigBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.sigs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    pub fn push(&mut self, message: Vec<u8>, sig: &Sig, key: VerifyingKey) {
        self.messages.push(message);
        self.sigs.push(*sig);
        self.keys.push(key);
    }

    /// Checks all signatures. `Err` lists the indexes (in push order) of the bad ones.
    pub fn verify(&self) -> Result<(), Vec<usize>> {
        self.verify_counting().0
    }

    /// [`Self::verify`], also returning how many equations (batch or single) it evaluated.
    fn verify_counting(&self) -> (Result<(), Vec<usize>>, usize) {
        let mut bad = Vec::new();
        let mut items: Vec<(usize, Prepared)> = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            match prepare(&self.messages[i], &self.sigs[i], &self.keys[i]) {
                Some(p) => items.push((i, p)),
                None => bad.push(i),
            }
        }
        let coefficients = coefficients(&items);
        let order: Vec<usize> = (0..items.len()).collect();
        let equations = bisect(&items, &coefficients, &order, &mut bad);
        if bad.is_empty() {
            (Ok(()), equations)
        } else {
            bad.sort_unstable();
            (Err(bad), equations)
        }
    }
}

/// Verifies one signature under exactly the rule a batch applies.
#[cfg(test)]
pub fn verify_one(message: &[u8], sig: &Sig, key: &VerifyingKey) -> bool {
    prepare(message, sig, key).is_some_and(|p| single_holds(&p))
}

/// Decodes `s` (canonical only) and `R` (any point encoding) and computes `k`. `None` if the
/// signature cannot satisfy the equation whatever the rest of the batch.
fn prepare(message: &[u8], sig: &Sig, key: &VerifyingKey) -> Option<Prepared> {
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&sig.0[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&sig.0[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let a_bytes = *key.as_bytes();
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(a_bytes);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Some(Prepared {
        r,
        s,
        k,
        a: key.to_edwards(),
        r_bytes,
        a_bytes,
    })
}

/// `[8]([s]B - R - [k]A) == 0`.
fn single_holds(p: &Prepared) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-p.a, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// `[8] sum_i z_i([s_i]B - R_i - [k_i]A_i) == 0`, with the terms of one key merged.
fn batch_holds(items: &[(usize, Prepared)], z: &[Scalar], subset: &[usize]) -> bool {
    let mut b_coefficient = Scalar::ZERO;
    let mut scalars: Vec<Scalar> = Vec::with_capacity(subset.len() + 1);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(subset.len() + 1);
    let mut by_key: HashMap<[u8; 32], (EdwardsPoint, Scalar)> = HashMap::new();
    for &j in subset {
        let p = &items[j].1;
        b_coefficient += z[j] * p.s;
        scalars.push(-z[j]);
        points.push(p.r);
        let entry = by_key.entry(p.a_bytes).or_insert((p.a, Scalar::ZERO));
        entry.1 -= z[j] * p.k;
    }
    for (a, coefficient) in by_key.into_values() {
        scalars.push(coefficient);
        points.push(a);
    }
    scalars.push(b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// Checks `subset` (indexes into `items`) as one batch; if it fails, checks each half, down
/// to single items, and appends the push-order index of every failing one to `bad`. Returns
/// the number of equations evaluated.
fn bisect(
    items: &[(usize, Prepared)],
    z: &[Scalar],
    subset: &[usize],
    bad: &mut Vec<usize>,
) -> usize {
    match subset {
        [] => 0,
        [one] => {
            if !single_holds(&items[*one].1) {
                bad.push(items[*one].0);
            }
            1
        }
        _ => {
            if batch_holds(items, z, subset) {
                return 1;
            }
            let (left, right) = subset.split_at(subset.len() / 2);
            1 + bisect(items, z, left, bad) + bisect(items, z, right, bad)
        }
    }
}

/// One 128-bit coefficient per item, derived from the whole batch under a key drawn once per
/// process: an outsider can neither predict nor choose them, and no system call is made per
/// batch. (A fixed key, if the OS has no randomness, is still the Fiat-Shamir derivation that
/// `ed25519_dalek::verify_batch` uses.) Coefficients are odd, so never zero.
fn coefficients(items: &[(usize, Prepared)]) -> Vec<Scalar> {
    let mut h = blake3::Hasher::new_keyed(process_key());
    h.update(b"bftd/sig-batch-coefficients/v1");
    for (_, p) in items {
        h.update(p.k.as_bytes());
        h.update(&p.r_bytes);
        h.update(p.s.as_bytes());
    }
    let mut xof = h.finalize_xof();
    items
        .iter()
        .map(|_| {
            let mut z = [0u8; 16];
            xof.fill(&mut z);
            Scalar::from(u128::from_le_bytes(z) | 1)
        })
        .collect()
}

fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            log::warn!("no OS randomness for signature batch coefficients; deriving them from the batch alone");
        }
        key
    })
}

/// Adds the group order L to `s` (little-endian): the same value mod L in a non-canonical
/// encoding, i.e. the classic malleation. For tests that it is refused everywhere.
#[cfg(test)]
pub(crate) fn add_group_order_to_s(sig: &mut Sig) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (byte, l) in sig.0[32..].iter_mut().zip(L) {
        let v = u16::from(*byte) + u16::from(l) + carry;
        *byte = v as u8;
        carry = v >> 8;
    }
}

/// Every encoding of the eight small-order points, including non-canonical ones (a sign bit
/// on x = 0, y >= p). For the ZIP-215 edge-case tests.
#[cfg(test)]
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for p in curve25519_dalek::constants::EIGHT_TORSION {
        let enc = p.compress().to_bytes();
        candidates.push(enc);
        let mut flipped = enc;
        flipped[31] ^= 0x80;
        candidates.push(flipped);
    }
    // y = p + 0 and y = p + 1: the non-canonical encodings of y = 0 and y = 1.
    for add in [0u8, 1] {
        let mut y = [0xffu8; 32];
        y[0] = 0xed + add;
        y[31] = 0x7f;
        candidates.push(y);
        let mut signed = y;
        signed[31] |= 0x80;
        candidates.push(signed);
    }
    candidates.sort();
    candidates.dedup();
    candidates.retain(|c| {
        CompressedEdwardsY(*c)
            .decompress()
            .is_some_and(|p| p.is_small_order())
    });
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Signer, domain};
    use crate::types::ClusterId;
    use curve25519_dalek::constants::EIGHT_TORSION;

    fn signed(i: u8, msg: &[u8]) -> (Vec<u8>, Sig, VerifyingKey) {
        let s = Signer::new([i; 32], ClusterId::ZERO);
        let sig = s.sign(domain::VOTE, msg);
        let bytes = domain::signing_bytes(domain::VOTE, &ClusterId::ZERO, msg);
        let key = VerifyingKey::from_bytes(&s.public_key()).unwrap();
        (bytes, sig, key)
    }

    /// Deterministic test randomness: the `n`-th 64 bytes of a seeded stream.
    fn wide(seed: u64, n: u64) -> [u8; 64] {
        let mut out = [0u8; 64];
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&n.to_le_bytes());
        h.finalize_xof().fill(&mut out);
        out
    }

    /// A signature made by hand with secret `a` and nonce `r`, where the nonce point and the
    /// public key carry the torsion components `t_r` and `t_a` (indexes into EIGHT_TORSION,
    /// 0 = none). It satisfies the cofactored equation, and with a torsion component on `R`
    /// it fails the cofactorless one: exactly the input on which the old paths disagreed.
    fn torsion_signed(seed: u64, t_r: usize, t_a: usize, msg: &[u8]) -> (Sig, VerifyingKey) {
        let a = Scalar::from_bytes_mod_order_wide(&wide(seed, 0));
        let r = Scalar::from_bytes_mod_order_wide(&wide(seed, 1));
        let a_point = ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[t_a];
        let r_point = ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[t_r];
        let a_bytes = a_point.compress().to_bytes();
        let r_bytes = r_point.compress().to_bytes();
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(a_bytes);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        (Sig(sig), VerifyingKey::from_bytes(&a_bytes).unwrap())
    }

    #[test]
    fn a_good_batch_passes_and_one_bad_signature_is_named() {
        let mut batch = SigBatch::new();
        for i in 1..=8u8 {
            let (m, s, k) = signed(i, &[i; 10]);
            batch.push(m, &s, k);
        }
        assert_eq!(batch.verify(), Ok(()));

        let mut batch = SigBatch::new();
        for i in 1..=8u8 {
            let (m, mut s, k) = signed(i, &[i; 10]);
            if i == 5 {
                s.0[40] ^= 1;
            }
            batch.push(m, &s, k);
        }
        assert_eq!(batch.verify(), Err(vec![4]));
    }

    #[test]
    fn one_bad_signature_among_128_costs_a_bisection_not_128_single_checks() {
        let mut batch = SigBatch::new();
        for i in 0..128u32 {
            let (m, mut s, k) = signed((i % 8) as u8 + 1, &i.to_le_bytes());
            if i == 77 {
                s.0[33] ^= 1;
            }
            batch.push(m, &s, k);
        }
        let (result, equations) = batch.verify_counting();
        assert_eq!(result, Err(vec![77]));
        // The whole batch, then one batch per level (its sibling passes) down to the culprit:
        // 1 + 2 * log2(128) = 15 equations at most.
        assert!(
            equations <= 15,
            "{equations} equations for one bad signature"
        );
    }

    #[test]
    fn crafted_small_order_signature_is_rejected_by_single_and_batch_paths() {
        // R = identity, s = 0 under an honest key: [8](0 - R - [k]A) = -[8k]A is not zero.
        let mut sig_bytes = [0u8; 64];
        sig_bytes[0] = 1; // identity point encoding
        let sig = Sig(sig_bytes);
        let (_, _, good_key) = signed(1, b"x");
        assert!(!verify_one(b"anything", &sig, &good_key));

        let mut single = SigBatch::new();
        single.push(b"anything".to_vec(), &sig, good_key);
        assert!(single.verify().is_err());

        let mut mixed = SigBatch::new();
        let (m, s, k) = signed(2, b"y");
        mixed.push(m, &s, k);
        mixed.push(b"anything".to_vec(), &sig, good_key);
        assert_eq!(mixed.verify(), Err(vec![1]));
    }

    #[test]
    fn malleated_signature_with_s_plus_l_is_rejected_everywhere() {
        let (m, s, k) = signed(3, b"payload");
        let mut mal = s;
        add_group_order_to_s(&mut mal);
        assert!(verify_one(&m, &s, &k));
        assert!(!verify_one(&m, &mal, &k));
        let mut batch = SigBatch::new();
        batch.push(m.clone(), &s, k);
        batch.push(m, &mal, k);
        assert_eq!(batch.verify(), Err(vec![1]));
    }

    #[test]
    fn mixed_order_r_and_a_are_valid_under_the_cofactored_rule() {
        for t_r in 0..8 {
            for t_a in 0..8 {
                let (sig, key) = torsion_signed(1000 + (t_r * 8 + t_a) as u64, t_r, t_a, b"m");
                assert!(verify_one(b"m", &sig, &key), "t_r={t_r} t_a={t_a}");
                assert!(!verify_one(b"other", &sig, &key), "t_r={t_r} t_a={t_a}");
            }
        }
    }

    /// The ZIP-215 edge cases: every encoding (canonical or not) of a small-order `A` and `R`,
    /// with `s = 0`, satisfies `[8]([0]B - R - [k]A) = 0`, so the rule accepts all of them,
    /// alone and in a batch (such keys never get registered; this pins the equation).
    #[test]
    fn small_order_encodings_of_a_and_r_are_judged_alike_alone_and_batched() {
        let encodings = small_order_encodings();
        assert!(encodings.len() >= 8);
        let mut batch = SigBatch::new();
        for a in &encodings {
            let Ok(key) = VerifyingKey::from_bytes(a) else {
                continue;
            };
            for r in &encodings {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                let sig = Sig(sig);
                assert!(verify_one(b"zip215", &sig, &key));
                batch.push(b"zip215".to_vec(), &sig, key);
            }
        }
        assert!(batch.len() >= 64);
        assert_eq!(batch.verify(), Ok(()));
    }

    /// The property the consensus needs: whatever batch a signature travels in, the answer is
    /// the one a single check gives. Good, mixed-order and broken signatures are mixed in
    /// many random compositions and orders.
    #[test]
    fn batch_and_single_agree_over_many_batch_compositions() {
        let mut pool: Vec<(Vec<u8>, Sig, VerifyingKey)> = Vec::new();
        for i in 0..24u64 {
            let msg = i.to_le_bytes().to_vec();
            match i % 6 {
                0 | 1 => {
                    let (m, s, k) = signed(i as u8 + 1, &msg);
                    pool.push((m, s, k));
                }
                2 => {
                    // Mixed-order R: cofactorless fails, cofactored holds.
                    let (s, k) = torsion_signed(i, 1 + (i as usize % 7), 0, &msg);
                    pool.push((msg, s, k));
                }
                3 => {
                    // Mixed-order R and A.
                    let (s, k) = torsion_signed(i, 4, 1 + (i as usize % 7), &msg);
                    pool.push((msg, s, k));
                }
                4 => {
                    // Mixed-order R over another message: bad under every rule.
                    let (s, k) = torsion_signed(i, 2, 0, &msg);
                    pool.push((b"not what was signed".to_vec(), s, k));
                }
                _ => {
                    let (m, mut s, k) = signed(i as u8 + 1, &msg);
                    s.0[i as usize % 64] ^= 0x10;
                    pool.push((m, s, k));
                }
            }
        }
        let single: Vec<bool> = pool.iter().map(|(m, s, k)| verify_one(m, s, k)).collect();
        assert!(single.iter().filter(|ok| **ok).count() >= 8);
        assert!(single.iter().filter(|ok| !**ok).count() >= 4);
        for trial in 0..300u64 {
            let bytes = wide(7, trial);
            let size = 2 + usize::from(bytes[0]) % 16;
            let picks: Vec<usize> = (0..size)
                .map(|j| usize::from(bytes[1 + j * 2]) % pool.len())
                .collect();
            let mut batch = SigBatch::new();
            for &p in &picks {
                batch.push(pool[p].0.clone(), &pool[p].1, pool[p].2);
            }
            let expected: Vec<usize> = (0..size).filter(|&j| !single[picks[j]]).collect();
            let got = match batch.verify() {
                Ok(()) => Vec::new(),
                Err(bad) => bad,
            };
            assert_eq!(got, expected, "trial {trial}: picks {picks:?}");
        }
    }

    /// The old rule, kept here to show what it did: `verify_strict` refuses a mixed-order `R`
    /// that `verify_batch` accepts in some compositions, so the two paths disagreed.
    #[test]
    fn the_cofactorless_paths_disagree_on_mixed_order_r() {
        let (sig, key) = torsion_signed(5, 4, 0, b"m");
        let dalek_sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        assert!(key.verify_strict(b"m", &dalek_sig).is_err());
        assert!(verify_one(b"m", &sig, &key));
    }
}
