//! `tally bench watch`: the watcher's checking rate on one core over a deployment's data,
//! beside the floor the issue holds it to, measured in the same run: the raw batched
//! ZIP-215 verification rate of the data's own signatures, two per receipt. The watcher's
//! work per leaf is `WatchedLog::append` (hashing into its tree, indexing the channel),
//! `WatchedLog::check` in pages as they arrive (decode, payer signatures batched, each
//! host checkpoint once, binding, registries, the fee re-metered by the metering function
//! natively as the contract does) and the cross-leaf rules
//! of `WatchedLog::judge`. It also prints whether the watcher keeps up with an ingest rate
//! (`--ingest-rate`, e.g. what `tally bench ingest` printed): the share of one sealing
//! interval the watcher needs for that interval's leaves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tally_aggregator::{SqliteStore, Store};
use tally_auditor::ChainView;
use tally_auditor::watch::{ModelTerms, Registries, WatchedLog};
use tally_protocol::SignedReceipt;

use crate::audit::{CHAIN_FILE, DB_FILE};
use crate::bench_audit::batched_secs;

/// Arguments of `tally bench watch`.
#[derive(Args)]
pub(crate) struct WatchBenchArgs {
    /// A deployment's data as `tally demo --keep DIR` writes it.
    #[arg(long)]
    data: PathBuf,
    /// An ingest rate (receipts/s) to compare with, e.g. `tally bench ingest`'s.
    #[arg(long, default_value_t = 30_000.0)]
    ingest_rate: f64,
    /// The aggregator's sealing interval, seconds.
    #[arg(long, default_value_t = 10.0)]
    seal_interval: f64,
}

pub(crate) fn run(args: WatchBenchArgs) -> anyhow::Result<ExitCode> {
    let view = ChainView::read(&args.data.join(CHAIN_FILE))?;
    let db = args.data.join(DB_FILE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let leaves = runtime.block_on(async {
        let store = SqliteStore::open_read_only(&db)
            .await
            .with_context(|| format!("opening {}", db.display()))?;
        let size = store.tree_size().await?;
        let leaves: Vec<Vec<u8>> = store
            .leaves(0, size)
            .await?
            .into_iter()
            .map(|r| r.bytes)
            .collect();
        store.close().await;
        anyhow::Ok(leaves)
    })?;
    anyhow::ensure!(!leaves.is_empty(), "the log is empty: nothing to watch");
    let receipts: Vec<SignedReceipt> = leaves
        .iter()
        .filter_map(|l| SignedReceipt::decode(l).ok())
        .collect();

    // The floor: the data's signatures, two per receipt (the payer's and its host's
    // checkpoint), verified in ZIP-215 batches as raw as they come.
    let messages: Vec<Vec<u8>> = receipts
        .iter()
        .map(|r| r.receipt.authorization.authorization.encode())
        .collect();
    let bodies: Vec<Vec<u8>> = receipts
        .iter()
        .map(|r| {
            let a = &r.receipt.authorization.authorization;
            r.checkpoint
                .body(&a.chain_id, &a.contract, r.receipt.host())
        })
        .collect();
    let mut items = Vec::with_capacity(2 * receipts.len());
    for ((r, m), body) in receipts.iter().zip(&messages).zip(&bodies) {
        let a = &r.receipt.authorization;
        items.push((a.authorization.payer, m.as_slice(), a.signature));
        items.push((*r.receipt.host(), body.as_slice(), r.checkpoint.signature));
    }
    eprintln!(
        "measuring the floor: {} signatures of the data, batched, one core …",
        items.len()
    );
    let sig_rate = items.len() as f64 / batched_secs(&items);
    let floor = sig_rate / 2.0;

    // The watcher on the same leaves, one core, pages as the aggregator serves them.
    let models: Vec<_> = view.models.iter().map(|m| m.id).collect();
    let registries = Registries {
        chain_id: view.chain_id.clone(),
        contract: view.contract.clone(),
        hosts: view.hosts.iter().map(|h| (h.key, models.clone())).collect(),
        models: view
            .models
            .iter()
            .map(|m| {
                (
                    m.id,
                    ModelTerms {
                        schedule: m.schedule.clone(),
                        guests: vec![view.guest],
                    },
                )
            })
            .collect(),
    };
    let page = tally_aggregator::api::MAX_LEAVES_PER_PAGE as usize;
    eprintln!("watching {} leaves on one core …", leaves.len());
    let mut best = f64::INFINITY;
    let mut phases = [f64::INFINITY; 3];
    let mut frauds = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut spent = [0f64; 3];
        let mut log = WatchedLog::new();
        frauds = 0;
        for chunk in leaves.chunks(page) {
            let from = log.size();
            let p = Instant::now();
            for l in chunk {
                log.append(l.clone());
            }
            spent[0] += p.elapsed().as_secs_f64();
            let to = log.size();
            let p = Instant::now();
            log.check(&registries, from, to);
            spent[1] += p.elapsed().as_secs_f64();
            let p = Instant::now();
            frauds += log.judge(&registries, from, to).len();
            spent[2] += p.elapsed().as_secs_f64();
        }
        best = best.min(t.elapsed().as_secs_f64());
        for (b, s) in phases.iter_mut().zip(spent) {
            *b = b.min(s);
        }
    }
    let watched = leaves.len() as f64 / best;
    let interval_leaves = args.ingest_rate * args.seal_interval;
    println!();
    println!(
        "tally bench watch — {} leaves, pages of {page}, one core",
        leaves.len()
    );
    println!("{:<64} {:>14}", "measure", "value");
    let row = |name: &str, v: f64| println!("{name:<64} {v:>14.0}");
    row(
        "ZIP-215 signatures verified/s (the data's, batched)",
        sig_rate,
    );
    row("floor: receipts/s at two signatures per receipt", floor);
    row("leaves checked and judged/s (the watcher)", watched);
    let n = leaves.len() as f64;
    row("  of which appended/s (tree, channel index)", n / phases[0]);
    row(
        "  of which checked/s (signatures, registries, re-execution)",
        n / phases[1],
    );
    row("  of which judged/s (cross-leaf rules)", n / phases[2]);
    println!(
        "{:<64} {:>13.1}%",
        "watcher / floor",
        100.0 * watched / floor
    );
    println!(
        "{:<64} {:>13.1}%",
        &format!(
            "one {:.0}-s interval at {:.0} receipts/s: share needed to check it",
            args.seal_interval, args.ingest_rate
        ),
        100.0 * interval_leaves / watched / args.seal_interval
    );
    println!(
        "frauds found in the data: {frauds} (the demo's re-priced receipt, if the data has it)"
    );
    Ok(ExitCode::SUCCESS)
}

/// One seal or one catch-up of the follower: the log size and when.
pub(crate) type Mark = (u64, Instant);

/// Follows the aggregator at `url` as `tally watch` does (the latest checkpoint note,
/// verified; its leaves in pages; each page appended, checked and judged on the
/// watcher's `WatchedLog`) until `done` is set and the log holds `done`'s size; returns
/// when it had checked each size.
pub(crate) async fn follow(
    url: String,
    aggregator: tally_protocol::PublicKey,
    registries: Registries,
    done: Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<Vec<Mark>> {
    use std::sync::atomic::Ordering;
    let origin = tally_protocol::log_origin(crate::workload::CHAIN_ID, crate::workload::CONTRACT)?;
    let feed = tally_auditor::watcher::Feed::new(&url)?;
    let mut log = WatchedLog::new();
    let mut checked = Vec::new();
    let page = tally_aggregator::api::MAX_LEAVES_PER_PAGE;
    loop {
        let end = done.load(Ordering::Acquire);
        if end > 0 && log.size() >= end {
            return Ok(checked);
        }
        let Some(note) = feed.checkpoint().await? else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let cp = tally_protocol::Checkpoint::verify_note(&note, &origin, &aggregator)
            .map_err(|e| anyhow::anyhow!("a checkpoint note: {e}"))?;
        let from = log.size();
        if cp.size > from {
            let mut at = from;
            while at < cp.size {
                let to = (at + page).min(cp.size);
                for leaf in feed.leaves(at, to).await? {
                    log.append(leaf);
                }
                at = to;
            }
            anyhow::ensure!(
                log.root_at(cp.size) == Some(cp.root),
                "the leaves do not hash to the checkpoint"
            );
            tokio::task::block_in_place(|| {
                log.check(&registries, from, cp.size);
                log.judge(&registries, from, cp.size);
            });
            checked.push((cp.size, Instant::now()));
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// For each seal, how long after it the follower had checked its size.
pub(crate) fn lags(sealed: &[Mark], checked: &[Mark]) -> Vec<std::time::Duration> {
    sealed
        .iter()
        .filter_map(|(size, at)| {
            checked
                .iter()
                .find(|(s, _)| s >= size)
                .map(|(_, t)| t.saturating_duration_since(*at))
        })
        .collect()
}

/// The registries of `tally bench ingest`'s workload: every host serves the demo's models.
pub(crate) fn workload_registries(hosts: &[tally_protocol::PublicKey]) -> Registries {
    let models = crate::workload::models();
    let ids: Vec<_> = models.iter().map(crate::workload::Model::id).collect();
    Registries {
        chain_id: crate::workload::CHAIN_ID.into(),
        contract: crate::workload::CONTRACT.into(),
        hosts: hosts.iter().map(|h| (*h, ids.clone())).collect(),
        models: models
            .into_iter()
            .map(|m| {
                (
                    m.id(),
                    ModelTerms {
                        schedule: m.schedule.clone(),
                        guests: vec![tally_sandbox::PINNED_HASH],
                    },
                )
            })
            .collect(),
    }
}
