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

/// The inter-arrival CV of the typical gaps: gaps outside `[median / 2, 2 · median]`
/// are dropped, provided that drops at most a tenth of them (a timer that pauses
/// overnight or now and then), and the CV of the rest is returned. `None` with fewer than
/// `min_gaps` gaps, or when more than a tenth would be dropped (Poisson arrivals keep
/// only about 46 % of their gaps in that band; a client making two calls per visit
/// half).
pub(crate) fn trimmed_cv(times: &[u64], min_gaps: usize) -> Option<f64> {
    if times.len() < 2 || times.len() - 1 < min_gaps.max(1) {
        return None;
    }
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let mut sorted = gaps.clone();
    let mid = sorted.len() / 2;
    let (_, median, _) = sorted.select_nth_unstable(mid);
    let median = *median as f64;
    if median <= 0.0 {
        return None;
    }
    let kept: Vec<f64> = gaps
        .iter()
        .map(|g| *g as f64)
        .filter(|g| *g >= median / 2.0 && *g <= median * 2.0)
        .collect();
    if kept.len() * 10 < gaps.len() * 9 {
        return None;
    }
    let n = kept.len() as f64;
    let mean = kept.iter().sum::<f64>() / n;
    let var = kept.iter().map(|g| (g - mean) * (g - mean)).sum::<f64>() / n;
    Some(var.sqrt() / mean)
}

/// Lag-1 autocorrelation of the typical gaps between consecutive `times` (sorted
/// ascending), and the CV of those gaps. Typical gaps are those at most twice the median:
/// a pause (overnight, a weekend) would otherwise dominate the variance. The
/// autocorrelation is `Σ (g_i − ḡ)(g_{i+1} − ḡ) / Σ (g_i − ḡ)²` over pairs of consecutive
/// typical gaps. Independent gaps (Poisson, or a timer whose every gap is jittered) give
/// about 0; a timer jittered around a fixed grid gives −0.5, whatever the size of the
/// jitter, because a late call shortens the next gap by what it lengthened the last.
/// `None` with fewer than `min_gaps` such pairs or no variance.
pub(crate) fn gap_autocorr(times: &[u64], min_gaps: usize) -> Option<(f64, f64)> {
    if times.len() < 3 {
        return None;
    }
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64)
        .collect();
    let mut sorted = gaps.clone();
    let mid = sorted.len() / 2;
    sorted.select_nth_unstable_by(mid, f64::total_cmp);
    let limit = 2.0 * sorted[mid];
    let typical: Vec<f64> = gaps.iter().copied().filter(|g| *g <= limit).collect();
    let n = typical.len() as f64;
    if n < 2.0 {
        return None;
    }
    let mean = typical.iter().sum::<f64>() / n;
    let var: f64 = typical.iter().map(|g| (g - mean) * (g - mean)).sum();
    if var <= 0.0 || mean <= 0.0 {
        return None;
    }
    let (mut cov, mut pairs, mut pair_var) = (0.0, 0usize, 0.0);
    for w in gaps.windows(2) {
        if w[0] <= limit && w[1] <= limit {
            cov += (w[0] - mean) * (w[1] - mean);
            pair_var += (w[0] - mean) * (w[0] - mean);
            pairs += 1;
        }
    }
    if pairs < min_gaps.max(2) || pair_var <= 0.0 {
        return None;
    }
    // Normalised by the variance of the gaps that start a pair, so a lone typical gap
    // between two pauses does not dilute the estimate.
    Some((cov / pair_var, (var / n).sqrt() / mean))
}

/// The dominant period of `gaps`: the median gap, refined four times as the median of
/// `gap / max(1, round(gap / period))`, so gaps spanning skipped ticks count as whole
/// periods. `None` when the median gap is 0.
pub(crate) fn dominant_period(gaps: &[u64]) -> Option<f64> {
    let median = |v: &mut Vec<f64>| {
        let mid = v.len() / 2;
        v.select_nth_unstable_by(mid, f64::total_cmp);
        v[mid]
    };
    let mut all: Vec<f64> = gaps.iter().map(|g| *g as f64).collect();
    if all.is_empty() {
        return None;
    }
    let mut period = median(&mut all);
    for _ in 0..4 {
        if period <= 0.0 {
            return None;
        }
        let mut per_tick: Vec<f64> = gaps
            .iter()
            .map(|g| *g as f64 / (*g as f64 / period).round().max(1.0))
            .collect();
        period = median(&mut per_tick);
    }
    (period > 0.0).then_some(period)
}

/// Lag-1 autocorrelation of each gap's distance to a whole number of periods (of
/// `times`, sorted ascending): `r = g − P·max(1, round(g / P))` with `P` the
/// [`dominant_period`]. For a timer jittered around a fixed grid, `r` is the difference
/// of two calls' jitters, so it is about −0.5 even when the timer skips ticks (up to about
/// ±30 % jitter; beyond, a skipped tick and a late call cannot be told apart); Poisson
/// arrivals and per-gap jitter give about 0. `None` with fewer than `min_gaps` gaps.
pub(crate) fn grid_autocorr(times: &[u64], min_gaps: usize) -> Option<f64> {
    if times.len() < 3 || times.len() - 1 < min_gaps.max(2) {
        return None;
    }
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let period = dominant_period(&gaps)?;
    let residuals: Vec<f64> = gaps
        .iter()
        .map(|g| {
            let g = *g as f64;
            g - period * (g / period).round().max(1.0)
        })
        .collect();
    lag1(&residuals)
}

/// Lag-1 autocorrelation of `x`; `None` without variance.
fn lag1(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let var: f64 = x.iter().map(|g| (g - mean) * (g - mean)).sum();
    if var <= 0.0 {
        return None;
    }
    let cov: f64 = x.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum();
    Some(cov / var)
}

/// Hour-of-day entropy of `times` with the Miller–Madow correction
/// (`+ (K − 1) / (2n ln 2)` bits, `K` the hours seen), which removes most of the
/// downward bias of a small sample, so a payer active evenly round the clock scores
/// near `log2 24` whether it made 50 calls or 50,000. Capped at `log2 24`.
pub(crate) fn hour_entropy_corrected(times: &[u64]) -> f64 {
    let mut hours = [0u64; 24];
    for t in times {
        hours[((t / 3_600_000) % 24) as usize] += 1;
    }
    let seen = hours.iter().filter(|&&c| c > 0).count() as f64;
    let n = times.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let h = entropy(&hours) + (seen - 1.0).max(0.0) / (2.0 * n * std::f64::consts::LN_2);
    h.min(24f64.log2())
}

/// Shannon entropy, in bits, of the UTC hour of day of `times` (milliseconds since the
/// Unix epoch): 0 when every call falls in one hour, `log2 24 ≈ 4.585` when hours are
/// uniform. (The report uses [`hour_entropy_corrected`].)
#[cfg(test)]
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

    /// Test traffic: SplitMix64 uniforms.
    fn uniforms(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn grid(n: u64, period: f64, jitter: f64, seed: u64) -> Vec<u64> {
        let mut u = uniforms(seed);
        let mut t: Vec<u64> = (0..n)
            .map(|i| (1e9 + period * i as f64 + (u() - 0.5) * 2.0 * jitter * period) as u64)
            .collect();
        t.sort_unstable();
        t
    }

    fn per_gap(n: u64, period: f64, jitter: f64, seed: u64) -> Vec<u64> {
        let mut u = uniforms(seed);
        let mut t = 1e9;
        (0..n)
            .map(|_| {
                t += period * (1.0 + (u() - 0.5) * 2.0 * jitter);
                t as u64
            })
            .collect()
    }

    fn poisson(n: u64, mean: f64, seed: u64) -> Vec<u64> {
        let mut u = uniforms(seed);
        let mut t = 1e9;
        (0..n)
            .map(|_| {
                t += -mean * (1.0 - u()).ln() + 1.0;
                t as u64
            })
            .collect()
    }

    #[test]
    fn jitter_around_a_grid_gives_cv_024_and_per_gap_jitter_017() {
        // The corrected claim of docs/demand-quality.md: ±30 % uniform jitter.
        let cv = |t: &[u64]| interarrival_cv(t, 8).unwrap_or(f64::NAN);
        let g = cv(&grid(20_000, 300_000.0, 0.3, 1));
        let p = cv(&per_gap(20_000, 300_000.0, 0.3, 2));
        assert!((g - 0.6 / 6f64.sqrt()).abs() < 0.01, "grid CV {g}");
        assert!((p - 0.6 / 12f64.sqrt()).abs() < 0.01, "per-gap CV {p}");
    }

    #[test]
    fn trimmed_cv_ignores_overnight_pauses_but_not_poisson() {
        // A ±30 % per-gap timer, 5 minutes, active 12 hours a day.
        let day_only: Vec<u64> = per_gap(5_000, 300_000.0, 0.3, 11)
            .into_iter()
            .filter(|t| (t / 3_600_000) % 24 < 12)
            .collect();
        assert!(interarrival_cv(&day_only, 8).unwrap_or(0.0) > 1.0);
        let trimmed = trimmed_cv(&day_only, 24).unwrap_or(1.0);
        assert!((trimmed - 0.6 / 12f64.sqrt()).abs() < 0.02, "{trimmed}");
        for seed in 1..20 {
            assert_eq!(trimmed_cv(&poisson(40, 60_000.0, seed), 24), None);
        }
        // Request and follow-up 20 s later, visits an hour apart: no typical gap.
        let pairs: Vec<u64> = poisson(100, 3_600_000.0, 12)
            .into_iter()
            .flat_map(|t| [t, t + 20_000])
            .collect();
        assert_eq!(trimmed_cv(&pairs, 24), None);
    }

    #[test]
    fn gap_autocorrelation_is_minus_half_on_a_grid_and_zero_otherwise() {
        for jitter in [0.05, 0.3, 0.5] {
            let r = gap_autocorr(&grid(5_000, 60_000.0, jitter, 3), 24).map_or(0.0, |r| r.0);
            assert!((r + 0.5).abs() < 0.05, "grid ±{jitter}: {r}");
            let r = gap_autocorr(&per_gap(5_000, 60_000.0, jitter, 4), 24).map_or(0.0, |r| r.0);
            assert!(r.abs() < 0.05, "per gap ±{jitter}: {r}");
        }
        let r = gap_autocorr(&poisson(5_000, 60_000.0, 5), 24).map_or(1.0, |r| r.0);
        assert!(r.abs() < 0.05, "poisson: {r}");
        assert_eq!(gap_autocorr(&[0, 10, 20, 30, 40], 24), None);
        // A grid with ±45 % jitter active 10 hours a day: the nightly pauses are left out.
        let office: Vec<u64> = grid(20_000, 300_000.0, 0.45, 13)
            .into_iter()
            .filter(|t| (t / 3_600_000) % 24 < 10)
            .collect();
        let r = gap_autocorr(&office, 24).map_or(0.0, |r| r.0);
        assert!((r + 0.5).abs() < 0.06, "office-hours grid: {r}");
        // Equal gaps: no variance, no statistic.
        let even: Vec<u64> = (0..50).map(|i| i * 100).collect();
        assert_eq!(gap_autocorr(&even, 24), None);
    }

    #[test]
    fn grid_autocorrelation_survives_skipped_ticks() {
        // A ±30 % grid that misses one tick in five: the raw gap autocorrelation weakens
        // (the skips add uncorrelated variance), the residuals to whole periods do not.
        let mut u = uniforms(9);
        let skipping: Vec<u64> = grid(2_000, 60_000.0, 0.3, 6)
            .into_iter()
            .filter(|_| u() > 0.2)
            .collect();
        let raw = gap_autocorr(&skipping, 24).map_or(0.0, |r| r.0);
        let residual = grid_autocorr(&skipping, 24).unwrap_or(0.0);
        assert!(raw > -0.2, "raw {raw}");
        assert!(residual < -0.3, "residual {residual}");
        let gaps: Vec<u64> = skipping.windows(2).map(|w| w[1] - w[0]).collect();
        let period = dominant_period(&gaps).unwrap_or(0.0);
        assert!((period / 60_000.0 - 1.0).abs() < 0.02, "{period}");
        // Poisson and per-gap jitter: no grid.
        for seed in 1..5 {
            let r = grid_autocorr(&poisson(2_000, 60_000.0, seed), 24).unwrap_or(1.0);
            assert!(r.abs() < 0.1, "poisson: {r}");
            let r = grid_autocorr(&per_gap(2_000, 60_000.0, 0.3, seed), 24).unwrap_or(1.0);
            assert!(r.abs() < 0.1, "per-gap: {r}");
        }
        assert_eq!(grid_autocorr(&[0, 10, 20], 24), None);
        assert_eq!(dominant_period(&[]), None);
    }

    #[test]
    fn corrected_entropy_of_a_round_the_clock_sample_is_near_the_maximum() {
        let times = poisson(60, 3_600_000.0, 8);
        let raw = hour_entropy(&times);
        let corrected = hour_entropy_corrected(&times);
        assert!(corrected > raw);
        assert!(corrected > 4.4, "{raw} → {corrected}");
        assert!(corrected <= 24f64.log2());
        assert_eq!(hour_entropy_corrected(&[]), 0.0);
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
