//! The `tally` command as a user runs it: real files, real exit codes, clear messages.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SignedReceipt, SigningKey,
    UsageFacts,
};

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .expect("tally runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn schedule() -> PriceSchedule {
    PriceSchedule {
        model: Digest::sha256(b"cli test model"),
        min_fee: 5,
        tiers: vec![PriceTier {
            from_prompt_tokens: 0,
            prompt_per_mtok: 1_000_000,
            cached_per_mtok: 100_000,
            completion_per_mtok: 3_000_000,
        }],
    }
}

/// Writes a schedule, an authorisation signed by a payer for `host` and facts; returns
/// the three paths.
fn call_files(dir: &Path, host: &tally_protocol::PublicKey, seq: u64) -> [std::path::PathBuf; 3] {
    let s = schedule();
    let payer = SigningKey::from_seed(&[9; 32]);
    let request = Digest::sha256(format!("request {seq}").as_bytes());
    let auth = Authorization {
        chain_id: "tally-devnet-1".into(),
        contract: "cosmwasm1contract".into(),
        payer: payer.public_key(),
        host: *host,
        model: s.model,
        seq,
        request_digest: request,
        max_fee: 1_000_000,
        cumulative_cap: 10_000_000,
        expires_at_ms: u64::MAX / 2,
    }
    .sign(&payer);
    let facts = UsageFacts {
        model: s.model,
        request_digest: request,
        response_digest: Digest::sha256(b"answer"),
        prompt_tokens: 1000,
        cached_prompt_tokens: 200,
        completion_tokens: 400,
        reasoning_tokens: 0,
        started_at_ms: 1,
        first_token_ms: 20,
        duration_ms: 900,
        finish: FinishStatus::Stop,
    };
    let paths = [
        dir.join("model.schedule.json"),
        dir.join(format!("auth-{seq}.json")),
        dir.join(format!("facts-{seq}.json")),
    ];
    write_json(&paths[0], &s);
    write_json(&paths[1], &auth);
    write_json(&paths[2], &facts);
    paths
}

#[test]
fn keys_new_writes_a_private_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host.key");
    let k = key.to_str().unwrap();
    let out = tally(&["keys", "new", k]);
    assert!(out.status.success(), "{}", text(&out));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let show = tally(&["keys", "show", k]);
    assert_eq!(String::from_utf8(show.stdout).unwrap().trim(), public);
    let again = tally(&["keys", "new", k]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("error:"), "{}", text(&again));
}

#[test]
fn attest_then_verify_then_catch_a_repriced_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_path = d.join("host.key");
    assert!(
        tally(&["keys", "new", key_path.to_str().unwrap()])
            .status
            .success()
    );
    let host = tally_attestor::load_key_file(&key_path).unwrap();
    let journal = d.join("host.journal");
    let mut lines = String::new();
    for seq in 1..=3 {
        let [schedule, auth, facts] = call_files(d, &host.public_key(), seq);
        let out = tally(&[
            "attest",
            "--auth",
            auth.to_str().unwrap(),
            "--facts",
            facts.to_str().unwrap(),
            "--schedule",
            schedule.to_str().unwrap(),
            "--key",
            key_path.to_str().unwrap(),
            "--journal",
            journal.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let receipt: SignedReceipt = serde_json::from_slice(&out.stdout).unwrap();
        receipt.verify().unwrap();
        assert_eq!(receipt.receipt.host_seq, seq);
        // 800 uncached × 1 + 200 cached × 0.1 + 400 completion × 3 (prices per million).
        assert_eq!(receipt.receipt.metered.fee, 2020);
        lines.push_str(&serde_json::to_string(&receipt).unwrap());
        lines.push('\n');
    }
    let [schedule, auth, facts] = call_files(d, &host.public_key(), 2);
    let replay = tally(&[
        "attest",
        "--auth",
        auth.to_str().unwrap(),
        "--facts",
        facts.to_str().unwrap(),
        "--schedule",
        schedule.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ]);
    assert_eq!(replay.status.code(), Some(2));
    assert!(text(&replay).contains("replayed"), "{}", text(&replay));

    let receipts = d.join("receipts.jsonl");
    std::fs::write(&receipts, &lines).unwrap();
    let ok = tally(&["verify", receipts.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("3 receipts"), "{}", text(&ok));

    // The host re-prices its second receipt and signs its log again from there: only
    // re-execution tells.
    let mut forged: Vec<SignedReceipt> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut r = forged[1].receipt.clone();
    r.metered.fee += 1;
    r.channel_total += 1;
    let mut third = forged[2].receipt.clone();
    if third.channel() == r.channel() {
        third.channel_total += 1;
    }
    let mut log = tally_protocol::merkle::CompactRange::new();
    log.append(forged[0].receipt.leaf_hash(), |_, _, _| {});
    let resigned = tally_protocol::sign_group(&host, &mut log, vec![r, third])
        .unwrap()
        .1;
    forged.splice(1.., resigned);
    forged[1].verify().unwrap();
    let bad: String = forged
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&receipts, bad).unwrap();
    let caught = tally(&["verify", receipts.to_str().unwrap()]);
    assert_eq!(caught.status.code(), Some(1), "{}", text(&caught));
    assert!(
        text(&caught).contains("metered_mismatch"),
        "{}",
        text(&caught)
    );
}

#[test]
fn bad_input_files_give_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = tally(&[
        "verify",
        d.join("nope.jsonl").to_str().unwrap(),
        "--schedule",
        "x.json",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("x.json"), "{}", text(&missing));

    let garbage = d.join("auth.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let key = d.join("k.key");
    assert!(
        tally(&["keys", "new", key.to_str().unwrap()])
            .status
            .success()
    );
    let out = tally(&[
        "attest",
        "--auth",
        garbage.to_str().unwrap(),
        "--facts",
        garbage.to_str().unwrap(),
        "--schedule",
        garbage.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--journal",
        d.join("j").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("auth.json"), "{}", text(&out));
    assert!(!d.join("j").exists(), "nothing written for bad input");

    let receipts = d.join("r.jsonl");
    std::fs::write(&receipts, "{\"receipt\": 1}\n").unwrap();
    std::fs::write(
        d.join("m.schedule.json"),
        serde_json::to_string(&schedule()).unwrap(),
    )
    .unwrap();
    let out = tally(&["verify", receipts.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("line 1"), "{}", text(&out));
}
