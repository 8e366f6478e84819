//! Criterion benches of the aggregator: ingest of 1,000-receipt submissions into SQLite and
//! into PostgreSQL (a throwaway server with `fsync` on, or `TALLY_TEST_PG_URL`), and over
//! SQLite sealing and inclusion proofs (through the core and through the HTTP router).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benches fail loudly"
)]
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_aggregator::{Aggregator, SqliteStore, router};
use tally_protocol::SignedReceipt;
use tokio::runtime::Runtime;
use tower::ServiceExt;

#[allow(dead_code, reason = "the benches use part of the tests' fixtures")]
#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use fixtures::{Backend, Pg, Sqlite, World, config, open_at, open_with};

/// A fresh aggregator in `dir`; `per_mille` of receipts re-executed.
fn aggregator(
    rt: &Runtime,
    dir: &std::path::Path,
    world: &World,
    per_mille: u32,
) -> Arc<Aggregator<SqliteStore>> {
    let mut cfg = config(world);
    cfg.reexecute_per_mille = per_mille;
    cfg.max_receipts = 10_000;
    rt.block_on(open_at(dir, world, cfg))
}

/// A fresh aggregator over a fresh `B` store; `per_mille` of receipts re-executed.
fn aggregator_on<B: Backend>(
    rt: &Runtime,
    world: &World,
    per_mille: u32,
) -> (Arc<Aggregator<B::Store>>, fixtures::Place) {
    let mut cfg = config(world);
    cfg.reexecute_per_mille = per_mille;
    cfg.max_receipts = 10_000;
    rt.block_on(async {
        let place = B::place().await;
        let agg = open_with::<B>(&place.locator(), world, cfg).await;
        (agg, place)
    })
}

/// The next `n` honest receipts, spread over two hosts and channels.
fn receipts(world: &mut World, n: usize) -> Vec<Result<SignedReceipt, tally_aggregator::Reason>> {
    (0..n)
        .map(|i| Ok(world.call(i % 2, (i / 2) % 2, i % 2)))
        .collect()
}

fn ingest(c: &mut Criterion) {
    fixtures::pg::durable();
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1000));
    for per_mille in [0u32, 1000] {
        ingest_into::<Sqlite>(&rt, &mut group, per_mille);
        ingest_into::<Pg>(&rt, &mut group, per_mille);
    }
    group.finish();
}

/// Submissions of 1,000 fresh receipts into a fresh `B` store.
fn ingest_into<B: Backend>(
    rt: &Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    per_mille: u32,
) {
    let mut world = World::new();
    let (agg, _place) = aggregator_on::<B>(rt, &world, per_mille);
    group.bench_function(
        BenchmarkId::new(
            format!("{}_submit_1000_reexec_per_mille", B::NAME),
            per_mille,
        ),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = receipts(&mut world, 1000);
                    let start = Instant::now();
                    rt.block_on(agg.submit(batch)).unwrap();
                    total += start.elapsed();
                }
                total
            });
        },
    );
}

fn seal(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::new();
    let agg = aggregator(&rt, dir.path(), &world, 0);
    let mut group = c.benchmark_group("seal");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("after_1000_receipts", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(agg.submit(receipts(&mut world, 1000))).unwrap();
                let start = Instant::now();
                rt.block_on(agg.seal()).unwrap().unwrap();
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn proofs(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::new();
    let agg = aggregator(&rt, dir.path(), &world, 0);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let batch = receipts(&mut world, 1000);
        ids.extend(batch.iter().map(|r| r.as_ref().unwrap().id()));
        rt.block_on(agg.submit(batch)).unwrap();
    }
    rt.block_on(agg.seal()).unwrap().unwrap();
    let app = router(Arc::clone(&agg));
    let mut group = c.benchmark_group("inclusion_proof");
    let mut i = 0usize;
    group.bench_function("core_20000", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            rt.block_on(agg.inclusion(&ids[i], None)).unwrap()
        });
    });
    group.bench_function("http_20000", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            let req = Request::get(format!("/v1/receipts/{}/proof", ids[i]))
                .body(Body::empty())
                .unwrap();
            let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        });
    });
    group.finish();
}

criterion_group!(benches, ingest, seal, proofs);
criterion_main!(benches);
