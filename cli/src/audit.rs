//! `tally audit`: the auditor's command. Given the aggregator's data directory and the
//! chain view, it checks that the log is what the chain settled and that every settled
//! unit is backed by a valid receipt:
//!
//! 1. every batch header is signed by the registered aggregator key and is the header the
//!    chain holds; every checkpoint note is signed by that key;
//! 2. every leaf is hashed into the tree again: each checkpoint's root is the tree's root
//!    at its size, and each checkpoint is consistent with the previous one (RFC 6962
//!    consistency proof); each on-chain batch root is the tree's root at its size;
//! 3. every receipt is verified (`tally_verifier::Verifier`: both signatures, re-execution
//!    of the pinned guest, host chains, channel sequences and totals), sharded by host
//!    over the machine's cores; every receipt of a finalized batch has an inclusion proof
//!    against that batch's on-chain root;
//! 4. what the contract paid is reconciled with the receipts: each finalized batch's debit
//!    is the sum of its receipts' fees, each payer's escrow went down by its receipts'
//!    fees, and the payouts add up to the debits plus what slashing paid.
//!
//! Receipts in a batch the chain voided (a proven fraud) are reported as caught, not as
//! failures: the chain already refused to pay for them. With `--report` it also writes
//! the demand-quality report of the settled usage (`tally_verifier::quality`), with the
//! chain's deposit history as fundings and its registries as parties.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tally_protocol::merkle::{MemoryTree, consistency_proof, inclusion_proof, leaf_hash};
use tally_protocol::{
    BatchHeader, Checkpoint, Digest, PriceSchedule, PublicKey, Signature, SignedBatchHeader,
    SignedReceipt,
};
use tally_verifier::quality::{
    self, Funding, HostParty, Ledger, ModelParties, Parties, Thresholds,
};
use tally_verifier::{ChainStart, Finding, Reexecute, Verifier, VerifierConfig};

/// The aggregator's SQLite file in a data directory.
pub(crate) const DB_FILE: &str = "aggregator.sqlite";
/// The chain view in a data directory.
pub(crate) const CHAIN_FILE: &str = "chain.json";
/// Leaves read from the log per page (bounds memory: about 1 KiB each).
const PAGE: u64 = 65_536;
/// Largest chain view file read.
const MAX_CHAIN_FILE: u64 = 256 << 20;

/// What the auditor knows from the chain: the settled batches, the registries, the
/// deposit history with its funders, the escrows and the payouts. `tally demo --keep`
/// writes it; against a real chain it is what the contract's queries answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChainView {
    /// The settlement chain id.
    pub(crate) chain_id: String,
    /// The contract's address.
    pub(crate) contract: String,
    /// The registered aggregator key (batch headers, checkpoints).
    pub(crate) aggregator_key: PublicKey,
    /// The allowed metering guest.
    pub(crate) guest: Digest,
    /// The protocol's fee sink.
    pub(crate) protocol_sink: String,
    /// The model registry.
    pub(crate) models: Vec<ModelView>,
    /// The host registry.
    pub(crate) hosts: Vec<HostView>,
    /// Every submitted batch, in order.
    pub(crate) batches: Vec<BatchView>,
    /// Every deposit, with the address that funded it.
    pub(crate) deposits: Vec<DepositView>,
    /// Each payer's escrow left (balance plus reserved).
    pub(crate) escrows: Vec<EscrowView>,
    /// What each account claimed.
    pub(crate) payouts: Vec<PayoutView>,
}

/// One registered model.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModelView {
    pub(crate) id: Digest,
    pub(crate) name: String,
    /// Contributor addresses and weights (bps).
    pub(crate) contributors: Vec<(String, u16)>,
    pub(crate) schedule: PriceSchedule,
}

/// One registered host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HostView {
    pub(crate) key: PublicKey,
    pub(crate) operator: String,
    pub(crate) bond: u128,
    pub(crate) slashed: u128,
}

/// One batch as the contract recorded it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchView {
    pub(crate) number: u64,
    /// `pending`, `finalized` or `voided`.
    pub(crate) status: String,
    pub(crate) header_hash: Digest,
    pub(crate) root: Digest,
    pub(crate) tree_size: u64,
    pub(crate) prev_tree_size: u64,
    /// Debited in all.
    pub(crate) total: u128,
}

/// One deposit.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DepositView {
    pub(crate) payer: PublicKey,
    pub(crate) funder: String,
    pub(crate) amount: u128,
    pub(crate) height: u64,
}

/// One payer's escrow left.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EscrowView {
    pub(crate) payer: PublicKey,
    pub(crate) balance: u128,
}

/// One claim.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PayoutView {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) role: String,
    pub(crate) amount: u128,
}

#[derive(Args)]
pub(crate) struct AuditArgs {
    /// The data directory (`tally demo --keep DIR`): the aggregator's `aggregator.sqlite`
    /// and the chain view `chain.json`. The full audit.
    #[arg(
        long,
        required_unless_present = "aggregator",
        conflicts_with = "aggregator"
    )]
    data: Option<PathBuf>,
    /// A running aggregator's base URL: checks its checkpoints (signed notes, consistency
    /// proofs) against the chain view's batch roots. Receipts are not listed by the API,
    /// so verifying them needs `--data`.
    #[arg(long, requires = "chain")]
    aggregator: Option<String>,
    /// The chain view file (default: DATA/chain.json).
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Write the demand-quality report (index.html, report.json) into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Verifier threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: Option<u64>,
}

/// Opens the aggregator's SQLite file read-only.
pub(crate) async fn open_db(path: &Path) -> anyhow::Result<SqlitePool> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let opts = SqliteConnectOptions::new().filename(path).read_only(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

/// Leaves `from..to` of the log: (leaf index, SignedReceipt bytes), in order.
pub(crate) async fn read_leaves(
    pool: &SqlitePool,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT leaf, bytes FROM receipts WHERE leaf >= ? AND leaf < ? ORDER BY leaf",
    )
    .bind(i64::try_from(from)?)
    .bind(i64::try_from(to)?)
    .fetch_all(pool)
    .await
    .context("reading receipts")?;
    rows.into_iter()
        .map(|(leaf, bytes)| Ok((u64::try_from(leaf)?, bytes)))
        .collect()
}

/// Verifiers sharded by host: a host's chain and its channels live in one shard, so the
/// shards are independent and run on separate threads.
pub(crate) struct Sharded {
    verifiers: Vec<Verifier>,
    /// Each host's shard, given round-robin in order of first appearance so the load
    /// spreads evenly whatever the keys.
    shard_of: HashMap<PublicKey, usize>,
}

impl Sharded {
    pub(crate) fn new(config: &VerifierConfig, shards: usize) -> Sharded {
        Sharded {
            verifiers: (0..shards.max(1))
                .map(|_| Verifier::new(config.clone()))
                .collect(),
            shard_of: HashMap::new(),
        }
    }

    /// Verifies the next receipts (in log order); findings carry their leaf index.
    pub(crate) fn push(&mut self, receipts: Vec<(u64, SignedReceipt)>) -> Vec<(u64, Finding)> {
        let n = self.verifiers.len();
        let mut parts: Vec<(Vec<u64>, Vec<SignedReceipt>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for (leaf, r) in receipts {
            let next = self.shard_of.len() % n;
            let shard = *self.shard_of.entry(*r.receipt.host()).or_insert(next);
            parts[shard].0.push(leaf);
            parts[shard].1.push(r);
        }
        let mut out = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .verifiers
                .iter_mut()
                .zip(parts)
                .map(|(v, (leaves, rs))| {
                    s.spawn(move || {
                        let base = v.report().checked;
                        v.push(&rs)
                            .into_iter()
                            .map(|f| {
                                let local = (f.index - base) as usize;
                                (leaves.get(local).copied().unwrap_or(u64::MAX), f)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                if let Ok(found) = h.join() {
                    out.extend(found);
                }
            }
        });
        out.sort_by_key(|(leaf, _)| *leaf);
        out
    }

    /// The merged totals.
    pub(crate) fn report(&self) -> tally_verifier::Report {
        let mut total = tally_verifier::Report::default();
        for v in &self.verifiers {
            let r = v.report();
            total.checked += r.checked;
            total.passed += r.passed;
            total.reexecuted += r.reexecuted;
            total.hosts += r.hosts;
            total.channels += r.channels;
            for (code, n) in &r.failures {
                *total.failures.entry(code).or_insert(0) += n;
            }
        }
        total
    }
}

/// Verifies `receipts` once, sharded over the cores: findings by leaf, and the totals.
pub(crate) fn verify_sharded(
    receipts: &[(u64, SignedReceipt)],
    config: &VerifierConfig,
) -> (Vec<(u64, Finding)>, tally_verifier::Report) {
    let mut sharded = Sharded::new(config, cores());
    let findings = sharded.push(receipts.to_vec());
    (findings, sharded.report())
}

/// The verifier the audit runs: the pinned guest (which must be the one the chain allows)
/// re-executing every receipt, the registered schedules, host chains from genesis.
fn full_verifier_config(view: &ChainView) -> anyhow::Result<VerifierConfig> {
    let sandbox = crate::guest::sandbox(None)?;
    if sandbox.guest_hash() != view.guest {
        bail!(
            "the chain allows guest {}, this build pins {}",
            view.guest,
            sandbox.guest_hash()
        );
    }
    Ok(VerifierConfig {
        guests: vec![sandbox],
        schedules: view.models.iter().map(|m| m.schedule.clone()).collect(),
        reexecute: Reexecute::All,
        chain_start: ChainStart::Genesis,
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Failures by reason, with the first few details.
#[derive(Default)]
struct Tally {
    fatal: BTreeMap<String, u64>,
    caught: BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Tally {
    fn fail(&mut self, reason: &str, detail: impl FnOnce() -> String) {
        *self.fatal.entry(reason.to_owned()).or_insert(0) += 1;
        if self.examples.len() < 8 {
            self.examples.push(format!("{reason}: {}", detail()));
        }
    }
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

pub(crate) fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let chain_path = match (&args.chain, &args.data) {
        (Some(c), _) => c.clone(),
        (None, Some(d)) => d.join(CHAIN_FILE),
        (None, None) => bail!("--chain is needed with --aggregator"),
    };
    let size = std::fs::metadata(&chain_path)
        .with_context(|| format!("reading {}", chain_path.display()))?
        .len();
    if size > MAX_CHAIN_FILE {
        bail!(
            "{} is larger than {MAX_CHAIN_FILE} bytes",
            chain_path.display()
        );
    }
    let view: ChainView = crate::read_json(&chain_path)?;
    let threads = args.threads.map_or_else(cores, |t| t as usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ok = match (&args.data, &args.aggregator) {
        (Some(data), _) => {
            let pool = runtime.block_on(open_db(&data.join(DB_FILE)))?;
            let ok = runtime.block_on(audit(&args, data, &view, &pool, threads))?;
            runtime.block_on(pool.close());
            ok
        }
        (None, Some(url)) => runtime.block_on(audit_online(url, &view))?,
        (None, None) => bail!("give --data or --aggregator"),
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A page being verified on the shards' threads.
type InFlight = std::thread::JoinHandle<(Sharded, Vec<(u64, Finding)>)>;

/// Waits for the page in flight: the shards back, and the page's findings.
fn join(h: InFlight) -> anyhow::Result<(Sharded, Vec<(u64, Finding)>)> {
    h.join()
        .map_err(|_| anyhow::anyhow!("verifier thread failed"))
}

/// Books verifier findings: failures in a batch the chain voided are counted as caught,
/// any other as a failure of the audit.
fn book(
    tally: &mut Tally,
    findings: Vec<(u64, Finding)>,
    batch_of: &impl Fn(u64) -> Option<usize>,
    view: &ChainView,
) {
    for (leaf, f) in findings {
        let status = batch_of(leaf).map_or("unsealed", |b| view.batches[b].status.as_str());
        if status == "voided" {
            *tally.caught.entry(f.failure.code().to_owned()).or_insert(0) += 1;
        } else {
            tally.fail(&format!("receipt:{}", f.failure.code()), || {
                format!("leaf {leaf} ({status}): {f}")
            });
        }
    }
}

/// One leaf as the reader hands it over: its index, hash and decoded receipt (`None`:
/// the bytes are not a canonical `SignedReceipt`).
struct Leaf {
    leaf: u64,
    hash: Digest,
    receipt: Option<SignedReceipt>,
}

/// What the audit learned about each on-chain batch while streaming the leaves.
#[derive(Default, Clone)]
struct BatchSums {
    fees: u128,
}

#[allow(clippy::too_many_lines, reason = "the audit's steps, in order")]
async fn audit(
    args: &AuditArgs,
    data: &Path,
    view: &ChainView,
    pool: &SqlitePool,
    threads: usize,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut tally = Tally::default();
    let key = view.aggregator_key;
    let origin = tally_protocol::log_origin(&view.chain_id, &view.contract)?;

    // 1. Batch headers and checkpoint notes.
    let batches: Vec<(i64, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT n, header, signature FROM batches ORDER BY n")
            .fetch_all(pool)
            .await?;
    let mut sealed_sizes = Vec::new();
    for (n, header, signature) in &batches {
        let decoded = BatchHeader::decode(header).ok();
        let sig: Option<[u8; 64]> = signature.as_slice().try_into().ok();
        let Some((h, sig)) = decoded.zip(sig) else {
            tally.fail("batch_header", || format!("batch {n} does not decode"));
            continue;
        };
        let signed = SignedBatchHeader {
            header: h,
            signature: Signature(sig),
        };
        if signed.header.aggregator != key || signed.verify().is_err() {
            tally.fail("batch_signature", || {
                format!("batch {n} is not signed by the registered aggregator key")
            });
        }
        let hash = Digest::sha256(header);
        if let Some(on_chain) = view
            .batches
            .iter()
            .find(|b| b.number == signed.header.batch)
            && (on_chain.header_hash != hash
                || on_chain.root != signed.header.root
                || on_chain.tree_size != signed.header.tree_size)
        {
            tally.fail("batch_not_on_chain", || {
                format!("batch {n}'s header is not the one the chain holds")
            });
        }
        sealed_sizes.push((signed.header.tree_size, signed.header.root));
    }
    let checkpoints: Vec<(i64, Vec<u8>, String)> =
        sqlx::query_as("SELECT size, root, note FROM checkpoints ORDER BY size")
            .fetch_all(pool)
            .await?;
    let mut cps: Vec<(u64, Digest)> = Vec::new();
    for (size, root, note) in &checkpoints {
        let size = u64::try_from(*size)?;
        match Checkpoint::verify_note(note, &origin, &key) {
            Ok(body) if body.size == size && body.root.0.as_slice() == root.as_slice() => {
                cps.push((size, body.root));
            }
            Ok(_) => tally.fail("checkpoint_note", || {
                format!("checkpoint {size}: the signed note says another size or root")
            }),
            Err(e) => tally.fail("checkpoint_note", || format!("checkpoint {size}: {e}")),
        }
    }

    // 2 and 3. Stream the leaves: hash, verify, sum.
    let (tree_size,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM receipts")
        .fetch_one(pool)
        .await?;
    let tree_size = u64::try_from(tree_size)?;
    let config = full_verifier_config(view)?;
    let mut sharded = Some(Sharded::new(&config, threads));
    let mut in_flight: Option<InFlight> = None;
    let mut tree = MemoryTree::with_capacity(usize::try_from(tree_size).unwrap_or(0));
    let mut leaf_hashes: Vec<Digest> = Vec::with_capacity(tree.size() as usize);
    let batch_of = |leaf: u64| view.batches.iter().position(|b| leaf < b.tree_size);
    let mut sums = vec![BatchSums::default(); view.batches.len()];
    let mut payer_fees: HashMap<PublicKey, u128> = HashMap::new();
    let mut collector = quality::Collector::new();
    let pb = bar(tree_size, "verify");
    let verify_start = Instant::now();
    // A reader task fetches, hashes and decodes the next page while the shards verify
    // this one.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<Leaf>>>(2);
    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut from = 0u64;
            while from < tree_size {
                let to = (from + PAGE).min(tree_size);
                let page = match read_leaves(&pool, from, to).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if page.is_empty() {
                    return;
                }
                let leaves = tokio::task::spawn_blocking(move || {
                    page.into_iter()
                        .map(|(leaf, bytes)| Leaf {
                            leaf,
                            hash: leaf_hash(&bytes),
                            receipt: SignedReceipt::decode(&bytes).ok(),
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|_| anyhow::anyhow!("reader task failed"));
                if tx.send(leaves).await.is_err() {
                    return;
                }
                from = to;
            }
        })
    };
    let mut next = 0u64;
    while let Some(page) = rx.recv().await {
        let page = page?;
        let mut receipts = Vec::with_capacity(page.len());
        for Leaf {
            leaf,
            hash,
            receipt,
        } in page
        {
            if leaf != next {
                tally.fail("log_gap", || format!("leaf {next} is missing"));
                next = leaf;
            }
            next += 1;
            tree.append(hash);
            leaf_hashes.push(hash);
            let Some(r) = receipt else {
                tally.fail("malformed_receipt", || {
                    format!("leaf {leaf} does not decode")
                });
                continue;
            };
            if let Some(b) = batch_of(leaf)
                && view.batches[b].status == "finalized"
            {
                let a = &r.receipt.authorization.authorization;
                sums[b].fees += r.receipt.metered.fee;
                *payer_fees.entry(a.payer).or_default() += r.receipt.metered.fee;
                collector.push(&quality::Call::from(&r.receipt))?;
            }
            receipts.push((leaf, r));
        }
        // Verify this page on the shards' threads while the loop hashes and books the
        // next one; the previous page's findings are collected first.
        let n = receipts.len() as u64;
        let mut shards = match in_flight.take() {
            Some(h) => {
                let (shards, findings) = join(h)?;
                book(&mut tally, findings, &batch_of, view);
                shards
            }
            None => sharded.take().context("verifier shards")?,
        };
        in_flight = Some(std::thread::spawn(move || {
            let f = shards.push(receipts);
            (shards, f)
        }));
        pb.inc(n);
    }
    reader.await?;
    if let Some(h) = in_flight.take() {
        let (shards, findings) = join(h)?;
        book(&mut tally, findings, &batch_of, view);
        sharded = Some(shards);
    }
    if next != tree_size {
        tally.fail("log_gap", || format!("read {next} leaves of {tree_size}"));
    }
    pb.finish_and_clear();
    let verify_secs = verify_start.elapsed().as_secs_f64();
    let report = sharded.context("verifier shards")?.report();

    // Roots: checkpoints, their consistency, the chain's batch roots.
    let mut prev: Option<(u64, Digest)> = None;
    for &(size, root) in &cps {
        match tree.root_at(size) {
            Ok(r) if r == root => {}
            _ => tally.fail("checkpoint_root", || {
                format!("checkpoint {size}: the leaves do not hash to its root")
            }),
        }
        if let Some((s0, r0)) = prev {
            let consistent = consistency_proof(&tree, s0, size)
                .ok()
                .is_some_and(|p| p.verify(&r0, &root).is_ok());
            if !consistent {
                tally.fail("checkpoint_consistency", || {
                    format!("checkpoint {size} is not consistent with checkpoint {s0}")
                });
            }
        }
        prev = Some((size, root));
    }
    for b in &view.batches {
        if b.tree_size > tree.size() || tree.root_at(b.tree_size).ok() != Some(b.root) {
            tally.fail("onchain_root", || {
                format!(
                    "batch {}: the log does not hash to the chain's root",
                    b.number
                )
            });
        }
    }
    // Inclusion proofs of every settled receipt against its batch's on-chain root, once per
    // tree (the batches of a split period share their leaves and root).
    let mut settled_trees: Vec<&BatchView> = Vec::new();
    for b in view.batches.iter().filter(|b| b.status == "finalized") {
        if !settled_trees
            .iter()
            .any(|t| (t.prev_tree_size, t.tree_size) == (b.prev_tree_size, b.tree_size))
        {
            settled_trees.push(b);
        }
    }
    let inclusion_checked: u64 = settled_trees
        .iter()
        .map(|b| b.tree_size - b.prev_tree_size)
        .sum();
    let pb = bar(inclusion_checked, "inclusion");
    let mut bad_inclusion = 0u64;
    for b in settled_trees {
        let (from, to) = (b.prev_tree_size, b.tree_size.min(tree.size()));
        let leaves: Vec<u64> = (from..to).collect();
        let per = leaves.len().div_ceil(threads.max(1)).max(1);
        let (tree, hashes, pb) = (&tree, &leaf_hashes, &pb);
        bad_inclusion += std::thread::scope(|s| {
            let handles: Vec<_> = leaves
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        let mut bad = 0u64;
                        for &leaf in chunk {
                            let ok = inclusion_proof(tree, leaf, b.tree_size)
                                .ok()
                                .is_some_and(|p| p.verify(&hashes[leaf as usize], &b.root).is_ok());
                            bad += u64::from(!ok);
                        }
                        pb.inc(chunk.len() as u64);
                        bad
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(1))
                .sum::<u64>()
        });
    }
    pb.finish_and_clear();
    for _ in 0..bad_inclusion {
        tally.fail("inclusion_proof", || {
            "a settled receipt has no valid inclusion proof against its batch root".into()
        });
    }

    // 4. Reconciliation with what the contract paid. Consecutive batches of one tree (a
    // period split for the chain's transaction limits) share its new leaves: each tree's
    // finalized debits must add up to its receipts' fees.
    let mut settled = 0u128;
    let mut trees: BTreeMap<u64, (Vec<u64>, u128, u128, bool)> = BTreeMap::new();
    for (b, s) in view.batches.iter().zip(&sums) {
        let t = trees.entry(b.tree_size).or_default();
        t.0.push(b.number);
        t.2 += s.fees;
        if b.status == "finalized" {
            settled += b.total;
            t.1 += b.total;
        } else {
            t.3 = true;
        }
    }
    for (numbers, debited, fees, unsettled) in trees.values() {
        if !unsettled && debited != fees {
            tally.fail("batch_total", || {
                format!(
                    "batches {numbers:?} debited {debited} but their receipts' fees sum to {fees}"
                )
            });
        }
    }
    let slashed: u128 = view.hosts.iter().map(|h| h.slashed).sum();
    let paid: u128 = view.payouts.iter().map(|p| p.amount).sum();
    if paid != settled + slashed {
        tally.fail("payouts", || {
            format!("paid out {paid}, but settled {settled} + slashed {slashed}")
        });
    }
    let mut deposited: HashMap<PublicKey, u128> = HashMap::new();
    for d in &view.deposits {
        *deposited.entry(d.payer).or_default() += d.amount;
    }
    for e in &view.escrows {
        let debited = deposited
            .get(&e.payer)
            .copied()
            .unwrap_or(0)
            .saturating_sub(e.balance);
        let used = payer_fees.get(&e.payer).copied().unwrap_or(0);
        if debited != used {
            tally.fail("escrow", || {
                format!(
                    "payer {}: escrow went down by {debited}, its settled receipts cost {used}",
                    e.payer
                )
            });
        }
    }

    // The verdict, on one screen.
    let ok = tally.fatal.is_empty();
    println!(
        "tally audit of {} ({} leaves, {} batches on chain, {} checkpoints)",
        data.display(),
        tree_size,
        view.batches.len(),
        cps.len()
    );
    println!(
        "  receipts   {} verified in {:.2} s ({:.0}/s on {threads} threads): {} passed, {} re-executed",
        report.checked,
        verify_secs,
        report.checked as f64 / verify_secs.max(1e-9),
        report.passed,
        report.reexecuted
    );
    println!(
        "  log        {} checkpoints consistent, {} on-chain roots, {} inclusion proofs checked",
        cps.len().saturating_sub(1),
        view.batches.len(),
        inclusion_checked
    );
    println!(
        "  money      settled {settled} µ in {} finalized batches; paid out {paid} µ (incl. {slashed} µ slashed)",
        view.batches
            .iter()
            .filter(|b| b.status == "finalized")
            .count()
    );
    for (code, n) in &tally.caught {
        println!("  caught     {n} × {code} in a batch the chain voided (not paid)");
    }
    for (reason, n) in &tally.fatal {
        println!("  FAIL       {n:>8} × {reason}");
    }
    for e in &tally.examples {
        println!("             {e}");
    }

    if let Some(out) = &args.report {
        let parties = Parties {
            models: view
                .models
                .iter()
                .map(|m| ModelParties {
                    model: m.id,
                    name: m.name.clone(),
                    contributors: m.contributors.iter().map(|(a, _)| a.clone()).collect(),
                })
                .collect(),
            hosts: view
                .hosts
                .iter()
                .map(|h| HostParty {
                    key: h.key,
                    operator: h.operator.clone(),
                    name: String::new(),
                })
                .collect(),
            protocol_sinks: vec![view.protocol_sink.clone()],
            names: Vec::new(),
        };
        let fundings: Vec<Funding> = view
            .deposits
            .iter()
            .map(|d| Funding {
                payer: d.payer,
                funder: d.funder.clone(),
                amount: d.amount,
                time_ms: 0,
            })
            .collect();
        // Bank transfers and payouts are not in the chain view yet: every payer is traced
        // one hop (its depositors) until they are.
        let ledger = Ledger {
            deposits: fundings,
            ..Ledger::default()
        };
        let report = collector.finish(&parties, &ledger, &Thresholds::default())?;
        quality::write_report(out, &report)?;
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
        if ok { "PASS" } else { "FAIL" },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// One page of `GET /v1/leaves`.
#[derive(Deserialize)]
struct LeavesPage {
    leaves: Vec<ServedLeaf>,
}

/// One served log entry.
#[derive(Deserialize)]
struct ServedLeaf {
    leaf_index: u64,
    /// base64 of the SignedReceipt encoding.
    encoding: String,
}

/// Largest answer read from the aggregator.
const MAX_ANSWER: usize = 16 << 20;

/// GETs `url` and returns the body, bounded.
async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    if body.len() > MAX_ANSWER {
        bail!("GET {url}: answer larger than {MAX_ANSWER} bytes");
    }
    Ok(body.to_vec())
}

/// The audit against a running aggregator: each on-chain batch's checkpoint is fetched,
/// its note verified with the registered key and its root compared with the chain's, and
/// each is proven consistent with the previous one by the aggregator's consistency proof;
/// then every leaf up to the last batch is fetched (`GET /v1/leaves`), verified with
/// re-execution, and hashed into a tree whose roots must equal the chain's.
pub(crate) async fn audit_online(url: &str, view: &ChainView) -> anyhow::Result<bool> {
    #[derive(Deserialize)]
    struct Consistency {
        hashes: Vec<Digest>,
    }
    let base = url.trim_end_matches('/');
    let origin = tally_protocol::log_origin(&view.chain_id, &view.contract)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut tally = Tally::default();
    let mut prev: Option<(u64, Digest)> = None;
    let mut checked = 0u64;
    for b in &view.batches {
        let note = get(&client, &format!("{base}/v1/checkpoints/{}", b.tree_size)).await?;
        let note = String::from_utf8(note).unwrap_or_default();
        match Checkpoint::verify_note(&note, &origin, &view.aggregator_key) {
            Ok(body) if body.size == b.tree_size && body.root == b.root => {}
            Ok(_) => tally.fail("onchain_root", || {
                format!(
                    "batch {}: the aggregator's checkpoint is not the chain's root",
                    b.number
                )
            }),
            Err(e) => tally.fail("checkpoint_note", || format!("batch {}: {e}", b.number)),
        }
        if let Some((s0, r0)) = prev
            && s0 < b.tree_size
        {
            let body = get(
                &client,
                &format!("{base}/v1/consistency?from={s0}&to={}", b.tree_size),
            )
            .await?;
            let proof: Consistency = serde_json::from_slice(&body).context("consistency proof")?;
            let proof = tally_protocol::merkle::ConsistencyProof {
                size1: s0,
                size2: b.tree_size,
                hashes: proof.hashes,
            };
            if proof.verify(&r0, &b.root).is_err() {
                tally.fail("checkpoint_consistency", || {
                    format!("batch {} is not consistent with the tree of {s0}", b.number)
                });
            }
        }
        prev = Some((b.tree_size, b.root));
        checked += 1;
    }
    // Every leaf up to the last on-chain batch, page by page: verified (signatures,
    // re-execution, chains, totals) and hashed into a tree whose roots must be the chain's.
    let end = view.batches.iter().map(|b| b.tree_size).max().unwrap_or(0);
    let config = full_verifier_config(view)?;
    let mut shards = Sharded::new(&config, cores());
    let batch_of = |leaf: u64| view.batches.iter().position(|b| leaf < b.tree_size);
    let mut tree = MemoryTree::with_capacity(usize::try_from(end).unwrap_or(0));
    let pb = bar(end, "fetch+verify");
    let verify_start = Instant::now();
    while tree.size() < end {
        let from = tree.size();
        let to = (from + tally_aggregator::api::MAX_LEAVES_PER_PAGE).min(end);
        let body = get(&client, &format!("{base}/v1/leaves?start={from}&end={to}")).await?;
        let page: LeavesPage = serde_json::from_slice(&body).context("a page of leaves")?;
        if page.leaves.len() as u64 != to - from {
            bail!("asked for leaves {from}..{to}, got {}", page.leaves.len());
        }
        let mut receipts = Vec::with_capacity(page.leaves.len());
        for (leaf, l) in (from..).zip(page.leaves) {
            let bytes = BASE64.decode(l.encoding.as_bytes()).unwrap_or_default();
            if l.leaf_index != leaf {
                tally.fail("log_gap", || {
                    format!("leaf {leaf} came as {}", l.leaf_index)
                });
            }
            tree.append(leaf_hash(&bytes));
            match SignedReceipt::decode(&bytes) {
                Ok(r) => receipts.push((leaf, r)),
                Err(_) => tally.fail("malformed_receipt", || {
                    format!("leaf {leaf} does not decode")
                }),
            }
        }
        let findings = shards.push(receipts);
        book(&mut tally, findings, &batch_of, view);
        pb.inc(to - from);
    }
    pb.finish_and_clear();
    let verify_secs = verify_start.elapsed().as_secs_f64();
    for b in &view.batches {
        if tree.root_at(b.tree_size).ok() != Some(b.root) {
            tally.fail("onchain_root", || {
                format!(
                    "batch {}: the served leaves do not hash to the chain's root",
                    b.number
                )
            });
        }
    }
    let report = shards.report();

    let ok = tally.fatal.is_empty();
    println!(
        "tally audit of {base} against {} batches on chain",
        view.batches.len()
    );
    println!(
        "  log        {checked} checkpoints fetched and verified, {} consistency proofs",
        checked.saturating_sub(1)
    );
    println!(
        "  receipts   {end} fetched and verified in {verify_secs:.2} s: {} passed, {} re-executed; every on-chain root recomputed from them",
        report.passed, report.reexecuted
    );
    for (code, n) in &tally.caught {
        println!("  caught     {n} × {code} in a batch the chain voided (not paid)");
    }
    for (reason, n) in &tally.fatal {
        println!("  FAIL       {n:>8} × {reason}");
    }
    for e in &tally.examples {
        println!("             {e}");
    }
    println!("verdict: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
