//! `tally proxy`: the metering proxy in front of any OpenAI-compatible server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tally_attestor::proxy::{FreeRoute, PromptEstimate, Proxy, ProxyConfig, ServedModel};
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
    /// A route forwarded without an authorisation and without a receipt, as `METHOD
    /// /path` (`{name}` matches one segment, `{*name}` the rest). Repeat for several; the
    /// list replaces the default one (`GET /v1/models`, `GET /v1/models/{*id}`, `GET
    /// /health`). No free route may match a metered one. Every other route is refused.
    #[arg(long = "free-route", value_name = "METHOD /PATH")]
    free_routes: Vec<String>,
    /// Forward no free route at all (only the metered ones).
    #[arg(long, conflicts_with = "free_routes")]
    no_free_routes: bool,
    /// Tokens the server may add to a request's own text (chat template, special tokens,
    /// default system prompt), counted in the prompt's upper estimate.
    #[arg(long, default_value_t = 1024)]
    prompt_overhead_tokens: u64,
    /// Tokens counted for each media part (image, audio, video, file) of a metered
    /// request; without it such requests are refused (their bytes do not bound them).
    #[arg(long)]
    media_part_tokens: Option<u64>,
    /// The most tokens the upstream generates per choice for a request without a limit:
    /// its context length (vLLM's --max-model-len). A request without a limit gets one
    /// only when the payer's budget pays for fewer tokens.
    #[arg(long, default_value_t = 32_768)]
    max_output_tokens: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_request_bytes: usize,
    /// Most request-body bytes held in memory at once, across all requests.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes_in_flight: usize,
    /// Seconds a client may take to send a request's head.
    #[arg(long, default_value_t = 10)]
    header_read_timeout_s: u64,
    /// Seconds a client may take to send a request body.
    #[arg(long, default_value_t = 60)]
    body_read_timeout_s: u64,
    /// Seconds a connection with no request in flight stays open.
    #[arg(long, default_value_t = 60)]
    keep_alive_timeout_s: u64,
    /// Most client connections at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
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
    // The shipper signs its submissions with the host key (`docs/protocol.md` §6.1).
    let ship_key = tally_protocol::SigningKey::from_seed(&key.seed());
    let sandbox = crate::guest::sandbox(args.guest.as_deref())?;
    let config = AttestorConfig {
        chain_id: args.chain_id,
        contract: args.contract,
        journal_path: args.journal.clone(),
        group_commit: GroupCommit::default(),
        schedules,
    };
    let mut proxy_config = ProxyConfig::new(args.upstream, served);
    if args.no_free_routes {
        proxy_config.free_routes.clear();
    } else if !args.free_routes.is_empty() {
        proxy_config.free_routes = args
            .free_routes
            .iter()
            .map(|spec| FreeRoute::parse(spec))
            .collect::<Result<_, _>>()?;
    }
    proxy_config.prompt_estimate = PromptEstimate {
        overhead_tokens: args.prompt_overhead_tokens,
        media_part_tokens: args.media_part_tokens,
    };
    proxy_config.max_output_tokens = args.max_output_tokens;
    proxy_config.max_body_bytes_in_flight = args.max_body_bytes_in_flight;
    proxy_config.header_read_timeout = Duration::from_secs(args.header_read_timeout_s);
    proxy_config.body_read_timeout = Duration::from_secs(args.body_read_timeout_s);
    proxy_config.keep_alive_timeout = Duration::from_secs(args.keep_alive_timeout_s);
    proxy_config.max_connections = args.max_connections;
    let free: Vec<String> = proxy_config
        .free_routes
        .iter()
        .map(|r| r.spec().to_owned())
        .collect();
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
                    .with_host_key(ship_key)
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
            "tally proxy on http://{} (host {}), metering {}; free routes: {}",
            listener.local_addr()?,
            attestor.public_key(),
            args.models.join(", "),
            if free.is_empty() {
                "none".to_owned()
            } else {
                free.join(", ")
            }
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
