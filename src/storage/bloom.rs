//! A Bloom filter over an SSTable's keys, so a lookup for a missing key usually skips the table.
//!
//! Bits live in `u64` words; probe `i` of a key tests bit `(h1 + i * h2) mod bits` (double
//! hashing, Kirsch–Mitzenmacher) where `h1`, `h2` are halves of [`key_hash`]. The hash must never
//! change: it is part of the on-disk format. With 10 bits per key and 7 probes the false
//! positive rate is about 1%.

/// Bits of filter per key.
pub const BLOOM_BITS_PER_KEY: usize = 10;
/// Probes per key (≈ bits_per_key × ln 2).
pub const BLOOM_PROBES: u32 = 7;
/// Upper bound on probes accepted from a file.
pub const BLOOM_PROBES_MAX: u32 = 30;

/// 64-bit FNV-1a followed by the splitmix64 finaliser (FNV alone mixes high bits poorly).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Builds the filter words for `key_count` keys.
pub struct BloomBuilder {
    words: Vec<u64>,
}

impl BloomBuilder {
    pub fn new(key_count: usize) -> Self {
        let bits = (key_count * BLOOM_BITS_PER_KEY).max(64);
        BloomBuilder {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    pub fn insert(&mut self, key: &[u8]) {
        let bits = self.words.len() as u64 * 64;
        for bit in probe_bits(key_hash(key), bits, BLOOM_PROBES) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub fn finish(self) -> Vec<u64> {
        self.words
    }
}

/// True if `key` may be in the set whose filter is `words` (read via `word(i)`).
/// `word_count` must be non-zero (checked when the table is opened).
pub fn may_contain(
    key: &[u8],
    word_count: usize,
    probes: u32,
    word: impl Fn(usize) -> u64,
) -> bool {
    let bits = word_count as u64 * 64;
    probe_bits(key_hash(key), bits, probes)
        .all(|bit| word((bit / 64) as usize) & (1 << (bit % 64)) != 0)
}

fn probe_bits(hash: u64, bits: u64, probes: u32) -> impl Iterator<Item = u64> {
    let h1 = hash & 0xffff_ffff;
    let h2 = (hash >> 32) | 1;
    (0..u64::from(probes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut builder = BloomBuilder::new(1000);
        for i in 0..1000u32 {
            builder.insert(&i.to_be_bytes());
        }
        let words = builder.finish();
        let lookup = |key: &[u8]| may_contain(key, words.len(), BLOOM_PROBES, |i| words[i]);
        assert!((0..1000u32).all(|i| lookup(&i.to_be_bytes())));
        let false_positives = (1000..11_000u32)
            .filter(|i| lookup(&i.to_be_bytes()))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 10000"
        );
    }
}
