//! The revenue split and its rounding rule.
//!
//! For each channel debit `d` of a finalized batch, with the model's fee and host share in
//! basis points:
//!
//! - `fee = ⌊d × protocol_fee_bps / 10 000⌋` goes to the protocol sink;
//! - `host = ⌊d × host_share_bps / 10 000⌋` goes to the serving host's operator;
//! - the rest, `d − fee − host`, joins the model's contributor pool for this batch.
//!
//! Then, once per model per batch, the pool `p` is split by weight:
//! `share_i = ⌊p × weight_i / 10 000⌋`, and the **dust** `p − Σ share_i` (less than the
//! number of contributors) goes to the **first contributor** listed at registration. So
//! every unit debited lands somewhere: `debited = sink + hosts + Σ contributors`, exactly,
//! and all rounding favours the model's contributors, never the protocol or the host.
//!
//! The products are split so that no amount up to `u128::MAX` can overflow.

/// Basis points in a whole.
pub const BPS: u16 = 10_000;

/// `⌊amount × bps / 10 000⌋`, exact for every `u128` amount and `bps ≤ 10 000`.
pub fn bps_floor(amount: u128, bps: u16) -> u128 {
    // With amount = q × 10 000 + r: amount × bps / 10 000 = q × bps + r × bps / 10 000,
    // where q × bps ≤ amount and r × bps < 10⁸, so nothing overflows and the floor is exact.
    let bps = u128::from(bps.min(BPS));
    let whole = u128::from(BPS);
    (amount / whole) * bps + (amount % whole) * bps / whole
}

/// One debit's parts: `(protocol fee, host share, contributor pool)`; they sum to `amount`.
pub fn split_debit(amount: u128, protocol_fee_bps: u16, host_share_bps: u16) -> (u128, u128, u128) {
    let fee = bps_floor(amount, protocol_fee_bps);
    let host = bps_floor(amount, host_share_bps);
    // fee + host ≤ amount × (fee_bps + host_bps) / 10 000 ≤ amount.
    let pool = amount.saturating_sub(fee).saturating_sub(host);
    (fee, host, pool)
}

/// A contributor pool's shares by weight (same order as `weights`), the dust added to the
/// first; the shares sum to `pool` exactly. `weights` sum to 10 000 and are not empty.
pub fn split_pool(pool: u128, weights: &[u16]) -> Vec<u128> {
    let mut shares: Vec<u128> = weights.iter().map(|&w| bps_floor(pool, w)).collect();
    let assigned = shares.iter().fold(0u128, |a, &s| a.saturating_add(s));
    if let Some(first) = shares.first_mut() {
        *first = first.saturating_add(pool.saturating_sub(assigned));
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounding_examples() {
        assert_eq!(split_debit(10_000, 500, 2_000), (500, 2_000, 7_500));
        assert_eq!(split_debit(1, 500, 2_000), (0, 0, 1));
        assert_eq!(split_debit(199, 100, 100), (1, 1, 197));
        // 100 split 1/3, 1/3, 1/3 (3334 + 3333 + 3333 bps): 33 each, dust 1 to the first.
        assert_eq!(split_pool(100, &[3_334, 3_333, 3_333]), vec![34, 33, 33]);
        assert_eq!(split_pool(0, &[5_000, 5_000]), vec![0, 0]);
        assert_eq!(split_pool(u128::MAX, &[10_000]), vec![u128::MAX]);
    }

    #[test]
    fn bps_floor_is_exact_at_the_top() {
        assert_eq!(bps_floor(u128::MAX, 10_000), u128::MAX);
        assert_eq!(bps_floor(u128::MAX, 5_000), u128::MAX / 2);
        assert_eq!(bps_floor(u128::MAX, 0), 0);
    }

    fn weights() -> impl Strategy<Value = Vec<u16>> {
        // Cut 10 000 at up to 63 random points: 1..=64 positive weights summing to 10 000.
        proptest::collection::btree_set(1u16..10_000, 0..63).prop_map(|cuts| {
            let mut points: Vec<u16> = cuts.into_iter().collect();
            points.push(10_000);
            let mut prev = 0;
            points
                .into_iter()
                .map(|p| {
                    let w = p - prev;
                    prev = p;
                    w
                })
                .collect()
        })
    }

    proptest! {
        /// Conservation to the unit: fee + host + Σ shares = debit, for any amounts.
        #[test]
        fn split_conserves_every_unit(
            amount in any::<u128>(),
            fee_bps in 0u16..=10_000,
            host_bps in 0u16..=10_000,
            weights in weights(),
        ) {
            let host_bps = host_bps.min(10_000 - fee_bps);
            let (fee, host, pool) = split_debit(amount, fee_bps, host_bps);
            prop_assert_eq!(fee.checked_add(host).and_then(|x| x.checked_add(pool)), Some(amount));
            let shares = split_pool(pool, &weights);
            let sum = shares.iter().try_fold(0u128, |a, &s| a.checked_add(s));
            prop_assert_eq!(sum, Some(pool));
            // Dust is less than one unit per contributor.
            let floor0 = bps_floor(pool, weights[0]);
            prop_assert!(shares[0] - floor0 < weights.len() as u128);
        }
    }
}
