//! The payer's authorisation of one call, and the channel it belongs to.

use alloc::string::String;

use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api, check_text};
use crate::{Digest, PublicKey, Signature};

pub(crate) const AUTHORIZATION_TAG: Tag = Tag::new("tally:authz");
pub(crate) const SIGNED_AUTHORIZATION_TAG: Tag = Tag::new("tally:authz-sig");
pub(crate) const CHANNEL_TAG: Tag = Tag::new("tally:channel");

/// Longest chain id accepted (Cosmos chain ids are short, e.g. `neutron-1`).
pub const MAX_CHAIN_ID_LEN: usize = 64;
/// Longest contract address accepted (bech32 contract addresses are about 66 characters).
pub const MAX_CONTRACT_LEN: usize = 128;

/// A payer's signed permission for one call on one channel.
///
/// Bound to the chain, the contract, the channel and a strictly increasing `seq`, so it
/// can be used once, in one place. `cumulative_cap` is the most the payer has ever agreed
/// to pay on this channel, this call included: no host or aggregator can debit beyond it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, remote = "Self"))]
pub struct Authorization {
    /// The settlement chain (e.g. `neutron-1`); stops replay on another chain.
    pub chain_id: String,
    /// The settlement contract's address; stops replay against another deployment.
    pub contract: String,
    /// The payer's key: the escrow that pays, and the key that signs this.
    pub payer: PublicKey,
    /// The host allowed to serve the call.
    pub host: PublicKey,
    /// The model the call is for.
    pub model: Digest,
    /// Per-channel sequence number, starting at 1 and strictly increasing.
    pub seq: u64,
    /// SHA-256 of the exact request body the payer sends.
    pub request_digest: Digest,
    /// The most this one call may cost.
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub max_fee: u128,
    /// The most the channel may have cost in total after this call.
    #[cfg_attr(feature = "serde", serde(with = "crate::json::amount"))]
    pub cumulative_cap: u128,
    /// Unix time in milliseconds after which the authorisation is void.
    pub expires_at_ms: u64,
}

impl Authorization {
    /// Checks the field rules the encoding enforces (text lengths and characters, `seq`).
    pub fn check(&self) -> Result<(), DecodeError> {
        check_text(self.chain_id.as_bytes(), "chain_id", MAX_CHAIN_ID_LEN)?;
        check_text(self.contract.as_bytes(), "contract", MAX_CONTRACT_LEN)?;
        if self.seq == 0 {
            return Err(DecodeError::Invalid {
                field: "seq",
                reason: "sequence numbers start at 1",
            });
        }
        Ok(())
    }

    /// The channel (payer, host, model) this authorisation is on.
    pub fn channel(&self) -> ChannelId {
        ChannelId::new(&self.payer, &self.host, &self.model)
    }

    /// Signs with the payer's key. The key must be the one named in `payer`;
    /// verification fails otherwise.
    #[cfg(feature = "sign")]
    pub fn sign(self, payer: &crate::SigningKey) -> SignedAuthorization {
        let signature = payer.sign(&self.encode());
        SignedAuthorization {
            authorization: self,
            signature,
        }
    }
}

impl Codec for Authorization {
    const TAG: &'static Tag = &AUTHORIZATION_TAG;
    const MAX_LEN: usize =
        17 + (1 + MAX_CHAIN_ID_LEN) + (1 + MAX_CONTRACT_LEN) + 32 * 3 + 8 + 32 + 16 + 16 + 8;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&AUTHORIZATION_TAG, 1);
        w.text(&self.chain_id);
        w.text(&self.contract);
        w.bytes(&self.payer.0);
        w.bytes(&self.host.0);
        w.digest(&self.model);
        w.u64(self.seq);
        w.digest(&self.request_digest);
        w.u128(self.max_fee);
        w.u128(self.cumulative_cap);
        w.u64(self.expires_at_ms);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&AUTHORIZATION_TAG, 1)?;
        let a = Authorization {
            chain_id: r.text("chain_id", MAX_CHAIN_ID_LEN)?,
            contract: r.text("contract", MAX_CONTRACT_LEN)?,
            payer: PublicKey(r.bytes32("payer")?),
            host: PublicKey(r.bytes32("host")?),
            model: r.digest("model")?,
            seq: r.u64("seq")?,
            request_digest: r.digest("request_digest")?,
            max_fee: r.u128("max_fee")?,
            cumulative_cap: r.u128("cumulative_cap")?,
            expires_at_ms: r.u64("expires_at_ms")?,
        };
        a.check()?;
        Ok(a)
    }
}
canonical_api!(Authorization);

/// An authorisation with the payer's signature over its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SignedAuthorization {
    /// What the payer agreed to.
    pub authorization: Authorization,
    /// The payer's ed25519 signature over `authorization.encode()`.
    pub signature: Signature,
}

impl SignedAuthorization {
    /// Checks the payer's signature (ZIP-215). Expiry, sequence and caps depend on state
    /// and time, so the attestor, aggregator and contract check those themselves.
    #[cfg(feature = "verify")]
    pub fn verify(&self) -> Result<(), crate::SignatureError> {
        self.authorization
            .payer
            .verify(&self.authorization.encode(), &self.signature)
    }
}

impl Codec for SignedAuthorization {
    const TAG: &'static Tag = &SIGNED_AUTHORIZATION_TAG;
    const MAX_LEN: usize = 17 + Authorization::MAX_LEN + 64;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SIGNED_AUTHORIZATION_TAG, 1);
        self.authorization.write(w);
        w.bytes(&self.signature.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SIGNED_AUTHORIZATION_TAG, 1)?;
        Ok(SignedAuthorization {
            authorization: Authorization::read(r)?,
            signature: Signature(r.bytes64("payer_signature")?),
        })
    }
}
canonical_api!(SignedAuthorization);

/// A channel's identity: SHA-256 over its tag, payer, host and model. Sequence numbers,
/// running totals and debits are kept per channel.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct ChannelId(pub Digest);

impl ChannelId {
    /// The id of the channel (payer, host, model).
    pub fn new(payer: &PublicKey, host: &PublicKey, model: &Digest) -> ChannelId {
        ChannelId(Digest::sha256_parts(&[
            &CHANNEL_TAG.bytes,
            &[1],
            &payer.0,
            &host.0,
            &model.0,
        ]))
    }
}

impl core::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}
#[cfg(feature = "serde")]
crate::json::checked_serde!(Authorization);
