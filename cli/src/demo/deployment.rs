//! Step 2, the deployment: the aggregator on SQLite behind its HTTP API on an ephemeral
//! local port (its escrow view read from the devnet), its settler, and the hosts, each
//! with an attestor, a journal and a shipper.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tally_aggregator::settler::Settler;
use tally_aggregator::{Aggregator, Config, ModelPolicy, Policy, SqliteStore};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit, ShipConfig, Shipper};
use tally_protocol::SigningKey;

use super::{Cast, Deployment, DevChain, Host};
use crate::audit;
use crate::workload::{self};

/// Opens the aggregator and the hosts in `dir`.
pub(super) async fn start(cast: &Cast, chain: &DevChain, dir: &Path) -> anyhow::Result<Deployment> {
    let models = &cast.models;
    let sandbox = &cast.sandbox;
    let guest = cast.guest;
    let n_hosts = cast.n_hosts;
    let host_keys = &cast.host_keys;
    let agg_key = &cast.agg_key;
    let (escrow, submitter) = (&chain.escrow, &chain.submitter);
    let policy = Policy {
        chain_id: workload::CHAIN_ID.into(),
        contract: workload::CONTRACT.into(),
        hosts: host_keys.iter().map(SigningKey::public_key).collect(),
        models: models
            .iter()
            .map(|m| {
                (
                    m.id(),
                    ModelPolicy {
                        guests: vec![guest],
                        schedule: m.schedule.clone(),
                    },
                )
            })
            .collect(),
    };
    let mut cfg = Config::new(policy);
    // The aggregator checks signatures, chains, totals and escrow on every receipt but
    // re-executes none here: catching re-pricing is left to the watcher, so the injected
    // fraud reaches a batch on chain (in production, sample some per mille).
    cfg.reexecute_per_mille = 0;
    cfg.seal_threshold = u64::MAX;
    let db = dir.join(audit::DB_FILE);
    let store = SqliteStore::open(&db).await.context("opening the log")?;
    let agg = Arc::new(
        Aggregator::open(
            store,
            cfg,
            SigningKey::from_seed(&agg_key.seed()),
            vec![Arc::clone(sandbox)],
            Arc::clone(escrow) as Arc<dyn tally_aggregator::EscrowView>,
        )
        .await?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = tally_aggregator::router(Arc::clone(&agg));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("  aggregator {url} (SQLite {})", db.display());
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(submitter));

    // Hosts: an attestor and a shipper each.
    let mut hosts = Vec::with_capacity(n_hosts);
    let mut shippers = Vec::with_capacity(n_hosts);
    for (h, key) in host_keys.iter().enumerate() {
        let journal = dir.join(format!("host-{h}.journal"));
        let attestor = Attestor::open(
            AttestorConfig {
                chain_id: workload::CHAIN_ID.into(),
                contract: workload::CONTRACT.into(),
                journal_path: journal.clone(),
                group_commit: GroupCommit::default(),
                schedules: models.iter().map(|m| m.schedule.clone()).collect(),
            },
            SigningKey::from_seed(&key.seed()),
            Arc::clone(sandbox),
        )
        .await?;
        let host = Arc::new(Host {
            attestor,
            key: SigningKey::from_seed(&key.seed()),
            operator: format!("operator{h}"),
        });
        let durable = Arc::clone(&host);
        let mut ship = ShipConfig::new(url.clone(), journal);
        ship.max_batch = 4_096;
        shippers.push(Some(
            Shipper::open(ship)?
                .with_durable_end(move || durable.attestor.journal_stats().durable_len)
                .with_host_key(SigningKey::from_seed(&key.seed())),
        ));
        hosts.push(host);
    }

    // The watcher: `tally watch`'s library over the aggregator's HTTP API and the
    // watcher's devnet account, its state beside the log.
    let watcher = tally_auditor::watcher::Watcher::open(
        tally_auditor::watcher::WatcherConfig {
            aggregator_url: url.clone(),
            aggregator_key: agg_key.public_key(),
            chain_id: workload::CHAIN_ID.into(),
            contract: workload::CONTRACT.into(),
            state_dir: dir.join("watch-state"),
            censorship_batches: 1,
        },
        Arc::new(chain.watcher.clone()),
    )
    .await
    .context("starting the watcher")?;

    Ok(Deployment {
        agg,
        url,
        server,
        settler,
        hosts,
        shippers,
        watcher,
    })
}
