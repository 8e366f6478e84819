//! Step 1, genesis: the devnet running the committed contract, the registries (models,
//! the aggregator, bonded hosts) and the payers' escrow deposits (the wash trader's through
//! one hop of bank transfers).

use std::sync::Arc;

use anyhow::Context;
use tally_aggregator::chain::{Chain, ChainEscrow};
use tally_contracts::msg::{ContributorMsg, ExecuteMsg};
use tally_devnet::{Devnet, DevnetConfig, dev_instantiate};
use tally_protocol::Digest;

use super::{
    BOND, Cast, DEPOSIT, DevChain, HOST_SHARE_BPS, PROTOCOL_FEE_BPS, WASH_RELAY, WINDOW, b,
    contributors,
};
use crate::workload::{self};

/// Starts the devnet and registers everything the run needs.
pub(super) async fn start(cast: &Cast) -> anyhow::Result<DevChain> {
    let models = &cast.models;
    let guest = cast.guest;
    let payers = &cast.payers;
    let (n_payers, n_hosts, wash) = (cast.n_payers, cast.n_hosts, cast.wash);
    let host_keys = &cast.host_keys;
    let agg_key = &cast.agg_key;
    let wash_funder = &cast.wash_funder;
    let config = DevnetConfig {
        wasm: tally_devnet::COMMITTED_CONTRACT.to_vec(),
        chain_id: workload::CHAIN_ID.into(),
        denom: "utally".into(),
        prefix: "tally",
        genesis_time: 1_767_571_200,
        contract_address: Some(workload::CONTRACT.into()),
        gas: tally_devnet::GasConfig::default(),
        max_tx_bytes: Some(tally_devnet::DEFAULT_MAX_TX_BYTES),
        block_max_gas: Some(tally_devnet::DEFAULT_BLOCK_MAX_GAS),
    };
    let sink = cosmwasm_vm::testing::MockApi::default()
        .with_prefix(config.prefix)
        .addr_make("protocol-sink");
    let mut genesis: Vec<(String, u128)> = vec![("admin".into(), 0)];
    genesis.extend((0..n_hosts).map(|h| (format!("operator{h}"), 2 * BOND)));
    genesis.extend((0..n_payers).map(|p| (format!("payer{p}"), DEPOSIT)));
    genesis.push((wash_funder.to_string(), DEPOSIT));
    let genesis_ref: Vec<(&str, u128)> = genesis.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let devnet = Devnet::start(
        config,
        &genesis_ref,
        "admin",
        &dev_instantiate(WINDOW, BOND, sink.clone()),
    )
    .context("starting the devnet")?;
    let supply = devnet.supply();
    let admin = devnet.account("admin");
    for m in models.iter() {
        admin
            .execute(
                &ExecuteMsg::RegisterModel {
                    model_id: b(&m.id().0),
                    contributors: contributors(m)
                        .iter()
                        .map(|(n, w)| ContributorMsg {
                            address: devnet.addr(n),
                            weight_bps: *w,
                        })
                        .collect(),
                    schedule: m.schedule.encode().into(),
                    host_share_bps: HOST_SHARE_BPS,
                    protocol_fee_bps: PROTOCOL_FEE_BPS,
                    guests: vec![b(&guest.0)],
                },
                0,
            )
            .await
            .with_context(|| format!("registering {}", m.name))?;
    }
    let submitter = Arc::new(devnet.account("aggregator"));
    admin
        .execute(
            &ExecuteMsg::RegisterAggregator {
                key: b(&agg_key.public_key().0),
                address: submitter.address(),
            },
            0,
        )
        .await
        .context("registering the aggregator")?;
    for (h, key) in host_keys.iter().enumerate() {
        let model_ids: Vec<Digest> = models.iter().map(|m| m.id()).collect();
        devnet
            .account(&format!("operator{h}"))
            .register_host(
                workload::CHAIN_ID,
                workload::CONTRACT,
                key,
                &model_ids,
                BOND,
            )
            .await
            .with_context(|| format!("registering host {h}"))?;
    }
    for (p, key) in payers.iter().enumerate() {
        let funder = if p == wash {
            // The wash model's contributor hides behind a fresh address: one hop of bank
            // transfers that the report's funding trace must follow back to an insider.
            devnet
                .send(
                    &devnet.addr(wash_funder),
                    &devnet.addr(WASH_RELAY),
                    DEPOSIT / 10,
                )
                .context("the wash trader's transfer")?;
            WASH_RELAY.to_string()
        } else {
            format!("payer{p}")
        };
        let amount = if p == wash { DEPOSIT / 10 } else { DEPOSIT / 2 };
        devnet
            .account(&funder)
            .deposit(&key.public_key(), amount)
            .await
            .with_context(|| format!("deposit of payer {p}"))?;
    }
    let watcher = devnet.account("watcher");
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(&watcher).await?;
    println!(
        "  devnet    contract {} with {} models, {} hosts bonded, {} escrows (1 funded by {} through {WASH_RELAY})",
        workload::CONTRACT,
        models.len(),
        n_hosts,
        payers.len(),
        wash_funder
    );

    Ok(DevChain {
        devnet,
        submitter,
        watcher,
        escrow,
        sink,
        supply,
    })
}
