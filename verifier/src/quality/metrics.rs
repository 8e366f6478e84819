//! The statistics of the demand-quality report, as pure functions of integer inputs.
//!
//! Money stays integer (`u128`) until a share is taken; every `f64` here is a statistic of
//! already-summed integers, computed in a fixed order, so the same input always gives the
//! same bits. Each function's exact definition is in `docs/demand-quality.md`.

/// Herfindahl–Hirschman index of `amounts`: the sum of squared shares, in `[1/n, 1]` for
/// `n` non-zero amounts; 0 when the total is 0.
pub(crate) fn hhi(amounts: &[u128]) -> f64 {
    let total = sum(amounts);
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    amounts
        .iter()
        .map(|&a| {
            let s = a as f64 / total;
            s * s
        })
        .sum()
}

/// Nakamoto coefficient: the fewest amounts whose sum is at least half the total (exact
/// integer comparison); 0 when the total is 0.
pub(crate) fn nakamoto(amounts: &[u128]) -> u64 {
    let total = sum(amounts);
    if total == 0 {
        return 0;
    }
    let mut sorted = amounts.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut acc: u128 = 0;
    for (i, a) in sorted.iter().enumerate() {
        acc = acc.saturating_add(*a);
        // acc ≥ total / 2, written without the division's rounding or an overflow.
        if acc >= total - acc.min(total) {
            return i as u64 + 1;
        }
    }
    sorted.len() as u64
}

/// The Lorenz curve of `amounts`: `(share of payers, share of spend)` for the poorest
/// `i` payers, `i = 0..=n`, thinned to at most `max_points` points (first and last kept).
pub(crate) fn lorenz(amounts: &[u128], max_points: usize) -> Vec<[f64; 2]> {
    let total = sum(amounts);
    let n = amounts.len();
    if total == 0 || n == 0 {
        return vec![[0.0, 0.0], [1.0, 1.0]];
    }
    let mut sorted = amounts.to_vec();
    sorted.sort_unstable();
    let mut cumulative = Vec::with_capacity(n + 1);
    let mut acc: u128 = 0;
    cumulative.push(0u128);
    for a in &sorted {
        acc = acc.saturating_add(*a);
        cumulative.push(acc);
    }
    let points = max_points.max(2).min(n + 1);
    (0..points)
        .map(|k| {
            // Evenly spaced indices 0..=n, integer arithmetic so the choice is exact.
            let i = k * n / (points - 1);
            [i as f64 / n as f64, cumulative[i] as f64 / total as f64]
        })
        .collect()
}

/// Gini coefficient of `amounts`: `Σ (2i − n − 1)·x_i / (n·Σx)` over amounts sorted
/// ascending (`i` from 1); 0 for equal amounts, `(n−1)/n` when one holds everything, 0 when
/// the total is 0.
pub(crate) fn gini(amounts: &[u128]) -> f64 {
    let total = sum(amounts);
    let n = amounts.len();
    if total == 0 || n == 0 {
        return 0.0;
    }
    let mut sorted = amounts.to_vec();
    sorted.sort_unstable();
    let nf = n as f64;
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| (2.0 * (i as f64 + 1.0) - nf - 1.0) * x as f64)
        .sum();
    (weighted / (nf * total as f64)).max(0.0)
}

/// Coefficient of variation (population standard deviation over mean) of the gaps between
/// consecutive `times` (sorted ascending). `None` with fewer than `min_gaps` gaps or when
/// every call has the same time.
pub(crate) fn interarrival_cv(times: &[u64], min_gaps: usize) -> Option<f64> {
    if times.len() < 2 || times.len() - 1 < min_gaps.max(1) {
        return None;
    }
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64)
        .collect();
    let n = gaps.len() as f64;
    let mean = gaps.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return None;
    }
    let var = gaps.iter().map(|g| (g - mean) * (g - mean)).sum::<f64>() / n;
    Some(var.sqrt() / mean)
}

/// Shannon entropy, in bits, of the UTC hour of day of `times` (milliseconds since the
/// Unix epoch): 0 when every call falls in one hour, `log2 24 ≈ 4.585` when hours are
/// uniform.
pub(crate) fn hour_entropy(times: &[u64]) -> f64 {
    let mut hours = [0u64; 24];
    for t in times {
        hours[((t / 3_600_000) % 24) as usize] += 1;
    }
    entropy(&hours)
}

/// Shannon entropy, in bits, of the distribution given by `counts`.
pub(crate) fn entropy(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    -counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            p * p.log2()
        })
        .sum::<f64>()
}

/// Repeated-request share: `1 − distinct / n` of the request keys, 0 when empty. Sorts
/// `keys` in place.
pub(crate) fn repeat_share(keys: &mut [u64]) -> f64 {
    if keys.is_empty() {
        return 0.0;
    }
    keys.sort_unstable();
    let distinct = 1 + keys.windows(2).filter(|w| w[0] != w[1]).count();
    1.0 - distinct as f64 / keys.len() as f64
}

/// Retention: for each period `k ≥ 1`, the share of the payers active in period `k − 1`
/// who are active again in period `k`; `None` when period `k − 1` had no payer. Each slice
/// holds one period's payer indices, sorted and distinct.
pub(crate) fn retention(active: &[Vec<u32>]) -> Vec<Option<f64>> {
    active
        .windows(2)
        .map(|w| {
            let (prev, next) = (&w[0], &w[1]);
            if prev.is_empty() {
                return None;
            }
            let kept = prev
                .iter()
                .filter(|p| next.binary_search(p).is_ok())
                .count();
            Some(kept as f64 / prev.len() as f64)
        })
        .collect()
}

/// Saturating sum, so a hostile input cannot overflow (real totals are far below).
pub(crate) fn sum(amounts: &[u128]) -> u128 {
    amounts.iter().fold(0u128, |a, b| a.saturating_add(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hhi_of_equal_shares_is_one_over_n() {
        for n in 1..=20u128 {
            let amounts = vec![7u128; n as usize];
            assert!(close(hhi(&amounts), 1.0 / n as f64), "n = {n}");
        }
        assert!(close(hhi(&[100]), 1.0));
        // Shares 0.5, 0.25, 0.25: 0.25 + 0.0625 + 0.0625.
        assert!(close(hhi(&[2, 1, 1]), 0.375));
        assert_eq!(hhi(&[]), 0.0);
        assert_eq!(hhi(&[0, 0]), 0.0);
    }

    #[test]
    fn nakamoto_counts_the_fewest_payers_making_half() {
        // A whale with 60%: one payer.
        assert_eq!(nakamoto(&[60, 10, 10, 10, 10]), 1);
        // Exactly half counts as half.
        assert_eq!(nakamoto(&[50, 25, 25]), 1);
        assert_eq!(nakamoto(&[49, 26, 25]), 2);
        // Ten equal payers: five.
        assert_eq!(nakamoto(&[3; 10]), 5);
        assert_eq!(nakamoto(&[3; 9]), 5);
        assert_eq!(nakamoto(&[]), 0);
        // No overflow near u128::MAX.
        assert_eq!(nakamoto(&[u128::MAX / 2, u128::MAX / 2]), 1);
    }

    #[test]
    fn gini_of_equal_is_zero_and_of_one_holder_is_n_minus_one_over_n() {
        assert!(close(gini(&[5; 10]), 0.0));
        assert!(close(gini(&[0, 0, 0, 100]), 0.75));
        // Hand-computed: sorted 1, 2, 3 → (−2·1 + 0·2 + 2·3) / (3·6) = 4/18.
        assert!(close(gini(&[3, 1, 2]), 4.0 / 18.0));
        assert_eq!(gini(&[]), 0.0);
    }

    #[test]
    fn lorenz_of_equal_is_the_diagonal_and_is_thinned() {
        let curve = lorenz(&[4; 4], 101);
        assert_eq!(curve.len(), 5);
        for [x, y] in &curve {
            assert!(close(*x, *y));
        }
        let curve = lorenz(&[0, 0, 0, 10], 101);
        assert_eq!(curve[3], [0.75, 0.0]);
        assert_eq!(curve[4], [1.0, 1.0]);
        let thin = lorenz(&(1..=1000u128).collect::<Vec<_>>(), 11);
        assert_eq!(thin.len(), 11);
        assert_eq!(thin[0], [0.0, 0.0]);
        assert_eq!(thin[10], [1.0, 1.0]);
        assert!(close(thin[5][0], 0.5));
        // Poorest half of 1..=1000: 125,250 of 500,500.
        assert!(close(thin[5][1], 125_250.0 / 500_500.0));
    }

    #[test]
    fn cv_of_a_perfectly_regular_series_is_zero() {
        let times: Vec<u64> = (0..50).map(|i| 1_000 + i * 250).collect();
        assert_eq!(interarrival_cv(&times, 8), Some(0.0));
        // Gaps 1 and 3: mean 2, standard deviation 1.
        assert!(close(
            interarrival_cv(&[0, 1, 4, 5, 8], 2).unwrap_or(f64::NAN),
            0.5
        ));
        // Too few gaps, or no elapsed time: no statistic.
        assert_eq!(interarrival_cv(&[0, 10, 20], 8), None);
        assert_eq!(interarrival_cv(&[5; 20], 8), None);
    }

    #[test]
    fn entropy_of_uniform_hours_is_log2_24() {
        let times: Vec<u64> = (0..24 * 5).map(|i| i * 3_600_000 + 17).collect();
        assert!(close(hour_entropy(&times), 24f64.log2()));
        let one_hour: Vec<u64> = (0..100).map(|i| 86_400_000 * i + 3_600_000 * 9).collect();
        assert!(close(hour_entropy(&one_hour), 0.0));
        // Two hours, equally: one bit.
        assert!(close(hour_entropy(&[0, 3_600_000]), 1.0));
    }

    #[test]
    fn repeat_share_counts_non_distinct_requests() {
        assert!(close(repeat_share(&mut [1, 2, 3, 4]), 0.0));
        assert!(close(repeat_share(&mut [9, 9, 9, 9]), 0.75));
        assert!(close(repeat_share(&mut [3, 1, 3, 2]), 0.25));
        assert_eq!(repeat_share(&mut []), 0.0);
    }

    #[test]
    fn retention_is_the_share_of_last_periods_payers_seen_again() {
        let active = vec![vec![1, 2, 3, 4], vec![2, 4, 5], vec![], vec![7]];
        assert_eq!(retention(&active), vec![Some(0.5), Some(0.0), None]);
    }
}
