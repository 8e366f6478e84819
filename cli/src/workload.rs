//! Synthetic but realistic traffic for `demo` and `bench`: models with real-looking price
//! lists, payers with uneven demand, token counts drawn from heavy-tailed distributions.

use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SignedAuthorization, SigningKey,
    UsageFacts,
};

/// The settlement chain and contract the demo's authorisations are bound to.
pub(crate) const CHAIN_ID: &str = "tally-devnet-1";
/// The devnet contract address the demo's authorisations name.
pub(crate) const CONTRACT: &str =
    "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr";

/// SplitMix64: a tiny deterministic generator, so a seed replays a whole run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Log-normal with the given median and shape: prompt and completion lengths of real
    /// LLM traffic are close to this (most short, a long tail).
    pub(crate) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }
    pub(crate) fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        b
    }
}

/// A model on offer, with its price list.
pub(crate) struct Model {
    pub(crate) name: &'static str,
    pub(crate) schedule: PriceSchedule,
    /// Median prompt and completion lengths of its traffic.
    pub(crate) prompt_median: f64,
    pub(crate) completion_median: f64,
    /// Share of honest calls that go to this model (the shares sum to 1).
    pub(crate) popularity: f64,
}

impl Model {
    pub(crate) fn id(&self) -> Digest {
        self.schedule.model
    }
}

fn tier(from: u64, prompt: u64, cached: u64, completion: u64) -> PriceTier {
    PriceTier {
        from_prompt_tokens: from,
        prompt_per_mtok: prompt,
        cached_per_mtok: cached,
        completion_per_mtok: completion,
    }
}

/// Four vertical models with different price lists (prices per million tokens in
/// micro-units of the escrow token, like $ with six decimals).
pub(crate) fn models() -> Vec<Model> {
    let model = |name: &str| Digest::sha256(format!("weights manifest of {name}").as_bytes());
    vec![
        Model {
            name: "med-diagnosis-8b",
            schedule: PriceSchedule {
                model: model("med-diagnosis-8b"),
                min_fee: 50,
                tiers: vec![tier(0, 400_000, 100_000, 1_600_000)],
            },
            prompt_median: 900.0,
            completion_median: 300.0,
            popularity: 0.42,
        },
        Model {
            name: "legal-docs-70b",
            schedule: PriceSchedule {
                model: model("legal-docs-70b"),
                min_fee: 200,
                tiers: vec![
                    tier(0, 2_500_000, 1_250_000, 10_000_000),
                    tier(128_000, 5_000_000, 2_500_000, 15_000_000),
                ],
            },
            prompt_median: 6_000.0,
            completion_median: 700.0,
            popularity: 0.18,
        },
        Model {
            name: "risk-monitor-3b",
            schedule: PriceSchedule {
                model: model("risk-monitor-3b"),
                min_fee: 10,
                tiers: vec![tier(0, 100_000, 25_000, 400_000)],
            },
            prompt_median: 400.0,
            completion_median: 60.0,
            popularity: 0.34,
        },
        // The demo's wash-traded model: little honest demand, and one payer funded by its
        // own contributor calling it like clockwork.
        Model {
            name: "trend-signals-1b",
            schedule: PriceSchedule {
                model: model("trend-signals-1b"),
                min_fee: 20,
                tiers: vec![tier(0, 300_000, 75_000, 1_200_000)],
            },
            prompt_median: 700.0,
            completion_median: 150.0,
            popularity: 0.06,
        },
    ]
}

/// Index in [`models`] of the model the demo's wash-trading payer hammers.
pub(crate) const WASH_MODEL: usize = 3;

/// Where the demo's simulated clock starts: Monday 2026-01-05 00:00 UTC (fixed, so a seed
/// replays the same receipts).
pub(crate) const START_MS: u64 = 1_767_571_200_000;

/// A call time in `[start, start + span)` with a day-night rhythm: uniform draws thinned
/// by the hour of day (busiest in the UTC afternoon), so honest arrivals stay Poisson-like
/// (irregular) but not flat around the clock.
pub(crate) fn diurnal_time(rng: &mut Rng, start_ms: u64, span_ms: u64) -> u64 {
    loop {
        let t = start_ms + (rng.unit() * span_ms as f64) as u64;
        let hour = (t / 3_600_000) % 24;
        let phase = (hour as f64 - 15.0) / 24.0 * 2.0 * std::f64::consts::PI;
        let weight = 0.6 + 0.4 * phase.cos();
        if rng.unit() < weight {
            return t;
        }
    }
}

/// One call's facts, drawn for `model`.
pub(crate) fn facts(rng: &mut Rng, model: &Model, request: Digest, now_ms: u64) -> UsageFacts {
    let prompt = (rng.lognormal(model.prompt_median, 0.9) as u64).clamp(1, 190_000);
    let cached = if rng.unit() < 0.3 {
        (prompt as f64 * rng.unit() * 0.9) as u64
    } else {
        0
    };
    let completion = (rng.lognormal(model.completion_median, 0.8) as u64).clamp(1, 16_000);
    let first_token_ms = 40 + (prompt / 50) as u32;
    let finish = match rng.below(100) {
        0..=1 => FinishStatus::Length,
        2 => FinishStatus::Interrupted,
        _ => FinishStatus::Stop,
    };
    UsageFacts {
        model: model.id(),
        request_digest: request,
        response_digest: Digest(rng.bytes32()),
        prompt_tokens: prompt,
        cached_prompt_tokens: cached,
        completion_tokens: completion,
        reasoning_tokens: 0,
        started_at_ms: now_ms,
        first_token_ms,
        duration_ms: first_token_ms + (completion * 12) as u32,
        finish,
    }
}

/// The payer's signature on one call: a per-call limit well above the expected fee and a
/// cumulative cap the channel will not reach in a run.
pub(crate) fn authorize(
    payer: &SigningKey,
    host: &tally_protocol::PublicKey,
    model: &Model,
    seq: u64,
    request: Digest,
    expires_at_ms: u64,
) -> SignedAuthorization {
    Authorization {
        chain_id: CHAIN_ID.into(),
        contract: CONTRACT.into(),
        payer: payer.public_key(),
        host: *host,
        model: model.id(),
        seq,
        request_digest: request,
        max_fee: 50_000_000,
        cumulative_cap: 1_000_000_000_000_000,
        expires_at_ms,
    }
    .sign(payer)
}

pub(crate) use tally_protocol::now_ms;
