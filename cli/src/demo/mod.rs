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
//!
//! The run is told in six steps, one file each: [`genesis`], [`deployment`], [`traffic`],
//! [`epochs`], [`fraud`] and [`report`]; this file holds the cast (every key, drawn from the
//! seed) and tells the steps in order.

mod deployment;
mod epochs;
mod fraud;
mod genesis;
mod report;
mod traffic;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use cosmwasm_std::Binary;
use indicatif::{MultiProgress, ProgressBar};
use tally_aggregator::chain::ChainEscrow;
use tally_aggregator::settler::Settler;
use tally_aggregator::{Aggregator, SqliteStore};
use tally_attestor::{Attestor, Shipper};
use tally_devnet::{Devnet, DevnetAccount};
use tally_protocol::{Digest, SigningKey};

use crate::audit;
use crate::workload::{self, Model, Rng};

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
pub(super) struct Host {
    attestor: Attestor,
    key: SigningKey,
    operator: String,
}

/// Who takes part: every key and the models, drawn from the seed.
pub(super) struct Cast {
    pub(super) models: Arc<Vec<Model>>,
    pub(super) sandbox: Arc<tally_sandbox::Sandbox>,
    pub(super) guest: Digest,
    /// The payers' keys; the last one is the wash trader's.
    pub(super) payers: Arc<Vec<SigningKey>>,
    pub(super) n_payers: usize,
    pub(super) n_hosts: usize,
    /// The wash trader's index among the payers.
    pub(super) wash: usize,
    pub(super) host_keys: Vec<SigningKey>,
    pub(super) agg_key: SigningKey,
    /// The host that signs the re-priced receipt.
    pub(super) dishonest: usize,
    /// The wash model's contributor who funds the wash trader.
    pub(super) wash_funder: String,
}

/// The devnet and the accounts the run acts as (step 1's result).
pub(super) struct DevChain {
    pub(super) devnet: Devnet,
    /// The aggregator's account, which submits and finalizes batches.
    pub(super) submitter: Arc<DevnetAccount>,
    /// The watcher's account, which challenges and reads the chain.
    pub(super) watcher: DevnetAccount,
    pub(super) escrow: Arc<ChainEscrow>,
    /// The protocol's fee sink address.
    pub(super) sink: String,
    /// The bank's total supply at genesis (conservation checks it is unchanged).
    pub(super) supply: u128,
}

/// The aggregator and the hosts (step 2's result).
pub(super) struct Deployment {
    pub(super) agg: Arc<Aggregator<SqliteStore>>,
    /// The aggregator's HTTP base URL.
    pub(super) url: String,
    pub(super) server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub(super) settler: Settler<SqliteStore, DevnetAccount>,
    pub(super) hosts: Vec<Arc<Host>>,
    pub(super) shippers: Vec<Option<Shipper>>,
    /// The watcher (`tally watch`'s library), following the log over HTTP and the chain,
    /// and challenging frauds from the watcher's account.
    pub(super) watcher: tally_auditor::watcher::Watcher<DevnetAccount>,
}

pub(super) fn bar(multi: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    multi.add(audit::bar(len, what))
}

pub(super) fn b(bytes: &[u8]) -> Binary {
    Binary::from(bytes)
}

pub(super) fn contributors(model: &Model) -> [(String, u16); 2] {
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
    let host_keys: Vec<SigningKey> = (0..n_hosts)
        .map(|_| SigningKey::from_seed(&rng.bytes32()))
        .collect();
    let agg_key = SigningKey::from_seed(&rng.bytes32());
    let wash_funder = contributors(&models[workload::WASH_MODEL])[0].0.clone();
    let cast = Cast {
        models,
        sandbox,
        guest,
        payers: Arc::new(payers),
        n_payers,
        n_hosts,
        wash: n_payers,
        host_keys,
        agg_key,
        dishonest: n_hosts.min(n_payers) - 1,
        wash_funder,
    };

    println!(
        "Tally demo: {} hosts, {} payers (+1 wash trader), {} models, {} calls over {:.1} simulated days",
        n_hosts,
        n_payers,
        cast.models.len(),
        args.calls,
        args.seconds as f64 / 86_400.0
    );
    println!("  guest     {guest} (pinned, sandboxed in wasmtime)");
    println!("  data      {}", dir.display());

    let chain = genesis::start(&cast).await?;
    let mut dep = deployment::start(&cast, &chain, dir).await?;
    let plan = traffic::plan(&mut rng, &cast, args);
    let epochs = epochs::run(&cast, &chain, &mut dep, plan, args.seconds * 1_000).await?;
    let slashed = fraud::inject_and_catch(&cast, &chain, &mut dep, dir).await?;
    let verdict = report::settle_up(&cast, &chain, &dep, &epochs, &slashed, dir).await?;
    dep.server.abort();
    println!();
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    if !verdict.conserved {
        eprintln!("error: conservation check failed");
    }
    if !verdict.online {
        eprintln!("error: the aggregator's checkpoints do not match the chain");
    }
    if !verdict.rest {
        eprintln!("error: the chain view read through REST is not the demo's");
    }
    Ok(verdict.conserved && verdict.online && verdict.rest)
}
