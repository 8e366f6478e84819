//! Batch headers: what the aggregator signs when it seals a batch of the log.

use alloc::string::String;
use alloc::vec::Vec;

use crate::authorization::{MAX_CHAIN_ID_LEN, MAX_CONTRACT_LEN};
use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api, check_text};
use crate::{ChannelId, Digest, PublicKey, Signature};

pub(crate) const BATCH_HEADER_TAG: Tag = Tag::new("tally:batch");
pub(crate) const SIGNED_BATCH_HEADER_TAG: Tag = Tag::new("tally:batch-sig");

/// Most channels one batch may debit (bounds the header and the contract's work).
pub const MAX_DEBITS: usize = 4096;

/// What one channel owes for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ChannelDebit {
    /// The channel debited.
    pub channel: ChannelId,
    /// The amount: the channel's latest running total minus what was collected before.
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub amount: u128,
}

/// A sealed batch: a checkpoint of the one append-only log plus what it debits.
///
/// Headers chain by `prev_header`, and the contract requires a consistency proof from the
/// previous header's root, so history can be extended but never rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct BatchHeader {
    /// The settlement chain.
    pub chain_id: String,
    /// The settlement contract's address.
    pub contract: String,
    /// The aggregator that sealed the batch and signs the header.
    pub aggregator: PublicKey,
    /// Batch number, starting at 1, one more per batch.
    pub batch: u64,
    /// Hash of the previous batch header (zero for batch 1).
    pub prev_header: Digest,
    /// Leaves in the log after this batch.
    pub tree_size: u64,
    /// RFC 6962 root of the log at `tree_size`.
    pub root: Digest,
    /// Sum of the debits.
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub total: u128,
    /// Per-channel debits, sorted by channel id, no channel twice, no zero amount.
    pub debits: Vec<ChannelDebit>,
}

impl BatchHeader {
    /// The header's identity: SHA-256 of its canonical encoding.
    pub fn hash(&self) -> Digest {
        Digest::sha256(&self.encode())
    }

    /// Checks the field rules the encoding enforces.
    pub fn check(&self) -> Result<(), DecodeError> {
        check_text(self.chain_id.as_bytes(), "chain_id", MAX_CHAIN_ID_LEN)?;
        check_text(self.contract.as_bytes(), "contract", MAX_CONTRACT_LEN)?;
        let invalid = |field, reason| Err(DecodeError::Invalid { field, reason });
        if self.batch == 0 {
            return invalid("batch", "batch numbers start at 1");
        }
        if (self.batch == 1) != (self.prev_header == Digest::ZERO) {
            return invalid("prev_header", "zero exactly for batch 1");
        }
        if self.debits.len() > MAX_DEBITS {
            return invalid("debits", "too many channels");
        }
        if self.debits.windows(2).any(|w| w[0].channel >= w[1].channel) {
            return invalid("debits", "channels must be strictly ascending");
        }
        if self.debits.iter().any(|d| d.amount == 0) {
            return invalid("debits", "zero amount");
        }
        let sum = self
            .debits
            .iter()
            .try_fold(0u128, |acc, d| acc.checked_add(d.amount));
        if sum != Some(self.total) {
            return invalid("total", "not the sum of the debits");
        }
        Ok(())
    }

    /// Signs with the aggregator's key.
    #[cfg(feature = "sign")]
    pub fn sign(self, aggregator: &crate::SigningKey) -> SignedBatchHeader {
        let signature = aggregator.sign(&self.encode());
        SignedBatchHeader {
            header: self,
            signature,
        }
    }
}

impl Codec for BatchHeader {
    const TAG: &'static Tag = &BATCH_HEADER_TAG;
    const MAX_LEN: usize = 17
        + (1 + MAX_CHAIN_ID_LEN)
        + (1 + MAX_CONTRACT_LEN)
        + 32
        + 8
        + 32
        + 8
        + 32
        + 16
        + 2
        + MAX_DEBITS * 48;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&BATCH_HEADER_TAG, 1);
        w.text(&self.chain_id);
        w.text(&self.contract);
        w.bytes(&self.aggregator.0);
        w.u64(self.batch);
        w.digest(&self.prev_header);
        w.u64(self.tree_size);
        w.digest(&self.root);
        w.u128(self.total);
        w.u16(u16::try_from(self.debits.len()).unwrap_or(u16::MAX));
        for d in &self.debits {
            w.digest(&d.channel.0);
            w.u128(d.amount);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&BATCH_HEADER_TAG, 1)?;
        let mut h = BatchHeader {
            chain_id: r.text("chain_id", MAX_CHAIN_ID_LEN)?,
            contract: r.text("contract", MAX_CONTRACT_LEN)?,
            aggregator: PublicKey(r.bytes32("aggregator")?),
            batch: r.u64("batch")?,
            prev_header: r.digest("prev_header")?,
            tree_size: r.u64("tree_size")?,
            root: r.digest("root")?,
            total: r.u128("total")?,
            debits: Vec::new(),
        };
        let n = usize::from(r.u16("debit count")?);
        if n > MAX_DEBITS {
            return Err(DecodeError::Invalid {
                field: "debits",
                reason: "too many channels",
            });
        }
        h.debits.reserve(n);
        for _ in 0..n {
            h.debits.push(ChannelDebit {
                channel: ChannelId(r.digest("channel")?),
                amount: r.u128("amount")?,
            });
        }
        h.check()?;
        Ok(h)
    }
}
canonical_api!(BatchHeader);

/// A batch header with the aggregator's signature over its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SignedBatchHeader {
    /// The header.
    pub header: BatchHeader,
    /// The aggregator's ed25519 signature over `header.encode()`.
    pub signature: Signature,
}

impl SignedBatchHeader {
    /// Checks the header's rules and the aggregator's signature (ZIP-215).
    #[cfg(feature = "verify")]
    pub fn verify(&self) -> Result<(), crate::SignatureError> {
        self.header
            .aggregator
            .verify(&self.header.encode(), &self.signature)
    }
}

impl Codec for SignedBatchHeader {
    const TAG: &'static Tag = &SIGNED_BATCH_HEADER_TAG;
    const MAX_LEN: usize = 17 + BatchHeader::MAX_ENCODED_LEN + 64;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SIGNED_BATCH_HEADER_TAG, 1);
        self.header.write(w);
        w.bytes(&self.signature.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SIGNED_BATCH_HEADER_TAG, 1)?;
        Ok(SignedBatchHeader {
            header: BatchHeader::read(r)?,
            signature: Signature(r.bytes64("aggregator_signature")?),
        })
    }
}
canonical_api!(SignedBatchHeader);
#[cfg(feature = "serde")]
crate::json::checked_serde!(BatchHeader);
