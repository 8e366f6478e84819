//! `tally bench proxy`: what the metering proxy costs in front of an upstream that answers
//! instantly — requests/s and p50/p99 latency direct vs through the proxy, in one run.
//!
//! Everything runs in one process on one two-worker runtime (client, proxy, upstream), so
//! the numbers include the client's own cost on the same cores, for both paths alike.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::post;
use clap::Args;
use tally_attestor::proxy::{
    AUTHORIZATION_HEADER, Proxy, ProxyConfig, RECEIPT_HEADER, ServedModel,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

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
            Some(tally_verifier::authorization_header(&auth))
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
    let upstream_url = format!("http://{}", upstream.local_addr()?);
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
    let attestor = Arc::new(
        Attestor::open(
            AttestorConfig {
                chain_id: CHAIN.into(),
                contract: CONTRACT.into(),
                journal_path: dir.path().join("journal"),
                group_commit: GroupCommit::default(),
                schedules: vec![schedule],
            },
            SigningKey::from_seed(&[0x42; 32]),
            crate::guest::sandbox(None)?,
        )
        .await?,
    );
    let served = vec![ServedModel {
        name: "bench-model".into(),
        id: model(),
    }];
    let proxy = Proxy::new(
        ProxyConfig::new(&upstream_url, served),
        Arc::clone(&attestor),
    )?;
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
    tally_verifier::check_json_answer(REQUEST.as_bytes(), header.as_deref(), &body)
        .context("the proxy's receipt does not verify")?;

    // The attestor alone, sequentially, first: the part of the metered latency that is signing,
    // metering and the journal's fsync rather than HTTP.
    let attest_p50 = attest_alone(&attestor, &host, 500).await?;

    let targets = [
        (
            "direct to upstream",
            format!("{upstream_url}/v1/chat/completions"),
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
        rows.push(Row {
            name,
            rps,
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
        });
    }

    let direct = &rows[0];
    println!(
        "tally bench proxy: instant local upstream, {} calls at concurrency {c} for req/s, \
         {} sequential calls for latency, {} cores",
        per_worker * c,
        args.latency_calls,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>13}",
        "target", "req/s", "vs direct", "p50 µs", "p99 µs", "p50 added µs"
    );
    for r in &rows {
        println!(
            "{:<34} {:>10.0} {:>9.1}% {:>10.1} {:>10.1} {:>13.1}",
            r.name,
            r.rps,
            100.0 * r.rps / direct.rps,
            micros(r.p50),
            micros(r.p99),
            micros(r.p50) - micros(direct.p50)
        );
    }
    println!(
        "{:<34} {:>10} {:>10} {:>10.1}",
        "  of which attest alone (sequential)", "", "", attest_p50
    );
    let metered = &rows[2];
    let added = micros(metered.p50) - micros(direct.p50);
    let share = 100.0 * metered.rps / direct.rps;
    println!(
        "goal, metered: p50 added ≤ 150 µs: {added:.1} µs ({}); throughput ≥ 80 % of direct: \
         {share:.1} % ({})",
        if added <= 150.0 { "met" } else { "not met" },
        if share >= 80.0 { "met" } else { "not met" },
    );
    Ok(ExitCode::SUCCESS)
}

/// p50 in µs of `n` sequential `Attestor::attest` calls on a channel of their own.
async fn attest_alone(attestor: &Attestor, host: &SigningKey, n: usize) -> anyhow::Result<f64> {
    let payer = payer(300_000);
    let mut latencies = Vec::with_capacity(n);
    for seq in 1..=n as u64 {
        let auth = authorization(host, &payer, seq);
        let facts = UsageFacts {
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
        };
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
