//! `tally keys`: key files for payers, hosts and aggregators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a new key file (refuses to overwrite) and print its public key.
    New {
        /// Where to write the key (created with mode 0600).
        path: PathBuf,
    },
    /// Print the public key of a key file.
    Show {
        /// The key file.
        path: PathBuf,
    },
}

pub(crate) fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let key = match cmd {
        KeysCommand::New { path } => tally_attestor::generate_key_file(&path)?,
        KeysCommand::Show { path } => tally_attestor::load_key_file(&path)?,
    };
    println!("{}", key.public_key());
    Ok(ExitCode::SUCCESS)
}
