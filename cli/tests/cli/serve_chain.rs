//! `tally serve` settling on a chain: the binary talks to a local Cosmos REST node
//! (`DevnetRest`) backed by the devnet, which runs the committed contract `.wasm` in the
//! CosmWasm VM and checks every transaction's signature and sequence. Payer escrow comes
//! from the contract; sealed batches are submitted and finalized by the service's
//! secp256k1 account; the revenue credited on chain is exactly the fees of the receipts.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cosmwasm_std::Binary;
use tally_aggregator::chain::{Chain, CosmosKey};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_contracts::msg::{BalanceResponse, ContributorMsg, ExecuteMsg, HeadResponse, QueryMsg};
use tally_devnet::{Devnet, DevnetAccount, DevnetConfig, DevnetRest, dev_instantiate};
use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SignedReceipt, SigningKey,
    UsageFacts,
};

pub(super) const TALLY: &str = env!("CARGO_BIN_EXE_tally");
use tally_sandbox::{PINNED_HASH, Sandbox, SandboxConfig};
pub(super) const CHAIN: &str = "tally-serve-chain-1";
const NOW: u64 = 1_700_000_000_000;
pub(super) const WINDOW: u64 = 3_600;
pub(super) const BOND: u128 = 1_000_000;
pub(super) const DEPOSIT: u128 = 1_000_000_000_000;
pub(super) const CHAIN_SECRET: [u8; 32] = [0x5a; 32];
pub(super) const CONTRIBUTORS: [(&str, u16); 2] = [("alice", 6_000), ("bob", 4_000)];

pub(super) fn schedule() -> PriceSchedule {
    PriceSchedule {
        model: Digest::sha256(b"model: serve-chain-test"),
        min_fee: 10,
        tiers: vec![PriceTier {
            from_prompt_tokens: 0,
            prompt_per_mtok: 1_000_000,
            cached_per_mtok: 250_000,
            completion_per_mtok: 4_000_000,
        }],
    }
}

pub(super) fn funded_payer() -> SigningKey {
    SigningKey::from_seed(&[3; 32])
}

fn unfunded_payer() -> SigningKey {
    SigningKey::from_seed(&[5; 32])
}

pub(super) fn host() -> SigningKey {
    SigningKey::from_seed(&[4; 32])
}

pub(super) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn b(bytes: &[u8]) -> Binary {
    Binary::from(bytes)
}

pub(super) fn sink() -> String {
    cosmwasm_vm::testing::MockApi::default()
        .with_prefix("tally")
        .addr_make("sink")
}

/// The devnet with the model, the host, this service's aggregator key registered to its
/// chain account, and the funded payer's deposit.
pub(super) async fn devnet(aggregator: &SigningKey, account: &str) -> Devnet {
    let genesis = [
        ("admin", 10 * BOND),
        ("operator", 10 * BOND),
        ("funder", 10 * DEPOSIT),
    ];
    let devnet = Devnet::start(
        DevnetConfig::committed(CHAIN),
        &genesis,
        "admin",
        &dev_instantiate(WINDOW, BOND, sink()),
    )
    .unwrap();
    let contract = devnet.contract();
    let admin = devnet.account("admin");
    admin
        .execute(
            &ExecuteMsg::RegisterModel {
                model_id: b(&schedule().model.0),
                contributors: CONTRIBUTORS
                    .iter()
                    .map(|(n, w)| ContributorMsg {
                        address: devnet.addr(n),
                        weight_bps: *w,
                    })
                    .collect(),
                schedule: schedule().encode().into(),
                host_share_bps: 2_000,
                protocol_fee_bps: 500,
                guests: vec![b(&PINNED_HASH.0)],
            },
            0,
        )
        .await
        .unwrap();
    admin
        .execute(
            &ExecuteMsg::RegisterAggregator {
                key: b(&aggregator.public_key().0),
                address: account.to_owned(),
            },
            0,
        )
        .await
        .unwrap();
    devnet
        .account("operator")
        .register_host(CHAIN, &contract, &host(), &[schedule().model], BOND)
        .await
        .unwrap();
    devnet
        .account("funder")
        .deposit(&funded_payer().public_key(), DEPOSIT)
        .await
        .unwrap();
    devnet
}

/// A config with a `[chain]` section pointing at `rest_url`, sealing every 300 ms, the log
/// in `agg.db`.
pub(super) fn write_config(dir: &Path, port: u16, contract: &str, rest_url: &str) -> PathBuf {
    let db = dir.join("agg.db").display().to_string();
    write_config_with_store(dir, port, contract, rest_url, &db)
}

/// [`write_config`] with the log in `store` (a path or `postgres://…`).
pub(super) fn write_config_with_store(
    dir: &Path,
    port: u16,
    contract: &str,
    rest_url: &str,
    store: &str,
) -> PathBuf {
    let schedule_path = dir.join("model.schedule.json");
    std::fs::write(&schedule_path, serde_json::to_vec(&schedule()).unwrap()).unwrap();
    let secret: String = CHAIN_SECRET.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("chain.key"), secret).unwrap();
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
store = "{store}"
key_file = "{key}"
chain_id = "{CHAIN}"
contract = "{contract}"
hosts = ["{host}"]
seal_interval_ms = 300
reexecute_per_mille = 1000

[[models]]
schedule = "{schedule}"

[chain]
rest_url = "{rest_url}"
key_file = "{chain_key}"
prefix = "tally"
denom = "utally"
gas_price = "0.025"
gas_adjustment = "1.5"
escrow_refresh_ms = 200
settle_interval_ms = 200
inclusion_timeout_ms = 5000
"#,
        key = dir.join("agg.key").display(),
        chain_key = dir.join("chain.key").display(),
        host = host().public_key(),
        schedule = schedule_path.display(),
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` receipts of `payer`'s calls, continuing `attestor`'s host chain.
pub(super) async fn attest(
    attestor: &Attestor,
    contract: &str,
    payer: &SigningKey,
    seqs: std::ops::RangeInclusive<u64>,
) -> Vec<SignedReceipt> {
    let mut out = Vec::new();
    for seq in seqs {
        let request_digest =
            Digest::sha256(&[&seq.to_be_bytes()[..], &payer.public_key().0].concat());
        let auth = Authorization {
            chain_id: CHAIN.into(),
            contract: contract.into(),
            payer: payer.public_key(),
            host: host().public_key(),
            model: schedule().model,
            seq,
            request_digest,
            max_fee: 1_000_000,
            cumulative_cap: 1_000_000_000,
            expires_at_ms: NOW + 60_000,
        }
        .sign(payer);
        let facts = UsageFacts {
            model: schedule().model,
            request_digest,
            response_digest: Digest::sha256(b"answer"),
            prompt_tokens: 500 + seq,
            cached_prompt_tokens: 0,
            completion_tokens: 50 + seq,
            reasoning_tokens: 0,
            started_at_ms: NOW - 1_000,
            first_token_ms: 100,
            duration_ms: 900,
            finish: FinishStatus::Stop,
        };
        out.push(attestor.attest_at(&auth, &facts, NOW).await.unwrap());
    }
    out
}

pub(super) async fn poll_head(
    chain: &DevnetAccount,
    what: &str,
    done: impl Fn(&HeadResponse) -> bool,
) -> HeadResponse {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let head = chain.head().await.unwrap();
        if done(&head) {
            return head;
        }
        assert!(Instant::now() < deadline, "{what}: head stuck at {head:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn claimable(chain: &DevnetAccount, address: &str) -> u128 {
    let r: BalanceResponse = chain
        .query(&QueryMsg::Balance {
            address: address.to_owned(),
        })
        .await
        .unwrap();
    r.amount.u128()
}

/// Posts `receipts` to the aggregator at `base`, signed by the host as the aggregator
/// requires (docs/protocol.md §6.1); returns its answer.
pub(super) async fn post_receipts(base: &str, receipts: &[SignedReceipt]) -> serde_json::Value {
    let body = serde_json::to_vec(receipts).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let signed = tally_protocol::Submission::of_body(host().public_key(), now, &body).sign(&host());
    reqwest::Client::new()
        .post(format!("{base}/v1/receipts"))
        .header("content-type", "application/json")
        .header(
            tally_protocol::SUBMISSION_HEADER,
            hex::encode(signed.encode()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `tally serve` at `base` answers `/readyz`.
pub(super) async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match reqwest::get(format!("{base}/readyz")).await {
            Ok(r) if r.status().is_success() => return,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("tally serve did not become ready"),
        }
    }
}

/// The host's attestor for `contract`, journaling into `dir`.
pub(super) async fn host_attestor(dir: &Path, contract: &str) -> Attestor {
    let sandbox = Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap());
    Attestor::open(
        AttestorConfig {
            chain_id: CHAIN.into(),
            contract: contract.to_owned(),
            journal_path: dir.join("host.journal"),
            group_commit: GroupCommit::default(),
            schedules: vec![schedule()],
        },
        host(),
        sandbox,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_escrow_from_the_chain_and_settles_batches() {
    let dir = tempfile::tempdir().unwrap();
    tally_attestor::generate_key_file(dir.path().join("agg.key")).unwrap();
    let aggregator = tally_attestor::load_key_file(dir.path().join("agg.key")).unwrap();
    let account = CosmosKey::from_secret(&CHAIN_SECRET)
        .unwrap()
        .address("tally")
        .unwrap();
    let devnet = devnet(&aggregator, &account).await;
    let contract = devnet.contract();
    let supply = devnet.supply();

    let rest = DevnetRest::new(devnet.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest_url = format!("http://{}", listener.local_addr().unwrap());
    let node = tokio::spawn(rest.clone().serve(listener));

    let port = free_port();
    let cfg = write_config(dir.path(), port, &contract, &rest_url);
    let mut child = Command::new(TALLY)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;

    // Five calls of the funded payer, then one of a payer with no escrow on chain.
    let attestor = host_attestor(dir.path(), &contract).await;
    let paid = attest(&attestor, &contract, &funded_payer(), 1..=5).await;
    let unpaid = attest(&attestor, &contract, &unfunded_payer(), 1..=1).await;
    let all: Vec<SignedReceipt> = paid.iter().chain(&unpaid).cloned().collect();
    let r = post_receipts(&base, &all).await;
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{r}");
    assert!(
        results[..5].iter().all(|x| x["status"] == "accepted"),
        "{r}"
    );
    assert_eq!(results[5]["status"], "rejected", "{r}");
    assert_eq!(results[5]["reason"], "insufficient_escrow", "{r}");
    let fees: u128 = paid.iter().map(|r| r.receipt.metered.fee).sum();
    assert!(fees > 0);

    // The service seals, then submits batch 1 from its account (signed, sequence 0).
    let chain = devnet.account("observer");
    let head = poll_head(&chain, "submission", |h| h.pending_batch == Some(1)).await;
    assert_eq!(head.finalized_batch, 0);
    let escrow = chain.escrow(&funded_payer().public_key()).await.unwrap();
    assert_eq!(escrow.reserved.u128(), fees, "the batch reserves the fees");
    // The window closes; the service finalizes.
    devnet.advance(WINDOW);
    let head = poll_head(&chain, "finalization", |h| h.finalized_batch == 1).await;
    assert_eq!(head.tree_size, 5);
    assert_eq!(
        rest.sequence(&account),
        2,
        "submit and finalize, both through REST"
    );

    // The payer paid exactly the fees; the parties are credited exactly the fees.
    let escrow = chain.escrow(&funded_payer().public_key()).await.unwrap();
    assert_eq!(escrow.balance.u128(), DEPOSIT - fees);
    assert_eq!(escrow.reserved.u128(), 0);
    let mut credited = 0;
    for (name, _) in CONTRIBUTORS {
        let owed = claimable(&chain, &devnet.addr(name)).await;
        assert!(owed > 0, "{name} earned nothing");
        credited += owed;
    }
    let alice = claimable(&chain, &devnet.addr("alice")).await;
    let bob = claimable(&chain, &devnet.addr("bob")).await;
    assert!(alice > bob, "weights 60/40: {alice} vs {bob}");
    credited += claimable(&chain, &devnet.addr("operator")).await;
    credited += claimable(&chain, &sink()).await;
    assert_eq!(
        credited, fees,
        "contributors, host and protocol share the fees"
    );
    assert_eq!(devnet.supply(), supply, "nothing minted or burnt");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(status.success(), "{status}: {logs:#?}");
    let json: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let has = |msg: &str| json.iter().any(|v| v["fields"]["message"] == msg);
    assert!(
        has("escrow from the chain; settling sealed batches")
            && has("submitted")
            && has("finalized")
            && has("stopped"),
        "{logs:#?}"
    );
    node.abort();
}

#[test]
fn serve_refuses_to_start_when_the_chain_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    tally_attestor::generate_key_file(dir.path().join("agg.key")).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let cfg = write_config(
        dir.path(),
        free_port(),
        "tally14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr",
        &closed,
    );
    let out = Command::new(TALLY)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reading the payer escrow from the chain") && err.contains(&closed),
        "{err}"
    );

    // A [chain] section with balances in [escrow] is a configuration error.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!("\n[escrow]\n\"{}\" = \"5\"\n", funded_payer().public_key());
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(TALLY)
        .args(["serve", "--print-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[escrow] must be empty"));
}
