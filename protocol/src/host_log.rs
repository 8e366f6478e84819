//! Each host's receipts as an append-only RFC 6962 log, and the host checkpoints that sign
//! it (receipts v2, `docs/protocol.md` §4.2).
//!
//! A host signs no receipt on its own: every group commit ends with one **host
//! checkpoint**, a C2SP checkpoint body `<origin>\n<size>\n<base64 root>\n` over its log,
//! signed with the host key, where the origin `tally-host/<chain_id>/<contract>/<host hex>`
//! binds the signature to the host, the chain and the contract. A receipt is host-signed
//! when it is included at index `host_seq − 1` under such a checkpoint. Two checkpoints of
//! one host that cannot both be true (same size and different roots, or one index proved
//! with two different leaves) are equivocation.
//!
//! Everything here is `no_std` and dependency-free, so the contract and the client check
//! host checkpoints with the same bytes the attestor signs.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api};
use crate::merkle::{
    CompactRange, InclusionProof, NodeSource, ProofError, inclusion_proof, inclusion_proof_len,
    node_hash,
};
use crate::{Digest, PublicKey, Signature};

pub(crate) const HOST_CHECKPOINT_TAG: Tag = Tag::new("tally:host-cp");

/// The origin (and key name) of host `host`'s log on `contract` of chain `chain_id`.
pub fn host_origin(chain_id: &str, contract: &str, host: &PublicKey) -> String {
    let mut s = String::with_capacity(11 + chain_id.len() + contract.len() + 2 + 64);
    s.push_str("tally-host/");
    s.push_str(chain_id);
    s.push('/');
    s.push_str(contract);
    s.push('/');
    for b in host.0 {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding of a 32-byte value (44 characters), as checkpoint bodies
/// write roots.
pub(crate) fn base64_32(bytes: &[u8; 32]) -> [u8; 44] {
    let mut out = [b'='; 44];
    let mut o = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out[o + i] = B64[((n >> (18 - 6 * i)) & 63) as usize];
        }
        o += 4;
    }
    out
}

/// The C2SP checkpoint body `<origin>\n<size>\n<base64 root>\n`: the bytes a checkpoint's
/// signature covers.
pub fn checkpoint_body(origin: &str, size: u64, root: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(origin.len() + 68);
    out.extend_from_slice(origin.as_bytes());
    out.push(b'\n');
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.push(b'\n');
    out.extend_from_slice(&base64_32(&root.0));
    out.push(b'\n');
    out
}

/// A host's signed statement "my log had `size` receipts with root `root`". The signing
/// host, chain and contract are not repeated: they are the receipt's authorisation's, so
/// they cannot disagree with it.
///
/// Its canonical encoding (`tally:host-cp`, version 1: size, root, signature; 121 bytes)
/// is a container for journals and APIs; the signature covers the C2SP body text
/// ([`HostCheckpoint::body`]), never the binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct HostCheckpoint {
    /// Receipts in the host's log.
    pub size: u64,
    /// The RFC 6962 root of the host's log at `size`.
    pub root: Digest,
    /// The host's Ed25519 signature over the checkpoint body.
    pub signature: Signature,
}

impl HostCheckpoint {
    /// The signed bytes for host `host` on `contract` of `chain_id`.
    pub fn body(&self, chain_id: &str, contract: &str, host: &PublicKey) -> Vec<u8> {
        checkpoint_body(
            &host_origin(chain_id, contract, host),
            self.size,
            &self.root,
        )
    }

    /// Signs `(size, root)` of the log of `key`'s host on `contract` of `chain_id`.
    #[cfg(feature = "sign")]
    pub fn sign(
        chain_id: &str,
        contract: &str,
        key: &crate::SigningKey,
        size: u64,
        root: Digest,
    ) -> HostCheckpoint {
        let body = checkpoint_body(
            &host_origin(chain_id, contract, &key.public_key()),
            size,
            &root,
        );
        HostCheckpoint {
            size,
            root,
            signature: key.sign(&body),
        }
    }

    /// Checks the host's signature (ZIP-215).
    #[cfg(feature = "verify")]
    pub fn verify(
        &self,
        chain_id: &str,
        contract: &str,
        host: &PublicKey,
    ) -> Result<(), crate::SignatureError> {
        host.verify(&self.body(chain_id, contract, host), &self.signature)
    }
}

impl HostCheckpoint {
    /// Whether `self` and `other` (both validly signed by one host for one deployment)
    /// state different roots for the same size: they cannot both be true.
    pub fn contradicts(&self, other: &HostCheckpoint) -> bool {
        self.size == other.size && self.root != other.root
    }
}

impl Codec for HostCheckpoint {
    const TAG: &'static Tag = &HOST_CHECKPOINT_TAG;
    const MAX_LEN: usize = 17 + 8 + 32 + 64;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&HOST_CHECKPOINT_TAG, 1);
        self.write_fields(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&HOST_CHECKPOINT_TAG, 1)?;
        let cp = HostCheckpoint::read_fields(r)?;
        cp.check()?;
        Ok(cp)
    }
}
canonical_api!(HostCheckpoint);

impl HostCheckpoint {
    /// The rule the encoding enforces: a checkpoint covers at least one receipt (a host
    /// signs only at the end of a group commit, and a group is never empty).
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.size == 0 {
            return Err(DecodeError::Invalid {
                field: "size",
                reason: "a host checkpoint covers at least one receipt",
            });
        }
        Ok(())
    }

    /// The three fields without a header, as the receipt bundle carries them inline.
    pub(crate) fn write_fields(&self, w: &mut Writer<'_>) {
        w.u64(self.size);
        w.digest(&self.root);
        w.bytes(&self.signature.0);
    }

    /// Reads the three fields written by [`HostCheckpoint::write_fields`].
    pub(crate) fn read_fields(r: &mut Reader<'_>) -> Result<HostCheckpoint, DecodeError> {
        Ok(HostCheckpoint {
            size: r.u64("checkpoint_size")?,
            root: r.digest("checkpoint_root")?,
            signature: Signature(r.bytes64("host_signature")?),
        })
    }
}

#[cfg(feature = "serde")]
crate::json::checked_serde!(HostCheckpoint);

/// One node of a host log as an inclusion proof reveals it: the RFC 6962 hash of the leaves
/// `[lo, hi)`.
///
/// In one append-only log a leaf range has exactly one hash (the tree shape over a range
/// depends only on the range), so two valid proofs that give one range two hashes come
/// from two different logs: equivocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogNode {
    /// The first leaf index the node covers.
    pub lo: u64,
    /// One past the last leaf index it covers.
    pub hi: u64,
    /// Its hash (a leaf hash when `hi = lo + 1`).
    pub hash: Digest,
}

/// Every node an inclusion proof of leaf `index` (hash `leaf`) in a tree of `size` leaves
/// reveals: the leaf, each sibling, and each node on the path up to the root (the last
/// entry, covering `[0, size)`). Errors as [`InclusionProof::compute_root`].
pub fn path_nodes(
    index: u64,
    size: u64,
    leaf: &Digest,
    proof: &[Digest],
) -> Result<Vec<LogNode>, ProofError> {
    let want =
        inclusion_proof_len(index, size).ok_or(ProofError::IndexOutOfRange { index, size })?;
    if proof.len() != want {
        return Err(ProofError::WrongProofSize {
            got: proof.len(),
            want,
        });
    }
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let mut out = Vec::with_capacity(2 * want + 1);
    let (mut lo, mut hi, mut seed) = (index, index + 1, *leaf);
    out.push(LogNode { lo, hi, hash: seed });
    let mut hashes = proof.iter();
    for level in 0..inner {
        let Some(sibling) = hashes.next() else { break };
        let width = 1u128 << level;
        if (index >> level) & 1 == 0 {
            // The sibling lies right: the rest of this node's block, cut at `size`.
            let s_lo = hi;
            let s_hi = (u128::from(lo) + 2 * width).min(u128::from(size)) as u64;
            out.push(LogNode {
                lo: s_lo,
                hi: s_hi,
                hash: *sibling,
            });
            seed = node_hash(&seed, sibling);
            hi = s_hi;
        } else {
            let s_lo = lo - width as u64;
            out.push(LogNode {
                lo: s_lo,
                hi: lo,
                hash: *sibling,
            });
            seed = node_hash(sibling, &seed);
            lo = s_lo;
        }
        out.push(LogNode { lo, hi, hash: seed });
    }
    // Above `inner` every sibling lies left: one per set bit of the index.
    for level in inner..u64::BITS {
        if (index >> level) & 1 == 0 {
            continue;
        }
        let Some(sibling) = hashes.next() else { break };
        let s_lo = lo - (1u64 << level);
        out.push(LogNode {
            lo: s_lo,
            hi: lo,
            hash: *sibling,
        });
        seed = node_hash(sibling, &seed);
        lo = s_lo;
        out.push(LogNode { lo, hi, hash: seed });
    }
    Ok(out)
}

/// Why two host-signed receipts do not prove equivocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EquivocationError {
    /// The two receipts are not in one host log (another host, chain or contract).
    #[error("the receipts are not from one host log")]
    NotSameLog,
    /// An inclusion proof does not lead to its checkpoint's root.
    #[error("an inclusion proof does not verify")]
    BadProof,
    /// The two are consistent as far as their proofs show.
    #[error("the evidence shows no contradiction")]
    NoContradiction,
}

impl EquivocationError {
    /// A stable machine-readable code (vectors, APIs, contract errors).
    pub fn code(&self) -> &'static str {
        match self {
            EquivocationError::NotSameLog => "not_same_log",
            EquivocationError::BadProof => "bad_proof",
            EquivocationError::NoContradiction => "no_contradiction",
        }
    }
}

/// The leaf range `[lo, hi)` of a host log to which two proofs give different hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contradiction {
    /// The first leaf index of the range.
    pub lo: u64,
    /// One past its last leaf index.
    pub hi: u64,
}

/// The first leaf range that the nodes `a` and `b` (each from [`path_nodes`]) give
/// different hashes, directly or by RFC 6962 hashing of the other side's nodes.
///
/// For every node of one side, the other side's value for the same range is its own node
/// of that range, or else (for a range whose size is not a power of two) the hash of its
/// node for the range's left part (the largest power of two below its size) with its value
/// for the rest. A power-of-two range is a perfect subtree: one side knows both of its
/// children only if it also knows the subtree itself, so a lookup suffices there. Each
/// side has at most 129 nodes, so this costs a few thousand lookups and at most a few
/// thousand hashes.
pub fn contradiction(a: &[LogNode], b: &[LogNode]) -> Option<Contradiction> {
    let index = |nodes: &[LogNode]| -> BTreeMap<(u64, u64), Digest> {
        nodes.iter().map(|n| ((n.lo, n.hi), n.hash)).collect()
    };
    let (ma, mb) = (index(a), index(b));
    for (nodes, other) in [(a, &mb), (b, &ma)] {
        for n in nodes {
            if let Some(v) = value_of(other, n.lo, n.hi)
                && v != n.hash
            {
                return Some(Contradiction { lo: n.lo, hi: n.hi });
            }
        }
    }
    None
}

/// The hash of the leaves `[lo, hi)` as `nodes` determine it, if they do.
fn value_of(nodes: &BTreeMap<(u64, u64), Digest>, mut lo: u64, hi: u64) -> Option<Digest> {
    let mut lefts = Vec::new();
    let found = loop {
        if let Some(d) = nodes.get(&(lo, hi)) {
            break *d;
        }
        let n = hi - lo;
        if n <= 1 || n.is_power_of_two() {
            return None;
        }
        let k = 1u64 << (u64::BITS - 1 - (n - 1).leading_zeros());
        lefts.push(*nodes.get(&(lo, lo + k))?);
        lo += k;
    };
    Some(
        lefts
            .iter()
            .rev()
            .fold(found, |right, left| node_hash(left, &right)),
    )
}

/// Proofs for one group commit: the leaves appended since `frontier`'s size, proved against
/// the log's new size.
///
/// Every node such a proof needs is either a peak of the frontier the group started from
/// (a left sibling entirely before the group is always one) or a node completed by the
/// group's own appends, so a host keeps only its frontier between groups, never its tree.
#[derive(Debug, Clone)]
pub struct GroupProver {
    nodes: BTreeMap<(u32, u64), Digest>,
    start: u64,
    log: CompactRange,
}

impl GroupProver {
    /// Starts a group on the log whose frontier is `frontier`.
    pub fn new(frontier: CompactRange) -> GroupProver {
        let mut nodes = BTreeMap::new();
        let size = frontier.size();
        let mut offset = 0u64;
        // Peaks are listed largest first, one per set bit of the size.
        let mut peaks = frontier.peaks().iter();
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0
                && let Some(p) = peaks.next()
            {
                nodes.insert((level, offset >> level), *p);
                offset += 1u64 << level;
            }
        }
        GroupProver {
            nodes,
            start: size,
            log: frontier,
        }
    }

    /// Appends one leaf hash; returns its index.
    pub fn append(&mut self, leaf: Digest) -> u64 {
        let index = self.log.size();
        let nodes = &mut self.nodes;
        self.log.append(leaf, |level, i, d| {
            nodes.insert((level, i), d);
        });
        index
    }

    /// The log's size and root after the appends so far.
    pub fn head(&self) -> (u64, Digest) {
        (self.log.size(), self.log.root())
    }

    /// The frontier after the appends, to start the next group from.
    pub fn frontier(&self) -> &CompactRange {
        &self.log
    }

    /// The inclusion proof of leaf `index` (one of this group's) in the log's current size.
    pub fn proof(&self, index: u64) -> Option<InclusionProof> {
        if index < self.start {
            return None;
        }
        inclusion_proof(self, index, self.log.size()).ok()
    }
}

/// A node this group cannot provide (outside the group and not a frontier peak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotInGroup;

impl NodeSource for GroupProver {
    type Error = NotInGroup;

    fn node(&self, level: u32, index: u64) -> Result<Digest, NotInGroup> {
        self.nodes.get(&(level, index)).copied().ok_or(NotInGroup)
    }
}

#[cfg(all(test, feature = "sign", feature = "verify"))]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::SigningKey;
    use crate::merkle::{MemoryTree, leaf_hash};

    #[test]
    fn base64_matches_the_reference_alphabet() {
        // RFC 4648 test vector prefix and a full 32-byte value.
        let mut v = [0u8; 32];
        v[..6].copy_from_slice(b"foobar");
        let s = base64_32(&v);
        assert!(s.starts_with(b"Zm9vYmFy"));
        assert!(s.ends_with(b"A="));
        let all = base64_32(&[0xff; 32]);
        assert_eq!(&all[..], b"//////////////////////////////////////////8=");
    }

    #[test]
    fn body_is_the_c2sp_checkpoint_text() {
        let root = Digest([0; 32]);
        let body = checkpoint_body("tally-host/c/k/00", 0, &root);
        assert_eq!(
            body,
            b"tally-host/c/k/00\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        );
        let b = checkpoint_body("o", u64::MAX, &root);
        assert!(b.starts_with(b"o\n18446744073709551615\n"));
    }

    #[test]
    fn checkpoints_sign_and_verify_bound_to_chain_contract_and_host() {
        let key = SigningKey::from_seed(&[7; 32]);
        let cp = HostCheckpoint::sign("chain-1", "contract1", &key, 5, Digest([3; 32]));
        let host = key.public_key();
        cp.verify("chain-1", "contract1", &host).unwrap();
        assert!(cp.verify("chain-2", "contract1", &host).is_err());
        assert!(cp.verify("chain-1", "contract2", &host).is_err());
        let mut moved = cp;
        moved.size = 6;
        assert!(moved.verify("chain-1", "contract1", &host).is_err());
    }

    #[test]
    fn group_proofs_match_proofs_from_the_whole_tree() {
        let leaves: Vec<Digest> = (0u32..200).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut full = MemoryTree::new();
        let mut frontier = CompactRange::new();
        let mut at = 0usize;
        // Groups of uneven sizes, starting at every kind of frontier.
        for group in [1usize, 3, 1, 7, 16, 5, 33, 2, 64, 68] {
            let mut prover = GroupProver::new(frontier.clone());
            for leaf in &leaves[at..at + group] {
                full.append(*leaf);
                prover.append(*leaf);
            }
            let (size, root) = prover.head();
            assert_eq!((size, root), (full.size(), full.root()));
            for (i, leaf) in leaves.iter().enumerate().skip(at).take(group) {
                let p = prover.proof(i as u64).unwrap();
                assert_eq!(p, inclusion_proof(&full, i as u64, size).unwrap());
                p.verify(leaf, &root).unwrap();
            }
            frontier = prover.frontier().clone();
            at += group;
        }
    }

    #[test]
    fn path_nodes_match_the_tree_at_every_index_and_size() {
        let leaves: Vec<Digest> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut t = MemoryTree::new();
        for l in &leaves {
            t.append(*l);
        }
        for size in 1..=70u64 {
            for i in 0..size {
                let p = inclusion_proof(&t, i, size).unwrap();
                let nodes = path_nodes(i, size, &leaves[i as usize], &p.hashes).unwrap();
                for n in &nodes {
                    let mut sub = MemoryTree::new();
                    for l in &leaves[n.lo as usize..n.hi as usize] {
                        sub.append(*l);
                    }
                    assert_eq!(n.hash, sub.root(), "[{}, {}) in {size}", n.lo, n.hi);
                }
                let root = nodes.last().unwrap();
                assert_eq!(
                    (root.lo, root.hi, root.hash),
                    (0, size, t.root_at(size).unwrap())
                );
            }
        }
        assert_eq!(
            path_nodes(3, 3, &leaves[0], &[]),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert_eq!(
            path_nodes(0, 2, &leaves[0], &[]),
            Err(ProofError::WrongProofSize { got: 0, want: 1 })
        );
    }

    fn nodes_of(t: &MemoryTree, leaves: &[Digest], i: u64, size: u64) -> Vec<LogNode> {
        let p = inclusion_proof(t, i, size).unwrap();
        path_nodes(i, size, &leaves[i as usize], &p.hashes).unwrap()
    }

    #[test]
    fn one_log_never_contradicts_itself() {
        let leaves: Vec<Digest> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut t = MemoryTree::new();
        for l in &leaves {
            t.append(*l);
        }
        for (i, si) in [
            (0, 1),
            (3, 7),
            (6, 7),
            (6, 40),
            (12, 13),
            (31, 33),
            (39, 40),
        ] {
            for (j, sj) in [(0, 40), (5, 6), (6, 8), (12, 16), (32, 33), (39, 40)] {
                let a = nodes_of(&t, &leaves, i, si);
                let b = nodes_of(&t, &leaves, j, sj);
                assert_eq!(contradiction(&a, &b), None, "{i}/{si} vs {j}/{sj}");
            }
        }
    }

    #[test]
    fn two_logs_contradict_on_a_shared_range() {
        let leaves: Vec<Digest> = (0u32..16).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut t = MemoryTree::new();
        for l in &leaves {
            t.append(*l);
        }
        // A second history whose leaf 5 differs.
        let mut forked_leaves = leaves.clone();
        forked_leaves[5] = leaf_hash(b"other");
        let mut f = MemoryTree::new();
        for l in &forked_leaves {
            f.append(*l);
        }
        // The same index with two leaves.
        let a = nodes_of(&t, &leaves, 5, 8);
        let b = nodes_of(&f, &forked_leaves, 5, 12);
        assert_eq!(contradiction(&a, &b), Some(Contradiction { lo: 5, hi: 6 }));
        // The same size with two roots (leaves 2 and 9 are the same in both).
        let a = nodes_of(&t, &leaves, 2, 11);
        let b = nodes_of(&f, &forked_leaves, 9, 11);
        assert!(contradiction(&a, &b).is_some());
        // Consecutive leaves: leaf 6's left siblings disagree with leaf 5 and its left
        // siblings (the aggregator's frontier check).
        let a = nodes_of(&t, &leaves, 5, 6);
        let b = nodes_of(&f, &forked_leaves, 6, 16);
        assert_eq!(contradiction(&a, &b), Some(Contradiction { lo: 4, hi: 6 }));
        // The root of size 7 from leaf 2's proof against the last leaf of size 7 under a
        // larger tree: only the RFC 6962 fold of the second side's nodes shows it.
        let a = nodes_of(&f, &forked_leaves, 2, 7);
        let b = nodes_of(&t, &leaves, 6, 16);
        assert!(contradiction(&a, &b).is_some());
        // Proofs of untouched leaves still reveal the changed subtree.
        let a = nodes_of(&t, &leaves, 12, 16);
        let b = nodes_of(&f, &forked_leaves, 13, 16);
        assert_eq!(contradiction(&a, &b), Some(Contradiction { lo: 0, hi: 8 }));
        // Leaves the other history does not touch stay consistent.
        let a = nodes_of(&t, &leaves, 1, 4);
        let b = nodes_of(&f, &forked_leaves, 2, 4);
        assert_eq!(contradiction(&a, &b), None);
    }

    #[test]
    fn checkpoints_encode_and_contradict() {
        let key = SigningKey::from_seed(&[7; 32]);
        let cp = HostCheckpoint::sign("c", "k", &key, 4, Digest([1; 32]));
        let bytes = cp.encode();
        assert_eq!(bytes.len(), HostCheckpoint::MAX_ENCODED_LEN);
        assert_eq!(bytes.len(), 121);
        assert_eq!(HostCheckpoint::decode(&bytes), Ok(cp));
        let zero = HostCheckpoint { size: 0, ..cp };
        assert_eq!(
            HostCheckpoint::decode(&zero.encode()).unwrap_err().code(),
            "invalid_field"
        );
        let other = HostCheckpoint::sign("c", "k", &key, 4, Digest([2; 32]));
        assert!(cp.contradicts(&other));
        assert!(!cp.contradicts(&cp));
        let later = HostCheckpoint::sign("c", "k", &key, 5, Digest([2; 32]));
        assert!(!cp.contradicts(&later));
    }
}
