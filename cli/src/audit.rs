//! `tally audit`: the auditor's command. It reads the chain view — from the chain itself
//! (`--chain-rest URL --contract ADDR`: a node's REST endpoint, see
//! `tally_auditor::chain_rest`) or from a file (`chain.json`) — and the aggregator's log — from a data directory (`tally demo --keep`), from any store the
//! aggregator runs on (`--store sqlite:PATH` or `--store postgres://…`), or from a running
//! aggregator's API (`--aggregator URL`) — and runs the audit of `tally-auditor`
//! (`auditor/src/audit.rs` lists every check), printing the verdict on one screen and,
//! with `--report`, writing the demand-quality report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tally_aggregator::SqliteStore;
use tally_aggregator::store::PgStore;
use tally_auditor::{Audit, AuditOptions, ChainReader, ChainView, Progress, RestOptions};
use tally_verifier::quality;

/// The aggregator's SQLite file in a data directory.
pub(crate) const DB_FILE: &str = "aggregator.sqlite";
/// The chain view in a data directory.
pub(crate) const CHAIN_FILE: &str = "chain.json";

#[derive(Args)]
pub(crate) struct AuditArgs {
    /// The data directory (`tally demo --keep DIR`): the aggregator's `aggregator.sqlite`
    /// and the chain view `chain.json`. The full audit.
    #[arg(long, required_unless_present_any = ["aggregator", "store"], conflicts_with_all = ["aggregator", "store"])]
    data: Option<PathBuf>,
    /// The aggregator's store, read-only: `sqlite:PATH` or `postgres://user@host/db`.
    /// The full audit, of any deployment (needs `--chain-rest` or `--chain`).
    #[arg(long, conflicts_with = "aggregator")]
    store: Option<String>,
    /// A running aggregator's base URL: checks its checkpoints (signed notes, consistency
    /// proofs) against the chain view's batch roots, and fetches, verifies and re-hashes
    /// every leaf up to the last batch (needs `--chain-rest` or `--chain`).
    #[arg(long)]
    aggregator: Option<String>,
    /// A Cosmos node's REST endpoint (`https://rest.example.org`): the chain view is read
    /// from the chain itself, the contract's queries and transaction history (needs
    /// `--contract`).
    #[arg(long, requires = "contract", conflicts_with = "chain")]
    chain_rest: Option<String>,
    /// The settlement contract's address (with `--chain-rest`).
    #[arg(long, requires = "chain_rest")]
    contract: Option<String>,
    /// Most pages of 100 transactions read of the contract's history (with `--chain-rest`;
    /// a longer history is an error rather than an audit against part of it).
    #[arg(long, default_value_t = 1_000, requires = "chain_rest", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_pages: u64,
    /// The chain view file (default: DATA/chain.json).
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Write the chain view the audit used to this file (the `chain.json` format), so the
    /// audit can be repeated offline with `--chain FILE`.
    #[arg(long)]
    export_chain: Option<PathBuf>,
    /// Write the demand-quality report (index.html, report.json) into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Verifier threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: Option<u64>,
}

/// A progress bar in the style of every long step of `demo` and `audit`.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:36}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// The audit's steps as progress bars on the terminal.
#[derive(Default)]
pub(crate) struct Bars(std::sync::Mutex<Option<ProgressBar>>);

impl Progress for Bars {
    fn begin(&self, what: &'static str, len: u64) {
        if let Ok(mut b) = self.0.lock() {
            *b = Some(bar(len, what));
        }
    }
    fn advance(&self, n: u64) {
        if let Ok(b) = self.0.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
        }
    }
    fn end(&self) {
        if let Ok(mut b) = self.0.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The chain view: read from the chain through `--chain-rest`, or from a file.
async fn chain_view(args: &AuditArgs) -> anyhow::Result<ChainView> {
    if let (Some(url), Some(contract)) = (&args.chain_rest, &args.contract) {
        let started = Instant::now();
        let mut options = RestOptions::default();
        options.max_pages = args.max_pages;
        let reader = ChainReader::new(url, contract, options)?;
        let view = reader
            .read()
            .await
            .with_context(|| format!("reading contract {contract} through {url}"))?;
        println!(
            "chain view of {} on {} read from {url}: {} batches, {} models, {} hosts, {} deposits, {} payouts, {} transfers{} ({} requests, {} KiB, {:.1} s)",
            view.contract,
            view.chain_id,
            view.batches.len(),
            view.models.len(),
            view.hosts.len(),
            view.deposits.len(),
            view.payouts.len(),
            view.transfers.len(),
            if view.incomplete.is_empty() {
                String::new()
            } else {
                format!(", {} addresses' history incomplete", view.incomplete.len())
            },
            reader.requests(),
            reader.bytes().div_ceil(1024),
            started.elapsed().as_secs_f64()
        );
        return Ok(view);
    }
    let path = match (&args.chain, &args.data) {
        (Some(c), _) => c.clone(),
        (None, Some(d)) => d.join(CHAIN_FILE),
        (None, None) => {
            bail!("give the chain: --chain-rest URL --contract ADDR, or --chain FILE")
        }
    };
    Ok(ChainView::read(&path)?)
}

pub(crate) fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let threads = args.threads.map_or_else(cores, |t| t as usize);
    let options = AuditOptions {
        threads,
        quality: args.report.is_some(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let view = runtime.block_on(chain_view(&args))?;
    if let Some(out) = &args.export_chain {
        std::fs::write(out, serde_json::to_string_pretty(&view)?)
            .with_context(|| format!("writing {}", out.display()))?;
        println!("chain view written to {}", out.display());
    }
    let started = Instant::now();
    let bars = Bars::default();
    let (what, audit) = runtime.block_on(async {
        match (&args.data, &args.store, &args.aggregator) {
            (Some(data), _, _) => {
                let db = data.join(DB_FILE);
                let store = SqliteStore::open_read_only(&db)
                    .await
                    .with_context(|| format!("opening {}", db.display()))?;
                let audit = tally_auditor::audit_store(&store, &view, options, &bars).await;
                store.close().await;
                Ok::<_, anyhow::Error>((data.display().to_string(), audit?))
            }
            (None, Some(spec), _) => {
                let audit = if let Some(path) = spec.strip_prefix("sqlite:") {
                    let store = SqliteStore::open_read_only(path)
                        .await
                        .with_context(|| format!("opening {path}"))?;
                    let audit = tally_auditor::audit_store(&store, &view, options, &bars).await;
                    store.close().await;
                    audit?
                } else if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
                    let store = PgStore::connect(spec, 4)
                        .await
                        .context("connecting to the aggregator's PostgreSQL store")?;
                    tally_auditor::audit_store(&store, &view, options, &bars).await?
                } else {
                    bail!("--store must be sqlite:PATH or postgres://…, not {spec:?}")
                };
                Ok((spec.clone(), audit))
            }
            (None, None, Some(url)) => Ok((
                url.clone(),
                tally_auditor::audit_online(url, &view, threads, &bars).await?,
            )),
            (None, None, None) => bail!("give --data, --store or --aggregator"),
        }
    })?;
    if args.aggregator.is_some() {
        print_online(&what, &view, &audit);
    } else {
        print_audit(&what, &view, &audit);
    }
    if let (Some(out), Some(report)) = (&args.report, &audit.quality) {
        quality::write_report(out, report)?;
        println!(
            "  report     {} (demand quality per model, by {})",
            out.join("index.html").display(),
            report.period.noun()
        );
        for m in &report.models {
            println!(
                "             {:<20} {:<6} {}",
                m.name,
                format!("{:?}", m.verdict).to_lowercase(),
                m.reasons.join("; ")
            );
        }
    }
    println!(
        "verdict: {} ({:.1} s)",
        if audit.passed() { "PASS" } else { "FAIL" },
        started.elapsed().as_secs_f64()
    );
    Ok(if audit.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The verdict's details, on one screen.
pub(crate) fn print_audit(what: &str, view: &ChainView, audit: &Audit) {
    let report = &audit.receipts;
    println!(
        "tally audit of {what} ({} leaves, {} batches on chain, {} checkpoints)",
        audit.leaves,
        view.batches.len(),
        audit.checkpoints
    );
    println!(
        "  receipts   {} verified in {:.2} s ({:.0}/s on {} threads): {} passed, {} re-executed",
        report.checked,
        audit.verify_secs,
        report.checked as f64 / audit.verify_secs.max(1e-9),
        audit.threads,
        report.passed,
        report.reexecuted
    );
    println!(
        "  log        {} checkpoints consistent, {} on-chain roots, {} inclusion proofs checked",
        audit.checkpoints.saturating_sub(1),
        view.batches.len(),
        audit.inclusion_checked
    );
    println!(
        "  money      settled {} µ in {} finalized batches; paid out {} µ (incl. {} µ slashed)",
        audit.settled, audit.finalized, audit.paid, audit.slashed
    );
    print_failures(audit);
}

/// The verdict's details of an audit through the aggregator's API.
pub(crate) fn print_online(base: &str, view: &ChainView, audit: &Audit) {
    println!(
        "tally audit of {base} against {} batches on chain",
        view.batches.len()
    );
    println!(
        "  log        {} checkpoints fetched and verified, {} consistency proofs",
        audit.checkpoints,
        audit.checkpoints.saturating_sub(1)
    );
    println!(
        "  receipts   {} fetched and verified in {:.2} s: {} passed, {} re-executed; every on-chain root recomputed from them",
        audit.leaves, audit.verify_secs, audit.receipts.passed, audit.receipts.reexecuted
    );
    print_failures(audit);
}

fn print_failures(audit: &Audit) {
    for (code, n) in &audit.caught {
        println!("  caught     {n} × {code} in a batch the chain voided (not paid)");
    }
    for (reason, n) in &audit.fatal {
        println!("  FAIL       {n:>8} × {reason}");
    }
    for e in &audit.examples {
        println!("             {e}");
    }
}
