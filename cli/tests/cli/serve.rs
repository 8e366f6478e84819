//! `tally serve` as a process: configuration from a file with environment overrides,
//! receipts shipped by the attestor's client, JSON logs with request ids, and a SIGTERM
//! that stops the service after sealing what it accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_aggregator::{SqliteStore, Store as _};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit, ShipConfig, Shipper};
use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SigningKey, UsageFacts,
};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
use tally_sandbox::{Sandbox, SandboxConfig};
const CHAIN: &str = "tally-serve-test";
const CONTRACT: &str = "tally1servetest";
const NOW: u64 = 1_700_000_000_000;

fn schedule() -> PriceSchedule {
    PriceSchedule {
        model: Digest::sha256(b"model: serve-test"),
        min_fee: 10,
        tiers: vec![PriceTier {
            from_prompt_tokens: 0,
            prompt_per_mtok: 1_000_000,
            cached_per_mtok: 250_000,
            completion_per_mtok: 4_000_000,
        }],
    }
}

fn payer() -> SigningKey {
    SigningKey::from_seed(&[3; 32])
}

fn host() -> SigningKey {
    SigningKey::from_seed(&[4; 32])
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A config naming the test's host, model and payer; sealing only at shutdown.
fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    tally_attestor::generate_key_file(dir.join("agg.key")).unwrap();
    let schedule_path = dir.join("model.schedule.json");
    std::fs::write(&schedule_path, serde_json::to_vec(&schedule()).unwrap()).unwrap();
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
store = "{db}"
key_file = "{key}"
chain_id = "{CHAIN}"
contract = "{CONTRACT}"
hosts = ["{host}"]
seal_interval_ms = 3600000
reexecute_per_mille = 1000

[[models]]
schedule = "{schedule}"

[escrow]
"{payer}" = "1000000000000"
"#,
        db = dir.join("agg.db").display(),
        key = dir.join("agg.key").display(),
        host = host().public_key(),
        schedule = schedule_path.display(),
        payer = payer().public_key(),
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn print_config_applies_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 1234);
    let out = Command::new(TALLY)
        .args(["serve", "--print-config", "--config"])
        .arg(&cfg)
        .env("TALLY_LISTEN", "0.0.0.0:9999")
        .env("TALLY_SEAL_THRESHOLD", "5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:9999\""), "{text}");
    assert!(text.contains("seal_threshold = 5"), "{text}");
    assert!(text.contains(&format!("chain_id = \"{CHAIN}\"")), "{text}");

    let bad = Command::new(TALLY)
        .args(["serve", "--print-config"])
        .env("TALLY_MAX_RECEIPTS", "lots")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("TALLY_MAX_RECEIPTS"));
}

async fn attest(journal: &Path, n: u64) -> Arc<Attestor> {
    let sandbox = Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap());
    let config = AttestorConfig {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        journal_path: journal.to_path_buf(),
        group_commit: GroupCommit::default(),
        schedules: vec![schedule()],
    };
    let attestor = Attestor::open(config, host(), sandbox).await.unwrap();
    for seq in 1..=n {
        let request_digest = Digest::sha256(&seq.to_be_bytes());
        let auth = Authorization {
            chain_id: CHAIN.into(),
            contract: CONTRACT.into(),
            payer: payer().public_key(),
            host: host().public_key(),
            model: schedule().model,
            seq,
            request_digest,
            max_fee: 1_000_000,
            cumulative_cap: 1_000_000_000,
            expires_at_ms: NOW + 60_000,
        }
        .sign(&payer());
        let facts = UsageFacts {
            model: schedule().model,
            request_digest,
            response_digest: Digest::sha256(b"answer"),
            prompt_tokens: 500 + seq,
            cached_prompt_tokens: 0,
            completion_tokens: 50,
            reasoning_tokens: 0,
            started_at_ms: NOW - 1_000,
            first_token_ms: 100,
            duration_ms: 900,
            finish: FinishStatus::Stop,
        };
        attestor.attest_at(&auth, &facts, NOW).await.unwrap();
    }
    Arc::new(attestor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_shipped_receipts_and_seals_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), port);
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
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("tally serve did not become ready"),
        }
    }

    let attestor = attest(&dir.path().join("host.journal"), 25).await;
    let live = Arc::clone(&attestor);
    let mut shipper = Shipper::open(ShipConfig::new(&base, attestor.journal_path()))
        .unwrap()
        .with_durable_end(move || live.journal_stats().durable_len)
        .with_host_key(host());
    let report = shipper.ship_available().await.unwrap();
    assert_eq!(report.accepted, 25);

    // Not sealed yet (the interval is an hour); the response carries a request id.
    let r = http
        .get(format!("{base}/v1/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(r.headers().contains_key("x-request-id"));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let logs = logs.join().unwrap();
    let json: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let has = |msg: &str| json.iter().any(|v| v["fields"]["message"] == msg);
    assert!(has("listening") && has("stopped"), "{logs:#?}");
    assert!(
        json.iter()
            .any(|v| v["span"]["request_id"].is_string() && v["span"]["path"] == "/v1/receipts"),
        "request logs carry the request id: {logs:#?}"
    );

    // Shutdown sealed everything it had accepted.
    let store = SqliteStore::open(dir.path().join("agg.db")).await.unwrap();
    let checkpoint = store
        .checkpoint(None)
        .await
        .unwrap()
        .expect("sealed at shutdown");
    assert_eq!(checkpoint.size, 25);
    assert!(
        checkpoint
            .note
            .starts_with(&format!("tally/{CHAIN}/{CONTRACT}\n25\n"))
    );
}
