//! The behavioural score: how a client calls (timing regularity, around-the-clock
//! activity) and what it asks (repeated requests), combined into one number.
//!
//! Each component is in `[0, 1]`. Timing is the strongest of three tests, so it does not
//! matter how a bot jitters its timer: the inter-arrival CV (a timer whose every gap is
//! jittered by ±30 % has CV ≈ 0.17; a trimmed CV forgives a nightly pause), the lag-1
//! autocorrelation of gaps (a timer jittered
//! around a fixed grid has ≈ −0.5 at any jitter, while its CV is 0.24 at ±30 % and 0.41 at
//! ±50 %) and the same autocorrelation of each gap's distance to a whole number of
//! periods (a grid that skips ticks).
//! The score is `repeats + 0.6·timing + 0.3·flatness·(1 − timing)`: regular timing and
//! flat hours together reach 0.6, below the bot line of 1.2, because a scheduled job is
//! regular and round the clock by nature (flatness adds nothing a timer already
//! explains); replaying requests is what a scheduler does not explain.
//! The weights and lines are documented in `docs/demand-quality.md`.

use super::metrics;
use super::{Behaviour, Thresholds};

/// Weight of timing regularity in the score.
pub(crate) const TIMING_WEIGHT: f64 = 0.6;
/// Weight of around-the-clock flatness in the score.
pub(crate) const FLATNESS_WEIGHT: f64 = 0.3;
/// Corrected hour entropy (bits) from which flatness starts to count (a strong daily
/// rhythm sits near 4.3, `log2 24 ≈ 4.585`).
const FLAT_FROM: f64 = 4.40;
/// Corrected hour entropy at which flatness is 1.
const FLAT_FULL: f64 = 4.55;
/// Calls must span this many milliseconds (two days) for flatness to count.
const FLAT_SPAN_MS: u64 = 2 * 86_400_000;

/// The timing statistics of one sorted series of call times.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Timing {
    pub(crate) cv: Option<f64>,
    pub(crate) autocorr: Option<f64>,
    pub(crate) grid: Option<f64>,
    /// The timing component.
    pub(crate) regularity: f64,
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// The timing statistics and component of `times` (sorted ascending).
pub(crate) fn timing(times: &[u64], t: &Thresholds) -> Timing {
    let cv = metrics::interarrival_cv(times, t.min_gaps);
    let typical = metrics::gap_autocorr(times, t.min_gaps_periodic);
    let autocorr = typical.map(|(r, _)| r);
    let grid = metrics::grid_autocorr(times, t.min_gaps_periodic);
    let gaps = times.len().saturating_sub(1) as f64;
    let trimmed = metrics::trimmed_cv(times, t.min_gaps_periodic);
    let c = t.regular_cv;
    // CV at or below `c`: regular; 0 from 2c (Poisson ≈ 1 is far above). The trimmed CV
    // forgives a pause a day.
    let spread = match (cv, trimmed) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let by_cv = spread.map_or(0.0, |cv| clamp01((2.0 * c - cv) / c));
    // A grid: autocorrelation from −0.15 (0) to −0.35 (1), and significant: z = −ρ√m
    // from 2.5 (0) to 4 (1); independent gaps give z ≈ N(0, 1).
    let anti = |r: f64| {
        let size = clamp01((-r - 0.15) / 0.2);
        let significance = clamp01((-r * gaps.sqrt() - 2.5) / 1.5);
        size.min(significance)
    };
    // Typical gaps: also require them not wildly spread (two calls per session alternate
    // short and long gaps, with a CV near 1).
    let by_autocorr = typical.map_or(0.0, |(r, cv)| anti(r).min(clamp01((1.0 - cv) / 0.4)));
    // Residuals to whole periods: a grid that skips ticks.
    let by_grid = grid.map_or(0.0, anti);
    Timing {
        cv,
        autocorr,
        grid,
        regularity: by_cv.max(by_autocorr).max(by_grid),
    }
}

/// The repeats component of a repeated-request share over `calls` calls.
pub(crate) fn repeats(share: f64, calls: u64, t: &Thresholds) -> f64 {
    if calls < t.min_calls_repeat || t.repeat_share <= 0.0 {
        return 0.0;
    }
    let from = t.repeat_share / 5.0;
    clamp01((share - from) / (t.repeat_share - from))
}

/// The corrected hour entropy of `times` (sorted) if it counts, and its flatness
/// component.
pub(crate) fn flatness(times: &[u64], t: &Thresholds) -> (Option<f64>, f64) {
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return (None, 0.0);
    };
    if (times.len() as u64) < t.min_calls_entropy || last - first < FLAT_SPAN_MS {
        return (None, 0.0);
    }
    let h = metrics::hour_entropy_corrected(times);
    (Some(h), clamp01((h - FLAT_FROM) / (FLAT_FULL - FLAT_FROM)))
}

/// The score of three components: `repeats + 0.6·timing + 0.3·flatness·(1 − timing)`.
/// Flatness counts only as far as timing does not already explain it: a timer runs round
/// the clock by construction.
pub(crate) fn score(timing: f64, repeats: f64, flatness: f64) -> Behaviour {
    Behaviour {
        score: repeats + TIMING_WEIGHT * timing + FLATNESS_WEIGHT * flatness * (1.0 - timing),
        timing,
        repeats,
        flatness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_timing_and_flat_hours_alone_stay_below_the_bot_line() {
        let t = Thresholds::default();
        assert!(score(1.0, 0.0, 1.0).score < t.bot_score);
        assert!((score(1.0, 0.5, 1.0).score - 1.1).abs() < 1e-12);
        assert!(score(0.0, 1.0, 0.0).score < t.bot_score);
        assert!(score(1.0, 1.0, 0.0).score >= t.bot_score);
        assert!(score(1.0, 0.6, 1.0).score >= t.bot_score);
        assert!(score(0.0, 1.0, 1.0).score >= t.bot_score);
        assert!(score(0.0, 0.8, 1.0).score < t.bot_score);
    }

    #[test]
    fn repeats_component_is_linear_from_a_fifth_to_the_line() {
        let t = Thresholds::default();
        assert_eq!(repeats(0.05, 100, &t), 0.0);
        assert!((repeats(0.3, 100, &t) - 0.5).abs() < 1e-12);
        assert_eq!(repeats(0.9, 100, &t), 1.0);
        assert_eq!(repeats(0.9, 5, &t), 0.0);
    }

    #[test]
    fn a_grid_timer_is_regular_whatever_its_jitter() {
        let t = Thresholds::default();
        // ±45 % around a one-minute grid (CV ≈ 0.37, beyond the CV test alone).
        let mut state = 7u64;
        let mut unit = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut times: Vec<u64> = (0..300)
            .map(|i| (1e9 + 60_000.0 * (i as f64 + (unit() - 0.5) * 0.9)) as u64)
            .collect();
        times.sort_unstable();
        let timing = timing(&times, &t);
        assert!(timing.cv.unwrap_or(0.0) > 0.3, "{timing:?}");
        assert!(timing.regularity > 0.9, "{timing:?}");
    }
}
