//! `tally watch`: the standalone watcher and challenger of a deployment
//! (`tally_auditor::watcher`), from a TOML file with `TALLY_*` environment overrides and
//! command-line flags over both. Before it watches it checks the deployment (the chain
//! answers, the contract is Tally's, the aggregator key is registered, the aggregator
//! answers) and that its account can pay for a challenge; any failure is a clear error and
//! a non-zero exit with nothing sent. It serves `/metrics`, `/healthz` and
//! `POST /v1/receipts` (receipts to see logged) on `listen`, and stops on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tally_aggregator::chain::{Chain, CosmosChain};
use tally_aggregator::config::ChainSection;
use tally_auditor::watcher::{Watcher, WatcherConfig};
use tally_protocol::PublicKey;

use crate::serve::{LogFormat, init_tracing};

/// The watcher's configuration file (every key optional; unknown keys refused).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WatchFile {
    /// The aggregator's base URL (`TALLY_AGGREGATOR_URL`).
    aggregator_url: String,
    /// The aggregator's registered ed25519 key, hex (`TALLY_AGGREGATOR_KEY`).
    aggregator_key: String,
    /// The chain id receipts are bound to (`TALLY_CHAIN_ID`).
    chain_id: String,
    /// The settlement contract (`TALLY_CONTRACT`).
    contract: String,
    /// The state directory (`TALLY_STATE_DIR`).
    state_dir: PathBuf,
    /// Where `/metrics` and `POST /v1/receipts` are served (`TALLY_LISTEN`).
    listen: String,
    /// How often the aggregator and the chain are read, in ms (`TALLY_POLL_MS`).
    poll_ms: u64,
    /// Batches after which an awaited receipt not in the log is reported
    /// (`TALLY_CENSORSHIP_BATCHES`).
    censorship_batches: u64,
    /// The chain's node and the watcher's account (`TALLY_CHAIN_*`).
    chain: ChainSection,
}

impl Default for WatchFile {
    fn default() -> Self {
        WatchFile {
            aggregator_url: "http://127.0.0.1:8080".into(),
            aggregator_key: String::new(),
            chain_id: String::new(),
            contract: String::new(),
            state_dir: "watch-state".into(),
            listen: "127.0.0.1:9464".into(),
            poll_ms: 2_000,
            censorship_batches: 3,
            chain: ChainSection {
                key_file: "watcher.key".into(),
                ..ChainSection::default()
            },
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct WatchArgs {
    /// The TOML configuration; without it, defaults, `TALLY_*` variables and flags.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The aggregator's base URL.
    #[arg(long)]
    aggregator: Option<String>,
    /// The aggregator's registered key (64 hex digits).
    #[arg(long)]
    aggregator_key: Option<String>,
    /// The chain node's REST endpoint.
    #[arg(long)]
    chain_rest: Option<String>,
    /// The chain id.
    #[arg(long)]
    chain_id: Option<String>,
    /// The settlement contract's address.
    #[arg(long)]
    contract: Option<String>,
    /// The watcher's secp256k1 account key file (64 hex digits): it pays for challenges
    /// and is credited the challenger's share of each slash.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The state directory (leaves, ledger, alerts, inbox).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Address for `/metrics`, `/healthz` and `POST /v1/receipts`.
    #[arg(long)]
    listen: Option<String>,
    /// Poll interval in ms.
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Log format; the level is set by `RUST_LOG` (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration and the deployment, then exit without watching.
    #[arg(long)]
    check: bool,
}

fn load(args: &WatchArgs, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<WatchFile> {
    let mut f = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => WatchFile::default(),
    };
    let set = |v: &str, field: &mut String| {
        if let Some(x) = env(v) {
            *field = x;
        }
    };
    set("TALLY_AGGREGATOR_URL", &mut f.aggregator_url);
    set("TALLY_AGGREGATOR_KEY", &mut f.aggregator_key);
    set("TALLY_CHAIN_ID", &mut f.chain_id);
    set("TALLY_CONTRACT", &mut f.contract);
    set("TALLY_LISTEN", &mut f.listen);
    if let Some(v) = env("TALLY_STATE_DIR") {
        f.state_dir = v.into();
    }
    for (var, field) in [
        ("TALLY_POLL_MS", &mut f.poll_ms),
        ("TALLY_CENSORSHIP_BATCHES", &mut f.censorship_batches),
    ] {
        if let Some(v) = env(var) {
            *field = v
                .parse()
                .with_context(|| format!("{var}=`{v}` is not a number"))?;
        }
    }
    f.chain.apply_env(&env)?;
    let flag = |v: &Option<String>, field: &mut String| {
        if let Some(x) = v {
            field.clone_from(x);
        }
    };
    flag(&args.aggregator, &mut f.aggregator_url);
    flag(&args.aggregator_key, &mut f.aggregator_key);
    flag(&args.chain_rest, &mut f.chain.rest_url);
    flag(&args.chain_id, &mut f.chain_id);
    flag(&args.contract, &mut f.contract);
    flag(&args.listen, &mut f.listen);
    if let Some(k) = &args.key {
        f.chain.key_file.clone_from(k);
    }
    if let Some(s) = &args.state {
        f.state_dir.clone_from(s);
    }
    if let Some(p) = args.poll_ms {
        f.poll_ms = p;
    }
    Ok(f)
}

/// The checks that need no network.
fn validate(f: &WatchFile) -> anyhow::Result<PublicKey> {
    if f.chain_id.is_empty() || f.contract.is_empty() {
        bail!("chain_id and contract are required (--chain-id, --contract)");
    }
    if !(f.aggregator_url.starts_with("http://") || f.aggregator_url.starts_with("https://")) {
        bail!("aggregator_url must be an http:// or https:// URL");
    }
    let key: [u8; 32] = hex::decode(f.aggregator_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("aggregator_key must be the aggregator's ed25519 key, 64 hex digits")?;
    if !(100..=3_600_000).contains(&f.poll_ms) {
        bail!("poll_ms must be 100..=3600000");
    }
    if !(1..=1_000).contains(&f.censorship_batches) {
        bail!("censorship_batches must be 1..=1000");
    }
    f.chain.validate(&f.chain_id, &f.contract)?;
    f.listen
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("listen `{}` is not an address:port", f.listen))?;
    Ok(PublicKey(key))
}

pub(crate) fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let f = load(&args, |k| std::env::var(k).ok())?;
    if args.print_config {
        print!("{}", toml::to_string(&f)?);
        return Ok(ExitCode::SUCCESS);
    }
    let aggregator_key = validate(&f)?;
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(watch(f, aggregator_key, args.check))?;
    Ok(ExitCode::SUCCESS)
}

async fn watch(f: WatchFile, aggregator_key: PublicKey, check_only: bool) -> anyhow::Result<()> {
    let key = f
        .chain
        .load_key()
        .with_context(|| format!("loading the watcher key {}", f.chain.key_file.display()))?;
    let chain = CosmosChain::new(f.chain.cosmos_config(&f.chain_id, &f.contract)?, key)?;
    let funds = chain.balance().await.with_context(|| {
        format!(
            "reading the watcher account's balance at {}",
            f.chain.rest_url
        )
    })?;
    if funds == 0 {
        bail!(
            "the watcher account {} holds no {}: it could not pay for a challenge",
            chain.address(),
            f.chain.denom
        );
    }
    let chain = Arc::new(chain);
    let config = WatcherConfig {
        aggregator_url: f.aggregator_url.clone(),
        aggregator_key,
        chain_id: f.chain_id.clone(),
        contract: f.contract.clone(),
        state_dir: f.state_dir.clone(),
        censorship_batches: f.censorship_batches,
    };
    let watcher = Watcher::open(config, Arc::clone(&chain))
        .await
        .context("opening the watcher")?;
    tracing::info!(
        account = %chain.address(),
        funds,
        aggregator = %f.aggregator_url,
        contract = %f.contract,
        leaves = watcher.size(),
        state = %f.state_dir.display(),
        "watching"
    );
    if check_only {
        println!(
            "ok: {} on {} with account {} ({funds} {})",
            f.contract,
            f.chain_id,
            chain.address(),
            f.chain.denom
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&f.listen)
        .await
        .with_context(|| format!("binding {}", f.listen))?;
    let app = tally_auditor::watcher::router(
        watcher.metrics(),
        watcher.inbox(),
        f.chain_id.clone(),
        f.contract.clone(),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    watcher
        .run(Duration::from_millis(f.poll_ms), shutdown_signal())
        .await;
    server.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WatchArgs,
    }

    fn args(flags: &[&str]) -> WatchArgs {
        Cli::parse_from(std::iter::once("watch").chain(flags.iter().copied())).args
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_defaults() {
        let env = |k: &str| match k {
            "TALLY_CONTRACT" => Some("tally1env".to_owned()),
            "TALLY_CHAIN_ID" => Some("env-1".to_owned()),
            "TALLY_POLL_MS" => Some("500".to_owned()),
            _ => None,
        };
        let f = load(&args(&["--contract", "tally1flag"]), env).unwrap();
        assert_eq!(f.contract, "tally1flag");
        assert_eq!(f.chain_id, "env-1");
        assert_eq!(f.poll_ms, 500);
        assert_eq!(f.chain.key_file, Path::new("watcher.key"));
    }

    #[test]
    fn the_example_configuration_parses_and_validates() {
        let text = include_str!("../../auditor/watch.example.toml");
        let f: WatchFile = toml::from_str(text).unwrap();
        validate(&f).unwrap();
        assert_eq!(f.censorship_batches, 3);
        // Unknown keys are refused, so a typo cannot fall back to a default.
        let typo = format!("{text}\npoll_sm = 5\n");
        assert!(toml::from_str::<WatchFile>(&typo).is_err());
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let none = |_: &str| None;
        let f = load(&args(&[]), none).unwrap();
        let e = validate(&f).unwrap_err().to_string();
        assert!(e.contains("chain_id and contract"), "{e}");
        let f = load(
            &args(&[
                "--chain-id",
                "c-1",
                "--contract",
                "tally1x",
                "--aggregator-key",
                "zz",
            ]),
            none,
        )
        .unwrap();
        let e = validate(&f).unwrap_err().to_string();
        assert!(e.contains("aggregator_key"), "{e}");
        let bad = |k: &str| (k == "TALLY_POLL_MS").then(|| "soon".to_owned());
        let e = load(&args(&[]), bad).unwrap_err().to_string();
        assert!(e.contains("TALLY_POLL_MS"), "{e}");
    }
}
