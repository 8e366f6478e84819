//! `tally journal`: a host's own journal, checked and repaired.
//!
//! `check` reads a journal without changing it and says what the attestor would do with
//! it: nothing (intact), cut an incomplete last group commit or a torn tail, or refuse to
//! start (damage before valid records; docs/protocol.md §6). `repair` rebuilds a refused
//! journal: the complete group commits before the damage, then the host's log continued
//! from the aggregator's copy (`GET /v1/hosts/{key}/receipts`) and from the valid records
//! found after the damage, each checked before it is written (the bundle alone, and that it
//! continues the rebuilt log: its proof's left siblings are the log's frontier, and the
//! log reaches each checkpoint's size with its root). The damaged file is kept beside the
//! repaired one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Subcommand;
use tally_attestor::{JournalCheck, check_journal, read_journal, salvage_journal, write_journal};
use tally_protocol::merkle::CompactRange;
use tally_protocol::{Digest, PublicKey, SignedReceipt};

#[derive(Subcommand)]
pub(crate) enum JournalCommand {
    /// Check a journal without changing it: its valid prefix, its first damage, and
    /// whether the attestor would open it (exit 1 if it would refuse).
    Check {
        /// The journal file.
        file: PathBuf,
    },
    /// Rebuild a journal the attestor refuses: keep the complete group commits before the
    /// damage and continue the host log from the aggregator's copy and the valid records
    /// after it.
    Repair {
        /// The journal file (kept as `FILE.damaged-<unix ms>`).
        file: PathBuf,
        /// The aggregator the journal was shipped to, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        from_aggregator: String,
        /// The host's public key (hex), if no intact record names it.
        #[arg(long)]
        host: Option<String>,
        /// Write the longest log that can be rebuilt even if later receipts of the journal
        /// cannot be recovered (their host_seqs will be reused: equivocation).
        #[arg(long)]
        accept_loss: bool,
    },
}

pub(crate) fn run(cmd: JournalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JournalCommand::Check { file } => check(&file),
        JournalCommand::Repair {
            file,
            from_aggregator,
            host,
            accept_loss,
        } => {
            let host = host
                .map(|h| serde_json::from_value::<PublicKey>(serde_json::Value::String(h)))
                .transpose()
                .context("--host is not a 64-digit hex key")?;
            repair(&file, &from_aggregator, host, accept_loss)
        }
    }
}

fn describe(file: &Path, c: &JournalCheck) {
    println!("journal {}: {} bytes", file.display(), c.len);
    match c.state.host {
        Some(h) => println!("host      {h}"),
        None => println!("host      (no intact record)"),
    }
    println!(
        "durable   {} receipts (host_seq 1..={}) in complete group commits, ending at offset {}",
        c.state.count, c.state.last_host_seq, c.valid_end
    );
    if c.state.dropped_receipts > 0 {
        println!(
            "after it  {} receipts of an incomplete group commit (never returned: dropped on open)",
            c.state.dropped_receipts
        );
    }
    if let Some(d) = &c.damage {
        println!("damage    {d}");
    }
    println!("verdict   {}", c.verdict());
}

fn check(file: &Path) -> anyhow::Result<ExitCode> {
    let c = check_journal(file).with_context(|| format!("reading {}", file.display()))?;
    describe(file, &c);
    if let Some(d) = &c.damage
        && !d.is_torn_tail()
    {
        let after = salvage_journal(file, d.offset + 1, c.state.host)?;
        println!(
            "after it  {} valid records (host_seq {})",
            after.len(),
            span(after.iter().map(|r| r.receipt.host_seq))
        );
        println!(
            "repair    tally journal repair {} --from-aggregator URL",
            file.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `a..=b` of the smallest and largest of `seqs`, or `-`.
fn span(seqs: impl Iterator<Item = u64>) -> String {
    let (lo, hi) = seqs.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
    if lo > hi {
        "-".into()
    } else {
        format!("{lo}..={hi}")
    }
}

/// The host's receipts the aggregator holds from `from` on, by host_seq.
fn fetch(base: &str, host: &PublicKey, from: u64) -> anyhow::Result<HashMap<u64, SignedReceipt>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let base = base.trim_end_matches('/').to_owned();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        let mut out = HashMap::new();
        let mut next = from;
        loop {
            let url = format!("{base}/v1/hosts/{host}/receipts?from={next}&limit=1000");
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
            let v: serde_json::Value = resp.json().await.with_context(|| format!("GET {url}"))?;
            let page = v["receipts"].as_array().cloned().unwrap_or_default();
            let Some(last) = page.last().and_then(|r| r["host_seq"].as_u64()) else {
                break;
            };
            for item in &page {
                let enc = item["encoding"].as_str().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(enc)
                    .context("a receipt's encoding is not base64")?;
                let r = SignedReceipt::decode(&bytes).context("a receipt does not decode")?;
                out.insert(r.receipt.host_seq, r);
            }
            if page.len() < 1000 || last == u64::MAX {
                break;
            }
            next = last + 1;
        }
        anyhow::Ok(out)
    })
}

/// The host log being rebuilt: its frontier and the roots of checkpoints seen for sizes it
/// has not reached.
struct Rebuilt {
    log: CompactRange,
    future: HashMap<u64, Digest>,
}

impl Rebuilt {
    /// Whether `r` may be `host`'s next receipt: its place, its host, the bundle alone, its
    /// proof's left siblings (the rebuilt log's frontier) and, at the size it brings the
    /// log to, the root of any checkpoint seen for that size.
    fn continues(&self, r: &SignedReceipt, host: &PublicKey) -> bool {
        let peaks: Vec<Digest> = r.left_siblings().iter().map(|n| n.hash).collect();
        let mut next = self.log.clone();
        next.append(r.receipt.leaf_hash(), |_, _, _| {});
        r.receipt.host_seq == self.log.size() + 1
            && r.receipt.host() == host
            && peaks == self.log.peaks()
            && self
                .future
                .get(&next.size())
                .is_none_or(|root| *root == next.root())
            && r.verify().is_ok()
    }

    fn push(&mut self, r: &SignedReceipt) {
        self.log.append(r.receipt.leaf_hash(), |_, _, _| {});
        self.future.remove(&self.log.size());
        if r.checkpoint.size > self.log.size() {
            self.future.insert(r.checkpoint.size, r.checkpoint.root);
        }
    }
}

fn repair(
    file: &Path,
    aggregator: &str,
    host: Option<PublicKey>,
    accept_loss: bool,
) -> anyhow::Result<ExitCode> {
    let c = check_journal(file).with_context(|| format!("reading {}", file.display()))?;
    describe(file, &c);
    let Some(damage) = c.damage.filter(|d| !d.is_torn_tail()) else {
        println!("nothing to repair: the attestor opens this journal as it is");
        return Ok(ExitCode::SUCCESS);
    };
    let mut chain: Vec<SignedReceipt> = read_journal(file)?
        .take(usize::try_from(c.state.count)?)
        .collect::<Result<_, _>>()?;
    let salvaged = salvage_journal(file, damage.offset + 1, c.state.host.or(host))?;
    let Some(host) = c
        .state
        .host
        .or(host)
        .or_else(|| salvaged.first().map(|r| *r.receipt.host()))
    else {
        bail!("no intact record names the host: pass --host KEY");
    };
    // Every receipt up to the largest checkpoint size found must come back: a group
    // missing one is incomplete, and recovery would drop receipts clients hold.
    let local_last = salvaged
        .iter()
        .map(|r| r.receipt.host_seq.max(r.checkpoint.size))
        .max()
        .unwrap_or(0);
    let mut local: HashMap<u64, Vec<SignedReceipt>> = HashMap::new();
    for r in salvaged {
        local.entry(r.receipt.host_seq).or_default().push(r);
    }
    let remote = fetch(aggregator, &host, c.state.count + 1)?;
    println!(
        "recovered {} receipts of this host from {aggregator} (host_seq {}), {} valid records after the damage",
        remote.len(),
        span(remote.keys().copied()),
        local.values().map(Vec::len).sum::<usize>()
    );
    let local_last = local_last.max(
        remote
            .values()
            .map(|r| r.checkpoint.size)
            .max()
            .unwrap_or(0),
    );
    let mut rebuilt = Rebuilt {
        log: c.state.frontier.clone(),
        future: HashMap::new(),
    };
    let (mut from_remote, mut from_file) = (0u64, 0u64);
    loop {
        let seq = rebuilt.log.size() + 1;
        let next = match remote.get(&seq).filter(|r| rebuilt.continues(r, &host)) {
            Some(r) => {
                from_remote += 1;
                r.clone()
            }
            None => match local
                .get(&seq)
                .and_then(|rs| rs.iter().find(|r| rebuilt.continues(r, &host)))
            {
                Some(r) => {
                    from_file += 1;
                    r.clone()
                }
                None => break,
            },
        };
        rebuilt.push(&next);
        chain.push(next);
    }
    let rebuilt_last = rebuilt.log.size();
    let seq = rebuilt_last + 1;
    if rebuilt_last < local_last {
        println!(
            "cannot recover host_seq {seq}: neither the aggregator nor the journal has it; the journal holds receipts up to {local_last}"
        );
        if !accept_loss {
            println!(
                "nothing written; the attestor stays stopped (reusing host_seq {seq}..={local_last} would be equivocation). Pass --accept-loss to write the log up to {rebuilt_last} anyway."
            );
            return Ok(ExitCode::FAILURE);
        }
        println!(
            "--accept-loss: writing the log up to {rebuilt_last}; host_seq {seq}..={local_last} are lost"
        );
    }
    let repaired = sibling(file, ".repaired");
    write_journal(&repaired, &chain).with_context(|| format!("writing {}", repaired.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let kept = sibling(file, &format!(".damaged-{now}"));
    std::fs::rename(file, &kept).with_context(|| format!("moving {} aside", file.display()))?;
    std::fs::rename(&repaired, file)
        .with_context(|| format!("moving {} into place", repaired.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    println!(
        "repaired  {} receipts (host_seq 1..={rebuilt_last}): {} intact, {from_remote} from the aggregator, {from_file} from the journal after the damage",
        chain.len(),
        c.state.count
    );
    println!("kept      the damaged file as {}", kept.display());
    Ok(ExitCode::SUCCESS)
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
