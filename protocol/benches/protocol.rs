//! Encoding, hashing and signature costs of one receipt (issue goal: encode + hash ≤ 1 µs).
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    Authorization, Digest, FinishStatus, Metered, Receipt, SignedReceipt, SigningKey, UsageFacts,
    sign_group, verify_receipts,
};

fn receipt(seq: u64) -> Receipt {
    let payer = SigningKey::from_seed(&[1; 32]);
    let host = SigningKey::from_seed(&[2; 32]);
    let model = Digest::sha256(b"model");
    let request = Digest::sha256(&seq.to_be_bytes());
    let auth = Authorization {
        chain_id: "tally-devnet-1".into(),
        contract: "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr".into(),
        payer: payer.public_key(),
        host: host.public_key(),
        model,
        seq,
        request_digest: request,
        max_fee: 1_000_000,
        cumulative_cap: u128::MAX,
        expires_at_ms: u64::MAX,
    }
    .sign(&payer);
    Receipt {
        authorization: auth,
        facts: UsageFacts {
            model,
            request_digest: request,
            response_digest: Digest::sha256(b"response"),
            prompt_tokens: 1200,
            cached_prompt_tokens: 0,
            completion_tokens: 300,
            reasoning_tokens: 0,
            started_at_ms: 1,
            first_token_ms: 10,
            duration_ms: 100,
            finish: FinishStatus::Stop,
        },
        metered: Metered {
            units: 1500,
            fee: 3000,
        },
        guest: Digest::sha256(b"guest"),
        schedule: Digest::sha256(b"schedule"),
        host_seq: seq,
        channel_total: 3000 * u128::from(seq),
        timestamp_ms: 2,
    }
}

/// Receipts `1..=n` of one host signed in group commits of `group` receipts.
fn signed(n: u64, group: u64) -> Vec<SignedReceipt> {
    let host = SigningKey::from_seed(&[2; 32]);
    let mut frontier = CompactRange::new();
    let mut out = Vec::new();
    let mut next = 1;
    while next <= n {
        let end = (next + group).min(n + 1);
        let (_, b) = sign_group(&host, &mut frontier, (next..end).map(receipt).collect()).unwrap();
        out.extend(b);
        next = end;
    }
    out
}

fn bench(c: &mut Criterion) {
    let r = signed(16, 16).pop().unwrap();
    let bytes = r.encode();
    let mut g = c.benchmark_group("receipt");
    g.bench_function("encode+id", |b| b.iter(|| black_box(&r).id()));
    g.bench_function("encode signed", |b| b.iter(|| black_box(&r).encode()));
    g.bench_function("decode signed", |b| {
        b.iter(|| SignedReceipt::decode(black_box(&bytes)).unwrap())
    });
    g.bench_function("verify (inclusion + 2 signatures)", |b| {
        b.iter(|| black_box(&r).verify().unwrap())
    });
    g.throughput(criterion::Throughput::Elements(256));
    for group in [1u64, 16] {
        let many = signed(256, group);
        g.bench_function(
            format!("verify_receipts batch of 256, groups of {group}"),
            |b| b.iter(|| verify_receipts(black_box(&many))),
        );
    }
    let host = SigningKey::from_seed(&[2; 32]);
    let group: Vec<Receipt> = (1..=16).map(receipt).collect();
    g.throughput(criterion::Throughput::Elements(16));
    g.bench_function("sign_group of 16", |b| {
        b.iter(|| sign_group(&host, &mut CompactRange::new(), black_box(group.clone())).unwrap())
    });
    g.finish();
    let key = SigningKey::from_seed(&[3; 32]);
    let body = r.receipt.encode();
    c.bench_function("raw ed25519 sign (receipt body)", |b| {
        b.iter(|| key.sign(black_box(&body)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
