//! The shipping client against a real aggregator served on an ephemeral port: normal
//! shipping, an aggregator outage with nothing lost, a restarted shipper resuming from its
//! cursor without resending, and permanent rejections recorded and skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tally_aggregator::{
    Aggregator, Config, MemoryEscrow, ModelPolicy, Policy, SqliteStore, Store as _,
};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit, ShipConfig, Shipper, read_journal};
use tally_protocol::{Authorization, Digest, FinishStatus, PriceSchedule, SigningKey, UsageFacts};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tally_sandbox::{PINNED_HASH, Sandbox, SandboxConfig};
const CHAIN: &str = "tally-test-1";
const CONTRACT: &str = "tally1contract";
const NOW: u64 = 1_700_000_000_000;

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap())))
}

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[200; 32])
}

fn payer_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn other_payer() -> SigningKey {
    SigningKey::from_seed(&[8; 32])
}

fn schedule() -> PriceSchedule {
    tally_testkit::one_tier_schedule(Digest::sha256(b"model: ship-test"), 50)
}

async fn attestor(journal: &Path) -> Arc<Attestor> {
    let config = AttestorConfig {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        journal_path: journal.to_path_buf(),
        group_commit: GroupCommit::default(),
        schedules: vec![schedule()],
    };
    Arc::new(Attestor::open(config, host_key(), sandbox()).await.unwrap())
}

/// Attests calls `from..from + n` of the one payer's channel.
async fn attest(attestor: &Attestor, from: u64, n: u64) {
    for seq in from..from + n {
        attest_one(attestor, &payer_key(), seq).await;
    }
}

/// Attests one call of `payer` at channel `seq`.
async fn attest_one(attestor: &Attestor, payer: &SigningKey, seq: u64) {
    let request_digest = Digest::sha256(&[&seq.to_be_bytes()[..], &payer.public_key().0].concat());
    let auth = Authorization {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        payer: payer.public_key(),
        host: host_key().public_key(),
        model: schedule().model,
        seq,
        request_digest,
        max_fee: 1_000_000_000,
        cumulative_cap: 1_000_000_000_000,
        expires_at_ms: NOW + 60_000,
    }
    .sign(payer);
    let facts = UsageFacts {
        model: schedule().model,
        request_digest,
        response_digest: Digest::sha256(b"answer"),
        prompt_tokens: 1_000 + seq % 1_000,
        cached_prompt_tokens: 0,
        completion_tokens: 100,
        reasoning_tokens: 0,
        started_at_ms: NOW - 2_000,
        first_token_ms: 150,
        duration_ms: 1_900,
        finish: FinishStatus::Stop,
    };
    attestor.attest_at(&auth, &facts, NOW).await.unwrap();
}

/// An aggregator over `db` that knows the test's host, model and payer on `chain`.
async fn aggregator(db: &Path, chain: &str) -> Arc<Aggregator<SqliteStore>> {
    let policy = Policy {
        chain_id: chain.into(),
        contract: CONTRACT.into(),
        hosts: vec![host_key().public_key()],
        models: HashMap::from([(
            schedule().model,
            ModelPolicy {
                guests: vec![PINNED_HASH],
                schedule: schedule(),
            },
        )]),
    };
    let store = SqliteStore::open(db).await.unwrap();
    let escrow = MemoryEscrow::new([
        (payer_key().public_key(), u128::MAX / 4),
        (other_payer().public_key(), u128::MAX / 4),
    ]);
    Arc::new(
        Aggregator::open(
            store,
            Config::new(policy),
            SigningKey::from_seed(&[9; 32]),
            vec![sandbox()],
            Arc::new(escrow),
        )
        .await
        .unwrap(),
    )
}

/// A served aggregator: stop it with `stop`.
struct Served {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(listener: TcpListener, agg: Arc<Aggregator<SqliteStore>>) -> Served {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tally_aggregator::run(listener, agg, async move {
            let _ = stopped.await;
        }));
        Served { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn ephemeral() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn ship_config(addr: SocketAddr, journal: &Path) -> ShipConfig {
    let mut c = ShipConfig::new(format!("http://{addr}"), journal);
    c.max_batch = 7;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.poll_interval = Duration::from_millis(20);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn shipper(addr: SocketAddr, attestor: &Arc<Attestor>) -> Shipper {
    let live = Arc::clone(attestor);
    Shipper::open(ship_config(addr, attestor.journal_path()))
        .unwrap()
        .with_durable_end(move || live.journal_stats().durable_len)
        .with_host_key(host_key())
}

/// The receipt ids of the journal, in chain order.
fn journal_ids(journal: &Path) -> Vec<Digest> {
    read_journal(journal)
        .unwrap()
        .map(|r| r.unwrap().id())
        .collect()
}

/// Every journal receipt is in the aggregator's log, at consecutive leaves in chain order.
async fn assert_log_holds(agg: &Aggregator<SqliteStore>, ids: &[Digest]) {
    assert_eq!(agg.tree_size(), ids.len() as u64);
    for (i, id) in ids.iter().enumerate() {
        let stored = agg.store().receipt(id).await.unwrap().expect("in the log");
        assert_eq!(stored.leaf, i as u64, "leaf of receipt {i}");
    }
}

fn duplicates(agg: &Aggregator<SqliteStore>) -> u64 {
    let text = agg.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix("tally_receipts_duplicate_total "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_every_receipt_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = attestor(&dir.path().join("host.journal")).await;
    attest(&attestor, 1, 30).await;
    let agg = aggregator(&dir.path().join("agg.db"), CHAIN).await;
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;

    let mut s = shipper(addr, &attestor);
    let report = s.ship_available().await.unwrap();
    assert_eq!(
        (report.accepted, report.duplicate, report.rejected),
        (30, 0, 0)
    );
    assert_eq!(s.cursor().host_seq, 30);
    assert_eq!(s.cursor().offset, attestor.journal_stats().durable_len);
    assert_log_holds(&agg, &journal_ids(attestor.journal_path())).await;

    // Caught up: another round sends nothing.
    let again = s.ship_available().await.unwrap();
    assert_eq!(again, report);
    assert_eq!(duplicates(&agg), 0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agg.db");
    let attestor = attestor(&dir.path().join("host.journal")).await;
    attest(&attestor, 1, 10).await;
    let agg = aggregator(&db, CHAIN).await;
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;

    let (stop_shipping, stopped) = oneshot::channel::<()>();
    let shipping = tokio::spawn(shipper(addr, &attestor).run(async move {
        let _ = stopped.await;
    }));
    wait_for(|| agg.tree_size() == 10).await;

    // The aggregator goes down; the host keeps serving calls.
    served.stop().await;
    agg.store().close().await;
    drop(agg);
    attest(&attestor, 11, 15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // It comes back on the same address, from the same database.
    let listener = TcpListener::bind(addr).await.unwrap();
    let agg = aggregator(&db, CHAIN).await;
    assert_eq!(agg.tree_size(), 10, "nothing arrived during the outage");
    let served = Served::start(listener, Arc::clone(&agg)).await;
    wait_for(|| agg.tree_size() == 25).await;

    // The durable cursor reaches the end of the chain (the answer to the last batch may
    // arrive a moment after the log grew).
    let cursor = dir.path().join("host.journal.cursor");
    wait_for(|| {
        std::fs::read(&cursor)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["host_seq"] == 25)
    })
    .await;
    let _ = stop_shipping.send(());
    let report = shipping.await.unwrap().unwrap();
    assert_eq!(report.rejected, 0);
    assert!(report.retries > 0, "the outage was retried: {report:?}");
    assert_log_holds(&agg, &journal_ids(attestor.journal_path())).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_shipper_resumes_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = attestor(&dir.path().join("host.journal")).await;
    attest(&attestor, 1, 12).await;
    let agg = aggregator(&dir.path().join("agg.db"), CHAIN).await;
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;

    let mut first = shipper(addr, &attestor);
    assert_eq!(first.ship_available().await.unwrap().accepted, 12);
    let cursor = first.cursor();
    drop(first);

    attest(&attestor, 13, 9).await;
    let mut second = shipper(addr, &attestor);
    assert_eq!(second.cursor(), cursor, "the cursor was read back");
    let report = second.ship_available().await.unwrap();
    assert_eq!((report.accepted, report.duplicate), (9, 0));
    assert_eq!(duplicates(&agg), 0, "nothing was sent twice");
    assert_log_holds(&agg, &journal_ids(attestor.journal_path())).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_rejections_are_recorded_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("host.journal");
    let attestor = attestor(&journal).await;
    attest(&attestor, 1, 3).await;
    // This aggregator settles another chain: every receipt is `wrong_chain`.
    let agg = aggregator(&dir.path().join("agg.db"), "another-chain").await;
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;

    let mut s = shipper(addr, &attestor);
    let report = s.ship_available().await.unwrap();
    assert_eq!((report.accepted, report.rejected), (0, 3));
    assert_eq!(s.cursor().host_seq, 3);
    assert_eq!(agg.tree_size(), 0);
    let rejects = std::fs::read_to_string(dir.path().join("host.journal.rejects")).unwrap();
    let lines: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let ids = journal_ids(&journal);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["reason"], "wrong_chain");
        assert_eq!(line["host_seq"], i as u64 + 1);
        assert_eq!(line["id"], serde_json::to_value(ids[i]).unwrap());
    }
    served.stop().await;
}

/// The probe of issue 14: channel `seq`s 2^63 and 2^63 + 1 (both served and receipted)
/// collided in the aggregator's store, the whole submission failed with 503 and the shipper
/// retried forever, so no later receipt of the host, from any payer, reached the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_above_2_63_ship_and_do_not_wedge_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = attestor(&dir.path().join("host.journal")).await;
    attest_one(&attestor, &payer_key(), 1).await;
    for seq in [1 << 63, (1 << 63) + 1, u64::MAX] {
        attest_one(&attestor, &payer_key(), seq).await;
    }
    for seq in 1..=5 {
        attest_one(&attestor, &other_payer(), seq).await;
    }
    let agg = aggregator(&dir.path().join("agg.db"), CHAIN).await;
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;
    let mut s = shipper(addr, &attestor);
    let report = tokio::time::timeout(Duration::from_secs(60), s.ship_available())
        .await
        .expect("shipping is not wedged")
        .unwrap();
    assert_eq!((report.accepted, report.rejected), (9, 0), "{report:?}");
    assert_log_holds(&agg, &journal_ids(attestor.journal_path())).await;
    let channel = tally_protocol::ChannelId::new(
        &payer_key().public_key(),
        &host_key().public_key(),
        &schedule().model,
    );
    let body = reqwest::get(format!("http://{addr}/v1/channels/{channel}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_seq"].as_u64(), Some(u64::MAX), "{body}");
    served.stop().await;
}

/// A receipt the aggregator's store refuses (a deterministic rejection) is written to the
/// rejects file with its reason and shipping moves on; before, the whole submission failed
/// with 503 and was retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_the_aggregator_refuses_is_recorded_and_shipping_moves_on() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("host.journal");
    let attestor = attestor(&journal).await;
    attest(&attestor, 1, 6).await;
    let ids = journal_ids(&journal);
    let db = dir.path().join("agg.db");
    let agg = aggregator(&db, CHAIN).await;
    let mut c = sqlx::sqlite::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&db),
    )
    .await
    .unwrap();
    let trigger = format!(
        "CREATE TRIGGER poison BEFORE INSERT ON receipts WHEN NEW.id = X'{}' \
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        ids[5]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(trigger))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;
    let mut s = shipper(addr, &attestor);
    let report = tokio::time::timeout(Duration::from_secs(60), s.ship_available())
        .await
        .expect("a deterministic rejection is not retried forever")
        .unwrap();
    assert_eq!((report.accepted, report.rejected), (5, 1), "{report:?}");
    assert_eq!(s.cursor().host_seq, 6);
    let rejects = std::fs::read_to_string(dir.path().join("host.journal.rejects")).unwrap();
    let line: serde_json::Value = serde_json::from_str(rejects.trim()).unwrap();
    assert_eq!(line["reason"], "store_refused");
    assert_eq!(line["host_seq"], 6);
    assert_eq!(line["id"], serde_json::to_value(ids[5]).unwrap());
    assert_eq!(agg.tree_size(), 5);
    served.stop().await;
}

/// Unsigned submissions are refused (and retried, never settled); a key that is not the
/// journal's host stops the shipper before it sends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_shipper_is_refused_and_a_wrong_key_stops_shipping() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = attestor(&dir.path().join("host.journal")).await;
    attest(&attestor, 1, 3).await;
    let agg = aggregator(&dir.path().join("agg.db"), CHAIN).await;
    let (listener, addr) = ephemeral().await;
    let served = Served::start(listener, Arc::clone(&agg)).await;
    let live = Arc::clone(&attestor);
    let unsigned = Shipper::open(ship_config(addr, attestor.journal_path()))
        .unwrap()
        .with_durable_end(move || live.journal_stats().durable_len);
    let report = unsigned
        .run(tokio::time::sleep(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!((report.accepted, report.rejected), (0, 0));
    assert!(report.retries > 0, "{report:?}");
    assert_eq!(agg.tree_size(), 0);
    let mut wrong = Shipper::open(ship_config(addr, attestor.journal_path()))
        .unwrap()
        .with_host_key(payer_key());
    match wrong.ship_available().await {
        Err(tally_attestor::ShipError::WrongKey { journal, key }) => {
            assert_eq!(
                (journal, key),
                (host_key().public_key(), payer_key().public_key())
            );
        }
        other => panic!("{other:?}"),
    }
    served.stop().await;
}

/// Polls `done` for up to 20 s.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out");
}
