//! `tally attest`: one call to one signed receipt, for scripts and tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_protocol::{PriceSchedule, SignedAuthorization, UsageFacts};

use crate::read_json;

#[derive(Args)]
pub(crate) struct AttestArgs {
    /// The payer's signed authorisation (JSON).
    #[arg(long)]
    auth: PathBuf,
    /// The call's usage facts (JSON).
    #[arg(long)]
    facts: PathBuf,
    /// The model's price schedule (JSON).
    #[arg(long)]
    schedule: PathBuf,
    /// The host's key file.
    #[arg(long)]
    key: PathBuf,
    /// The host's journal (created if missing; the receipt continues its chain).
    #[arg(long)]
    journal: PathBuf,
    /// The settlement chain id this host serves (default: the authorisation's).
    #[arg(long)]
    chain_id: Option<String>,
    /// The settlement contract this host serves (default: the authorisation's).
    #[arg(long)]
    contract: Option<String>,
    /// A metering guest other than the pinned one.
    #[arg(long)]
    guest: Option<PathBuf>,
}

pub(crate) fn run(args: AttestArgs) -> anyhow::Result<ExitCode> {
    let auth: SignedAuthorization = read_json(&args.auth)?;
    let facts: UsageFacts = read_json(&args.facts)?;
    let schedule: PriceSchedule = read_json(&args.schedule)?;
    let key = tally_attestor::load_key_file(&args.key)?;
    let sandbox = crate::guest::sandbox(args.guest.as_deref())?;
    let config = AttestorConfig {
        chain_id: args
            .chain_id
            .unwrap_or_else(|| auth.authorization.chain_id.clone()),
        contract: args
            .contract
            .unwrap_or_else(|| auth.authorization.contract.clone()),
        journal_path: args.journal,
        group_commit: GroupCommit::default(),
        schedules: vec![schedule],
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let receipt = runtime.block_on(async move {
        let attestor = Attestor::open(config, key, Arc::clone(&sandbox)).await?;
        attestor.attest(&auth, &facts).await
    });
    let receipt = receipt.context("the call was not attested")?;
    println!("{}", serde_json::to_string(&receipt)?);
    Ok(ExitCode::SUCCESS)
}
