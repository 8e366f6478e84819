//! `tally bench ingest`: the aggregator end to end over HTTP against the raw ed25519
//! batch-verification rate measured in the same run.
//!
//! Receipts are generated before the clock starts (several hosts, each with its own chain,
//! many payers, the demo's models and traffic), encoded as binary submissions, and sent by
//! concurrent clients; each client owns whole hosts, so every host's chain arrives in
//! order, as a shipper sends it. The aggregator runs in this process on an ephemeral port
//! and shares the machine's cores with the clients. The same receipts go into SQLite in a
//! temporary directory and then into PostgreSQL: the server at `--pg`, or else a throwaway
//! [`ScratchPg`] with `fsync` on (as durable as SQLite's `synchronous = FULL`), stopped and
//! deleted when the run ends, however it ends.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tally_aggregator::store::PgStore;
use tally_aggregator::{Aggregator, Config, MemoryEscrow, ModelPolicy, Policy, SqliteStore, Store};
use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    Digest, MeterInput, Receipt, ReceiptId, SUBMISSION_HEADER, SignedReceipt, SigningKey,
    Submission, sign_group,
};
use tally_sandbox::Sandbox;
use tally_testkit::ScratchPg;

/// Receipts per group commit in the generated workload: about what an attestor under load
/// signs per checkpoint (`tally bench attest` reports its receipts per fsync).
pub(crate) const GROUP: usize = 16;

use crate::workload::{self, Rng};

/// What `tally bench ingest` is asked to do.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct IngestArgs {
    /// Receipts sent in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    receipts: usize,
    /// Hosts, each with its own chain.
    #[arg(long, default_value_t = 8)]
    hosts: usize,
    /// Payers spread over the hosts.
    #[arg(long, default_value_t = 64)]
    payers: usize,
    /// Receipts per POST /v1/receipts.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent HTTP clients (each owns whole hosts).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Receipts in 1000 whose fee the aggregator re-computes in the guest.
    #[arg(long, default_value_t = 10)]
    reexecute_per_mille: u32,
    /// Inclusion proofs fetched over HTTP for the latency figures.
    #[arg(long, default_value_t = 2000)]
    proofs: usize,
    /// Measure PostgreSQL at this URL (an empty database: the same receipts are sent
    /// again) instead of a throwaway server started for the run.
    #[arg(long, conflicts_with = "no_pg")]
    pg: Option<String>,
    /// Measure SQLite only (by default a throwaway PostgreSQL server is started too).
    #[arg(long)]
    no_pg: bool,
    /// Also run the workload again (SQLite) sealing every this many ms while a watcher
    /// follows the log over HTTP on the same machine, and report how long after each seal
    /// the watcher had checked it.
    #[arg(long)]
    watch_seal_ms: Option<u64>,
}

/// Where the PostgreSQL row comes from.
enum PgTarget {
    /// A server the user named.
    Url(String),
    /// A throwaway server of this run; dropping it stops the server and deletes its files.
    Scratch(ScratchPg),
    /// No PostgreSQL row, and why.
    Skipped(String),
}

impl PgTarget {
    /// The target for `args`: `--pg`, `--no-pg`, or a scratch server if one can start.
    fn pick(args: &IngestArgs) -> PgTarget {
        if let Some(url) = &args.pg {
            return PgTarget::Url(url.clone());
        }
        if args.no_pg {
            return PgTarget::Skipped("--no-pg".into());
        }
        match ScratchPg::start(true) {
            Ok(pg) => PgTarget::Scratch(pg),
            Err(e) => PgTarget::Skipped(format!(
                "no throwaway PostgreSQL server: {e}; pass --pg URL to use an existing one"
            )),
        }
    }
}

/// One request: its body, the host whose receipts it holds, and the body's SHA-256
/// (hashed before the clock runs; the host signs it with the time when it sends).
#[derive(Clone)]
struct Body {
    bytes: Vec<u8>,
    host: usize,
    digest: Digest,
}

/// The pre-generated workload: per client, its request bodies in send order.
struct Workload {
    bodies: Vec<Vec<Body>>,
    ids: Vec<ReceiptId>,
    hosts: Vec<SigningKey>,
    payers: Vec<SigningKey>,
    count: usize,
}

/// Makes `n` receipts for host `h`, round-robin over the payers, in its log's order, signed
/// in group commits of [`GROUP`].
fn host_chain(
    h: usize,
    n: usize,
    host: &SigningKey,
    payers: &[SigningKey],
    sandbox: &Sandbox,
    guest: Digest,
) -> anyhow::Result<Vec<SignedReceipt>> {
    let models = workload::models();
    let mut rng = Rng::new(0x1000 + h as u64);
    let now = workload::now_ms();
    let mut channels: HashMap<(usize, usize), (u64, u128)> = HashMap::new();
    let mut host_seq = 0u64;
    let mut frontier = CompactRange::new();
    let mut group = Vec::with_capacity(GROUP);
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        i += 1;
        let p = (h + i * 7) % payers.len();
        let m = (p + h) % models.len();
        let model = &models[m];
        let request = Digest(rng.bytes32());
        let facts = workload::facts(&mut rng, model, request, now);
        let (seq, total) = channels.get(&(p, m)).copied().unwrap_or((0, 0));
        let auth = workload::authorize(
            &payers[p],
            &host.public_key(),
            model,
            seq + 1,
            request,
            now + 3_600_000,
        );
        let metered = match sandbox.meter(&MeterInput {
            facts: facts.clone(),
            schedule: model.schedule.clone(),
            max_fee: auth.authorization.max_fee,
        }) {
            Ok(m) => m,
            // Unbillable facts (the guest refuses them): the host serves no receipt.
            Err(tally_sandbox::MeterError::Refused(_)) => continue,
            Err(e) => return Err(e).context("metering"),
        };
        let timestamp_ms = facts.started_at_ms + u64::from(facts.duration_ms);
        let receipt = Receipt {
            authorization: auth,
            facts,
            metered,
            guest,
            schedule: model.schedule.hash(),
            host_seq: host_seq + 1,
            channel_total: total + metered.fee,
            timestamp_ms,
        };
        host_seq += 1;
        channels.insert((p, m), (seq + 1, total + metered.fee));
        group.push(receipt);
        if group.len() == GROUP || out.len() + group.len() == n {
            let (_, bundles) = sign_group(host, &mut frontier, std::mem::take(&mut group))
                .map_err(|e| anyhow::anyhow!("signing a group: {e}"))?;
            out.extend(bundles);
        }
    }
    Ok(out)
}

/// Generates the receipts on every core and frames them into per-client bodies.
fn generate(args: &IngestArgs, sandbox: &Arc<Sandbox>) -> anyhow::Result<Workload> {
    let hosts: Vec<SigningKey> = (0..args.hosts)
        .map(|i| SigningKey::from_seed(&Digest::sha256(format!("bench host {i}").as_bytes()).0))
        .collect();
    let payers: Vec<SigningKey> = (0..args.payers)
        .map(|i| SigningKey::from_seed(&Digest::sha256(format!("bench payer {i}").as_bytes()).0))
        .collect();
    let guest = sandbox.guest_hash();
    let per_host = args.receipts.div_ceil(args.hosts);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chains: Vec<anyhow::Result<Vec<SignedReceipt>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (hosts, payers) = (&hosts, &payers);
                s.spawn(move || {
                    (t..hosts.len())
                        .step_by(threads)
                        .map(|h| {
                            host_chain(h, per_host, &hosts[h], payers, sandbox, guest)
                                .map(|c| (h, c))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_host: Vec<Option<anyhow::Result<Vec<SignedReceipt>>>> =
            (0..hosts.len()).map(|_| None).collect();
        for handle in handles {
            match handle.join() {
                Ok(results) => {
                    for r in results {
                        match r {
                            Ok((h, c)) => by_host[h] = Some(Ok(c)),
                            Err(e) => return vec![Err(e)],
                        }
                    }
                }
                Err(_) => return vec![Err(anyhow::anyhow!("generator thread panicked"))],
            }
        }
        by_host.into_iter().flatten().collect()
    });
    let chains = chains.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let clients = args.clients.clamp(1, args.hosts);
    let mut bodies: Vec<Vec<Body>> = vec![Vec::new(); clients];
    let mut ids = Vec::with_capacity(per_host * args.hosts);
    // Client c sends its hosts' batches interleaved: batch 0 of each, then batch 1, ...
    let chunks = per_host.div_ceil(args.batch);
    for k in 0..chunks {
        for (h, chain) in chains.iter().enumerate() {
            let Some(chunk) = chain.chunks(args.batch).nth(k) else {
                continue;
            };
            let mut body = Vec::with_capacity(chunk.len() * 1100);
            for r in chunk {
                let bytes = r.encode();
                ids.push(r.id());
                body.extend_from_slice(&u32::try_from(bytes.len())?.to_be_bytes());
                body.extend_from_slice(&bytes);
            }
            bodies[h % clients].push(Body {
                digest: Digest::sha256(&body),
                bytes: body,
                host: h,
            });
        }
    }
    Ok(Workload {
        count: ids.len(),
        bodies,
        ids,
        hosts,
        payers,
    })
}

/// The aggregator's configuration for the workload: every host registered, the demo's
/// models with the pinned guest, every payer funded; sealing only when asked.
fn config(w: &Workload, guest: Digest, args: &IngestArgs) -> (Config, MemoryEscrow) {
    let models = workload::models()
        .into_iter()
        .map(|m| {
            (
                m.id(),
                ModelPolicy {
                    guests: vec![guest],
                    schedule: m.schedule,
                },
            )
        })
        .collect();
    let policy = Policy {
        chain_id: workload::CHAIN_ID.into(),
        contract: workload::CONTRACT.into(),
        hosts: w.hosts.iter().map(SigningKey::public_key).collect(),
        models,
    };
    let mut cfg = Config::new(policy);
    cfg.reexecute_per_mille = args.reexecute_per_mille;
    cfg.max_receipts = args.batch.max(1);
    cfg.max_body_bytes = args.batch.max(1) * SignedReceipt::MAX_ENCODED_LEN + 1024;
    cfg.seal_interval = Duration::from_secs(3600);
    cfg.seal_threshold = u64::MAX;
    cfg.request_timeout = Duration::from_secs(300);
    let escrow = MemoryEscrow::new(w.payers.iter().map(|p| (p.public_key(), u128::MAX / 4)));
    (cfg, escrow)
}

/// What one store measured.
struct Measured {
    per_sec: f64,
    seal: Duration,
    proof_p50: Duration,
    proof_p99: Duration,
}

/// Sends the workload to the aggregator at `url` with its concurrent clients, each request
/// signed by its host; returns how many receipts were accepted.
async fn send(w: &Workload, url: &str, client: &reqwest::Client) -> anyhow::Result<usize> {
    let keys: Arc<Vec<SigningKey>> = Arc::new(
        w.hosts
            .iter()
            .map(|k| SigningKey::from_seed(&k.seed()))
            .collect(),
    );
    let mut tasks = Vec::new();
    for bodies in &w.bodies {
        let (client, url, bodies) = (client.clone(), format!("{url}/v1/receipts"), bodies.clone());
        let keys = Arc::clone(&keys);
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            for body in bodies {
                // Each request signed by its host, as the aggregator requires.
                let key = &keys[body.host];
                let signed = Submission {
                    host: key.public_key(),
                    timestamp_ms: workload::now_ms(),
                    body_digest: body.digest,
                }
                .sign(key);
                let resp = client
                    .post(&url)
                    .header("content-type", "application/octet-stream")
                    .header(SUBMISSION_HEADER, hex::encode(signed.encode()))
                    .body(body.bytes)
                    .send()
                    .await?;
                ensure!(resp.status().is_success(), "submission: {}", resp.status());
                let v: serde_json::Value = resp.json().await?;
                let results = v["results"].as_array().cloned().unwrap_or_default();
                accepted += results.iter().filter(|r| r["status"] == "accepted").count();
                if let Some(bad) = results.iter().find(|r| r["status"] != "accepted") {
                    bail!("not accepted: {bad}");
                }
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    Ok(accepted)
}

/// The aggregator's signing key in these runs.
fn aggregator_key() -> SigningKey {
    SigningKey::from_seed(&[0xA9; 32])
}

/// An aggregator over `store` serving its API on an ephemeral port, and a client for it.
struct Served<S: Store> {
    agg: Arc<Aggregator<S>>,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

async fn serve<S: Store>(
    store: S,
    w: &Workload,
    sandbox: &Arc<Sandbox>,
    args: &IngestArgs,
) -> anyhow::Result<Served<S>> {
    let (cfg, escrow) = config(w, sandbox.guest_hash(), args);
    let agg = Arc::new(
        Aggregator::open(
            store,
            cfg,
            aggregator_key(),
            vec![Arc::clone(sandbox)],
            Arc::new(escrow),
        )
        .await?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tally_aggregator::run(listener, Arc::clone(&agg), async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    Ok(Served {
        agg,
        url,
        stop,
        server,
        client,
    })
}

/// Serves an aggregator over `store`, sends the workload, seals, and fetches proofs.
async fn measure<S: Store>(
    store: S,
    w: &Workload,
    sandbox: &Arc<Sandbox>,
    args: &IngestArgs,
) -> anyhow::Result<Measured> {
    let Served {
        agg,
        url,
        stop,
        server,
        client,
    } = serve(store, w, sandbox, args).await?;

    let start = Instant::now();
    let accepted = send(w, &url, &client).await?;
    let elapsed = start.elapsed();
    ensure!(accepted == w.count, "{accepted} of {} accepted", w.count);

    let t = Instant::now();
    agg.seal().await?.context("nothing to seal")?;
    let seal = t.elapsed();

    let mut rng = Rng::new(99);
    let mut lat = Vec::with_capacity(args.proofs);
    for _ in 0..args.proofs {
        let id = w.ids[rng.below(w.ids.len())];
        let t = Instant::now();
        let resp = client
            .get(format!("{url}/v1/receipts/{id}/proof"))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "proof: {}", resp.status());
        let _ = resp.bytes().await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let _ = stop.send(());
    server.await??;
    Ok(Measured {
        per_sec: w.count as f64 / elapsed.as_secs_f64(),
        seal,
        proof_p50: crate::bench::percentile(&lat, 0.5),
        proof_p99: crate::bench::percentile(&lat, 0.99),
    })
}

/// What the watcher's lag measured.
struct WatchLag {
    per_sec: f64,
    seals: usize,
    p50: Duration,
    max: Duration,
    interval: Duration,
}

/// Ingest as [`measure`] does while the aggregator seals every `interval` and a watcher
/// (`tally watch`'s per-leaf work, following the HTTP API) checks each checkpoint's leaves
/// on the same machine; how long after each seal the watcher had checked it.
async fn measure_watch<S: Store>(
    store: S,
    w: &Workload,
    sandbox: &Arc<Sandbox>,
    args: &IngestArgs,
    interval: Duration,
) -> anyhow::Result<WatchLag> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Served {
        agg,
        url,
        stop,
        server,
        client,
    } = serve(store, w, sandbox, args).await?;
    let done = Arc::new(AtomicU64::new(0));
    let hosts: Vec<_> = w.hosts.iter().map(SigningKey::public_key).collect();
    let follower = tokio::spawn(crate::bench_watch::follow(
        url.clone(),
        aggregator_key().public_key(),
        crate::bench_watch::workload_registries(&hosts),
        Arc::clone(&done),
    ));
    let sending = Arc::new(AtomicBool::new(true));
    let sealer = {
        let (agg, sending) = (Arc::clone(&agg), Arc::clone(&sending));
        tokio::spawn(async move {
            let mut sealed = Vec::new();
            while sending.load(Ordering::Acquire) {
                tokio::time::sleep(interval).await;
                if let Some(b) = agg.seal().await? {
                    sealed.push((b.header.tree_size, Instant::now()));
                }
            }
            anyhow::Ok(sealed)
        })
    };
    let start = Instant::now();
    let accepted = send(w, &url, &client).await?;
    let elapsed = start.elapsed();
    sending.store(false, Ordering::Release);
    let mut sealed = sealer.await??;
    ensure!(accepted == w.count, "{accepted} of {} accepted", w.count);
    if let Some(b) = agg.seal().await? {
        sealed.push((b.header.tree_size, Instant::now()));
    }
    done.store(agg.tree_size(), Ordering::Release);
    let checked = follower.await??;
    let _ = stop.send(());
    server.await??;
    let mut lags = crate::bench_watch::lags(&sealed, &checked);
    ensure!(lags.len() == sealed.len(), "the watcher missed a seal");
    lags.sort();
    Ok(WatchLag {
        per_sec: w.count as f64 / elapsed.as_secs_f64(),
        seals: sealed.len(),
        p50: crate::bench::percentile(&lags, 0.5),
        max: lags.last().copied().unwrap_or_default(),
        interval,
    })
}

/// Raw ZIP-215 batch verification on one core, in batches shaped like a 1,000-receipt
/// submission (2,000 signatures over receipt-sized messages).
fn batch_verify_rate(w: &Workload) -> f64 {
    let msgs: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| Digest::sha256(&i.to_be_bytes()).0.repeat(30))
        .collect();
    let keys: Vec<&SigningKey> = w.hosts.iter().chain(&w.payers).collect();
    let items: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let k = keys[i % keys.len()];
            (k.public_key(), m.as_slice(), k.sign(m))
        })
        .collect();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        let _ = std::hint::black_box(tally_protocol::verify_batch(&items));
        n += items.len();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

pub(crate) fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    ensure!(args.receipts > 0 && args.hosts > 0 && args.payers > 0 && args.batch > 0);
    let sandbox = crate::guest::sandbox(None)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!(
        "generating {} receipts ({} hosts, {} payers) …",
        args.receipts, args.hosts, args.payers
    );
    let w = generate(&args, &sandbox)?;
    // Started before the clock runs, so a server that cannot start is reported up front.
    let target = PgTarget::pick(&args);
    let (pg_name, skipped) = match &target {
        PgTarget::Url(_) => ("PostgreSQL (--pg)".to_owned(), None),
        PgTarget::Scratch(_) => ("PostgreSQL (throwaway, fsync)".to_owned(), None),
        PgTarget::Skipped(why) => (String::new(), Some(why.clone())),
    };
    if let Some(why) = &skipped {
        eprintln!("PostgreSQL row skipped: {why}");
    }
    eprintln!("measuring raw ed25519 batch verification on one core …");
    let verify = batch_verify_rate(&w);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    eprintln!(
        "sending {} receipts in batches of {} with {} clients (SQLite) …",
        w.count,
        args.batch,
        w.bodies.len()
    );
    let sqlite = runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("bench.db")).await?;
        measure(store, &w, &sandbox, &args).await
    })?;
    let pg = match &target {
        PgTarget::Skipped(_) => None,
        PgTarget::Url(url) => Some(runtime.block_on(measure_pg(url, &w, &sandbox, &args))?),
        PgTarget::Scratch(server) => Some(runtime.block_on(async {
            let url = server
                .create_database("tally_bench")
                .await
                .context("creating the bench database on the throwaway PostgreSQL server")?;
            measure_pg(&url, &w, &sandbox, &args).await
        })?),
    };
    let watch = match args.watch_seal_ms {
        Some(ms) => {
            eprintln!(
                "sending them again (SQLite), sealing every {ms} ms, with a watcher following …"
            );
            let dir = tempfile::tempdir()?;
            Some(runtime.block_on(async {
                let store = SqliteStore::open(dir.path().join("watch.db")).await?;
                measure_watch(store, &w, &sandbox, &args, Duration::from_millis(ms.max(1))).await
            })?)
        }
        None => None,
    };
    drop(runtime);
    // Stops a throwaway server and deletes its directory (an early return drops it too).
    drop(target);

    // Each receipt carries two signatures (payer and host), so `cores` cores verifying
    // at the one-core batch rate bound ingest at cores · rate / 2 receipts/s.
    // A receipt costs its payer's signature and a share of its group's checkpoint's.
    let per_receipt = 1.0 + 1.0 / GROUP as f64;
    let ceiling = cores as f64 * verify / per_receipt;
    println!();
    println!(
        "tally bench ingest — {cores} cores, {} receipts, {} hosts, {} payers, batches of {}, {} clients, re-execution {}‰",
        w.count,
        args.hosts,
        args.payers,
        args.batch,
        w.bodies.len(),
        args.reexecute_per_mille
    );
    println!(
        "raw ed25519 ZIP-215 batch verification (1 core, batches of 2000): {verify:.0} signatures/s"
    );
    println!(
        "signature ceiling ({cores} cores × rate / {per_receipt:.4} signatures per receipt: the payer's, and one host checkpoint per group of {GROUP}): {ceiling:.0} receipts/s"
    );
    println!();
    println!(
        "{:<30} {:>12} {:>10} {:>12} {:>12} {:>12}",
        "store", "receipts/s", "/ ceiling", "seal ms", "proof p50 µs", "proof p99 µs"
    );
    let rows: Vec<(String, &Measured)> = std::iter::once(("SQLite".to_owned(), &sqlite))
        .chain(pg.as_ref().map(|m| (pg_name.clone(), m)))
        .collect();
    for (name, m) in &rows {
        println!(
            "{:<30} {:>12.0} {:>9.1}% {:>12.1} {:>12.1} {:>12.1}",
            name,
            m.per_sec,
            100.0 * m.per_sec / ceiling,
            m.seal.as_secs_f64() * 1e3,
            m.proof_p50.as_secs_f64() * 1e6,
            m.proof_p99.as_secs_f64() * 1e6,
        );
    }
    match (&pg, skipped) {
        (Some(m), _) => println!(
            "PostgreSQL / SQLite receipts/s: {:.2}",
            m.per_sec / sqlite.per_sec
        ),
        (None, Some(why)) => println!("PostgreSQL row skipped: {why}"),
        (None, None) => {}
    }
    println!(
        "(receipts/s: accepted over HTTP end to end; seal: one batch of all {} receipts)",
        w.count
    );
    if let Some(l) = watch {
        println!();
        println!(
            "with a watcher following (SQLite, a seal every {} ms): {:.0} receipts/s ingested; \
             {} seals, each checked by the watcher {:.0} ms (p50) / {:.0} ms (max) after it: \
             {:.2} / {:.2} of the sealing interval",
            l.interval.as_millis(),
            l.per_sec,
            l.seals,
            l.p50.as_secs_f64() * 1e3,
            l.max.as_secs_f64() * 1e3,
            l.p50.as_secs_f64() / l.interval.as_secs_f64(),
            l.max.as_secs_f64() / l.interval.as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to the empty database at `url` and measures it.
async fn measure_pg(
    url: &str,
    w: &Workload,
    sandbox: &Arc<Sandbox>,
    args: &IngestArgs,
) -> anyhow::Result<Measured> {
    eprintln!("sending the same receipts into PostgreSQL …");
    let store = PgStore::connect(url, 8)
        .await
        .context("connecting to PostgreSQL (the database must be empty)")?;
    measure(store, w, sandbox, args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(pg: Option<String>, no_pg: bool) -> IngestArgs {
        IngestArgs {
            receipts: 120,
            hosts: 2,
            payers: 4,
            batch: 40,
            clients: 2,
            reexecute_per_mille: 100,
            proofs: 10,
            pg,
            no_pg,
            watch_seal_ms: None,
        }
    }

    /// With `--watch-seal-ms`, the log is sealed as it grows and the following watcher
    /// checks every seal (the run fails if it misses one).
    #[test]
    fn a_watcher_follows_every_seal_under_ingest() {
        let mut args = small(None, true);
        args.receipts = 400;
        args.watch_seal_ms = Some(20);
        assert_eq!(run(args).unwrap(), ExitCode::SUCCESS);
    }

    /// This process's throwaway-server directories still on disk.
    fn leftovers() -> Vec<std::path::PathBuf> {
        let prefix = format!("tally-pg-{}-", std::process::id());
        std::fs::read_dir("/tmp")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn no_pg_skips_the_postgres_row_and_says_so() {
        assert!(matches!(
            PgTarget::pick(&small(None, true)),
            PgTarget::Skipped(why) if why == "--no-pg"
        ));
    }

    /// A default run measures both stores and leaves no server directory behind; a run
    /// that fails (an unreachable `--pg`) fails with the reason.
    #[test]
    fn default_run_measures_both_stores_and_cleans_up() {
        assert!(matches!(
            PgTarget::pick(&small(None, false)),
            PgTarget::Scratch(_)
        ));
        assert_eq!(leftovers(), Vec::<std::path::PathBuf>::new());
        assert_eq!(run(small(None, false)).unwrap(), ExitCode::SUCCESS);
        assert_eq!(leftovers(), Vec::<std::path::PathBuf>::new());
        let err = run(small(
            Some("postgres://nobody@127.0.0.1:1/none".into()),
            false,
        ))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("connecting to PostgreSQL"),
            "{err:#}"
        );
    }
}
