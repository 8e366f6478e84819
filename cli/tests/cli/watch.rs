//! `tally watch` as a separate process guarding a deployment on the devnet behind
//! `DevnetRest`: a dishonest aggregator (this test: a log served over the aggregator's
//! read API, batches submitted on chain with its registered key) puts each of the five
//! fraud kinds into a batch; the spawned watcher proves every one on chain inside the
//! window (the batch voided, the host slashed, the watcher credited), while honest batches
//! finalize untouched; a host that signed two histories is proved from the aggregator's
//! equivocation evidence (`HostEquivocation`). Then the watcher is killed with SIGKILL at random points while
//! challenges are in flight, at least ten times: every fraudulent batch is still proved,
//! and none twice. A fraud found after the window closed is reported, never sent; a
//! receipt a client handed the watcher that never reaches the log, and a checkpoint that
//! rewrites one seen before, are alerts with their evidence. Bad
//! configuration (no such node, a wrong contract, an account without funds) exits
//! non-zero with the reason and sends nothing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use base64::Engine as _;
use cosmwasm_std::Binary;
use serde::Deserialize;
use serde_json::json;
use tally_aggregator::chain::{BatchSubmission, Chain, CosmosKey};
use tally_contracts::msg::{
    BatchStatus, ChallengesResponse, ContributorMsg, ExecuteMsg, HostResponse, LeafProof, QueryMsg,
};
use tally_devnet::{Devnet, DevnetAccount, DevnetConfig, DevnetRest, dev_instantiate};
use tally_protocol::merkle::{
    CompactRange, MemoryTree, consistency_proof, inclusion_proof, leaf_hash,
};
use tally_protocol::{
    Authorization, BatchHeader, ChannelDebit, Checkpoint, Digest, FinishStatus, MeterInput,
    PriceSchedule, Receipt, SignedReceipt, SigningKey, UsageFacts, sign_group,
};
use tally_sandbox::{PINNED_HASH, Sandbox, SandboxConfig};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
const CHAIN: &str = "tally-watch-1";
const WINDOW: u64 = 3_600;
const BOND: u128 = 1_000_000;
const DEPOSIT: u128 = 1_000_000_000_000;
const WATCHER_SECRET: [u8; 32] = [0x77; 32];
const NOW: u64 = 1_700_000_000_000;

fn b(bytes: &[u8]) -> Binary {
    Binary::from(bytes)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn schedule() -> PriceSchedule {
    tally_testkit::one_tier_schedule(Digest::sha256(b"model: watch-test"), 10)
}

fn watcher_address() -> String {
    CosmosKey::from_secret(&WATCHER_SECRET)
        .unwrap()
        .address("tally")
        .unwrap()
}

/// The dishonest aggregator's log: leaves, its tree, and the latest checkpoint note.
#[derive(Default)]
struct Log {
    leaves: Vec<Vec<u8>>,
    tree: MemoryTree,
    note: Option<String>,
    /// Equivocation evidence the aggregator recorded (bundles it refused).
    evidence: Vec<Vec<u8>>,
}

type Shared = Arc<Mutex<Log>>;

#[derive(Deserialize)]
struct Range {
    start: u64,
    end: u64,
}

#[derive(Deserialize)]
struct Sizes {
    from: u64,
    to: u64,
}

/// The aggregator's read API over `log`, as `tally serve` answers it.
fn aggregator_api(log: Shared) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/checkpoint",
            get(|State(log): State<Shared>| async move {
                match log.lock().unwrap().note.clone() {
                    Some(n) => (axum::http::StatusCode::OK, n),
                    None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                }
            }),
        )
        .route(
            "/v1/leaves",
            get(
                |State(log): State<Shared>, Query(r): Query<Range>| async move {
                    let log = log.lock().unwrap();
                    let leaves: Vec<_> = (r.start..r.end)
                        .map(|i| {
                            json!({
                                "leaf_index": i,
                                "encoding": base64::engine::general_purpose::STANDARD
                                    .encode(&log.leaves[i as usize]),
                            })
                        })
                        .collect();
                    axum::Json(json!({ "leaves": leaves }))
                },
            ),
        )
        .route(
            "/v1/consistency",
            get(
                |State(log): State<Shared>, Query(s): Query<Sizes>| async move {
                    let log = log.lock().unwrap();
                    let p = consistency_proof(&log.tree, s.from, s.to).unwrap();
                    axum::Json(json!({ "from": s.from, "to": s.to, "hashes": p.hashes }))
                },
            ),
        )
        .route(
            "/v1/evidence",
            get(|State(log): State<Shared>| async move {
                let log = log.lock().unwrap();
                let items: Vec<_> = log
                    .evidence
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        json!({
                            "seq": i + 1,
                            "encoding": base64::engine::general_purpose::STANDARD.encode(e),
                            "other_encoding": null,
                        })
                    })
                    .collect();
                axum::Json(json!({ "evidence": items, "next": null }))
            }),
        )
        .with_state(log)
}

/// A deployment with a dishonest aggregator, its chain behind `DevnetRest`, and a host
/// whose receipts this test signs (honest ones and the frauds).
struct World {
    dir: tempfile::TempDir,
    devnet: Devnet,
    contract: String,
    rest_url: String,
    aggregator_url: String,
    aggregator: SigningKey,
    submitter: DevnetAccount,
    log: Shared,
    host: SigningKey,
    host_log: CompactRange,
    sandbox: Sandbox,
    /// (number, header hash, tree size, root) of the last finalized batch.
    finalized: (u64, Digest, u64, Option<Digest>),
    next_payer: u8,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl World {
    async fn new() -> World {
        let aggregator = SigningKey::from_seed(&[0xa9; 32]);
        let host = SigningKey::from_seed(&[0x40; 32]);
        let genesis = [
            ("admin", 10 * BOND),
            ("operator", 10 * BOND),
            ("funder", 100 * DEPOSIT),
            ("aggregator", 10 * BOND),
            ("watcher-funder", 10 * BOND),
        ];
        let sink = cosmwasm_vm::testing::MockApi::default()
            .with_prefix("tally")
            .addr_make("sink");
        let devnet = Devnet::start(
            DevnetConfig::committed(CHAIN),
            &genesis,
            "admin",
            &dev_instantiate(WINDOW, BOND, sink),
        )
        .unwrap();
        let contract = devnet.contract();
        let admin = devnet.account("admin");
        admin
            .execute(
                &ExecuteMsg::RegisterModel {
                    model_id: b(&schedule().model.0),
                    contributors: vec![ContributorMsg {
                        address: devnet.addr("alice"),
                        weight_bps: 10_000,
                    }],
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
                    address: devnet.addr("aggregator"),
                },
                0,
            )
            .await
            .unwrap();
        devnet
            .account("operator")
            .register_host(CHAIN, &contract, &host, &[schedule().model], BOND)
            .await
            .unwrap();
        devnet
            .send(&devnet.addr("watcher-funder"), &watcher_address(), 5 * BOND)
            .unwrap();

        let rest = DevnetRest::new(devnet.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_url = format!("http://{}", listener.local_addr().unwrap());
        let node = tokio::spawn(async move {
            let _ = rest.serve(listener).await;
        });
        let log: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let aggregator_url = format!("http://{}", listener.local_addr().unwrap());
        let app = aggregator_api(Arc::clone(&log));
        let api = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        World {
            dir: tempfile::tempdir().unwrap(),
            submitter: devnet.account("aggregator"),
            devnet,
            contract,
            rest_url,
            aggregator_url,
            aggregator,
            log,
            host,
            host_log: CompactRange::new(),
            sandbox: Sandbox::pinned(SandboxConfig::default()).unwrap(),
            finalized: (0, Digest::ZERO, 0, None),
            next_payer: 1,
            _tasks: vec![node, api],
        }
    }

    /// A new payer with escrow on chain.
    async fn payer(&mut self) -> SigningKey {
        let p = SigningKey::from_seed(&[self.next_payer; 32]);
        self.next_payer += 1;
        self.devnet
            .account("funder")
            .deposit(&p.public_key(), DEPOSIT)
            .await
            .unwrap();
        p
    }

    /// A receipt of `payer` at `seq` after a channel total of `before` (`nonce` varies
    /// the request), edited by `edit` before the host signs it, appended to the log.
    fn call(
        &mut self,
        payer: &SigningKey,
        seq: u64,
        nonce: u64,
        before: u128,
        edit: impl FnOnce(&mut Receipt),
    ) -> SignedReceipt {
        let sr = self.sign(payer, seq, nonce, before, edit);
        self.append(sr.encode());
        sr
    }

    /// [`World::call`]'s receipt, signed into the host's log but not into the aggregator's.
    fn sign(
        &mut self,
        payer: &SigningKey,
        seq: u64,
        nonce: u64,
        before: u128,
        edit: impl FnOnce(&mut Receipt),
    ) -> SignedReceipt {
        let request = Digest::sha256(&[&seq.to_be_bytes()[..], &nonce.to_be_bytes()].concat());
        let authorization = Authorization {
            chain_id: CHAIN.into(),
            contract: self.contract.clone(),
            payer: payer.public_key(),
            host: self.host.public_key(),
            model: schedule().model,
            seq,
            request_digest: request,
            max_fee: 50_000_000,
            cumulative_cap: u128::from(u64::MAX),
            expires_at_ms: NOW + 3_600_000,
        }
        .sign(payer);
        let facts = UsageFacts {
            model: schedule().model,
            request_digest: request,
            response_digest: Digest::sha256(b"answer"),
            prompt_tokens: 1_000 + seq,
            cached_prompt_tokens: 0,
            completion_tokens: 200,
            reasoning_tokens: 0,
            started_at_ms: NOW,
            first_token_ms: 40,
            duration_ms: 400,
            finish: FinishStatus::Stop,
        };
        let metered = self
            .sandbox
            .meter(&MeterInput {
                facts: facts.clone(),
                schedule: schedule(),
                max_fee: authorization.authorization.max_fee,
            })
            .unwrap();
        let mut receipt = Receipt {
            authorization,
            facts,
            metered,
            guest: PINNED_HASH,
            schedule: schedule().hash(),
            host_seq: self.host_log.size() + 1,
            channel_total: before + metered.fee,
            timestamp_ms: NOW,
        };
        edit(&mut receipt);
        let (_, mut bundles) = sign_group(&self.host, &mut self.host_log, vec![receipt]).unwrap();
        bundles.pop().unwrap()
    }

    fn append(&self, leaf: Vec<u8>) {
        let mut log = self.log.lock().unwrap();
        log.tree.append(leaf_hash(&leaf));
        log.leaves.push(leaf);
    }

    /// Publishes a checkpoint of the whole log; returns its size and root.
    fn seal(&self) -> (u64, Digest) {
        let mut log = self.log.lock().unwrap();
        let size = log.tree.size();
        let root = log.tree.root_at(size).unwrap();
        let origin = tally_protocol::log_origin(CHAIN, &self.contract).unwrap();
        log.note = Some(
            Checkpoint { origin, size, root }
                .sign(&self.aggregator)
                .unwrap(),
        );
        (size, root)
    }

    /// Seals and submits the next batch, debiting only `debited`'s channel (the
    /// contract cannot know which channels the log moved). Returns its number.
    async fn submit(&mut self, debited: &SignedReceipt) -> u64 {
        let (size, root) = self.seal();
        let (last, prev_hash, prev_size, _) = self.finalized;
        let number = last + 1;
        let leaf = debited.encode();
        let (at, consistency, proof) = {
            let log = self.log.lock().unwrap();
            let at = log.leaves.iter().rposition(|l| *l == leaf).unwrap() as u64;
            let consistency = if prev_size == 0 {
                vec![]
            } else {
                consistency_proof(&log.tree, prev_size, size)
                    .unwrap()
                    .hashes
            };
            (
                at,
                consistency,
                inclusion_proof(&log.tree, at, size).unwrap(),
            )
        };
        let amount = debited.receipt.channel_total;
        let header = BatchHeader {
            chain_id: CHAIN.into(),
            contract: self.contract.clone(),
            aggregator: self.aggregator.public_key(),
            batch: number,
            prev_header: prev_hash,
            tree_size: size,
            root,
            total: amount,
            debits: vec![ChannelDebit {
                channel: debited.receipt.channel(),
                amount,
            }],
        }
        .sign(&self.aggregator);
        self.submitter
            .submit_batch(&BatchSubmission {
                header: header.encode(),
                consistency,
                receipts: vec![LeafProof {
                    receipt: leaf.into(),
                    leaf_index: at,
                    hashes: proof.hashes.iter().map(|h| b(&h.0)).collect(),
                }],
            })
            .await
            .unwrap();
        number
    }

    /// Closes the pending batch's window and finalizes it.
    async fn finalize(&mut self) {
        self.devnet.advance(WINDOW + 1);
        self.submitter.finalize().await.unwrap();
        let head = self.submitter.head().await.unwrap();
        let hash = Digest(head.header_hash.unwrap().as_slice().try_into().unwrap());
        let root = Digest(head.root.unwrap().as_slice().try_into().unwrap());
        self.finalized = (head.finalized_batch, hash, head.tree_size, Some(root));
    }

    async fn status(&self, n: u64) -> BatchStatus {
        self.submitter.batch(n).await.unwrap().unwrap().status
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("watch-state")
    }

    fn key_file(&self) -> PathBuf {
        let path = self.dir.path().join("watcher.key");
        std::fs::write(&path, hex::encode(WATCHER_SECRET)).unwrap();
        path
    }

    /// `tally watch` for this deployment; `with` replaces flags' values.
    fn watch_command(&self, listen: u16, with: &[(&str, String)]) -> Command {
        let mut flags = vec![
            ("--poll-ms", "100".to_owned()),
            ("--aggregator", self.aggregator_url.clone()),
            ("--aggregator-key", self.aggregator.public_key().to_string()),
            ("--chain-rest", self.rest_url.clone()),
            ("--chain-id", CHAIN.to_owned()),
            ("--contract", self.contract.clone()),
            ("--key", self.key_file().display().to_string()),
            ("--state", self.state_dir().display().to_string()),
            ("--listen", format!("127.0.0.1:{listen}")),
        ];
        for (flag, value) in with {
            if let Some(f) = flags.iter_mut().find(|(f, _)| f == flag) {
                f.1.clone_from(value);
            }
        }
        let mut c = Command::new(TALLY);
        c.args(["watch", "--log-format", "json"]);
        for (f, v) in flags {
            c.arg(f).arg(v);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    fn spawn_watcher(&self, listen: u16) -> Child {
        self.watch_command(listen, &[]).spawn().unwrap()
    }

    /// Challenges sent from the watcher's account (accepted or refused) so far.
    fn watcher_challenges(&self) -> (usize, usize) {
        let me = watcher_address();
        let txs: Vec<_> = self
            .devnet
            .log()
            .into_iter()
            .filter(|t| t.sender == me && t.message == "challenge")
            .collect();
        let ok = txs.iter().filter(|t| t.result.is_ok()).count();
        (ok, txs.len() - ok)
    }

    async fn challenges(&self) -> ChallengesResponse {
        self.submitter
            .query(&QueryMsg::Challenges {
                start_after: None,
                limit: Some(100),
            })
            .await
            .unwrap()
    }
}

/// Waits until `done`, or fails after `secs` seconds naming `what`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The watcher's metric `name` (0 before the watcher answers).
async fn metric(port: u16, name: &str) -> u64 {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// One honest batch, then a batch holding `fraud`'s leaves: the spawned watcher leaves
/// the first alone and proves the second; returns the kind the contract recorded.
async fn a_watcher_proves(fraud: &str) -> (String, World) {
    let mut w = World::new().await;
    let honest = w.payer().await;
    let mut total = 0;
    let mut last = None;
    for seq in 1..=3 {
        let sr = w.call(&honest, seq, 0, total, |_| {});
        total = sr.receipt.channel_total;
        last = Some(sr);
    }
    assert_eq!(w.submit(&last.unwrap()).await, 1);
    let port = free_port();
    let mut watcher = w.spawn_watcher(port);
    until("the honest batch judged", 60, || async move {
        metric(port, "tally_watch_batches_judged_total").await >= 1
    })
    .await;
    w.finalize().await;
    assert_eq!(w.status(1).await, BatchStatus::Finalized);

    // Batch 2: a fresh debited channel, and the fraud.
    let debited = w.payer().await;
    let d = w.call(&debited, 1, 0, 0, |_| {});
    let cheat = w.payer().await;
    match fraud {
        "repriced" => {
            let a = w.call(&cheat, 1, 0, 0, |_| {});
            let t = a.receipt.channel_total;
            w.call(&cheat, 2, 0, t, |r| {
                r.metered.fee *= 3;
                r.channel_total = t + r.metered.fee;
            });
        }
        "duplicate_seq" => {
            let a = w.call(&cheat, 1, 0, 0, |_| {});
            w.call(&cheat, 1, 1, a.receipt.channel_total, |_| {});
        }
        "inconsistent_totals" => {
            let a = w.call(&cheat, 1, 0, 0, |_| {});
            w.call(&cheat, 2, 0, a.receipt.channel_total, |r| {
                r.channel_total -= 1
            });
        }
        "guest_not_allowed" => {
            w.call(&cheat, 1, 0, 0, |r| {
                r.guest = Digest::sha256(b"another guest")
            });
        }
        "invalid_receipt" => w.append(b"not a receipt".to_vec()),
        other => panic!("{other}"),
    }
    assert_eq!(w.submit(&d).await, 2);
    let wr = &w;
    until("the fraudulent batch voided", 60, || async move {
        wr.status(2).await == BatchStatus::Voided
    })
    .await;
    until("the watcher's books", 30, || async move {
        metric(port, "tally_watch_challenges_accepted_total").await == 1
    })
    .await;
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let records = w.challenges().await.challenges;
    assert_eq!(records.len(), 1, "{records:?}");
    let (_, record) = &records[0];
    assert_eq!(record.challenger.as_str(), watcher_address());
    assert_eq!(
        w.watcher_challenges(),
        (1, 0),
        "one challenge, none refused"
    );
    (record.kind.clone(), w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_watcher_proves_every_fraud_kind_on_chain_and_leaves_honest_batches_alone() {
    for kind in [
        "repriced",
        "duplicate_seq",
        "inconsistent_totals",
        "guest_not_allowed",
        "invalid_receipt",
    ] {
        let (proved, w) = a_watcher_proves(kind).await;
        assert_eq!(proved, kind);
        // The host is slashed for every kind but a leaf that names no host.
        let host: HostResponse = w
            .submitter
            .query(&QueryMsg::Host {
                key: b(&w.host.public_key().0),
            })
            .await
            .unwrap();
        assert_eq!(host.slashed.u128() > 0, kind != "invalid_receipt", "{kind}");
        let reward: tally_contracts::msg::BalanceResponse = w
            .submitter
            .query(&QueryMsg::Balance {
                address: watcher_address(),
            })
            .await
            .unwrap();
        assert_eq!(
            reward.amount.u128() > 0,
            kind != "invalid_receipt",
            "{kind}"
        );
        // The honest batch stays finalized.
        assert_eq!(w.status(1).await, BatchStatus::Finalized);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_killed_at_random_points_proves_every_fraud_exactly_once() {
    let mut w = World::new().await;
    let honest = w.payer().await;
    let first = w.call(&honest, 1, 0, 0, |_| {});
    w.submit(&first).await;
    w.finalize().await;
    // A re-priced receipt stays in the log: every batch over it is fraudulent.
    let cheat = w.payer().await;
    let a = w.call(&cheat, 1, 0, 0, |_| {});
    let t = a.receipt.channel_total;
    w.call(&cheat, 2, 0, t, |r| {
        r.metered.fee *= 3;
        r.channel_total = t + r.metered.fee;
    });
    let debited = w.payer().await;
    let port = free_port();
    let mut watcher = w.spawn_watcher(port);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut total = 0;
    let rounds = 12;
    let mut killed_after = 0;
    for seq in 1..=rounds {
        let d = w.call(&debited, seq, 0, total, |_| {});
        total = d.receipt.channel_total;
        let n = w.submit(&d).await;
        // Kill it at a random point: before, while or after it challenges.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 400)).await;
        if w.status(n).await == BatchStatus::Voided {
            killed_after += 1;
        }
        watcher.kill().unwrap();
        let _ = watcher.wait();
        watcher = w.spawn_watcher(port);
        let wr = &w;
        until("the batch voided after a restart", 60, || async move {
            wr.status(n).await == BatchStatus::Voided
        })
        .await;
    }
    eprintln!(
        "{rounds} kills: {killed_after} after the batch was voided, {} before or while",
        rounds - killed_after
    );
    // Every submission was proved once: one record each, no challenge refused.
    let records = w.challenges().await.challenges;
    assert_eq!(records.len(), rounds as usize, "{records:?}");
    let mut hashes: Vec<_> = records.iter().map(|(_, r)| r.header_hash.clone()).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), rounds as usize);
    assert_eq!(w.watcher_challenges(), (rounds as usize, 0));

    // Too late: the watcher is away while a fraudulent batch's window closes; back, it
    // reports the fraud and sends nothing.
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let d = w.call(&debited, rounds + 1, 0, total, |_| {});
    let n = w.submit(&d).await;
    w.finalize().await;
    assert_eq!(w.status(n).await, BatchStatus::Finalized);
    let mut watcher = w.spawn_watcher(port);
    until("the late fraud reported", 60, || async move {
        metric(port, "tally_watch_challenges_too_late_total").await == 1
    })
    .await;
    watcher.kill().unwrap();
    let _ = watcher.wait();
    assert_eq!(
        w.watcher_challenges(),
        (rounds as usize, 0),
        "nothing sent late"
    );
    let alerts: Vec<_> = std::fs::read_dir(w.state_dir().join("alerts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        alerts.iter().any(|a| a.ends_with("too_late.json")),
        "{alerts:?}"
    );
}

/// Runs `tally watch --check` with flags replaced by `with`; returns whether it
/// succeeded and its stderr.
fn check_with(w: &World, with: &[(&str, String)]) -> (bool, String) {
    let mut c = w.watch_command(free_port(), with);
    c.arg("--check").stderr(Stdio::piped());
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_non_zero_with_the_reason_and_sends_nothing() {
    let w = World::new().await;
    let before = w.devnet.log().len();
    let (ok, err) = check_with(&w, &[]);
    assert!(ok, "the good configuration passes --check: {err}");

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (ok, err) = check_with(&w, &[("--chain-rest", nowhere)]);
    assert!(!ok && err.contains("balance"), "{err}");

    let (ok, err) = check_with(&w, &[("--contract", w.devnet.addr("nobody"))]);
    assert!(
        !ok && err.contains("not a Tally settlement contract"),
        "{err}"
    );

    let poor: PathBuf = w.dir.path().join("poor.key");
    std::fs::write(&poor, hex::encode([0x31u8; 32])).unwrap();
    let (ok, err) = check_with(&w, &[("--key", poor.display().to_string())]);
    assert!(!ok && err.contains("holds no"), "{err}");

    let stranger = SigningKey::from_seed(&[1; 32]).public_key().to_string();
    let (ok, err) = check_with(&w, &[("--aggregator-key", stranger)]);
    assert!(!ok && err.contains("not registered"), "{err}");

    let (ok, err) = check_with(&w, &[("--poll-ms", "0".into())]);
    assert!(!ok && err.contains("poll_ms"), "{err}");

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (ok, err) = check_with(&w, &[("--aggregator", nowhere)]);
    assert!(!ok && err.contains("aggregator"), "{err}");
    assert_eq!(w.devnet.log().len(), before, "nothing was sent");
}

/// The alert files the watcher wrote so far.
fn alerts(w: &World) -> Vec<String> {
    std::fs::read_dir(w.state_dir().join("alerts"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_proof_covers_is_an_alert_with_its_evidence() {
    let mut w = World::new().await;
    let payer = w.payer().await;
    let first = w.call(&payer, 1, 0, 0, |_| {});
    w.submit(&first).await;
    let port = free_port();
    let mut watcher = w
        .watch_command(port, &[])
        .env("TALLY_CENSORSHIP_BATCHES", "1")
        .spawn()
        .unwrap();
    until("batch 1 judged", 60, || async move {
        metric(port, "tally_watch_batches_judged_total").await >= 1
    })
    .await;

    // A client hands the watcher a receipt the aggregator never logs; junk is refused.
    let hidden = w.sign(&payer, 2, 0, first.receipt.channel_total, |_| {});
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/receipts");
    let r = http
        .post(&url)
        .body(hex::encode(hidden.encode()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = http.post(&url).body("not a receipt").send().await.unwrap();
    assert_eq!(r.status(), 400);
    w.finalize().await;
    w.call(&payer, 3, 0, first.receipt.channel_total + 1, |_| {});
    let other = w.payer().await;
    let d = w.call(&other, 1, 0, 0, |_| {});
    w.submit(&d).await;
    let wr = &w;
    until("the censorship alert", 60, || async move {
        alerts(wr).iter().any(|a| a.ends_with("censored.json"))
    })
    .await;

    // A split view: the aggregator rewrites a leaf it served and signs the same size again.
    {
        let mut log = w.log.lock().unwrap();
        log.leaves[0].push(0);
        let mut tree = MemoryTree::new();
        for l in &log.leaves {
            tree.append(leaf_hash(l));
        }
        log.tree = tree;
    }
    w.seal();
    until("the split-view alert", 60, || async move {
        alerts(wr).iter().any(|a| a.ends_with("split_view.json"))
    })
    .await;
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let evidence: serde_json::Value = {
        let name = alerts(&w)
            .into_iter()
            .find(|a| a.ends_with("split_view.json"))
            .unwrap();
        let bytes = std::fs::read(w.state_dir().join("alerts").join(name)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    // Both signed notes are in the evidence: anyone can check the aggregator signed both.
    assert!(evidence["earlier"].as_str().is_some() && evidence["later"].as_str().is_some());
    assert_ne!(evidence["earlier"], evidence["later"]);
    // Nothing here is provable on chain: the watcher sent nothing.
    assert_eq!(w.watcher_challenges(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_watcher_proves_host_equivocation_from_the_aggregators_evidence() {
    let mut w = World::new().await;
    let payer = w.payer().await;
    let first = w.call(&payer, 1, 0, 0, |_| {});
    w.submit(&first).await;
    w.finalize().await;
    // The host signs two histories after its first receipt: the logged one, and a twin
    // at the same place that the aggregator refused and recorded as evidence.
    let other = w.payer().await;
    let fork = w.host_log.clone();
    let logged = w.call(&other, 1, 0, 0, |_| {});
    let kept = std::mem::replace(&mut w.host_log, fork);
    let twin = w.sign(&other, 1, 1, 0, |_| {});
    w.host_log = kept;
    assert_eq!(twin.receipt.host_seq, logged.receipt.host_seq);
    w.log.lock().unwrap().evidence.push(twin.encode());
    let n = w.submit(&logged).await;
    let port = free_port();
    let mut watcher = w.spawn_watcher(port);
    let wr = &w;
    until("the equivocating batch voided", 60, || async move {
        wr.status(n).await == BatchStatus::Voided
    })
    .await;
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let records = w.challenges().await.challenges;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1.kind, "host_equivocation");
    let host: HostResponse = w
        .submitter
        .query(&QueryMsg::Host {
            key: b(&w.host.public_key().0),
        })
        .await
        .unwrap();
    assert!(host.slashed.u128() > 0);
    assert_eq!(w.watcher_challenges(), (1, 0));
}
