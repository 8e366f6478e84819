//! `tally proxy`: the metering proxy in front of any OpenAI-compatible server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tally_attestor::proxy::{Proxy, ProxyConfig, ServedModel};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit, ShipConfig, Shipper};
use tally_protocol::PriceSchedule;

use crate::read_json;

#[derive(Args)]
pub(crate) struct ProxyArgs {
    /// The OpenAI-compatible server to meter (base URL; request paths are appended).
    #[arg(long)]
    upstream: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// A served model: the name clients send in `"model"`, and its price schedule (JSON),
    /// whose `model` is the id payers authorise. Repeat for several models.
    #[arg(long = "model", value_name = "NAME=SCHEDULE.json", required = true)]
    models: Vec<String>,
    /// The host's key file.
    #[arg(long)]
    key: PathBuf,
    /// The host's journal (created if missing; receipts continue its chain).
    #[arg(long)]
    journal: PathBuf,
    /// The settlement chain id this host serves.
    #[arg(long)]
    chain_id: String,
    /// The settlement contract this host serves.
    #[arg(long)]
    contract: String,
    /// A metering guest other than the pinned one.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Largest request body accepted on a metered route, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_request_bytes: usize,
    /// Largest JSON answer read from the upstream, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_response_bytes: usize,
    /// Seconds the upstream may take to answer (headers, and a JSON answer's body).
    #[arg(long, default_value_t = 600)]
    response_timeout_s: u64,
    /// Longest silence allowed between two chunks of a stream, in seconds.
    #[arg(long, default_value_t = 120)]
    idle_timeout_s: u64,
    /// Seconds to connect to the upstream.
    #[arg(long, default_value_t = 5)]
    connect_timeout_s: u64,
    /// Ship receipts to this aggregator (base URL) in the background, from the journal:
    /// durable first, retried with backoff through outages, never skipped.
    #[arg(long)]
    aggregator: Option<String>,
}

pub(crate) fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let mut schedules = Vec::new();
    let mut served = Vec::new();
    for spec in &args.models {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--model takes NAME=SCHEDULE.json, got {spec:?}");
        };
        let schedule: PriceSchedule = read_json(&PathBuf::from(path))?;
        served.push(ServedModel {
            name: name.to_owned(),
            id: schedule.model,
        });
        schedules.push(schedule);
    }
    let key = tally_attestor::load_key_file(&args.key)?;
    let sandbox = crate::guest::sandbox(args.guest.as_deref())?;
    let config = AttestorConfig {
        chain_id: args.chain_id,
        contract: args.contract,
        journal_path: args.journal.clone(),
        group_commit: GroupCommit::default(),
        schedules,
    };
    let mut proxy_config = ProxyConfig::new(args.upstream, served);
    proxy_config.max_request_bytes = args.max_request_bytes;
    proxy_config.max_response_bytes = args.max_response_bytes;
    proxy_config.response_timeout = Duration::from_secs(args.response_timeout_s);
    proxy_config.idle_timeout = Duration::from_secs(args.idle_timeout_s);
    proxy_config.connect_timeout = Duration::from_secs(args.connect_timeout_s);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let attestor = Arc::new(Attestor::open(config, key, sandbox).await?);
        // Receipts reach the journal before the client sees them, so a shipper that reads
        // the journal's durable part misses none and survives restarts (its cursor file).
        let (stop_shipping, shipping_stopped) = tokio::sync::oneshot::channel::<()>();
        let shipper = match &args.aggregator {
            Some(url) => {
                let durable = Arc::clone(&attestor);
                let shipper = Shipper::open(ShipConfig::new(url.clone(), &args.journal))?
                    .with_durable_end(move || durable.journal_stats().durable_len);
                eprintln!("shipping receipts to {url}");
                Some(tokio::spawn(shipper.run(async move {
                    let _ = shipping_stopped.await;
                })))
            }
            None => None,
        };
        let proxy = Proxy::new(proxy_config, Arc::clone(&attestor))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!(
            "tally proxy on http://{} (host {}), metering {}",
            listener.local_addr()?,
            attestor.public_key(),
            args.models.join(", ")
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tally_attestor::proxy::run(listener, Arc::new(proxy), shutdown).await?;
        if let Some(task) = shipper {
            let _ = stop_shipping.send(());
            let report = task.await.context("the shipper task")??;
            eprintln!(
                "shipped: {} accepted, {} duplicate, {} rejected",
                report.accepted, report.duplicate, report.rejected
            );
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
