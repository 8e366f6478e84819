//! `tally demo` and `tally audit` as a user runs them: a small demo on the devnet kept on
//! disk, its conservation check, the audit's verdict and demand-quality report, and the
//! audit failing, with the right reason, once the kept data is tampered with.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::Path;
use std::process::{Command, Output};

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

/// A copy of the kept data (the SQLite file with its WAL), to tamper with.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Runs one SQL statement on the kept log.
fn sql(dir: &Path, statement: &'static str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts =
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("aggregator.sqlite"));
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let done = sqlx::query(statement).execute(&pool).await.unwrap();
        assert_eq!(done.rows_affected(), 1, "{statement}");
        pool.close().await;
    });
}

fn audit(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "--data", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    tally(&args)
}

#[test]
fn demo_settles_catches_the_fraud_conserves_every_unit_and_its_audit_passes() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = tally(&[
        "demo",
        "--calls",
        "600",
        "--payers",
        "12",
        "--hosts",
        "2",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("OK: debited = receipts = batches = revenue paid"),
        "{t}"
    );
    assert!(t.contains("batch voided, host 1 slashed"), "{t}");
    assert!(t.contains("protocol fee sink"), "{t}");
    // The demo audits its own aggregator's API against the chain (checkpoints, proofs,
    // and every leaf fetched, re-executed and hashed into the on-chain roots).
    assert!(
        t.contains("4 checkpoints fetched and verified, 3 consistency proofs"),
        "{t}"
    );
    assert!(t.contains("receipts   601 fetched and verified"), "{t}");
    // The chain view read back from the chain through a REST node, as `tally audit
    // --chain-rest` reads a real deployment, is the one the demo wrote.
    assert!(
        t.contains("chain view read back through a REST node")
            && t.contains("the same batches, registries, deposits, escrows, payouts and transfers"),
        "{t}"
    );
    assert!(
        t.contains("caught     1 × metered_mismatch in a batch the chain voided"),
        "{t}"
    );
    for f in [
        "aggregator.sqlite",
        "chain.json",
        "host-0.journal",
        "host-1.journal",
    ] {
        assert!(keep.join(f).exists(), "{f} not kept");
    }
    // Re-running into the same directory is refused rather than mixing two runs.
    let again = tally(&["demo", "--calls", "100", "--keep", keep.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));

    // The audit passes, reports the fraud as caught, and writes the report.
    let report = dir.path().join("report");
    let out = audit(&keep, &["--report", report.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("verdict: PASS"), "{t}");
    assert!(
        t.contains("1 × metered_mismatch in a batch the chain voided"),
        "{t}"
    );
    assert!(t.contains("601 verified"), "{t}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let models = json["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);
    for m in models {
        let want = if m["name"] == "trend-signals-1b" {
            "red"
        } else {
            "green"
        };
        assert_eq!(m["verdict"], want, "{}: {}", m["name"], m["reasons"]);
    }
    // The wash payer's escrow was funded through an intermediary (`wash-relay`): the
    // funding trace follows the chain view's bank transfer back to the model's contributor,
    // one hop away, for all of it.
    let wash = models
        .iter()
        .find(|m| m["name"] == "trend-signals-1b")
        .unwrap();
    let traced = wash["payers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["funding"]["insider"].as_f64().unwrap_or(0.0) > 0.99)
        .unwrap_or_else(|| panic!("no payer traced to an insider: {}", wash["payers"]));
    assert_eq!(traced["funding"]["insiders"][0]["hops"], 1, "{traced}");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("trend-signals-1b"));

    // The same audit through the store interface, as of any deployment (read-only).
    let db = format!("sqlite:{}", keep.join("aggregator.sqlite").display());
    let chain = keep.join("chain.json");
    let out = tally(&["audit", "--store", &db, "--chain", chain.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("verdict: PASS") && t.contains("601 verified"),
        "{t}"
    );
    let out = tally(&[
        "audit",
        "--store",
        "mysql://x",
        "--chain",
        chain.to_str().unwrap(),
    ]);
    // A usage error (exit 2), told apart from a failed audit (exit 1).
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--store must be sqlite:PATH or postgres://"));

    // A receipt of a finalized batch altered in the log (the last byte of its bundle, a
    // hash of its host-log proof): it is no longer included under its host checkpoint,
    // and the log no longer hashes to the chain's roots.
    let bad = dir.path().join("tampered-receipt");
    copy_dir(&keep, &bad);
    sql(
        &bad,
        "UPDATE receipts SET bytes = substr(bytes, 1, length(bytes) - 1) || x'00' WHERE leaf = 7",
    );
    let out = audit(&bad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("verdict: FAIL"), "{t}");
    assert!(t.contains("receipt:host_inclusion"), "{t}");
    assert!(t.contains("onchain_root"), "{t}");
    assert!(t.contains("inclusion_proof"), "{t}");

    // A checkpoint whose root was swapped: its signed note no longer matches it.
    let bad = dir.path().join("tampered-checkpoint");
    copy_dir(&keep, &bad);
    sql(
        &bad,
        "UPDATE checkpoints SET root = zeroblob(32) WHERE size = (SELECT MIN(size) FROM checkpoints)",
    );
    let out = audit(&bad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("checkpoint_note"), "{t}");

    // A chain view claiming one unit more was paid out than the receipts back.
    let bad = dir.path().join("tampered-payouts");
    copy_dir(&keep, &bad);
    let mut view: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bad.join("chain.json")).unwrap()).unwrap();
    let amount = view["payouts"][0]["amount"].as_u64().unwrap();
    view["payouts"][0]["amount"] = (amount + 1).into();
    std::fs::write(bad.join("chain.json"), view.to_string()).unwrap();
    let out = audit(&bad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("payouts"), "{t}");
}

/// A week with more channels than one settlement transaction carries is settled as several
/// batches of one tree: the demo conserves every unit and both audits (online against the
/// aggregator, offline on the kept data) reconcile each tree's batches with its receipts.
#[test]
fn a_week_too_large_for_one_transaction_settles_in_several_batches_and_audits() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = tally(&[
        "demo",
        "--calls",
        "4000",
        "--payers",
        "900",
        "--hosts",
        "2",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("OK: debited = receipts = batches = revenue paid"),
        "{t}"
    );
    // Batches of one week share its tree size: some size appears on several rows.
    let sizes: Vec<&str> = t
        .lines()
        .filter(|l| l.ends_with("finalized"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let weeks: std::collections::BTreeSet<&str> = sizes.iter().copied().collect();
    assert_eq!(weeks.len(), 3, "{t}");
    assert!(sizes.len() > weeks.len(), "no week was split: {t}");
    assert!(t.contains("verdict: PASS"), "{t}");
    let out = audit(&keep, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("verdict: PASS"), "{t}");
}
