//! Step 4, the epochs: each simulated week is attested, shipped over HTTP into the
//! aggregator, sealed, submitted, watched and finalized once its window closes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use indicatif::MultiProgress;
use tally_aggregator::settler::Step;
use tally_auditor::watcher::Outcome;
use tally_protocol::PublicKey;

use super::traffic::{Planned, attest_host};
use super::{Cast, Deployment, DevChain, EPOCHS, WINDOW, bar};
use crate::workload::{self};

/// One settled batch, for the table.
pub(super) struct Settled {
    pub(super) batch: u64,
    pub(super) tree_size: u64,
    pub(super) channels: usize,
    pub(super) total: u128,
    pub(super) submit_gas: u64,
    pub(super) finalize_gas: u64,
}

/// What the epochs settled, for the report.
pub(super) struct Epochs {
    /// Every finalized batch, in order.
    pub(super) settle_log: Vec<Settled>,
    /// The fees of the receipts attested, by payer.
    pub(super) fees_by_payer: BTreeMap<PublicKey, u128>,
}

/// Runs the epochs over `plan`, spanning `span_ms` of simulated time.
pub(super) async fn run(
    cast: &Cast,
    chain: &DevChain,
    dep: &mut Deployment,
    plan: Vec<Planned>,
    span_ms: u64,
) -> anyhow::Result<Epochs> {
    let models = &cast.models;
    let payers = &cast.payers;
    let n_hosts = cast.n_hosts;
    let devnet = &chain.devnet;
    let Deployment {
        agg,
        settler,
        hosts,
        shippers,
        watcher: guard,
        ..
    } = dep;
    let multi = MultiProgress::new();
    let attest_pb = bar(&multi, plan.len() as u64, "attest");
    let ship_pb = bar(&multi, plan.len() as u64, "ship+ingest");
    let epoch_ms = span_ms.div_ceil(EPOCHS);
    let mut plan = plan.into_iter().peekable();
    let mut fees_by_payer: BTreeMap<PublicKey, u128> = BTreeMap::new();
    let mut attested = 0u64;
    let mut attest_time = Duration::ZERO;
    let mut ship_time = Duration::ZERO;
    let mut settle_log: Vec<Settled> = Vec::new();
    for epoch in 0..EPOCHS {
        let end = workload::START_MS + (epoch + 1) * epoch_ms;
        let mut per_host: Vec<Vec<Planned>> = (0..n_hosts).map(|_| Vec::new()).collect();
        while let Some(c) = plan.next_if(|c| c.time < end || epoch + 1 == EPOCHS) {
            per_host[c.host].push(c);
        }
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (h, calls) in per_host.into_iter().enumerate() {
            let host = Arc::clone(&hosts[h]);
            let (payers, models, pb) = (Arc::clone(payers), Arc::clone(models), attest_pb.clone());
            tasks.spawn(async move { attest_host(host, calls, payers, models, pb).await });
        }
        while let Some(done) = tasks.join_next().await {
            for r in done?? {
                let fee = r.receipt.metered.fee;
                *fees_by_payer
                    .entry(r.receipt.authorization.authorization.payer)
                    .or_default() += fee;
                attested += 1;
            }
        }
        attest_time += t.elapsed();

        // Ship every journal; the aggregator checks and appends each receipt.
        let t = Instant::now();
        let mut ships = tokio::task::JoinSet::new();
        for (h, slot) in shippers.iter_mut().enumerate() {
            let mut shipper = slot.take().context("shipper in use")?;
            ships.spawn(async move {
                let r = shipper.ship_available().await;
                (h, shipper, r)
            });
        }
        let progress = {
            let (agg, pb) = (Arc::clone(agg), ship_pb.clone());
            tokio::spawn(async move {
                loop {
                    pb.set_position(agg.tree_size());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        while let Some(done) = ships.join_next().await {
            let (h, shipper, report) = done?;
            let report = report?;
            ensure!(
                report.rejected == 0,
                "host {h}: the aggregator rejected {} receipts (see its .rejects file)",
                report.rejected
            );
            shippers[h] = Some(shipper);
        }
        progress.abort();
        ship_pb.set_position(agg.tree_size());
        ensure!(
            agg.tree_size() == attested,
            "the log holds {} receipts, {attested} were attested",
            agg.tree_size()
        );
        ship_time += t.elapsed();

        // Seal the week: one tree, as many batches as the chain's per-transaction budget
        // needs; settle them in order (submit, watch, window, finalize).
        let sealed = agg.seal_batches().await?;
        ensure!(!sealed.is_empty(), "nothing to seal");
        let mut watched = false;
        let mut gas: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        loop {
            match settler.step().await? {
                Step::Submitted { batch, tx } => {
                    gas.entry(batch).or_default().0 = tx.gas_used;
                    // The watcher judges the week's leaves once (every rule, every leaf
                    // re-executed): the later batches of the same tree vouch for the same
                    // leaves.
                    if !watched {
                        let round = guard.round().await?;
                        ensure!(
                            round.judged.iter().any(|r| r.number == batch)
                                && round.judged.iter().all(|r| r.outcome == Outcome::Clean),
                            "the watcher did not find honest batch {batch} clean: {:?}",
                            round.judged
                        );
                        watched = true;
                    }
                    devnet.advance(WINDOW);
                }
                Step::Waiting { .. } => devnet.advance(WINDOW),
                Step::Finalizing { batch, tx } => gas.entry(batch).or_default().1 += tx.gas_used,
                Step::Finalized { batch, tx } => {
                    let (submit_gas, partial) = gas.get(&batch).copied().unwrap_or_default();
                    let record = agg.batch(batch).await?;
                    let header = tally_protocol::BatchHeader::decode(&record.header)
                        .context("a sealed header")?;
                    settle_log.push(Settled {
                        batch,
                        tree_size: header.tree_size,
                        channels: header.debits.len(),
                        total: header.total,
                        submit_gas,
                        finalize_gas: partial + tx.gas_used,
                    });
                }
                Step::Resealed {
                    from: n,
                    batches,
                    max_channels,
                } => println!(
                    "  the chain refused batch {n} for its size: resealed as {batches} batches of at most {max_channels} channels"
                ),
                Step::Idle => break,
            }
        }
    }
    attest_pb.finish();
    ship_pb.finish();
    multi.clear().ok();
    println!(
        "attested {attested} receipts in {:.1} s ({:.0}/s); shipped and ingested over HTTP in {:.1} s ({:.0}/s)",
        attest_time.as_secs_f64(),
        attested as f64 / attest_time.as_secs_f64().max(1e-9),
        ship_time.as_secs_f64(),
        attested as f64 / ship_time.as_secs_f64().max(1e-9),
    );
    println!();
    println!(
        "{:>6} {:>10} {:>9} {:>16} {:>14} {:>14}  status",
        "batch", "tree size", "channels", "debited (µ)", "submit gas", "finalize gas"
    );
    for s in &settle_log {
        println!(
            "{:>6} {:>10} {:>9} {:>16} {:>14} {:>14}  finalized",
            s.batch, s.tree_size, s.channels, s.total, s.submit_gas, s.finalize_gas
        );
    }
    let channels: usize = settle_log.iter().map(|s| s.channels).sum();
    let settle_gas: u64 = settle_log
        .iter()
        .map(|s| s.submit_gas + s.finalize_gas)
        .sum();
    println!(
        "  settled {} channel debits in {} batches for {} SDK gas ({} per channel, {:.1} per receipt; \
         gas as a wasmd chain charges it: VM, storage, transaction bytes, setup)",
        channels,
        settle_log.len(),
        settle_gas,
        settle_gas / channels.max(1) as u64,
        settle_gas as f64 / attested.max(1) as f64,
    );

    Ok(Epochs {
        settle_log,
        fees_by_payer,
    })
}
