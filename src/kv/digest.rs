//! The incrementally maintained state digest.
//!
//! The accumulator is the sum modulo 2^256 of `blake3(len(key) ++ key ++ value)` over every
//! live entry (a multiset hash): adding or removing an entry is one hash and one 256-bit
//! add or subtract, independent of the state size, and the sum does not depend on the order
//! entries were written. The published digest binds the accumulator to the applied height.

/// 256-bit accumulator as four little-endian limbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DigestAccumulator {
    limbs: [u64; 4],
}

fn entry_limbs(key: &[u8], value: &[u8]) -> [u64; 4] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    let hash = hasher.finalize();
    let bytes = hash.as_bytes();
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default())
    })
}

impl DigestAccumulator {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let other = entry_limbs(key, value);
        let mut carry = false;
        for (limb, add) in self.limbs.iter_mut().zip(other) {
            let (sum, c1) = limb.overflowing_add(add);
            let (sum, c2) = sum.overflowing_add(carry as u64);
            *limb = sum;
            carry = c1 || c2;
        }
    }

    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        let other = entry_limbs(key, value);
        let mut borrow = false;
        for (limb, sub) in self.limbs.iter_mut().zip(other) {
            let (diff, b1) = limb.overflowing_sub(sub);
            let (diff, b2) = diff.overflowing_sub(borrow as u64);
            *limb = diff;
            borrow = b1 || b2;
        }
    }

    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.limbs) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        DigestAccumulator {
            limbs: std::array::from_fn(|i| {
                u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default())
            }),
        }
    }

    /// The digest every node publishes after applying block `height`.
    pub fn digest(&self, height: u64) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"bftd/kv-state/v1");
        hasher.update(&height.to_le_bytes());
        hasher.update(&self.to_bytes());
        *hasher.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_remove_undoes_add() {
        let mut a = DigestAccumulator::default();
        a.add(b"x", b"1");
        a.add(b"y", b"2");
        let mut b = DigestAccumulator::default();
        b.add(b"y", b"2");
        b.add(b"x", b"1");
        assert_eq!(a, b);
        b.add(b"z", b"3");
        assert_ne!(a, b);
        b.remove(b"z", b"3");
        assert_eq!(a, b);
        assert_eq!(DigestAccumulator::from_bytes(&a.to_bytes()), a);
        // Key/value boundaries matter: ("ab","c") and ("a","bc") differ.
        let (mut c, mut d) = (DigestAccumulator::default(), DigestAccumulator::default());
        c.add(b"ab", b"c");
        d.add(b"a", b"bc");
        assert_ne!(c, d);
    }
}
