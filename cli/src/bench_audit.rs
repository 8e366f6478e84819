//! `tally bench audit`: the real audit of a deployment's data on one verifier thread,
//! beside the floor it is held to, measured in the same run.
//!
//! Per receipt an auditor must verify the payer's signature (batched, as the verifier does
//! in chunks of [`tally_verifier::Verifier::BATCH`]), a share of a host checkpoint
//! signature (one per group commit: `1/g` of a signature for groups of `g`), re-execute the
//! guest and hash the receipt into its host's log. Version 1 had a host signature on every
//! receipt; its floor is printed beside, so the speed-up version 2 allows on this data (and
//! on a loaded host's groups of 16) is a measured ratio, not a guess.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tally_aggregator::{SqliteStore, Store};
use tally_auditor::{AuditOptions, ChainView};
use tally_protocol::merkle::leaf_hash;
use tally_protocol::{Digest, MeterInput, SignedReceipt, SigningKey};

use crate::audit::{CHAIN_FILE, DB_FILE};
use crate::bench::rate;

/// Arguments of `tally bench audit`.
#[derive(Args)]
pub(crate) struct AuditBenchArgs {
    /// A deployment's data as `tally demo --keep DIR` writes it (`aggregator.sqlite`,
    /// `chain.json`).
    #[arg(long)]
    data: PathBuf,
}

/// Receipts read per page.
const PAGE: u64 = 16_384;

/// Signatures per batch, as the verifier batches them.
const BATCH: usize = tally_verifier::Verifier::BATCH;

/// Seconds to verify `items` in batches of [`BATCH`], the best of three passes.
pub(crate) fn batched_secs(
    items: &[(tally_protocol::PublicKey, &[u8], tally_protocol::Signature)],
) -> f64 {
    (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            for chunk in items.chunks(BATCH) {
                let _ = std::hint::black_box(tally_protocol::verify_batch(chunk));
            }
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

pub(crate) fn run(args: AuditBenchArgs) -> anyhow::Result<ExitCode> {
    let view = ChainView::read(&args.data.join(CHAIN_FILE))?;
    let db = args.data.join(DB_FILE);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bars = crate::audit::Bars::default();
    let (audit, all) = runtime.block_on(async {
        let store = SqliteStore::open_read_only(&db)
            .await
            .with_context(|| format!("opening {}", db.display()))?;
        let size = store.tree_size().await?;
        let mut all = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut from = 0;
        while from < size {
            let to = (from + PAGE).min(size);
            for row in store.leaves(from, to).await? {
                all.push(
                    SignedReceipt::decode(&row.bytes)
                        .with_context(|| format!("leaf {} does not decode", row.leaf))?,
                );
            }
            from = to;
        }
        let options = AuditOptions {
            threads: 1,
            quality: false,
        };
        eprintln!("auditing {size} receipts on one verifier thread …");
        let audit = tally_auditor::audit_store(&store, &view, options, &bars).await;
        store.close().await;
        anyhow::Ok((audit?, all))
    })?;
    let sample = all.first().context("the log is empty: nothing to audit")?;

    eprintln!("measuring the floor on the data's own signatures, one core …");
    // The payer signatures, batched as the verifier batches them (its chunks): the data's
    // key distribution matters (a batch sums the terms of each key once).
    let messages: Vec<Vec<u8>> = all
        .iter()
        .map(|r| r.receipt.authorization.authorization.encode())
        .collect();
    let payer_items: Vec<_> = all
        .iter()
        .zip(&messages)
        .map(|(r, m)| {
            let a = &r.receipt.authorization;
            (a.authorization.payer, m.as_slice(), a.signature)
        })
        .collect();
    let payer_secs = batched_secs(&payer_items);
    // The distinct host checkpoints (one per group commit), each verified once.
    let mut seen = HashSet::new();
    let checkpoints: Vec<(
        tally_protocol::PublicKey,
        Vec<u8>,
        tally_protocol::Signature,
    )> = all
        .iter()
        .filter(|r| seen.insert((r.receipt.host().0, r.checkpoint.size)))
        .map(|r| {
            let a = &r.receipt.authorization.authorization;
            let host = *r.receipt.host();
            (
                host,
                r.checkpoint.body(&a.chain_id, &a.contract, &host),
                r.checkpoint.signature,
            )
        })
        .collect();
    let groups = checkpoints.len();
    let checkpoint_items: Vec<_> = checkpoints
        .iter()
        .map(|(k, m, s)| (*k, m.as_slice(), *s))
        .collect();
    let checkpoint_secs = batched_secs(&checkpoint_items);
    // Version 1: a host signature over every receipt, by as many host keys as the data has.
    let hosts: Vec<SigningKey> = {
        let distinct: HashSet<_> = all.iter().map(|r| r.receipt.host().0).collect();
        (0..distinct.len().max(1) as u32)
            .map(|i| SigningKey::from_seed(&Digest::sha256(&i.to_be_bytes()).0))
            .collect()
    };
    let bodies: Vec<Vec<u8>> = all.iter().map(|r| r.receipt.encode()).collect();
    let v1_sigs: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let k = &hosts[i % hosts.len()];
            (k.public_key(), k.sign(b))
        })
        .collect();
    let v1_items: Vec<_> = v1_sigs
        .iter()
        .zip(&bodies)
        .map(|((k, s), b)| (*k, b.as_slice(), *s))
        .collect();
    let v1_host_secs = batched_secs(&v1_items);

    let sandbox = crate::guest::sandbox(None)?;
    let schedule = view
        .models
        .iter()
        .map(|m| m.schedule.clone())
        .find(|s| s.hash() == sample.receipt.schedule)
        .context("the sample receipt's schedule is not in the chain view")?;
    let input = MeterInput {
        facts: sample.receipt.facts.clone(),
        schedule,
        max_fee: sample.receipt.authorization.authorization.max_fee,
    };
    let meter_rate = rate(Duration::from_secs(1), || {
        let _ = std::hint::black_box(sandbox.meter(&input));
    });
    // What is hashed per receipt: its encoding, leaf hash and receipt id, its inclusion
    // path in the host's log (every bundle's proof is checked, §2.9: about log₂ of the
    // host's log size, so the data's own receipts are hashed, a strided sample of them)
    // and the aggregator log's leaf.
    let stride = (all.len() / 4_096).max(1);
    let hashed: Vec<&SignedReceipt> = all.iter().step_by(stride).collect();
    let mut i = 0;
    let hash_rate = rate(Duration::from_secs(1), || {
        let r = hashed[i % hashed.len()];
        i += 1;
        let body = r.receipt.encode();
        let leaf = leaf_hash(&body);
        let mut h = leaf;
        for p in &r.proof {
            h = tally_protocol::merkle::node_hash(p, &h);
        }
        std::hint::black_box((r.receipt.id(), h, leaf_hash(&r.encode())));
    });
    let mean_path =
        hashed.iter().map(|r| r.proof.len()).sum::<usize>() as f64 / hashed.len() as f64;
    let receipts = all.len();
    let n = receipts as f64;
    let g = n / groups.max(1) as f64;
    let per_receipt = 1.0 / meter_rate + 1.0 / hash_rate;
    let payer = payer_secs / n;
    let per_checkpoint = checkpoint_secs / groups.max(1) as f64;
    let v1 = 1.0 / (payer + v1_host_secs / n + per_receipt);
    let v2 = 1.0 / (payer + per_checkpoint / g + per_receipt);
    let v2_16 = 1.0 / (payer + per_checkpoint / 16.0 + per_receipt);
    let audited = audit.receipts.checked as f64 / audit.verify_secs.max(1e-9);
    println!();
    println!(
        "tally bench audit — {} receipts in {} group commits (mean {g:.1} per host checkpoint), one verifier thread",
        receipts, groups
    );
    println!("{:<62} {:>14}", "measure", "value");
    let row = |name: &str, v: f64| println!("{name:<62} {v:>14.0}");
    row(
        "payer signatures verified/s (the data's, batches of 2,048)",
        n / payer_secs,
    );
    row(
        "host checkpoints verified/s (the data's, batched)",
        groups as f64 / checkpoint_secs,
    );
    row(
        "v1 host signatures verified/s (one per receipt, batched)",
        n / v1_host_secs,
    );
    row("guest re-executions/s (fresh instance each)", meter_rate);
    row(
        &format!("per-receipt hashing/s (ids, leaves, a {mean_path:.1}-hash path)"),
        hash_rate,
    );
    row(
        "floor v1: 1/(payer + host sig + meter + hashing) receipts/s",
        v1,
    );
    row(
        &format!("floor v2 on this data: 1/(payer + checkpoint/{g:.1} + meter + hashing)"),
        v2,
    );
    row("floor v2, groups of 16 (a loaded host)", v2_16);
    row("audited receipts/s (tally audit --threads 1)", audited);
    println!(
        "{:<62} {:>13.1}%",
        "audited / floor v2 on this data",
        100.0 * audited / v2
    );
    println!(
        "{:<62} {:>13.2}×",
        "largest v2/v1 speed-up this data allows (floor v2 / floor v1)",
        v2 / v1
    );
    println!(
        "{:<62} {:>13.2}×",
        "largest v2/v1 speed-up with groups of 16",
        v2_16 / v1
    );
    println!(
        "audit verdict on the data: {}",
        if audit.passed() { "PASS" } else { "FAIL" }
    );
    Ok(ExitCode::SUCCESS)
}
