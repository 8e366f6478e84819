//! Each host's receipts as an append-only RFC 6962 log, and the host checkpoints that sign
//! it (receipts v2, `docs/protocol.md` §4.3).
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

use crate::merkle::{CompactRange, InclusionProof, NodeSource, inclusion_proof};
use crate::{Digest, PublicKey, Signature};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
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

/// Why two host checkpoints do not prove equivocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EquivocationError {
    /// The two checkpoints are consistent as far as this evidence shows.
    #[error("the evidence shows no contradiction")]
    NoContradiction,
    /// An inclusion proof does not lead to its checkpoint's root.
    #[error("an inclusion proof does not verify")]
    BadProof,
}

/// Evidence that one index of a host log holds two different leaves: each leaf hash with
/// its inclusion proof under one of two checkpoints (signatures are checked by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictingLeaves {
    /// The leaf index both proofs are about.
    pub index: u64,
    /// The first leaf's hash and its proof under the first checkpoint.
    pub first: (Digest, Vec<Digest>),
    /// The second leaf's hash and its proof under the second checkpoint.
    pub second: (Digest, Vec<Digest>),
}

/// Whether checkpoints `a` and `b` (both validly signed by one host) cannot both be true:
/// equal sizes with different roots, or, with `conflict`, one index proved to hold two
/// different leaves.
pub fn is_equivocation(
    a: &HostCheckpoint,
    b: &HostCheckpoint,
    conflict: Option<&ConflictingLeaves>,
) -> Result<(), EquivocationError> {
    if a.size == b.size && a.root != b.root {
        return Ok(());
    }
    let c = conflict.ok_or(EquivocationError::NoContradiction)?;
    if c.first.0 == c.second.0 {
        return Err(EquivocationError::NoContradiction);
    }
    for (cp, (leaf, hashes)) in [(a, &c.first), (b, &c.second)] {
        InclusionProof {
            leaf_index: c.index,
            tree_size: cp.size,
            hashes: hashes.clone(),
        }
        .verify(leaf, &cp.root)
        .map_err(|_| EquivocationError::BadProof)?;
    }
    Ok(())
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
    fn equivocation_needs_a_real_contradiction() {
        let mut t = MemoryTree::new();
        let leaves: Vec<Digest> = (0u8..6).map(|i| leaf_hash(&[i])).collect();
        for l in &leaves {
            t.append(*l);
        }
        let key = SigningKey::from_seed(&[7; 32]);
        let cp = |size: u64, root| HostCheckpoint::sign("c", "k", &key, size, root);
        let a = cp(4, t.root_at(4).unwrap());
        let b = cp(6, t.root_at(6).unwrap());
        let forked = cp(4, Digest([9; 32]));
        assert_eq!(is_equivocation(&a, &forked, None), Ok(()));
        assert_eq!(
            is_equivocation(&a, &b, None),
            Err(EquivocationError::NoContradiction)
        );
        // A second history whose leaf 2 differs.
        let mut other = MemoryTree::new();
        for (i, l) in leaves.iter().enumerate() {
            other.append(if i == 2 { leaf_hash(b"other") } else { *l });
        }
        let c = cp(6, other.root_at(6).unwrap());
        let conflict = ConflictingLeaves {
            index: 2,
            first: (leaves[2], inclusion_proof(&t, 2, 4).unwrap().hashes),
            second: (
                leaf_hash(b"other"),
                inclusion_proof(&other, 2, 6).unwrap().hashes,
            ),
        };
        assert_eq!(is_equivocation(&a, &c, Some(&conflict)), Ok(()));
        let honest = ConflictingLeaves {
            second: (leaves[2], inclusion_proof(&t, 2, 6).unwrap().hashes),
            ..conflict.clone()
        };
        assert_eq!(
            is_equivocation(&a, &b, Some(&honest)),
            Err(EquivocationError::NoContradiction)
        );
        let wrong = ConflictingLeaves {
            second: (
                leaf_hash(b"other"),
                inclusion_proof(&t, 2, 6).unwrap().hashes,
            ),
            ..conflict
        };
        assert_eq!(
            is_equivocation(&a, &b, Some(&wrong)),
            Err(EquivocationError::BadProof)
        );
    }
}
