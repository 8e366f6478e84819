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

/// Receipts read per page when counting host checkpoints.
const PAGE: u64 = 16_384;

pub(crate) fn run(args: AuditBenchArgs) -> anyhow::Result<ExitCode> {
    let view = ChainView::read(&args.data.join(CHAIN_FILE))?;
    let db = args.data.join(DB_FILE);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bars = crate::audit::Bars::default();
    let (audit, receipts, groups, sample) = runtime.block_on(async {
        let store = SqliteStore::open_read_only(&db)
            .await
            .with_context(|| format!("opening {}", db.display()))?;
        // The data's group commits: distinct (host, host checkpoint size) over the log.
        let size = store.tree_size().await?;
        let mut groups = HashSet::new();
        let mut sample = None;
        let mut from = 0;
        while from < size {
            let to = (from + PAGE).min(size);
            for row in store.leaves(from, to).await? {
                let r = SignedReceipt::decode(&row.bytes)
                    .with_context(|| format!("leaf {} does not decode", row.leaf))?;
                groups.insert((r.receipt.host().0, r.checkpoint.size));
                sample.get_or_insert(r);
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
        anyhow::Ok((audit?, size, groups.len(), sample))
    })?;
    let sample = sample.context("the log is empty: nothing to audit")?;

    eprintln!("measuring raw limits on one core …");
    let sandbox = crate::guest::sandbox(None)?;
    let payers: Vec<SigningKey> = (0..2048u32)
        .map(|i| SigningKey::from_seed(&Digest::sha256(&i.to_be_bytes()).0))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..2048u32).map(|i| vec![i as u8; 480]).collect();
    let items: Vec<_> = payers
        .iter()
        .zip(&msgs)
        .map(|(k, m)| (k.public_key(), m.as_slice(), k.sign(m)))
        .collect();
    let verify_rate = items.len() as f64
        * rate(Duration::from_secs(2), || {
            let _ = std::hint::black_box(tally_protocol::verify_batch(&items));
        });
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
    // What is hashed per receipt: its encoding, leaf hash, receipt id and its path in the
    // host's log.
    let hash_rate = rate(Duration::from_secs(1), || {
        let body = sample.receipt.encode();
        let leaf = leaf_hash(&body);
        let mut h = leaf;
        for p in &sample.proof {
            h = tally_protocol::merkle::node_hash(p, &h);
        }
        std::hint::black_box((sample.receipt.id(), h, leaf_hash(&sample.encode())));
    });

    let n = receipts as f64;
    let g = n / groups.max(1) as f64;
    let floor = |sigs: f64| 1.0 / (sigs / verify_rate + 1.0 / meter_rate + 1.0 / hash_rate);
    let (v1, v2, v2_16) = (floor(2.0), floor(1.0 + 1.0 / g), floor(1.0 + 1.0 / 16.0));
    let audited = audit.receipts.checked as f64 / audit.verify_secs.max(1e-9);
    println!();
    println!(
        "tally bench audit — {} receipts in {} group commits (mean {g:.1} per host checkpoint), one verifier thread",
        receipts, groups
    );
    println!("{:<62} {:>14}", "measure", "value");
    let row = |name: &str, v: f64| println!("{name:<62} {v:>14.0}");
    row(
        "raw ZIP-215 verifies/s, batches of 2,048 (payer signatures)",
        verify_rate,
    );
    row("guest re-executions/s (fresh instance each)", meter_rate);
    row("per-receipt hashing/s", hash_rate);
    row("floor v1: 1/(2 sigs + meter + hashing) receipts/s", v1);
    row(
        &format!("floor v2 on this data: 1/((1 + 1/{g:.1}) sigs + meter + hashing)"),
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
