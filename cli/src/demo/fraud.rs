//! Step 5, the injected frauds: a dishonest host re-prices one call and signs it into its
//! log, and hands the client a twin with the honest fee at the same place in its log (two
//! histories). The logged receipt reaches a submitted batch; the watcher — `tally watch`'s
//! library (`tally_auditor::watcher`), following the aggregator over HTTP and the chain
//! through its account, with the client's twin in its inbox — finds both frauds
//! (`repriced`, `host_equivocation`) and proves the first on chain with an inclusion proof
//! from its own copy of the log: the batch is voided, the host slashed. (One proof voids
//! a batch, and a voided log stops the aggregator's settlement, so one run proves one.)

use std::path::Path;

use anyhow::{Context, bail, ensure};
use tally_aggregator::Outcome;
use tally_aggregator::chain::Chain;
use tally_aggregator::settler::Step;
use tally_auditor::watcher::Outcome as WatchOutcome;
use tally_contracts::msg::{BatchStatus, HostResponse, QueryMsg};
use tally_protocol::{Digest, MeterInput, Receipt, SignedReceipt, SigningKey};

use super::{Cast, Deployment, DevChain, Host, b};
use crate::workload::{self, Model, Rng};

/// Injects the frauds, has them caught, and returns the slashed host's record.
pub(super) async fn inject_and_catch(
    cast: &Cast,
    chain: &DevChain,
    dep: &mut Deployment,
    dir: &Path,
) -> anyhow::Result<HostResponse> {
    let models = &cast.models;
    let sandbox = &cast.sandbox;
    let payers = &cast.payers;
    let (n_payers, n_hosts, dishonest) = (cast.n_payers, cast.n_hosts, cast.dishonest);
    let (submitter, watcher) = (&chain.submitter, &chain.watcher);
    let Deployment {
        agg,
        settler,
        hosts,
        watcher: guard,
        ..
    } = dep;
    let host = &hosts[dishonest];
    let (forged, twin) = forge(host, payers, models, sandbox, dishonest, n_hosts, n_payers)?;
    std::fs::write(
        dir.join("forged-receipt.json"),
        serde_json::to_string_pretty(&forged)?,
    )?;
    // The client was handed the honest twin; it gives it to the watcher to look out for.
    tally_auditor::watcher::deposit(&guard.inbox(), &twin)?;
    let outcome = agg.submit(vec![Ok(forged.clone())]).await?;
    ensure!(
        matches!(outcome.as_slice(), [Outcome::Accepted { .. }]),
        "the forged receipt was not accepted: {outcome:?}"
    );
    let header = agg.seal().await?.context("nothing to seal")?;
    let fraud_batch = header.header.batch;
    ensure!(
        agg.batch(fraud_batch + 1).await.is_err(),
        "the fraud batch was split"
    );
    let Step::Submitted { .. } = settler.step().await? else {
        bail!("the fraud batch was not submitted");
    };
    let round = guard.round().await?;
    let record = round
        .judged
        .iter()
        .find(|r| r.number == fraud_batch)
        .context("the watcher did not judge the fraud batch")?;
    ensure!(
        record.outcome == WatchOutcome::Challenged && record.kind.as_deref() == Some("repriced"),
        "the watcher did not prove the re-pricing: {record:?}"
    );
    ensure!(
        round.found.contains(&"host_equivocation"),
        "the watcher did not find the host's two histories: {:?}",
        round.found
    );
    let challenge_gas = chain
        .devnet
        .log()
        .iter()
        .rev()
        .find(|t| t.message == "challenge" && t.result.is_ok())
        .map_or(0, |t| t.gas_used);
    let status = submitter
        .batch(fraud_batch)
        .await?
        .map(|b| b.status)
        .context("the fraud batch is not on chain")?;
    let hr: HostResponse = watcher
        .query(&QueryMsg::Host {
            key: b(&host.key.public_key().0),
        })
        .await?;
    println!(
        "{fraud_batch:>6} {:>10} {:>9} {:>16} {:>14} {:>14}  {status}",
        header.header.tree_size,
        header.header.debits.len(),
        header.header.total,
        "",
        ""
    );
    println!();
    println!(
        "injected frauds: host {dishonest} logged receipt {}… with its fee tripled ({} µ instead of {} µ)",
        &forged.id().to_string()[..16],
        forged.receipt.metered.fee,
        twin.receipt.metered.fee
    );
    println!(
        "  and handed the client a twin with the honest fee at the same place in its log (two histories);"
    );
    println!(
        "  the aggregator (sampling none) accepted the logged one and batch {fraud_batch} went on chain."
    );
    println!(
        "  the watcher (tally watch's library: the log over HTTP, the chain through its account) found {}",
        round.found.join(" and ")
    );
    println!(
        "  and proved `repriced` with its own inclusion proof (gas {challenge_gas}): batch {status}, host {dishonest} slashed {} µ (bond left {} µ)",
        hr.slashed.u128(),
        hr.bond.u128()
    );
    ensure!(
        status == BatchStatus::Voided,
        "the fraud batch is {status}, not voided"
    );
    ensure!(hr.slashed.u128() > 0, "the dishonest host was not slashed");

    Ok(hr)
}

/// The dishonest host's receipt: a real call on one of its channels, metered by the
/// pinned guest, then its fee tripled and signed into the host's log (a group commit of
/// one continuing its durable log) so every signature still verifies.
pub(super) fn forge(
    host: &Host,
    payers: &[SigningKey],
    models: &[Model],
    sandbox: &tally_sandbox::Sandbox,
    h: usize,
    n_hosts: usize,
    n_payers: usize,
) -> anyhow::Result<(SignedReceipt, SignedReceipt)> {
    let payer = (0..n_payers)
        .find(|p| p % n_hosts == h)
        .context("no payer of the dishonest host")?;
    let model = &models[0];
    let key = host.key.public_key();
    let log = host.attestor.log_frontier();
    let host_seq = log.size();
    let probe = workload::authorize(&payers[payer], &key, model, 1, Digest::ZERO, 0);
    let channel = probe.authorization.channel();
    let state = host.attestor.channel(&channel).unwrap_or_default();
    let time = workload::START_MS + 22 * 86_400_000;
    let request = Digest::sha256(b"an ordinary request, re-priced");
    let mut rng = Rng::new(7);
    let facts = workload::facts(&mut rng, model, request, time);
    let authorization = workload::authorize(
        &payers[payer],
        &key,
        model,
        state.last_seq + 1,
        request,
        time + 3_600_000,
    );
    let metered = sandbox.meter(&MeterInput {
        facts: facts.clone(),
        schedule: model.schedule.clone(),
        max_fee: authorization.authorization.max_fee,
    })?;
    let honest = Receipt {
        authorization,
        facts,
        metered,
        guest: sandbox.guest_hash(),
        schedule: model.schedule.hash(),
        host_seq: host_seq + 1,
        channel_total: state.total + metered.fee,
        timestamp_ms: time,
    };
    let mut repriced = honest.clone();
    repriced.metered.fee *= 3;
    repriced.channel_total = state.total + repriced.metered.fee;
    let sign = |receipt: Receipt| {
        let mut log = log.clone();
        tally_protocol::sign_group(&host.key, &mut log, vec![receipt])
            .map_err(|e| anyhow::anyhow!("signing a forged receipt: {e}"))?
            .1
            .pop()
            .context("one bundle")
    };
    Ok((sign(repriced)?, sign(honest)?))
}
