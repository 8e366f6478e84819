//! `tally demo`: hosts, payers and calls on this machine, end to end as far as the project
//! goes today — attest every call in the sandboxed guest, journal it, then audit every
//! receipt offline (signatures, re-execution, chains, totals), catch an injected
//! re-priced receipt, and show what each model and host earned.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_protocol::{Digest, SignedReceipt, SigningKey};
use tally_verifier::{ChainStart, Reexecute, Verifier, VerifierConfig};

use crate::workload::{self, Rng};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Paying clients (a few heavy, many light).
    #[arg(long, default_value_t = 60)]
    payers: usize,
    /// Inference hosts, each with its own attestor, key and journal.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Calls to make in all.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Seed for the traffic (the same seed replays the same run).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Keep the keys, journals and receipts in this directory (default: a temporary one).
    #[arg(long)]
    keep: Option<PathBuf>,
}

struct Host {
    attestor: Attestor,
    key: SigningKey,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.payers == 0 || args.hosts == 0 || args.calls == 0 {
        bail!("--payers, --hosts and --calls must be at least 1");
    }
    let temp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let models = workload::models();
    let sandbox = crate::guest::sandbox(None)?;
    println!(
        "Tally demo: {} hosts, {} payers, {} models, {} calls",
        args.hosts,
        args.payers,
        models.len(),
        args.calls
    );
    println!(
        "  guest  {} (pinned, sandboxed in wasmtime)",
        sandbox.guest_hash()
    );
    println!("  data   {}", dir.display());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rng = Rng::new(args.seed);
    // Payers' demand is uneven: weight ∝ 1/rank (Zipf), so a few payers make most calls.
    let payers: Vec<SigningKey> = (0..args.payers)
        .map(|_| SigningKey::from_seed(&rng.bytes32()))
        .collect();
    let weights: Vec<f64> = (1..=args.payers).map(|r| 1.0 / r as f64).collect();
    let total_weight: f64 = weights.iter().sum();

    let hosts: Vec<Arc<Host>> = runtime.block_on(async {
        let mut hosts = Vec::new();
        for h in 0..args.hosts {
            let key_path = dir.join(format!("host-{h}.key"));
            let key = if key_path.exists() {
                tally_attestor::load_key_file(&key_path)?
            } else {
                tally_attestor::generate_key_file(&key_path)?
            };
            let attestor = Attestor::open(
                AttestorConfig {
                    chain_id: workload::CHAIN_ID.into(),
                    contract: workload::CONTRACT.into(),
                    journal_path: dir.join(format!("host-{h}.journal")),
                    group_commit: GroupCommit::default(),
                    schedules: models.iter().map(|m| m.schedule.clone()).collect(),
                },
                SigningKey::from_seed(&key.seed()),
                Arc::clone(&sandbox),
            )
            .await?;
            hosts.push(Arc::new(Host { attestor, key }));
        }
        anyhow::Ok(hosts)
    })?;

    // Plan the calls: who pays, which host, which model, what happened.
    let now = workload::now_ms();
    let mut seqs: BTreeMap<(usize, usize, usize), u64> = BTreeMap::new();
    let mut plan = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let mut x = rng.unit() * total_weight;
        let mut p = 0;
        while p + 1 < args.payers && x >= weights[p] {
            x -= weights[p];
            p += 1;
        }
        let h = (p + rng.below(2)) % args.hosts;
        let m = if rng.unit() < 0.7 {
            p % models.len()
        } else {
            rng.below(models.len())
        };
        let seq = seqs.entry((p, h, m)).or_insert(0);
        *seq += 1;
        let request = Digest(rng.bytes32());
        let facts = workload::facts(&mut rng, &models[m], request, now);
        plan.push((h, m, p, *seq, request, facts));
    }

    // Payers sign their authorisations; then the hosts attest concurrently.
    let mut per_host: Vec<Vec<_>> = (0..args.hosts).map(|_| Vec::new()).collect();
    let pb = bar(args.calls as u64, "authorise");
    for (h, m, p, seq, request, facts) in plan {
        let auth = workload::authorize(
            &payers[p],
            &hosts[h].key.public_key(),
            &models[m],
            seq,
            request,
            now + 3_600_000,
        );
        per_host[h].push((auth, facts));
        pb.inc(1);
    }
    pb.finish();
    let started = Instant::now();
    let pb = bar(args.calls as u64, "attest");
    let receipts: Vec<SignedReceipt> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (h, calls) in per_host.into_iter().enumerate() {
            // Channels must be attested in seq order; 8 lanes per host keep that order
            // per channel (lane = channel hash) while calls overlap.
            let mut lanes: Vec<Vec<_>> = (0..8).map(|_| Vec::new()).collect();
            for (auth, facts) in calls {
                let lane = auth.authorization.channel().0.0[0] as usize % 8;
                lanes[lane].push((auth, facts));
            }
            for lane in lanes {
                let host = Arc::clone(&hosts[h]);
                let pb = pb.clone();
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::with_capacity(lane.len());
                    for (auth, facts) in lane {
                        out.push(host.attestor.attest(&auth, &facts).await?);
                        pb.inc(1);
                    }
                    anyhow::Ok(out)
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        anyhow::Ok(all)
    })?;
    pb.finish();
    let attest_secs = started.elapsed().as_secs_f64();
    println!(
        "attested {} receipts in {attest_secs:.2} s ({:.0}/s)",
        receipts.len(),
        receipts.len() as f64 / attest_secs
    );
    drop(hosts);

    // Audit: read every journal back and check every receipt, re-running the guest.
    let mut logged = Vec::new();
    for h in 0..args.hosts {
        for r in tally_attestor::read_journal(dir.join(format!("host-{h}.journal")))? {
            logged.push(r?);
        }
    }
    if logged.len() < receipts.len() {
        bail!(
            "journals hold {} receipts, {} were returned",
            logged.len(),
            receipts.len()
        );
    }
    let schedules: Vec<_> = models.iter().map(|m| m.schedule.clone()).collect();
    let audit = |receipts: &[SignedReceipt], label: &str| {
        let mut verifier = Verifier::new(VerifierConfig {
            guests: vec![Arc::clone(&sandbox)],
            schedules: schedules.clone(),
            reexecute: Reexecute::All,
            chain_start: ChainStart::Genesis,
        });
        let pb = bar(receipts.len() as u64, label);
        let mut findings = Vec::new();
        for chunk in receipts.chunks(Verifier::BATCH) {
            findings.extend(verifier.push(chunk));
            pb.inc(chunk.len() as u64);
        }
        pb.finish();
        (verifier.finish(), findings)
    };
    let started = Instant::now();
    let (report, findings) = audit(&logged, "audit");
    let audit_secs = started.elapsed().as_secs_f64();
    println!(
        "audited {} receipts in {audit_secs:.2} s ({:.0}/s): {}",
        report.checked,
        report.checked as f64 / audit_secs,
        if report.is_ok() {
            "all pass"
        } else {
            "FAILURES"
        }
    );
    for f in findings.iter().take(5) {
        println!("  {f}");
    }
    if !report.is_ok() {
        bail!("the audit of honest traffic found failures");
    }

    // A dishonest host re-prices one receipt (doubles the fee) and re-signs it: signatures
    // still verify, but re-running the pinned guest on its facts proves it wrong.
    let mut forged = logged.clone();
    let victim = forged
        .iter()
        .position(|r| r.receipt.host_seq == 1)
        .context("no receipts")?;
    let host_key = {
        let h = (0..args.hosts)
            .find(|h| {
                tally_attestor::load_key_file(dir.join(format!("host-{h}.key")))
                    .map(|k| k.public_key() == *forged[victim].receipt.host())
                    .unwrap_or(false)
            })
            .context("host key of the victim receipt")?;
        tally_attestor::load_key_file(dir.join(format!("host-{h}.key")))?
    };
    let mut r = forged[victim].receipt.clone();
    r.metered.fee *= 2;
    r.channel_total += r.metered.fee / 2;
    forged[victim] = r.sign(&host_key);
    let forged_id = forged[victim].id();
    let (report2, findings2) = audit(&forged, "fraud");
    let caught = findings2
        .iter()
        .any(|f| f.receipt == forged_id && f.failure.code() == "metered_mismatch");
    println!(
        "injected fraud: receipt {} re-priced and re-signed by its host → {}",
        &forged_id.to_string()[..16],
        if caught {
            "CAUGHT by re-execution (metered_mismatch)"
        } else {
            "NOT CAUGHT"
        }
    );
    println!("  the audit's findings (the forged receipt has a new id, so the host's next");
    println!("  receipt no longer links to it and its channel total no longer adds up):");
    for (code, n) in &report2.failures {
        println!("  {n:>6} × {code}");
    }
    if !caught {
        bail!("the re-priced receipt was not caught");
    }

    // Who earned what.
    let mut by_model: BTreeMap<&str, (u64, u64, u128)> = BTreeMap::new();
    let mut by_host: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let mut by_payer: BTreeMap<String, u128> = BTreeMap::new();
    for r in &logged {
        let m = models
            .iter()
            .find(|m| m.id() == r.receipt.facts.model)
            .map_or("?", |m| m.name);
        let e = by_model.entry(m).or_default();
        e.0 += 1;
        e.1 += r.receipt.metered.units;
        e.2 += r.receipt.metered.fee;
        let h = by_host
            .entry(r.receipt.host().to_string()[..16].to_string())
            .or_default();
        h.0 += 1;
        h.1 += r.receipt.metered.fee;
        *by_payer
            .entry(r.receipt.authorization.authorization.payer.to_string()[..16].to_string())
            .or_default() += r.receipt.metered.fee;
    }
    let total: u128 = by_model.values().map(|v| v.2).sum();
    println!();
    println!(
        "{:<20} {:>8} {:>14} {:>16} {:>7}",
        "model", "calls", "tokens", "revenue (µ)", "share"
    );
    for (m, (calls, units, fee)) in &by_model {
        println!(
            "{m:<20} {calls:>8} {units:>14} {fee:>16} {:>6.1}%",
            100.0 * *fee as f64 / total.max(1) as f64
        );
    }
    println!();
    println!("{:<20} {:>8} {:>16}", "host", "receipts", "revenue (µ)");
    for (h, (n, fee)) in &by_host {
        println!("{h:<20} {n:>8} {fee:>16}");
    }
    let mut spend: Vec<_> = by_payer.into_iter().collect();
    spend.sort_by_key(|s| std::cmp::Reverse(s.1));
    let top5: u128 = spend.iter().take(5).map(|s| s.1).sum();
    println!();
    println!(
        "{} payers; the top 5 paid {:.1}% of all revenue",
        spend.len(),
        100.0 * top5 as f64 / total.max(1) as f64
    );
    let sum_check: u128 = by_host.values().map(|v| v.1).sum();
    if sum_check != total {
        bail!("revenue by host ({sum_check}) and by model ({total}) disagree");
    }
    println!("conservation: revenue by model = revenue by host = {total} µ ✔");
    if args.keep.is_some() {
        let path = dir.join("receipts.jsonl");
        let mut out = String::new();
        for r in &logged {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        }
        std::fs::write(&path, out)?;
        for m in &models {
            std::fs::write(
                dir.join(format!("{}.schedule.json", m.name)),
                serde_json::to_string_pretty(&m.schedule)?,
            )?;
        }
        println!(
            "kept: {} (check it with `tally verify {}`)",
            dir.display(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
