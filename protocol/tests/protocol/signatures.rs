//! ZIP-215 edge cases: the one verification rule that the verifier, the aggregator and the
//! CosmWasm contract (ed25519-zebra inside the VM) share.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use proptest::prelude::*;
use tally_protocol::{PublicKey, Signature, SignatureError, SigningKey, verify_batch};

/// Every encoding of a small-order point: the 8 canonical ones plus the non-canonical ones
/// (a y-coordinate written as y + p, or the sign bit set on x = 0). ZIP-215 names 14.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = EIGHT_TORSION
        .iter()
        .map(|p| p.compress().to_bytes())
        .collect();
    let mut candidates = Vec::new();
    // y + p fits in 255 bits only for y < 19.
    for y in 0u8..19 {
        let mut b = [0xffu8; 32];
        b[0] = 0xed + y;
        b[31] = 0x7f;
        candidates.push(b);
        b[31] |= 0x80;
        candidates.push(b);
    }
    for canonical in out.clone() {
        let mut b = canonical;
        b[31] ^= 0x80;
        candidates.push(b);
    }
    for c in candidates {
        if let Some(p) = CompressedEdwardsY(c).decompress()
            && p.is_small_order()
            && p.compress().to_bytes() != c
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}

#[test]
fn zip215_accepts_all_196_small_order_combinations() {
    let encodings = small_order_encodings();
    assert_eq!(
        encodings.len(),
        14,
        "8 canonical + 6 non-canonical encodings"
    );
    let mut items = Vec::new();
    for a in &encodings {
        for r in &encodings {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(r);
            // s = 0: [8][0]B = [8]R + [8][k]A holds for small-order R and A.
            let (pk, sig) = (PublicKey(*a), Signature(sig));
            assert_eq!(pk.verify(b"Zcash", &sig), Ok(()), "A={a:?} R={r:?}");
            items.push((pk, b"Zcash".as_slice(), sig));
        }
    }
    assert_eq!(items.len(), 196);
    assert_eq!(
        verify_batch(&items),
        Ok(()),
        "batch agrees with single verification"
    );
}

#[test]
fn rfc8032_strict_verification_would_disagree_on_small_order_keys() {
    // Why the rule matters: a strict verifier (ed25519-dalek's verify_strict) rejects what
    // the CosmWasm VM accepts, so using it off-chain would let the two disagree.
    let identity = EIGHT_TORSION[0].compress().to_bytes();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    assert_eq!(PublicKey(identity).verify(b"m", &Signature(sig)), Ok(()));
    let strict = ed25519_dalek::VerifyingKey::from_bytes(&identity)
        .map(|k| k.verify_strict(b"m", &ed25519_dalek::Signature::from_bytes(&sig)));
    assert!(!matches!(strict, Ok(Ok(()))), "strict RFC 8032 rejects it");
}

/// ℓ, the order of the prime subgroup, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    out
}

#[test]
fn non_canonical_s_is_rejected() {
    let key = SigningKey::from_seed(&[7; 32]);
    let sig = key.sign(b"message");
    assert_eq!(key.public_key().verify(b"message", &sig), Ok(()));
    let s: [u8; 32] = sig.0[32..].try_into().unwrap();
    let mut malleated = sig;
    malleated.0[32..].copy_from_slice(&add_le(&s, &ELL));
    assert_eq!(
        key.public_key().verify(b"message", &malleated),
        Err(SignatureError::Invalid),
        "s + ℓ is the same scalar, but ZIP-215 requires s < ℓ"
    );
}

#[test]
fn key_that_is_not_a_point_is_malformed() {
    // y = 2 is not the y-coordinate of any curve point.
    let mut y2 = [0u8; 32];
    y2[0] = 2;
    assert!(CompressedEdwardsY(y2).decompress().is_none());
    let sig = SigningKey::from_seed(&[1; 32]).sign(b"m");
    assert_eq!(
        PublicKey(y2).verify(b"m", &sig),
        Err(SignatureError::MalformedKey)
    );
}

#[test]
fn wrong_message_and_wrong_key_fail() {
    let key = SigningKey::from_seed(&[9; 32]);
    let other = SigningKey::from_seed(&[10; 32]);
    let sig = key.sign(b"pay 10");
    assert_eq!(
        key.public_key().verify(b"pay 11", &sig),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        other.public_key().verify(b"pay 10", &sig),
        Err(SignatureError::Invalid)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The batch passes exactly when every signature passes alone.
    #[test]
    fn batch_agrees_with_single(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..12),
        corrupt in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let mut items = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let key = SigningKey::from_seed(&[i as u8 + 1; 32]);
            let mut sig = key.sign(m);
            if corrupt[i] {
                sig.0[5] ^= 0x10;
            }
            items.push((key.public_key(), m.as_slice(), sig));
        }
        let all_single = items.iter().all(|(k, m, s)| k.verify(m, s).is_ok());
        prop_assert_eq!(verify_batch(&items).is_ok(), all_single);
    }
}
