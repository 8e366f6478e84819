//! Ed25519 keys and signatures, verified by one rule everywhere: ZIP-215.
//!
//! The CosmWasm VM's `ed25519_verify` and `ed25519_batch_verify` are ed25519-zebra, which
//! implements ZIP-215: keys and `R` may be any encoding of a curve point (non-canonical and
//! small-order ones included), `s` must be canonical (`s < ℓ`), and the cofactored equation
//! `[8][s]B = [8]R + [8][k]A` decides. Off-chain verification here uses the same library, so
//! the verifier, the aggregator and the contract can never disagree about a signature.
//! Single and batch verification agree under this rule, which is what makes batching safe.

use core::fmt;

/// An ed25519 public key (payer, host or aggregator), as its 32-byte encoding.
///
/// Kept as bytes, not a decoded point: identity is the encoding that was signed and
/// registered, and ZIP-215 decides validity only when a signature is checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature: `R` (32 bytes) then `s` (32 bytes, little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The public key is not the encoding of any curve point.
    #[error("public key is not a curve point")]
    MalformedKey,
    /// The signature does not verify under ZIP-215 for this key and message.
    #[error("signature does not verify")]
    Invalid,
    /// At least one signature of a batch does not verify (check them one by one to say which).
    #[error("batch contains an invalid signature")]
    BatchInvalid,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::Digest(self.0).fmt(f)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "verify")]
mod verify {
    use super::{PublicKey, Signature, SignatureError};
    #[cfg(feature = "std")]
    use crate::Digest;
    use ed25519_zebra::VerificationKey;

    impl PublicKey {
        /// Verifies `sig` over `msg` by ZIP-215, exactly as the CosmWasm VM does.
        pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
            let vk = VerificationKey::try_from(self.0).map_err(|_| SignatureError::MalformedKey)?;
            vk.verify(&ed25519_zebra::Signature::from_bytes(&sig.0), msg)
                .map_err(|_| SignatureError::Invalid)
        }
    }

    /// Verifies many signatures at once (several times faster than one by one from a few
    /// dozen up). Same rule as [`PublicKey::verify`]: the batch passes exactly when every
    /// signature would pass alone.
    ///
    /// The random coefficients come from SHA-256 over every key, signature and message in
    /// the batch (as in Merlin-transcript batch verification), so the result is
    /// deterministic and cannot be predicted by anyone choosing the signatures. Without the
    /// `std` feature (ed25519-zebra 4.0.3, the VM's version, batches only with std) the
    /// signatures are checked one by one, with the same result.
    pub fn verify_batch(items: &[(PublicKey, &[u8], Signature)]) -> Result<(), SignatureError> {
        #[cfg(feature = "std")]
        {
            batched(items)
        }
        #[cfg(not(feature = "std"))]
        {
            items
                .iter()
                .try_for_each(|(pk, msg, sig)| pk.verify(msg, sig))
                .map_err(|_| SignatureError::BatchInvalid)
        }
    }

    #[cfg(feature = "std")]
    fn batched(items: &[(PublicKey, &[u8], Signature)]) -> Result<(), SignatureError> {
        use ed25519_zebra::{VerificationKeyBytes, batch};
        use sha2::Digest as _;
        let mut seed = sha2::Sha256::default();
        let mut v = batch::Verifier::new();
        for (pk, msg, sig) in items {
            seed.update(pk.0);
            seed.update(sig.0);
            seed.update(Digest::sha256(msg).0);
            v.queue((
                VerificationKeyBytes::from(pk.0),
                ed25519_zebra::Signature::from_bytes(&sig.0),
                msg,
            ));
        }
        let seed: [u8; 32] = seed.finalize().into();
        v.verify(TranscriptRng { seed, counter: 0 })
            .map_err(|_| SignatureError::BatchInvalid)
    }

    /// SHA-256 in counter mode over a transcript of the batch: the batch verifier's
    /// coefficients, deterministic in its inputs.
    #[cfg(feature = "std")]
    struct TranscriptRng {
        seed: [u8; 32],
        counter: u64,
    }

    #[cfg(feature = "std")]
    impl rand_core::RngCore for TranscriptRng {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(32) {
                let block = Digest::sha256_parts(&[
                    b"tally:batch-rng\0",
                    &self.seed,
                    &self.counter.to_be_bytes(),
                ]);
                self.counter += 1;
                chunk.copy_from_slice(&block.0[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[cfg(feature = "std")]
    impl rand_core::CryptoRng for TranscriptRng {}
}

#[cfg(feature = "verify")]
pub use verify::verify_batch;

/// A signing key. Lives with the party that signs (payer, host, aggregator) and never
/// enters the metering guest.
#[cfg(feature = "sign")]
pub struct SigningKey(ed25519_dalek::SigningKey);

#[cfg(feature = "sign")]
impl SigningKey {
    /// The key whose RFC 8032 secret seed is `seed` (key files store this seed).
    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The secret seed, for writing a key file (mode 0600).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg` (RFC 8032 Ed25519; deterministic).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature(self.0.sign(msg).to_bytes())
    }
}

#[cfg(feature = "sign")]
impl fmt::Debug for SigningKey {
    /// Shows only the public key: secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key())
    }
}
