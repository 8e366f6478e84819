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
use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use tally_aggregator::{Aggregator, SqliteStore, router};
use tally_protocol::{Digest, SignedReceipt, SigningKey};
use tokio::runtime::Runtime;
use tower::ServiceExt;

#[allow(dead_code, reason = "the benches use part of the tests' fixtures")]
#[path = "../tests/aggregator/fixtures/mod.rs"]
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
    seal_1m_sqlite(&rt, &mut group);
    seal_1m_pg(&rt, &mut group);
    group.finish();
}

/// Bump when the cached million-receipt database's generation changes (the schema's
/// migrations are part of the cache key on their own).
const SEAL_DB_VERSION: u32 = 1;
/// Leaves in the big seal bench.
const SEAL_LEAVES: usize = 1_000_000;
/// Payers in the big seal bench; with two hosts and two models, about 1,000 channels.
const SEAL_PAYERS: usize = 256;

/// A world of `SEAL_PAYERS` payers (the fixtures' first three keys kept, so the poor
/// payer stays the poor one) and the fixtures' hosts.
fn seal_world() -> World {
    let mut world = World::new();
    world.payers.extend(
        (world.payers.len()..SEAL_PAYERS).map(|i| {
            SigningKey::from_seed(&Digest::sha256(format!("seal payer {i}").as_bytes()).0)
        }),
    );
    world
}

/// The channel of the `i`-th receipt: every funded payer × both registered hosts × both
/// models, round-robin.
fn seal_channel(i: usize) -> (usize, usize, usize) {
    let funded: usize = SEAL_PAYERS - 1;
    let k = i % (funded * 4);
    let payer = k / 4;
    let payer = if payer >= fixtures::POOR_PAYER {
        payer + 1
    } else {
        payer
    };
    (payer, k % 2, (k / 2) % 2)
}

/// The SQLite config of the big seal bench: no re-execution (sampling does not change
/// what is stored), no automatic seal.
fn seal_config(world: &World) -> tally_aggregator::Config {
    let mut cfg = config(world);
    cfg.reexecute_per_mille = 0;
    cfg.max_receipts = 10_000;
    cfg.seal_threshold = u64::MAX;
    cfg.seal_interval = Duration::from_secs(1 << 30);
    cfg
}

/// Sends `SEAL_LEAVES` honest receipts to `agg` in submissions of 1,000, generated on a
/// thread of their own while the previous submission is ingested; checks every one was
/// accepted and nothing was sealed.
fn ingest_million<S: tally_aggregator::Store>(rt: &Runtime, agg: &Arc<Aggregator<S>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<_>>(4);
    let generator = std::thread::spawn(move || {
        let mut world = seal_world();
        let mut i = 0usize;
        while i < SEAL_LEAVES {
            let batch: Vec<_> = (i..(i + 1000).min(SEAL_LEAVES))
                .map(|j| {
                    let (p, h, m) = seal_channel(j);
                    Ok(world.call(p, h, m))
                })
                .collect();
            i += batch.len();
            if tx.send(batch).is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut accepted = 0usize;
    for batch in rx {
        let outcomes = rt.block_on(agg.submit(batch)).unwrap();
        for o in &outcomes {
            assert!(
                matches!(o, tally_aggregator::Outcome::Accepted { .. }),
                "{o:?}"
            );
        }
        accepted += outcomes.len();
        if accepted.is_multiple_of(100_000) {
            eprintln!(
                "  {accepted} receipts generated and ingested in {:.0} s",
                start.elapsed().as_secs_f64()
            );
        }
    }
    generator.join().unwrap();
    assert_eq!(accepted, SEAL_LEAVES);
    assert_eq!(agg.tree_size(), SEAL_LEAVES as u64);
}

/// The cached SQLite database holding `SEAL_LEAVES` accepted, unsealed receipts under
/// `target/tally-bench/`, built through [`Aggregator::submit`] on first use. Its name
/// carries [`SEAL_DB_VERSION`] and a hash of the SQLite migrations.
fn sealing_db(rt: &Runtime) -> std::path::PathBuf {
    let root = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut schema = Vec::new();
    for f in files {
        schema.extend(std::fs::read(f).unwrap());
    }
    let key = Digest::sha256(&schema).to_string();
    let dir = root.join("tally-bench");
    let path = dir.join(format!(
        "seal-{SEAL_LEAVES}-v{SEAL_DB_VERSION}-{}.sqlite",
        &key[..12]
    ));
    if path.is_file() {
        return path;
    }
    let building = dir.join(format!("building-{}", std::process::id()));
    std::fs::create_dir_all(&building).unwrap();
    eprintln!(
        "seal bench: building {} ({SEAL_LEAVES} receipts, ~{} channels) …",
        path.display(),
        (SEAL_PAYERS - 1) * 4
    );
    let start = Instant::now();
    let world = seal_world();
    let agg = rt.block_on(open_at(&building, &world, seal_config(&world)));
    ingest_million(rt, &agg);
    let store = agg.store().clone();
    drop(agg);
    rt.block_on(store.close());
    eprintln!(
        "seal bench: built in {:.0} s (generation and ingest overlapped)",
        start.elapsed().as_secs_f64()
    );
    let wal = building.join("log.sqlite-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "{} was not checkpointed into the database",
        wal.display()
    );
    std::fs::rename(building.join("log.sqlite"), &path).unwrap();
    let _ = std::fs::remove_dir_all(&building);
    path
}

/// `Aggregator::seal` over a fresh copy of the cached million-leaf SQLite log (the copy
/// and the aggregator's open are setup, not measured).
fn seal_1m_sqlite(
    rt: &Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    let db = sealing_db(rt);
    let world = seal_world();
    // One iteration per sample: each one copies a database of a gigabyte or more.
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    group.bench_function("sqlite_1m_leaves", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                std::fs::copy(&db, dir.path().join("log.sqlite")).unwrap();
                let agg = rt.block_on(open_at(dir.path(), &world, seal_config(&world)));
                assert_eq!(agg.tree_size(), SEAL_LEAVES as u64);
                (dir, agg)
            },
            |(dir, agg)| {
                let header = rt.block_on(agg.seal()).unwrap().unwrap();
                assert_eq!(header.header.tree_size, SEAL_LEAVES as u64);
                (dir, agg, header)
            },
            BatchSize::PerIteration,
        );
    });
}

/// `Aggregator::seal` over a fresh copy (`CREATE DATABASE … TEMPLATE`, setup, not
/// measured) of a PostgreSQL database holding a million accepted, unsealed receipts. The
/// scratch server lives only as long as this process, so the source database is ingested
/// once per bench run (its time is printed); copies are dropped after each sample.
fn seal_1m_pg(
    rt: &Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    let world = seal_world();
    let src = rt.block_on(fixtures::pg::fresh_db());
    eprintln!("seal bench: ingesting {SEAL_LEAVES} receipts into PostgreSQL (not cached) …");
    let start = Instant::now();
    let agg = rt.block_on(open_with::<Pg>(&src.url, &world, seal_config(&world)));
    ingest_million(rt, &agg);
    let store = agg.store().clone();
    drop(agg);
    rt.block_on(<Pg as Backend>::close(&store));
    drop(store);
    eprintln!(
        "seal bench: PostgreSQL source built in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    let mut n = 0u64;
    group.bench_function("pg_1m_leaves", |b| {
        b.iter_batched(
            || {
                n += 1;
                rt.block_on(async {
                    let copy = fixtures::pg::copy_db(&src, n).await;
                    let agg = open_with::<Pg>(&copy.url, &world, seal_config(&world)).await;
                    assert_eq!(agg.tree_size(), SEAL_LEAVES as u64);
                    (copy, agg)
                })
            },
            |(copy, agg)| {
                let header = rt.block_on(agg.seal()).unwrap().unwrap();
                assert_eq!(header.header.tree_size, SEAL_LEAVES as u64);
                // Dropped after timing, in this order: the pool, then the database.
                (agg, header, copy)
            },
            BatchSize::PerIteration,
        );
    });
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
