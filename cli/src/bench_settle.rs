//! `tally bench settle`: what settlement costs in SDK gas as a wasmd chain charges it (the
//! devnet's model: VM gas / 140,000, the SDK's KV-store gas, 10 gas per transaction byte,
//! instance setup, see `tally_devnet::gas`), measured on the committed contract.
//!
//! For each batch size it sets up a deployment with that many payers (one channel each),
//! settles a first batch of every channel, then measures the steady state: a second batch of
//! every channel in a log of `--log` leaves (the inclusion proofs' depth), its finalize, and
//! once a challenge and a claim. In the same run it measures the floor of one channel: the
//! bytes of its receipt, its two signature checks and the two records it must write, and
//! prints what settling a day's traffic costs at a stated gas price.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, ensure};
use clap::Args;
use cosmwasm_std::Binary;
use tally_aggregator::budget::{BatchBudget, Shape, proof_depth, receipt_len};
use tally_aggregator::chain::{BatchSubmission, Chain};
use tally_contracts::msg::{ContributorMsg, ExecuteMsg, FraudProof, LeafProof};
use tally_devnet::{
    DEFAULT_BLOCK_MAX_GAS, DEFAULT_MAX_TX_BYTES, Devnet, DevnetAccount, DevnetConfig, GasConfig,
    GasUsed, dev_instantiate,
};
use tally_protocol::merkle::{
    CompactRange, MemoryTree, consistency_proof, inclusion_proof, leaf_hash,
};
use tally_protocol::{
    BatchHeader, ChannelDebit, Digest, MeterInput, Receipt, SignedReceipt, SigningKey, sign_group,
};

/// Host-log proof hashes the printed receipt size assumes: a host a million receipts
/// into its log (at most `⌈log₂ n⌉`, about half that on average).
const HOST_PROOF: usize = 20;

use crate::workload::{self, Rng};

const DEPOSIT: u128 = 1_000_000_000_000_000;
const BOND: u128 = 1_000_000;
const WINDOW: u64 = 3_600;

#[derive(Args)]
pub(crate) struct SettleArgs {
    /// Channels per measured batch (comma-separated). The budget's batch size for `--log`
    /// is measured too. Their receipts are spread over the log.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,4096")]
    channels: Vec<usize>,
    /// Leaves in the log when the measured batch is sealed (its inclusion proofs have
    /// ⌈log₂⌉ of it hashes): one day of 1,000,000 receipts by default.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    log: u64,
    /// Receipts per channel in the measured batch (only the latest is sent: the cost must
    /// not grow with this).
    #[arg(long, default_value_t = 1)]
    receipts: usize,
    /// Receipts settled per day, for the cost line.
    #[arg(long, default_value_t = 1_000_000)]
    receipts_per_day: u64,
    /// Channels with usage per day, for the cost line.
    #[arg(long, default_value_t = 10_000)]
    channels_per_day: usize,
    /// Gas price, in the fee denomination's smallest unit per gas (0.025 is a common
    /// minimum, e.g. 0.025 uatom or untrn; chains differ).
    #[arg(long, default_value_t = 0.025)]
    gas_price: f64,
}

/// One measured batch.
struct Measured {
    channels: usize,
    submit: GasUsed,
    submit_gas: u64,
    finalize_gas: u64,
}

/// A deployment on a fresh devnet with no transaction limits (so oversized batches can be
/// measured), one host, `payers` funded payers; payer `p` calls model `p % models`.
struct Deployment {
    devnet: Devnet,
    submitter: DevnetAccount,
    aggregator: SigningKey,
    host: SigningKey,
    payers: Vec<SigningKey>,
    models: Vec<workload::Model>,
    sandbox: Arc<tally_sandbox::Sandbox>,
    guest: Digest,
}

/// The models of a deployment: the demo's first with its two contributors, or `n` copies
/// of its price list under other ids with `contributors` contributors each.
fn bench_models(
    n: usize,
    contributors: usize,
    devnet: &Devnet,
) -> Vec<(workload::Model, Vec<ContributorMsg>)> {
    let base = workload::models().swap_remove(0);
    if n == 1 {
        let people = ["lab", "data"]
            .iter()
            .zip([7_000, 3_000])
            .map(|(name, w)| ContributorMsg {
                address: devnet.addr(name),
                weight_bps: w,
            })
            .collect();
        return vec![(base, people)];
    }
    (0..n)
        .map(|i| {
            let mut schedule = base.schedule.clone();
            schedule.model = Digest::sha256(format!("bench model {i}").as_bytes());
            let each = 10_000 / contributors as u16;
            let people = (0..contributors)
                .map(|k| ContributorMsg {
                    address: devnet.addr(&format!("c{i}-{k}")),
                    weight_bps: if k == 0 {
                        10_000 - each * (contributors as u16 - 1)
                    } else {
                        each
                    },
                })
                .collect();
            let model = workload::Model {
                name: base.name,
                schedule,
                prompt_median: base.prompt_median,
                completion_median: base.completion_median,
                popularity: base.popularity,
            };
            (model, people)
        })
        .collect()
}

async fn deploy(
    payers: usize,
    sandbox: &Arc<tally_sandbox::Sandbox>,
) -> anyhow::Result<Deployment> {
    deploy_with(payers, 1, 2, sandbox).await
}

async fn deploy_with(
    payers: usize,
    models: usize,
    contributors: usize,
    sandbox: &Arc<tally_sandbox::Sandbox>,
) -> anyhow::Result<Deployment> {
    let mut config = DevnetConfig::committed(workload::CHAIN_ID);
    config.contract_address = Some(workload::CONTRACT.into());
    config.max_tx_bytes = None;
    config.block_max_gas = None;
    let devnet = Devnet::start(
        config,
        &[
            ("admin", 0),
            ("operator", 10 * BOND),
            ("funder", DEPOSIT * (payers as u128 + 1)),
        ],
        "admin",
        &dev_instantiate(WINDOW, BOND, Devnet::address_of("tally", "sink")),
    )?;
    let mut rng = Rng::new(18);
    let aggregator = SigningKey::from_seed(&rng.bytes32());
    let host = SigningKey::from_seed(&rng.bytes32());
    let guest = sandbox.guest_hash();
    let admin = devnet.account("admin");
    let registered = bench_models(models, contributors, &devnet);
    for (model, people) in &registered {
        admin
            .execute(
                &ExecuteMsg::RegisterModel {
                    model_id: b(&model.id().0),
                    contributors: people.clone(),
                    schedule: model.schedule.encode().into(),
                    host_share_bps: 2_000,
                    protocol_fee_bps: 500,
                    guests: vec![b(&guest.0)],
                },
                0,
            )
            .await?;
    }
    let models: Vec<workload::Model> = registered.into_iter().map(|(m, _)| m).collect();
    let submitter = devnet.account("aggregator");
    admin
        .execute(
            &ExecuteMsg::RegisterAggregator {
                key: b(&aggregator.public_key().0),
                address: submitter.address(),
            },
            0,
        )
        .await?;
    let model_ids: Vec<Digest> = models.iter().map(|m| m.id()).collect();
    devnet
        .account("operator")
        .register_host(
            workload::CHAIN_ID,
            workload::CONTRACT,
            &host,
            &model_ids,
            BOND,
        )
        .await?;
    let payers: Vec<SigningKey> = (0..payers)
        .map(|_| SigningKey::from_seed(&rng.bytes32()))
        .collect();
    let funder = devnet.account("funder");
    for p in &payers {
        funder.deposit(&p.public_key(), DEPOSIT).await?;
    }
    Ok(Deployment {
        devnet,
        submitter,
        aggregator,
        host,
        payers,
        models,
        sandbox: Arc::clone(sandbox),
        guest,
    })
}

fn b(bytes: &[u8]) -> Binary {
    Binary::from(bytes)
}

/// The host's side: its chain of receipts and each channel's seq and running total.
struct Host {
    seq: u64,
    /// The host log's frontier: each receipt is signed as a group of one.
    log: CompactRange,
    channels: Vec<(u64, u128)>,
    rng: Rng,
}

impl Host {
    fn call(
        &mut self,
        d: &Deployment,
        payer: usize,
        reprice: bool,
    ) -> anyhow::Result<SignedReceipt> {
        let (seq, total) = self.channels[payer];
        let seq = seq + 1;
        let now = 1_767_571_200_000 + self.seq * 1_000;
        let request = Digest(self.rng.bytes32());
        let model = &d.models[payer % d.models.len()];
        let facts = workload::facts(&mut self.rng, model, request, now);
        let authorization = workload::authorize(
            &d.payers[payer],
            &d.host.public_key(),
            model,
            seq,
            request,
            now + 3_600_000,
        );
        let mut metered = d.sandbox.meter(&MeterInput {
            facts: facts.clone(),
            schedule: model.schedule.clone(),
            max_fee: authorization.authorization.max_fee,
        })?;
        if reprice {
            metered.fee += 1;
        }
        let receipt = Receipt {
            authorization,
            facts,
            metered,
            guest: d.guest,
            schedule: model.schedule.hash(),
            host_seq: self.seq + 1,
            channel_total: total + metered.fee,
            timestamp_ms: now,
        };
        // A group of one (a host at low load): one checkpoint signature per receipt.
        let receipt = sign_group(&d.host, &mut self.log, vec![receipt])
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?
            .1
            .remove(0);
        self.seq += 1;
        self.channels[payer] = (seq, receipt.receipt.channel_total);
        Ok(receipt)
    }
}

/// The aggregator's side: the log (receipts and filler leaves) and the batches sealed.
struct Log {
    tree: MemoryTree,
    receipts: Vec<(u64, SignedReceipt)>,
    last: Option<(u64, Digest, u64)>,
}

impl Log {
    fn append(&mut self, r: SignedReceipt) {
        let leaf = self.tree.size();
        self.tree.append(leaf_hash(&r.encode()));
        self.receipts.push((leaf, r));
    }

    /// The next batch over the whole log, debiting each channel's latest receipt since the
    /// last batch (`collected`: what the chain collected per payer).
    fn seal(&mut self, d: &Deployment, collected: &[u128]) -> anyhow::Result<BatchSubmission> {
        let size = self.tree.size();
        let (from, n, prev) = match self.last {
            Some((s, h, n)) => (s, n + 1, h),
            None => (0, 1, Digest::ZERO),
        };
        let mut latest: std::collections::BTreeMap<
            tally_protocol::ChannelId,
            (u64, &SignedReceipt),
        > = Default::default();
        for (leaf, r) in self.receipts.iter().filter(|(l, _)| *l >= from) {
            latest.insert(r.receipt.channel(), (*leaf, r));
        }
        let mut debits = Vec::new();
        let mut receipts = Vec::new();
        for (channel, (leaf, r)) in &latest {
            let payer = d
                .payers
                .iter()
                .position(|p| p.public_key() == r.receipt.authorization.authorization.payer)
                .context("a payer")?;
            debits.push(ChannelDebit {
                channel: *channel,
                amount: r.receipt.channel_total - collected[payer],
            });
            let proof = inclusion_proof(&self.tree, *leaf, size)?;
            receipts.push(LeafProof {
                receipt: r.encode().into(),
                leaf_index: *leaf,
                hashes: proof.hashes.iter().map(|h| b(&h.0)).collect(),
            });
        }
        let header = BatchHeader {
            chain_id: workload::CHAIN_ID.into(),
            contract: workload::CONTRACT.into(),
            aggregator: d.aggregator.public_key(),
            batch: n,
            prev_header: prev,
            tree_size: size,
            root: self.tree.root(),
            total: debits.iter().map(|d| d.amount).sum(),
            debits,
        };
        let consistency = match self.last {
            Some((s, _, _)) if s > 0 && s < size => consistency_proof(&self.tree, s, size)?.hashes,
            _ => Vec::new(),
        };
        self.last = Some((size, header.hash(), n));
        Ok(BatchSubmission {
            header: header.sign(&d.aggregator).encode(),
            consistency,
            receipts,
        })
    }
}

async fn finalize(d: &Deployment) -> anyhow::Result<u64> {
    d.devnet.advance(WINDOW);
    let mut gas = 0;
    loop {
        let tx = d.submitter.finalize().await?;
        gas += tx.gas_used;
        if tx.attribute("complete") != Some("false") {
            return Ok(gas);
        }
    }
}

/// Measures one batch of `channels` channels in a log of `log` leaves.
async fn measure(
    channels: usize,
    log: u64,
    receipts: usize,
    sandbox: &Arc<tally_sandbox::Sandbox>,
) -> anyhow::Result<(Measured, Deployment, Host, Log)> {
    let d = deploy(channels, sandbox).await?;
    let mut host = Host {
        seq: 0,
        log: CompactRange::new(),
        channels: vec![(0, 0); channels],
        rng: Rng::new(channels as u64),
    };
    let mut l = Log {
        tree: MemoryTree::new(),
        receipts: Vec::new(),
        last: None,
    };
    // A first settlement of every channel, so the measured one finds its records.
    for p in 0..channels {
        let r = host.call(&d, p, false)?;
        l.append(r);
    }
    let first = l.seal(&d, &vec![0; channels])?;
    d.submitter.submit_batch(&first).await?;
    finalize(&d).await?;
    let collected: Vec<u128> = host.channels.iter().map(|c| c.1).collect();
    // Every channel's new receipts spread evenly over a log of `log` leaves (other
    // channels' receipts in between stand as filler leaves), the last one of each channel
    // in the last round.
    let new = (channels * receipts) as u64;
    let target = log.max(l.tree.size() + new);
    let gap = (target - l.tree.size()) / new;
    let mut filler = Rng::new(7);
    for _ in 0..receipts {
        for p in 0..channels {
            for _ in 1..gap {
                l.tree.append(Digest(filler.bytes32()));
            }
            let r = host.call(&d, p, false)?;
            l.append(r);
        }
    }
    while l.tree.size() < target {
        l.tree.append(Digest(filler.bytes32()));
    }
    let batch = l.seal(&d, &collected)?;
    let tx = d.submitter.submit_batch(&batch).await?;
    let submit = tx.gas.context("the devnet reports gas")?;
    let finalize_gas = finalize(&d).await?;
    Ok((
        Measured {
            channels,
            submit,
            submit_gas: tx.gas_used,
            finalize_gas,
        },
        d,
        host,
        l,
    ))
}

pub(crate) fn run(args: SettleArgs) -> anyhow::Result<ExitCode> {
    ensure!(
        args.channels
            .iter()
            .all(|&n| (1..=tally_protocol::MAX_DEBITS).contains(&n)),
        "--channels: each between 1 and {}",
        tally_protocol::MAX_DEBITS
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

#[allow(clippy::too_many_lines, reason = "one table, then one paragraph")]
async fn bench(args: SettleArgs) -> anyhow::Result<ExitCode> {
    let sandbox = crate::guest::sandbox(None)?;
    let gas = GasConfig::default();
    let budget = BatchBudget::default();
    let shape = Shape {
        chain_id: workload::CHAIN_ID.into(),
        contract: workload::CONTRACT.into(),
        tree_size: args.log,
        host_log_size: 1 << HOST_PROOF,
    };
    let per_batch = budget.channels_per_batch(&shape);
    let mut sizes = args.channels.clone();
    if per_batch > 0 && !sizes.contains(&per_batch) {
        sizes.push(per_batch);
    }
    sizes.sort_unstable();
    println!(
        "settlement gas on the devnet (committed contract; SDK gas as wasmd charges it: VM / {}, \
         KV store, {} per tx byte, setup {} + signature {}, fixed estimate {})",
        gas.gas_multiplier,
        gas.tx_size_cost_per_byte,
        gas.setup(),
        gas.sig_verify_cost,
        gas.fixed_estimate
    );
    println!(
        "log of {} leaves (proofs of {} hashes), {} receipt(s) per channel in the batch; \
         receipts are {} bytes with a host-log proof of {HOST_PROOF} hashes (the measured \
         hosts' logs are shorter)",
        args.log,
        proof_depth(args.log),
        args.receipts,
        receipt_len(workload::CHAIN_ID, workload::CONTRACT, HOST_PROOF)
    );
    println!();
    println!(
        "| channels | SubmitBatch gas | tx bytes | Finalize gas | per channel (submit + finalize) | of which VM / storage / bytes | fits 1 MiB and 30M gas |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | --- | --- |");
    let mut rows = Vec::new();
    let mut small = None;
    for &n in &sizes {
        let (m, d, host, log) = measure(n, args.log, args.receipts, &sandbox).await?;
        let per = (m.submit_gas + m.finalize_gas) / n as u64;
        let g = &m.submit;
        let fits =
            g.tx_bytes <= DEFAULT_MAX_TX_BYTES as u64 && m.submit_gas <= DEFAULT_BLOCK_MAX_GAS;
        println!(
            "| {n} | {} | {} | {} | {per} | {} / {} / {} | {} |",
            m.submit_gas,
            g.tx_bytes,
            m.finalize_gas,
            g.vm / n as u64,
            g.storage / n as u64,
            g.tx_size / n as u64,
            if fits { "yes" } else { "no" }
        );
        if small.is_none() {
            small = Some((d, host, log));
        }
        rows.push(m);
    }

    // Challenge and claim, on the smallest deployment.
    let (d, mut host, mut log) = small.context("at least one size")?;
    let collected: Vec<u128> = host.channels.iter().map(|c| c.1).collect();
    let repriced = host.call(&d, 0, true)?;
    log.append(repriced.clone());
    let fraud = log.seal(&d, &collected)?;
    d.submitter.submit_batch(&fraud).await?;
    let (leaf, _) = log.receipts.last().context("the repriced receipt")?;
    let proof = inclusion_proof(&log.tree, *leaf, log.tree.size())?;
    let watcher = d.devnet.account("watcher");
    let head = d.submitter.head().await?;
    let challenge = watcher
        .challenge(
            head.pending_batch.context("a pending batch")?,
            FraudProof::Repriced {
                leaf: LeafProof {
                    receipt: repriced.encode().into(),
                    leaf_index: *leaf,
                    hashes: proof.hashes.iter().map(|h| b(&h.0)).collect(),
                },
            },
        )
        .await?;
    let lab = d.devnet.account("lab");
    let claim = lab.claim().await?;
    let deposit = d
        .devnet
        .account("funder")
        .deposit(&d.payers[0].public_key(), 1)
        .await?;
    println!();
    println!(
        "Challenge (repriced, {}-hash proof): {} gas; Claim: {} gas; Deposit: {} gas",
        proof.hashes.len(),
        challenge.gas_used,
        claim.gas_used,
        deposit.gas_used
    );

    // Finalize past its per-call bound: one batch whose 17 models have 64 contributors each
    // (1,088 credits, more than FINALIZE_CREDITS).
    let models = 17;
    let d = deploy_with(models, models, 64, &sandbox).await?;
    let mut host = Host {
        seq: 0,
        log: CompactRange::new(),
        channels: vec![(0, 0); models],
        rng: Rng::new(17),
    };
    let mut log = Log {
        tree: MemoryTree::new(),
        receipts: Vec::new(),
        last: None,
    };
    for p in 0..models {
        let r = host.call(&d, p, false)?;
        log.append(r);
    }
    let batch = log.seal(&d, &vec![0; models])?;
    d.submitter.submit_batch(&batch).await?;
    d.devnet.advance(WINDOW);
    let mut calls = Vec::new();
    loop {
        let tx = d.submitter.finalize().await?;
        let credits = tx.attribute("credits").unwrap_or("?").to_owned();
        calls.push(format!("{} gas for {credits} credits", tx.gas_used));
        if tx.attribute("complete") != Some("false") {
            break;
        }
    }
    println!(
        "Finalize of a batch of {models} models with 64 contributors each (at most {} credits per call): {}",
        tally_contracts::FINALIZE_CREDITS,
        calls.join(", then ")
    );

    // The floor of one channel, measured in the same run: the receipt's bytes (base64 in
    // the message), its payer's and host's signatures in the VM's batch check, and the
    // two records it must write and read (channel, escrow) at their measured sizes.
    let receipt_b64 =
        receipt_len(workload::CHAIN_ID, workload::CONTRACT, HOST_PROOF).div_ceil(3) * 4 + 2;
    let sigs = (2 * 21_000_000u64).div_ceil(gas.gas_multiplier);
    let (channel_value, escrow_value) = (20, 14);
    let kv = gas.read(34, channel_value)
        + gas.write(34, channel_value)
        + gas.read(34, escrow_value)
        + gas.write(34, escrow_value);
    let floor = gas.tx_size_cost_per_byte * receipt_b64 as u64 + sigs + kv;
    let big = rows
        .iter()
        .rev()
        .find(|m| m.channels >= 100)
        .unwrap_or(&rows[rows.len() - 1]);
    let measured = (big.submit_gas + big.finalize_gas) / big.channels as u64;
    let proof_bytes = proof_depth(args.log) as u64 * 47;
    println!(
        "floor of one channel: {floor} gas = receipt {receipt_b64} bytes × {} ({}) + two signatures {sigs} + \
         two reads and writes {kv}; measured {measured} at {} channels (the rest: its {}-hash \
         inclusion proof, {proof_bytes} bytes = {} gas, the header's 64 bytes, decoding)",
        gas.tx_size_cost_per_byte,
        gas.tx_size_cost_per_byte * receipt_b64 as u64,
        big.channels,
        proof_depth(args.log),
        proof_bytes * gas.tx_size_cost_per_byte
    );

    // A day: channels_per_day channels in batches of the budget's size.
    if per_batch == 0 {
        println!("the default budget admits no channel at this log size");
        return Ok(ExitCode::FAILURE);
    }
    let at = |n: usize| -> u64 {
        // Linear between the measured sizes around n (submit grows linearly; finalize is flat).
        let exact = rows.iter().find(|m| m.channels == n);
        if let Some(m) = exact {
            return m.submit_gas + m.finalize_gas;
        }
        let lo = rows.iter().rfind(|m| m.channels < n);
        let hi = rows.iter().find(|m| m.channels > n);
        match (lo, hi) {
            (Some(a), Some(b)) => {
                let (ga, gb) = (a.submit_gas + a.finalize_gas, b.submit_gas + b.finalize_gas);
                ga + (gb - ga) * (n - a.channels) as u64 / (b.channels - a.channels) as u64
            }
            (Some(a), None) | (None, Some(a)) => {
                (a.submit_gas + a.finalize_gas) * n as u64 / a.channels as u64
            }
            (None, None) => 0,
        }
    };
    let full = args.channels_per_day / per_batch;
    let rest = args.channels_per_day % per_batch;
    let day = full as u64 * at(per_batch) + if rest > 0 { at(rest) } else { 0 };
    let batches = full + usize::from(rest > 0);
    let fee = day as f64 * args.gas_price;
    println!(
        "a day of {} receipts from {} channels: {batches} batches of ≤ {per_batch} channels \
         (budget: {} bytes, {} gas per tx), {day} SDK gas = {} per channel, {:.2} per receipt; \
         at {} per gas: {:.0} units of the fee token's smallest denomination a day \
         ({:.2} whole tokens of 10^6), {:.4} per receipt",
        args.receipts_per_day,
        args.channels_per_day,
        budget.max_tx_bytes,
        budget.max_gas,
        day / args.channels_per_day as u64,
        day as f64 / args.receipts_per_day as f64,
        args.gas_price,
        fee,
        fee / 1e6,
        fee / args.receipts_per_day as f64,
    );
    println!(
        "batches go on chain one after another, one challenge window each: {batches} windows a day \
         fit only if a window is at most {:.1} h",
        24.0 / batches as f64
    );
    Ok(ExitCode::SUCCESS)
}
