//! `tally serve`: the aggregator as a service, from a TOML file with `TALLY_*` environment
//! overrides (`tally_aggregator::config`), with tracing logs and a graceful shutdown on
//! SIGINT or SIGTERM that stops accepting, finishes requests in flight and seals once more.
//!
//! With a `[chain]` section the payer escrow is the chain's (read before serving, then
//! refreshed in the background, so ingest never waits on the chain) and a [`Settler`]
//! submits sealed batches and finalizes them until shutdown. Without one, escrow comes
//! from the file's `[escrow]` table and nothing is settled.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use tally_aggregator::chain::{Chain, ChainEscrow, CosmosChain};
use tally_aggregator::config::{ServeConfig, StoreLocation};
use tally_aggregator::settler::Settler;
use tally_aggregator::store::PgStore;
use tally_aggregator::{Aggregator, Config, EscrowView, SqliteStore, Store};
use tally_protocol::SigningKey;
use tally_sandbox::Sandbox;
use tokio::net::TcpListener;

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Pretty,
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The TOML configuration (see aggregator/tally.example.toml); without it, defaults
    /// and `TALLY_*` environment variables only.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log format; the level is set by `RUST_LOG` (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// Print the effective configuration (file, then environment) as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = ServeConfig::load(args.config.as_deref(), |k| std::env::var(k).ok())?;
    if args.print_config {
        print!("{}", cfg.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), JSON or pretty.
pub(crate) fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The metering guests the service re-executes with: the configured files, or the pinned
/// build.
fn guests(cfg: &ServeConfig) -> anyhow::Result<Vec<Arc<Sandbox>>> {
    if cfg.guests.is_empty() {
        return Ok(vec![crate::guest::sandbox(None)?]);
    }
    cfg.guests
        .iter()
        .map(|p| crate::guest::sandbox(Some(p)))
        .collect()
}

/// The settlement side when `[chain]` is configured.
struct Settlement {
    chain: Arc<CosmosChain>,
    refresher: tokio::task::JoinHandle<()>,
    interval: Duration,
    /// How long shutdown waits for a transaction in flight.
    grace: Duration,
}

/// Everything the service needs besides its store.
struct Parts {
    core: Config,
    key: SigningKey,
    guests: Vec<Arc<Sandbox>>,
    escrow: Arc<dyn EscrowView>,
    settlement: Option<Settlement>,
}

/// Connects to the chain, reads the escrow view once (serving without it would reject
/// every payer) and starts its background refresher.
async fn connect_chain(
    cfg: &ServeConfig,
    section: &tally_aggregator::config::ChainSection,
    aggregator_key: &SigningKey,
) -> anyhow::Result<(Arc<ChainEscrow>, Settlement)> {
    let client = section.cosmos_config(&cfg.chain_id, &cfg.contract)?;
    let key = section
        .load_key()
        .with_context(|| format!("loading the chain key {}", section.key_file.display()))?;
    let chain = Arc::new(CosmosChain::new(client, key)?);
    let refresh = Duration::from_millis(section.escrow_refresh_ms);
    let escrow = Arc::new(ChainEscrow::new());
    let first = tokio::time::timeout(
        Duration::from_millis(section.inclusion_timeout_ms),
        escrow.refresh(chain.as_ref()),
    )
    .await;
    match first {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!(
            "reading the payer escrow from the chain at {} failed: {e}",
            section.rest_url
        ),
        Err(_) => anyhow::bail!(
            "reading the payer escrow from the chain at {} timed out",
            section.rest_url
        ),
    }
    // The contract must let this account submit this aggregator's batches.
    let registered = chain
        .query::<tally_contracts::msg::AggregatorResponse>(
            &tally_contracts::msg::QueryMsg::Aggregator {
                key: aggregator_key.public_key().0.to_vec().into(),
            },
        )
        .await;
    match registered {
        Ok(r) if r.address.as_str() == chain.address() => {}
        Ok(r) => tracing::warn!(
            registered = %r.address,
            account = %chain.address(),
            "the contract registered another address for this aggregator: batches will be refused"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            account = %chain.address(),
            "this aggregator is not registered with the contract: batches will be refused"
        ),
    }
    tracing::info!(
        rest_url = %section.rest_url,
        account = %chain.address(),
        contract = %cfg.contract,
        "escrow from the chain; settling sealed batches"
    );
    let refresher = escrow.spawn_refresher(Arc::clone(&chain), refresh);
    let settlement = Settlement {
        chain,
        refresher,
        interval: Duration::from_millis(section.settle_interval_ms),
        grace: Duration::from_millis(section.inclusion_timeout_ms.saturating_mul(2)),
    };
    Ok((escrow, settlement))
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let guests = guests(&cfg)?;
    let hashes: Vec<_> = guests.iter().map(|g| g.guest_hash()).collect();
    let (core, config_escrow) = cfg.core(&hashes)?;
    let key = tally_attestor::load_key_file(&cfg.key_file)
        .with_context(|| format!("loading the key file {}", cfg.key_file.display()))?;
    let (escrow, settlement): (Arc<dyn EscrowView>, _) = match &cfg.chain {
        Some(section) => {
            let (escrow, settlement) = connect_chain(&cfg, section, &key).await?;
            (escrow, Some(settlement))
        }
        None => {
            tracing::warn!(
                payers = cfg.escrow.len(),
                "no [chain] section: payer escrow from the [escrow] table, batches are not settled"
            );
            (Arc::new(config_escrow), None)
        }
    };
    let parts = Parts {
        core,
        key,
        guests,
        escrow,
        settlement,
    };
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    match cfg.store_location()? {
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            serve_on(store, parts, listener).await
        }
        StoreLocation::Postgres(url) => {
            let store = PgStore::connect(&url, cfg.pg_max_connections)
                .await
                .context("connecting to PostgreSQL")?;
            serve_on(store, parts, listener).await
        }
    }
}

/// Opens the aggregator over `store` and serves until SIGINT or SIGTERM.
async fn serve_on<S: Store>(store: S, parts: Parts, listener: TcpListener) -> anyhow::Result<()> {
    let agg =
        Arc::new(Aggregator::open(store, parts.core, parts.key, parts.guests, parts.escrow).await?);
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        tree_size = agg.tree_size(),
        key = %agg.public_key(),
        origin = agg.origin(),
        "listening"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let settling = parts.settlement.map(|s| {
        let settler = Settler::new(Arc::clone(&agg), s.chain);
        let mut stopped = stopped.clone();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            settler.run(s.interval, signal).await;
        });
        (task, s.refresher, s.grace)
    });
    let served = tally_aggregator::run(listener, Arc::clone(&agg), async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await;
    if let Some((task, refresher, grace)) = settling {
        refresher.abort();
        // The settler stops between steps: a transaction in flight is seen through.
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("settlement did not stop in time; the chain is re-read at start");
        }
    }
    served?;
    tracing::info!(tree_size = agg.tree_size(), "stopped");
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot watch SIGINT");
                std::future::pending::<()>().await;
            }
        }
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight, then sealing");
}
