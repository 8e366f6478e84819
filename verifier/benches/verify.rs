//! Verification throughput on one core: receipts/s with every fee re-executed in wasmtime,
//! with sampling, and signatures only; and, in the same run, the costs they are made of
//! (one raw ed25519 verify, one sandbox call, batch sizes) so the ratios can be read off.
//! Goal (issue): at least 50,000 receipts/s per core including re-execution.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use tally_protocol::{
    Authorization, Digest, FinishStatus, MeterInput, PriceSchedule, PriceTier, Receipt,
    SignedReceipt, SigningKey, UsageFacts, verify_receipts,
};
use tally_sandbox::{PINNED_HASH, Sandbox, SandboxConfig};
use tally_verifier::{ChainStart, Reexecute, Verifier, VerifierConfig};

/// Receipts per measured stream.
const N: usize = 8192;
const HOSTS: usize = 8;
const PAYERS: usize = 512;

fn schedule() -> PriceSchedule {
    PriceSchedule {
        model: Digest::sha256(b"bench model"),
        min_fee: 1,
        tiers: vec![
            PriceTier {
                from_prompt_tokens: 0,
                prompt_per_mtok: 1_250_000,
                cached_per_mtok: 125_000,
                completion_per_mtok: 10_000_000,
            },
            PriceTier {
                from_prompt_tokens: 128_000,
                prompt_per_mtok: 2_500_000,
                cached_per_mtok: 250_000,
                completion_per_mtok: 15_000_000,
            },
        ],
    }
}

fn sandbox() -> (Arc<Sandbox>, Digest) {
    let sandbox = Sandbox::pinned(SandboxConfig::default()).unwrap();
    (Arc::new(sandbox), PINNED_HASH)
}

/// An honest stream of `N` receipts: `HOSTS` hosts, `PAYERS` payers, one model.
fn stream(guest: Digest) -> Vec<SignedReceipt> {
    let schedule = schedule();
    let payers: Vec<SigningKey> = (0..PAYERS)
        .map(|i| SigningKey::from_seed(&Digest::sha256(format!("payer {i}").as_bytes()).0))
        .collect();
    let hosts: Vec<SigningKey> = (0..HOSTS)
        .map(|i| SigningKey::from_seed(&Digest::sha256(format!("host {i}").as_bytes()).0))
        .collect();
    // Each host signs its receipts in group commits of `GROUP` (one checkpoint each), as
    // an attestor under load does.
    const GROUP: usize = 16;
    let mut logs = vec![tally_protocol::merkle::CompactRange::new(); HOSTS];
    let mut pending: Vec<Vec<(usize, Receipt)>> = vec![Vec::new(); HOSTS];
    let mut out: Vec<Option<SignedReceipt>> = vec![None; N];
    let mut sign = |h: usize, group: Vec<(usize, Receipt)>, logs: &mut Vec<_>| {
        let (slots, rs): (Vec<usize>, Vec<Receipt>) = group.into_iter().unzip();
        let (_, bundles) = tally_protocol::sign_group(&hosts[h], &mut logs[h], rs).unwrap();
        for (slot, b) in slots.into_iter().zip(bundles) {
            out[slot] = Some(b);
        }
    };
    let mut channels = std::collections::HashMap::new();
    for n in 0..N as u64 {
        {
            let (p, h) = ((n as usize * 7) % PAYERS, n as usize % HOSTS);
            let (seq, total) = channels.get(&(p, h)).copied().unwrap_or((0u64, 0u128));
            let request_digest = Digest::sha256(&n.to_be_bytes());
            let prompt = 200 + (n * 37) % 4_000;
            let facts = UsageFacts {
                model: schedule.model,
                request_digest,
                response_digest: Digest::sha256(&(!n).to_be_bytes()),
                prompt_tokens: prompt,
                cached_prompt_tokens: prompt / 3,
                completion_tokens: 20 + (n * 13) % 900,
                reasoning_tokens: 0,
                started_at_ms: 1_760_000_000_000 + n,
                first_token_ms: 100,
                duration_ms: 800,
                finish: FinishStatus::Stop,
            };
            let metered = tally_guest::meter(&MeterInput {
                facts: facts.clone(),
                schedule: schedule.clone(),
                max_fee: 1_000_000_000,
            })
            .unwrap();
            let authorization = Authorization {
                chain_id: "tally-bench-1".into(),
                contract: "tally1benchcontract0000000000000000000000000000000000000000".into(),
                payer: payers[p].public_key(),
                host: hosts[h].public_key(),
                model: schedule.model,
                seq: seq + 1,
                request_digest,
                max_fee: 1_000_000_000,
                cumulative_cap: total + 1_000_000_000,
                expires_at_ms: u64::MAX,
            }
            .sign(&payers[p]);
            let host_seq = logs[h].size() + pending[h].len() as u64;
            let r = Receipt {
                authorization,
                facts,
                metered,
                guest,
                schedule: schedule.hash(),
                host_seq: host_seq + 1,
                channel_total: total + metered.fee,
                timestamp_ms: 1_760_000_001_000 + n,
            };
            channels.insert((p, h), (seq + 1, total + metered.fee));
            pending[h].push((n as usize, r));
            if pending[h].len() == GROUP {
                sign(h, std::mem::take(&mut pending[h]), &mut logs);
            }
        }
    }
    for (h, group) in pending.into_iter().enumerate() {
        if !group.is_empty() {
            sign(h, group, &mut logs);
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn bench(c: &mut Criterion) {
    let (sandbox, guest) = sandbox();
    let receipts = stream(guest);
    let config = |reexecute| VerifierConfig {
        guests: vec![sandbox.clone()],
        schedules: vec![schedule()],
        reexecute,
        chain_start: ChainStart::Genesis,
    };
    // The stream is clean: a bench of failures would measure the wrong thing.
    let mut check = Verifier::new(config(Reexecute::All));
    assert!(check.push(&receipts).is_empty());

    let mut g = c.benchmark_group("verifier");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(N as u64));
    for (name, reexecute) in [
        ("reexecute all", Reexecute::All),
        (
            "reexecute 1 in 100",
            Reexecute::Sample {
                per_mille: 10,
                salt: 7,
            },
        ),
        ("signatures, chains, totals only", Reexecute::None),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Verifier::new(config(reexecute)),
                |mut v| {
                    let findings = v.push(black_box(&receipts));
                    assert!(findings.is_empty());
                    v
                },
                BatchSize::LargeInput,
            )
        });
    }
    for chunk in [256, 1024, Verifier::BATCH, 4096, 8192] {
        g.bench_function(format!("verify_receipts in chunks of {chunk}"), |b| {
            b.iter(|| {
                for c in receipts.chunks(chunk) {
                    black_box(verify_receipts(black_box(c)));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("per call");
    g.throughput(Throughput::Elements(1));
    let r = &receipts[0];
    let body = r.checkpoint_body();
    let host = *r.receipt.host();
    g.bench_function("raw ed25519 verify (ZIP-215, single)", |b| {
        b.iter(|| {
            host.verify(black_box(&body), black_box(&r.checkpoint.signature))
                .unwrap()
        })
    });
    g.bench_function(
        "SignedReceipt::verify (rules, inclusion, 2 single verifies)",
        |b| b.iter(|| black_box(r).verify().unwrap()),
    );
    g.bench_function("receipt id (encode + SHA-256)", |b| {
        b.iter(|| black_box(r).id())
    });
    let input = MeterInput {
        facts: r.receipt.facts.clone(),
        schedule: schedule(),
        max_fee: r.receipt.authorization.authorization.max_fee,
    };
    g.bench_function("sandbox meter (fresh wasmtime instance)", |b| {
        b.iter(|| sandbox.meter(black_box(&input)).unwrap())
    });
    g.bench_function("native tally_guest::meter", |b| {
        b.iter(|| tally_guest::meter(black_box(&input)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
