//! The price schedules the tests and benches meter with. Their fees are what the tests'
//! expected values were computed from, so each stays exactly as it was written in every
//! copy it replaces.

use tally_protocol::{Digest, PriceSchedule, PriceTier};

/// Two tiers (the second from 100,000 prompt tokens, at twice the rates), a minimum fee of
/// 50: the attestor's, the benches' and the contract tests' schedule for `model`.
pub fn two_tier_schedule(model: Digest) -> PriceSchedule {
    PriceSchedule {
        model,
        min_fee: 50,
        tiers: vec![
            PriceTier {
                from_prompt_tokens: 0,
                prompt_per_mtok: 2_000_000,
                cached_per_mtok: 500_000,
                completion_per_mtok: 8_000_000,
            },
            PriceTier {
                from_prompt_tokens: 100_000,
                prompt_per_mtok: 4_000_000,
                cached_per_mtok: 1_000_000,
                completion_per_mtok: 16_000_000,
            },
        ],
    }
}

/// The first tier of [`two_tier_schedule`] alone, with the given minimum fee: the proxy's
/// and the shipper's tests.
pub fn one_tier_schedule(model: Digest, min_fee: u128) -> PriceSchedule {
    let mut s = two_tier_schedule(model);
    s.min_fee = min_fee;
    s.tiers.truncate(1);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schedules_are_valid_and_differ_only_as_documented() {
        let m = Digest::sha256(b"model");
        let two = two_tier_schedule(m);
        let one = one_tier_schedule(m, 10);
        assert!(two.check().is_ok());
        assert!(one.check().is_ok());
        assert_eq!(one.tiers[..], two.tiers[..1]);
        assert_eq!((one.min_fee, two.min_fee), (10, 50));
    }
}
