//! The `O(log n)`-memory appender: a log's frontier, enough to append and to compute the root.

use alloc::vec::Vec;

use super::{EMPTY_ROOT, NodeSource, node_hash};
use crate::Digest;

/// The right frontier of an append-only log: the roots of its maximal perfect subtrees.
///
/// Holding only these *peaks* (one per set bit of the size, at most 64) is enough to append
/// and to compute the current root, so an aggregator keeps this in memory and persists the
/// perfect nodes that [`CompactRange::append`] reports.
///
/// Invariant: `peaks[i]` is the perfect node covering the `i`-th block of the binary
/// decomposition of `size`, largest (leftmost) first, so `peaks.len() == size.count_ones()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    /// The number of leaves appended so far.
    size: u64,
    /// The peaks, leftmost (highest level) first.
    peaks: Vec<Digest>,
}

impl CompactRange {
    /// The frontier of the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of the first `size` leaves from stored perfect nodes (one read
    /// per set bit of `size`), so an appender can resume after a restart without the leaves.
    pub fn from_source<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..u64::BITS).rev() {
            let width = 1u64 << level;
            if size & width != 0 {
                peaks.push(src.node(level, start >> level)?);
                start += width;
            }
        }
        Ok(Self { size, peaks })
    }

    /// The frontier of a log of `size` leaves whose peaks (leftmost first) are `peaks`, as
    /// a store keeps them; `None` unless there is exactly one peak per set bit of `size`.
    pub fn from_peaks(size: u64, peaks: Vec<Digest>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(Self { size, peaks })
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peaks, leftmost (highest level) first: the perfect nodes whose fold is the root.
    pub fn peaks(&self) -> &[Digest] {
        &self.peaks
    }

    /// The root of the log as it stands, RFC 6962's `MTH` ([`EMPTY_ROOT`] when empty).
    pub fn root(&self) -> Digest {
        let mut peaks = self.peaks.iter().rev();
        let Some(&last) = peaks.next() else {
            return EMPTY_ROOT;
        };
        peaks.fold(last, |right, left| node_hash(left, &right))
    }

    /// Appends one leaf hash (see [`leaf_hash`](super::leaf_hash)) and returns its index.
    ///
    /// `on_new_node(level, index, digest)` is called for every perfect node this append
    /// completes, bottom up: first the leaf itself at level 0, then each node it closes. A
    /// store that records these calls holds every perfect node of the log, which is all
    /// [`NodeSource`] needs.
    ///
    /// # Panics
    ///
    /// If the log already holds `u64::MAX` leaves, the most a `u64` size can count.
    pub fn append(
        &mut self,
        leaf_hash: Digest,
        mut on_new_node: impl FnMut(u32, u64, Digest),
    ) -> u64 {
        assert!(self.size < u64::MAX, "the Merkle log is full");
        let leaf_index = self.size;
        let mut index = leaf_index;
        let mut level = 0u32;
        let mut hash = leaf_hash;
        on_new_node(level, index, hash);
        // Every trailing one bit of the old size is a peak the new node completes.
        while index & 1 == 1 {
            // One peak per set bit of the old size, and this bit is set.
            let Some(left) = self.peaks.pop() else {
                unreachable!("a CompactRange holds one peak per set bit of its size")
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            on_new_node(level, index, hash);
        }
        self.peaks.push(hash);
        self.size += 1;
        leaf_index
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::merkle::{MemoryTree, leaf_hash};

    /// A store that records reported nodes, as the aggregator's database does.
    #[derive(Default)]
    struct NodeMap(std::collections::BTreeMap<(u32, u64), Digest>);

    impl NodeMap {
        fn insert(&mut self, level: u32, index: u64, digest: Digest) {
            assert!(
                self.0.insert((level, index), digest).is_none(),
                "reported twice"
            );
        }
    }

    impl NodeSource for NodeMap {
        type Error = (u32, u64);

        fn node(&self, level: u32, index: u64) -> Result<Digest, Self::Error> {
            self.0.get(&(level, index)).copied().ok_or((level, index))
        }
    }

    fn leaf(i: u64) -> Digest {
        leaf_hash(&i.to_be_bytes())
    }

    #[test]
    fn empty_range_has_empty_root() {
        let range = CompactRange::new();
        assert_eq!(range.size(), 0);
        assert_eq!(range.root(), EMPTY_ROOT);
        assert!(range.peaks().is_empty());
    }

    #[test]
    fn append_reports_every_completed_node_once() {
        let mut range = CompactRange::new();
        let mut reported = Vec::new();
        for i in 0..8 {
            let index = range.append(leaf(i), |l, j, _| reported.push((l, j)));
            assert_eq!(index, i);
        }
        assert_eq!(
            reported,
            vec![
                (0, 0),
                (0, 1),
                (1, 0),
                (0, 2),
                (0, 3),
                (1, 1),
                (2, 0),
                (0, 4),
                (0, 5),
                (1, 2),
                (0, 6),
                (0, 7),
                (1, 3),
                (2, 1),
                (3, 0),
            ]
        );
        assert_eq!(range.peaks().len(), 1);
    }

    #[test]
    fn peaks_follow_the_bits_of_the_size() {
        let mut range = CompactRange::new();
        let mut tree = NodeMap::default();
        for i in 0..300u64 {
            assert_eq!(range.peaks().len() as u32, range.size().count_ones());
            assert_eq!(
                range.root(),
                crate::merkle::root_at(&tree, range.size()).unwrap()
            );
            range.append(leaf(i), |l, j, d| tree.insert(l, j, d));
        }
    }

    #[test]
    fn restores_from_stored_nodes_and_keeps_appending() {
        let mut tree = MemoryTree::new();
        for i in 0..100 {
            tree.append(leaf(i));
        }
        for size in 0..=100u64 {
            let mut range = CompactRange::from_source(&tree, size).unwrap();
            assert_eq!(range.size(), size);
            assert_eq!(range.root(), tree.root_at(size).unwrap());
            for i in size..100 {
                range.append(leaf(i), |_, _, _| {});
            }
            assert_eq!(range, CompactRange::from_source(&tree, 100).unwrap());
        }
    }

    #[test]
    fn restoring_beyond_the_store_reports_the_missing_node() {
        let mut tree = MemoryTree::new();
        for i in 0..4 {
            tree.append(leaf(i));
        }
        assert_eq!(
            CompactRange::from_source(&tree, 5),
            Err(crate::merkle::MissingNode { level: 0, index: 4 })
        );
    }
}
