//! Inclusion and consistency proofs: generation from stored perfect nodes (RFC 9162 `PATH`
//! and `SUBPROOF`) and strict verification (RFC 9162 §2.1.3.2 and §2.1.4.2).

use alloc::vec::Vec;

use super::{NodeSource, ProofError, fold_range, node_hash};
use crate::Digest;

/// Evidence that a leaf is in a tree: the sibling hashes on the leaf's path to the root.
///
/// `hashes` are ordered leaf side first (RFC 9162 `PATH`, as transparency-dev/merkle orders
/// them). A valid proof has exactly `inner + border` hashes, where `inner` is the bit length
/// of `leaf_index ^ (tree_size - 1)` and `border` the number of set bits of
/// `leaf_index >> inner`; [`InclusionProof::verify`] rejects any other length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InclusionProof {
    /// The position of the leaf, counted from 0; it fixes on which side each sibling lies.
    pub leaf_index: u64,
    /// The size of the tree whose root the proof leads to; take it from the same signed
    /// checkpoint as the root, because the hashes do not commit to it.
    pub tree_size: u64,
    /// The sibling hashes, leaf side first.
    pub hashes: Vec<Digest>,
}

/// Evidence that a tree of `size2` leaves extends a tree of `size1` leaves without changing
/// any of them: the log is append-only between the two checkpoints.
///
/// `hashes` follow RFC 9162 `SUBPROOF`, leaf side first. A valid proof for
/// `0 < size1 < size2` has exactly `start + inner + border` hashes (see
/// [`ConsistencyProof::verify`]); for `size1 == size2` it is empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsistencyProof {
    /// The size of the older tree; must be at least 1.
    pub size1: u64,
    /// The size of the newer tree; at least `size1`.
    pub size2: u64,
    /// The proof hashes, leaf side first.
    pub hashes: Vec<Digest>,
}

/// Splits the inclusion proof of `index` in a tree of `size` leaves into its `inner` part
/// (below the level where the paths to `index` and to `size - 1` meet) and its `border` part
/// (left siblings along the right border above it). Requires `index < size`.
fn decompose(index: u64, size: u64) -> (u32, u32) {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// The exact number of hashes in the inclusion proof of leaf `index` in a tree of `size`
/// leaves (`inner + border`, RFC 9162 §2.1.3.2), or `None` when `index >= size`.
///
/// Decoders of containers that carry a proof (the receipt bundle) use it to refuse a proof
/// of the wrong length at decode time, so such a value has one encoding.
pub fn inclusion_proof_len(index: u64, size: u64) -> Option<usize> {
    (index < size).then(|| {
        let (inner, border) = decompose(index, size);
        (inner + border) as usize
    })
}

/// Chains `seed`, the node at `index` on its level, up through siblings on either side.
fn chain_inner(mut seed: Digest, proof: &[Digest], index: u64) -> Digest {
    for (i, hash) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, hash)
        } else {
            node_hash(hash, &seed)
        };
    }
    seed
}

/// Like [`chain_inner`], but uses only the siblings on the left: that recomputes the same
/// subtree as it was when it ended at `index`, the older tree's view.
fn chain_inner_right(mut seed: Digest, proof: &[Digest], index: u64) -> Digest {
    for (i, hash) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(hash, &seed);
        }
    }
    seed
}

/// Chains `seed` up the right border, where every sibling in the proof lies on the left.
fn chain_border_right(seed: Digest, proof: &[Digest]) -> Digest {
    proof.iter().fold(seed, |seed, hash| node_hash(hash, &seed))
}

impl InclusionProof {
    /// The root this proof leads to from `leaf_hash`, after the index and length checks.
    ///
    /// Useful to look up which checkpoint a proof belongs to; to check a proof against a
    /// known root, use [`InclusionProof::verify`].
    pub fn compute_root(&self, leaf_hash: &Digest) -> Result<Digest, ProofError> {
        let (index, size) = (self.leaf_index, self.tree_size);
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let (inner, border) = decompose(index, size);
        let want = (inner + border) as usize;
        if self.hashes.len() != want {
            return Err(ProofError::WrongProofSize {
                got: self.hashes.len(),
                want,
            });
        }
        let (inner_hashes, border_hashes) = self.hashes.split_at(inner as usize);
        let seed = chain_inner(*leaf_hash, inner_hashes, index);
        Ok(chain_border_right(seed, border_hashes))
    }

    /// Checks that the leaf with hash `leaf_hash` sits at `leaf_index` in the tree of
    /// `tree_size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
    ///
    /// The proof must have exactly the expected number of hashes. `root` and `tree_size`
    /// must come from the same signed checkpoint: the computation does not bind the size.
    pub fn verify(&self, leaf_hash: &Digest, root: &Digest) -> Result<(), ProofError> {
        if self.compute_root(leaf_hash)? == *root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        }
    }
}

impl ConsistencyProof {
    /// The newer tree's root this proof leads to from the older root `root1`, after checking
    /// that the proof reproduces `root1` itself.
    ///
    /// Sizes are checked first: `size1 > size2` and `size1 == 0` are rejected, and for
    /// `size1 == size2` the proof must be empty and the result is `root1`.
    pub fn compute_root2(&self, root1: &Digest) -> Result<Digest, ProofError> {
        let (size1, size2) = (self.size1, self.size2);
        if size1 > size2 {
            return Err(ProofError::SizeOrder { size1, size2 });
        }
        if size1 == 0 {
            return Err(ProofError::EmptyOldTree);
        }
        if size1 == size2 {
            if !self.hashes.is_empty() {
                return Err(ProofError::WrongProofSize {
                    got: self.hashes.len(),
                    want: 0,
                });
            }
            return Ok(*root1);
        }

        // The proof is the tail of the inclusion proof of leaf `size1 - 1` in the newer tree,
        // starting at level `shift`, where the older tree's last perfect subtree ends.
        let (inner, border) = decompose(size1 - 1, size2);
        let shift = size1.trailing_zeros();
        // `size1 < size2`, so the paths to `size1 - 1` and `size2 - 1` part above `shift`.
        let inner = inner - shift;
        // The seed is that subtree's root, which is `root1` itself if `size1` is a power of
        // two and otherwise the proof's first hash.
        let seeded_by_root1 = size1 == 1u64 << shift;
        let start = usize::from(!seeded_by_root1);
        let want = start + (inner + border) as usize;
        if self.hashes.len() != want {
            return Err(ProofError::WrongProofSize {
                got: self.hashes.len(),
                want,
            });
        }
        let seed = if seeded_by_root1 {
            *root1
        } else {
            self.hashes[0]
        };
        let (inner_hashes, border_hashes) = self.hashes[start..].split_at(inner as usize);
        let mask = (size1 - 1) >> shift;

        let hash1 = chain_inner_right(seed, inner_hashes, mask);
        let hash1 = chain_border_right(hash1, border_hashes);
        if hash1 != *root1 {
            return Err(ProofError::OldRootMismatch);
        }
        let hash2 = chain_inner(seed, inner_hashes, mask);
        Ok(chain_border_right(hash2, border_hashes))
    }

    /// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1`
    /// leaves with root `root1` (RFC 9162 §2.1.4.2, strict form of transparency-dev/merkle).
    ///
    /// Rejects `size1 > size2` ([`ProofError::SizeOrder`]), `size1 == 0`
    /// ([`ProofError::EmptyOldTree`]), a proof whose length is not exactly the expected one
    /// ([`ProofError::WrongProofSize`]; for equal sizes the expected length is 0), and roots
    /// the proof does not reproduce ([`ProofError::OldRootMismatch`],
    /// [`ProofError::RootMismatch`]).
    pub fn verify(&self, root1: &Digest, root2: &Digest) -> Result<(), ProofError> {
        if self.compute_root2(root1)? == *root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        }
    }
}

/// Appends to `out` the inclusion proof of the perfect node `(level, index)` in the tree of
/// `size` leaves: RFC 9162 `PATH` for that node, leaf side first.
///
/// Every sibling is a perfect node read from `src`, except possibly the one at the top of
/// the inner part, which may be the incomplete right-hand subtree `[start, size)`; that one
/// is folded from its perfect pieces. Total reads: `O(log size)`.
fn push_path<S: NodeSource + ?Sized>(
    src: &S,
    level: u32,
    index: u64,
    size: u64,
    out: &mut Vec<Digest>,
) -> Result<(), S::Error> {
    let (inner, border) = decompose(index, ((size - 1) >> level) + 1);
    out.reserve((inner + border) as usize);
    for i in 0..inner {
        let node_level = level + i;
        let sibling = (index >> i) ^ 1;
        let start = sibling << node_level;
        if size - start >= 1u64 << node_level {
            out.push(src.node(node_level, sibling)?);
        } else if let Some(partial) = fold_range(src, start, size)? {
            out.push(partial);
        }
    }
    let mut rest = index.checked_shr(inner).unwrap_or(0);
    let mut i = inner;
    while rest != 0 {
        if rest & 1 == 1 {
            out.push(src.node(level + i, (index >> i) - 1)?);
        }
        rest >>= 1;
        i += 1;
    }
    Ok(())
}

/// The inclusion proof of leaf `leaf_index` in the first `tree_size` leaves of the log
/// behind `src`, from `O(log tree_size)` node reads.
///
/// Requires `leaf_index < tree_size` ([`ProofError::IndexOutOfRange`]); `src` must hold
/// every perfect node of the first `tree_size` leaves ([`ProofError::Source`] otherwise).
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    leaf_index: u64,
    tree_size: u64,
) -> Result<InclusionProof, ProofError<S::Error>> {
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index: leaf_index,
            size: tree_size,
        });
    }
    let mut hashes = Vec::new();
    push_path(src, 0, leaf_index, tree_size, &mut hashes).map_err(ProofError::Source)?;
    Ok(InclusionProof {
        leaf_index,
        tree_size,
        hashes,
    })
}

/// The consistency proof from the first `size1` leaves of the log behind `src` to its first
/// `size2` leaves, from `O(log size2)` node reads.
///
/// Requires `0 < size1 <= size2` ([`ProofError::EmptyOldTree`], [`ProofError::SizeOrder`]);
/// for `size1 == size2` the proof is empty. `src` must hold every perfect node of the first
/// `size2` leaves.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<ConsistencyProof, ProofError<S::Error>> {
    if size1 > size2 {
        return Err(ProofError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    let mut hashes = Vec::new();
    if size1 < size2 {
        // The older tree's last perfect subtree: it ends exactly at `size1`.
        let level = size1.trailing_zeros();
        let index = (size1 - 1) >> level;
        // Unless it is the whole older tree (size1 a power of two), the verifier cannot
        // derive it from root1, so it leads the proof.
        if index != 0 {
            hashes.push(src.node(level, index).map_err(ProofError::Source)?);
        }
        push_path(src, level, index, size2, &mut hashes).map_err(ProofError::Source)?;
    }
    Ok(ConsistencyProof {
        size1,
        size2,
        hashes,
    })
}

#[cfg(test)]
mod tests {
    use std::vec;

    use super::*;
    use crate::merkle::{MemoryTree, MissingNode, leaf_hash, root_at};

    fn tree(size: u64) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for i in 0..size {
            tree.append(leaf_hash(&i.to_be_bytes()));
        }
        tree
    }

    #[test]
    fn decomposition_matches_rfc9162_examples() {
        // Leaf 0 of 8: three inner siblings. Leaf 6 of 7 is promoted twice and needs only
        // the two left subtrees on the border. Leaf 5 of 7: leaf 4 and leaf 6 inside, then
        // the subtree of leaves 0 to 3 on the border.
        assert_eq!(decompose(0, 8), (3, 0));
        assert_eq!(decompose(6, 7), (0, 2));
        assert_eq!(decompose(5, 7), (2, 1));
        assert_eq!(decompose(0, 1), (0, 0));
        // The extremes of u64 sizes: no shift overflows, at most 64 hashes.
        assert_eq!(decompose(0, u64::MAX), (64, 0));
        assert_eq!(decompose(u64::MAX - 1, u64::MAX), (0, 63));
    }

    #[test]
    fn proofs_of_the_seven_leaf_tree_verify() {
        let t = tree(7);
        let root = t.root();
        for i in 0..7 {
            let proof = inclusion_proof(&t, i, 7).unwrap();
            assert_eq!(proof.verify(&leaf_hash(&i.to_be_bytes()), &root), Ok(()));
        }
        for size1 in 1..=7 {
            let proof = consistency_proof(&t, size1, 7).unwrap();
            let root1 = root_at(&t, size1).unwrap();
            assert_eq!(proof.verify(&root1, &root), Ok(()), "size1 {size1}");
        }
    }

    #[test]
    fn generation_checks_its_arguments() {
        let t = tree(3);
        assert_eq!(
            inclusion_proof(&t, 3, 3),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert_eq!(
            inclusion_proof(&t, 0, 4),
            Err(ProofError::Source(MissingNode { level: 1, index: 1 }))
        );
        assert_eq!(
            consistency_proof(&t, 3, 2),
            Err(ProofError::SizeOrder { size1: 3, size2: 2 })
        );
        assert_eq!(consistency_proof(&t, 0, 3), Err(ProofError::EmptyOldTree));
        assert_eq!(consistency_proof(&t, 3, 3).map(|p| p.hashes), Ok(vec![]));
    }

    #[test]
    fn equal_sizes_need_an_empty_proof_and_equal_roots() {
        let root = tree(1).root();
        let empty = ConsistencyProof {
            size1: 1,
            size2: 1,
            hashes: vec![],
        };
        assert_eq!(empty.verify(&root, &root), Ok(()));
        assert_eq!(
            empty.verify(&root, &Digest::ZERO),
            Err(ProofError::RootMismatch)
        );
        let padded = ConsistencyProof {
            hashes: vec![root],
            ..empty
        };
        assert_eq!(
            padded.verify(&root, &root),
            Err(ProofError::WrongProofSize { got: 1, want: 0 })
        );
    }
}
