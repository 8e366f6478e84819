//! `tally bench proxy`: what the metering proxy costs in front of an upstream that answers
//! instantly — requests/s and p50/p99 latency direct vs through the proxy, in one run.
//!
//! Everything runs in one process on one two-worker runtime (client, proxy, upstream), so
//! the numbers include the client's own cost on the same cores, for both paths alike.
//!
//! Two floors put the proxy's numbers next to what any extra hop costs on the same cores:
//! a TCP relay (one more hop, no HTTP work) and a minimal HTTP forwarder on the proxy's own
//! stack (axum server, reqwest client, same runtime) with no logic at all. The proxy is
//! shown against direct and against the HTTP floor. A probe of the journal's disk shows
//! what one `fdatasync` costs there, the floor of a metered call's latency.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::post;
use axum::serve::ListenerExt;
use clap::Args;
use tally_attestor::proxy::{
    AUTHORIZATION_HEADER, FreeRoute, Proxy, ProxyConfig, RECEIPT_HEADER, ServedModel,
};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SignedAuthorization, SigningKey,
    UsageFacts,
};

use crate::bench::percentile;

#[derive(Args)]
pub(crate) struct ProxyBenchArgs {
    /// Calls per target in the throughput runs.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Concurrent connections in the throughput runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sequential calls per target in the latency runs.
    #[arg(long, default_value_t = 3_000)]
    latency_calls: usize,
    /// Concurrent connections in a second throughput run (0 skips it).
    #[arg(long, default_value_t = 128)]
    high_concurrency: usize,
}

/// The instant upstream's answer: a chat completion with usage, as vLLM would send it.
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
/// The request every call sends.
const REQUEST: &str =
    r#"{"model":"bench-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":8}"#;
const CHAIN: &str = "tally-bench-1";
const CONTRACT: &str = "tally1bench";

fn model() -> Digest {
    Digest::sha256(b"model: bench-model")
}

fn payer(i: u32) -> SigningKey {
    SigningKey::from_seed(&Digest::sha256(&i.to_be_bytes()).0)
}

use tally_protocol::now_ms;

/// Payer `payer`'s authorisation `seq` of the bench request.
fn authorization(host: &SigningKey, payer: &SigningKey, seq: u64) -> SignedAuthorization {
    Authorization {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        payer: payer.public_key(),
        host: host.public_key(),
        model: model(),
        seq,
        request_digest: Digest::sha256(REQUEST.as_bytes()),
        max_fee: 1 << 60,
        cumulative_cap: 1 << 100,
        expires_at_ms: now_ms() + 3_600_000,
    }
    .sign(payer)
}

/// Authorisations `1..=n` on payer `p`'s channel, as header values.
fn auths(host: &SigningKey, p: u32, n: usize) -> Vec<Option<String>> {
    let payer = payer(p);
    (1..=n as u64)
        .map(|seq| {
            let auth = authorization(host, &payer, seq);
            Some(tally_client::authorization_header(&auth))
        })
        .collect()
}

/// Runs one worker per list in `auths` (each sends its calls in order, one at a time) and
/// returns the calls per second and every call's latency, sorted.
async fn load(
    client: &reqwest::Client,
    url: &str,
    auths: Vec<Vec<Option<String>>>,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let calls: usize = auths.iter().map(Vec::len).sum();
    let start = Instant::now();
    let mut workers = Vec::new();
    for list in auths {
        let client = client.clone();
        let url = url.to_owned();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(list.len());
            for auth in list {
                let t = Instant::now();
                let mut req = client.post(&url).body(REQUEST);
                if let Some(auth) = &auth {
                    req = req.header(AUTHORIZATION_HEADER, auth);
                }
                let resp = req.send().await?;
                let ok = resp.status().is_success()
                    && (auth.is_none() || resp.headers().contains_key(RECEIPT_HEADER));
                let status = resp.status();
                let body = resp.bytes().await?;
                if !ok {
                    bail!("{url}: {status} {}", String::from_utf8_lossy(&body));
                }
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::with_capacity(calls);
    for w in workers {
        all.extend(w.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Ok((calls as f64 / secs, all))
}

/// One row of the table.
struct Row {
    name: &'static str,
    rps: f64,
    /// Requests/s at the higher concurrency (NaN when not run).
    high_rps: f64,
    p50: Duration,
    p99: Duration,
}

pub(crate) fn run(args: ProxyBenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: ProxyBenchArgs) -> anyhow::Result<ExitCode> {
    let c = args.concurrency.max(1);
    let per_worker = args.calls.div_ceil(c);
    let dir = tempfile::tempdir()?;
    let host = SigningKey::from_seed(&[0x42; 32]);

    // The instant upstream.
    let answer = || async { ([("content-type", "application/json")], ANSWER) };
    let app = Router::new()
        .route("/v1/chat/completions", post(answer))
        .route("/passthrough", post(answer));
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    let upstream_url = format!("http://{upstream_addr}");
    tokio::spawn(async move { axum::serve(upstream, app).await });

    // The proxy, with a real attestor (pinned guest, journal with group commit).
    let schedule = PriceSchedule {
        model: model(),
        min_fee: 1,
        tiers: vec![PriceTier {
            from_prompt_tokens: 0,
            prompt_per_mtok: 1_000_000,
            cached_per_mtok: 250_000,
            completion_per_mtok: 4_000_000,
        }],
    };
    let sandbox = crate::guest::sandbox(None)?;
    let attestor = Arc::new(
        Attestor::open(
            AttestorConfig {
                chain_id: CHAIN.into(),
                contract: CONTRACT.into(),
                journal_path: dir.path().join("journal"),
                group_commit: GroupCommit::default(),
                schedules: vec![schedule.clone()],
            },
            SigningKey::from_seed(&[0x42; 32]),
            Arc::clone(&sandbox),
        )
        .await?,
    );
    let served = vec![ServedModel {
        name: "bench-model".into(),
        id: model(),
    }];
    // The pass-through target is a free route (the proxy forwards no other).
    let mut config = ProxyConfig::new(&upstream_url, served);
    config
        .free_routes
        .push(FreeRoute::parse("POST /passthrough")?);
    let proxy = Proxy::new(config, Arc::clone(&attestor))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(tally_attestor::proxy::run(
        listener,
        Arc::new(proxy),
        std::future::pending(),
    ));

    eprintln!(
        "signing {} authorisations …",
        per_worker * c + args.latency_calls + 200
    );
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(c + 1)
        .build()?;
    let unmetered = |n: usize| vec![None; n];
    let mut metered_workers: Vec<Vec<Option<String>>> =
        (0..c as u32).map(|w| auths(&host, w, per_worker)).collect();
    let latency_auths = auths(&host, 100_000, args.latency_calls + 200);
    let (warm, latency_auths) = latency_auths.split_at(200);

    // Check one receipt end to end before measuring anything.
    let sample = client
        .post(format!("{proxy_url}/v1/chat/completions"))
        .header(
            AUTHORIZATION_HEADER,
            auths(&host, 200_000, 1)[0].clone().unwrap_or_default(),
        )
        .body(REQUEST)
        .send()
        .await?;
    let header = sample
        .headers()
        .get(RECEIPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = sample.bytes().await?;
    tally_client::check_json_answer(REQUEST.as_bytes(), header.as_deref(), &body)
        .context("the proxy's receipt does not verify")?;

    // The attestor alone, sequentially, first: the part of the metered latency that is signing,
    // metering and the journal's fsync rather than HTTP.
    let attest_p50 = attest_alone(&attestor, &host, 500).await?;
    let parts = attest_parts(&sandbox, &schedule, &host, 500)?;

    let relay_url = tcp_relay(upstream_addr.to_string()).await?;
    let forwarder_url = http_forwarder(&upstream_url).await?;
    let targets = [
        (
            "direct to upstream",
            format!("{upstream_url}/v1/chat/completions"),
            false,
        ),
        (
            "floor: TCP relay (no HTTP)",
            format!("{relay_url}/v1/chat/completions"),
            false,
        ),
        (
            "floor: minimal HTTP forwarder",
            format!("{forwarder_url}/v1/chat/completions"),
            false,
        ),
        (
            "proxy, pass-through route",
            format!("{proxy_url}/passthrough"),
            false,
        ),
        (
            "proxy, metered (signed receipt)",
            format!("{proxy_url}/v1/chat/completions"),
            true,
        ),
    ];
    let high = args.high_concurrency;
    let high_per_worker = if high > 0 {
        args.calls.div_ceil(high)
    } else {
        0
    };
    let mut high_metered: Vec<Vec<Option<String>>> = (0..high as u32)
        .map(|w| auths(&host, 400_000 + w, high_per_worker))
        .collect();
    let batches_before = attestor.journal_stats();
    let mut rows = Vec::new();
    for (name, url, metered) in &targets {
        eprintln!("{name} …");
        let warmup = if *metered {
            warm.to_vec()
        } else {
            unmetered(200)
        };
        load(&client, url, vec![warmup]).await?;
        let seq = if *metered {
            latency_auths.to_vec()
        } else {
            unmetered(args.latency_calls)
        };
        let (_, latencies) = load(&client, url, vec![seq]).await?;
        let lists = if *metered {
            std::mem::take(&mut metered_workers)
        } else {
            (0..c).map(|_| unmetered(per_worker)).collect()
        };
        let (rps, _) = load(&client, url, lists).await?;
        let high_rps = if high > 0 {
            let lists = if *metered {
                std::mem::take(&mut high_metered)
            } else {
                (0..high).map(|_| unmetered(high_per_worker)).collect()
            };
            load(&client, url, lists).await?.0
        } else {
            f64::NAN
        };
        rows.push(Row {
            name,
            rps,
            high_rps,
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
        });
    }
    let journal = attestor.journal_stats();
    let fsync = fsync_probe(dir.path(), 300)?;

    let (direct, floor) = (&rows[0], &rows[2]);
    println!(
        "tally bench proxy: instant local upstream, {} calls at concurrency {c} (and {} at \
         {high}) for req/s, {} sequential calls for latency, {} cores",
        per_worker * c,
        high_per_worker * high,
        args.latency_calls,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8} {:>8} {:>9} {:>9}",
        "target",
        "req/s",
        "/direct",
        "/floor",
        format!("req/s@{high}"),
        "/direct",
        "p50 µs",
        "p99 µs",
        "+p50 dir",
        "+p50 flr"
    );
    for r in &rows {
        println!(
            "{:<34} {:>9.0} {:>6.1}% {:>6.1}% {:>9.0} {:>6.1}% {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
            r.name,
            r.rps,
            100.0 * r.rps / direct.rps,
            100.0 * r.rps / floor.rps,
            r.high_rps,
            100.0 * r.high_rps / direct.high_rps,
            micros(r.p50),
            micros(r.p99),
            micros(r.p50) - micros(direct.p50),
            micros(r.p50) - micros(floor.p50)
        );
    }
    println!(
        "  metered p50 of which attest alone (sequential): {attest_p50:.1} µs; journal group \
         commit during the runs: {} records in {} fsyncs",
        journal.records - batches_before.records,
        journal.batches - batches_before.batches
    );
    println!(
        "  its CPU parts alone (p50 µs): metering in the sandbox {:.1}, signing the receipt \
         {:.1}, verifying one payer signature {:.1}",
        parts.meter, parts.sign, parts.verify
    );
    println!(
        "  journal disk, fdatasync per 700-byte record (p50/p99 µs): append {:.1}/{:.1}, \
         overwrite of a pre-zeroed segment {:.1}/{:.1}",
        fsync.append.0, fsync.append.1, fsync.overwrite.0, fsync.overwrite.1
    );
    for (label, r) in [("pass-through", &rows[3]), ("metered", &rows[4])] {
        let added = micros(r.p50) - micros(direct.p50);
        let share = 100.0 * r.rps / direct.rps;
        println!(
            "goal, {label}: p50 added ≤ 150 µs: {added:.1} µs ({}); throughput ≥ 80 % of \
             direct: {share:.1} % ({}); vs the HTTP floor: {:.1} % of its req/s, {:+.1} µs p50",
            if added <= 150.0 { "met" } else { "not met" },
            if share >= 80.0 { "met" } else { "not met" },
            100.0 * r.rps / floor.rps,
            micros(r.p50) - micros(floor.p50),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A TCP relay in front of `upstream` (`host:port`): one more hop with no HTTP work, the
/// floor of any proxy on these cores. Returns its base URL.
async fn tcp_relay(upstream: String) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    Ok(url)
}

/// A minimal HTTP forwarder on the proxy's stack (axum server, reqwest client, same pool
/// settings, same runtime): every request sent on as it came, no checks, no header
/// filtering beyond `host`. The floor of "one more HTTP hop" for the proxy's code.
async fn http_forwarder(upstream: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let upstream = upstream.to_owned();
    let forward = move |request: axum::extract::Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (mut parts, body) = request.into_parts();
            parts.headers.remove(axum::http::header::HOST);
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let sent = client
                .request(parts.method, format!("{upstream}{pq}"))
                .headers(parts.headers)
                .body(body)
                .send()
                .await;
            let mut response = axum::response::Response::new(axum::body::Body::empty());
            if let Ok(up) = sent {
                *response.status_mut() = up.status();
                *response.headers_mut() = up.headers().clone();
                *response.body_mut() = up.bytes().await.unwrap_or_default().into();
            } else {
                *response.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
            }
            response
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, Router::new().fallback(forward)).await });
    Ok(url)
}

/// p50/p99 in µs of one `fdatasync` after writing a record, appended vs overwritten in a
/// pre-zeroed (already allocated and synced) segment, in `dir`.
struct FsyncProbe {
    append: (f64, f64),
    overwrite: (f64, f64),
}

fn fsync_probe(dir: &std::path::Path, n: usize) -> anyhow::Result<FsyncProbe> {
    use std::io::{Seek, SeekFrom, Write};
    let record = [0x5a_u8; 700];
    let timed = |prezero: bool| -> anyhow::Result<(f64, f64)> {
        let path = dir.join(if prezero {
            "probe-prezeroed"
        } else {
            "probe-append"
        });
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if prezero {
            file.write_all(&vec![0; record.len() * n])?;
            file.sync_all()?;
            file.seek(SeekFrom::Start(0))?;
        }
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            file.write_all(&record)?;
            file.sync_data()?;
            latencies.push(t.elapsed());
        }
        drop(file);
        std::fs::remove_file(&path)?;
        latencies.sort();
        Ok((
            micros(percentile(&latencies, 0.5)),
            micros(percentile(&latencies, 0.99)),
        ))
    };
    Ok(FsyncProbe {
        append: timed(false)?,
        overwrite: timed(true)?,
    })
}

/// p50 in µs of the CPU steps of one attest, each timed alone.
struct AttestParts {
    meter: f64,
    sign: f64,
    verify: f64,
}

fn attest_parts(
    sandbox: &tally_sandbox::Sandbox,
    schedule: &PriceSchedule,
    host: &SigningKey,
    n: usize,
) -> anyhow::Result<AttestParts> {
    let auth = authorization(host, &payer(500_000), 1);
    let input = tally_protocol::MeterInput {
        facts: bench_facts(&auth),
        schedule: schedule.clone(),
        max_fee: auth.authorization.max_fee,
    };
    let body = auth.authorization.encode();
    let timed = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f()?;
            latencies.push(t.elapsed());
        }
        latencies.sort();
        Ok(micros(percentile(&latencies, 0.5)))
    };
    Ok(AttestParts {
        meter: timed(&mut || {
            sandbox.meter(&input)?;
            Ok(())
        })?,
        sign: timed(&mut || {
            std::hint::black_box(host.sign(std::hint::black_box(&body)));
            Ok(())
        })?,
        verify: timed(&mut || Ok(auth.verify()?))?,
    })
}

/// The usage facts of one bench call under `auth`.
fn bench_facts(auth: &SignedAuthorization) -> UsageFacts {
    UsageFacts {
        model: model(),
        request_digest: auth.authorization.request_digest,
        response_digest: Digest::sha256(ANSWER.as_bytes()),
        prompt_tokens: 9,
        cached_prompt_tokens: 0,
        completion_tokens: 3,
        reasoning_tokens: 0,
        started_at_ms: now_ms(),
        first_token_ms: 0,
        duration_ms: 0,
        finish: FinishStatus::Stop,
    }
}

/// p50 in µs of `n` sequential `Attestor::attest` calls on a channel of their own.
async fn attest_alone(attestor: &Attestor, host: &SigningKey, n: usize) -> anyhow::Result<f64> {
    let payer = payer(300_000);
    let mut latencies = Vec::with_capacity(n);
    for seq in 1..=n as u64 {
        let auth = authorization(host, &payer, seq);
        let facts = bench_facts(&auth);
        let t = Instant::now();
        attestor.attest(&auth, &facts).await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Ok(micros(percentile(&latencies, 0.5)))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
