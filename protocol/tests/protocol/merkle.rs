//! Integration tests of the RFC 6962 Merkle log: every transparency-dev vector, rs_merkle as a
//! differential oracle, a recursive reference implementation of RFC 9162 `MTH`, `PATH` and
//! `SUBPROOF`, deliberately corrupted proofs, and properties over arbitrary `u64` sizes.
#![allow(
    clippy::unwrap_used,
    reason = "clippy's allow-unwrap-in-tests covers #[test] functions, not the helpers here"
)]

use std::cell::Cell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use serde_json::Value;
use tally_protocol::Digest;
use tally_protocol::merkle::{
    CompactRange, ConsistencyProof, EMPTY_ROOT, InclusionProof, MAX_CONSISTENCY_PROOF_LEN,
    MAX_INCLUSION_PROOF_LEN, MemoryTree, NodeSource, ProofError, consistency_proof,
    inclusion_proof, leaf_hash, node_hash, root_at,
};

/// The leaf hash of the `i`-th test entry; distinct for distinct `i`.
fn leaf(i: u64) -> Digest {
    leaf_hash(&i.to_be_bytes())
}

fn leaves(n: u64) -> Vec<Digest> {
    (0..n).map(leaf).collect()
}

fn tree_of(leaves: &[Digest]) -> MemoryTree {
    let mut tree = MemoryTree::with_capacity(leaves.len());
    for l in leaves {
        tree.append(*l);
    }
    tree
}

/// `digest` with one bit flipped.
fn flip(digest: &Digest, bit: usize) -> Digest {
    let mut bytes = digest.0;
    bytes[(bit / 8) % 32] ^= 1 << (bit % 8);
    Digest(bytes)
}

// ---------------------------------------------------------------------------------------------
// The transparency-dev/merkle vectors.
// ---------------------------------------------------------------------------------------------

/// The number of vector files in `testdata/rfc6962` today, so a lost folder or file
/// fails the test instead of silently shrinking it.
const INCLUSION_VECTORS: usize = 98;
const CONSISTENCY_VECTORS: usize = 98;

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/rfc6962")
}

/// Every `*.json` file under `dir`, sorted, or a panic that says where the vectors belong.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
            panic!(
                "cannot read RFC 6962 vector folder {}: {e} (the vectors are committed under \
                 testdata/rfc6962)",
                dir.display()
            )
        });
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// A field holding base64 bytes.
fn b64(v: &Value, key: &str) -> Vec<u8> {
    let text = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"));
    BASE64.decode(text).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a u64"))
}

/// The proof hashes, as raw bytes; `null` is the empty proof.
fn proof_bytes(v: &Value) -> Vec<Vec<u8>> {
    match &v["proof"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| BASE64.decode(i.as_str().unwrap()).unwrap())
            .collect(),
        other => panic!("proof is {other}"),
    }
}

/// A hash that is hashed further (a leaf hash or a proof entry) must be a SHA-256 output;
/// anything else cannot even be represented as a [`Digest`], so a decoder rejects it, as
/// transparency-dev rejects a leaf hash of the wrong size.
fn hash_input(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest)
}

/// A root is only ever compared for equality, never hashed, so a root of the wrong length
/// (the vectors use placeholders such as "don't care 1") is mapped to an opaque digest that
/// equals exactly the other placeholders with the same bytes and no real root.
fn root(bytes: &[u8]) -> Digest {
    hash_input(bytes).unwrap_or_else(|| {
        Digest::sha256_parts(&[b"tally test: opaque root that is not 32 bytes", bytes])
    })
}

/// What happened to one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Verified,
    /// A hash input was not 32 bytes: rejected before verification.
    Undecodable(&'static str),
    Rejected(ProofError),
}

fn check_inclusion_vector(v: &Value) -> Outcome {
    let Some(leaf) = hash_input(&b64(v, "leafHash")) else {
        return Outcome::Undecodable("leafHash");
    };
    let Some(hashes) = proof_bytes(v).iter().map(|h| hash_input(h)).collect() else {
        return Outcome::Undecodable("proof");
    };
    let proof = InclusionProof {
        leaf_index: num(v, "leafIdx"),
        tree_size: num(v, "treeSize"),
        hashes,
    };
    match proof.verify(&leaf, &root(&b64(v, "root"))) {
        Ok(()) => Outcome::Verified,
        Err(e) => Outcome::Rejected(e),
    }
}

fn check_consistency_vector(v: &Value) -> Outcome {
    let Some(hashes) = proof_bytes(v).iter().map(|h| hash_input(h)).collect() else {
        return Outcome::Undecodable("proof");
    };
    let proof = ConsistencyProof {
        size1: num(v, "size1"),
        size2: num(v, "size2"),
        hashes,
    };
    match proof.verify(&root(&b64(v, "root1")), &root(&b64(v, "root2"))) {
        Ok(()) => Outcome::Verified,
        Err(e) => Outcome::Rejected(e),
    }
}

/// The error a corrupted vector must produce, from the corruption its file is named after,
/// where that is determined; `None` accepts any rejection.
fn expected_rejection(name: &str) -> Option<fn(&Outcome) -> bool> {
    let size = |o: &Outcome| matches!(o, Outcome::Rejected(ProofError::WrongProofSize { .. }));
    let root = |o: &Outcome| {
        matches!(
            o,
            Outcome::Rejected(ProofError::RootMismatch | ProofError::OldRootMismatch)
        )
    };
    let garbage = |o: &Outcome| matches!(o, Outcome::Undecodable("proof"));
    if name.starts_with("modified-proof") || name.starts_with("wrong-root") {
        Some(root)
    } else if name.starts_with("truncated-proof")
        || name.starts_with("inserted-component")
        || name.starts_with("removed-component")
        || name.starts_with("trailing-root")
        || name.starts_with("preceding-root")
        || name.starts_with("preceding-proof")
        || name.starts_with("empty-proof")
    {
        Some(size)
    } else if name.ends_with("-garbage.json") {
        Some(garbage)
    } else if name.starts_with("size1-is-greater-than-size2") {
        Some(|o| matches!(o, Outcome::Rejected(ProofError::SizeOrder { .. })))
    } else if name.contains("size1-is-zero")
        || name.starts_with("sizes-are-equal-zero")
        || name.ends_with("sizes-are-zero.json")
    {
        Some(|o| matches!(o, Outcome::Rejected(ProofError::EmptyOldTree)))
    } else {
        None
    }
}

/// Runs every vector file and checks it against its `wantErr`, then checks the counts.
#[test]
fn transparency_dev_vectors() {
    let dir = vector_dir();
    assert!(
        dir.is_dir(),
        "RFC 6962 vectors not found at {} (they are committed under testdata/rfc6962)",
        dir.display()
    );
    let mut counts = [0usize; 2];
    let mut failures = String::new();
    for path in json_files(&dir) {
        let rel = path
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let outcome = if rel.starts_with("inclusion") {
            counts[0] += 1;
            check_inclusion_vector(&v)
        } else if rel.starts_with("consistency") {
            counts[1] += 1;
            check_consistency_vector(&v)
        } else {
            panic!("{rel}: neither an inclusion nor a consistency vector")
        };
        let want_err = v["wantErr"].as_bool().unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let ok = if want_err {
            outcome != Outcome::Verified && expected_rejection(&name).is_none_or(|f| f(&outcome))
        } else {
            outcome == Outcome::Verified
        };
        if !ok {
            writeln!(
                failures,
                "{rel} ({}): wantErr {want_err}, got {outcome:?}",
                v["desc"]
            )
            .unwrap();
        }
    }
    assert!(failures.is_empty(), "vectors failed:\n{failures}");
    assert_eq!(
        counts,
        [INCLUSION_VECTORS, CONSISTENCY_VECTORS],
        "[inclusion, consistency] vector files found under {}",
        dir.display()
    );
}

// ---------------------------------------------------------------------------------------------
// rs_merkle as a differential oracle.
// ---------------------------------------------------------------------------------------------

/// rs_merkle with RFC 6962 domain separation. rs_merkle takes leaf hashes as they are and
/// builds the tree level by level, handing a level's lone last node to `concat_and_hash` with
/// no right sibling. Promoting that node unchanged (rs_merkle's default) is exactly RFC 6962's
/// shape; hashing it in any way is not (see `rs_merkle_must_promote_the_lone_node`).
#[derive(Clone)]
struct Rfc6962Hasher;

impl rs_merkle::Hasher for Rfc6962Hasher {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        leaf_hash(data).0
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => node_hash(&Digest(*left), &Digest(*right)).0,
            None => *left,
        }
    }
}

/// The Bitcoin-style alternative: a lone node is paired with itself.
#[derive(Clone)]
struct DuplicatingHasher;

impl rs_merkle::Hasher for DuplicatingHasher {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        leaf_hash(data).0
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        node_hash(&Digest(*left), &Digest(*right.unwrap_or(left))).0
    }
}

type RsTree<H> = rs_merkle::MerkleTree<H>;

#[test]
fn rs_merkle_roots_equal_ours_for_every_size_up_to_2000() {
    const N: usize = 2000;
    let all = leaves(N as u64);
    let raw: Vec<[u8; 32]> = all.iter().map(|d| d.0).collect();
    let ours = tree_of(&all);
    let want = |n: usize| Some(ours.root_at(n as u64).unwrap().0);

    // A fresh tree per size: the most independent check, spread over threads because it
    // hashes two million nodes.
    const THREADS: usize = 4;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (raw, want) = (&raw, &want);
            scope.spawn(move || {
                for n in (1 + t..=N).step_by(THREADS) {
                    let fresh = RsTree::<Rfc6962Hasher>::from_leaves(&raw[..n]);
                    assert_eq!(fresh.root(), want(n), "rs_merkle from_leaves, size {n}");
                }
            });
        }
    });

    // One tree grown a leaf at a time, through rs_merkle's incremental commit path.
    let mut incremental = RsTree::<Rfc6962Hasher>::new();
    for n in 1..=N {
        incremental.insert(raw[n - 1]).commit();
        assert_eq!(
            incremental.root(),
            want(n),
            "rs_merkle insert + commit, size {n}"
        );
    }
}

#[test]
fn rs_merkle_inclusion_proofs_equal_ours() {
    let all = leaves(130);
    let raw: Vec<[u8; 32]> = all.iter().map(|d| d.0).collect();
    let ours = tree_of(&all);
    for n in 1..=130usize {
        let oracle = RsTree::<Rfc6962Hasher>::from_leaves(&raw[..n]);
        for i in 0..n {
            let theirs: Vec<Digest> = oracle
                .proof(&[i])
                .proof_hashes()
                .iter()
                .map(|h| Digest(*h))
                .collect();
            let mine = inclusion_proof(&ours, i as u64, n as u64).unwrap();
            assert_eq!(mine.hashes, theirs, "leaf {i} of {n}");
        }
    }
}

/// rs_merkle runs `bit_length(n)` rounds, so even for a power of two it calls
/// `concat_and_hash(root, None)` once more at the top: a hasher that pairs the lone node
/// with itself changes the root for every `n`, not only for the unbalanced ones.
#[test]
fn rs_merkle_must_promote_the_lone_node() {
    let all = leaves(64);
    let raw: Vec<[u8; 32]> = all.iter().map(|d| d.0).collect();
    let ours = tree_of(&all);
    for n in 1..=64usize {
        let duplicated = RsTree::<DuplicatingHasher>::from_leaves(&raw[..n]).root();
        assert_ne!(
            duplicated,
            Some(ours.root_at(n as u64).unwrap().0),
            "size {n}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, written as recursively as the RFC.
// ---------------------------------------------------------------------------------------------

/// The largest power of two smaller than `n`, for `n > 1`.
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn mth(d: &[Digest]) -> Digest {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = split(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn reference_path(m: usize, d: &[Digest]) -> Vec<Digest> {
    let n = d.len();
    if n == 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = reference_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = reference_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn reference_subproof(m: usize, d: &[Digest], b: bool) -> Vec<Digest> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = split(n);
    if m <= k {
        let mut p = reference_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = reference_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

/// A [`NodeSource`] that fails any read of a node not complete in `size`, to check that
/// generation stays inside the tree it was asked about, and counts reads.
struct Bounded<'a> {
    inner: &'a MemoryTree,
    size: u64,
    reads: Cell<u32>,
}

impl<'a> Bounded<'a> {
    fn new(inner: &'a MemoryTree, size: u64) -> Self {
        Self {
            inner,
            size,
            reads: Cell::new(0),
        }
    }
}

impl NodeSource for Bounded<'_> {
    type Error = String;

    fn node(&self, level: u32, index: u64) -> Result<Digest, String> {
        self.reads.set(self.reads.get() + 1);
        if (u128::from(index) + 1) << level > u128::from(self.size) {
            return Err(format!(
                "node ({level}, {index}) is not complete in size {}",
                self.size
            ));
        }
        self.inner.node(level, index).map_err(|e| e.to_string())
    }
}

#[test]
fn compact_range_and_memory_tree_match_reference_mth() {
    let all = leaves(300);
    let mut range = CompactRange::new();
    let mut tree = MemoryTree::new();
    let mut reported = Vec::new();
    for n in 0..=300usize {
        let want = mth(&all[..n]);
        assert_eq!(range.root(), want, "CompactRange, size {n}");
        assert_eq!(tree.root(), want, "MemoryTree, size {n}");
        assert_eq!(root_at(&tree, n as u64).unwrap(), want);
        if n < 300 {
            range.append(all[n], |level, index, digest| {
                reported.push((level, index, digest));
            });
            tree.append(all[n]);
        }
    }
    // The reported nodes are exactly the stored perfect nodes, each once.
    assert_eq!(reported.len(), 2 * 300 - 300usize.count_ones() as usize);
    for (level, index, digest) in reported {
        assert_eq!(tree.node(level, index), Ok(digest));
        let start = (index as usize) << level;
        assert_eq!(digest, mth(&all[start..start + (1 << level)]));
    }
}

/// Checks every claim one can make with a valid inclusion proof turned invalid.
fn check_inclusion_corruptions(proof: &InclusionProof, leaf: &Digest, roots: &[Digest]) {
    let (m, n) = (proof.leaf_index, proof.tree_size);
    let root = roots[n as usize];
    let len = proof.hashes.len();
    let ctx = format!("leaf {m} of {n}");

    assert_eq!(
        proof.verify(leaf, &flip(&root, 5)),
        Err(ProofError::RootMismatch),
        "{ctx}"
    );
    assert_eq!(
        proof.verify(&flip(leaf, 77), &root),
        Err(ProofError::RootMismatch),
        "{ctx}"
    );
    assert_eq!(
        proof.verify(&leaf_hash(b"another entry"), &root),
        Err(ProofError::RootMismatch),
        "{ctx}"
    );
    for j in 0..len {
        for bit in [0, 131, 255] {
            let mut bad = proof.clone();
            bad.hashes[j] = flip(&bad.hashes[j], bit);
            assert_eq!(
                bad.verify(leaf, &root),
                Err(ProofError::RootMismatch),
                "{ctx}, hash {j} bit {bit}"
            );
        }
    }
    let too_long = |got| Err(ProofError::WrongProofSize { got, want: len });
    for at in [0, len] {
        let mut bad = proof.clone();
        bad.hashes.insert(at, root);
        assert_eq!(bad.verify(leaf, &root), too_long(len + 1), "{ctx}, insert");
    }
    if len > 0 {
        for at in [0, len - 1] {
            let mut bad = proof.clone();
            bad.hashes.remove(at);
            assert_eq!(bad.verify(leaf, &root), too_long(len - 1), "{ctx}, remove");
        }
    }
    // Another index in the same tree.
    for other in [m.wrapping_sub(1), m + 1, m ^ 2] {
        if other < n && other != m {
            let bad = InclusionProof {
                leaf_index: other,
                ..proof.clone()
            };
            let err = bad.verify(leaf, &root).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProofError::RootMismatch | ProofError::WrongProofSize { .. }
                ),
                "{ctx}, claimed index {other}: {err:?}"
            );
        }
    }
    for other in [n, n + 1, u64::MAX] {
        let bad = InclusionProof {
            leaf_index: other,
            ..proof.clone()
        };
        assert_eq!(
            bad.verify(leaf, &root),
            Err(ProofError::IndexOutOfRange {
                index: other,
                size: n
            }),
            "{ctx}"
        );
    }
    // Another tree size, against the root of that size.
    for other in [n - 1, n + 1, 2 * n] {
        let Some(other_root) = roots.get(other as usize) else {
            continue;
        };
        let bad = InclusionProof {
            tree_size: other,
            ..proof.clone()
        };
        let err = bad.verify(leaf, other_root).unwrap_err();
        if m >= other {
            assert_eq!(
                err,
                ProofError::IndexOutOfRange {
                    index: m,
                    size: other
                }
            );
        } else {
            assert!(
                matches!(
                    err,
                    ProofError::RootMismatch | ProofError::WrongProofSize { .. }
                ),
                "{ctx}, claimed size {other}: {err:?}"
            );
        }
    }
}

/// Checks every claim one can make with a valid consistency proof turned invalid.
fn check_consistency_corruptions(proof: &ConsistencyProof, roots: &[Digest]) {
    let (n1, n2) = (proof.size1, proof.size2);
    let (root1, root2) = (roots[n1 as usize], roots[n2 as usize]);
    let len = proof.hashes.len();
    let ctx = format!("sizes {n1} -> {n2}");
    let either_root = |r: Result<(), ProofError>| {
        matches!(
            r,
            Err(ProofError::RootMismatch | ProofError::OldRootMismatch)
        )
    };

    assert_eq!(
        proof.verify(&root1, &flip(&root2, 9)),
        Err(ProofError::RootMismatch),
        "{ctx}"
    );
    // A wrong old root is caught by the old-root check, except where the old tree's root is
    // itself the seed (equal sizes, or size1 a power of two): then the new root comes out wrong.
    let want = if n1 == n2 || n1.is_power_of_two() {
        ProofError::RootMismatch
    } else {
        ProofError::OldRootMismatch
    };
    assert_eq!(proof.verify(&flip(&root1, 200), &root2), Err(want), "{ctx}");
    if n1 != n2 {
        assert!(either_root(proof.verify(&root2, &root1)), "{ctx}, swapped");
    }
    for j in 0..len {
        for bit in [0, 100, 255] {
            let mut bad = proof.clone();
            bad.hashes[j] = flip(&bad.hashes[j], bit);
            assert!(
                either_root(bad.verify(&root1, &root2)),
                "{ctx}, hash {j} bit {bit}"
            );
        }
    }
    for at in [0, len] {
        let mut bad = proof.clone();
        bad.hashes.insert(at, root1);
        assert_eq!(
            bad.verify(&root1, &root2),
            Err(ProofError::WrongProofSize {
                got: len + 1,
                want: len
            }),
            "{ctx}, insert"
        );
    }
    if len > 0 {
        for at in [0, len - 1] {
            let mut bad = proof.clone();
            bad.hashes.remove(at);
            assert_eq!(
                bad.verify(&root1, &root2),
                Err(ProofError::WrongProofSize {
                    got: len - 1,
                    want: len
                }),
                "{ctx}, remove"
            );
        }
    }
    // Other sizes, against the roots of those sizes.
    let claims = [
        (n1 - 1, n2),
        (n1 + 1, n2),
        (n1, n2 - 1),
        (n1, n2 + 1),
        (n2, n1),
        (0, n2),
    ];
    for (s1, s2) in claims {
        if (s1, s2) == (n1, n2) {
            continue;
        }
        let (Some(r1), Some(r2)) = (roots.get(s1 as usize), roots.get(s2 as usize)) else {
            continue;
        };
        let bad = ConsistencyProof {
            size1: s1,
            size2: s2,
            hashes: proof.hashes.clone(),
        };
        let err = bad.verify(r1, r2).unwrap_err();
        let expected = if s1 > s2 {
            matches!(err, ProofError::SizeOrder { size1, size2 } if (size1, size2) == (s1, s2))
        } else if s1 == 0 {
            err == ProofError::EmptyOldTree
        } else {
            matches!(
                err,
                ProofError::WrongProofSize { .. }
                    | ProofError::RootMismatch
                    | ProofError::OldRootMismatch
            )
        };
        assert!(expected, "{ctx}, claimed sizes {s1} -> {s2}: {err:?}");
    }
}

/// Every inclusion and consistency proof of every tree of up to 64 leaves: equal to the RFC
/// reference, generated from complete nodes only, verified, and rejected once corrupted.
#[test]
fn every_proof_up_to_64_leaves() {
    const N: u64 = 64;
    let all = leaves(N + 1);
    let tree = tree_of(&all);
    let roots: Vec<Digest> = (0..=N + 1).map(|n| mth(&all[..n as usize])).collect();
    for n in 1..=N {
        let d = &all[..n as usize];
        let src = Bounded::new(&tree, n);
        for m in 0..n {
            src.reads.set(0);
            let proof = inclusion_proof(&src, m, n).unwrap();
            // At most 6 siblings, one of which may be folded from at most 5 pieces.
            assert!(src.reads.get() <= 11, "{} reads", src.reads.get());
            assert_eq!(
                proof.hashes,
                reference_path(m as usize, d),
                "leaf {m} of {n}"
            );
            assert_eq!(proof.verify(&all[m as usize], &roots[n as usize]), Ok(()));
            assert_eq!(proof.compute_root(&all[m as usize]), Ok(roots[n as usize]));
            check_inclusion_corruptions(&proof, &all[m as usize], &roots);
        }
        for n1 in 1..=n {
            let proof = consistency_proof(&src, n1, n).unwrap();
            let want = reference_subproof(n1 as usize, d, true);
            assert_eq!(proof.hashes, want, "sizes {n1} -> {n}");
            let (root1, root2) = (roots[n1 as usize], roots[n as usize]);
            assert_eq!(proof.verify(&root1, &root2), Ok(()), "sizes {n1} -> {n}");
            assert_eq!(proof.compute_root2(&root1), Ok(root2));
            check_consistency_corruptions(&proof, &roots);
        }
    }
}

#[test]
fn generation_rejects_impossible_requests() {
    let tree = tree_of(&leaves(10));
    assert_eq!(
        inclusion_proof(&tree, 10, 10),
        Err(ProofError::IndexOutOfRange {
            index: 10,
            size: 10
        })
    );
    assert_eq!(
        inclusion_proof(&tree, 0, 0),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        consistency_proof(&tree, 5, 4),
        Err(ProofError::SizeOrder { size1: 5, size2: 4 })
    );
    assert_eq!(
        consistency_proof(&tree, 0, 4),
        Err(ProofError::EmptyOldTree)
    );
    assert_eq!(
        consistency_proof(&tree, 0, 0),
        Err(ProofError::EmptyOldTree)
    );
    // Sizes beyond what the store holds surface the store's error.
    assert!(matches!(
        inclusion_proof(&tree, 3, 11),
        Err(ProofError::Source(_))
    ));
    assert!(matches!(
        consistency_proof(&tree, 3, 12),
        Err(ProofError::Source(_))
    ));
}

#[test]
fn verification_rejects_impossible_claims() {
    let root = leaf(0);
    let empty = |size1, size2| ConsistencyProof {
        size1,
        size2,
        hashes: Vec::new(),
    };
    assert_eq!(
        empty(0, 0).verify(&EMPTY_ROOT, &EMPTY_ROOT),
        Err(ProofError::EmptyOldTree)
    );
    assert_eq!(
        empty(0, 1).verify(&EMPTY_ROOT, &root),
        Err(ProofError::EmptyOldTree)
    );
    assert_eq!(
        empty(2, 1).verify(&root, &root),
        Err(ProofError::SizeOrder { size1: 2, size2: 1 })
    );
    assert_eq!(
        empty(1, 2).verify(&root, &root),
        Err(ProofError::WrongProofSize { got: 0, want: 1 })
    );
    let single = InclusionProof {
        leaf_index: 0,
        tree_size: 1,
        hashes: Vec::new(),
    };
    assert_eq!(single.verify(&root, &root), Ok(()));
    let none = InclusionProof {
        tree_size: 0,
        ..single
    };
    assert_eq!(
        none.verify(&root, &EMPTY_ROOT),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
}

// ---------------------------------------------------------------------------------------------
// Arbitrary u64 sizes.
// ---------------------------------------------------------------------------------------------

/// A log of any `u64` size whose leaves all have the same hash, so each level has a single
/// perfect node value and the whole tree is consistent and computable in `O(64)`. It checks
/// that only nodes complete in `size` are read, and counts the reads.
struct UniformTree {
    levels: [Digest; 64],
    size: u64,
    reads: Cell<u32>,
}

impl UniformTree {
    fn new(size: u64) -> Self {
        let mut levels = [leaf(7); 64];
        for l in 1..64 {
            levels[l] = node_hash(&levels[l - 1], &levels[l - 1]);
        }
        Self {
            levels,
            size,
            reads: Cell::new(0),
        }
    }
}

impl NodeSource for UniformTree {
    type Error = String;

    fn node(&self, level: u32, index: u64) -> Result<Digest, String> {
        self.reads.set(self.reads.get() + 1);
        if (u128::from(index) + 1) << level > u128::from(self.size) {
            return Err(format!("node ({level}, {index}) beyond size {}", self.size));
        }
        Ok(self.levels[level as usize])
    }
}

/// Sizes that reach the edges of `u64`: tiny, powers of two and their neighbours, huge.
fn any_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1..=4096u64,
        (0..64u32).prop_map(|b| 1u64 << b),
        (1..64u32).prop_map(|b| (1u64 << b) - 1),
        (1..64u32).prop_map(|b| (1u64 << b) + 1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        1..=u64::MAX,
    ]
}

proptest! {
    // Failing cases are kept in `protocol/proptest-regressions/merkle.txt` and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/merkle.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn proofs_for_any_u64_size_verify(size in any_size(), seed in any::<u64>(), seed1 in any::<u64>()) {
        let src = UniformTree::new(size);
        let root = root_at(&src, size).unwrap();
        src.reads.set(0);
        let index = seed % size;
        let proof = inclusion_proof(&src, index, size).unwrap();
        prop_assert!(proof.hashes.len() <= MAX_INCLUSION_PROOF_LEN);
        prop_assert!(src.reads.get() <= 2 * 64, "{} reads", src.reads.get());
        prop_assert_eq!(proof.verify(&src.levels[0], &root), Ok(()));

        let size1 = 1 + seed1 % size;
        let root1 = root_at(&src, size1).unwrap();
        src.reads.set(0);
        let proof = consistency_proof(&src, size1, size).unwrap();
        prop_assert!(proof.hashes.len() <= MAX_CONSISTENCY_PROOF_LEN);
        prop_assert!(src.reads.get() <= 2 * 64 + 1, "{} reads", src.reads.get());
        prop_assert_eq!(proof.verify(&root1, &root), Ok(()));
    }

    #[test]
    fn proofs_in_random_trees_match_the_reference(
        n in 1..1500u64,
        m_seed in any::<u64>(),
        n1_seed in any::<u64>(),
    ) {
        let all = leaves(n);
        let tree = tree_of(&all);
        let src = Bounded::new(&tree, n);
        let root = mth(&all);
        prop_assert_eq!(tree.root(), root);

        let m = m_seed % n;
        let proof = inclusion_proof(&src, m, n).unwrap();
        prop_assert_eq!(&proof.hashes, &reference_path(m as usize, &all));
        prop_assert_eq!(proof.verify(&all[m as usize], &root), Ok(()));

        let n1 = 1 + n1_seed % n;
        let proof = consistency_proof(&src, n1, n).unwrap();
        prop_assert_eq!(&proof.hashes, &reference_subproof(n1 as usize, &all, true));
        prop_assert_eq!(proof.verify(&mth(&all[..n1 as usize]), &root), Ok(()));
    }

    #[test]
    fn restored_ranges_continue_like_the_original(n in 0..600u64, extra in 0..200u64) {
        let all = leaves(n + extra);
        let tree = tree_of(&all[..n as usize]);
        let mut range = CompactRange::from_source(&tree, n).unwrap();
        for l in &all[n as usize..] {
            range.append(*l, |_, _, _| {});
        }
        prop_assert_eq!(range.root(), mth(&all));
        prop_assert_eq!(range.size(), n + extra);
    }

    /// Arbitrary claims never panic, and nothing verifies against a random root.
    #[test]
    fn garbage_never_verifies(
        index in any::<u64>(),
        size1 in any_size(),
        size2 in any_size(),
        hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..=66),
        root1 in any::<[u8; 32]>(),
        root2 in any::<[u8; 32]>(),
    ) {
        let hashes: Vec<Digest> = hashes.into_iter().map(Digest).collect();
        let inclusion = InclusionProof { leaf_index: index, tree_size: size2, hashes: hashes.clone() };
        prop_assert!(inclusion.verify(&Digest(root1), &Digest(root2)).is_err());
        let consistency = ConsistencyProof { size1, size2, hashes };
        if size1 != size2 || root1 != root2 {
            prop_assert!(consistency.verify(&Digest(root1), &Digest(root2)).is_err());
        }
    }
}
