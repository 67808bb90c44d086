//! Merging sorted sources newest-first: for each key, the newest source's slot wins.
//!
//! Sources are given newest first (active memtable, frozen memtables, then SSTables newest
//! first). The number of sources is small (bounded by the table count), so a linear scan for
//! the smallest head beats a heap.

use std::iter::Peekable;

use super::memtable::SlotRef;

pub type SourceIter<'a> = Box<dyn Iterator<Item = (&'a [u8], SlotRef<'a>)> + 'a>;

pub struct MergeIter<'a> {
    sources: Vec<Peekable<SourceIter<'a>>>,
}

impl<'a> MergeIter<'a> {
    pub fn new(sources: Vec<SourceIter<'a>>) -> Self {
        MergeIter {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl<'a> Iterator for MergeIter<'a> {
    /// The newest slot of the next key, tombstones included (callers decide what to drop).
    type Item = (&'a [u8], SlotRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, &'a [u8])> = None;
        for (index, source) in self.sources.iter_mut().enumerate() {
            if let Some(&(key, _)) = source.peek()
                && best.is_none_or(|(_, best_key)| key < best_key)
            {
                best = Some((index, key));
            }
        }
        let (winner, key) = best?;
        let mut slot = None;
        for (index, source) in self.sources.iter_mut().enumerate() {
            if source.peek().is_some_and(|&(k, _)| k == key) {
                let (_, s) = source.next()?;
                if index == winner {
                    slot = Some(s);
                }
            }
        }
        slot.map(|s| (key, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_source_wins() {
        let newer: Vec<(&[u8], SlotRef)> =
            vec![(b"a", SlotRef::Put(b"new")), (b"c", SlotRef::Delete)];
        let older: Vec<(&[u8], SlotRef)> = vec![
            (b"a", SlotRef::Put(b"old")),
            (b"b", SlotRef::Put(b"b")),
            (b"c", SlotRef::Put(b"c")),
        ];
        let merged: Vec<_> = MergeIter::new(vec![
            Box::new(newer.into_iter()),
            Box::new(older.into_iter()),
        ])
        .collect();
        assert_eq!(
            merged,
            vec![
                (&b"a"[..], SlotRef::Put(b"new")),
                (&b"b"[..], SlotRef::Put(b"b")),
                (&b"c"[..], SlotRef::Delete)
            ]
        );
    }
}
