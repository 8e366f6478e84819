//! A host's signature over one submission of receipts to an aggregator
//! (`POST /v1/receipts`), so the aggregator can refuse anonymous bodies with one signature
//! check before it reads them (docs/protocol.md §6.1).

use crate::codec::{Codec, DecodeError, Reader, Tag, Writer, canonical_api};
use crate::{Digest, PublicKey, Signature};

pub(crate) const SUBMISSION_TAG: Tag = Tag::new("tally:submit");

/// The HTTP request header that carries a submission's [`SignedSubmission`], as lowercase
/// hex of its encoding.
pub const SUBMISSION_HEADER: &str = "x-tally-submission";
pub(crate) const SIGNED_SUBMISSION_TAG: Tag = Tag::new("tally:submit-sig");

/// What a host signs to submit a request body: who it is, when, and the body's SHA-256.
///
/// The body digest binds the signature to the exact bytes sent, the timestamp bounds how
/// long a captured request can be replayed, and the domain tag keeps this signature from
/// ever being read as a receipt's or anything else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Submission {
    /// The submitting host's key (registered with the aggregator).
    pub host: PublicKey,
    /// When the host signed, Unix milliseconds; the aggregator accepts a bounded skew.
    pub timestamp_ms: u64,
    /// SHA-256 of the exact request body bytes.
    pub body_digest: Digest,
}

impl Submission {
    /// The submission of `body` by `host` at `timestamp_ms`.
    pub fn of_body(host: PublicKey, timestamp_ms: u64, body: &[u8]) -> Submission {
        Submission {
            host,
            timestamp_ms,
            body_digest: Digest::sha256(body),
        }
    }

    /// Signs with the host's key (it must be `host`'s; verification fails otherwise).
    #[cfg(feature = "sign")]
    pub fn sign(self, host: &crate::SigningKey) -> SignedSubmission {
        let signature = host.sign(&self.encode());
        SignedSubmission {
            submission: self,
            signature,
        }
    }
}

impl Codec for Submission {
    const TAG: &'static Tag = &SUBMISSION_TAG;
    const MAX_LEN: usize = 17 + 32 + 8 + 32;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SUBMISSION_TAG, 1);
        w.bytes(&self.host.0);
        w.u64(self.timestamp_ms);
        w.digest(&self.body_digest);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SUBMISSION_TAG, 1)?;
        Ok(Submission {
            host: PublicKey(r.bytes32("host")?),
            timestamp_ms: r.u64("timestamp_ms")?,
            body_digest: r.digest("body_digest")?,
        })
    }
}
canonical_api!(Submission);

/// A submission with the host's signature over its canonical encoding: the value of the
/// `x-tally-submission` request header (lowercase hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SignedSubmission {
    /// What the host vouches for.
    pub submission: Submission,
    /// The host's ed25519 signature over `submission.encode()`.
    pub signature: Signature,
}

impl SignedSubmission {
    /// Checks the host's signature (ZIP-215). Whether the host is registered, the
    /// timestamp fresh and the body the one digested is the receiver's to check.
    #[cfg(feature = "verify")]
    pub fn verify(&self) -> Result<(), crate::SignatureError> {
        self.submission
            .host
            .verify(&self.submission.encode(), &self.signature)
    }
}

impl Codec for SignedSubmission {
    const TAG: &'static Tag = &SIGNED_SUBMISSION_TAG;
    const MAX_LEN: usize = 17 + Submission::MAX_ENCODED_LEN + 64;

    fn write(&self, w: &mut Writer<'_>) {
        w.header(&SIGNED_SUBMISSION_TAG, 1);
        self.submission.write(w);
        w.bytes(&self.signature.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.expect_header(&SIGNED_SUBMISSION_TAG, 1)?;
        Ok(SignedSubmission {
            submission: Submission::read(r)?,
            signature: Signature(r.bytes64("host_signature")?),
        })
    }
}
canonical_api!(SignedSubmission);

#[cfg(all(test, feature = "sign", feature = "verify"))]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_exactly_the_documented_bytes_and_round_trips() {
        let key = crate::SigningKey::from_seed(&[2; 32]);
        let s = Submission::of_body(key.public_key(), 0x0102_0304_0506_0708, b"body");
        let e = s.encode();
        assert_eq!(e.len(), Submission::MAX_ENCODED_LEN);
        assert_eq!(&e[..12], b"tally:submit");
        assert_eq!(&e[12..16], &[0; 4]);
        assert_eq!(e[16], 1);
        assert_eq!(&e[17..49], &key.public_key().0);
        assert_eq!(&e[49..57], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&e[57..], &Digest::sha256(b"body").0);
        assert_eq!(Submission::decode(&e), Ok(s));
        let signed = s.sign(&key);
        assert_eq!(SignedSubmission::decode(&signed.encode()), Ok(signed));
        assert_eq!(signed.verify(), Ok(()));
    }

    #[test]
    fn a_signature_binds_the_host_the_time_and_the_body() {
        let key = crate::SigningKey::from_seed(&[2; 32]);
        let signed = Submission::of_body(key.public_key(), 7, b"body").sign(&key);
        let mut other_body = signed;
        other_body.submission.body_digest = Digest::sha256(b"another body");
        assert!(other_body.verify().is_err());
        let mut later = signed;
        later.submission.timestamp_ms += 1;
        assert!(later.verify().is_err());
        let mut other_host = signed;
        other_host.submission.host = crate::SigningKey::from_seed(&[3; 32]).public_key();
        assert!(other_host.verify().is_err());
    }
}
