//! The proxy's request bound (`attestor/src/proxy/bound.rs`, compiled here as is), checked
//! against the metering guest itself: every call within the bound (any prompt up to the
//! estimate, any part of it cached, the bound's completion tokens) is metered to a fee
//! within the budget, without overflow; one more completion token at the worst prompt is
//! not (the bound is the largest); a refused prompt does cost more than the budget; and a
//! planned body never raises a limit, never forwards more per choice than the bound pays
//! for, and parses.
//!
//! Input: a route byte, a schedule, a budget, a prompt estimate, then a JSON body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_protocol::{
    Digest, FinishStatus, MeterInput, PriceSchedule, PriceTier, Refusal, UsageFacts,
};

#[allow(dead_code, unreachable_pub)]
#[path = "../../attestor/src/proxy/route.rs"]
mod route;
#[allow(dead_code, unreachable_pub)]
#[path = "../../attestor/src/proxy/bound.rs"]
mod bound;

use route::Metered;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
}

fn meter(s: &PriceSchedule, budget: u128, prompt: u64, cached: u64, completion: u64) -> Result<u128, Refusal> {
    let facts = UsageFacts {
        model: s.model,
        request_digest: Digest::ZERO,
        response_digest: Digest::ZERO,
        prompt_tokens: prompt,
        cached_prompt_tokens: cached,
        completion_tokens: completion,
        reasoning_tokens: 0,
        started_at_ms: 0,
        first_token_ms: 0,
        duration_ms: 0,
        finish: FinishStatus::Stop,
    };
    tally_guest::meter(&MeterInput { facts, schedule: s.clone(), max_fee: budget }).map(|m| m.fee)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let route = Metered::ALL[usize::from(input.u8() % 4)].0;
    let min_fee = u128::from(input.u64());
    let count = usize::from(input.u8() % 8) + 1;
    let mut tiers = Vec::with_capacity(count);
    let mut from = 0u64;
    for i in 0..count {
        if i > 0 {
            let Some(next) = from.checked_add(u64::from(u32::from_le_bytes(input.take())) + 1) else {
                break;
            };
            from = next;
        }
        tiers.push(PriceTier {
            from_prompt_tokens: from,
            prompt_per_mtok: input.u64(),
            cached_per_mtok: input.u64(),
            completion_per_mtok: input.u64(),
        });
    }
    let schedule = PriceSchedule { model: Digest::sha256(b"m"), min_fee, tiers };
    if schedule.check().is_err() {
        return;
    }
    let budget = input.u128();
    let prompt_upper = input.u64();

    // The worst points of each tier a prompt up to the estimate may fall in.
    let worst_points: Vec<(u64, u64)> = schedule
        .tiers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.from_prompt_tokens <= prompt_upper)
        .flat_map(|(i, t)| {
            let hi = schedule
                .tiers
                .get(i + 1)
                .map_or(prompt_upper, |n| (n.from_prompt_tokens - 1).min(prompt_upper));
            let cached = if t.cached_per_mtok > t.prompt_per_mtok { hi } else { 0 };
            [(hi, cached), (t.from_prompt_tokens, 0), (t.from_prompt_tokens, t.from_prompt_tokens), (hi, hi - cached)]
        })
        .collect();
    match bound::completion_bound(&schedule, budget, prompt_upper) {
        Ok(c) => {
            for &(prompt, cached) in &worst_points {
                let fee = meter(&schedule, budget, prompt, cached, c);
                assert!(
                    matches!(fee, Ok(f) if f <= budget),
                    "bound {c} not payable at prompt {prompt} (cached {cached}): {fee:?}"
                );
            }
            if c < u64::MAX - prompt_upper {
                let over = worst_points
                    .iter()
                    .any(|&(p, cached)| meter(&schedule, budget, p, cached, c + 1).is_err());
                assert!(over, "bound {c} is not the largest");
            }
        }
        Err(bound::BoundError::PromptUnaffordable { fee }) => {
            assert!(fee > budget);
            assert_eq!(fee, bound::worst_prompt_fee(&schedule, prompt_upper));
            let refused = worst_points
                .iter()
                .any(|&(p, cached)| meter(&schedule, budget, p, cached, 0) == Err(Refusal::FeeAboveMax { fee }));
            assert!(refused, "prompt refused at {fee} but payable");
        }
        Err(e) => panic!("unexpected {e:?}"),
    }

    // The body: planned with a small estimate so that the budget matters.
    let overhead = u64::from(input.u8());
    let media = input.u8();
    let max_output_tokens = u64::from(u16::from_le_bytes(input.take())).max(1);
    let body = input.0;
    let Ok(mut request) = bound::parse_request(body) else {
        return;
    };
    let original = request.clone();
    let limits = bound::Limits {
        schedule: &schedule,
        budget,
        estimate: bound::PromptEstimate {
            overhead_tokens: overhead,
            media_part_tokens: (media > 0).then_some(u64::from(media)),
        },
        max_output_tokens,
    };
    let Ok(plan) = bound::plan(route, &mut request, body.len(), &limits) else {
        return;
    };
    let sent: serde_json::Map<String, serde_json::Value> = match &plan.body {
        Some(b) => serde_json::from_slice(b).expect("the planned body parses"),
        None => original.clone(),
    };
    let fields = bound::limit_fields(route);
    if fields.is_empty() {
        return;
    }
    let per_choice = plan.completion_bound / bound::choices(route, &sent).unwrap();
    let mut limited = false;
    for field in fields {
        if let Some(v) = sent.get(*field).filter(|v| !v.is_null()) {
            limited = true;
            let v = v.as_u64().expect("a limit is a count");
            assert!(v <= per_choice, "{field} {v} above {per_choice}");
            if let Some(was) = original.get(*field).and_then(|v| v.as_u64()) {
                assert!(v <= was, "{field} raised from {was} to {v}");
            }
        }
    }
    assert!(limited || per_choice >= max_output_tokens, "no limit forwarded");
});
