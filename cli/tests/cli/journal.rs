//! A host's journal through the real `tally` binary: `tally verify` reads the journal
//! format, `tally journal check` tells intact, torn and damaged journals apart, and
//! `tally journal repair` rebuilds a damaged one from the aggregator (`tally serve`) the
//! receipts were shipped to.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_attestor::{
    Attestor, AttestorConfig, GroupCommit, Journal, ShipConfig, Shipper, read_journal,
};
use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SignedReceipt, SigningKey,
    UsageFacts,
};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");
use tally_sandbox::{Sandbox, SandboxConfig};
const CHAIN: &str = "tally-journal-test";
const CONTRACT: &str = "tally1journaltest";
const NOW: u64 = 1_700_000_000_000;

fn schedule() -> PriceSchedule {
    PriceSchedule {
        model: Digest::sha256(b"model: journal-test"),
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
    SigningKey::from_seed(&[5; 32])
}

fn host() -> SigningKey {
    SigningKey::from_seed(&[6; 32])
}

/// A journal of `n` real receipts (metered by the pinned guest) in `dir`, with the
/// schedule beside it for `tally verify`.
async fn journal(dir: &Path, n: u64) -> (PathBuf, Vec<SignedReceipt>) {
    let path = dir.join("host.journal");
    std::fs::write(
        dir.join("model.schedule.json"),
        serde_json::to_vec(&schedule()).unwrap(),
    )
    .unwrap();
    let sandbox = Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap());
    let config = AttestorConfig {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        journal_path: path.clone(),
        group_commit: GroupCommit::default(),
        schedules: vec![schedule()],
    };
    let attestor = Attestor::open(config, host(), sandbox).await.unwrap();
    let mut out = Vec::new();
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
        out.push(attestor.attest_at(&auth, &facts, NOW).await.unwrap());
    }
    (path, out)
}

/// Where each record starts (then the file's end).
fn boundaries(receipts: &[SignedReceipt]) -> Vec<u64> {
    let mut at = 8u64;
    let mut out = vec![at];
    for r in receipts {
        at += 8 + r.encode().len() as u64;
        out.push(at);
    }
    out
}

/// Flips one bit inside record `k` (from 1) of the journal at `path`.
fn damage_record(path: &Path, receipts: &[SignedReceipt], k: usize) {
    let b = boundaries(receipts);
    let mut bytes = std::fs::read(path).unwrap();
    bytes[b[k - 1] as usize + 200] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
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

#[tokio::test]
async fn verify_reads_a_journal_and_reports_its_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (path, receipts) = journal(dir.path(), 12).await;
    let p = path.to_str().unwrap();
    let ok = tally(&["verify", p]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("12 receipts"), "{}", text(&ok));

    damage_record(&path, &receipts, 7);
    let bad = tally(&["verify", p]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = text(&bad);
    assert!(out.contains("FAIL journal record at offset"), "{out}");
    assert!(
        out.contains("6 receipts"),
        "the records before the damage are verified: {out}"
    );
}

#[tokio::test]
async fn check_tells_intact_torn_and_damaged_journals_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (path, receipts) = journal(dir.path(), 37).await;
    let p = path.to_str().unwrap();
    let b = boundaries(&receipts);

    let intact = tally(&["journal", "check", p]);
    assert!(intact.status.success(), "{}", text(&intact));
    assert!(
        text(&intact).contains("verdict   intact"),
        "{}",
        text(&intact)
    );

    let torn = dir.path().join("torn.journal");
    std::fs::write(&torn, &std::fs::read(&path).unwrap()[..b[37] as usize - 5]).unwrap();
    let t = tally(&["journal", "check", torn.to_str().unwrap()]);
    assert!(t.status.success(), "{}", text(&t));
    assert!(text(&t).contains("torn tail of"), "{}", text(&t));

    damage_record(&path, &receipts, 20);
    let before = std::fs::read(&path).unwrap();
    let d = tally(&["journal", "check", p]);
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    let out = text(&d);
    assert!(
        out.contains(&format!("record 20 at offset {}", b[19])),
        "{out}"
    );
    assert!(
        out.contains("after it  17 valid records (host_seq 21..=37)"),
        "{out}"
    );
    assert!(out.contains("tally journal repair"), "{out}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "check changes nothing"
    );

    // The last four receipts re-signed as one group commit, its write cut after two
    // complete records: the group is incomplete, nothing of it was returned, opening drops
    // it.
    let mut frontier = tally_protocol::merkle::CompactRange::new();
    for r in &receipts[..33] {
        frontier.append(r.receipt.leaf_hash(), |_, _, _| {});
    }
    let group: Vec<_> = receipts[33..].iter().map(|r| r.receipt.clone()).collect();
    let (_, group) = tally_protocol::sign_group(&host(), &mut frontier, group).unwrap();
    let regrouped = [receipts[..33].to_vec(), group].concat();
    let cut = dir.path().join("cut.journal");
    tally_attestor::write_journal(&cut, &regrouped).unwrap();
    let rb = boundaries(&regrouped);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..rb[35] as usize + 10]).unwrap();
    let c = tally(&["journal", "check", cut.to_str().unwrap()]);
    assert!(c.status.success(), "{}", text(&c));
    let out = text(&c);
    assert!(out.contains("durable   33 receipts"), "{out}");
    assert!(
        out.contains("2 receipt(s) of an incomplete group commit after it are dropped"),
        "{out}"
    );
}

/// A `tally serve` child, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(dir: &Path) -> (Served, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tally_attestor::generate_key_file(dir.join("agg.key")).unwrap();
    let cfg = dir.join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstore = \"{}\"\nkey_file = \"{}\"\nchain_id = \"{CHAIN}\"\ncontract = \"{CONTRACT}\"\nhosts = [\"{}\"]\nseal_interval_ms = 3600000\n\n[[models]]\nschedule = \"{}\"\n\n[escrow]\n\"{}\" = \"1000000000000\"\n",
            dir.join("agg.db").display(),
            dir.join("agg.key").display(),
            host().public_key(),
            dir.join("model.schedule.json").display(),
            payer().public_key(),
        ),
    )
    .unwrap();
    let child = Command::new(TALLY)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "tally serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Served(child), base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_rebuilds_a_damaged_journal_from_the_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    let (path, receipts) = journal(dir.path(), 37).await;
    let (_served, base) = serve(dir.path()).await;
    // Shipped up to host_seq 30; 31..=37 are only in the journal.
    let shipped = dir.path().join("shipped.journal");
    tally_attestor::write_journal(&shipped, &receipts[..30]).unwrap();
    let report = Shipper::open(ShipConfig::new(&base, &shipped))
        .unwrap()
        .with_host_key(host())
        .ship_available()
        .await
        .unwrap();
    assert_eq!(report.accepted, 30);

    damage_record(&path, &receipts, 20);
    let p = path.to_str().unwrap();
    let out = tally(&["journal", "repair", p, "--from-aggregator", &base]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("37 receipts (host_seq 1..=37): 19 intact, 11 from the aggregator, 7 from the journal after the damage"),
        "{t}"
    );
    let repaired: Vec<_> = read_journal(&path).unwrap().map(Result::unwrap).collect();
    assert_eq!(repaired, receipts);
    let (_j, rec) = Journal::open(
        &path,
        GroupCommit::default(),
        tally_attestor::JournalSigner {
            key: host(),
            chain_id: CHAIN.into(),
            contract: CONTRACT.into(),
        },
    )
    .unwrap();
    assert_eq!(rec.count, 37);
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("host.journal.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_refuses_when_a_receipt_is_lost_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (path, receipts) = journal(dir.path(), 10).await;
    let (_served, base) = serve(dir.path()).await;
    // Nothing shipped: the damaged record exists nowhere else.
    damage_record(&path, &receipts, 4);
    let before = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();
    let out = tally(&["journal", "repair", p, "--from-aggregator", &base]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot recover host_seq 4"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
}
