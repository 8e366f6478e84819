//! `tally verify`: offline checks of a receipt stream or of a host's journal.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tally_attestor::{JOURNAL_MAGIC, read_journal};
use tally_protocol::{PriceSchedule, SignedReceipt};
use tally_verifier::{ChainStart, Reexecute, Verifier, VerifierConfig, read_receipts};

use crate::read_json;

/// Whether `path` starts with the journal magic (`-`, standard input, never does).
fn is_journal(path: &std::path::Path) -> anyhow::Result<bool> {
    if path.as_os_str() == "-" {
        return Ok(false);
    }
    let mut head = [0u8; 8];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(n == head.len() && head == JOURNAL_MAGIC)
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Receipts: JSON lines, the binary stream (detected from the first byte), or an
    /// attestor's journal (detected by its `TALLYJ01` magic); `-` for standard input.
    input: PathBuf,
    /// A metering guest other than the pinned one.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Price schedules (JSON), one per model; receipts name theirs by hash. Default: every
    /// `*.schedule.json` beside the input file.
    #[arg(long = "schedule")]
    schedules: Vec<PathBuf>,
    /// Re-execute only this many receipts per thousand (default: all).
    #[arg(long)]
    sample: Option<u32>,
    /// Accept host logs seen from after seq 1 (a slice of a longer log).
    #[arg(long)]
    anywhere: bool,
    /// Print at most this many findings.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

pub(crate) fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut paths = args.schedules.clone();
    if paths.is_empty() {
        let dir = match args.input.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".schedule.json") {
                    paths.push(e.path());
                }
            }
        }
        paths.sort();
        if paths.is_empty() {
            anyhow::bail!(
                "no price schedules: pass --schedule FILE (or put *.schedule.json beside {})",
                args.input.display()
            );
        }
    }
    let schedules = paths
        .iter()
        .map(read_json::<PriceSchedule>)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sandbox = crate::guest::sandbox(args.guest.as_deref())?;
    let mut verifier = Verifier::new(VerifierConfig {
        guests: vec![sandbox],
        schedules,
        reexecute: match args.sample {
            Some(n) => Reexecute::sample(n),
            None => Reexecute::All,
        },
        chain_start: if args.anywhere {
            ChainStart::Anywhere
        } else {
            ChainStart::Genesis
        },
    });
    let started = Instant::now();
    let mut shown = 0;
    let mut batch = Vec::with_capacity(Verifier::BATCH);
    // A journal (magic `TALLYJ01`) is read as one: its framing and checksums checked, a
    // damaged record reported as a failure after everything before it is verified.
    let mut journal_damage = None;
    let receipts: Box<dyn Iterator<Item = anyhow::Result<SignedReceipt>> + '_> =
        if is_journal(&args.input)? {
            Box::new(
                read_journal(&args.input)
                    .with_context(|| format!("reading {}", args.input.display()))?
                    .map_while(|r| match r {
                        Ok(r) => Some(Ok(r)),
                        Err(e) => {
                            journal_damage = Some(e);
                            None
                        }
                    }),
            )
        } else {
            let reader: Box<dyn Read> = if args.input.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(
                    File::open(&args.input)
                        .with_context(|| format!("opening {}", args.input.display()))?,
                )
            };
            Box::new(read_receipts(BufReader::new(reader)).map(|r| r.map_err(Into::into)))
        };
    let mut receipts = receipts.peekable();
    while let Some(r) = receipts.next() {
        batch.push(r.with_context(|| format!("reading {}", args.input.display()))?);
        if batch.len() == Verifier::BATCH || receipts.peek().is_none() {
            for finding in verifier.push(&batch) {
                if shown < args.show {
                    println!("FAIL {finding}");
                }
                shown += 1;
            }
            batch.clear();
        }
    }
    drop(receipts);
    let report = verifier.finish();
    let secs = started.elapsed().as_secs_f64();
    if let Some(e) = &journal_damage {
        println!(
            "FAIL {e} (see `tally journal check {}`)",
            args.input.display()
        );
    }
    println!("{report}");
    println!(
        "{} receipts in {secs:.2} s ({:.0} receipts/s)",
        report.checked,
        report.checked as f64 / secs.max(1e-9)
    );
    Ok(if report.is_ok() && journal_damage.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
