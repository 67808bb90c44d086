//! Which tables to compact: size-tiered, over contiguous runs of the newest-first table list.
//!
//! Tables are grouped by size class `floor(log4(file bytes))`. The newest contiguous run of at
//! least `trigger` tables in one class is merged (at most `inputs_max` of them); the output
//! lands about one class higher, so every byte is rewritten about `log4(data / flush size)`
//! times instead of on every compaction. Runs must be contiguous in the newest-first order so
//! the output can take their place without reordering versions. Safety valve: if no class
//! qualifies but `3 × trigger` tables are live, the newest `inputs_max` are merged anyway, so
//! the table count (and the read cost) stays bounded.

use std::ops::Range;

fn size_class(file_len_bytes: u64) -> u32 {
    file_len_bytes.max(1).ilog(4)
}

/// Picks the run of table indices (newest first) to merge, or `None`.
pub fn pick_run(
    sizes_newest_first: &[u64],
    trigger: usize,
    inputs_max: usize,
) -> Option<Range<usize>> {
    let (trigger, inputs_max) = (trigger.max(2), inputs_max.max(2));
    let count = sizes_newest_first.len();
    let mut start = 0;
    for end in 1..=count {
        let run_ends = end == count
            || size_class(sizes_newest_first[end]) != size_class(sizes_newest_first[start]);
        if run_ends {
            if end - start >= trigger {
                return Some(start..end.min(start + inputs_max));
            }
            start = end;
        }
    }
    (count >= 3 * trigger).then(|| 0..count.min(inputs_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_the_newest_full_tier_only() {
        let mib = 1 << 20;
        // Three small new tables over one big old one: only the small ones merge.
        assert_eq!(
            pick_run(&[4 * mib, 4 * mib, 5 * mib, 300 * mib], 3, 8),
            Some(0..3)
        );
        // Not enough tables of one class yet.
        assert_eq!(
            pick_run(&[4 * mib, 4 * mib, 64 * mib, 300 * mib], 3, 8),
            None
        );
        // A full older tier behind a younger partial one.
        assert_eq!(
            pick_run(&[4 * mib, 64 * mib, 64 * mib, 70 * mib], 3, 8),
            Some(1..4)
        );
        // The run is capped at inputs_max.
        assert_eq!(pick_run(&[mib; 10], 3, 4), Some(0..4));
        // Safety valve: alternating classes never form a run, but the count is bounded.
        let alternating: Vec<u64> = (0..9)
            .map(|i| if i % 2 == 0 { mib } else { 16 * mib })
            .collect();
        assert_eq!(pick_run(&alternating, 3, 4), Some(0..4));
        assert_eq!(pick_run(&[], 3, 4), None);
    }
}
