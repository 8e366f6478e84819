//! `tally audit` of a deployment as it runs, with nothing but what a real one offers: a
//! PostgreSQL-backed `tally serve` settles on the devnet through a Cosmos REST node
//! (`DevnetRest`); the auditor reads the chain view from that node (`--chain-rest URL
//! --contract ADDR`, no `chain.json` anywhere) and the log from the PostgreSQL store or
//! the aggregator's API. The audit passes; it fails, with the reason printed, once a
//! stored receipt or checkpoint is tampered with, or once the chain's answers (through a
//! tampering proxy) report a payout that is not what the receipts back. The exported view
//! re-audits offline to the same verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde_json::Value;
use tally_aggregator::chain::{Chain, CosmosKey};
use tally_devnet::{DevnetAccount, DevnetRest};
use tally_protocol::{SignedReceipt, SigningKey};

use super::serve_chain::{
    CHAIN, CHAIN_SECRET, DEPOSIT, TALLY, WINDOW, attest, claimable, devnet, free_port,
    funded_payer, host_attestor, poll_head, post_receipts, sink, wait_ready,
    write_config_with_store,
};

/// The second payer, funded through a relay (a bank send, then its deposit).
fn relayed_payer() -> SigningKey {
    SigningKey::from_seed(&[6; 32])
}

fn tally(args: &[&str]) -> Output {
    Command::new(TALLY).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Posts `receipts` to the aggregator at `base`, signed by the host; all must be accepted.
async fn submit(base: &str, receipts: &[SignedReceipt]) {
    let r = post_receipts(base, receipts).await;
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), receipts.len(), "{r}");
    assert!(results.iter().all(|x| x["status"] == "accepted"), "{r}");
}

/// A reverse proxy in front of the REST node that adds one unit to every claim of
/// `victim` in the transaction search's answers (the chain "reports" a wrong payout).
async fn tampering_proxy(upstream: String, victim: String) -> String {
    async fn forward(
        State((upstream, victim)): State<(String, String)>,
        uri: Uri,
    ) -> (StatusCode, axum::Json<Value>) {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let r = reqwest::get(format!("{upstream}{path}")).await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let mut v: Value = r.json().await.unwrap();
        for tx in v["tx_responses"].as_array_mut().into_iter().flatten() {
            for e in tx["events"].as_array_mut().into_iter().flatten() {
                let attrs = e["attributes"].as_array_mut().unwrap();
                let has =
                    |k: &str, val: &str| attrs.iter().any(|a| a["key"] == k && a["value"] == val);
                if has("action", "claim") && has("address", &victim) {
                    for a in attrs.iter_mut().filter(|a| a["key"] == "amount") {
                        let n: u128 = a["value"].as_str().unwrap().parse().unwrap();
                        a["value"] = (n + 1).to_string().into();
                    }
                }
            }
        }
        (status, axum::Json(v))
    }
    let app = axum::Router::new()
        .fallback(forward)
        .with_state((upstream, victim));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Runs one SQL statement on the aggregator's PostgreSQL log.
async fn sql(url: &str, statement: &'static str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let done = sqlx::query(statement).execute(&pool).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{statement}");
    pool.close().await;
}

/// `tally audit` run off the async runtime's threads (it is a blocking child process).
async fn audit(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tally(&args)
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_fails(out: &Output, reason: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("verdict: FAIL") && t.contains(reason), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_deployment_is_audited_from_the_chain_and_tampering_fails_it() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pg = tally_testkit::ScratchPg::start(false).unwrap();
    let store = pg.create_database("audit_chain").await.unwrap();

    // The chain: the registries and a deposit (serve_chain's), plus a payer funded through
    // a relay, so the view has a bank transfer to trace.
    tally_attestor::generate_key_file(dir.path().join("agg.key")).unwrap();
    let aggregator = tally_attestor::load_key_file(dir.path().join("agg.key")).unwrap();
    let account = CosmosKey::from_secret(&CHAIN_SECRET)
        .unwrap()
        .address("tally")
        .unwrap();
    let devnet = devnet(&aggregator, &account).await;
    let contract = devnet.contract();
    let relay = devnet.addr("relay");
    devnet
        .send(&devnet.addr("funder"), &relay, DEPOSIT)
        .unwrap();
    devnet
        .account("relay")
        .deposit(&relayed_payer().public_key(), DEPOSIT)
        .await
        .unwrap();
    let rest = DevnetRest::new(devnet.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest_url = format!("http://{}", listener.local_addr().unwrap());
    let node = tokio::spawn(rest.clone().serve(listener));

    // The aggregator on PostgreSQL, settling through the REST node.
    let port = free_port();
    let cfg = write_config_with_store(dir.path(), port, &contract, &rest_url, &store);
    let mut child = Command::new(TALLY)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;

    // Honest traffic of both payers, sealed, submitted, finalized, claimed.
    let attestor = host_attestor(dir.path(), &contract).await;
    let mut receipts = attest(&attestor, &contract, &funded_payer(), 1..=6).await;
    receipts.extend(attest(&attestor, &contract, &relayed_payer(), 1..=4).await);
    submit(&base, &receipts).await;
    let chain: DevnetAccount = devnet.account("observer");
    poll_head(&chain, "submission", |h| h.pending_batch == Some(1)).await;
    devnet.advance(WINDOW);
    let head = poll_head(&chain, "finalization", |h| h.finalized_batch == 1).await;
    assert_eq!(head.tree_size, 10);
    for name in ["alice", "bob", "operator"] {
        devnet.account(name).claim().await.unwrap();
    }
    // The sink leaves its share unclaimed: the view counts it as credited, not paid.
    assert!(claimable(&chain, &sink()).await > 0);
    // The funded payer takes part of its escrow back (signed, thawed, paid out): the
    // audit reconciles the escrow with the withdrawal, not as fees.
    let payer = funded_payer();
    let escrow = chain.escrow(&payer.public_key()).await.unwrap();
    let recipient = devnet.addr("payer-wallet");
    let msg = tally_protocol::withdraw_message(
        CHAIN,
        &contract,
        &payer.public_key().0,
        escrow.nonce,
        1_000,
        &recipient,
    );
    chain
        .execute(
            &tally_contracts::msg::ExecuteMsg::RequestWithdraw {
                payer_key: payer.public_key().0.to_vec().into(),
                amount: 1_000u128.into(),
                recipient: recipient.clone(),
                signature: payer.sign(&msg).0.to_vec().into(),
            },
            0,
        )
        .await
        .unwrap();
    devnet.advance(4 * WINDOW);
    chain
        .execute(
            &tally_contracts::msg::ExecuteMsg::Withdraw {
                payer_key: payer.public_key().0.to_vec().into(),
            },
            0,
        )
        .await
        .unwrap();
    assert_eq!(devnet.balance(&recipient), 1_000);

    // The full audit of the PostgreSQL store against the chain read through REST.
    let exported = dir.path().join("chain.json");
    let exported_s = exported.to_str().unwrap().to_owned();
    let from_chain = |extra: &[&str]| {
        let mut a = args(&["audit", "--chain-rest", &rest_url, "--contract", &contract]);
        a.extend(args(extra));
        a
    };
    let out = audit(from_chain(&[
        "--store",
        &store,
        "--export-chain",
        &exported_s,
    ]))
    .await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("verdict: PASS") && t.contains("10 verified") && t.contains("1 finalized"),
        "{t}"
    );
    assert!(
        t.contains(&format!("read from {rest_url}: 1 batches")),
        "{t}"
    );

    // What the view holds, all read from the chain.
    let view: Value = serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
    assert_eq!(view["chain_id"], CHAIN);
    assert_eq!(view["aggregator_key"], aggregator.public_key().to_string());
    assert_eq!(view["deposits"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(view["deposits"][1]["funder"], relay.as_str());
    assert_eq!(view["transfers"][0]["from"], devnet.addr("funder").as_str());
    assert_eq!(view["transfers"][0]["to"], relay.as_str());
    let payouts = view["payouts"].as_array().unwrap();
    assert_eq!(
        payouts.len(),
        4,
        "three claims and the sink's credit: {view}"
    );
    assert_eq!(payouts[3]["role"], "sink (unclaimed)");
    assert_eq!(
        view["withdrawals"][0]["amount"].as_u64(),
        Some(1_000),
        "{view}"
    );

    // The export re-audits offline to the same verdict, and reads back to the same file.
    let again = dir.path().join("again.json");
    let out = audit(args(&[
        "audit",
        "--store",
        &store,
        "--chain",
        &exported_s,
        "--export-chain",
        again.to_str().unwrap(),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verdict: PASS"));
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        std::fs::read_to_string(&again).unwrap()
    );

    // Through the aggregator's API instead of its database.
    let out = audit(from_chain(&["--aggregator", &base])).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("1 checkpoints fetched") && t.contains("verdict: PASS"),
        "{t}"
    );

    // The service stops; from here on the log only changes by tampering.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());

    // (a) A stored receipt altered (the last byte of its encoding), then put back.
    let pool = sqlx::PgPool::connect(&store).await.unwrap();
    let original: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM receipts WHERE leaf = 3")
        .fetch_one(&pool)
        .await
        .unwrap();
    sql(
        &store,
        "UPDATE receipts SET bytes = substring(bytes from 1 for length(bytes) - 1) || '\\x00'::bytea WHERE leaf = 3",
    )
    .await;
    let out = audit(from_chain(&["--store", &store])).await;
    assert_fails(&out, "onchain_root");
    assert_fails(&out, "inclusion_proof");
    let put_back = sqlx::query("UPDATE receipts SET bytes = $1 WHERE leaf = 3")
        .bind(original)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(put_back.rows_affected(), 1);
    let out = audit(from_chain(&["--store", &store])).await;
    assert!(out.status.success(), "restored: {}", text(&out));

    // (b) A stored checkpoint's root swapped: its signed note no longer matches.
    const FIRST_ROOT: &str =
        "UPDATE checkpoints SET root = $1 WHERE size = (SELECT MIN(size) FROM checkpoints)";
    let root: Vec<u8> = sqlx::query_scalar(
        "SELECT root FROM checkpoints WHERE size = (SELECT MIN(size) FROM checkpoints)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let swapped = sqlx::query(FIRST_ROOT)
        .bind(vec![0u8; 32])
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(swapped.rows_affected(), 1);
    let out = audit(from_chain(&["--store", &store])).await;
    assert_fails(&out, "checkpoint_note");
    sqlx::query(FIRST_ROOT)
        .bind(root)
        .execute(&pool)
        .await
        .unwrap();

    // (c) The chain reports alice's claim one unit larger than what the receipts back.
    let proxy = tampering_proxy(rest_url.clone(), devnet.addr("alice")).await;
    let out = audit(args(&[
        "audit",
        "--chain-rest",
        &proxy,
        "--contract",
        &contract,
        "--store",
        &store,
    ]))
    .await;
    assert_fails(&out, "payouts");
    let t = text(&out);
    let fails: Vec<&str> = t.lines().filter(|l| l.contains("FAIL  ")).collect();
    assert_eq!(fails.len(), 1, "only the payouts fail: {t}");
    pool.close().await;

    // A wrong contract address, an unreachable node: a clear error, exit 2.
    let wrong = devnet.addr("not-the-contract");
    let out = audit(args(&[
        "audit",
        "--chain-rest",
        &rest_url,
        "--contract",
        &wrong,
        "--store",
        &store,
    ]))
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "contract {wrong} does not answer as a Tally contract"
        )),
        "{t}"
    );
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = audit(args(&[
        "audit",
        "--chain-rest",
        &closed,
        "--contract",
        &contract,
        "--store",
        &store,
    ]))
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("reading the chain") && t.contains(&closed),
        "{t}"
    );
    node.abort();
    eprintln!("audit_chain: {:.1} s", started.elapsed().as_secs_f64());
}
