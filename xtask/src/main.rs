//! Project automation, reached through `cargo xtask <command>`:
//! `vectors` regenerates the golden vectors in `testdata/`;
//! `build-guest` rebuilds `guest/dist/metering.wasm` reproducibly (`--check` compares);
//! `build-contract` does the same for `contracts/dist/tally_contracts.wasm`.
use anyhow::{Context, bail};

mod contract;
mod guest;
mod vectors;
mod vectors_more;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("vectors") => vectors::run(&root, args.iter().any(|a| a == "--check")),
        Some("build-guest") => guest::run(&root, args.iter().any(|a| a == "--check")),
        Some("build-contract") => contract::run(&root, args.iter().any(|a| a == "--check")),
        _ => bail!("usage: cargo xtask <vectors|build-guest|build-contract> [--check]"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("xtask has no parent directory")
}
