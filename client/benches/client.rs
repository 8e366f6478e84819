//! What a payer's SDK costs per call: signing the authorisation and checking a JSON
//! answer's receipt (both signatures, digests, usage, the fee re-metered), on a
//! MiniLM-shaped embeddings answer. `cargo bench -p tally-client --bench client`.
//! The Python and TypeScript SDKs' `bench` scripts compare their bindings with the same
//! operations (`tally_client::testkit::time_client_ops`).
#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use tally_client::testkit::{
    BENCH_HOST_SEED, BENCH_PAYER_SEED, TestHost, sample_config, sample_embeddings_call,
    sample_schedule,
};
use tally_client::{
    Channel, FileStore, MemoryStore, check_authorization, check_priced_json_answer,
};
use tally_protocol::{Digest, SigningKey};

fn client(c: &mut Criterion) {
    let (request, response) = sample_embeddings_call();
    let payer = SigningKey::from_seed(&BENCH_PAYER_SEED);
    let channel = Channel::open(
        SigningKey::from_seed(&BENCH_PAYER_SEED),
        sample_config(),
        MemoryStore::default(),
    )
    .unwrap();
    c.bench_function("authorize (memory state)", |b| {
        b.iter(|| channel.authorize(&request, 1_800_000_000_000).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("channel.json")).unwrap();
    let durable = Channel::open(payer, sample_config(), store).unwrap();
    c.bench_function("authorize (file state, lease 32)", |b| {
        b.iter(|| durable.authorize(&request, 1_800_000_000_000).unwrap())
    });
    let auth = channel.authorize(&request, 1_800_000_000_000).unwrap();
    let mut host = TestHost::new(&BENCH_HOST_SEED, Digest([5; 32]));
    let receipt = host
        .receipt_json(&auth, &sample_schedule(), &request, &response, 0)
        .unwrap();
    let header = tally_client::encode_hex(&receipt.encode());
    let schedule = sample_schedule();
    c.bench_function("check a JSON answer", |b| {
        b.iter(|| {
            let r =
                check_priced_json_answer(&request, Some(&header), &response, &schedule).unwrap();
            check_authorization(&r, &auth).unwrap();
        })
    });
}

criterion_group!(benches, client);
criterion_main!(benches);
