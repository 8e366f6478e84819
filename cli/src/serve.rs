//! `tally serve`: the aggregator as a service, from a TOML file with `TALLY_*` environment
//! overrides (`tally_aggregator::config`), with tracing logs and a graceful shutdown on
//! SIGINT or SIGTERM that stops accepting, finishes requests in flight and seals once more.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tally_aggregator::config::{ServeConfig, StoreLocation};
use tally_aggregator::store::PgStore;
use tally_aggregator::{Aggregator, Config, MemoryEscrow, SqliteStore, Store};
use tally_attestor::Sandbox;
use tally_protocol::SigningKey;
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

/// Everything the service needs besides its store.
struct Parts {
    core: Config,
    key: SigningKey,
    guests: Vec<Arc<Sandbox>>,
    escrow: MemoryEscrow,
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let guests = guests(&cfg)?;
    let hashes: Vec<_> = guests.iter().map(|g| g.guest_hash()).collect();
    let (core, escrow) = cfg.core(&hashes)?;
    let key = tally_attestor::load_key_file(&cfg.key_file)
        .with_context(|| format!("loading the key file {}", cfg.key_file.display()))?;
    let parts = Parts {
        core,
        key,
        guests,
        escrow,
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
    let agg = Arc::new(
        Aggregator::open(
            store,
            parts.core,
            parts.key,
            parts.guests,
            Arc::new(parts.escrow),
        )
        .await?,
    );
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        tree_size = agg.tree_size(),
        key = %agg.public_key(),
        origin = agg.config().origin,
        "listening"
    );
    tally_aggregator::run(listener, Arc::clone(&agg), shutdown_signal()).await?;
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
