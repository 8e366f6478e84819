//! The append-only Merkle log that batches of receipts are committed to: RFC 6962 / RFC 9162
//! hashing, an O(log n) appender, an in-memory log, and inclusion and consistency proofs.
//!
//! # Tree shape
//!
//! Leaves are hashed as `SHA-256(0x00 || data)` and interior nodes as
//! `SHA-256(0x01 || left || right)`, so a leaf can never be passed off as a node. The tree over
//! `n` leaves is RFC 6962's `MTH`: split at `k`, the largest power of two below `n`, hash the
//! left `k` leaves and the right `n - k` leaves recursively, and never duplicate a node. The
//! empty tree's root is `SHA-256("")` ([`EMPTY_ROOT`]).
//!
//! # Perfect nodes
//!
//! A *perfect node* `(level, index)` is the root of the complete subtree over the leaves
//! `[index * 2^level, (index + 1) * 2^level)`. Once the log holds that many leaves the node
//! never changes, and every node of every tree size is either a perfect node or a fold of at
//! most 64 of them. Perfect nodes are therefore all a log store keeps ([`NodeSource`]), and
//! proof generation reads `O(log n)` of them without ever rehashing leaves.
//!
//! # Proofs
//!
//! [`inclusion_proof`] and [`consistency_proof`] follow RFC 9162's `PATH` and `SUBPROOF`, with
//! hashes ordered leaf side first. [`InclusionProof::verify`] and [`ConsistencyProof::verify`]
//! use RFC 9162 §2.1.3.2 / §2.1.4.2 in the strict formulation of transparency-dev/merkle: a
//! proof must have exactly the number of hashes its sizes imply, so padded or truncated
//! proofs are rejected rather than partly ignored.

mod compact;
mod memory;
mod proof;

use core::convert::Infallible;

pub use compact::CompactRange;
pub use memory::{MemoryTree, MissingNode};
pub use proof::{
    ConsistencyProof, InclusionProof, consistency_proof, inclusion_proof, inclusion_proof_len,
};

use crate::Digest;

/// The byte that starts every leaf hash input (RFC 6962 §2.1), so a leaf can never collide
/// with an interior node.
pub const LEAF_PREFIX: u8 = 0x00;

/// The byte that starts every interior node hash input (RFC 6962 §2.1).
pub const NODE_PREFIX: u8 = 0x01;

/// The root of the empty tree: SHA-256 of the empty string, as RFC 6962 §2.1 defines it.
pub const EMPTY_ROOT: Digest = Digest([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// The most hashes a valid inclusion proof can hold: one per level of a tree of `u64` size.
///
/// Decoders use it to refuse oversized proofs before allocating; [`InclusionProof::verify`]
/// rejects any proof whose length differs from the one its index and size imply.
pub const MAX_INCLUSION_PROOF_LEN: usize = 64;

/// The most hashes a valid consistency proof can hold: an inclusion path plus the old tree's
/// seed node. Reached, for example, by sizes `2^64 - 3` and `2^64 - 1`.
pub const MAX_CONSISTENCY_PROOF_LEN: usize = 65;

/// Hashes one log entry into a leaf: `SHA-256(0x00 || data)`.
///
/// The `0x00` prefix is what keeps an entry from being accepted as an interior node (a
/// second-preimage attack on the tree), so every leaf must go through this function.
pub fn leaf_hash(data: &[u8]) -> Digest {
    Digest::sha256_parts(&[&[LEAF_PREFIX], data])
}

/// Hashes two children into their parent: `SHA-256(0x01 || left || right)`.
///
/// `left` covers the lower leaf indices. The order matters: proofs encode each sibling's side
/// through the leaf index, not through the hash.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    // One contiguous input hashes measurably faster than three streamed parts, and this is
    // the hot loop of appends and proofs.
    let mut input = [NODE_PREFIX; 65];
    input[1..33].copy_from_slice(&left.0);
    input[33..].copy_from_slice(&right.0);
    Digest::sha256(&input)
}

/// Read access to the perfect nodes of a log, so proofs can be generated from whatever stores
/// them: [`MemoryTree`] in tests and tools, a database in the aggregator.
///
/// Invariant for implementers: `node(level, index)` returns the root of the perfect subtree
/// over leaves `[index * 2^level, (index + 1) * 2^level)`. The functions of this module only
/// ask for nodes that are complete in the tree size they are working on, that is
/// `(index + 1) * 2^level <= size`, and never for anything else, so a store that records the
/// nodes [`CompactRange::append`] reports can answer every request by lookup.
pub trait NodeSource {
    /// Why a node could not be read: a missing node, a database error.
    type Error;

    /// The perfect node at `level` (0 for leaves) and `index` (its position on that level).
    fn node(&self, level: u32, index: u64) -> Result<Digest, Self::Error>;
}

impl<S: NodeSource + ?Sized> NodeSource for &S {
    type Error = S::Error;

    fn node(&self, level: u32, index: u64) -> Result<Digest, Self::Error> {
        (**self).node(level, index)
    }
}

/// Why a proof was rejected, or could not be generated.
///
/// `E` is the error of the [`NodeSource`] a proof is generated from; verification reads no
/// store and uses the default, [`Infallible`]. Each variant names one check, so tests and
/// callers can tell a malformed proof from a proof against the wrong root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError<E = Infallible> {
    /// The leaf index is not inside the tree: every inclusion claim needs `index < size`.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The proof does not have exactly the number of hashes its index and sizes imply.
    #[error("proof has {got} hashes, expected {want}")]
    WrongProofSize {
        /// The number of hashes the proof holds.
        got: usize,
        /// The number its index and sizes require.
        want: usize,
    },
    /// The root computed from the proof differs from the expected root (of the tree for an
    /// inclusion proof, of the newer tree for a consistency proof).
    #[error("the computed root does not match the expected root")]
    RootMismatch,
    /// A consistency proof does not reproduce the older tree's root.
    #[error("the computed root of the older tree does not match its expected root")]
    OldRootMismatch,
    /// A consistency proof was asked for from a larger tree to a smaller one.
    #[error("the older tree size {size1} is larger than the newer tree size {size2}")]
    SizeOrder {
        /// The claimed older tree size.
        size1: u64,
        /// The claimed newer tree size.
        size2: u64,
    },
    /// A consistency proof from the empty tree proves nothing (every tree extends it), so it
    /// is refused, as transparency-dev/merkle does, rather than accepted vacuously.
    #[error("a consistency proof from the empty tree is meaningless")]
    EmptyOldTree,
    /// The node store failed while a proof was being generated.
    #[error("reading a stored node failed: {0}")]
    Source(E),
}

impl<E> ProofError<E> {
    /// A stable machine-readable code for the check that failed (used in vectors).
    pub fn code(&self) -> &'static str {
        match self {
            ProofError::IndexOutOfRange { .. } => "index_out_of_range",
            ProofError::WrongProofSize { .. } => "wrong_proof_size",
            ProofError::RootMismatch => "root_mismatch",
            ProofError::OldRootMismatch => "old_root_mismatch",
            ProofError::SizeOrder { .. } => "size_order",
            ProofError::EmptyOldTree => "empty_old_tree",
            ProofError::Source(_) => "source",
        }
    }
}

/// The root of the subtree over leaves `[start, end)`, folded from its perfect pieces, or
/// `None` if the range is empty.
///
/// Precondition: `start` is a multiple of the smallest power of two `>= end - start` (true
/// for `start == 0` and for the right-hand part of any RFC 6962 split), so the range is
/// exactly the perfect pieces given by the set bits of its length, largest first. The fold
/// runs right to left, mirroring how `MTH` splits off the largest power of two first.
fn fold_range<S: NodeSource + ?Sized>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Option<Digest>, S::Error> {
    let mut remaining = end - start;
    let mut pos = end;
    let mut acc: Option<Digest> = None;
    while remaining != 0 {
        let level = remaining.trailing_zeros();
        let width = 1u64 << level;
        pos -= width;
        remaining -= width;
        let piece = src.node(level, pos >> level)?;
        acc = Some(match acc {
            None => piece,
            Some(right) => node_hash(&piece, &right),
        });
    }
    Ok(acc)
}

/// The root of the first `size` leaves of the log behind `src`, from at most 64 reads (one
/// per set bit of `size`).
///
/// This is the root any past checkpoint of the log must have carried; `size == 0` gives
/// [`EMPTY_ROOT`] without reading anything.
pub fn root_at<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Digest, S::Error> {
    Ok(fold_range(src, 0, size)?.unwrap_or(EMPTY_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &Digest) -> std::string::String {
        std::format!("{d}")
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, Digest::sha256(b""));
    }

    #[test]
    fn leaf_hash_of_empty_entry_matches_rfc6962_reference() {
        // The first leaf of the certificate-transparency reference tree is the empty string.
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn prefixes_separate_leaves_from_nodes() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut concat = std::vec::Vec::new();
        concat.extend_from_slice(&a.0);
        concat.extend_from_slice(&b.0);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        assert_eq!(node_hash(&a, &b), Digest::sha256_parts(&[&[1], &a.0, &b.0]));
    }

    /// The roots of the eight-leaf tree of the certificate-transparency reference tests, for
    /// every size from 1 to 8.
    #[test]
    fn roots_match_rfc6962_reference_tree() {
        let leaves: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut tree = MemoryTree::new();
        for (data, want) in leaves.iter().zip(roots) {
            tree.append(leaf_hash(data));
            assert_eq!(hex(&tree.root()), want, "size {}", tree.size());
        }
        for (size, want) in (1..=8).zip(roots) {
            assert_eq!(hex(&root_at(&tree, size).unwrap()), want, "root_at({size})");
        }
        assert_eq!(root_at(&tree, 0), Ok(EMPTY_ROOT));
    }

    #[test]
    fn error_messages_name_the_numbers() {
        let e: ProofError = ProofError::WrongProofSize { got: 3, want: 2 };
        assert_eq!(std::format!("{e}"), "proof has 3 hashes, expected 2");
        let e: ProofError<MissingNode> = ProofError::Source(MissingNode { level: 2, index: 7 });
        assert_eq!(
            std::format!("{e}"),
            "reading a stored node failed: node (level 2, index 7) is not in the tree"
        );
    }
}
