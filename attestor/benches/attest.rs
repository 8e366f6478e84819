//! Attestation throughput on one core, every receipt durable (group commit, fsync on the
//! machine's disk): one call in flight (latency, one fsync per receipt) and 64 in flight
//! (group commit shares each fsync). In the same run, the costs one call is made of (payer
//! signature check, one sandbox call, host signature) so the ratios can be read off.
//!
//! Run on one core: `taskset -c 0 cargo bench -p tally-attestor --bench attest`. The tokio
//! runtime is single-threaded; the journal writer is its own thread, mostly waiting in fsync.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_protocol::{
    Authorization, Digest, FinishStatus, MeterInput, PriceSchedule, SignedAuthorization,
    SigningKey, UsageFacts,
};
use tally_sandbox::{Sandbox, SandboxConfig};

const NOW: u64 = 1_700_000_000_000;

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[200; 32])
}

fn model() -> Digest {
    Digest::sha256(b"model: bench")
}

fn schedule() -> PriceSchedule {
    tally_testkit::two_tier_schedule(model())
}

/// Call `seq` on the channel of payer `payer`.
fn call(payer: &SigningKey, seq: u64) -> (SignedAuthorization, UsageFacts) {
    let request_digest = Digest::sha256(&seq.to_be_bytes());
    let auth = Authorization {
        chain_id: "tally-devnet-1".into(),
        contract: "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr".into(),
        payer: payer.public_key(),
        host: host_key().public_key(),
        model: model(),
        seq,
        request_digest,
        max_fee: 1_000_000_000,
        cumulative_cap: u128::MAX,
        expires_at_ms: u64::MAX,
    }
    .sign(payer);
    let facts = UsageFacts {
        model: model(),
        request_digest,
        response_digest: Digest::sha256(b"an answer"),
        prompt_tokens: 1_200 + seq % 1000,
        cached_prompt_tokens: 300,
        completion_tokens: 350,
        reasoning_tokens: 0,
        started_at_ms: NOW - 2_000,
        first_token_ms: 150,
        duration_ms: 1_900,
        finish: FinishStatus::Stop,
    };
    (auth, facts)
}

/// Attests `calls` calls with `in_flight` tasks (one channel each) on a fresh journal and
/// returns the time they took, from the first call to the last durable receipt.
fn run(
    rt: &tokio::runtime::Runtime,
    sandbox: &Arc<Sandbox>,
    calls: u64,
    in_flight: u64,
    group_commit: GroupCommit,
    stats: &mut (u64, u64),
) -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = AttestorConfig {
        chain_id: "tally-devnet-1".into(),
        contract: "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr".into(),
        journal_path: dir.path().join("journal"),
        group_commit,
        schedules: vec![schedule()],
    };
    let attestor = Arc::new(
        rt.block_on(Attestor::open(config, host_key(), Arc::clone(sandbox)))
            .unwrap(),
    );
    // Payers sign outside the measurement.
    let per_task = calls.div_ceil(in_flight);
    let work: Vec<Vec<_>> = (0..in_flight)
        .map(|t| {
            let payer = SigningKey::from_seed(&[1 + t as u8; 32]);
            (1..=per_task).map(|seq| call(&payer, seq)).collect()
        })
        .collect();

    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for calls in work {
            let attestor = Arc::clone(&attestor);
            tasks.spawn(async move {
                for (auth, facts) in calls {
                    attestor.attest_at(&auth, &facts, NOW).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    let elapsed = start.elapsed();
    let s = attestor.journal_stats();
    stats.0 += s.records;
    stats.1 += s.batches;
    elapsed.mul_f64(calls as f64 / (per_task * in_flight) as f64)
}

fn bench(c: &mut Criterion) {
    let sandbox = Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("attest");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    let no_delay = GroupCommit::default();
    let delay_1ms = GroupCommit {
        max_delay: Duration::from_millis(1),
        ..no_delay
    };
    for (in_flight, gc, label) in [
        (1, no_delay, "no delay"),
        (64, no_delay, "no delay"),
        (64, delay_1ms, "max_delay 1 ms"),
    ] {
        let mut stats = (0, 0);
        g.bench_function(format!("durable, {in_flight} in flight, {label}"), |b| {
            b.iter_custom(|iters| run(&rt, &sandbox, iters, in_flight, gc, &mut stats));
        });
        eprintln!(
            "  {in_flight} in flight, {label}: {:.1} receipts per fsync",
            stats.0 as f64 / stats.1.max(1) as f64
        );
    }

    // What one call costs, part by part.
    let payer = SigningKey::from_seed(&[1; 32]);
    let (auth, facts) = call(&payer, 1);
    g.bench_function("part: payer signature check", |b| {
        b.iter(|| black_box(&auth).verify().unwrap());
    });
    let input = MeterInput {
        facts: facts.clone(),
        schedule: schedule(),
        max_fee: auth.authorization.max_fee,
    };
    g.bench_function("part: sandbox meter", |b| {
        b.iter(|| sandbox.meter(black_box(&input)).unwrap());
    });
    let host = host_key();
    let body = vec![7u8; 650]; // About a receipt body's size.
    g.bench_function("part: host signature", |b| {
        b.iter(|| host.sign(black_box(&body)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
