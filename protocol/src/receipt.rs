//! Call receipts: what a host signs for every call it serves.

#[cfg(feature = "verify")]
use alloc::vec::Vec;

use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api};
use crate::{ChannelId, Digest, Metered, PublicKey, Signature, SignedAuthorization, UsageFacts};

pub(crate) const RECEIPT_TAG: Tag = Tag::new("tally:receipt");
pub(crate) const SIGNED_RECEIPT_TAG: Tag = Tag::new("tally:rcpt-sig");

/// A receipt's identity: SHA-256 of its canonical body (never of the signature, so a
/// re-encoded signature cannot make one call count twice).
pub type ReceiptId = Digest;

/// A host's statement of one call: who authorised it, what happened, what the pinned
/// guest metered, and where the receipt sits in the host's hash chain and the channel.
///
/// The signing host is `authorization.authorization.host`: the receipt does not repeat
/// the key, so the two can never disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
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
    /// The host's own sequence number, starting at 1, one more per receipt.
    pub host_seq: u64,
    /// The id of the host's previous receipt (zero for `host_seq` 1): the host chain.
    pub prev_receipt: ReceiptId,
    /// The channel's total cost after this call (the previous total plus this fee).
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub channel_total: u128,
    /// Unix time in milliseconds when the host signed.
    pub timestamp_ms: u64,
}

/// Why a receipt is not valid on its own (before any state or re-execution is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The payer's signature on the authorisation does not verify.
    #[error("payer signature: {0}")]
    PayerSignature(crate::SignatureError),
    /// The host's signature on the receipt does not verify.
    #[error("host signature: {0}")]
    HostSignature(crate::SignatureError),
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
    /// The host chain link is malformed: `host_seq` 0, or a zero previous id after the
    /// first receipt, or a non-zero one at the first.
    #[error("host chain link is malformed")]
    HostChainLink,
    /// The host signed after the authorisation expired.
    #[error("authorisation had expired when the host signed")]
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
            ReceiptError::ModelMismatch => "model_mismatch",
            ReceiptError::RequestDigestMismatch => "request_digest_mismatch",
            ReceiptError::FeeAboveMax => "fee_above_max",
            ReceiptError::TotalAboveCap => "total_above_cap",
            ReceiptError::TotalBelowFee => "total_below_fee",
            ReceiptError::HostChainLink => "host_chain_link",
            ReceiptError::Expired => "expired",
            ReceiptError::Field(_) => "invalid_field",
        }
    }
}

impl Receipt {
    /// The host that signs this receipt.
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

    /// Checks the rules that hold between the receipt's own fields; signatures, state
    /// (sequences, escrow) and re-execution are checked elsewhere.
    pub fn check(&self) -> Result<(), ReceiptError> {
        let a = &self.authorization.authorization;
        a.check().map_err(ReceiptError::Field)?;
        self.facts.check().map_err(ReceiptError::Field)?;
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
        let first = self.host_seq == 1;
        if self.host_seq == 0 || first != (self.prev_receipt == Digest::ZERO) {
            return Err(ReceiptError::HostChainLink);
        }
        if self.timestamp_ms > a.expires_at_ms {
            return Err(ReceiptError::Expired);
        }
        Ok(())
    }

    /// Signs with the host's key (which must be the authorisation's host).
    #[cfg(feature = "sign")]
    pub fn sign(self, host: &crate::SigningKey) -> SignedReceipt {
        let signature = host.sign(&self.encode());
        SignedReceipt {
            receipt: self,
            signature,
        }
    }
}

impl Codec for Receipt {
    const TAG: &'static Tag = &RECEIPT_TAG;
    const MAX_LEN: usize = 17
        + SignedAuthorization::MAX_ENCODED_LEN
        + UsageFacts::MAX_ENCODED_LEN
        + Metered::MAX_ENCODED_LEN
        + 32 * 3
        + 8
        + 16
        + 8;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&RECEIPT_TAG, 1);
        self.authorization.write(w);
        self.facts.write(w);
        self.metered.write(w);
        w.digest(&self.guest);
        w.digest(&self.schedule);
        w.u64(self.host_seq);
        w.digest(&self.prev_receipt);
        w.u128(self.channel_total);
        w.u64(self.timestamp_ms);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&RECEIPT_TAG, 1)?;
        Ok(Receipt {
            authorization: SignedAuthorization::read(r)?,
            facts: UsageFacts::read(r)?,
            metered: Metered::read(r)?,
            guest: r.digest("guest")?,
            schedule: r.digest("schedule")?,
            host_seq: r.u64("host_seq")?,
            prev_receipt: r.digest("prev_receipt")?,
            channel_total: r.u128("channel_total")?,
            timestamp_ms: r.u64("timestamp_ms")?,
        })
    }
}
canonical_api!(Receipt);

/// A receipt with the host's signature over its canonical encoding. This is what a
/// client gets back, what the aggregator logs (its encoding is the Merkle leaf) and what
/// a fraud proof carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// The host's ed25519 signature over `receipt.encode()`.
    pub signature: Signature,
}

impl SignedReceipt {
    /// The receipt's id (see [`ReceiptId`]).
    pub fn id(&self) -> ReceiptId {
        self.receipt.id()
    }

    /// The id of the receipt inside `encoding`, a canonical SignedReceipt encoding, without
    /// decoding it: the receipt body sits between the 17-byte header and the 64-byte
    /// signature. For bytes already known to be canonical (a journal's checksummed
    /// records); `None` if they cannot be one (wrong tag, or too short or too long).
    pub fn id_of_encoding(encoding: &[u8]) -> Option<ReceiptId> {
        let body = encoding.get(17..encoding.len().checked_sub(64)?)?;
        (encoding.len() <= Self::MAX_ENCODED_LEN && encoding[..16] == SIGNED_RECEIPT_TAG.bytes)
            .then(|| Digest::sha256(body))
    }

    /// Checks everything a receipt can prove alone: its field rules, the payer's and the
    /// host's signatures (ZIP-215). Re-execution, chains and balances are the verifier's.
    #[cfg(feature = "verify")]
    pub fn verify(&self) -> Result<(), ReceiptError> {
        self.receipt.check()?;
        let body = self.receipt.encode();
        let auth = self.authorization_bytes(&body);
        let a = &self.receipt.authorization;
        a.authorization
            .payer
            .verify(auth, &a.signature)
            .map_err(ReceiptError::PayerSignature)?;
        self.receipt
            .host()
            .verify(&body, &self.signature)
            .map_err(ReceiptError::HostSignature)
    }

    /// The authorisation's canonical bytes inside the receipt's body: the body starts with
    /// the receipt's header, then the signed authorisation's header, then these.
    #[cfg(feature = "verify")]
    fn authorization_bytes<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        let start = 17 + 17;
        let a = &self.receipt.authorization.authorization;
        let len = 17 + 2 + a.chain_id.len() + a.contract.len() + 32 * 4 + 8 + 16 + 16 + 8;
        &body[start..start + len]
    }
}

impl Codec for SignedReceipt {
    const TAG: &'static Tag = &SIGNED_RECEIPT_TAG;
    const MAX_LEN: usize = 17 + Receipt::MAX_ENCODED_LEN + 64;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SIGNED_RECEIPT_TAG, 1);
        self.receipt.write(w);
        w.bytes(&self.signature.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SIGNED_RECEIPT_TAG, 1)?;
        Ok(SignedReceipt {
            receipt: Receipt::read(r)?,
            signature: Signature(r.bytes64("host_signature")?),
        })
    }
}
canonical_api!(SignedReceipt);

/// Verifies many receipts, batching the signature checks: two signatures per receipt go
/// into one ZIP-215 batch. If a batch fails, it is split in halves and each half retried,
/// so one bad signature among `n` costs about `2 log n` small batches, not `n` single
/// checks (a hostile host cannot make an auditor crawl). The result has one entry per
/// receipt, in order.
#[cfg(feature = "verify")]
pub fn verify_receipts(receipts: &[SignedReceipt]) -> Vec<Result<(), ReceiptError>> {
    let bodies: Vec<Vec<u8>> = receipts.iter().map(|r| r.receipt.encode()).collect();
    let mut results: Vec<Result<(), ReceiptError>> =
        receipts.iter().map(|r| r.receipt.check()).collect();
    let candidates: Vec<usize> = (0..receipts.len())
        .filter(|&i| results[i].is_ok())
        .collect();
    bisect(receipts, &bodies, &candidates, &mut results);
    results
}

/// Batch-checks the receipts at `idx`; on failure, splits and recurses, ending in single
/// checks for runs of a few receipts.
#[cfg(feature = "verify")]
fn bisect(
    receipts: &[SignedReceipt],
    bodies: &[Vec<u8>],
    idx: &[usize],
    results: &mut [Result<(), ReceiptError>],
) {
    if idx.is_empty() {
        return;
    }
    if idx.len() <= 4 {
        for &i in idx {
            results[i] = receipts[i].verify();
        }
        return;
    }
    let mut items = Vec::with_capacity(idx.len() * 2);
    for &i in idx {
        let r = &receipts[i];
        let a = &r.receipt.authorization;
        items.push((
            a.authorization.payer,
            r.authorization_bytes(&bodies[i]),
            a.signature,
        ));
        items.push((*r.receipt.host(), bodies[i].as_slice(), r.signature));
    }
    if crate::verify_batch(&items).is_ok() {
        return;
    }
    let (left, right) = idx.split_at(idx.len() / 2);
    bisect(receipts, bodies, left, results);
    bisect(receipts, bodies, right, results);
}
