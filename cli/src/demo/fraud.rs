//! Step 5, the injected fraud: a dishonest host re-prices one call and signs it into its
//! log; the receipt reaches a submitted batch, and a watcher re-executes the batch and
//! proves `Repriced` on chain with the receipt's inclusion proof (the batch is voided, the
//! host slashed). The watcher judges with the auditor's library (`tally_auditor::watch`);
//! the standalone `tally watch` is issue 17.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use tally_aggregator::Store as _;
use tally_aggregator::chain::{Chain, TxOutcome};
use tally_aggregator::settler::Step;
use tally_aggregator::{Outcome, SqliteStore};
use tally_contracts::msg::{BatchStatus, HostResponse, QueryMsg};
use tally_devnet::DevnetAccount;
use tally_protocol::{Digest, MeterInput, Receipt, SignedReceipt, SigningKey};

use super::{Cast, Deployment, DevChain, Host, b};
use crate::workload::{self, Model, Rng};
use tally_auditor::watch::{ModelTerms, Registries, WatchedLog};

/// Injects the fraud, has it caught, and returns the slashed host's record.
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
        db,
        settler,
        hosts,
        watcher: guard,
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
    let (kind, challenge) = guard
        .watch(
            db,
            watcher,
            fraud_batch,
            header.header.tree_size - 1,
            header.header.tree_size,
        )
        .await?
        .context("the watcher did not catch the re-priced receipt")?;
    ensure!(
        kind == "repriced",
        "the watcher proved {kind}, not the re-pricing"
    );
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

/// The demo's watcher: the auditor's judge ([`tally_auditor::watch`]) over its own copy of
/// the log, which it reads from the aggregator's store (read-only) as the log grows, and
/// its devnet account to challenge with. Its proofs are built from its own tree, not from
/// the aggregator's proof endpoint.
pub(crate) struct Watcher {
    log: WatchedLog,
    registries: Registries,
    guests: HashMap<Digest, Arc<tally_sandbox::Sandbox>>,
}

impl Watcher {
    /// A watcher of the demo's deployment: every host serves every model, each model
    /// allows the pinned guest.
    pub(super) fn new(cast: &Cast) -> Watcher {
        let models: Vec<Digest> = cast.models.iter().map(Model::id).collect();
        Watcher {
            log: WatchedLog::new(),
            registries: Registries {
                chain_id: workload::CHAIN_ID.into(),
                contract: workload::CONTRACT.into(),
                hosts: cast
                    .host_keys
                    .iter()
                    .map(|k| (k.public_key(), models.clone()))
                    .collect(),
                models: cast
                    .models
                    .iter()
                    .map(|m| {
                        (
                            m.id(),
                            ModelTerms {
                                schedule: m.schedule.clone(),
                                guests: vec![cast.guest],
                            },
                        )
                    })
                    .collect(),
            },
            guests: HashMap::from([(cast.guest, Arc::clone(&cast.sandbox))]),
        }
    }

    /// Follows the log up to `to` leaves, judges the batch's new leaves `[from, to)` and
    /// challenges the first fraud found; returns the challenge's kind and outcome, if one
    /// was made.
    pub(super) async fn watch(
        &mut self,
        db: &Path,
        account: &DevnetAccount,
        batch: u64,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<(&'static str, TxOutcome)>> {
        if self.log.size() < to {
            let store = SqliteStore::open_read_only(db).await?;
            let leaves = store.leaves(self.log.size(), to).await?;
            store.close().await;
            for l in leaves {
                self.log.append(l.bytes);
            }
        }
        ensure!(
            self.log.size() >= to,
            "the log holds fewer than {to} leaves"
        );
        let Some(proof) = self
            .log
            .judge(&self.registries, &self.guests, from, to)
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let kind = proof.kind();
        let tx = account.challenge(batch, proof).await.context("challenge")?;
        Ok(Some((kind, tx)))
    }
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
