//! Step 5, the injected fraud: a dishonest host re-prices one call and signs it into its
//! log; the receipt reaches a submitted batch, and a watcher re-executes the batch and
//! proves `Repriced` on chain with the receipt's inclusion proof (the batch is voided, the
//! host slashed). The standalone watcher (`tally watch`) is issue 17.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use tally_aggregator::Store as _;
use tally_aggregator::chain::Chain;
use tally_aggregator::settler::Step;
use tally_aggregator::{Aggregator, Outcome, SqliteStore};
use tally_contracts::msg::{BatchStatus, FraudProof, HostResponse, LeafProof, QueryMsg};
use tally_devnet::DevnetAccount;
use tally_protocol::{Digest, MeterInput, Receipt, SignedReceipt, SigningKey};
use tally_verifier::{ChainStart, Failure, Reexecute, VerifierConfig};

use super::{Cast, Deployment, DevChain, Host, b};
use crate::audit;
use crate::workload::{self, Model, Rng};
use tally_auditor::Sharded;

/// Injects the fraud, has it caught, and returns the slashed host's record.
pub(super) async fn inject_and_catch(
    cast: &Cast,
    chain: &DevChain,
    dep: &Deployment,
    dir: &Path,
) -> anyhow::Result<HostResponse> {
    let models = &cast.models;
    let sandbox = &cast.sandbox;
    let payers = &cast.payers;
    let (n_payers, n_hosts, dishonest) = (cast.n_payers, cast.n_hosts, cast.dishonest);
    let (submitter, watcher) = (&chain.submitter, &chain.watcher);
    let Deployment {
        agg,
        db,
        settler,
        hosts,
        ..
    } = dep;
    let host = &hosts[dishonest];
    let forged = forge(host, payers, models, sandbox, dishonest, n_hosts, n_payers)?;
    std::fs::write(
        dir.join("forged-receipt.json"),
        serde_json::to_string_pretty(&forged)?,
    )?;
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
    let challenge = watch(
        db,
        agg,
        watcher,
        fraud_batch,
        header.header.tree_size - 1,
        header.header.tree_size,
        sandbox,
        models,
    )
    .await?
    .context("the watcher did not catch the re-priced receipt")?;
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
        "injected fraud: host {dishonest} signed receipt {}… with its fee tripled ({} µ instead of {} µ);",
        &forged.id().to_string()[..16],
        forged.receipt.metered.fee,
        forged.receipt.metered.fee / 3
    );
    println!(
        "  the aggregator (sampling none) accepted it, batch {fraud_batch} went on chain, the watcher re-ran"
    );
    println!(
        "  the guest, proved `repriced` with the inclusion proof (gas {}): batch {status}, host {dishonest} slashed {} µ (bond left {} µ)",
        challenge.gas_used,
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

/// What a watcher does with each submitted batch: reads its new leaves from the log,
/// re-executes every one, and challenges the first re-priced receipt with its inclusion
/// proof in the batch's tree. Returns the challenge, if one was made.
#[allow(
    clippy::too_many_arguments,
    reason = "the demo's parts, passed in plainly"
)]
pub(super) async fn watch(
    db: &Path,
    agg: &Arc<Aggregator<SqliteStore>>,
    watcher: &DevnetAccount,
    batch: u64,
    from: u64,
    to: u64,
    sandbox: &Arc<tally_sandbox::Sandbox>,
    models: &[Model],
) -> anyhow::Result<Option<tally_aggregator::chain::TxOutcome>> {
    let store = SqliteStore::open_read_only(db).await?;
    let leaves = store.leaves(from, to).await?;
    store.close().await;
    let receipts: Vec<(u64, SignedReceipt)> = leaves
        .into_iter()
        .filter_map(|l| SignedReceipt::decode(&l.bytes).ok().map(|r| (l.leaf, r)))
        .collect();
    let config = VerifierConfig {
        guests: vec![Arc::clone(sandbox)],
        schedules: models.iter().map(|m| m.schedule.clone()).collect(),
        reexecute: Reexecute::All,
        chain_start: ChainStart::Anywhere,
    };
    let findings = Sharded::new(&config, audit::cores()).push(receipts);
    let Some((_, finding)) = findings
        .iter()
        .find(|(_, f)| matches!(f.failure, Failure::MeteredMismatch { .. }))
    else {
        return Ok(None);
    };
    let (stored, proof) = agg.inclusion(&finding.receipt, Some(to)).await?;
    let leaf = LeafProof {
        receipt: stored.bytes.into(),
        leaf_index: proof.leaf_index,
        hashes: proof.hashes.iter().map(|h| b(&h.0)).collect(),
    };
    let tx = watcher
        .challenge(batch, FraudProof::Repriced { leaf })
        .await
        .context("challenge")?;
    Ok(Some(tx))
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
) -> anyhow::Result<SignedReceipt> {
    let payer = (0..n_payers)
        .find(|p| p % n_hosts == h)
        .context("no payer of the dishonest host")?;
    let model = &models[0];
    let key = host.key.public_key();
    let mut log = host.attestor.log_frontier();
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
    let mut metered = sandbox.meter(&MeterInput {
        facts: facts.clone(),
        schedule: model.schedule.clone(),
        max_fee: authorization.authorization.max_fee,
    })?;
    metered.fee *= 3;
    let receipt = Receipt {
        authorization,
        facts,
        metered,
        guest: sandbox.guest_hash(),
        schedule: model.schedule.hash(),
        host_seq: host_seq + 1,
        channel_total: state.total + metered.fee,
        timestamp_ms: time,
    };
    let (_, mut bundles) = tally_protocol::sign_group(&host.key, &mut log, vec![receipt])
        .map_err(|e| anyhow::anyhow!("signing the forged receipt: {e}"))?;
    bundles.pop().context("one bundle")
}
