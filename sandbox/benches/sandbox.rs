//! Metering one call: the wasm guest in a fresh sandbox instance against native code.
//!
//! `cargo bench -p tally-sandbox --bench sandbox`. The wasm numbers include everything a
//! call costs the attestor: encoding the input, a new store, instantiation from the pool,
//! fuel, copying input and output, decoding the outcome.

use criterion::Criterion;
use std::hint::black_box;
use tally_protocol::{Digest, FinishStatus, MeterInput, PriceSchedule, PriceTier, UsageFacts};
use tally_sandbox::{Sandbox, SandboxConfig};

/// A typical call: a long-context schedule with three tiers, a cached prefix.
fn input() -> MeterInput {
    let model = Digest([1; 32]);
    let tier = |from, prompt, cached, completion| PriceTier {
        from_prompt_tokens: from,
        prompt_per_mtok: prompt,
        cached_per_mtok: cached,
        completion_per_mtok: completion,
    };
    MeterInput {
        facts: UsageFacts {
            model,
            request_digest: Digest([2; 32]),
            response_digest: Digest([3; 32]),
            prompt_tokens: 150_000,
            cached_prompt_tokens: 100_000,
            completion_tokens: 2_000,
            reasoning_tokens: 500,
            started_at_ms: 1_700_000_000_000,
            first_token_ms: 300,
            duration_ms: 9_000,
            finish: FinishStatus::Stop,
        },
        schedule: PriceSchedule {
            model,
            min_fee: 10,
            tiers: vec![
                tier(0, 3_000_000, 300_000, 15_000_000),
                tier(128_000, 6_000_000, 600_000, 22_500_000),
                tier(1_000_000, 9_000_000, 900_000, 30_000_000),
            ],
        },
        max_fee: u128::MAX,
    }
}

fn bench(c: &mut Criterion) {
    let sandbox = match Sandbox::pinned(SandboxConfig::default()) {
        Ok(s) => s,
        Err(e) => panic!("the committed guest does not load: {e}"),
    };
    let input = input();
    let encoded = input.encode();
    assert_eq!(
        sandbox.meter(&input).ok(),
        tally_guest::meter(&input).ok(),
        "wasm and native disagree"
    );

    let mut g = c.benchmark_group("meter");
    g.bench_function("wasm_fresh_instance", |b| {
        b.iter(|| sandbox.meter(black_box(&input)))
    });
    g.bench_function("wasm_fresh_instance_encoded", |b| {
        b.iter(|| sandbox.meter_encoded(black_box(&encoded)))
    });
    g.bench_function("native", |b| {
        b.iter(|| tally_guest::meter(black_box(&input)))
    });
    g.bench_function("native_encoded", |b| {
        b.iter(|| tally_guest::meter_encoded(black_box(&encoded)))
    });
    g.finish();

    c.bench_function("sandbox_new", |b| {
        b.iter(|| Sandbox::pinned(SandboxConfig::default()))
    });
}

// What `criterion_group!` and `criterion_main!` expand to, without the undocumented public
// function the first one generates.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
