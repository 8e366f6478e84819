//! Step 3, the traffic: every call of the run drawn up front (Zipf demand over the payers,
//! log-normal token counts, a day-night rhythm, and the wash trader's clockwork calls),
//! then attested host by host in time order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use indicatif::ProgressBar;
use tally_protocol::{Digest, SignedReceipt, SigningKey, UsageFacts};

use super::{Cast, DemoArgs, Host};
use crate::workload::{self, Model, Rng};

/// One planned call.
pub(super) struct Planned {
    pub(super) time: u64,
    pub(super) payer: usize,
    pub(super) host: usize,
    pub(super) model: usize,
    pub(super) seq: u64,
    pub(super) facts: UsageFacts,
    /// The wash payer's calls are attested alone, so their timestamps are exact.
    pub(super) alone: bool,
}

/// Most calls attested at once on one host.
const CHUNK: usize = 256;
/// Most simulated time one such chunk spans: the attestor stamps a receipt no earlier
/// than the one before it on the host chain, so calls attested together may be stamped up
/// to this much late.
const CHUNK_MS: u64 = 600_000;

/// Draws the run's calls and prints what they are.
pub(super) fn plan(rng: &mut Rng, cast: &Cast, args: &DemoArgs) -> Vec<Planned> {
    let models = &cast.models;
    let (n_payers, wash) = (cast.n_payers, cast.wash);
    let span_ms = args.seconds * 1_000;
    let plan = plan_calls(rng, models, args, span_ms);
    let honest_by_model: Vec<usize> = (0..models.len())
        .map(|m| {
            plan.iter()
                .filter(|c| c.model == m && c.payer != wash)
                .count()
        })
        .collect();
    println!(
        "  traffic   {} calls: {} by the wash payer on {}, the rest Zipf over {} payers ({})",
        plan.len(),
        plan.iter().filter(|c| c.payer == wash).count(),
        models[workload::WASH_MODEL].name,
        n_payers,
        models
            .iter()
            .zip(&honest_by_model)
            .map(|(m, n)| format!("{} {n}", m.name))
            .collect::<Vec<_>>()
            .join(", ")
    );

    plan
}

/// Draws the whole run's calls, in time order, with channel sequence numbers assigned.
pub(super) fn plan_calls(
    rng: &mut Rng,
    models: &[Model],
    args: &DemoArgs,
    span_ms: u64,
) -> Vec<Planned> {
    let n_payers = args.payers as usize;
    let n_hosts = args.hosts as usize;
    let wash = n_payers;
    let wash_calls = (args.calls / 50).max(30);
    let honest = args.calls.saturating_sub(wash_calls);
    // Zipf demand: payer p's weight is 1/(p+1).
    let weights: Vec<f64> = (1..=n_payers).map(|r| 1.0 / r as f64).collect();
    let total_weight: f64 = weights.iter().sum();
    let popularity: f64 = models.iter().map(|m| m.popularity).sum();
    let mut calls = Vec::with_capacity(args.calls as usize);
    for _ in 0..honest {
        let mut x = rng.unit() * total_weight;
        let mut p = 0;
        while p + 1 < n_payers && x >= weights[p] {
            x -= weights[p];
            p += 1;
        }
        let mut y = rng.unit() * popularity;
        let mut m = 0;
        while m + 1 < models.len() && y >= models[m].popularity {
            y -= models[m].popularity;
            m += 1;
        }
        let host = p % n_hosts;
        let time = workload::diurnal_time(rng, workload::START_MS, span_ms);
        let request = Digest(rng.bytes32());
        let facts = workload::facts(rng, &models[m], request, time);
        calls.push(Planned {
            time,
            payer: p,
            host,
            model: m,
            seq: 0,
            facts,
            alone: false,
        });
    }
    // The wash trader: the same few prompts, the same sizes, every `interval` (±0.5%),
    // round the clock, always through host 0.
    let interval = span_ms / wash_calls;
    let prompts: Vec<Digest> = (0..3)
        .map(|i| Digest::sha256(format!("wash prompt {i}").as_bytes()))
        .collect();
    let m = &models[workload::WASH_MODEL];
    for k in 0..wash_calls {
        let jitter = (rng.unit() - 0.5) * 0.01 * interval as f64;
        let time = workload::START_MS + k * interval + interval / 2;
        let time = (time as f64 + jitter) as u64;
        let request = prompts[(k % 3) as usize];
        let mut facts = workload::facts(rng, m, request, time);
        facts.prompt_tokens = 812;
        facts.cached_prompt_tokens = 0;
        facts.completion_tokens = 128;
        facts.first_token_ms = 56;
        facts.duration_ms = 56 + 128 * 12;
        facts.finish = tally_protocol::FinishStatus::Stop;
        calls.push(Planned {
            time,
            payer: wash,
            host: 0,
            model: workload::WASH_MODEL,
            seq: 0,
            facts,
            alone: true,
        });
    }
    calls.sort_by_key(|c| c.time);
    let mut seqs: BTreeMap<(usize, usize, usize), u64> = BTreeMap::new();
    for c in &mut calls {
        let seq = seqs.entry((c.payer, c.host, c.model)).or_insert(0);
        *seq += 1;
        c.seq = *seq;
    }
    calls
}

/// Attests one host's calls in time order: up to [`CHUNK`] at once within [`CHUNK_MS`]
/// (never two of one channel, whose order matters), the wash payer's alone so its
/// timestamps stay exact.
pub(super) async fn attest_host(
    host: Arc<Host>,
    calls: Vec<Planned>,
    payers: Arc<Vec<SigningKey>>,
    models: Arc<Vec<Model>>,
    pb: ProgressBar,
) -> anyhow::Result<Vec<SignedReceipt>> {
    let mut out = Vec::with_capacity(calls.len());
    let mut calls = calls.into_iter().peekable();
    let host_key = host.key.public_key();
    while calls.peek().is_some() {
        let mut chunk: Vec<Planned> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(c) = calls.next_if(|c| {
            chunk.len() < CHUNK
                && chunk.first().is_none_or(|f| c.time < f.time + CHUNK_MS)
                && (chunk.is_empty() || !c.alone)
                && !seen.contains(&(c.payer, c.model))
        }) {
            seen.insert((c.payer, c.model));
            let alone = c.alone;
            chunk.push(c);
            if alone {
                break;
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for c in chunk {
            let auth = workload::authorize(
                &payers[c.payer],
                &host_key,
                &models[c.model],
                c.seq,
                c.facts.request_digest,
                c.time + 3_600_000,
            );
            let host = Arc::clone(&host);
            tasks.spawn(async move { host.attestor.attest_at(&auth, &c.facts, c.time).await });
        }
        while let Some(r) = tasks.join_next().await {
            out.push(r??);
            pb.inc(1);
        }
    }
    Ok(out)
}
