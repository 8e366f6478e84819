//! [`ChainReader`] against a Cosmos REST node (`DevnetRest` over the devnet running the
//! committed contract): what it discovers from the contract's history and queries, how far
//! it follows the funders' bank sends and what it marks incomplete, and its errors for a
//! contract that is not one, a node that is not there and a history too long to read.

use cosmwasm_std::Binary;
use tally_aggregator::chain::Chain;
use tally_auditor::{AuditError, ChainReader, ChainView, RestOptions};
use tally_contracts::msg::ExecuteMsg;
use tally_devnet::{Devnet, DevnetConfig, DevnetRest, dev_instantiate};
use tally_protocol::{Digest, PublicKey};
use tally_sandbox::PINNED_HASH;

const CHAIN: &str = "auditor-rest-1";

async fn node(devnet: &Devnet) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let rest = DevnetRest::new(devnet.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, tokio::spawn(rest.serve(listener)))
}

fn start() -> Devnet {
    Devnet::start(
        DevnetConfig::committed(CHAIN),
        &[("admin", 1_000), ("g", 1_000_000)],
        "admin",
        &dev_instantiate(60, 10, Devnet::address_of("tally", "sink")),
    )
    .unwrap()
}

async fn read(url: &str, contract: &str, options: RestOptions) -> Result<ChainView, AuditError> {
    ChainReader::new(url, contract, options)?.read().await
}

fn chain_error(r: Result<ChainView, AuditError>) -> String {
    match r {
        Err(AuditError::Chain(e)) => e,
        other => panic!("not a chain error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_contract_a_dead_node_and_a_contract_without_an_aggregator_are_errors() {
    let devnet = start();
    let (url, task) = node(&devnet).await;
    let e = chain_error(read(&url, &devnet.contract(), RestOptions::default()).await);
    assert!(e.contains("no aggregator is registered"), "{e}");
    let wrong = devnet.addr("nobody");
    let e = chain_error(read(&url, &wrong, RestOptions::default()).await);
    assert!(
        e.contains(&format!(
            "contract {wrong} does not answer as a Tally contract"
        )),
        "{e}"
    );
    task.abort();
    let _ = task.await;
    let e = chain_error(read(&url, &devnet.contract(), RestOptions::default()).await);
    assert!(e.contains(&url), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funders_are_traced_back_a_few_hops_and_cut_searches_are_marked_incomplete() {
    let devnet = start();
    let admin = devnet.account("admin");
    let model = Digest::sha256(b"model: chain-rest");
    let schedule = tally_testkit::one_tier_schedule(model, 10);
    admin
        .execute(
            &ExecuteMsg::RegisterModel {
                model_id: Binary::from(model.0.to_vec()),
                contributors: vec![tally_contracts::msg::ContributorMsg {
                    address: devnet.addr("lab"),
                    weight_bps: 10_000,
                }],
                schedule: schedule.encode().into(),
                host_share_bps: 2_000,
                protocol_fee_bps: 500,
                guests: vec![Binary::from(PINNED_HASH.0.to_vec())],
            },
            0,
        )
        .await
        .unwrap();
    let aggregator = PublicKey([1; 32]);
    admin
        .execute(
            &ExecuteMsg::RegisterAggregator {
                key: Binary::from(aggregator.0.to_vec()),
                address: devnet.addr("admin"),
            },
            0,
        )
        .await
        .unwrap();
    // g → s1 → s2 → s3 → f, then g → f directly; f funds the payer's escrow.
    let a = |n: &str| devnet.addr(n);
    for (from, to, amount) in [
        ("g", "s1", 500),
        ("s1", "s2", 400),
        ("s2", "s3", 300),
        ("s3", "f", 200),
        ("g", "f", 100),
    ] {
        devnet.advance(5);
        devnet.send(&a(from), &a(to), amount).unwrap();
    }
    let payer = PublicKey([9; 32]);
    devnet.account("f").deposit(&payer, 250).await.unwrap();
    let (url, task) = node(&devnet).await;
    let contract = devnet.contract();

    let view = read(&url, &contract, RestOptions::default()).await.unwrap();
    assert_eq!(view.chain_id, CHAIN);
    assert_eq!(view.aggregator_key, aggregator);
    assert_eq!(view.guest, PINNED_HASH);
    assert_eq!(view.models.len(), 1);
    assert_eq!(view.models[0].schedule, schedule);
    assert_eq!(view.deposits.len(), 1);
    assert_eq!(
        (view.deposits[0].funder.as_str(), view.deposits[0].amount),
        (a("f").as_str(), 250)
    );
    assert!(
        view.deposits[0].time_ms > 0,
        "a deposit's time is its block's"
    );
    assert_eq!(view.escrows.len(), 1);
    assert_eq!(
        (view.escrows[0].payer, view.escrows[0].balance),
        (payer, 250)
    );
    assert!(view.batches.is_empty() && view.payouts.is_empty());
    // Three hops back from f (the default depth): f's senders s3 and g, s3's sender s2,
    // s2's sender s1; s1's own history is beyond the trace, g's was read.
    let mut sends: Vec<(String, String, u128)> = view
        .transfers
        .iter()
        .map(|t| (t.from.clone(), t.to.clone(), t.amount))
        .collect();
    sends.sort();
    let mut want = vec![
        (a("s3"), a("f"), 200),
        (a("g"), a("f"), 100),
        (a("s2"), a("s3"), 300),
        (a("s1"), a("s2"), 400),
    ];
    want.sort();
    assert_eq!(sends, want);
    assert_eq!(view.incomplete, vec![a("s1")]);

    // One hop: only f's senders, whose histories are unknown.
    let mut one = RestOptions::default();
    one.hops = 1;
    let view = read(&url, &contract, one).await.unwrap();
    assert_eq!(view.transfers.len(), 2);
    assert_eq!(view.incomplete, vec![a("s3"), a("g")]);

    // Pages of one send, one page per address: f's search is cut after s3's send.
    let mut cut = RestOptions::default();
    cut.hops = 1;
    cut.page_size = 1;
    cut.transfer_pages = 1;
    let view = read(&url, &contract, cut.clone()).await.unwrap();
    assert_eq!(view.transfers.len(), 1);
    assert_eq!(view.incomplete, vec![a("f"), a("s3")]);

    // The contract's history (instantiate, two registrations, a deposit) cut short is an
    // error, not an audit against half a registry.
    cut.max_pages = 3;
    let e = chain_error(read(&url, &contract, cut).await);
    assert!(
        e.contains("the contract's history is longer than 3 pages of 1 transactions"),
        "{e}"
    );
    task.abort();
}
