//! Call receipts (version 2): what a host states for every call it serves, and the bundle
//! that proves the host signed it — the receipt, its inclusion proof in the host's log and
//! the signed host checkpoint that covers it (`docs/protocol.md` §2.9, §2.10).
//!
//! A host signs no receipt on its own: each group commit of its journal ends with one
//! signed [`HostCheckpoint`] over its append-only log of receipts, and a receipt is
//! host-signed exactly when it is included at index `host_seq − 1` under such a checkpoint.
//! Version 1 receipts (one host signature each, a `prev_receipt` hash chain) are refused
//! with `unsupported_version` (§9).

use alloc::vec::Vec;

use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api};
use crate::host_log::{Contradiction, EquivocationError, HostCheckpoint, path_nodes};
use crate::merkle::{InclusionProof, MAX_INCLUSION_PROOF_LEN, inclusion_proof_len, leaf_hash};
use crate::{ChannelId, Digest, Metered, PublicKey, SignedAuthorization, UsageFacts};

pub(crate) const RECEIPT_TAG: Tag = Tag::new("tally:receipt");
pub(crate) const SIGNED_RECEIPT_TAG: Tag = Tag::new("tally:rcpt-sig");

/// The version byte of [`Receipt`] and [`SignedReceipt`] encodings (receipts v2). Version 1
/// encodings decode to `unsupported_version`.
pub const RECEIPT_VERSION: u8 = 2;

/// A receipt's identity: SHA-256 of its canonical body (never of a signature or a proof,
/// so a receipt keeps its id whichever checkpoint proves it).
pub type ReceiptId = Digest;

/// A host's statement of one call: who authorised it, what happened, what the pinned
/// guest metered, and where the receipt sits in the host's log and the channel.
///
/// The stating host is `authorization.authorization.host`: the receipt does not repeat
/// the key, so the two can never disagree. Its place in the host's log is `host_seq − 1`;
/// the log's signed checkpoints prove it, so no hash chain is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct Receipt {
    /// The payer's signed authorisation of this call.
    pub authorization: SignedAuthorization,
    /// The call's usage facts (the guest's input).
    pub facts: UsageFacts,
    /// The guest's output for `facts` and the schedule.
    pub metered: Metered,
    /// SHA-256 of the metering guest's `.wasm` that produced `metered`.
    pub guest: Digest,
    /// Hash of the price schedule the guest was given.
    pub schedule: Digest,
    /// The host's own sequence number, starting at 1, one more per receipt: the receipt is
    /// leaf `host_seq − 1` of the host's log.
    pub host_seq: u64,
    /// The channel's total cost after this call (the previous total plus this fee).
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub channel_total: u128,
    /// Unix time in milliseconds when the host made the receipt.
    pub timestamp_ms: u64,
}

#[cfg(feature = "serde")]
crate::json::checked_serde!(Receipt, check_encoding);

/// Why a receipt is not valid on its own (before any state or re-execution is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The payer's signature on the authorisation does not verify.
    #[error("payer signature: {0}")]
    PayerSignature(crate::SignatureError),
    /// The host's signature on the checkpoint does not verify.
    #[error("host signature: {0}")]
    HostSignature(crate::SignatureError),
    /// The inclusion proof does not lead from the receipt to the checkpoint's root.
    #[error("the receipt is not included in the host checkpoint")]
    HostInclusion,
    /// The facts name another model than the authorisation.
    #[error("facts are for another model than the authorisation")]
    ModelMismatch,
    /// The facts' request digest is not the one the payer signed.
    #[error("request digest differs from the authorised one")]
    RequestDigestMismatch,
    /// The fee exceeds the payer's per-call limit.
    #[error("fee exceeds the authorised max_fee")]
    FeeAboveMax,
    /// The channel total exceeds the payer's cumulative cap.
    #[error("channel total exceeds the authorised cumulative cap")]
    TotalAboveCap,
    /// The channel total is smaller than this call's fee alone.
    #[error("channel total is less than the fee")]
    TotalBelowFee,
    /// The host made the receipt after the authorisation expired.
    #[error("authorisation had expired when the host made the receipt")]
    Expired,
    /// A field breaks an encoding rule (possible only for values built in memory).
    #[error("{0}")]
    Field(DecodeError),
}

impl ReceiptError {
    /// A stable machine-readable code for the error's kind (used in vectors and APIs).
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptError::PayerSignature(_) => "payer_signature",
            ReceiptError::HostSignature(_) => "host_signature",
            ReceiptError::HostInclusion => "host_inclusion",
            ReceiptError::ModelMismatch => "model_mismatch",
            ReceiptError::RequestDigestMismatch => "request_digest_mismatch",
            ReceiptError::FeeAboveMax => "fee_above_max",
            ReceiptError::TotalAboveCap => "total_above_cap",
            ReceiptError::TotalBelowFee => "total_below_fee",
            ReceiptError::Expired => "expired",
            ReceiptError::Field(_) => "invalid_field",
        }
    }
}

impl Receipt {
    /// The host that states this receipt.
    pub fn host(&self) -> &PublicKey {
        &self.authorization.authorization.host
    }

    /// The channel this receipt debits.
    pub fn channel(&self) -> ChannelId {
        self.authorization.authorization.channel()
    }

    /// The receipt's id: SHA-256 of its canonical encoding.
    pub fn id(&self) -> ReceiptId {
        Digest::sha256(&self.encode())
    }

    /// Its leaf hash in the host's log: `SHA-256(0x00 ‖ encoding)`.
    pub fn leaf_hash(&self) -> Digest {
        leaf_hash(&self.encode())
    }

    /// The rules the encoding itself enforces: the nested values' and `host_seq ≥ 1`.
    pub fn check_encoding(&self) -> Result<(), DecodeError> {
        self.authorization.authorization.check()?;
        self.facts.check()?;
        if self.host_seq == 0 {
            return Err(DecodeError::Invalid {
                field: "host_seq",
                reason: "host sequence numbers start at 1",
            });
        }
        Ok(())
    }

    /// Checks the rules that hold between the receipt's own fields; signatures, inclusion,
    /// state (sequences, escrow) and re-execution are checked elsewhere.
    pub fn check(&self) -> Result<(), ReceiptError> {
        self.check_encoding().map_err(ReceiptError::Field)?;
        let a = &self.authorization.authorization;
        if self.facts.model != a.model {
            return Err(ReceiptError::ModelMismatch);
        }
        if self.facts.request_digest != a.request_digest {
            return Err(ReceiptError::RequestDigestMismatch);
        }
        if self.metered.fee > a.max_fee {
            return Err(ReceiptError::FeeAboveMax);
        }
        if self.channel_total > a.cumulative_cap {
            return Err(ReceiptError::TotalAboveCap);
        }
        if self.channel_total < self.metered.fee {
            return Err(ReceiptError::TotalBelowFee);
        }
        if self.timestamp_ms > a.expires_at_ms {
            return Err(ReceiptError::Expired);
        }
        Ok(())
    }
}

impl Codec for Receipt {
    const TAG: &'static Tag = &RECEIPT_TAG;
    const MAX_LEN: usize = 17
        + SignedAuthorization::MAX_ENCODED_LEN
        + UsageFacts::MAX_ENCODED_LEN
        + Metered::MAX_ENCODED_LEN
        + 32 * 2
        + 8
        + 16
        + 8;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&RECEIPT_TAG, RECEIPT_VERSION);
        self.authorization.write(w);
        self.facts.write(w);
        self.metered.write(w);
        w.digest(&self.guest);
        w.digest(&self.schedule);
        w.u64(self.host_seq);
        w.u128(self.channel_total);
        w.u64(self.timestamp_ms);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&RECEIPT_TAG, RECEIPT_VERSION)?;
        let receipt = Receipt {
            authorization: SignedAuthorization::read(r)?,
            facts: UsageFacts::read(r)?,
            metered: Metered::read(r)?,
            guest: r.digest("guest")?,
            schedule: r.digest("schedule")?,
            host_seq: r.u64("host_seq")?,
            channel_total: r.u128("channel_total")?,
            timestamp_ms: r.u64("timestamp_ms")?,
        };
        if receipt.host_seq == 0 {
            return Err(DecodeError::Invalid {
                field: "host_seq",
                reason: "host sequence numbers start at 1",
            });
        }
        Ok(receipt)
    }
}
canonical_api!(Receipt);

/// The receipt bundle: a receipt, the signed host checkpoint that covers it, and its
/// inclusion proof at index `host_seq − 1` under that checkpoint. This is what a client
/// gets back, what the aggregator logs (its encoding is the aggregator log's leaf data) and
/// what a fraud proof carries: self-contained, it proves on its own that the host stated
/// the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// The host checkpoint (size, root, signature) the receipt is proved under.
    pub checkpoint: HostCheckpoint,
    /// The inclusion proof of the receipt's leaf in the checkpoint's tree, leaf side first.
    pub proof: Vec<Digest>,
}

#[cfg(feature = "serde")]
crate::json::checked_serde!(SignedReceipt, check_encoding);

/// Why [`sign_group`] refused a group.
#[cfg(feature = "sign")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A group holds at least one receipt.
    #[error("empty group")]
    Empty,
    /// A receipt names another host than the signing key's.
    #[error("receipt {index} of the group is for another host")]
    OtherHost {
        /// Its position in the group.
        index: usize,
    },
    /// A receipt names another chain or contract than the group's first.
    #[error("receipt {index} of the group is for another deployment")]
    OtherDeployment {
        /// Its position in the group.
        index: usize,
    },
    /// A receipt's `host_seq` is not the next index of the log.
    #[error("host_seq {found} where {expected} was next")]
    NotContiguous {
        /// The `host_seq` the log needed.
        expected: u64,
        /// The one the receipt carries.
        found: u64,
    },
}

/// Signs one group commit: appends `receipts` (whose `host_seq`s must continue `frontier`
/// exactly) to the host log, signs one checkpoint over the new size and root with `key`,
/// and returns it with each receipt's bundle; `frontier` moves to the new size.
///
/// One signature whatever the group's size: a group of one is one signature per receipt.
#[cfg(feature = "sign")]
pub fn sign_group(
    key: &crate::SigningKey,
    frontier: &mut crate::merkle::CompactRange,
    receipts: Vec<Receipt>,
) -> Result<(HostCheckpoint, Vec<SignedReceipt>), GroupError> {
    let first = receipts.first().ok_or(GroupError::Empty)?;
    let host = key.public_key();
    let (chain, contract) = {
        let a = &first.authorization.authorization;
        (a.chain_id.clone(), a.contract.clone())
    };
    let mut prover = crate::GroupProver::new(frontier.clone());
    for (index, r) in receipts.iter().enumerate() {
        let a = &r.authorization.authorization;
        if a.host != host {
            return Err(GroupError::OtherHost { index });
        }
        if a.chain_id != chain || a.contract != contract {
            return Err(GroupError::OtherDeployment { index });
        }
        let expected = prover.head().0 + 1;
        if r.host_seq != expected {
            return Err(GroupError::NotContiguous {
                expected,
                found: r.host_seq,
            });
        }
        prover.append(r.leaf_hash());
    }
    let (size, root) = prover.head();
    let checkpoint = HostCheckpoint::sign(&chain, &contract, key, size, root);
    let bundles = receipts
        .into_iter()
        .map(|receipt| {
            let proof = prover
                .proof(receipt.host_seq - 1)
                .map(|p| p.hashes)
                .unwrap_or_default();
            SignedReceipt {
                receipt,
                checkpoint,
                proof,
            }
        })
        .collect();
    *frontier = prover.frontier().clone();
    Ok((checkpoint, bundles))
}

impl SignedReceipt {
    /// The receipt's id (see [`ReceiptId`]).
    pub fn id(&self) -> ReceiptId {
        self.receipt.id()
    }

    /// The receipt's index in the host's log (`host_seq − 1`).
    pub fn leaf_index(&self) -> u64 {
        self.receipt.host_seq.saturating_sub(1)
    }

    /// The inclusion proof as a [`InclusionProof`] (index `host_seq − 1`, the checkpoint's
    /// size).
    pub fn inclusion(&self) -> InclusionProof {
        InclusionProof {
            leaf_index: self.leaf_index(),
            tree_size: self.checkpoint.size,
            hashes: self.proof.clone(),
        }
    }

    /// The proof hashes that are the receipt's left siblings: one per set bit of
    /// `host_seq − 1`, highest level first, covering the leaves `[0, host_seq − 1)` — the
    /// peaks of the host log's frontier before this receipt, if the proof is honest. No
    /// hashing: an aggregator following the host's log compares them with its frontier
    /// (§6.1); a mismatch is a contradiction with the receipt that completed that peak.
    /// Empty if the proof's length is wrong (a value built in memory).
    pub fn left_siblings(&self) -> Vec<crate::host_log::LogNode> {
        let x = self.leaf_index();
        let t = self.checkpoint.size;
        if inclusion_proof_len(x, t) != Some(self.proof.len()) {
            return Vec::new();
        }
        let inner = u64::BITS - (x ^ (t - 1)).leading_zeros();
        let mut out = Vec::with_capacity(x.count_ones() as usize);
        let mut border = inner as usize;
        for level in 0..u64::BITS {
            if (x >> level) & 1 == 0 {
                continue;
            }
            let at = if level < inner {
                level as usize
            } else {
                let i = border;
                border += 1;
                i
            };
            let lo = (x >> level >> 1) << level << 1;
            out.push(crate::host_log::LogNode {
                lo,
                hi: lo + (1u64 << level),
                hash: self.proof[at],
            });
        }
        out.reverse();
        out
    }

    /// The bytes the host's checkpoint signature covers (the C2SP body of its log's
    /// checkpoint, §4.2).
    pub fn checkpoint_body(&self) -> Vec<u8> {
        let a = &self.receipt.authorization.authorization;
        self.checkpoint.body(&a.chain_id, &a.contract, &a.host)
    }

    /// The id of the receipt inside `encoding`, a canonical SignedReceipt encoding, without
    /// decoding it: the receipt body starts after the 17-byte header and its length follows
    /// from its two text lengths. For bytes already known to be canonical (a journal's or a
    /// log's checksummed records); `None` if they cannot be one.
    pub fn id_of_encoding(encoding: &[u8]) -> Option<ReceiptId> {
        if encoding.len() > Self::MAX_ENCODED_LEN
            || encoding.get(..16)? != SIGNED_RECEIPT_TAG.bytes.as_slice()
        {
            return None;
        }
        // Header 17, receipt header 17, signed authorisation header 17, authorisation
        // header 17, then the chain id's length byte.
        let chain = usize::from(*encoding.get(68)?);
        let contract = usize::from(*encoding.get(69 + chain)?);
        let len = Receipt::MAX_ENCODED_LEN - (64 - chain) - (128 - contract);
        encoding.get(17..17 + len).map(Digest::sha256)
    }

    /// The rules the bundle's encoding enforces: the receipt's, `host_seq ≤ size` (the
    /// checkpoint covers the receipt), and a proof of exactly the RFC 9162 length for index
    /// `host_seq − 1` in a tree of `size` leaves.
    pub fn check_encoding(&self) -> Result<(), DecodeError> {
        self.receipt.check_encoding()?;
        self.check_cover()
    }

    fn check_cover(&self) -> Result<(), DecodeError> {
        if self.receipt.host_seq > self.checkpoint.size {
            return Err(DecodeError::Invalid {
                field: "host_seq",
                reason: "beyond the checkpoint's size",
            });
        }
        if inclusion_proof_len(self.leaf_index(), self.checkpoint.size) != Some(self.proof.len()) {
            return Err(DecodeError::Invalid {
                field: "proof",
                reason: "not the inclusion proof length of host_seq - 1 in size",
            });
        }
        Ok(())
    }

    /// Checks that the receipt whose encoding is `body` is included under the checkpoint.
    #[cfg(feature = "verify")]
    fn verify_inclusion_of(&self, body: &[u8]) -> Result<(), ReceiptError> {
        self.inclusion()
            .verify(&leaf_hash(body), &self.checkpoint.root)
            .map_err(|_| ReceiptError::HostInclusion)
    }

    /// Checks everything a bundle can prove alone, in this order: the receipt's field rules,
    /// its inclusion under the checkpoint (`host_inclusion`), the host's checkpoint
    /// signature (`host_signature`), the payer's signature (`payer_signature`); signatures
    /// by ZIP-215. Re-execution, host logs across receipts and balances are the verifier's.
    #[cfg(feature = "verify")]
    pub fn verify(&self) -> Result<(), ReceiptError> {
        self.receipt.check()?;
        self.check_cover().map_err(ReceiptError::Field)?;
        let body = self.receipt.encode();
        self.verify_inclusion_of(&body)?;
        self.receipt
            .host()
            .verify(&self.checkpoint_body(), &self.checkpoint.signature)
            .map_err(ReceiptError::HostSignature)?;
        let a = &self.receipt.authorization;
        a.authorization
            .payer
            .verify(authorization_bytes(&self.receipt, &body), &a.signature)
            .map_err(ReceiptError::PayerSignature)
    }

    /// Whether `self` and `other`, two receipts of one host log, prove that the host signed
    /// two logs that cannot both be true (equivocation, §4.2): their inclusion proofs (checked
    /// here) give one leaf range two different hashes — the same index with two receipts,
    /// the same size with two roots, or any subtree in between. The caller checks both
    /// checkpoint signatures: unsigned proofs prove nothing about the host.
    pub fn contradiction(&self, other: &SignedReceipt) -> Result<Contradiction, EquivocationError> {
        let (a, b) = (
            &self.receipt.authorization.authorization,
            &other.receipt.authorization.authorization,
        );
        if a.host != b.host || a.chain_id != b.chain_id || a.contract != b.contract {
            return Err(EquivocationError::NotSameLog);
        }
        let nodes = |r: &SignedReceipt| {
            let nodes = path_nodes(
                r.leaf_index(),
                r.checkpoint.size,
                &r.receipt.leaf_hash(),
                &r.proof,
            )
            .map_err(|_| EquivocationError::BadProof)?;
            match nodes.last() {
                Some(root) if root.hash == r.checkpoint.root => Ok(nodes),
                _ => Err(EquivocationError::BadProof),
            }
        };
        crate::host_log::contradiction(&nodes(self)?, &nodes(other)?)
            .ok_or(EquivocationError::NoContradiction)
    }
}

/// The authorisation's canonical bytes inside a receipt's body `body`: the body starts
/// with the receipt's header, then the signed authorisation's header, then these.
#[cfg(feature = "verify")]
fn authorization_bytes<'b>(receipt: &Receipt, body: &'b [u8]) -> &'b [u8] {
    let start = 17 + 17;
    let a = &receipt.authorization.authorization;
    let len = 17 + 2 + a.chain_id.len() + a.contract.len() + 32 * 4 + 8 + 16 + 16 + 8;
    &body[start..start + len]
}

impl Codec for SignedReceipt {
    const TAG: &'static Tag = &SIGNED_RECEIPT_TAG;
    const MAX_LEN: usize =
        17 + Receipt::MAX_ENCODED_LEN + 8 + 32 + 64 + 1 + 32 * MAX_INCLUSION_PROOF_LEN;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SIGNED_RECEIPT_TAG, RECEIPT_VERSION);
        self.receipt.write(w);
        self.checkpoint.write_fields(w);
        w.u8(u8::try_from(self.proof.len()).unwrap_or(u8::MAX));
        for h in &self.proof {
            w.digest(h);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SIGNED_RECEIPT_TAG, RECEIPT_VERSION)?;
        let receipt = Receipt::read(r)?;
        let checkpoint = HostCheckpoint::read_fields(r)?;
        let n = usize::from(r.u8("proof count")?);
        if n > MAX_INCLUSION_PROOF_LEN {
            return Err(DecodeError::Invalid {
                field: "proof",
                reason: "more than 64 hashes",
            });
        }
        let mut proof = Vec::with_capacity(n);
        for _ in 0..n {
            proof.push(r.digest("proof")?);
        }
        let bundle = SignedReceipt {
            receipt,
            checkpoint,
            proof,
        };
        bundle.check_cover()?;
        Ok(bundle)
    }
}
canonical_api!(SignedReceipt);

/// The verdict on one bundle from [`verify_bundles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleVerdict {
    /// Whether the host stated the receipt: it is included under its checkpoint and the
    /// checkpoint's signature verifies, whatever the receipt's other rules say. A
    /// host-signed receipt has a place in the host's log even if it is refused.
    pub host_signed: bool,
    /// What [`SignedReceipt::verify`] says.
    pub result: Result<(), ReceiptError>,
}

/// Verifies many bundles like [`verify_receipts`], and also says of each whether it is
/// host-signed (what an aggregator following host logs needs: a host-signed receipt that
/// fails a field rule or its payer's signature still takes its place in the host's log).
#[cfg(feature = "verify")]
pub fn verify_bundles(receipts: &[SignedReceipt]) -> Vec<BundleVerdict> {
    verify_inner(receipts)
}

/// Verifies many bundles, batching the signature checks: each distinct host checkpoint
/// (one per group commit, shared by its receipts) is verified once, and every payer
/// signature, in one ZIP-215 batch. Field rules and inclusion proofs (hashing only) are
/// checked per receipt first. If the batch fails it is split in halves and each half
/// retried, so one bad signature among `n` costs about `2 log n` small batches, not `n`
/// single checks. The result has one entry per receipt, in order, equal to
/// [`SignedReceipt::verify`]'s.
#[cfg(feature = "verify")]
pub fn verify_receipts(receipts: &[SignedReceipt]) -> Vec<Result<(), ReceiptError>> {
    verify_inner(receipts)
        .into_iter()
        .map(|v| v.result)
        .collect()
}

#[cfg(feature = "verify")]
fn verify_inner(receipts: &[SignedReceipt]) -> Vec<BundleVerdict> {
    use alloc::collections::BTreeMap;

    let bodies: Vec<Vec<u8>> = receipts.iter().map(|r| r.receipt.encode()).collect();
    // Inclusion of every bundle (hashing only), whatever its field rules say.
    let included: Vec<bool> = receipts
        .iter()
        .zip(&bodies)
        .map(|(r, body)| r.check_cover().is_ok() && r.verify_inclusion_of(body).is_ok())
        .collect();
    let results: Vec<Result<(), ReceiptError>> = receipts
        .iter()
        .zip(&included)
        .map(|(r, &inc)| {
            r.receipt.check()?;
            r.check_cover().map_err(ReceiptError::Field)?;
            if inc {
                Ok(())
            } else {
                Err(ReceiptError::HostInclusion)
            }
        })
        .collect();
    // Distinct checkpoints: one signature each, however many receipts they cover.
    type CpKey<'a> = (&'a str, &'a str, [u8; 32], u64, [u8; 32], [u8; 64]);
    let mut cp_index: BTreeMap<CpKey<'_>, usize> = BTreeMap::new();
    let mut checkpoints: Vec<(PublicKey, Vec<u8>, crate::Signature)> = Vec::new();
    let mut cp_of = alloc::vec![usize::MAX; receipts.len()];
    for (i, r) in receipts.iter().enumerate() {
        if !included[i] || r.receipt.check_encoding().is_err() {
            continue;
        }
        let a = &r.receipt.authorization.authorization;
        let key = (
            a.chain_id.as_str(),
            a.contract.as_str(),
            a.host.0,
            r.checkpoint.size,
            r.checkpoint.root.0,
            r.checkpoint.signature.0,
        );
        cp_of[i] = *cp_index.entry(key).or_insert_with(|| {
            checkpoints.push((a.host, r.checkpoint_body(), r.checkpoint.signature));
            checkpoints.len() - 1
        });
    }
    let mut items: Vec<(PublicKey, &[u8], crate::Signature)> = checkpoints
        .iter()
        .map(|(k, body, sig)| (*k, body.as_slice(), *sig))
        .collect();
    let mut payer_of = alloc::vec![usize::MAX; receipts.len()];
    for (i, r) in receipts.iter().enumerate() {
        if results[i].is_ok() {
            let a = &r.receipt.authorization;
            payer_of[i] = items.len();
            items.push((
                a.authorization.payer,
                authorization_bytes(&r.receipt, &bodies[i]),
                a.signature,
            ));
        }
    }
    let mut verdicts: Vec<Result<(), crate::SignatureError>> = alloc::vec![Ok(()); items.len()];
    let all: Vec<usize> = (0..items.len()).collect();
    bisect(&items, &all, &mut verdicts);
    let mut out = Vec::with_capacity(receipts.len());
    for (i, result) in results.into_iter().enumerate() {
        let host = match cp_of[i] {
            usize::MAX => None,
            cp => Some(verdicts[cp]),
        };
        let result = match (result, host) {
            (Ok(()), Some(host)) => host
                .map_err(ReceiptError::HostSignature)
                .and(verdicts[payer_of[i]].map_err(ReceiptError::PayerSignature)),
            (r, _) => r,
        };
        out.push(BundleVerdict {
            host_signed: host.is_some_and(|h| h.is_ok()),
            result,
        });
    }
    out
}

/// Batch-checks the signatures at `idx`; on failure, splits and recurses, ending in single
/// checks for runs of a few signatures, whose exact errors land in `verdicts`.
#[cfg(feature = "verify")]
fn bisect(
    items: &[(PublicKey, &[u8], crate::Signature)],
    idx: &[usize],
    verdicts: &mut [Result<(), crate::SignatureError>],
) {
    if idx.is_empty() {
        return;
    }
    if idx.len() <= 4 {
        for &i in idx {
            let (key, msg, sig) = &items[i];
            verdicts[i] = key.verify(msg, sig);
        }
        return;
    }
    let batch: Vec<(PublicKey, &[u8], crate::Signature)> = idx.iter().map(|&i| items[i]).collect();
    if crate::verify_batch(&batch).is_ok() {
        return;
    }
    let (left, right) = idx.split_at(idx.len() / 2);
    bisect(items, left, verdicts);
    bisect(items, right, verdicts);
}

#[cfg(all(test, feature = "sign", feature = "verify"))]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::merkle::CompactRange;
    use crate::{Authorization, FinishStatus, SigningKey};
    use alloc::string::ToString;

    fn receipt(host: &SigningKey, payer: &SigningKey, host_seq: u64, chain: &str) -> Receipt {
        let request = Digest::sha256(&host_seq.to_be_bytes());
        let model = Digest([9; 32]);
        let authorization = Authorization {
            chain_id: chain.to_string(),
            contract: "contract1".to_string(),
            payer: payer.public_key(),
            host: host.public_key(),
            model,
            seq: host_seq,
            request_digest: request,
            max_fee: 100,
            cumulative_cap: 10_000,
            expires_at_ms: 2_000,
        }
        .sign(payer);
        Receipt {
            authorization,
            facts: UsageFacts {
                model,
                request_digest: request,
                response_digest: Digest([4; 32]),
                prompt_tokens: 10,
                cached_prompt_tokens: 0,
                completion_tokens: 5,
                reasoning_tokens: 0,
                started_at_ms: 1_000,
                first_token_ms: 1,
                duration_ms: 2,
                finish: FinishStatus::Stop,
            },
            metered: Metered { units: 15, fee: 7 },
            guest: Digest([5; 32]),
            schedule: Digest([6; 32]),
            host_seq,
            channel_total: 7 * host_seq as u128,
            timestamp_ms: 1_500,
        }
    }

    fn keys() -> (SigningKey, SigningKey) {
        (
            SigningKey::from_seed(&[2; 32]),
            SigningKey::from_seed(&[1; 32]),
        )
    }

    #[test]
    fn groups_sign_once_and_every_bundle_verifies() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        let mut all = Vec::new();
        for group in [1u64, 3, 1, 6] {
            let start = frontier.size() + 1;
            let rs = (start..start + group)
                .map(|s| receipt(&host, &payer, s, "chain-1"))
                .collect();
            let (cp, bundles) = sign_group(&host, &mut frontier, rs).unwrap();
            assert_eq!(cp.size, start + group - 1);
            for b in &bundles {
                assert_eq!(b.checkpoint, cp);
                assert_eq!(b.verify(), Ok(()));
                assert_eq!(SignedReceipt::decode(&b.encode()).as_ref(), Ok(b));
                assert_eq!(SignedReceipt::id_of_encoding(&b.encode()), Some(b.id()));
            }
            all.extend(bundles);
        }
        assert_eq!(frontier.size(), 11);
        assert!(verify_receipts(&all).iter().all(Result::is_ok));
        // Every pair of one honest log is consistent.
        for a in &all {
            for b in &all {
                assert_eq!(a.contradiction(b), Err(EquivocationError::NoContradiction));
            }
        }
    }

    #[test]
    fn left_siblings_are_the_frontier_peaks_before_the_receipt() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        for group in [1u64, 5, 2, 9, 1, 16] {
            let start = frontier.size() + 1;
            let before = frontier.clone();
            let rs = (start..start + group)
                .map(|s| receipt(&host, &payer, s, "chain-1"))
                .collect();
            let (_, bundles) = sign_group(&host, &mut frontier, rs).unwrap();
            let mut running = before;
            for b in &bundles {
                let got: Vec<Digest> = b.left_siblings().iter().map(|n| n.hash).collect();
                assert_eq!(got, running.peaks(), "host_seq {}", b.receipt.host_seq);
                running.append(b.receipt.leaf_hash(), |_, _, _| {});
            }
        }
    }

    #[test]
    fn host_signed_is_told_apart_from_the_receipts_other_faults() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        let mut rs: Vec<Receipt> = (1..=4)
            .map(|s| receipt(&host, &payer, s, "chain-1"))
            .collect();
        rs[1].metered.fee = 1_000; // above max_fee: a field rule
        rs[2].authorization.signature.0[0] ^= 1; // the payer's signature
        let (_, mut bundles) = sign_group(&host, &mut frontier, rs).unwrap();
        bundles[3].checkpoint.signature.0[0] ^= 1;
        let v = verify_bundles(&bundles);
        let host_signed: Vec<bool> = v.iter().map(|v| v.host_signed).collect();
        assert_eq!(host_signed, [true, true, true, false]);
        let codes: Vec<&str> = v
            .iter()
            .map(|v| v.result.map_or_else(|e| e.code(), |()| "ok"))
            .collect();
        assert_eq!(
            codes,
            ["ok", "fee_above_max", "payer_signature", "host_signature"]
        );
    }

    #[test]
    fn groups_must_continue_the_log() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        let r = receipt(&host, &payer, 2, "chain-1");
        assert_eq!(
            sign_group(&host, &mut frontier, alloc::vec![r]),
            Err(GroupError::NotContiguous {
                expected: 1,
                found: 2
            })
        );
        let other = SigningKey::from_seed(&[3; 32]);
        let r = receipt(&other, &payer, 1, "chain-1");
        assert_eq!(
            sign_group(&host, &mut frontier, alloc::vec![r]),
            Err(GroupError::OtherHost { index: 0 })
        );
        let rs = alloc::vec![
            receipt(&host, &payer, 1, "chain-1"),
            receipt(&host, &payer, 2, "chain-2")
        ];
        assert_eq!(
            sign_group(&host, &mut frontier, rs),
            Err(GroupError::OtherDeployment { index: 1 })
        );
        assert_eq!(
            sign_group(&host, &mut frontier, Vec::new()),
            Err(GroupError::Empty)
        );
        assert_eq!(frontier.size(), 0);
    }

    #[test]
    fn verification_order_and_codes() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        let rs = (1..=3)
            .map(|s| receipt(&host, &payer, s, "chain-1"))
            .collect();
        let (_, bundles) = sign_group(&host, &mut frontier, rs).unwrap();
        let good = &bundles[1];
        // A proof hash changed: not included.
        let mut b = good.clone();
        b.proof[0].0[0] ^= 1;
        assert_eq!(b.verify(), Err(ReceiptError::HostInclusion));
        // The checkpoint's signature changed: included but not signed.
        let mut b = good.clone();
        b.checkpoint.signature.0[0] ^= 1;
        assert_eq!(b.verify().unwrap_err().code(), "host_signature");
        // Both: inclusion is reported first.
        b.proof[0].0[0] ^= 1;
        assert_eq!(b.verify(), Err(ReceiptError::HostInclusion));
        // The payer's signature changed: the leaf changes too, so inclusion fails first.
        let mut b = good.clone();
        b.receipt.authorization.signature.0[0] ^= 1;
        assert_eq!(b.verify(), Err(ReceiptError::HostInclusion));
        // A field rule comes before everything.
        let mut b = good.clone();
        b.receipt.metered.fee = 1_000;
        assert_eq!(b.verify(), Err(ReceiptError::FeeAboveMax));
        // Batch verification agrees.
        let mut mixed = bundles.clone();
        mixed[0].checkpoint.signature.0[3] ^= 2;
        mixed[2].proof.clear();
        let batched = verify_receipts(&mixed);
        let single: Vec<_> = mixed.iter().map(SignedReceipt::verify).collect();
        assert_eq!(batched, single);
        assert_eq!(batched[0].unwrap_err().code(), "host_signature");
        assert!(batched[1].is_ok());
        assert_eq!(batched[2].unwrap_err().code(), "invalid_field");
    }

    #[test]
    fn a_payer_signature_made_for_another_receipt_is_caught() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        let mut r = receipt(&host, &payer, 1, "chain-1");
        // The host puts a forged payer signature into the receipt before signing the log.
        r.authorization.signature.0[5] ^= 1;
        let (_, bundles) = sign_group(&host, &mut frontier, alloc::vec![r]).unwrap();
        assert_eq!(bundles[0].verify().unwrap_err().code(), "payer_signature");
        assert_eq!(
            verify_receipts(&bundles)[0].unwrap_err().code(),
            "payer_signature"
        );
    }

    #[test]
    fn version_1_and_bad_bundles_are_refused_at_decode() {
        let (host, payer) = keys();
        let mut frontier = CompactRange::new();
        let rs = (1..=5)
            .map(|s| receipt(&host, &payer, s, "chain-1"))
            .collect();
        let (_, bundles) = sign_group(&host, &mut frontier, rs).unwrap();
        let mut v1 = bundles[0].encode();
        v1[16] = 1;
        assert_eq!(
            SignedReceipt::decode(&v1).unwrap_err().code(),
            "unsupported_version"
        );
        let mut v1 = bundles[0].receipt.encode();
        v1[16] = 1;
        assert_eq!(
            Receipt::decode(&v1).unwrap_err().code(),
            "unsupported_version"
        );
        let mut b = bundles[0].clone();
        b.proof.push(Digest::ZERO);
        assert_eq!(
            SignedReceipt::decode(&b.encode()).unwrap_err().code(),
            "invalid_field"
        );
        let mut b = bundles[4].clone();
        b.receipt.host_seq = 6;
        assert_eq!(
            SignedReceipt::decode(&b.encode()).unwrap_err().code(),
            "invalid_field"
        );
        let mut b = bundles[0].clone();
        b.receipt.host_seq = 0;
        assert_eq!(
            Receipt::decode(&b.receipt.encode()).unwrap_err().code(),
            "invalid_field"
        );
    }

    #[test]
    fn two_histories_of_one_host_are_equivocation() {
        let (host, payer) = keys();
        let mut honest = CompactRange::new();
        let mut forked = CompactRange::new();
        let rs: Vec<Receipt> = (1..=4)
            .map(|s| receipt(&host, &payer, s, "chain-1"))
            .collect();
        let (_, a) = sign_group(&host, &mut honest, rs.clone()).unwrap();
        let mut other = rs[3].clone();
        other.timestamp_ms += 1;
        let (_, b) = sign_group(
            &host,
            &mut forked,
            alloc::vec![rs[0].clone(), rs[1].clone(), rs[2].clone(), other],
        )
        .unwrap();
        assert_eq!(
            a[3].contradiction(&b[3]),
            Ok(Contradiction { lo: 3, hi: 4 })
        );
        // Receipt 1 is the same in both, but its proof carries the forked root.
        assert!(a[0].contradiction(&b[0]).is_ok());
        // Another host's receipts are never evidence against this one.
        let stranger = SigningKey::from_seed(&[8; 32]);
        let mut f = CompactRange::new();
        let (_, c) = sign_group(
            &stranger,
            &mut f,
            alloc::vec![receipt(&stranger, &payer, 1, "chain-1")],
        )
        .unwrap();
        assert_eq!(
            a[0].contradiction(&c[0]),
            Err(EquivocationError::NotSameLog)
        );
    }
}
