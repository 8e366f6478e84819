//! `tally`: one command that wires the crates together.
use clap::Parser;

/// Verifiable AI-model usage: attest, aggregate, verify and settle call receipts.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
