//! An in-memory log that keeps every perfect node: the [`NodeSource`] of tests, benches and
//! small tools.

use alloc::vec::Vec;

use super::{CompactRange, NodeSource, root_at};
use crate::Digest;

/// A perfect node that a [`MemoryTree`] does not hold, because the log is not yet large
/// enough to have completed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node (level {level}, index {index}) is not in the tree")]
pub struct MissingNode {
    /// The requested level (0 for leaves).
    pub level: u32,
    /// The requested position on that level.
    pub index: u64,
}

/// An append-only Merkle log held in memory, storing every perfect node (about `2n` digests
/// for `n` leaves), so proofs for any past size are plain lookups.
///
/// Invariant: `levels[l][i]` is the perfect node `(l, i)`, and `levels[l]` holds exactly the
/// `size >> l` nodes of level `l` that the current size has completed.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// The perfect nodes, one vector per level, leaves first.
    levels: Vec<Vec<Digest>>,
    /// The frontier, which gives the current root without reading the levels.
    frontier: CompactRange,
}

impl MemoryTree {
    /// The empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The empty log, with room for `leaves` leaves and their nodes reserved up front, so
    /// filling a tree of known size does not reallocate.
    pub fn with_capacity(leaves: usize) -> Self {
        let mut levels = Vec::new();
        let mut width = leaves;
        while width > 0 {
            levels.push(Vec::with_capacity(width));
            width /= 2;
        }
        Self {
            levels,
            frontier: CompactRange::new(),
        }
    }

    /// The number of leaves in the log.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Appends one leaf hash (see [`leaf_hash`](super::leaf_hash)) and returns its index.
    ///
    /// # Panics
    ///
    /// If the log already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf_hash: Digest) -> u64 {
        let levels = &mut self.levels;
        self.frontier.append(leaf_hash, |level, index, digest| {
            let level = level as usize;
            if levels.len() == level {
                levels.push(Vec::new());
            }
            debug_assert_eq!(levels[level].len() as u64, index);
            levels[level].push(digest);
        })
    }

    /// The root of the whole log.
    pub fn root(&self) -> Digest {
        self.frontier.root()
    }

    /// The root the log had when it held `size` leaves; an error names a missing node if
    /// `size` is beyond the current size.
    pub fn root_at(&self, size: u64) -> Result<Digest, MissingNode> {
        root_at(self, size)
    }
}

impl NodeSource for MemoryTree {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Digest, MissingNode> {
        let missing = MissingNode { level, index };
        let nodes = self.levels.get(level as usize).ok_or(missing)?;
        let index = usize::try_from(index).map_err(|_| missing)?;
        nodes.get(index).copied().ok_or(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{EMPTY_ROOT, leaf_hash, node_hash};

    #[test]
    fn stores_every_perfect_node() {
        let mut tree = MemoryTree::with_capacity(5);
        let leaves: std::vec::Vec<Digest> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(tree.append(*leaf), i as u64);
        }
        let n01 = node_hash(&leaves[0], &leaves[1]);
        let n23 = node_hash(&leaves[2], &leaves[3]);
        let n0123 = node_hash(&n01, &n23);
        assert_eq!(tree.node(0, 4), Ok(leaves[4]));
        assert_eq!(tree.node(1, 1), Ok(n23));
        assert_eq!(tree.node(2, 0), Ok(n0123));
        assert_eq!(tree.node(1, 2), Err(MissingNode { level: 1, index: 2 }));
        assert_eq!(tree.node(3, 0), Err(MissingNode { level: 3, index: 0 }));
        assert_eq!(
            tree.node(0, u64::MAX),
            Err(MissingNode {
                level: 0,
                index: u64::MAX
            })
        );
        assert_eq!(tree.root(), node_hash(&n0123, &leaves[4]));
        assert_eq!(tree.root_at(4), Ok(n0123));
        assert_eq!(tree.root_at(0), Ok(EMPTY_ROOT));
        assert_eq!(tree.root_at(6), Err(MissingNode { level: 1, index: 2 }));
    }
}
