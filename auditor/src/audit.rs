//! The audit of a deployment's log, read through the aggregator's [`Store`] trait:
//!
//! 1. every batch header is signed by the registered aggregator key and is the header the
//!    chain holds; every checkpoint note is signed by that key;
//! 2. every leaf is hashed into the tree again: each checkpoint's root is the tree's root
//!    at its size, and each checkpoint is consistent with the previous one (RFC 6962
//!    consistency proof); each on-chain batch root is the tree's root at its size;
//! 3. every receipt is verified ([`tally_verifier::Verifier`]: both signatures,
//!    re-execution of the pinned guest, host chains, channel sequences and totals),
//!    sharded by host over threads; every receipt of a finalized batch has an inclusion
//!    proof against that batch's on-chain root;
//! 4. what the contract paid is reconciled with the receipts: each finalized batch's
//!    debit is the sum of its receipts' fees, each payer's escrow went down by its
//!    receipts' fees, and the payouts add up to the debits plus what slashing paid.
//!
//! Receipts in a batch the chain voided (a proven fraud) are counted as caught, not as
//! failures: the chain already refused to pay for them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tally_aggregator::Store;
use tally_protocol::merkle::{MemoryTree, consistency_proof, inclusion_proof, leaf_hash};
use tally_protocol::{
    BatchHeader, Checkpoint, Digest, PublicKey, SignedBatchHeader, SignedReceipt,
};
use tally_sandbox::{Sandbox, SandboxConfig};
use tally_verifier::quality::{
    self, Funding, HostParty, Ledger, ModelParties, Parties, Payout, Thresholds, Transfer,
};
use tally_verifier::{ChainStart, Finding, Reexecute, VerifierConfig};

use crate::view::{BatchStatus, BatchView, ChainView};
use crate::{Audit, AuditError, Progress, Sharded};

/// Leaves read from the log per page (bounds memory: about 1 KiB each).
const PAGE: u64 = 4_096;

/// Checkpoints read per page.
const CHECKPOINT_PAGE: u32 = 1_000;

/// How an audit runs.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// Verifier threads (at least one).
    pub threads: usize,
    /// Whether to build the demand-quality report of the settled usage.
    pub quality: bool,
}

/// The verifier an audit runs: the pinned guest (which must be the one the chain allows)
/// re-executing every receipt, the registered schedules, host chains from genesis.
pub fn pinned_verifier_config(view: &ChainView) -> Result<VerifierConfig, AuditError> {
    let sandbox = Sandbox::pinned(SandboxConfig::default())
        .map_err(|e| AuditError::Guest(format!("loading the pinned guest: {e}")))?;
    if sandbox.guest_hash() != view.guest {
        return Err(AuditError::Guest(format!(
            "the chain allows guest {}, this build pins {}",
            view.guest,
            sandbox.guest_hash()
        )));
    }
    Ok(VerifierConfig {
        guests: vec![Arc::new(sandbox)],
        schedules: view.models.iter().map(|m| m.schedule.clone()).collect(),
        reexecute: Reexecute::All,
        chain_start: ChainStart::Genesis,
    })
}

/// Books verifier findings: failures in a batch the chain voided are counted as caught,
/// any other as a failure of the audit.
pub(crate) fn book(audit: &mut Audit, findings: Vec<(u64, Finding)>, view: &ChainView) {
    for (leaf, f) in findings {
        let status = view.batch_of(leaf).map(|b| view.batches[b].status);
        if status == Some(BatchStatus::Voided) {
            *audit.caught.entry(f.failure.code().to_owned()).or_insert(0) += 1;
        } else {
            let status = status.map_or("unsealed", BatchStatus::as_str);
            audit.fail(&format!("receipt:{}", f.failure.code()), || {
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

/// A page being verified on the shards' threads.
type InFlight = std::thread::JoinHandle<(Sharded, Vec<(u64, Finding)>)>;

/// Audits the log in `store` against the chain's `view` (see the module docs for every
/// check). Failures are in the returned [`Audit`]; an error means the audit could not
/// run (the store failed, the guest is not the chain's).
pub async fn audit_store<S: Store + Clone>(
    store: &S,
    view: &ChainView,
    options: AuditOptions,
    progress: &dyn Progress,
) -> Result<Audit, AuditError> {
    let threads = options.threads.max(1);
    let mut audit = Audit {
        threads,
        ..Audit::default()
    };
    let key = view.aggregator_key;
    let origin = tally_protocol::log_origin(&view.chain_id, &view.contract)
        .map_err(|e| AuditError::ChainView(e.to_string()))?;

    // 1. Batch headers and checkpoint notes.
    let mut n = 1u64;
    while let Some(record) = store.batch(n).await? {
        n += 1;
        let Ok(header) = BatchHeader::decode(&record.header) else {
            audit.fail("batch_header", || {
                format!("batch {} does not decode", record.n)
            });
            continue;
        };
        let signed = SignedBatchHeader {
            header,
            signature: record.signature,
        };
        if signed.header.aggregator != key || signed.verify().is_err() {
            audit.fail("batch_signature", || {
                format!(
                    "batch {} is not signed by the registered aggregator key",
                    record.n
                )
            });
        }
        let hash = Digest::sha256(&record.header);
        if let Some(on_chain) = view
            .batches
            .iter()
            .find(|b| b.number == signed.header.batch)
            && (on_chain.header_hash != hash
                || on_chain.root != signed.header.root
                || on_chain.tree_size != signed.header.tree_size)
        {
            audit.fail("batch_not_on_chain", || {
                format!("batch {}'s header is not the one the chain holds", record.n)
            });
        }
    }
    let mut cps: Vec<(u64, Digest)> = Vec::new();
    let mut after = None;
    loop {
        let page = store.checkpoints(after, CHECKPOINT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.size);
        for c in page {
            match Checkpoint::verify_note(&c.note, &origin, &key) {
                Ok(body) if body.size == c.size && body.root == c.root => {
                    cps.push((c.size, body.root));
                }
                Ok(_) => audit.fail("checkpoint_note", || {
                    format!(
                        "checkpoint {}: the signed note says another size or root",
                        c.size
                    )
                }),
                Err(e) => audit.fail("checkpoint_note", || format!("checkpoint {}: {e}", c.size)),
            }
        }
    }
    audit.checkpoints = cps.len() as u64;

    // 2 and 3. Stream the leaves: hash, verify, sum.
    let tree_size = store.tree_size().await?;
    audit.leaves = tree_size;
    let config = pinned_verifier_config(view)?;
    let mut sharded = Some(Sharded::new(&config, threads));
    let mut in_flight: Option<InFlight> = None;
    let mut tree = MemoryTree::with_capacity(usize::try_from(tree_size).unwrap_or(0));
    let mut leaf_hashes: Vec<Digest> = Vec::with_capacity(tree.size() as usize);
    let mut fees_of_batch = vec![0u128; view.batches.len()];
    let mut payer_fees: HashMap<PublicKey, u128> = HashMap::new();
    let mut collector = quality::Collector::new();
    progress.begin("verify", tree_size);
    let verify_start = Instant::now();
    // A reader task fetches, hashes and decodes the next page while the shards verify
    // this one.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Leaf>, AuditError>>(2);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut from = 0u64;
            while from < tree_size {
                let to = (from + PAGE).min(tree_size);
                let page = match store.leaves(from, to).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if page.is_empty() {
                    return;
                }
                let leaves = tokio::task::spawn_blocking(move || {
                    page.into_iter()
                        .map(|r| Leaf {
                            leaf: r.leaf,
                            hash: leaf_hash(&r.bytes),
                            receipt: SignedReceipt::decode(&r.bytes).ok(),
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|_| AuditError::Thread);
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
                audit.fail("log_gap", || format!("leaf {next} is missing"));
                next = leaf;
            }
            next += 1;
            tree.append(hash);
            leaf_hashes.push(hash);
            let Some(r) = receipt else {
                audit.fail("malformed_receipt", || {
                    format!("leaf {leaf} does not decode")
                });
                continue;
            };
            if let Some(b) = view.batch_of(leaf)
                && view.batches[b].status == BatchStatus::Finalized
            {
                let a = &r.receipt.authorization.authorization;
                fees_of_batch[b] += r.receipt.metered.fee;
                *payer_fees.entry(a.payer).or_default() += r.receipt.metered.fee;
                if options.quality {
                    collector
                        .push(&quality::Call::from(&r.receipt))
                        .map_err(|e| AuditError::Quality(e.to_string()))?;
                }
            }
            receipts.push((leaf, r));
        }
        // Verify this page on the shards' threads while the loop hashes and books the
        // next one; the previous page's findings are collected first.
        let n = receipts.len() as u64;
        let mut shards = match in_flight.take() {
            Some(h) => {
                let (shards, findings) = h.join().map_err(|_| AuditError::Thread)?;
                book(&mut audit, findings, view);
                shards
            }
            None => sharded.take().ok_or(AuditError::Thread)?,
        };
        in_flight = Some(std::thread::spawn(move || {
            let f = shards.push(receipts);
            (shards, f)
        }));
        progress.advance(n);
    }
    reader.await.map_err(|_| AuditError::Thread)?;
    if let Some(h) = in_flight.take() {
        let (shards, findings) = h.join().map_err(|_| AuditError::Thread)?;
        book(&mut audit, findings, view);
        sharded = Some(shards);
    }
    if next != tree_size {
        audit.fail("log_gap", || format!("read {next} leaves of {tree_size}"));
    }
    progress.end();
    audit.verify_secs = verify_start.elapsed().as_secs_f64();
    audit.receipts = sharded.ok_or(AuditError::Thread)?.report();

    check_roots(&mut audit, &tree, &cps, view);
    check_inclusion(&mut audit, &tree, &leaf_hashes, view, threads, progress);
    reconcile(&mut audit, view, &fees_of_batch, &payer_fees);
    if options.quality {
        audit.quality = Some(quality_report(collector, view)?);
    }
    Ok(audit)
}

/// Checkpoints against the recomputed tree, their consistency, the chain's batch roots.
fn check_roots(audit: &mut Audit, tree: &MemoryTree, cps: &[(u64, Digest)], view: &ChainView) {
    let mut prev: Option<(u64, Digest)> = None;
    for &(size, root) in cps {
        match tree.root_at(size) {
            Ok(r) if r == root => {}
            _ => audit.fail("checkpoint_root", || {
                format!("checkpoint {size}: the leaves do not hash to its root")
            }),
        }
        if let Some((s0, r0)) = prev {
            let consistent = consistency_proof(tree, s0, size)
                .ok()
                .is_some_and(|p| p.verify(&r0, &root).is_ok());
            if !consistent {
                audit.fail("checkpoint_consistency", || {
                    format!("checkpoint {size} is not consistent with checkpoint {s0}")
                });
            }
        }
        prev = Some((size, root));
    }
    for b in &view.batches {
        if b.tree_size > tree.size() || tree.root_at(b.tree_size).ok() != Some(b.root) {
            audit.fail("onchain_root", || {
                format!(
                    "batch {}: the log does not hash to the chain's root",
                    b.number
                )
            });
        }
    }
}

/// Inclusion proofs of every settled receipt against its batch's on-chain root, once per
/// tree (the batches of a split period share their leaves and root).
fn check_inclusion(
    audit: &mut Audit,
    tree: &MemoryTree,
    leaf_hashes: &[Digest],
    view: &ChainView,
    threads: usize,
    progress: &dyn Progress,
) {
    let mut settled_trees: Vec<&BatchView> = Vec::new();
    for b in view
        .batches
        .iter()
        .filter(|b| b.status == BatchStatus::Finalized)
    {
        if !settled_trees
            .iter()
            .any(|t| (t.prev_tree_size, t.tree_size) == (b.prev_tree_size, b.tree_size))
        {
            settled_trees.push(b);
        }
    }
    audit.inclusion_checked = settled_trees
        .iter()
        .map(|b| b.tree_size - b.prev_tree_size)
        .sum();
    progress.begin("inclusion", audit.inclusion_checked);
    let mut bad_inclusion = 0u64;
    for b in settled_trees {
        let (from, to) = (b.prev_tree_size, b.tree_size.min(tree.size()));
        let leaves: Vec<u64> = (from..to).collect();
        let per = leaves.len().div_ceil(threads.max(1)).max(1);
        bad_inclusion += std::thread::scope(|s| {
            let handles: Vec<_> = leaves
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        let mut bad = 0u64;
                        for &leaf in chunk {
                            let ok = inclusion_proof(tree, leaf, b.tree_size)
                                .ok()
                                .zip(leaf_hashes.get(leaf as usize))
                                .is_some_and(|(p, h)| p.verify(h, &b.root).is_ok());
                            bad += u64::from(!ok);
                        }
                        progress.advance(chunk.len() as u64);
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
    progress.end();
    for _ in 0..bad_inclusion {
        audit.fail("inclusion_proof", || {
            "a settled receipt has no valid inclusion proof against its batch root".into()
        });
    }
}

/// Reconciliation with what the contract paid. Consecutive batches of one tree (a period
/// split for the chain's transaction limits) share its new leaves: each tree's finalized
/// debits must add up to its receipts' fees.
fn reconcile(
    audit: &mut Audit,
    view: &ChainView,
    fees_of_batch: &[u128],
    payer_fees: &HashMap<PublicKey, u128>,
) {
    let mut trees: BTreeMap<u64, (Vec<u64>, u128, u128, bool)> = BTreeMap::new();
    for (b, fees) in view.batches.iter().zip(fees_of_batch) {
        let t = trees.entry(b.tree_size).or_default();
        t.0.push(b.number);
        t.2 += fees;
        if b.status == BatchStatus::Finalized {
            audit.settled += b.total;
            audit.finalized += 1;
            t.1 += b.total;
        } else {
            t.3 = true;
        }
    }
    for (numbers, debited, fees, unsettled) in trees.values() {
        if !unsettled && debited != fees {
            audit.fail("batch_total", || {
                format!(
                    "batches {numbers:?} debited {debited} but their receipts' fees sum to {fees}"
                )
            });
        }
    }
    audit.slashed = view.hosts.iter().map(|h| h.slashed).sum();
    audit.paid = view.payouts.iter().map(|p| p.amount).sum();
    if audit.paid != audit.settled + audit.slashed {
        let (paid, settled, slashed) = (audit.paid, audit.settled, audit.slashed);
        audit.fail("payouts", || {
            format!("paid out {paid}, but settled {settled} + slashed {slashed}")
        });
    }
    let mut deposited: HashMap<PublicKey, u128> = HashMap::new();
    for d in &view.deposits {
        *deposited.entry(d.payer).or_default() += d.amount;
    }
    let mut withdrawn: HashMap<PublicKey, u128> = HashMap::new();
    for w in &view.withdrawals {
        *withdrawn.entry(w.payer).or_default() += w.amount;
    }
    for e in &view.escrows {
        let debited = deposited
            .get(&e.payer)
            .copied()
            .unwrap_or(0)
            .saturating_sub(withdrawn.get(&e.payer).copied().unwrap_or(0))
            .saturating_sub(e.balance);
        let used = payer_fees.get(&e.payer).copied().unwrap_or(0);
        if debited != used {
            audit.fail("escrow", || {
                format!(
                    "payer {}: escrow went down by {debited}, its settled receipts cost {used}",
                    e.payer
                )
            });
        }
    }
}

/// The demand-quality report of the settled calls: the chain's registries as parties, its
/// deposits, transfers and payouts as the money history the funding trace follows.
fn quality_report(
    collector: quality::Collector,
    view: &ChainView,
) -> Result<quality::Report, AuditError> {
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
    let ledger = Ledger {
        deposits: view
            .deposits
            .iter()
            .map(|d| Funding {
                payer: d.payer,
                funder: d.funder.clone(),
                amount: d.amount,
                time_ms: d.time_ms,
            })
            .collect(),
        transfers: view
            .transfers
            .iter()
            .map(|t| Transfer {
                from: t.from.clone(),
                to: t.to.clone(),
                amount: t.amount,
                time_ms: t.time_ms,
            })
            .collect(),
        payouts: view
            .payouts
            .iter()
            .map(|p| Payout {
                model: p.model,
                to: p.address.clone(),
                amount: p.amount,
                time_ms: p.time_ms,
            })
            .collect(),
        incomplete: view.incomplete.clone(),
    };
    collector
        .finish(&parties, &ledger, &Thresholds::default())
        .map_err(|e| AuditError::Quality(e.to_string()))
}
