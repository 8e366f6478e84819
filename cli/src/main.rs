//! `tally`: one command that wires the crates together.
//!
//! `keys` makes and shows key files, `attest` turns one call into a signed receipt,
//! `verify` checks a stream of receipts (or a journal) offline, re-running the guest;
//! `journal` checks and repairs a host's journal; `serve` runs the aggregator, `proxy`
//! meters an OpenAI-compatible server, `audit` checks a log against the chain, `bench`
//! measures against the machine's raw limits, and `demo` runs the whole flow on embedded
//! defaults.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod attest;
mod audit;
mod bench;
mod bench_audit;
mod bench_flood;
mod bench_ingest;
mod bench_proxy;
mod bench_settle;
mod bench_watch;
mod demo;
mod guest;
mod journal;
mod keys;
mod proxy;
mod serve;
mod verify;
mod watch;
mod workload;

/// Verifiable AI-model usage: attest, verify and measure call receipts.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or show ed25519 key files (32-byte seed as hex, mode 0600).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Attest one call: check the payer's authorisation, meter the facts in the sandboxed
    /// guest, sign the receipt, journal it, and print it as JSON.
    Attest(attest::AttestArgs),
    /// Verify receipts offline: bundles (inclusion, signatures), guest re-execution, host logs, channel totals.
    Verify(verify::VerifyArgs),
    /// Check a host's journal, or repair one the attestor refuses to open.
    Journal {
        #[command(subcommand)]
        command: journal::JournalCommand,
    },
    /// Measure throughput and latency against the machine's raw limits.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Run the whole flow on this machine: devnet, aggregator, hosts, payers, batches
    /// settled, an injected fraud caught and slashed, payouts and a conservation check.
    Demo(demo::DemoArgs),
    /// Audit a log against the chain: checkpoints, consistency, every receipt, inclusion
    /// proofs, payouts; optionally write the demand-quality report.
    Audit(audit::AuditArgs),
    /// Run the aggregator: ingest receipts over HTTP, seal the log, serve proofs.
    Serve(serve::ServeArgs),
    /// Meter an OpenAI-compatible server: forward its routes, check the payer's
    /// authorisation first, and return a signed receipt with every answer.
    Proxy(proxy::ProxyArgs),
    /// Guard a deployment: follow the aggregator's log and the contract's batches, check
    /// every leaf, prove each fraud on chain inside its window, alert on split views and
    /// censorship.
    Watch(watch::WatchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys { command } => keys::run(command),
        Command::Attest(args) => attest::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Journal { command } => journal::run(command),
        Command::Bench { command } => bench::run(command),
        Command::Demo(args) => demo::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Watch(args) => watch::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Reads and parses a JSON file, naming the file in every error.
fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
