//! `tally demo`: the whole mission on one machine, on embedded defaults.
//!
//! An in-process devnet runs the committed contract `.wasm` (registries, escrow, batches,
//! challenges, payouts); the aggregator runs on SQLite behind its HTTP API on an ephemeral
//! local port, with its escrow view read from the devnet; several hosts each run an
//! attestor and a shipper that posts the journal to the aggregator over HTTP. Payers make
//! calls at uneven rates over weeks of simulated time (a few heavy, many light, Zipf;
//! log-normal token counts; a day-night rhythm), and one wash-trading payer, funded by a
//! contributor of the model it calls, hammers that model like clockwork. The log is sealed
//! into one batch per simulated week and each batch is settled: submitted, watched,
//! finalized when its window closes. Then a dishonest host signs a re-priced receipt; it
//! reaches a submitted batch (the aggregator re-executes no sample in the demo), a watcher
//! re-executes the batch, challenges with the receipt's inclusion proof, the batch is
//! voided and the host slashed. Everyone claims; the demo prints who received what and
//! enforces conservation (escrow debited = revenue paid out, to the unit).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use cosmwasm_std::Binary;
use indicatif::{MultiProgress, ProgressBar};
use tally_aggregator::Store as _;
use tally_aggregator::chain::{Chain, ChainEscrow};
use tally_aggregator::settler::{Settler, Step};
use tally_aggregator::{Aggregator, Config, ModelPolicy, Outcome, Policy, SqliteStore};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit, ShipConfig, Shipper};
use tally_contracts::msg::{
    BalanceResponse, BatchStatus, ContributorMsg, ExecuteMsg, FraudProof, HostResponse, LeafProof,
    QueryMsg,
};
use tally_devnet::{Devnet, DevnetAccount, DevnetConfig, dev_instantiate};
use tally_protocol::{
    Digest, MeterInput, PublicKey, Receipt, SignedReceipt, SigningKey, UsageFacts,
};
use tally_verifier::{ChainStart, Failure, Reexecute, VerifierConfig};

use crate::audit;
use crate::workload::{self, Model, Rng};
use tally_auditor::{
    BatchView, ChainView, DepositView, EscrowView, HostView, ModelView, PayoutView, Sharded,
    TransferView,
};

/// The committed contract build, embedded so the demo needs nothing on disk.
/// Challenge window (block seconds): one simulated day.
const WINDOW: u64 = 86_400;
/// Host bond, in µ (micro-units of the escrow token).
const BOND: u128 = 1_000_000_000;
/// Each payer's deposit (µ): far more than a run spends.
const DEPOSIT: u128 = 10_000_000_000_000;
/// The protocol's fee and the host's share of each debit (bps).
const PROTOCOL_FEE_BPS: u16 = 500;
const HOST_SHARE_BPS: u16 = 2_000;
/// Most calls attested at once on one host.
const CHUNK: usize = 256;
/// Most simulated time one such chunk spans: the attestor stamps a receipt no earlier
/// than the one before it on the host chain, so calls attested together may be stamped up
/// to this much late.
const CHUNK_MS: u64 = 600_000;
/// The address name the wash trader's funding passes through (an intermediary).
const WASH_RELAY: &str = "wash-relay";

/// Most payers. A week's channels (payers × models, plus the wash payer's) are settled in
/// as many batches as the chain's per-transaction budget needs, so the bound is the run's
/// time and memory, not the contract.
const MAX_PAYERS: u64 = 10_000;
/// Batches of honest traffic (one per simulated week by default).
const EPOCHS: u64 = 3;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Paying clients (a few heavy, many light), plus one wash-trading payer. At most
    /// 10,000: each uses one host and every model, and a week with more channels than one
    /// settlement transaction carries (about 500: 1 MiB, 25 M gas) is settled as several
    /// consecutive batches, one challenge window each.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=MAX_PAYERS))]
    payers: u64,
    /// Inference hosts, each with its own attestor, journal, shipper, key and bond.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16))]
    hosts: u64,
    /// Calls to make in all.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=20_000_000))]
    calls: u64,
    /// Simulated time the traffic spans, in seconds (default three weeks).
    #[arg(long, default_value_t = 21 * 86_400, value_parser = clap::value_parser!(u64).range(3_600..=365 * 86_400))]
    seconds: u64,
    /// Seed for keys and traffic (the same seed replays the same receipts).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Leave everything an auditor needs in this (new or empty) directory: the
    /// aggregator's SQLite log, the journals, the chain view (`chain.json`).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// One host: its attestor, signing key and operator account name.
struct Host {
    attestor: Attestor,
    key: SigningKey,
    operator: String,
}

/// One planned call.
struct Planned {
    time: u64,
    payer: usize,
    host: usize,
    model: usize,
    seq: u64,
    facts: UsageFacts,
    /// The wash payer's calls are attested alone, so their timestamps are exact.
    alone: bool,
}

fn bar(multi: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    multi.add(audit::bar(len, what))
}

fn b(bytes: &[u8]) -> Binary {
    Binary::from(bytes)
}

fn contributors(model: &Model) -> [(String, u16); 2] {
    [
        (format!("{}-lab", model.name), 7_000),
        (format!("{}-data", model.name), 3_000),
    ]
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty; --keep needs a new directory", d.display());
            }
            d.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ok = runtime.block_on(demo(&args, &dir))?;
    if let Some(keep) = &args.keep {
        println!();
        println!("kept in {}:", keep.display());
        println!("  aggregator.sqlite  the log: receipts, nodes, batches, checkpoints");
        println!("  host-N.journal     each host's journal (and its shipping cursor)");
        println!("  chain.json         the chain view: batches, deposits, registries, payouts");
        println!(
            "audit it:  tally audit --data {} --report {}",
            keep.display(),
            keep.join("report").display()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(
    clippy::too_many_lines,
    reason = "the demo is one story, told in order"
)]
async fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<bool> {
    let started = Instant::now();
    let models = Arc::new(workload::models());
    let sandbox = crate::guest::sandbox(None)?;
    let guest = sandbox.guest_hash();
    let (n_payers, n_hosts) = (args.payers as usize, args.hosts as usize);
    let mut rng = Rng::new(args.seed);
    let payers: Vec<SigningKey> = (0..=n_payers)
        .map(|_| SigningKey::from_seed(&rng.bytes32()))
        .collect();
    let wash = n_payers; // the last payer key is the wash trader's
    let host_keys: Vec<SigningKey> = (0..n_hosts)
        .map(|_| SigningKey::from_seed(&rng.bytes32()))
        .collect();
    let agg_key = SigningKey::from_seed(&rng.bytes32());
    let dishonest = n_hosts.min(n_payers) - 1;
    let wash_model = &models[workload::WASH_MODEL];
    let wash_funder = contributors(wash_model)[0].0.clone();

    println!(
        "Tally demo: {} hosts, {} payers (+1 wash trader), {} models, {} calls over {:.1} simulated days",
        n_hosts,
        n_payers,
        models.len(),
        args.calls,
        args.seconds as f64 / 86_400.0
    );
    println!("  guest     {guest} (pinned, sandboxed in wasmtime)");
    println!("  data      {}", dir.display());

    // ---- The devnet: contract, registries, bonds, deposits. ----
    let config = DevnetConfig {
        wasm: tally_devnet::COMMITTED_CONTRACT.to_vec(),
        chain_id: workload::CHAIN_ID.into(),
        denom: "utally".into(),
        prefix: "tally",
        genesis_time: 1_767_571_200,
        contract_address: Some(workload::CONTRACT.into()),
        gas: tally_devnet::GasConfig::default(),
        max_tx_bytes: Some(tally_devnet::DEFAULT_MAX_TX_BYTES),
        block_max_gas: Some(tally_devnet::DEFAULT_BLOCK_MAX_GAS),
    };
    let sink = cosmwasm_vm::testing::MockApi::default()
        .with_prefix(config.prefix)
        .addr_make("protocol-sink");
    let mut genesis: Vec<(String, u128)> = vec![("admin".into(), 0)];
    genesis.extend((0..n_hosts).map(|h| (format!("operator{h}"), 2 * BOND)));
    genesis.extend((0..n_payers).map(|p| (format!("payer{p}"), DEPOSIT)));
    genesis.push((wash_funder.clone(), DEPOSIT));
    let genesis_ref: Vec<(&str, u128)> = genesis.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let devnet = Devnet::start(
        config,
        &genesis_ref,
        "admin",
        &dev_instantiate(WINDOW, BOND, sink.clone()),
    )
    .context("starting the devnet")?;
    let supply = devnet.supply();
    let admin = devnet.account("admin");
    for m in models.iter() {
        admin
            .execute(
                &ExecuteMsg::RegisterModel {
                    model_id: b(&m.id().0),
                    contributors: contributors(m)
                        .iter()
                        .map(|(n, w)| ContributorMsg {
                            address: devnet.addr(n),
                            weight_bps: *w,
                        })
                        .collect(),
                    schedule: m.schedule.encode().into(),
                    host_share_bps: HOST_SHARE_BPS,
                    protocol_fee_bps: PROTOCOL_FEE_BPS,
                    guests: vec![b(&guest.0)],
                },
                0,
            )
            .await
            .with_context(|| format!("registering {}", m.name))?;
    }
    let submitter = Arc::new(devnet.account("aggregator"));
    admin
        .execute(
            &ExecuteMsg::RegisterAggregator {
                key: b(&agg_key.public_key().0),
                address: submitter.address(),
            },
            0,
        )
        .await
        .context("registering the aggregator")?;
    for (h, key) in host_keys.iter().enumerate() {
        let model_ids: Vec<Digest> = models.iter().map(|m| m.id()).collect();
        devnet
            .account(&format!("operator{h}"))
            .register_host(
                workload::CHAIN_ID,
                workload::CONTRACT,
                key,
                &model_ids,
                BOND,
            )
            .await
            .with_context(|| format!("registering host {h}"))?;
    }
    for (p, key) in payers.iter().enumerate() {
        let funder = if p == wash {
            // The wash model's contributor hides behind a fresh address: one hop of bank
            // transfers that the report's funding trace must follow back to an insider.
            devnet
                .send(
                    &devnet.addr(&wash_funder),
                    &devnet.addr(WASH_RELAY),
                    DEPOSIT / 10,
                )
                .context("the wash trader's transfer")?;
            WASH_RELAY.to_string()
        } else {
            format!("payer{p}")
        };
        let amount = if p == wash { DEPOSIT / 10 } else { DEPOSIT / 2 };
        devnet
            .account(&funder)
            .deposit(&key.public_key(), amount)
            .await
            .with_context(|| format!("deposit of payer {p}"))?;
    }
    let watcher = devnet.account("watcher");
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(&watcher).await?;
    println!(
        "  devnet    contract {} with {} models, {} hosts bonded, {} escrows (1 funded by {} through {WASH_RELAY})",
        workload::CONTRACT,
        models.len(),
        n_hosts,
        payers.len(),
        wash_funder
    );

    // ---- The aggregator on SQLite, over HTTP on an ephemeral port. ----
    let policy = Policy {
        chain_id: workload::CHAIN_ID.into(),
        contract: workload::CONTRACT.into(),
        hosts: host_keys.iter().map(SigningKey::public_key).collect(),
        models: models
            .iter()
            .map(|m| {
                (
                    m.id(),
                    ModelPolicy {
                        guests: vec![guest],
                        schedule: m.schedule.clone(),
                    },
                )
            })
            .collect(),
    };
    let mut cfg = Config::new(policy);
    // The aggregator checks signatures, chains, totals and escrow on every receipt but
    // re-executes none here: catching re-pricing is left to the watcher, so the injected
    // fraud reaches a batch on chain (in production, sample some per mille).
    cfg.reexecute_per_mille = 0;
    cfg.seal_threshold = u64::MAX;
    let db = dir.join(audit::DB_FILE);
    let store = SqliteStore::open(&db).await.context("opening the log")?;
    let agg = Arc::new(
        Aggregator::open(
            store,
            cfg,
            SigningKey::from_seed(&agg_key.seed()),
            vec![Arc::clone(&sandbox)],
            Arc::clone(&escrow) as Arc<dyn tally_aggregator::EscrowView>,
        )
        .await?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = tally_aggregator::router(Arc::clone(&agg));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("  aggregator {url} (SQLite {})", db.display());
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&submitter));

    // ---- Hosts: an attestor and a shipper each. ----
    let mut hosts = Vec::with_capacity(n_hosts);
    let mut shippers = Vec::with_capacity(n_hosts);
    for (h, key) in host_keys.iter().enumerate() {
        let journal = dir.join(format!("host-{h}.journal"));
        let attestor = Attestor::open(
            AttestorConfig {
                chain_id: workload::CHAIN_ID.into(),
                contract: workload::CONTRACT.into(),
                journal_path: journal.clone(),
                group_commit: GroupCommit::default(),
                schedules: models.iter().map(|m| m.schedule.clone()).collect(),
            },
            SigningKey::from_seed(&key.seed()),
            Arc::clone(&sandbox),
        )
        .await?;
        let host = Arc::new(Host {
            attestor,
            key: SigningKey::from_seed(&key.seed()),
            operator: format!("operator{h}"),
        });
        let durable = Arc::clone(&host);
        let mut ship = ShipConfig::new(url.clone(), journal);
        ship.max_batch = 4_096;
        shippers.push(Some(
            Shipper::open(ship)?
                .with_durable_end(move || durable.attestor.journal_stats().durable_len)
                .with_host_key(SigningKey::from_seed(&key.seed())),
        ));
        hosts.push(host);
    }

    // ---- The traffic plan. ----
    let span_ms = args.seconds * 1_000;
    let plan = plan_calls(&mut rng, &models, args, span_ms);
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
        wash_model.name,
        n_payers,
        models
            .iter()
            .zip(&honest_by_model)
            .map(|(m, n)| format!("{} {n}", m.name))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // ---- Epochs: attest, ship over HTTP, seal, submit, watch, finalize. ----
    let multi = MultiProgress::new();
    let attest_pb = bar(&multi, plan.len() as u64, "attest");
    let ship_pb = bar(&multi, plan.len() as u64, "ship+ingest");
    let payers = Arc::new(payers);
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
            let (payers, models, pb) =
                (Arc::clone(&payers), Arc::clone(&models), attest_pb.clone());
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
            let (agg, pb) = (Arc::clone(&agg), ship_pb.clone());
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
        let to = sealed.first().context("nothing to seal")?.header.tree_size;
        let from = settle_log.last().map_or(0, |s| s.tree_size);
        let mut watched = false;
        let mut gas: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        loop {
            match settler.step().await? {
                Step::Submitted { batch, tx } => {
                    gas.entry(batch).or_default().0 = tx.gas_used;
                    // The watcher re-executes the week's leaves once: the later batches of
                    // the same tree vouch for the same leaves.
                    if !watched {
                        let challenged =
                            watch(&db, &agg, &watcher, batch, from, to, &sandbox, &models).await?;
                        ensure!(
                            challenged.is_none(),
                            "the watcher challenged honest batch {batch}"
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

    // ---- The injected fraud: a dishonest host re-prices one call and signs it. ----
    let host = &hosts[dishonest];
    let forged = forge(
        host, &payers, &models, &sandbox, dishonest, n_hosts, n_payers,
    )?;
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
        &db,
        &agg,
        &watcher,
        fraud_batch,
        header.header.tree_size - 1,
        header.header.tree_size,
        &sandbox,
        &models,
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

    // ---- Claims and conservation. ----
    let mut parties: Vec<(String, String)> = Vec::new(); // (account name, role)
    for m in models.iter() {
        for (n, _) in contributors(m) {
            parties.push((n, format!("contributor of {}", m.name)));
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        let role = if h == dishonest {
            format!("host {h} (slashed)")
        } else {
            format!("host {h}")
        };
        parties.push((host.operator.clone(), role));
    }
    parties.push(("protocol-sink".into(), "protocol fee sink".into()));
    parties.push(("watcher".into(), "challenger".into()));
    let mut payouts = Vec::new();
    for (name, role) in &parties {
        let account = devnet.account(name);
        let address = account.address();
        let owed: BalanceResponse = account
            .query(&QueryMsg::Balance {
                address: address.clone(),
            })
            .await?;
        let before = devnet.balance(&address);
        if owed.amount.u128() > 0 {
            account
                .claim()
                .await
                .with_context(|| format!("claim of {name}"))?;
        }
        let received = devnet.balance(&address) - before;
        ensure!(
            received == owed.amount.u128(),
            "{name} was owed {} and received {received}",
            owed.amount
        );
        payouts.push(PayoutView {
            name: name.clone(),
            address,
            role: role.clone(),
            amount: received,
            model: None,
            time_ms: 0,
        });
    }
    println!();
    println!("{:<28} {:<36} {:>16}", "account", "role", "received (µ)");
    for p in &payouts {
        println!("{:<28} {:<36} {:>16}", p.name, p.role, p.amount);
    }

    let mut deposited = 0u128;
    let mut left = 0u128;
    for key in payers.iter() {
        let e = watcher.escrow(&key.public_key()).await?;
        left += e.balance.u128() + e.reserved.u128();
    }
    let moves = watcher.escrow_moves(0).await?;
    for m in &moves {
        deposited += m.amount;
    }
    let debited = deposited - left;
    let fees_settled: u128 = settle_log.iter().map(|s| s.total).sum();
    let fees_attested: u128 = fees_by_payer.values().sum();
    let slashed = hr.slashed.u128();
    let paid: u128 = payouts.iter().map(|p| p.amount).sum();
    let revenue_paid = paid.saturating_sub(slashed);
    println!();
    println!("conservation (to the unit, µ):");
    println!("  escrow debited                   {debited:>16}");
    println!("  fees of the honest receipts      {fees_attested:>16}");
    println!("  debits of finalized batches      {fees_settled:>16}");
    println!("  paid out as revenue              {revenue_paid:>16}");
    println!("  paid out from the slashed bond   {slashed:>16}");
    let supply_ok = devnet.supply() == supply;
    let bonds: u128 = BOND * n_hosts as u128 - slashed;
    let contract_ok = devnet.balance(&devnet.contract()) == left + bonds;
    let ok = debited == fees_attested
        && debited == fees_settled
        && debited == revenue_paid
        && paid == debited + slashed
        && supply_ok
        && contract_ok;
    println!(
        "  {}: debited = receipts = batches = revenue paid; supply unchanged: {supply_ok}; contract holds escrows + bonds: {contract_ok}",
        if ok { "OK" } else { "FAILED" }
    );

    // ---- The chain view the auditor reads. ----
    let view = chain_view(
        &devnet,
        &watcher,
        &models,
        &hosts,
        &agg_key.public_key(),
        &sink,
        guest,
        &payers,
        &moves,
        payouts,
    )
    .await?;
    std::fs::write(
        dir.join(audit::CHAIN_FILE),
        serde_json::to_string_pretty(&view)?,
    )?;
    // The aggregator's API checked against the chain, as an auditor online would.
    println!();
    let online =
        tally_auditor::audit_online(&url, &view, audit::cores(), &audit::Bars::default()).await?;
    audit::print_online(&url, &view, &online);
    let online = online.passed();
    println!("verdict: {}", if online { "PASS" } else { "FAIL" });
    server.abort();
    println!();
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    if !ok {
        eprintln!("error: conservation check failed");
    }
    if !online {
        eprintln!("error: the aggregator's checkpoints do not match the chain");
    }
    Ok(ok && online)
}

/// One settled batch, for the table.
struct Settled {
    batch: u64,
    tree_size: u64,
    channels: usize,
    total: u128,
    submit_gas: u64,
    finalize_gas: u64,
}

/// Draws the whole run's calls, in time order, with channel sequence numbers assigned.
fn plan_calls(rng: &mut Rng, models: &[Model], args: &DemoArgs, span_ms: u64) -> Vec<Planned> {
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
async fn attest_host(
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

/// What a watcher does with each submitted batch: reads its new leaves from the log,
/// re-executes every one, and challenges the first re-priced receipt with its inclusion
/// proof in the batch's tree. Returns the challenge, if one was made.
#[allow(
    clippy::too_many_arguments,
    reason = "the demo's parts, passed in plainly"
)]
async fn watch(
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
fn forge(
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

/// Reads what the auditor needs from the chain: every batch, the registries, the deposit
/// history with funders, the escrows and the payouts.
#[allow(
    clippy::too_many_arguments,
    reason = "the demo's parts, passed in plainly"
)]
async fn chain_view(
    devnet: &Devnet,
    chain: &DevnetAccount,
    models: &[Model],
    hosts: &[Arc<Host>],
    aggregator: &PublicKey,
    sink: &str,
    guest: Digest,
    payers: &[SigningKey],
    moves: &[tally_aggregator::chain::EscrowMove],
    payouts: Vec<PayoutView>,
) -> anyhow::Result<ChainView> {
    let head = chain.head().await?;
    let last = head.pending_batch.unwrap_or(head.finalized_batch) + 1;
    let mut batches = Vec::new();
    for n in 1..=last {
        let Some(r) = chain.batch(n).await? else {
            continue;
        };
        batches.push(BatchView {
            number: n,
            status: r.status,
            header_hash: digest(&r.header_hash)?,
            root: digest(&r.root)?,
            tree_size: r.tree_size,
            prev_tree_size: r.prev_tree_size,
            total: r.total.u128(),
        });
    }
    let mut host_views = Vec::new();
    for h in hosts {
        let r: HostResponse = chain
            .query(&QueryMsg::Host {
                key: b(&h.key.public_key().0),
            })
            .await?;
        host_views.push(HostView {
            key: h.key.public_key(),
            operator: r.operator.to_string(),
            bond: r.bond.u128(),
            slashed: r.slashed.u128(),
        });
    }
    let mut escrows = Vec::new();
    for p in payers {
        let e = chain.escrow(&p.public_key()).await?;
        escrows.push(EscrowView {
            payer: p.public_key(),
            balance: e.balance.u128() + e.reserved.u128(),
        });
    }
    Ok(ChainView {
        chain_id: devnet.chain_id(),
        contract: devnet.contract(),
        aggregator_key: *aggregator,
        guest,
        protocol_sink: sink.into(),
        models: models
            .iter()
            .map(|m| ModelView {
                id: m.id(),
                name: m.name.into(),
                contributors: contributors(m)
                    .iter()
                    .map(|(n, w)| (devnet.addr(n), *w))
                    .collect(),
                schedule: m.schedule.clone(),
            })
            .collect(),
        hosts: host_views,
        batches,
        deposits: moves
            .iter()
            .filter(|m| m.kind == tally_aggregator::chain::MoveKind::Deposit)
            .map(|m| DepositView {
                payer: m.payer,
                funder: m.party.clone(),
                amount: m.amount,
                height: m.height,
                time_ms: 0,
            })
            .collect(),
        escrows,
        payouts,
        transfers: devnet
            .sends()
            .into_iter()
            .map(|t| TransferView {
                from: t.from,
                to: t.to,
                amount: t.amount,
                time_ms: t.time.saturating_mul(1000),
            })
            .collect(),
        incomplete: Vec::new(),
    })
}

fn digest(bytes: &[u8]) -> anyhow::Result<Digest> {
    Ok(Digest(
        bytes.try_into().context("a chain hash is not 32 bytes")?,
    ))
}
