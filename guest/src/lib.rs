//! The metering guest: deterministic integer code that turns one call's usage facts and a
//! price schedule into billable units and a fee. Built for wasm32 and pinned by SHA-256.
//!
//! The same code runs in two places: natively through [`meter`] / [`meter_encoded`] (the
//! verifier, the aggregator's re-execution, the contract, which links this crate as an
//! rlib), and as `guest/dist/metering.wasm` inside the attestor's sandbox. The wasm build
//! (`cargo xtask build-guest`, target `wasm32v1-none`, feature `abi`) adds a tiny ABI and
//! nothing else: no imports, no clock, no randomness, no floating point.
//!
//! The rule, for input that decodes as a canonical [`MeterInput`]:
//! 1. the schedule must price the facts' model, else [`Refusal::ScheduleNotForModel`];
//! 2. the tier is the last one whose `from_prompt_tokens` the prompt reaches;
//! 3. `n = uncached * prompt_per_mtok + cached * cached_per_mtok
//!    + completion * completion_per_mtok` in `u128`;
//! 4. `fee = max(ceil(n / 1_000_000), min_fee)`;
//! 5. `units = prompt_tokens + completion_tokens` in `u64`;
//! 6. a fee above `max_fee` is refused as [`Refusal::FeeAboveMax`].
//!
//! Every operation is checked; an overflow is [`Refusal::Overflow`], never a wrapped value.
#![no_std]

// Natively (and on wasm32 targets that have std, when the ABI is off) the cdylib this crate
// also produces needs a panic handler and an allocator: std provides them. The guest's own
// code uses only `core` and `alloc`.
#[cfg(not(any(all(target_arch = "wasm32", feature = "abi"), target_os = "none")))]
extern crate std;

#[cfg(all(target_arch = "wasm32", feature = "abi"))]
#[allow(unsafe_code)]
mod abi;

use tally_protocol::{MeterInput, MeterOutcome, Metered, Refusal};

/// Prices are per million tokens.
const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

/// Meters one call: the fee and billable units, or why the call is unbillable.
///
/// A `MeterInput` built in memory has not been through the decoder's checks, so they are
/// applied here too ([`Refusal::MalformedInput`] if they fail): `meter(x)` and
/// `meter_encoded(&x.encode())` agree for every `x`.
pub fn meter(input: &MeterInput) -> Result<Metered, Refusal> {
    let facts = &input.facts;
    let schedule = &input.schedule;
    if facts.check().is_err() || schedule.check().is_err() {
        return Err(Refusal::MalformedInput);
    }
    if facts.model != schedule.model {
        return Err(Refusal::ScheduleNotForModel);
    }
    // A checked schedule's first tier starts at 0, so there always is one.
    let tier = schedule
        .tier_for(facts.prompt_tokens)
        .ok_or(Refusal::MalformedInput)?;
    // A checked `UsageFacts` has `cached_prompt_tokens <= prompt_tokens`.
    let uncached = facts
        .prompt_tokens
        .checked_sub(facts.cached_prompt_tokens)
        .ok_or(Refusal::MalformedInput)?;
    let n = tokens_times_price(uncached, tier.prompt_per_mtok)
        .checked_add(tokens_times_price(
            facts.cached_prompt_tokens,
            tier.cached_per_mtok,
        ))
        .and_then(|n| {
            n.checked_add(tokens_times_price(
                facts.completion_tokens,
                tier.completion_per_mtok,
            ))
        })
        .ok_or(Refusal::Overflow)?;
    // Rounds up: a call is never priced below its cost. `div_ceil` cannot overflow.
    let fee = n.div_ceil(TOKENS_PER_PRICE_UNIT).max(schedule.min_fee);
    let units = facts
        .prompt_tokens
        .checked_add(facts.completion_tokens)
        .ok_or(Refusal::Overflow)?;
    if fee > input.max_fee {
        return Err(Refusal::FeeAboveMax { fee });
    }
    Ok(Metered { units, fee })
}

/// Meters the canonical encoding of a [`MeterInput`]; bytes that do not decode are
/// [`Refusal::MalformedInput`]. This is exactly what the wasm guest computes.
pub fn meter_encoded(input: &[u8]) -> MeterOutcome {
    MeterOutcome(match MeterInput::decode(input) {
        Ok(input) => meter(&input),
        Err(_) => Err(Refusal::MalformedInput),
    })
}

/// `tokens * price` in `u128`: the product of two `u64` always fits.
fn tokens_times_price(tokens: u64, price_per_mtok: u64) -> u128 {
    u128::from(tokens) * u128::from(price_per_mtok)
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::vec;
    use alloc::vec::Vec;

    use tally_protocol::{Digest, FinishStatus, PriceSchedule, PriceTier, UsageFacts};

    use super::*;

    const MODEL: Digest = Digest([7; 32]);

    fn tier(from: u64, prompt: u64, cached: u64, completion: u64) -> PriceTier {
        PriceTier {
            from_prompt_tokens: from,
            prompt_per_mtok: prompt,
            cached_per_mtok: cached,
            completion_per_mtok: completion,
        }
    }

    fn input(prompt: u64, cached: u64, completion: u64, tiers: Vec<PriceTier>) -> MeterInput {
        MeterInput {
            facts: UsageFacts {
                model: MODEL,
                request_digest: Digest([1; 32]),
                response_digest: Digest([2; 32]),
                prompt_tokens: prompt,
                cached_prompt_tokens: cached,
                completion_tokens: completion,
                reasoning_tokens: 0,
                started_at_ms: 1_700_000_000_000,
                first_token_ms: 10,
                duration_ms: 20,
                finish: FinishStatus::Stop,
            },
            schedule: PriceSchedule {
                model: MODEL,
                min_fee: 0,
                tiers,
            },
            max_fee: u128::MAX,
        }
    }

    /// Checks `meter` and that the encoded path gives the same outcome.
    fn check(input: &MeterInput, expected: Result<Metered, Refusal>) {
        assert_eq!(meter(input), expected);
        assert_eq!(meter_encoded(&input.encode()), MeterOutcome(expected));
    }

    fn ok(units: u64, fee: u128) -> Result<Metered, Refusal> {
        Ok(Metered { units, fee })
    }

    #[test]
    fn single_tier() {
        // 1000 * 3_000_000 + 500 * 15_000_000 = 10_500_000_000 → 10_500.
        let i = input(1000, 0, 500, vec![tier(0, 3_000_000, 300_000, 15_000_000)]);
        check(&i, ok(1500, 10_500));
    }

    #[test]
    fn cached_tokens_use_the_cached_price() {
        // 400 uncached * 3_000_000 + 600 cached * 300_000 + 500 * 15_000_000
        // = 1_200_000_000 + 180_000_000 + 7_500_000_000 = 8_880_000_000 → 8_880.
        let i = input(
            1000,
            600,
            500,
            vec![tier(0, 3_000_000, 300_000, 15_000_000)],
        );
        check(&i, ok(1500, 8_880));
    }

    #[test]
    fn tier_chosen_by_prompt_tokens() {
        let tiers = vec![
            tier(0, 1_000_000, 0, 2_000_000),
            tier(200_000, 2_000_000, 0, 4_000_000),
        ];
        // Just below the threshold: 199_999 * 1 + 10 * 2 = 200_019 (exact multiple of 1e6).
        check(&input(199_999, 0, 10, tiers.clone()), ok(200_009, 200_019));
        // At the threshold the whole call uses the second tier: 200_000 * 2 + 10 * 4.
        check(&input(200_000, 0, 10, tiers.clone()), ok(200_010, 400_040));
        // Far above: still the last tier.
        check(&input(1_000_000, 0, 0, tiers), ok(1_000_000, 2_000_000));
    }

    #[test]
    fn fee_rounds_up() {
        // 1 token at 1 unit per million tokens costs 1, not 0.
        check(&input(1, 0, 0, vec![tier(0, 1, 1, 1)]), ok(1, 1));
        // 1_000_001 / 1_000_000 rounds up to 2.
        check(
            &input(1_000_001, 0, 0, vec![tier(0, 1, 1, 1)]),
            ok(1_000_001, 2),
        );
        // Exactly 1_000_000 stays 1.
        check(
            &input(1_000_000, 0, 0, vec![tier(0, 1, 1, 1)]),
            ok(1_000_000, 1),
        );
    }

    #[test]
    fn zero_tokens_cost_zero_without_min_fee() {
        check(&input(0, 0, 0, vec![tier(0, 5, 5, 5)]), ok(0, 0));
    }

    #[test]
    fn min_fee_applies() {
        let mut i = input(10, 0, 10, vec![tier(0, 1_000_000, 0, 1_000_000)]);
        i.schedule.min_fee = 100;
        // 20 tokens at 1 per token = 20 < 100.
        check(&i, ok(20, 100));
        i.schedule.min_fee = 20;
        check(&i, ok(20, 20));
        i.schedule.min_fee = 19;
        check(&i, ok(20, 20));
    }

    #[test]
    fn fee_above_max_is_refused() {
        let mut i = input(1000, 0, 0, vec![tier(0, 1_000_000, 0, 0)]);
        i.max_fee = 999;
        check(&i, Err(Refusal::FeeAboveMax { fee: 1000 }));
        i.max_fee = 1000;
        check(&i, ok(1000, 1000));
        // The min fee counts too.
        i.schedule.min_fee = 5000;
        check(&i, Err(Refusal::FeeAboveMax { fee: 5000 }));
    }

    #[test]
    fn wrong_model_is_refused() {
        let mut i = input(1, 0, 1, vec![tier(0, 1, 1, 1)]);
        i.schedule.model = Digest([8; 32]);
        check(&i, Err(Refusal::ScheduleNotForModel));
    }

    #[test]
    fn largest_values_do_not_overflow_one_product() {
        // (2^64 - 1)^2 fits in u128; one such product plus zeros is fine.
        let i = input(u64::MAX, 0, 0, vec![tier(0, u64::MAX, 0, 0)]);
        let n = u128::from(u64::MAX) * u128::from(u64::MAX);
        check(&i, ok(u64::MAX, n.div_ceil(1_000_000)));
    }

    #[test]
    fn sum_overflow_is_refused() {
        // Three products of (2^64 - 1)^2 exceed u128::MAX.
        let i = input(
            u64::MAX,
            u64::MAX / 2,
            u64::MAX,
            vec![tier(0, u64::MAX, u64::MAX, u64::MAX)],
        );
        check(&i, Err(Refusal::Overflow));
    }

    #[test]
    fn units_overflow_is_refused() {
        // The fee fits but prompt + completion does not fit in u64.
        let i = input(u64::MAX, 0, 1, vec![tier(0, 0, 0, 0)]);
        check(&i, Err(Refusal::Overflow));
    }

    #[test]
    fn units_overflow_comes_before_max_fee() {
        let mut i = input(u64::MAX, 0, 1, vec![tier(0, 1_000_000, 0, 0)]);
        i.max_fee = 0;
        check(&i, Err(Refusal::Overflow));
    }

    #[test]
    fn unchecked_inputs_are_malformed() {
        // More cached than prompt tokens: the decoder would reject it, so `meter` does too.
        check(
            &input(1, 2, 0, vec![tier(0, 1, 1, 1)]),
            Err(Refusal::MalformedInput),
        );
        // No tiers.
        check(&input(1, 0, 0, vec![]), Err(Refusal::MalformedInput));
        // The first tier does not start at 0.
        check(
            &input(1, 0, 0, vec![tier(1, 1, 1, 1)]),
            Err(Refusal::MalformedInput),
        );
    }

    #[test]
    fn garbage_bytes_are_malformed() {
        for bytes in [
            &[][..],
            &[0u8; 16][..],
            &[0xff; 600][..],
            b"tally:meter-in\0\0\x01",
        ] {
            assert_eq!(
                meter_encoded(bytes),
                MeterOutcome(Err(Refusal::MalformedInput))
            );
        }
        let mut long = input(1, 0, 0, vec![tier(0, 1, 1, 1)]).encode();
        long.push(0);
        assert_eq!(
            meter_encoded(&long),
            MeterOutcome(Err(Refusal::MalformedInput))
        );
    }
}
