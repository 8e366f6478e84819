//! Which receipts get re-executed when not all of them do: one rule, used by the
//! aggregator's ingest sample and the verifier's `Reexecute::Sample`, so a sample drawn by
//! one can be reproduced by the other given the salt.
//!
//! The draw is `u32_be(SHA-256("tally:sample" ‖ 0x00×4 ‖ u64_be(salt) ‖ id)[0..4]) mod
//! 1000 < per_mille`. The salt must be secret and fresh: a host that could predict the
//! draw could grind receipt ids (they cover a timestamp) to dodge it.

use crate::Digest;

/// The domain tag of the draw (16 bytes, zero-padded).
const SAMPLE_TAG: &[u8; 16] = b"tally:sample\0\0\0\0";

/// Whether the receipt with id `id` is among the `per_mille` in 1000 drawn with `salt`
/// (1000 or more: every receipt; 0: none).
pub fn is_sampled(per_mille: u32, salt: u64, id: &Digest) -> bool {
    if per_mille >= 1000 {
        return true;
    }
    let h = Digest::sha256_parts(&[SAMPLE_TAG, &salt.to_be_bytes(), &id.0]);
    u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]]) % 1000 < per_mille
}

/// Milliseconds since the Unix epoch by the system clock (0 before the epoch): the one
/// clock reading behind receipt timestamps, ingest times and deadlines.
#[cfg(feature = "std")]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_takes_about_per_mille_and_the_ends_are_exact() {
        let id = Digest::sha256(b"receipt");
        assert!(is_sampled(1000, 7, &id));
        assert!(is_sampled(5000, 7, &id));
        assert!(!is_sampled(0, 7, &id));
        let drawn = (0u32..20_000)
            .filter(|i| is_sampled(250, 9, &Digest::sha256(&i.to_be_bytes())))
            .count();
        assert!((4_500..5_500).contains(&drawn), "{drawn}");
        // Another salt draws another sample.
        let other = (0u32..20_000)
            .filter(|i| {
                let id = Digest::sha256(&i.to_be_bytes());
                is_sampled(250, 9, &id) != is_sampled(250, 10, &id)
            })
            .count();
        assert!(other > 1_000, "{other}");
    }

    #[test]
    fn the_draw_is_pinned() {
        // SHA-256 over the tag, salt 1 and the id 0x00…00, first four bytes mod 1000.
        let id = Digest([0; 32]);
        let h = Digest::sha256_parts(&[b"tally:sample\0\0\0\0", &1u64.to_be_bytes(), &[0; 32]]);
        let draw = u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]]) % 1000;
        assert!(is_sampled(draw + 1, 1, &id));
        assert!(!is_sampled(draw, 1, &id));
    }
}
