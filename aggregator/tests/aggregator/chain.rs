//! The aggregator settling on the devnet: the committed contract `.wasm` in the CosmWasm VM,
//! receipts ingested into an `Aggregator` over SQLite, batches sealed, submitted,
//! challenged and finalized by the `Settler`, revenue claimed, every unit accounted for.
//! Plus the Cosmos transaction signer against vectors from an independent implementation.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;
use tally_contracts::msg::BatchStatus;

use cosmwasm_std::{Binary, Uint128};
use tally_aggregator::chain::cosmos::{CosmosKey, TxParams, sign_execute};
use tally_aggregator::chain::{Chain, ChainError, ChainEscrow, MoveKind};
use tally_aggregator::settler::{SettleError, Settler, Step};
use tally_aggregator::{Aggregator, EscrowView, Outcome, Reason, SqliteStore, Store};
use tally_contracts::msg::{
    BalanceResponse, ContributorMsg, ExecuteMsg, FraudProof, HostResponse, InstantiateMsg,
    LeafProof, QueryMsg,
};
use tally_devnet::{Devnet, DevnetAccount, DevnetConfig, dev_instantiate};
use tally_protocol::SignedReceipt;

#[allow(dead_code, reason = "this binary uses part of the shared fixtures")]
use crate::fixtures;

use fixtures::*;

const WINDOW: u64 = 3_600;
const BOND: u128 = 1_000_000;
const DEPOSIT: u128 = 1_000_000_000_000;
const CONTRIBUTORS: [(&str, u16); 2] = [("alice", 6_000), ("bob", 4_000)];

/// A devnet with the fixtures' models, hosts 0 and 1, the aggregator, and payers 0 and 1
/// funded by `funder`.
struct Net {
    devnet: Devnet,
    submitter: Arc<DevnetAccount>,
}

async fn net(world: &World) -> Net {
    net_with(world, 2, 0, |_| {}).await
}

/// 64 contributors of model `m` and their weights (10,000 bps in all).
fn many_contributors(m: usize) -> Vec<(String, u16)> {
    (0..64)
        .map(|k| {
            (
                format!("m{m}-c{k}"),
                if k == 0 { 10_000 - 63 * 156 } else { 156 },
            )
        })
        .collect()
}

/// [`net`] with the first `payers` payers funded, `extra` more models (after the fixtures'
/// own) of 64 contributors each, and the devnet's limits set by `limits`.
async fn net_with(
    world: &World,
    payers: usize,
    extra: usize,
    limits: impl FnOnce(&mut DevnetConfig),
) -> Net {
    let mut config = DevnetConfig::committed(CHAIN);
    config.contract_address = Some(CONTRACT.into());
    limits(&mut config);
    let genesis: Vec<(&str, u128)> = vec![
        ("admin", 10 * BOND),
        ("operator0", 10 * BOND),
        ("operator1", 10 * BOND),
        ("funder", 10 * DEPOSIT),
    ];
    let sink = config_addr("sink");
    let devnet = Devnet::start(
        config,
        &genesis,
        "admin",
        &dev_instantiate(WINDOW, BOND, sink),
    )
    .unwrap();
    let admin = devnet.account("admin");
    for m in 0..MODELS + extra {
        let people: Vec<(String, u16)> = if m < MODELS {
            CONTRIBUTORS
                .iter()
                .map(|(n, w)| ((*n).to_owned(), *w))
                .collect()
        } else {
            many_contributors(m)
        };
        admin
            .execute(
                &ExecuteMsg::RegisterModel {
                    model_id: b(&model(m).0),
                    contributors: people
                        .iter()
                        .map(|(n, w)| ContributorMsg {
                            address: devnet.addr(n),
                            weight_bps: *w,
                        })
                        .collect(),
                    schedule: schedule(m).encode().into(),
                    host_share_bps: 2_000,
                    protocol_fee_bps: 500,
                    guests: vec![b(&guest_hash().0)],
                },
                0,
            )
            .await
            .unwrap();
    }
    let submitter = Arc::new(devnet.account("aggregator"));
    admin
        .execute(
            &ExecuteMsg::RegisterAggregator {
                key: b(&aggregator_key().public_key().0),
                address: submitter.address(),
            },
            0,
        )
        .await
        .unwrap();
    for h in 0..2 {
        let models: Vec<tally_protocol::Digest> = (0..MODELS + extra).map(model).collect();
        devnet
            .account(&format!("operator{h}"))
            .register_host(CHAIN, CONTRACT, &world.hosts[h], &models, BOND)
            .await
            .unwrap();
    }
    let funder = devnet.account("funder");
    for p in 0..payers {
        let amount = if p < 2 { DEPOSIT } else { DEPOSIT / 10_000 };
        funder
            .deposit(&world.payers[p].public_key(), amount)
            .await
            .unwrap();
    }
    Net { devnet, submitter }
}

/// The address the devnet gives `name` (same derivation, known before it starts).
fn config_addr(name: &str) -> String {
    Devnet::address_of("tally", name)
}

fn b(bytes: &[u8]) -> Binary {
    Binary::from(bytes)
}

async fn open(
    dir: &std::path::Path,
    world: &World,
    cfg: tally_aggregator::Config,
    escrow: Arc<ChainEscrow>,
) -> Arc<Aggregator<SqliteStore>> {
    let store = SqliteStore::open(dir.join("log.sqlite")).await.unwrap();
    let _ = world;
    Arc::new(
        Aggregator::open(store, cfg, aggregator_key(), vec![sandbox()], escrow)
            .await
            .unwrap(),
    )
}

async fn ingest(agg: &Arc<Aggregator<SqliteStore>>, rs: &[SignedReceipt]) {
    let outcomes = agg
        .submit(rs.iter().cloned().map(Ok).collect())
        .await
        .unwrap();
    for o in outcomes {
        assert!(matches!(o, Outcome::Accepted { .. }), "{o:?}");
    }
}

async fn claimable(chain: &DevnetAccount, address: &str) -> u128 {
    let r: BalanceResponse = chain
        .query(&QueryMsg::Balance {
            address: address.to_owned(),
        })
        .await
        .unwrap();
    r.amount.u128()
}

fn fees(rs: &[SignedReceipt]) -> u128 {
    rs.iter().map(|r| r.receipt.metered.fee).sum()
}

#[tokio::test]
async fn batches_settle_on_the_devnet_and_every_unit_is_accounted_for() {
    let mut world = World::new();
    let net = net(&world).await;
    let devnet = &net.devnet;
    let supply = devnet.supply();

    // The escrow view comes from the chain: the deposits, funded by `funder`.
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    assert_eq!(escrow.balance(&world.payers[0].public_key()), DEPOSIT);
    assert_eq!(escrow.balance(&world.payers[2].public_key()), 0);
    let moves = net.submitter.escrow_moves(0).await.unwrap();
    assert_eq!(moves.len(), 2);
    assert!(moves.iter().all(|m| m.kind == MoveKind::Deposit
        && m.party == devnet.addr("funder")
        && m.amount == DEPOSIT));

    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), &world, config(&world), Arc::clone(&escrow)).await;
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    assert_eq!(settler.step().await.unwrap(), Step::Idle);

    // Batch 1: six calls over four channels.
    let first: Vec<_> = (0..6)
        .map(|i| world.call(i % 2, (i / 2) % 2, i % MODELS))
        .collect();
    ingest(&agg, &first).await;
    agg.seal().await.unwrap().unwrap();
    let Step::Submitted { batch: 1, tx } = settler.step().await.unwrap() else {
        panic!("batch 1 not submitted");
    };
    eprintln!("gas: submit_batch (4 channels) = {}", tx.gas_used);
    assert_eq!(tx.attribute("batch"), Some("1"));
    let escrow0 = net
        .submitter
        .escrow(&world.payers[0].public_key())
        .await
        .unwrap();
    assert!(escrow0.reserved.u128() > 0);
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Waiting { batch: 1, .. }
    ));

    // Batch 2 is sealed while batch 1 is pending; it waits its turn.
    let second: Vec<_> = (0..4).map(|i| world.call(i % 2, 1, 0)).collect();
    ingest(&agg, &second).await;
    agg.seal().await.unwrap().unwrap();
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Waiting { batch: 1, .. }
    ));

    // A restart: the aggregator reopens its file, a new settler picks up from the chain.
    drop(settler);
    drop(agg);
    let agg = open(dir.path(), &world, config(&world), Arc::clone(&escrow)).await;
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));

    devnet.advance(WINDOW - 1);
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Waiting { batch: 1, .. }
    ));
    devnet.advance(1);
    let Step::Finalized { batch: 1, tx } = settler.step().await.unwrap() else {
        panic!("batch 1 not finalized");
    };
    eprintln!("gas: finalize (4 channels) = {}", tx.gas_used);
    let Step::Submitted { batch: 2, tx } = settler.step().await.unwrap() else {
        panic!("batch 2 not submitted");
    };
    eprintln!(
        "gas: submit_batch (2 channels, consistency) = {}",
        tx.gas_used
    );
    devnet.advance(WINDOW);
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Finalized { batch: 2, .. }
    ));
    assert_eq!(settler.step().await.unwrap(), Step::Idle);
    let head = net.submitter.head().await.unwrap();
    assert_eq!((head.finalized_batch, head.tree_size), (2, 10));

    // Escrows paid exactly each payer's usage.
    let all: Vec<SignedReceipt> = first.iter().chain(&second).cloned().collect();
    for p in 0..2 {
        let used: u128 = all
            .iter()
            .filter(|r| r.receipt.authorization.authorization.payer == world.payers[p].public_key())
            .map(|r| r.receipt.metered.fee)
            .sum();
        let e = net
            .submitter
            .escrow(&world.payers[p].public_key())
            .await
            .unwrap();
        assert_eq!(e.balance.u128(), DEPOSIT - used, "payer {p}");
        assert_eq!(e.reserved.u128(), 0);
    }

    // Everyone credited claims; the claims add up to the usage, to the unit.
    let mut parties: Vec<String> = CONTRIBUTORS.iter().map(|(n, _)| devnet.addr(n)).collect();
    parties.extend(["operator0", "operator1"].map(|n| devnet.addr(n)));
    parties.push(config_addr("sink"));
    let mut claimed = 0;
    for who in &parties {
        let name = ["alice", "bob", "operator0", "operator1", "sink"]
            .into_iter()
            .find(|n| devnet.addr(n) == *who)
            .unwrap();
        let account = devnet.account(name);
        let owed = claimable(&account, who).await;
        assert!(owed > 0, "{name} earned nothing");
        let before = devnet.balance(who);
        let tx = account.claim().await.unwrap();
        eprintln!("gas: claim ({name}) = {}", tx.gas_used);
        assert_eq!(devnet.balance(who), before + owed);
        claimed += owed;
        assert!(matches!(
            account.claim().await,
            Err(ChainError::Rejected(_))
        ));
    }
    assert_eq!(claimed, fees(&all));
    // Nothing minted or burnt; what the contract holds is the escrows and bonds left.
    assert_eq!(devnet.supply(), supply);
    assert_eq!(
        devnet.balance(&devnet.contract()),
        2 * DEPOSIT - fees(&all) + 2 * BOND
    );
    // Every call's gas was recorded; print them for the record (`--nocapture`).
    let log = devnet.log();
    assert!(log.iter().all(|t| t.gas_used > 0 || t.result.is_err()));
    for t in &log {
        eprintln!(
            "gas: {:>14} {:>12} ok={}",
            t.message,
            t.gas_used,
            t.result.is_ok()
        );
    }
}

#[tokio::test]
async fn a_forged_batch_is_rejected_and_changes_nothing() {
    let mut world = World::new();
    let net = net(&world).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), &world, config(&world), Arc::clone(&escrow)).await;
    let rs: Vec<_> = (0..3).map(|i| world.call(i % 2, 0, 0)).collect();
    ingest(&agg, &rs).await;
    agg.seal().await.unwrap().unwrap();
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    let honest = settler.submission(1, 0).await.unwrap();

    let before = net.devnet.state_digest();
    // A header signature that is not the aggregator's.
    let mut forged = honest.clone();
    let n = forged.header.len();
    forged.header[n - 1] ^= 1;
    // A receipt whose bytes are not the leaf the root commits to.
    let mut swapped = honest.clone();
    let last = swapped.receipts[0].receipt.len() - 1;
    let mut bytes = swapped.receipts[0].receipt.to_vec();
    bytes[last] ^= 1;
    swapped.receipts[0].receipt = bytes.into();
    // The right batch from an address that is not the aggregator's.
    let stranger = net.devnet.account("funder");
    for (chain, sub) in [
        (net.submitter.as_ref(), &forged),
        (net.submitter.as_ref(), &swapped),
        (&stranger, &honest),
    ] {
        let err = chain.submit_batch(sub).await.unwrap_err();
        assert!(matches!(err, ChainError::Rejected(_)), "{err}");
        assert_eq!(net.devnet.state_digest(), before);
    }
    assert_eq!(net.submitter.head().await.unwrap().pending_batch, None);
    let failed = net
        .devnet
        .log()
        .iter()
        .filter(|t| t.message == "submit_batch" && t.result.is_err())
        .count();
    assert_eq!(failed, 3);
    // The honest one still goes through.
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Submitted { batch: 1, .. }
    ));
    assert_ne!(net.devnet.state_digest(), before);
}

#[tokio::test]
async fn a_repriced_receipt_voids_the_pending_batch_and_slashes_its_host() {
    let mut world = World::new();
    let net = net(&world).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An aggregator that samples no receipts for re-execution lets the fraud in.
    let mut cfg = config(&world);
    cfg.reexecute_per_mille = 0;
    let agg = open(dir.path(), &world, cfg, Arc::clone(&escrow)).await;
    let honest = world.call(0, 1, 0);
    let mut r = world.next(1, 1, 0);
    r.metered.fee += 1;
    r.channel_total += 1;
    let repriced = world.commit(r);
    ingest(&agg, &[honest.clone(), repriced.clone()]).await;
    agg.seal().await.unwrap().unwrap();
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Submitted { batch: 1, .. }
    ));

    let (stored, proof) = agg.inclusion(&repriced.id(), Some(2)).await.unwrap();
    let leaf = LeafProof {
        receipt: stored.bytes.into(),
        leaf_index: proof.leaf_index,
        hashes: proof.hashes.iter().map(|h| b(&h.0)).collect(),
    };
    let watcher = net.devnet.account("watcher");
    // A challenge with an honest receipt proves nothing and changes nothing.
    let before = net.devnet.state_digest();
    let (stored0, proof0) = agg.inclusion(&honest.id(), Some(2)).await.unwrap();
    let honest_leaf = LeafProof {
        receipt: stored0.bytes.into(),
        leaf_index: proof0.leaf_index,
        hashes: proof0.hashes.iter().map(|h| b(&h.0)).collect(),
    };
    assert!(matches!(
        watcher
            .challenge(1, FraudProof::Repriced { leaf: honest_leaf })
            .await,
        Err(ChainError::Rejected(_))
    ));
    assert_eq!(net.devnet.state_digest(), before);

    let tx = watcher
        .challenge(1, FraudProof::Repriced { leaf })
        .await
        .unwrap();
    eprintln!("gas: challenge (repriced) = {}", tx.gas_used);
    assert_eq!(tx.attribute("kind"), Some("repriced"));
    let status = net.submitter.batch(1).await.unwrap().unwrap().status;
    assert_eq!(status, BatchStatus::Voided);
    assert!(matches!(
        settler.step().await,
        Err(SettleError::Voided { batch: 1 })
    ));
    // Half the bond slashed, a fifth of that to the watcher; the payer's escrow untouched.
    let host: HostResponse = watcher
        .query(&QueryMsg::Host {
            key: b(&world.hosts[1].public_key().0),
        })
        .await
        .unwrap();
    assert_eq!(host.bond.u128(), BOND / 2);
    assert_eq!(claimable(&watcher, &watcher.address()).await, BOND / 2 / 5);
    let e = watcher.escrow(&world.payers[1].public_key()).await.unwrap();
    assert_eq!((e.balance.u128(), e.reserved.u128()), (DEPOSIT, 0));
    net.devnet.advance(WINDOW);
    assert!(matches!(
        watcher.finalize().await,
        Err(ChainError::Rejected(_))
    ));
}

/// Receipts v2: a host that hands a client a receipt of another history of its log is
/// caught by the aggregator (the pair is recorded as evidence) and slashed on the devnet
/// with that evidence: the logged leaf and the client's bundle.
#[tokio::test]
async fn an_equivocating_host_is_caught_and_slashed_on_the_devnet() {
    let mut world = World::new();
    let net = net(&world).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), &world, config(&world), Arc::clone(&escrow)).await;
    let r1 = world.call(0, 1, 0);
    let r2 = world.call(1, 1, 0);
    ingest(&agg, &[r1, r2.clone()]).await;
    agg.seal().await.unwrap().unwrap();
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Submitted { batch: 1, .. }
    ));
    // The host's other history: another receipt at host_seq 2, handed to a client.
    let mut twin = r2.receipt.clone();
    twin.facts.completion_tokens += 3;
    let twin = world.host_sign(twin);
    assert_eq!(twin.receipt.host_seq, 2);
    twin.verify().unwrap();
    // Shipped to the aggregator, it is refused and the pair recorded.
    let out = agg.submit(vec![Ok(twin.clone())]).await.unwrap();
    assert!(
        matches!(
            out[0],
            Outcome::Rejected {
                reason: Reason::HostEquivocation,
                ..
            }
        ),
        "{out:?}"
    );
    let evidence = agg.store().evidence(0, 10).await.unwrap();
    let (_, ev) = &evidence[0];
    assert_eq!(ev.bytes, twin.encode());
    assert_eq!(ev.other.as_deref(), Some(r2.encode().as_slice()));
    // The watcher proves it on chain with the auditor's judge: the logged leaf (its
    // inclusion proof from the watcher's own copy of the log) and the other bundle.
    let mut log = tally_auditor::watch::WatchedLog::new();
    for l in agg.store().leaves(0, 2).await.unwrap() {
        log.append(l.bytes);
    }
    let other = SignedReceipt::decode(&ev.bytes).unwrap();
    let proof = log.judge_equivocation(&other, 0, 2).unwrap();
    assert!(
        matches!(&proof, FraudProof::HostEquivocation { leaf, .. } if leaf.leaf_index == 1),
        "{proof:?}"
    );
    let watcher = net.devnet.account("watcher");
    let tx = watcher.challenge(1, proof).await.unwrap();
    eprintln!("gas: challenge (host_equivocation) = {}", tx.gas_used);
    assert_eq!(tx.attribute("kind"), Some("host_equivocation"));
    let status = net.submitter.batch(1).await.unwrap().unwrap().status;
    assert_eq!(status, BatchStatus::Voided);
    let host: HostResponse = watcher
        .query(&QueryMsg::Host {
            key: b(&world.hosts[1].public_key().0),
        })
        .await
        .unwrap();
    assert_eq!(host.bond.u128(), BOND / 2, "half the bond slashed");
    assert_eq!(claimable(&watcher, &watcher.address()).await, BOND / 2 / 5);
}

#[tokio::test]
async fn the_settler_task_submits_and_finalizes_on_its_own() {
    let mut world = World::new();
    let net = net(&world).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), &world, config(&world), escrow).await;
    let rs: Vec<_> = (0..2).map(|i| world.call(i, 0, 0)).collect();
    ingest(&agg, &rs).await;
    agg.seal().await.unwrap().unwrap();
    let settler = Arc::new(Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let settler = Arc::clone(&settler);
        tokio::spawn(async move {
            settler
                .run(std::time::Duration::from_millis(10), async {
                    let _ = stopped.await;
                })
                .await;
        })
    };
    let wait_for = |want: fn(&tally_contracts::msg::HeadResponse) -> bool| {
        let chain = Arc::clone(&net.submitter);
        async move {
            for _ in 0..500 {
                if want(&chain.head().await.unwrap()) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the settler did not get there");
        }
    };
    wait_for(|h| h.pending_batch == Some(1)).await;
    net.devnet.advance(WINDOW);
    wait_for(|h| h.finalized_batch == 1 && h.pending_batch.is_none()).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn the_escrow_view_follows_thaws_and_withdrawals() {
    let world = World::new();
    let net = net(&world).await;
    let devnet = &net.devnet;
    let escrow = ChainEscrow::new();
    let payer = &world.payers[0];
    let recipient = devnet.addr("payer0-wallet");
    let amount = 1_000u128;
    let msg = tally_contracts::withdraw_message(
        CHAIN,
        CONTRACT,
        &payer.public_key().0,
        0,
        amount,
        &recipient,
    );
    let anyone = devnet.account("watcher");
    anyone
        .execute(
            &ExecuteMsg::RequestWithdraw {
                payer_key: b(&payer.public_key().0),
                amount: Uint128::new(amount),
                recipient: recipient.clone(),
                signature: b(&payer.sign(&msg).0),
            },
            0,
        )
        .await
        .unwrap();
    // Thawing funds are about to leave: usage beyond the rest is not accepted.
    escrow.refresh(&anyone).await.unwrap();
    assert_eq!(escrow.balance(&payer.public_key()), DEPOSIT - amount);
    assert_eq!(escrow.balance(&world.payers[1].public_key()), DEPOSIT);
    devnet.advance(2 * WINDOW);
    anyone
        .execute(
            &ExecuteMsg::Withdraw {
                payer_key: b(&payer.public_key().0),
            },
            0,
        )
        .await
        .unwrap();
    assert_eq!(devnet.balance(&recipient), amount);
    escrow.refresh(&anyone).await.unwrap();
    assert_eq!(escrow.balance(&payer.public_key()), DEPOSIT - amount);
    let moves = anyone.escrow_moves(0).await.unwrap();
    let w: Vec<_> = moves
        .iter()
        .filter(|m| m.kind == MoveKind::Withdraw)
        .collect();
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].party.as_str(), w[0].amount),
        (recipient.as_str(), amount)
    );
    // Later refreshes read only new blocks: a second deposit adds once.
    devnet
        .account("funder")
        .deposit(&payer.public_key(), 5)
        .await
        .unwrap();
    escrow.refresh(&anyone).await.unwrap();
    escrow.refresh(&anyone).await.unwrap();
    assert_eq!(escrow.balance(&payer.public_key()), DEPOSIT - amount + 5);
}

#[test]
fn a_missing_contract_fails_clearly() {
    let err = DevnetConfig::from_path(std::path::Path::new("/nonexistent/tally.wasm"), CHAIN)
        .unwrap_err();
    assert!(
        matches!(err, ChainError::Code(ref m) if m.contains("build-contract")),
        "{err}"
    );
    let mut bad = DevnetConfig::committed(CHAIN);
    bad.wasm.truncate(100);
    let err = Devnet::start(
        bad,
        &[],
        "admin",
        &InstantiateMsg {
            admin: None,
            denom: "utally".into(),
            challenge_window_secs: 1,
            thaw_secs: 2,
            min_host_bond: Uint128::new(1),
            slash_bps: 0,
            challenger_bps: 0,
            protocol_sink: config_addr("sink"),
        },
    )
    .unwrap_err();
    assert!(matches!(err, ChainError::Code(_)), "{err}");
}

#[test]
fn the_devnet_runs_the_committed_bytes() {
    let wasm = DevnetConfig::committed(CHAIN).wasm;
    let want = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contracts/dist/tally_contracts.wasm.sha256"
    ))
    .unwrap();
    let got = tally_protocol::Digest::sha256(&wasm);
    assert!(
        want.starts_with(&hex::encode(got.0)),
        "{want} != {}",
        hex::encode(got.0)
    );
}

// ---------------------------------------------------------------------------------------
// Cosmos transactions.

#[test]
fn cosmos_tx_matches_the_cosmpy_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/cosmos/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let s = |k: &str| c[k].as_str().unwrap().to_owned();
        let n = |k: &str| c[k].as_u64().unwrap();
        let secret: [u8; 32] = hex::decode(s("secret")).unwrap().try_into().unwrap();
        let key = CosmosKey::from_secret(&secret).unwrap();
        assert_eq!(hex::encode(key.public_key()), s("public_key"));
        let address = key.address(&s("prefix")).unwrap();
        assert_eq!(address, s("address"));
        let tx = sign_execute(
            &key,
            &address,
            &s("contract"),
            s("msg").as_bytes(),
            u128::from(n("funds")),
            &TxParams {
                chain_id: s("chain_id"),
                account_number: n("account_number"),
                sequence: n("sequence"),
                gas_limit: n("gas_limit"),
                fee: u128::from(n("fee")),
                denom: s("denom"),
                memo: s("memo"),
            },
        );
        assert_eq!(hex::encode(&tx.sign_doc), s("sign_doc"), "{}", s("name"));
        assert_eq!(hex::encode(tx.signature), s("signature"), "{}", s("name"));
        assert_eq!(hex::encode(&tx.tx_bytes), s("tx_bytes"), "{}", s("name"));
    }
}

#[test]
fn the_execute_message_is_what_cosmpy_signed() {
    // The vectors' deposit message is serde_json's encoding of the contract's message type,
    // so what `CosmosChain` signs for a deposit is byte for byte the vector's `msg`.
    let msg = ExecuteMsg::Deposit {
        payer_key: b(&[7; 32]),
    };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/cosmos/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_string(&msg).unwrap(),
        v["cases"][0]["msg"].as_str().unwrap()
    );
}

/// A stand-in for a node's REST endpoint: answers what `CosmosChain` asks and keeps the
/// transactions broadcast to it.
#[derive(Clone, Default)]
struct FakeNode {
    broadcast: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    polls: Arc<std::sync::atomic::AtomicU32>,
}

const FAKE_CONTRACT: &str = "neutron14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9sq0u5xz";

fn fake_node(node: FakeNode) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use base64::Engine as _;
    use serde_json::{Value, json};
    axum::Router::new()
        .route(
            "/cosmos/auth/v1beta1/accounts/{addr}",
            get(|Path(addr): Path<String>| async move {
                axum::Json(json!({"account": {
                    "@type": "/cosmos.auth.v1beta1.BaseAccount",
                    "address": addr, "account_number": "42", "sequence": "7"}}))
            }),
        )
        .route(
            "/cosmos/tx/v1beta1/simulate",
            post(|| async { axum::Json(json!({"gas_info": {"gas_used": "100000"}})) }),
        )
        .route(
            "/cosmos/tx/v1beta1/txs",
            post(
                |State(n): State<FakeNode>, axum::Json(body): axum::Json<Value>| async move {
                    assert_eq!(body["mode"], "BROADCAST_MODE_SYNC");
                    let tx = base64::engine::general_purpose::STANDARD
                        .decode(body["tx_bytes"].as_str().unwrap())
                        .unwrap();
                    n.broadcast.lock().unwrap().push(tx);
                    axum::Json(json!({"tx_response": {"code": 0, "txhash": "AB12"}}))
                },
            )
            .get(|| async {
                let payer = hex::encode([7u8; 32]);
                axum::Json(json!({"total": "1", "tx_responses": [{
                    "code": 0, "height": "55",
                    "tx": {"body": {"messages": [{"sender": "neutron1funder"}]}},
                    "events": [{"type": "wasm", "attributes": [
                        {"key": "_contract_address", "value": FAKE_CONTRACT},
                        {"key": "action", "value": "deposit"},
                        {"key": "payer", "value": payer},
                        {"key": "amount", "value": "900"}]}]}]}))
            }),
        )
        .route(
            "/cosmos/tx/v1beta1/txs/{hash}",
            get(
                |State(n): State<FakeNode>, Path(hash): Path<String>| async move {
                    // Not in a block at the first poll.
                    if n.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"code": 5, "message": "tx not found"})),
                        );
                    }
                    (
                        StatusCode::OK,
                        axum::Json(json!({"tx_response": {
                        "code": 0, "txhash": hash, "height": "99", "gas_used": "91234",
                        "events": [{"type": "wasm", "attributes": [
                            {"key": "_contract_address", "value": FAKE_CONTRACT},
                            {"key": "action", "value": "finalize"}]}]}})),
                    )
                },
            ),
        )
        .route(
            "/cosmwasm/wasm/v1/contract/{contract}/smart/{query}",
            get(
                move |Path((contract, query)): Path<(String, String)>| async move {
                    assert_eq!(contract, FAKE_CONTRACT);
                    let q: Value = serde_json::from_slice(
                        &base64::engine::general_purpose::STANDARD
                            .decode(query)
                            .unwrap(),
                    )
                    .unwrap();
                    assert_eq!(q, json!({"head": {}}));
                    axum::Json(json!({"data": {"finalized_batch": 3, "header_hash": null,
                    "tree_size": 10, "root": null, "pending_batch": 4}}))
                },
            ),
        )
        .route(
            "/cosmos/base/tendermint/v1beta1/blocks/latest",
            get(|| async {
                axum::Json(json!({"block": {"header": {
                    "height": "100", "time": "2024-02-29T12:34:56.123456789Z"}}}))
            }),
        )
        .with_state(node)
}

#[tokio::test]
async fn the_cosmos_client_signs_broadcasts_waits_and_queries() {
    use k256::ecdsa::signature::Verifier as _;
    use prost::Message as _;
    use tally_aggregator::chain::cosmos::proto;
    use tally_aggregator::chain::{CosmosChain, CosmosConfig};

    let node = FakeNode::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, fake_node(node.clone())).into_future());
    let key = CosmosKey::from_secret(&[0xa5; 32]).unwrap();
    let chain = CosmosChain::new(
        CosmosConfig {
            rest_url: url,
            chain_id: "pion-1".into(),
            contract: FAKE_CONTRACT.into(),
            prefix: "neutron".into(),
            denom: "untrn".into(),
            gas_price: (25, 1_000),
            gas_adjustment_percent: 150,
            inclusion_timeout: std::time::Duration::from_secs(10),
        },
        key.clone(),
    )
    .unwrap();

    let tx = chain.finalize().await.unwrap();
    assert_eq!(
        (tx.hash.as_str(), tx.height, tx.gas_used),
        ("AB12", 99, 91_234)
    );
    assert_eq!(tx.attribute("action"), Some("finalize"));
    // Two broadcasts would be a bug: simulation is not a broadcast.
    let sent = node.broadcast.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let raw = proto::TxRaw::decode(sent[0].as_slice()).unwrap();
    let auth = proto::AuthInfo::decode(raw.auth_info_bytes.as_slice()).unwrap();
    assert_eq!(auth.signer_infos[0].sequence, 7);
    let fee = auth.fee.unwrap();
    // 100,000 simulated × 150 % = 150,000 gas at 0.025 untrn = 3,750 untrn.
    assert_eq!(fee.gas_limit, 150_000);
    assert_eq!(fee.amount[0].amount, "3750");
    let sign_doc = proto::SignDoc {
        body_bytes: raw.body_bytes.clone(),
        auth_info_bytes: raw.auth_info_bytes.clone(),
        chain_id: "pion-1".into(),
        account_number: 42,
    }
    .encode_to_vec();
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key()).unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&raw.signatures[0]).unwrap();
    assert!(sig.normalize_s().is_none(), "high-S signature");
    vk.verify(&sign_doc, &sig).unwrap();
    let body = proto::TxBody::decode(raw.body_bytes.as_slice()).unwrap();
    let exec = proto::MsgExecuteContract::decode(body.messages[0].value.as_slice()).unwrap();
    assert_eq!(exec.msg, br#"{"finalize":{}}"#);
    assert_eq!(exec.sender, chain.address());

    let head = chain.head().await.unwrap();
    assert_eq!((head.finalized_batch, head.pending_batch), (3, Some(4)));
    let now = chain.now().await.unwrap();
    assert_eq!((now.height, now.time), (100, 1_709_210_096));
    let moves = chain.escrow_moves(0).await.unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!(
        (moves[0].party.as_str(), moves[0].amount, moves[0].height),
        ("neutron1funder", 900, 55)
    );
    server.abort();
}

/// A world with `n` payers (the fixtures' three first).
fn world_of(n: usize) -> World {
    let mut world = World::new();
    world.payers.extend((world.payers.len()..n).map(|i| {
        tally_protocol::SigningKey::from_seed(
            &tally_protocol::Digest::sha256(format!("payer {i}").as_bytes()).0,
        )
    }));
    world
}

/// Every channel's calls, `per` receipts each: payer `p` on host `h` and model `m` for
/// `p < payers`, both hosts, both models (4 channels per payer).
fn traffic(world: &mut World, payers: usize, per: usize) -> Vec<SignedReceipt> {
    let mut out = Vec::with_capacity(payers * 4 * per);
    for round in 0..per {
        for p in 0..payers {
            if p == POOR_PAYER && round > 0 {
                continue;
            }
            for (h, m) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                out.push(world.call(p, h, m));
            }
        }
    }
    out
}

/// Runs the settler until nothing is left, advancing the clock through every window;
/// returns the steps taken.
async fn settle_all<C: Chain>(settler: &Settler<SqliteStore, C>, devnet: &Devnet) -> Vec<Step> {
    let mut steps = Vec::new();
    loop {
        let step = settler.step().await.unwrap();
        match &step {
            Step::Idle => return steps,
            Step::Submitted { .. } | Step::Waiting { .. } => devnet.advance(WINDOW),
            _ => {}
        }
        steps.push(step);
        assert!(steps.len() < 1_000, "the settler does not converge");
    }
}

/// What each channel and payer owes after `rs`, checked against the chain: collected
/// totals and escrows, to the unit.
async fn assert_paid_exactly(
    world: &World,
    chain: &DevnetAccount,
    rs: &[SignedReceipt],
    payers: usize,
) {
    let mut by_channel: std::collections::BTreeMap<tally_protocol::ChannelId, u128> =
        Default::default();
    let mut by_payer: std::collections::BTreeMap<tally_protocol::PublicKey, u128> =
        Default::default();
    for r in rs {
        let c = by_channel.entry(r.receipt.channel()).or_default();
        *c = (*c).max(r.receipt.channel_total);
        *by_payer
            .entry(r.receipt.authorization.authorization.payer)
            .or_default() += r.receipt.metered.fee;
    }
    for (channel, total) in &by_channel {
        let c: tally_contracts::msg::ChannelResponse = chain
            .query(&QueryMsg::Channel {
                channel_id: b(&channel.0.0),
            })
            .await
            .unwrap();
        assert_eq!(c.collected.u128(), *total, "channel {channel}");
    }
    for p in 0..payers {
        let key = world.payers[p].public_key();
        let deposit = if p < 2 { DEPOSIT } else { DEPOSIT / 10_000 };
        let e = chain.escrow(&key).await.unwrap();
        assert_eq!(
            (e.balance.u128(), e.reserved.u128()),
            (deposit - by_payer.get(&key).copied().unwrap_or(0), 0),
            "payer {p}"
        );
    }
}

/// 10,000 channels move in one sealing period: the aggregator seals them as the fewest
/// batches of one tree that its budget allows, each within the budget, chained, submitted
/// in order and finalized on the devnet, and every channel is debited exactly its receipts.
/// The budget's gas model bounds what the devnet measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_channels_in_one_period_settle_in_budgeted_batches() {
    const PAYERS: usize = 2_500;
    let mut world = world_of(PAYERS);
    let net = net_with(&world, PAYERS, 0, |_| {}).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&world);
    cfg.policy.hosts = world.hosts[..2].iter().map(|k| k.public_key()).collect();
    cfg.max_receipts = 10_000;
    cfg.max_gap = 100_000;
    let budget = cfg.batch_budget;
    let agg = open(dir.path(), &world, cfg, escrow).await;
    let rs = traffic(&mut world, PAYERS, 1);
    assert_eq!(rs.len(), 10_000);
    for chunk in rs.chunks(2_000) {
        ingest(&agg, chunk).await;
    }
    let sealed = agg.seal_batches().await.unwrap();
    let host_log_size = rs.iter().map(|r| r.checkpoint.size).max().unwrap_or(0);
    let per = agg.channels_per_batch(10_000, host_log_size);
    assert_eq!(
        sealed.len(),
        10_000usize.div_ceil(per),
        "{per} channels per batch"
    );
    assert!(sealed.len() > 1);
    let mut prev = tally_protocol::Digest::ZERO;
    for (i, s) in sealed.iter().enumerate() {
        let h = &s.header;
        assert_eq!((h.batch, h.tree_size), (i as u64 + 1, 10_000));
        assert_eq!(h.prev_header, prev, "batches chain");
        assert!(h.debits.len() <= per);
        prev = h.hash();
    }
    let total: u128 = sealed.iter().map(|s| s.header.total).sum();
    assert_eq!(total, fees(&rs));
    assert!(agg.seal_batches().await.unwrap().is_empty(), "all sealed");

    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    let steps = settle_all(&settler, &net.devnet).await;
    let submitted = steps
        .iter()
        .filter(|s| matches!(s, Step::Submitted { .. }))
        .count();
    assert_eq!(submitted, sealed.len(), "{steps:?}");
    assert!(!steps.iter().any(|s| matches!(s, Step::Resealed { .. })));
    let head = net.submitter.head().await.unwrap();
    assert_eq!(
        (head.finalized_batch, head.pending_batch),
        (sealed.len() as u64, None)
    );
    assert_paid_exactly(&world, &net.submitter, &rs, PAYERS).await;

    // Each SubmitBatch within the budget, and the budget's model above what it cost.
    let shape = tally_aggregator::budget::Shape {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        tree_size: 10_000,
        host_log_size,
    };
    let log = net.devnet.log();
    let submits: Vec<_> = log
        .iter()
        .filter(|t| t.message == "submit_batch" && t.result.is_ok())
        .collect();
    assert_eq!(submits.len(), sealed.len());
    for (t, s) in submits.iter().zip(&sealed) {
        let n = s.header.debits.len();
        let (bytes, gas) = (t.gas.tx_bytes, t.gas_used);
        eprintln!(
            "batch {}: {n} channels, {bytes} bytes, {gas} gas ({} per channel: vm {} storage {} bytes {})",
            s.header.batch,
            gas / n as u64,
            t.gas.vm / n as u64,
            t.gas.storage / n as u64,
            t.gas.tx_size / n as u64,
        );
        assert!(bytes <= budget.max_tx_bytes as u64 && gas <= budget.max_gas);
        let (est_bytes, est_gas) = (budget.submit_bytes(&shape, n), budget.submit_gas(&shape, n));
        assert!(est_bytes as u64 >= bytes, "bytes {est_bytes} < {bytes}");
        assert!(
            est_gas >= gas,
            "gas model {est_gas} below the measured {gas}"
        );
        // The model prices every receipt with the longest host-log proof of the batch
        // (`⌈log₂⌉` of the largest host checkpoint, an upper bound, so a batch never
        // exceeds what the chain takes); measured proofs average about half of it, which
        // the bytes' gas shows: within a fifth.
        assert!(
            est_gas <= gas + gas / 5,
            "gas model {est_gas} far above {gas}"
        );
    }
}

/// A chain whose limits are tighter than the aggregator's budget refuses its batches for
/// their size (then their gas): each refused batch is sealed again in halves and settled;
/// nothing is skipped, nothing paid twice. A one-channel batch the chain still refuses
/// stops settlement with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_the_chain_refuses_are_resealed_smaller_never_skipped_nor_paid_twice() {
    const PAYERS: usize = 150;
    for (limit, bytes, gas) in [
        ("bytes", Some(120_000), None),
        ("gas", None, Some(2_500_000)),
    ] {
        let mut world = world_of(PAYERS);
        let net = net_with(&world, PAYERS, 0, |c| {
            c.max_tx_bytes = bytes;
            c.block_max_gas = gas;
        })
        .await;
        let escrow = Arc::new(ChainEscrow::new());
        escrow.refresh(net.submitter.as_ref()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&world);
        cfg.max_receipts = 10_000;
        let agg = open(dir.path(), &world, cfg, escrow).await;
        // Two periods: the second starts while batches of the first wait their turn.
        let first = traffic(&mut world, PAYERS, 1);
        ingest(&agg, &first).await;
        let sealed = agg.seal_batches().await.unwrap();
        assert_eq!(sealed.len(), 2, "the budget splits the 600 channels in two");
        let second = traffic(&mut world, PAYERS, 1);
        ingest(&agg, &second).await;
        agg.seal_batches().await.unwrap();

        let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
        let steps = settle_all(&settler, &net.devnet).await;
        let resealed: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Resealed {
                    from, max_channels, ..
                } => Some((*from, *max_channels)),
                _ => None,
            })
            .collect();
        eprintln!("{limit}: resealed {resealed:?}");
        assert!(!resealed.is_empty(), "{limit}: {steps:?}");
        assert!(
            resealed
                .windows(2)
                .all(|w| w[1].1 < w[0].1 || w[1].0 > w[0].0)
        );
        let refused: Vec<_> = net
            .devnet
            .log()
            .into_iter()
            .filter(|t| t.message == "submit_batch" && t.result.is_err())
            .collect();
        assert_eq!(refused.len(), resealed.len(), "{limit}");
        for t in &refused {
            let e = t.result.as_ref().unwrap_err();
            let want = if limit == "bytes" {
                "exceeds the limit"
            } else {
                "out of gas"
            };
            assert!(e.contains(want), "{limit}: {e}");
        }
        let all: Vec<SignedReceipt> = first.iter().chain(&second).cloned().collect();
        assert_paid_exactly(&world, &net.submitter, &all, PAYERS).await;
        // What every finalized batch debited adds up to the receipts, once.
        let head = net.submitter.head().await.unwrap();
        let mut debited = 0;
        for n in 1..=head.finalized_batch {
            debited += net.submitter.batch(n).await.unwrap().unwrap().total.u128();
        }
        assert_eq!(debited, fees(&all), "{limit}");
    }

    // A chain that takes no receipt at all: the batch halves down to one channel, then
    // settlement stops with the chain's refusal, and nothing was paid.
    let mut world = world_of(3);
    let net = net_with(&world, 2, 0, |c| c.max_tx_bytes = Some(1_500)).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agg = open(dir.path(), &world, config(&world), escrow).await;
    let rs: Vec<_> = (0..2).map(|p| world.call(p, 0, 0)).collect();
    ingest(&agg, &rs).await;
    agg.seal().await.unwrap().unwrap();
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    assert!(matches!(
        settler.step().await.unwrap(),
        Step::Resealed {
            from: 1,
            batches: 2,
            max_channels: 1
        }
    ));
    let err = settler.step().await.unwrap_err();
    assert!(
        matches!(
            err,
            SettleError::Unsplittable {
                batch: 1,
                error: ChainError::TooLarge { .. }
            }
        ),
        "{err}"
    );
    assert_eq!(net.submitter.head().await.unwrap().finalized_batch, 0);
}

/// A batch whose models have more contributors than one finalize credits (17 models of 64:
/// 1,088 credits, `FINALIZE_CREDITS` = 1,024 per call) is finalized by the settler in two
/// steps, and every contributor, host and escrow is paid exactly.
#[tokio::test]
async fn the_settler_repeats_a_finalize_the_contract_splits() {
    const EXTRA: usize = 17;
    let mut world = World::new();
    let net = net_with(&world, 2, EXTRA, |_| {}).await;
    let escrow = Arc::new(ChainEscrow::new());
    escrow.refresh(net.submitter.as_ref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&world);
    for m in MODELS..MODELS + EXTRA {
        cfg.policy.models.insert(
            model(m),
            tally_aggregator::ModelPolicy {
                guests: vec![guest_hash()],
                schedule: schedule(m),
            },
        );
    }
    let agg = open(dir.path(), &world, cfg, escrow).await;
    let rs: Vec<_> = (MODELS..MODELS + EXTRA)
        .map(|m| world.call(m % 2, 0, m))
        .collect();
    ingest(&agg, &rs).await;
    agg.seal().await.unwrap().unwrap();
    let settler = Settler::new(Arc::clone(&agg), Arc::clone(&net.submitter));
    let steps = settle_all(&settler, &net.devnet).await;
    let kinds: Vec<&str> = steps
        .iter()
        .map(|s| match s {
            Step::Submitted { .. } => "submitted",
            Step::Waiting { .. } => "waiting",
            Step::Finalizing { .. } => "finalizing",
            Step::Finalized { .. } => "finalized",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["submitted", "finalizing", "finalized"], "{steps:?}");
    assert_paid_exactly(&world, &net.submitter, &rs, 2).await;
    let mut credited = 0;
    for m in MODELS..MODELS + EXTRA {
        for (name, _) in many_contributors(m) {
            credited += claimable(&net.submitter, &net.devnet.addr(&name)).await;
        }
    }
    credited += claimable(&net.submitter, &net.devnet.addr("operator0")).await;
    credited += claimable(&net.submitter, &config_addr("sink")).await;
    assert_eq!(credited, fees(&rs), "every unit credited once");
}

#[tokio::test]
async fn a_bank_send_moves_funds_in_one_block_and_is_recorded_or_changes_nothing() {
    let world = World::new();
    let net = net(&world).await;
    let (funder, relay) = (net.devnet.addr("funder"), net.devnet.addr("relay"));
    let before = net.devnet.balance(&funder);
    let supply = net.devnet.supply();
    let sent = net.devnet.send(&funder, &relay, 1_000).unwrap();
    assert_eq!(net.devnet.balance(&funder), before - 1_000);
    assert_eq!(net.devnet.balance(&relay), 1_000);
    assert_eq!(net.devnet.supply(), supply);
    assert_eq!(net.devnet.sends(), vec![sent.clone()]);
    assert_eq!(
        (sent.from.as_str(), sent.to.as_str()),
        (funder.as_str(), relay.as_str())
    );
    // More than the sender holds: refused, nothing moved, nothing recorded.
    let err = net.devnet.send(&relay, &funder, 1_001).unwrap_err();
    assert!(err.to_string().contains("insufficient funds"), "{err}");
    assert_eq!(net.devnet.balance(&relay), 1_000);
    assert_eq!(net.devnet.sends().len(), 1);
}

/// A dishonest aggregator's batch 1 over `leaves` (logged unchecked), debiting only the
/// channel of `debited` (the contract cannot know which channels a log moved), submitted
/// on the devnet; then the watcher's judgement of the batch (the auditor's library, proofs
/// from its own copy of the log) and the contract's verdict on its proof.
async fn watcher_proves(world: &World, leaves: Vec<Vec<u8>>, debited: &SignedReceipt) -> String {
    use tally_auditor::watch::{ModelTerms, Registries, WatchedLog};
    let net = net(world).await;
    let mut log = WatchedLog::new();
    for l in &leaves {
        log.append(l.clone());
    }
    let size = log.size();
    let at = leaves.iter().position(|l| *l == debited.encode()).unwrap() as u64;
    let header = tally_protocol::BatchHeader {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        aggregator: aggregator_key().public_key(),
        batch: 1,
        prev_header: tally_protocol::Digest::ZERO,
        tree_size: size,
        root: log.root_at(size).unwrap(),
        total: debited.receipt.channel_total,
        debits: vec![tally_protocol::ChannelDebit {
            channel: debited.receipt.channel(),
            amount: debited.receipt.channel_total,
        }],
    }
    .sign(&aggregator_key());
    let registries = Registries {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        hosts: world
            .hosts
            .iter()
            .map(|k| (k.public_key(), (0..MODELS).map(model).collect()))
            .collect(),
        models: (0..MODELS)
            .map(|m| {
                (
                    model(m),
                    ModelTerms {
                        schedule: schedule(m),
                        guests: vec![guest_hash()],
                    },
                )
            })
            .collect(),
    };
    let proofs = log.judge(&registries, 0, size);
    assert_eq!(proofs.len(), 1, "{proofs:?}");
    let debit_proof =
        tally_protocol::merkle::inclusion_proof(&honest_tree(&leaves), at, size).unwrap();
    net.submitter
        .submit_batch(&tally_aggregator::chain::BatchSubmission {
            header: header.encode(),
            consistency: vec![],
            receipts: vec![LeafProof {
                receipt: debited.encode().into(),
                leaf_index: at,
                hashes: debit_proof.hashes.iter().map(|h| b(&h.0)).collect(),
            }],
        })
        .await
        .unwrap();
    let watcher = net.devnet.account("watcher");
    let tx = watcher
        .challenge(1, proofs.into_iter().next().unwrap())
        .await
        .unwrap();
    let status = net.submitter.batch(1).await.unwrap().unwrap().status;
    assert_eq!(status, BatchStatus::Voided);
    tx.attribute("kind").unwrap().to_owned()
}

/// The log's tree over `leaves`, for the dishonest aggregator's own inclusion proofs.
fn honest_tree(leaves: &[Vec<u8>]) -> tally_protocol::merkle::MemoryTree {
    let mut tree = tally_protocol::merkle::MemoryTree::new();
    for l in leaves {
        tree.append(tally_protocol::merkle::leaf_hash(l));
    }
    tree
}

#[tokio::test]
async fn the_watchers_proof_of_each_kind_voids_a_dishonest_batch_on_the_devnet() {
    // Re-priced: the fee tripled, the total consistent with it.
    let mut w = World::new();
    let a1 = w.call(0, 1, 0);
    let mut r = w.next(0, 1, 0);
    r.metered.fee *= 3;
    r.channel_total = a1.receipt.channel_total + r.metered.fee;
    let a2 = w.commit(r);
    assert_eq!(
        watcher_proves(&w, vec![a1.encode(), a2.encode()], &a2).await,
        "repriced"
    );

    // Two receipts with one seq.
    let mut w = World::new();
    let a1 = w.call(0, 1, 0);
    let mut r = w.next(0, 1, 0);
    r.authorization.authorization.seq = 1;
    w.resign_payer(&mut r);
    let dup = w.commit(r);
    assert_eq!(
        watcher_proves(&w, vec![a1.encode(), dup.encode()], &dup).await,
        "duplicate_seq"
    );

    // A total short of the previous total plus the fee.
    let mut w = World::new();
    let a1 = w.call(0, 1, 0);
    let mut r = w.next(0, 1, 0);
    r.channel_total -= 1;
    let a2 = w.commit(r);
    assert_eq!(
        watcher_proves(&w, vec![a1.encode(), a2.encode()], &a2).await,
        "inconsistent_totals"
    );

    // A guest the model does not allow, on a channel the batch does not debit.
    let mut w = World::new();
    let a1 = w.call(0, 1, 0);
    let mut r = w.next(1, 1, 0);
    r.guest = tally_protocol::Digest::sha256(b"another guest");
    let b1 = w.commit(r);
    assert_eq!(
        watcher_proves(&w, vec![a1.encode(), b1.encode()], &a1).await,
        "guest_not_allowed"
    );

    // A leaf that is no receipt.
    let mut w = World::new();
    let a1 = w.call(0, 1, 0);
    assert_eq!(
        watcher_proves(&w, vec![a1.encode(), b"junk".to_vec()], &a1).await,
        "invalid_receipt"
    );
}
