//! `tally bench`: throughput and latency against the limits measured in the same run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_protocol::merkle::{CompactRange, leaf_hash};
use tally_protocol::{
    Digest, GroupProver, HostCheckpoint, MeterInput, Receipt, SignedAuthorization, SignedReceipt,
    SigningKey, UsageFacts,
};

use crate::workload::{self, Rng};

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// The attestor on one core: raw ed25519 signs/s, attested receipts/s (fresh guest
    /// instance per call, journal with group commit: one host signature per group), the
    /// floors they are held to (v2: batched payer verify + meter + hashing; v1's, with a
    /// signature per receipt, beside it), and attest latency.
    Attest {
        /// Calls attested in the throughput run.
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// Concurrent calls in flight in the throughput run.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Sequential calls in the latency run.
        #[arg(long, default_value_t = 3_000)]
        latency_calls: usize,
    },
    /// The aggregator over HTTP on this machine: raw ed25519 batch-verify rate, receipts/s
    /// accepted into SQLite and PostgreSQL (a throwaway server unless --pg or --no-pg),
    /// their ratios, seal time and
    /// inclusion-proof latency.
    Ingest(crate::bench_ingest::IngestArgs),
    /// The metering proxy against an instant local upstream: requests/s and p50/p99
    /// latency direct vs through the proxy (pass-through and metered), with ratios.
    Proxy(crate::bench_proxy::ProxyBenchArgs),
    /// What floods of junk submissions (unsigned, forged, a host's own) cost a `tally
    /// serve` process in CPU time, optionally against a baseline build.
    Flood(crate::bench_flood::FloodArgs),
    /// Settlement on the devnet in SDK gas as a wasmd chain charges it: SubmitBatch and
    /// Finalize at several batch sizes (steady state), a challenge and a claim, the floor
    /// of one channel, and the cost of a day's traffic at a stated gas price.
    Settle(crate::bench_settle::SettleArgs),
    /// The real audit of a deployment's data (`tally demo --keep DIR`) on one verifier
    /// thread, beside its floor (batched payer verify + a host checkpoint per group +
    /// re-execution + hashing) and version 1's floor (two signatures per receipt).
    Audit(crate::bench_audit::AuditBenchArgs),
    /// The watcher's checking rate on one core over a deployment's data (`tally demo
    /// --keep DIR`), beside the batched ZIP-215 rate of its signatures (two per receipt),
    /// and the share of a sealing interval it needs at a given ingest rate.
    Watch(crate::bench_watch::WatchBenchArgs),
}

pub(crate) fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Attest {
            calls,
            concurrency,
            latency_calls,
        } => attest(calls, concurrency, latency_calls),
        BenchCommand::Ingest(args) => crate::bench_ingest::run(args),
        BenchCommand::Proxy(args) => crate::bench_proxy::run(args),
        BenchCommand::Flood(args) => crate::bench_flood::run(args),
        BenchCommand::Settle(args) => crate::bench_settle::run(args),
        BenchCommand::Audit(args) => crate::bench_audit::run(args),
        BenchCommand::Watch(args) => crate::bench_watch::run(args),
    }
}

/// Runs `f` repeatedly for about `time` and returns operations per second.
pub(crate) fn rate(time: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Call {
    auth: SignedAuthorization,
    facts: UsageFacts,
}

/// Pre-signed calls (payers sign on their side, not the host's): `channels` payers on one
/// host, round-robin.
fn calls(n: usize, host: &SigningKey, payers: &[SigningKey], seed: u64) -> Vec<Call> {
    let models = workload::models();
    let mut rng = Rng::new(seed);
    let mut seqs = vec![0u64; payers.len()];
    let now = workload::now_ms();
    (0..n)
        .map(|i| {
            let p = i % payers.len();
            seqs[p] += 1;
            let model = &models[p % models.len()];
            let request = Digest(rng.bytes32());
            let facts = workload::facts(&mut rng, model, request, now);
            let auth = workload::authorize(
                &payers[p],
                &host.public_key(),
                model,
                seqs[p],
                request,
                now + 3_600_000,
            );
            Call { auth, facts }
        })
        .collect()
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn attest(n: usize, concurrency: usize, latency_calls: usize) -> anyhow::Result<ExitCode> {
    let dir = tempfile_dir()?;
    let host = SigningKey::from_seed(&[0x42; 32]);
    let payers: Vec<SigningKey> = (0..256u32)
        .map(|i| SigningKey::from_seed(&Digest::sha256(&i.to_be_bytes()).0))
        .collect();
    let sandbox = crate::guest::sandbox(None)?;
    let models = workload::models();
    let schedules: Vec<_> = models.iter().map(|m| m.schedule.clone()).collect();

    eprintln!("measuring raw limits on one core …");
    let body = vec![0x5au8; 820];
    let sign_rate = rate(Duration::from_secs(1), || {
        std::hint::black_box(host.sign(std::hint::black_box(&body)));
    });
    let sig = host.sign(&body);
    let verify_rate = rate(Duration::from_secs(1), || {
        let _ = std::hint::black_box(host.public_key().verify(&body, &sig));
    });
    let batch_msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 480]).collect();
    let batch_items: Vec<_> = payers
        .iter()
        .zip(&batch_msgs)
        .map(|(k, m)| (k.public_key(), m.as_slice(), k.sign(m)))
        .collect();
    let batch_verify_rate = 64.0
        * rate(Duration::from_secs(1), || {
            let _ = std::hint::black_box(tally_protocol::verify_batch(&batch_items));
        });
    let sample = calls(1, &host, &payers, 7).remove(0);
    let input = MeterInput {
        facts: sample.facts.clone(),
        schedule: models[0].schedule.clone(),
        max_fee: sample.auth.authorization.max_fee,
    };
    let meter_rate = rate(Duration::from_secs(1), || {
        let _ = std::hint::black_box(sandbox.meter(&input));
    });
    // What a group commit hashes per receipt besides the signature: the receipt's encoding
    // and leaf hash, its place in the host log, its inclusion proof and its bundle's
    // encoding; groups of 16 deep in a log of a million receipts.
    let hash_rate = {
        let metered = sandbox.meter(&input)?;
        let base = Receipt {
            authorization: sample.auth.clone(),
            facts: sample.facts.clone(),
            metered,
            guest: sandbox.guest_hash(),
            schedule: models[0].schedule.hash(),
            host_seq: 1,
            channel_total: metered.fee,
            timestamp_ms: workload::now_ms(),
        };
        let mut deep = CompactRange::new();
        for i in 0..1_000_000u64 {
            deep.append(leaf_hash(&i.to_be_bytes()), |_, _, _| {});
        }
        let group: Vec<Receipt> = (0..16u64)
            .map(|i| Receipt {
                host_seq: deep.size() + 1 + i,
                ..base.clone()
            })
            .collect();
        let checkpoint = HostCheckpoint::sign("c", "k", &host, 1, Digest::ZERO);
        let mut frame = Vec::with_capacity(32 * 1024);
        16.0 * rate(Duration::from_secs(1), || {
            let mut prover = GroupProver::new(deep.clone());
            for r in &group {
                prover.append(leaf_hash(&r.encode()));
            }
            frame.clear();
            for r in &group {
                let proof = prover
                    .proof(r.host_seq - 1)
                    .map(|p| p.hashes)
                    .unwrap_or_default();
                let b = SignedReceipt {
                    receipt: r.clone(),
                    checkpoint,
                    proof,
                };
                let at = frame.len();
                b.encode_to(&mut frame);
                std::hint::black_box(&frame[at..]);
            }
            std::hint::black_box(&frame);
        })
    };

    eprintln!("attesting {n} calls with {concurrency} in flight on one core …");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = calls(n, &host, &payers, 1);
    let config = |name: &str| AttestorConfig {
        chain_id: workload::CHAIN_ID.into(),
        contract: workload::CONTRACT.into(),
        journal_path: dir.path().join(name),
        group_commit: GroupCommit::default(),
        schedules: schedules.clone(),
    };
    let (throughput, fsyncs) = runtime.block_on(async {
        let attestor = Arc::new(
            Attestor::open(
                config("throughput.journal"),
                SigningKey::from_seed(&host.seed()),
                Arc::clone(&sandbox),
            )
            .await?,
        );
        let work = Arc::new(work);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (attestor, work, next) =
                (Arc::clone(&attestor), Arc::clone(&work), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(call) = work.get(i) else { break };
                    attestor.attest(&call.auth, &call.facts).await?;
                }
                Ok::<_, tally_attestor::AttestError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        anyhow::Ok((n as f64 / secs, attestor.journal_stats()))
    })?;

    eprintln!("measuring latency of {latency_calls} sequential calls …");
    let work = calls(latency_calls, &host, &payers, 2);
    let mut latencies = runtime.block_on(async {
        let attestor = Attestor::open(
            config("latency.journal"),
            SigningKey::from_seed(&host.seed()),
            Arc::clone(&sandbox),
        )
        .await?;
        let mut lat = Vec::with_capacity(work.len());
        for call in &work {
            let t = Instant::now();
            attestor.attest(&call.auth, &call.facts).await?;
            lat.push(t.elapsed());
        }
        anyhow::Ok(lat)
    })?;
    latencies.sort();

    // The durable-latency floor: one 1 KiB append + fdatasync on the journal's disk.
    let mut syncs = {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("fsync.probe"))?;
        let block = [0u8; 1024];
        let mut v = Vec::with_capacity(300);
        for _ in 0..300 {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            v.push(t.elapsed());
        }
        v
    };
    syncs.sort();

    // Version 1 signed every receipt; version 2 signs once per group commit, which at load
    // is a small fraction of a signature per receipt (at low load, one, as v1).
    let v1_floor = 1.0 / (1.0 / sign_rate + 1.0 / batch_verify_rate + 1.0 / meter_rate);
    let cpu_floor = 1.0 / (1.0 / batch_verify_rate + 1.0 / meter_rate + 1.0 / hash_rate);
    println!();
    println!("tally bench attest — one core, {n} calls, {concurrency} in flight");
    println!("{:<58} {:>14}", "measure", "value");
    println!(
        "{:<58} {:>14.0}",
        "raw ed25519 signs/s (820-byte message)", sign_rate
    );
    println!(
        "{:<58} {:>14.0}",
        "raw ed25519 ZIP-215 verifies/s", verify_rate
    );
    println!(
        "{:<58} {:>14.0}",
        "raw ed25519 ZIP-215 verifies/s in batches of 64", batch_verify_rate
    );
    println!(
        "{:<58} {:>14.0}",
        "guest meter calls/s (fresh wasmtime instance each)", meter_rate
    );
    println!(
        "{:<58} {:>14.0}",
        "group-commit hashing per receipt/s (encode, leaf, proof)", hash_rate
    );
    println!(
        "{:<58} {:>14.0}",
        "old floor (v1): 1/(sign + batched payer verify + meter)", v1_floor
    );
    println!(
        "{:<58} {:>14.0}",
        "floor (v2): 1/(batched payer verify + meter + hashing)", cpu_floor
    );
    println!(
        "{:<58} {:>14.0}",
        "attested receipts/s (journal, group commit)", throughput
    );
    println!(
        "{:<58} {:>13.1}%",
        "attested / raw signs",
        100.0 * throughput / sign_rate
    );
    println!(
        "{:<58} {:>13.1}%",
        "attested / floor",
        100.0 * throughput / cpu_floor
    );
    println!(
        "{:<58} {:>13.1}%",
        "attested / old floor (v1)",
        100.0 * throughput / v1_floor
    );
    println!(
        "{:<58} {:>14.1}",
        "receipts per fsync and per host signature (throughput run)",
        fsyncs.records as f64 / fsyncs.batches.max(1) as f64
    );
    println!(
        "{:<58} {:>11.1} µs",
        "raw 1 KiB append + fdatasync p50 (durability floor)",
        percentile(&syncs, 0.5).as_secs_f64() * 1e6
    );
    println!(
        "{:<58} {:>11.1} µs",
        "attest latency p50 (sequential, durable)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e6
    );
    println!(
        "{:<58} {:>11.1} µs",
        "attest latency p99 (sequential, durable)",
        percentile(&latencies, 0.99).as_secs_f64() * 1e6
    );
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::tempdir()?)
}
