//! Encoding, hashing and signature costs of one receipt (issue goal: encode + hash ≤ 1 µs).
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use tally_protocol::{
    Authorization, Digest, FinishStatus, Metered, Receipt, SignedReceipt, SigningKey, UsageFacts,
    verify_receipts,
};

fn receipt(seq: u64) -> SignedReceipt {
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
        prev_receipt: if seq == 1 {
            Digest::ZERO
        } else {
            Digest([7; 32])
        },
        channel_total: 3000 * u128::from(seq),
        timestamp_ms: 2,
    }
    .sign(&host)
}

fn bench(c: &mut Criterion) {
    let r = receipt(1);
    let bytes = r.encode();
    let mut g = c.benchmark_group("receipt");
    g.bench_function("encode+id", |b| b.iter(|| black_box(&r).id()));
    g.bench_function("encode signed", |b| b.iter(|| black_box(&r).encode()));
    g.bench_function("decode signed", |b| {
        b.iter(|| SignedReceipt::decode(black_box(&bytes)).unwrap())
    });
    g.bench_function("verify (2 signatures)", |b| {
        b.iter(|| black_box(&r).verify().unwrap())
    });
    let many: Vec<SignedReceipt> = (1..=256).map(receipt).collect();
    g.throughput(criterion::Throughput::Elements(256));
    g.bench_function("verify_receipts batch of 256", |b| {
        b.iter(|| verify_receipts(black_box(&many)))
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
