//! The aggregator end to end through its HTTP router, over each store (a real SQLite file
//! and a real PostgreSQL database: every test runs once per store, in the modules `sqlite`
//! and `pg`): receipts signed with fixed-seed keys, fees metered by `tally_guest::meter`,
//! re-executed in a real wasmtime `Sandbox` over the committed guest.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tally_aggregator::{Aggregator, Outcome, Reason, Store, router};
use tally_protocol::Checkpoint;
use tally_protocol::merkle::{ConsistencyProof, InclusionProof, leaf_hash};
use tally_protocol::{
    Digest, PublicKey, ReceiptId, SUBMISSION_HEADER, SignedBatchHeader, SignedReceipt, SigningKey,
    Submission,
};
use tower::ServiceExt;

use crate::fixtures;

use fixtures::*;

// ---------------------------------------------------------------------------------------
// HTTP helpers.

struct Env<B: Backend> {
    agg: Arc<Aggregator<B::Store>>,
    app: Router,
    world: World,
    place: Place,
}

async fn env<B: Backend>() -> Env<B> {
    env_with::<B>(|_| {}).await
}

/// An environment whose configuration `tweak` adjusts first.
async fn env_with<B: Backend>(tweak: impl FnOnce(&mut tally_aggregator::Config)) -> Env<B> {
    let world = World::new();
    let place = B::place().await;
    let mut cfg = config(&world);
    tweak(&mut cfg);
    let agg = open_with::<B>(&place.locator(), &world, cfg).await;
    Env {
        app: router(Arc::clone(&agg)),
        agg,
        world,
        place,
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, b) = get(app, uri).await;
    (s, serde_json::from_slice(&b).unwrap())
}

/// The `x-tally-submission` header value of `body` submitted by `host` now.
fn submission_header(host: &SigningKey, body: &[u8]) -> String {
    let signed = Submission::of_body(host.public_key(), now_ms(), body).sign(host);
    hex::encode(signed.encode())
}

use tally_protocol::now_ms;

/// POSTs `body` to `/v1/receipts`, signed by `host` (or with no signature).
async fn post_as(
    app: &Router,
    host: Option<&SigningKey>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::post("/v1/receipts").header(header::CONTENT_TYPE, content_type);
    if let Some(host) = host {
        req = req.header(SUBMISSION_HEADER, submission_header(host, &body));
    }
    let (s, b) = send(app, req.body(Body::from(body)).unwrap()).await;
    (s, serde_json::from_slice(&b).unwrap())
}

/// POSTs `body` signed by host 0 (the key of the `World`'s first host).
async fn post(app: &Router, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    post_as(app, Some(&World::new().hosts[0]), content_type, body).await
}

/// Submits `receipts` as their hosts would: each run of one host's receipts in a
/// submission signed by that host, in order; the results of all runs, in order.
async fn submit(app: &Router, receipts: &[SignedReceipt]) -> Vec<String> {
    let world = World::new();
    let mut out = Vec::new();
    for run in receipts.chunk_by(|a, b| a.receipt.host() == b.receipt.host()) {
        let host = world
            .hosts
            .iter()
            .find(|k| k.public_key() == *run[0].receipt.host())
            .unwrap();
        let (s, v) = post_as(
            app,
            Some(host),
            "application/json",
            serde_json::to_vec(run).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        out.extend(statuses(&v));
    }
    out
}

fn statuses(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["reason"].as_str() {
            Some(reason) => format!("{}:{reason}", r["status"].as_str().unwrap()),
            None => r["status"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn binary(receipts: &[SignedReceipt]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in receipts {
        let e = r.encode();
        out.extend_from_slice(&(e.len() as u32).to_be_bytes());
        out.extend_from_slice(&e);
    }
    out
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------
// Ingest.

async fn accepts_then_reports_duplicates_idempotently<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..3).map(|i| e.world.call(i % 2, 0, i % 2)).collect();
    assert_eq!(
        submit(&e.app, &rs).await,
        strs(&["accepted", "accepted", "accepted"])
    );
    let (_, v) = post(&e.app, "application/octet-stream", binary(&rs)).await;
    assert_eq!(statuses(&v), strs(&["duplicate", "duplicate", "duplicate"]));
    assert_eq!(v["results"][2]["leaf_index"], 2);
    assert_eq!(e.agg.tree_size(), 3);
    assert_eq!(e.agg.root().await, root_of(&rs));
    let (s, v) = get_json(&e.app, &format!("/v1/receipts/{}", rs[1].id())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["leaf_index"], 1);
    let back: SignedReceipt = serde_json::from_value(v["receipt"].clone()).unwrap();
    assert_eq!(back, rs[1]);
    let (s, v) = get_json(
        &e.app,
        &format!("/v1/hosts/{}", e.world.hosts[0].public_key()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["last_seq"], 3);
    let channel = rs[2].receipt.channel();
    let (s, v) = get_json(&e.app, &format!("/v1/channels/{channel}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], rs[2].receipt.channel_total.to_string());
    let (_, metrics) = get(&e.app, "/metrics").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("tally_receipts_accepted_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_receipts_duplicate_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("tally_log_size 3"), "{metrics}");
}

async fn bad_signatures_are_rejected_and_change_nothing<B: Backend>() {
    let mut e = env::<B>().await;
    let mut bad_host = e.world.call(0, 0, 0);
    bad_host.checkpoint.signature.0[5] ^= 1;
    let mut r = e.world.next(1, 1, 0);
    r.authorization.signature.0[7] ^= 1;
    let bad_payer = e.world.host_sign(r);
    assert_eq!(
        submit(&e.app, &[bad_host, bad_payer]).await,
        strs(&["rejected:host_signature", "rejected:payer_signature"])
    );
    assert_eq!(e.agg.tree_size(), 0);
    let (_, v) = get_json(
        &e.app,
        &format!("/v1/hosts/{}", e.world.hosts[0].public_key()),
    )
    .await;
    assert_eq!(v["last_seq"], 0);
}

async fn unknown_host_wrong_chain_and_unknown_guest_are_rejected<B: Backend>() {
    let mut e = env::<B>().await;
    // Host 2 is not registered: its submission is refused whole, unread.
    let unknown = e.world.call(0, 2, 0);
    let (s, v) = post_as(
        &e.app,
        Some(&e.world.hosts[2]),
        "application/json",
        serde_json::to_vec(std::slice::from_ref(&unknown)).unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown_submitter"))
    );
    // Handed over in process, the receipt itself is rejected.
    let out = e.agg.submit(vec![Ok(unknown)]).await.unwrap();
    assert!(
        matches!(
            out[0],
            Outcome::Rejected {
                reason: Reason::UnknownHost,
                ..
            }
        ),
        "{out:?}"
    );
    let mut r = e.world.next(0, 0, 0);
    r.authorization.authorization.chain_id = "other-chain".into();
    e.world.resign_payer(&mut r);
    let wrong_chain = e.world.host_sign(r);
    let mut r = e.world.next(0, 0, 0);
    r.guest = Digest::sha256(b"another guest");
    let wrong_guest = e.world.host_sign(r);
    assert_eq!(
        submit(&e.app, &[wrong_chain, wrong_guest]).await,
        strs(&["rejected:wrong_chain", "rejected:guest_not_allowed"])
    );
    assert_eq!(e.agg.tree_size(), 0);
}

async fn fork_is_rejected_and_recorded_as_evidence<B: Backend>() {
    let mut e = env::<B>().await;
    let r1 = e.world.call(0, 0, 0);
    let r2 = e.world.call(0, 0, 0);
    assert_eq!(
        submit(&e.app, &[r1, r2.clone()]).await,
        strs(&["accepted"; 2])
    );
    // The same chain position, different content, signed by the host: a fork.
    let mut twin = r2.receipt.clone();
    twin.facts.duration_ms += 1;
    let twin = e.world.host_sign(twin);
    assert_eq!(
        submit(&e.app, std::slice::from_ref(&twin)).await,
        strs(&["rejected:host_equivocation"])
    );
    let evidence: Vec<_> = e
        .agg
        .store()
        .evidence(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, ev)| ev)
        .collect();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].kind, "host_equivocation");
    assert_eq!(evidence[0].host_seq, 2);
    assert_eq!(evidence[0].existing, Some(r2.id()));
    assert_eq!(evidence[0].bytes, twin.encode());
    assert_eq!(e.agg.tree_size(), 2);
    // Served to anyone who wants to take it further.
    let (s, v) = get_json(&e.app, "/v1/evidence").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["evidence"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["next"], Value::Null);
    assert_eq!(v["evidence"][0]["kind"].as_str(), Some("host_equivocation"));
    assert_eq!(
        v["evidence"][0]["existing"].as_str(),
        Some(r2.id().to_string().as_str())
    );
    let bytes = STANDARD
        .decode(v["evidence"][0]["encoding"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, twin.encode());
    // With the bundle it contradicts: a proof of equivocation the contract takes.
    let other = STANDARD
        .decode(v["evidence"][0]["other_encoding"].as_str().unwrap())
        .unwrap();
    assert_eq!(other, r2.encode());
    let other = SignedReceipt::decode(&other).unwrap();
    assert!(twin.contradiction(&other).is_ok());
}

async fn out_of_order_is_held_back_then_released_when_the_gap_fills<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..4).map(|_| e.world.call(0, 0, 0)).collect();
    assert_eq!(submit(&e.app, &[rs[3].clone()]).await, strs(&["pending"]));
    assert_eq!(submit(&e.app, &[rs[0].clone()]).await, strs(&["accepted"]));
    assert_eq!(e.agg.store().pending_count().await.unwrap(), 1);
    // Out of order within one submission: held, then released by the later receipt.
    assert_eq!(
        submit(&e.app, &[rs[2].clone(), rs[1].clone()]).await,
        strs(&["accepted", "accepted"])
    );
    assert_eq!(e.agg.store().pending_count().await.unwrap(), 0);
    assert_eq!(e.agg.tree_size(), 4);
    assert_eq!(e.agg.root().await, root_of(&rs));
    assert_eq!(submit(&e.app, &[rs[3].clone()]).await, strs(&["duplicate"]));
    let (_, metrics) = get(&e.app, "/metrics").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("tally_receipts_released_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tally_pending_receipts 0"), "{metrics}");
}

async fn held_back_receipts_expire_at_their_deadline<B: Backend>() {
    let mut e = env::<B>().await;
    let _r1 = e.world.call(0, 0, 0);
    let r2 = e.world.call(0, 0, 0);
    assert_eq!(submit(&e.app, &[r2]).await, strs(&["pending"]));
    assert_eq!(e.agg.expire_pending(0).await.unwrap(), 0);
    let far = {
        let mut r = e.world.next(0, 0, 0);
        r.host_seq += 20_000;
        e.world.host_sign(r)
    };
    assert_eq!(
        submit(&e.app, &[far]).await,
        strs(&["rejected:gap_too_large"])
    );
    let later = 4_000_000_000_000;
    assert_eq!(e.agg.expire_pending(later).await.unwrap(), 1);
    assert_eq!(e.agg.store().pending_count().await.unwrap(), 0);
}

async fn replayed_channel_seq_wrong_total_and_repricing_are_rejected<B: Backend>() {
    let mut e = env::<B>().await;
    let r1 = e.world.call(0, 0, 0);
    assert_eq!(submit(&e.app, &[r1]).await, strs(&["accepted"]));

    // Channel seq 1 again under host_seq 2.
    let mut replay = e.world.next(0, 0, 0);
    replay.authorization.authorization.seq = 1;
    e.world.resign_payer(&mut replay);
    let replay = e.world.host_sign(replay);
    assert_eq!(
        submit(&e.app, &[replay]).await,
        strs(&["rejected:channel_replay"])
    );

    let mut wrong_total = e.world.next(0, 0, 0);
    wrong_total.channel_total += 1;
    let wrong_total = e.world.host_sign(wrong_total);
    assert_eq!(
        submit(&e.app, &[wrong_total]).await,
        strs(&["rejected:channel_total_mismatch"])
    );

    // Fee and total raised together: consistent state, caught only by re-execution.
    let mut repriced = e.world.next(0, 0, 0);
    repriced.metered.fee += 1;
    repriced.channel_total += 1;
    let repriced = e.world.host_sign(repriced);
    assert_eq!(
        submit(&e.app, &[repriced]).await,
        strs(&["rejected:fee_mismatch"])
    );
    assert_eq!(e.agg.tree_size(), 1);
}

async fn escrow_must_cover_the_payers_totals<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..40).map(|_| e.world.call(POOR_PAYER, 1, 1)).collect();
    let out = submit(&e.app, &rs).await;
    let first_refused = out
        .iter()
        .position(|s| s == "rejected:insufficient_escrow")
        .expect("the poor payer runs out");
    assert!(first_refused > 0);
    assert!(out[..first_refused].iter().all(|s| s == "accepted"));
    let debited: u128 = rs[first_refused - 1].receipt.channel_total;
    assert!(debited <= 10_000);
}

async fn oversize_and_malformed_bodies_are_refused<B: Backend>() {
    let mut e = env::<B>().await;
    let (s, v) = post(&e.app, "application/json", vec![b' '; 300 << 10]).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );

    let r = e.world.call(0, 0, 0);
    let many = vec![r.clone(); 101];
    let (s, v) = post(&e.app, "application/octet-stream", binary(&many)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_many_receipts"))
    );

    let (s, v) = post(
        &e.app,
        "application/json",
        b"{\"not\":\"an array\"}".to_vec(),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );
    let mut cut = binary(std::slice::from_ref(&r));
    cut.truncate(cut.len() - 1);
    let (s, v) = post(&e.app, "application/octet-stream", cut).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );

    // A well-framed record that is not a receipt is rejected on its own.
    let mut body = binary(std::slice::from_ref(&r));
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(b"abc");
    let (s, v) = post(&e.app, "application/octet-stream", body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        statuses(&v),
        strs(&["accepted", "rejected:malformed_receipt"])
    );
    let (s, v) = post(&e.app, "application/json", b"[{\"receipt\":1}]".to_vec()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(statuses(&v), strs(&["rejected:malformed_receipt"]));

    let (s, v) = get_json(&e.app, "/v1/receipts/not-hex").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
    let (s, v) = get_json(&e.app, &format!("/v1/receipts/{}", Digest::ZERO)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("receipt_not_found"))
    );
    let (s, v) = get_json(&e.app, "/v1/checkpoint").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("checkpoint_not_found"))
    );
}

async fn concurrent_submissions_build_one_consistent_log<B: Backend>() {
    let mut e = env::<B>().await;
    let a: Vec<_> = (0..30).map(|i| e.world.call(0, 0, i % 2)).collect();
    let b: Vec<_> = (0..30).map(|i| e.world.call(1, 1, i % 2)).collect();
    let tasks = [a.clone(), b.clone()].map(|rs| {
        let app = e.app.clone();
        tokio::spawn(async move {
            for chunk in rs.chunks(3) {
                assert_eq!(submit(&app, chunk).await, strs(&["accepted"; 3]));
            }
        })
    });
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(e.agg.tree_size(), 60);
    let mut by_leaf = vec![None; 60];
    for r in a.iter().chain(&b) {
        let stored = e.agg.receipt(&r.id()).await.unwrap();
        assert!(by_leaf[stored.leaf as usize].replace(r.clone()).is_none());
    }
    let ordered: Vec<_> = by_leaf.into_iter().map(Option::unwrap).collect();
    assert_eq!(e.agg.root().await, root_of(&ordered));
    // Eight clients resending everything at once, in differently sized submissions that
    // the writer commits in shared groups: every answer is `duplicate`, nothing moves.
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let app = e.app.clone();
            let rs = ordered.clone();
            tokio::spawn(async move {
                for chunk in rs.chunks(3 + k) {
                    let got = submit(&app, chunk).await;
                    assert!(got.iter().all(|s| s == "duplicate"), "{got:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(e.agg.tree_size(), 60);
    assert_eq!(e.agg.root().await, root_of(&ordered));
}

// ---------------------------------------------------------------------------------------
// Sealing and proofs.

fn digests(v: &Value) -> Vec<Digest> {
    serde_json::from_value(v.clone()).unwrap()
}

async fn checkpoint_root(app: &Router, uri: &str) -> (u64, Digest) {
    let (s, note) = get(app, uri).await;
    assert_eq!(s, StatusCode::OK);
    let note = String::from_utf8(note).unwrap();
    let body = Checkpoint::verify_note(&note, ORIGIN, &aggregator_key().public_key()).unwrap();
    assert_eq!(body.origin, ORIGIN);
    (body.size, body.root)
}

async fn sealed_checkpoints_batches_and_proofs_verify<B: Backend>() {
    let mut e = env::<B>().await;
    let first: Vec<_> = (0..7).map(|i| e.world.call(i % 2, i % 2, 0)).collect();
    submit(&e.app, &first).await;
    // Accepted but not yet sealed: no checkpoint to prove against; an unknown id is
    // unknown whether or not anything is sealed.
    let (s, v) = get_json(&e.app, &format!("/v1/receipts/{}/proof", first[0].id())).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("checkpoint_not_found"))
    );
    let unknown = format!("/v1/receipts/{}/proof", Digest::ZERO);
    let (s, v) = get_json(&e.app, &unknown).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("receipt_not_found"))
    );
    let b1 = e.agg.seal().await.unwrap().unwrap();
    assert!(e.agg.seal().await.unwrap().is_none(), "nothing new to seal");
    let second: Vec<_> = (0..5).map(|i| e.world.call(0, i % 2, 1)).collect();
    submit(&e.app, &second).await;
    let b2 = e.agg.seal().await.unwrap().unwrap();
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();

    let (size, root) = checkpoint_root(&e.app, "/v1/checkpoint").await;
    assert_eq!((size, root), (12, root_of(&all)));
    let (s, v) = get_json(&e.app, &unknown).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("receipt_not_found"))
    );
    let (size7, root7) = checkpoint_root(&e.app, "/v1/checkpoints/7").await;
    assert_eq!((size7, root7), (7, root_of(&first)));

    for (i, r) in all.iter().enumerate() {
        let (s, v) = get_json(&e.app, &format!("/v1/receipts/{}/proof", r.id())).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let proof = InclusionProof {
            leaf_index: v["leaf_index"].as_u64().unwrap(),
            tree_size: v["tree_size"].as_u64().unwrap(),
            hashes: digests(&v["hashes"]),
        };
        assert_eq!(proof.leaf_index, i as u64);
        proof.verify(&leaf_hash(&r.encode()), &root).unwrap();
        if i < 7 {
            let (_, v) = get_json(&e.app, &format!("/v1/receipts/{}/proof?size=7", r.id())).await;
            let proof = InclusionProof {
                leaf_index: i as u64,
                tree_size: 7,
                hashes: digests(&v["hashes"]),
            };
            proof.verify(&leaf_hash(&r.encode()), &root7).unwrap();
        } else {
            let (s, v) = get_json(&e.app, &format!("/v1/receipts/{}/proof?size=7", r.id())).await;
            assert_eq!(
                (s, v["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("not_in_tree"))
            );
        }
    }
    let (s, v) = get_json(&e.app, "/v1/consistency?from=7&to=12").await;
    assert_eq!(s, StatusCode::OK);
    let proof = ConsistencyProof {
        size1: 7,
        size2: 12,
        hashes: digests(&v["hashes"]),
    };
    proof.verify(&root7, &root).unwrap();
    let (s, v) = get_json(&e.app, "/v1/consistency?from=7&to=13").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("size_beyond_log"))
    );

    // The log's entries, in leaf order, are exactly the accepted receipts' encodings.
    let (s, v) = get_json(&e.app, "/v1/leaves?start=0&end=12").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let leaves = v["leaves"].as_array().unwrap();
    assert_eq!(leaves.len(), all.len());
    for (i, (l, r)) in leaves.iter().zip(&all).enumerate() {
        assert_eq!(l["leaf_index"].as_u64(), Some(i as u64));
        let bytes = STANDARD.decode(l["encoding"].as_str().unwrap()).unwrap();
        assert_eq!(bytes, r.encode());
    }
    for (q, code) in [
        ("start=0&end=13", "size_beyond_log"),
        ("start=5&end=5", "bad_range"),
        ("start=0&end=1001", "bad_range"),
        ("start=x&end=1", "invalid_parameter"),
    ] {
        let (s, v) = get_json(&e.app, &format!("/v1/leaves?{q}")).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{q}"
        );
    }

    let (s, v) = get_json(&e.app, "/v1/batches/2").await;
    assert_eq!(s, StatusCode::OK);
    let h: SignedBatchHeader = serde_json::from_value(v["signed_header"].clone()).unwrap();
    assert_eq!(h, b2);
    h.verify().unwrap();
    assert_eq!(h.header.prev_header, b1.header.hash());
    assert_eq!((h.header.tree_size, h.header.root), (12, root));
    // Debits: each channel's growth since batch 1; together, batch 2's fees.
    let fees: u128 = second.iter().map(|r| r.receipt.metered.fee).sum();
    assert_eq!(h.header.total, fees);
    let fees1: u128 = first.iter().map(|r| r.receipt.metered.fee).sum();
    assert_eq!(b1.header.total, fees1);
    assert_eq!(b1.header.debits.len(), 2);
    let (s, _) = get_json(&e.app, "/v1/batches/3").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn reopening_the_file_restores_the_log_and_continues<B: Backend>() {
    let mut e = env::<B>().await;
    let first: Vec<_> = (0..11).map(|i| e.world.call(i % 3, i % 2, i % 2)).collect();
    submit(&e.app, &first).await;
    e.agg.seal().await.unwrap();
    let root = e.agg.root().await;
    let pending = e.world.call(0, 0, 0);
    let filler = {
        // Hold one back across the restart: skip a host-0 receipt.
        let r = e.world.call(0, 0, 0);
        submit(&e.app, std::slice::from_ref(&r)).await;
        r
    };
    let Env {
        agg,
        app,
        world,
        place,
        ..
    } = e;
    drop(app);
    B::close(agg.store()).await;
    drop(agg);

    let agg = open_with::<B>(&place.locator(), &world, config(&world)).await;
    let app = router(Arc::clone(&agg));
    assert_eq!(agg.tree_size(), 11);
    assert_eq!(agg.root().await, root);
    let (size, croot) = checkpoint_root(&app, "/v1/checkpoint").await;
    assert_eq!((size, croot), (11, root));
    assert_eq!(agg.store().pending_count().await.unwrap(), 1);
    assert_eq!(
        submit(&app, std::slice::from_ref(&pending)).await,
        strs(&["accepted"])
    );
    let all: Vec<_> = first.iter().cloned().chain([pending, filler]).collect();
    assert_eq!(agg.tree_size(), 13);
    assert_eq!(agg.root().await, root_of(&all));
    assert_eq!(submit(&app, &all).await, strs(&["duplicate"; 13]));
}

// ---------------------------------------------------------------------------------------
// The service's surface.

async fn openapi_document_lists_every_route<B: Backend>() {
    let e = env::<B>().await;
    let (s, body) = get(&e.app, "/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("/v1/receipts", "post"),
        ("/v1/receipts/{id}", "get"),
        ("/v1/receipts/{id}/proof", "get"),
        ("/v1/checkpoint", "get"),
        ("/v1/checkpoints/{size}", "get"),
        ("/v1/consistency", "get"),
        ("/v1/batches/{n}", "get"),
        ("/v1/hosts/{key}", "get"),
        ("/v1/hosts/{key}/receipts", "get"),
        ("/v1/hosts/{key}/checkpoints", "get"),
        ("/v1/channels/{id}", "get"),
        ("/v1/leaves", "get"),
        ("/v1/evidence", "get"),
        ("/v1/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in routes {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(doc["paths"].as_object().unwrap().len(), routes.len());
    let reasons = doc["components"]["schemas"]["Result"]["properties"]["reason"]["enum"]
        .as_array()
        .unwrap();
    for r in tally_aggregator::Reason::ALL {
        assert!(reasons.iter().any(|v| v == r.code()), "{}", r.code());
    }
    assert_eq!(get(&e.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&e.app, "/readyz").await.0, StatusCode::OK);
}

async fn serves_over_a_real_socket_and_shuts_down<B: Backend>() {
    let e = env::<B>().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tally_aggregator::run(listener, Arc::clone(&e.agg), async {
        let _ = rx.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("x-request-id"), "{resp}");
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    drop(e.place);
}

// ---------------------------------------------------------------------------------------
// Property: order of arrival does not matter.

/// One host's chain over several channels; the log is that chain in order whatever the
/// interleaving of resubmissions and out-of-order arrivals.
fn chain(n: usize) -> (World, Vec<SignedReceipt>) {
    let mut w = World::new();
    let rs = (0..n).map(|i| w.call(i % 2, 0, (i / 2) % 2)).collect();
    (w, rs)
}

/// One case of the property: `order` shuffled, `dups` resubmitted, cut into submissions of
/// `cuts` sizes.
fn interleaving_case<B: Backend>(order: Vec<usize>, dups: &[usize], cuts: &[usize]) {
    let (world, rs) = chain(7);
    let mut arrivals: Vec<usize> = order;
    for (k, d) in dups.iter().enumerate() {
        let at = (k * 3) % (arrivals.len() + 1);
        arrivals.insert(at, *d);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let place = B::place().await;
        let agg = open_with::<B>(&place.locator(), &world, config(&world)).await;
        let mut rest = &arrivals[..];
        let mut c = cuts.iter().cycle();
        while !rest.is_empty() {
            let take = (*c.next().unwrap()).min(rest.len());
            let batch: Vec<_> = rest[..take].iter().map(|&i| Ok(rs[i].clone())).collect();
            agg.submit(batch).await.unwrap();
            rest = &rest[take..];
        }
        assert_eq!(agg.tree_size(), 7);
        assert_eq!(agg.root().await, root_of(&rs));
        assert_eq!(agg.store().pending_count().await.unwrap(), 0);
        let host = agg
            .store()
            .host(&PublicKey(world.hosts[0].public_key().0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(host.last_seq, 7);
        B::close(agg.store()).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_yields_the_same_log_sqlite(
        order in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..7usize, 0..6),
        cuts in proptest::collection::vec(1..4usize, 1..8),
    ) {
        interleaving_case::<Sqlite>(order, &dups, &cuts);
    }

    #[test]
    fn any_interleaving_yields_the_same_log_pg(
        order in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..7usize, 0..6),
        cuts in proptest::collection::vec(1..4usize, 1..8),
    ) {
        interleaving_case::<Pg>(order, &dups, &cuts);
    }
}

// ---------------------------------------------------------------------------------------
// Exact u64s, poisoned receipts, authenticated submissions, bounded state.

/// The next receipt of (payer, host, model) at channel `seq`, recorded as the world's
/// latest: later calls continue from `seq`.
fn call_at_seq(world: &mut World, payer: usize, host: usize, m: usize, seq: u64) -> SignedReceipt {
    let mut r = world.next(payer, host, m);
    r.authorization.authorization.seq = seq;
    world.resign_payer(&mut r);
    world.commit(r)
}

async fn channel_seqs_above_2_63_are_stored_and_served_exactly<B: Backend>() {
    let mut e = env::<B>().await;
    let first = e.world.call(0, 0, 0);
    let big = call_at_seq(&mut e.world, 0, 0, 0, 1 << 63);
    let next = e.world.call(0, 0, 0);
    assert_eq!(next.receipt.authorization.authorization.seq, (1 << 63) + 1);
    assert_eq!(
        submit(&e.app, &[first, big, next.clone()]).await,
        strs(&["accepted"; 3])
    );
    let channel = next.receipt.channel();
    let (s, v) = get_json(&e.app, &format!("/v1/channels/{channel}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["last_seq"].as_u64(), Some((1 << 63) + 1));
    // A seq between the two clamped values of the old schema is a replay, compared
    // exactly: 2^63 ≤ 2^63 + 1.
    let replay = call_at_seq(&mut e.world, 0, 0, 0, 1 << 63);
    assert_eq!(
        submit(&e.app, &[replay]).await,
        strs(&["rejected:channel_replay"])
    );
    // The replay took its place in the host's log (host-signed, refused for its
    // channel); the world recorded it as the channel's latest too: back to what the
    // channel holds.
    e.world
        .channels
        .insert((0, 0, 0), ((1 << 63) + 1, next.receipt.channel_total));
    let last = call_at_seq(&mut e.world, 0, 0, 0, u64::MAX);
    assert_eq!(
        submit(&e.app, std::slice::from_ref(&last)).await,
        strs(&["accepted"])
    );
    let (_, v) = get_json(&e.app, &format!("/v1/channels/{channel}")).await;
    assert_eq!(v["last_seq"].as_u64(), Some(u64::MAX));
    assert_eq!(
        v["total"].as_str(),
        Some(last.receipt.channel_total.to_string().as_str())
    );
    // Nothing above u64::MAX exists: any further seq on this channel is a replay.
    let after = call_at_seq(&mut e.world, 0, 0, 0, u64::MAX);
    assert_eq!(
        submit(&e.app, &[after]).await,
        strs(&["rejected:channel_replay"])
    );
    // The log holds the exact seqs.
    let (_, v) = get_json(&e.app, "/v1/leaves?start=0&end=4").await;
    let seqs: Vec<u64> = v["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let bytes = STANDARD.decode(l["encoding"].as_str().unwrap()).unwrap();
            SignedReceipt::decode(&bytes)
                .unwrap()
                .receipt
                .authorization
                .authorization
                .seq
        })
        .collect();
    assert_eq!(seqs, vec![1, 1 << 63, (1 << 63) + 1, u64::MAX]);
    // And reads them back exactly after a restart.
    let Env {
        agg, world, place, ..
    } = e;
    B::close(agg.store()).await;
    drop(agg);
    let agg = open_with::<B>(&place.locator(), &world, config(&world)).await;
    let c = agg.store().channel(&channel).await.unwrap().unwrap();
    assert_eq!(c.last_seq, u64::MAX);
    B::close(agg.store()).await;
}

async fn a_receipt_the_store_refuses_is_rejected_alone<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..4).map(|_| e.world.call(0, 0, 0)).collect();
    let other: Vec<_> = (0..2).map(|_| e.world.call(1, 1, 1)).collect();
    // The database refuses receipt 3 of host 0 (a trigger stands in for any constraint
    // the checks did not foresee).
    B::poison(&e.place, e.agg.store(), &rs[2].id()).await;
    assert_eq!(
        submit(&e.app, &rs).await,
        strs(&["accepted", "accepted", "rejected:store_refused", "pending"])
    );
    // Nothing else is blocked: another host's receipts go in, and resending the refused
    // one is refused alone again, quickly.
    assert_eq!(submit(&e.app, &other).await, strs(&["accepted"; 2]));
    assert_eq!(
        submit(&e.app, &rs[2..3]).await,
        strs(&["rejected:store_refused"])
    );
    assert_eq!(e.agg.tree_size(), 4);
    let (_, metrics) = get(&e.app, "/metrics").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("tally_receipts_rejected_total{reason=\"store_refused\"} 2"),
        "{metrics}"
    );
}

/// Counter `name` in the aggregator's metrics.
async fn metric(app: &Router, name: &str) -> u64 {
    let (_, text) = get(app, "/metrics").await;
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

async fn unauthenticated_submissions_are_refused_before_any_signature_check<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..20).map(|_| e.world.call(0, 0, 0)).collect();
    let body = binary(&rs);
    let host = e.world.hosts[0].public_key();
    let refused = |s: StatusCode, v: &Value, code: &str| {
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(code)),
            "{v}"
        );
    };
    // No header, a malformed one, a junk signature, a key that is not a host, a stale
    // signature: 401, and not one receipt signature checked.
    let (s, v) = post_as(&e.app, None, "application/octet-stream", body.clone()).await;
    refused(s, &v, "unauthenticated");
    let with = |value: String| {
        Request::post("/v1/receipts")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(SUBMISSION_HEADER, value)
            .body(Body::from(body.clone()))
            .unwrap()
    };
    let json = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).unwrap();
    let (s, b) = send(&e.app, with("zz".repeat(170))).await;
    refused(s, &json(b), "unauthenticated");
    let mut junk = Submission::of_body(host, now_ms(), &body).sign(&e.world.hosts[0]);
    junk.signature.0[3] ^= 1;
    let (s, b) = send(&e.app, with(hex::encode(junk.encode()))).await;
    refused(s, &json(b), "submission_signature");
    let stranger = SigningKey::from_seed(&[9; 32]);
    let (s, v) = post_as(
        &e.app,
        Some(&stranger),
        "application/octet-stream",
        body.clone(),
    )
    .await;
    refused(s, &v, "unknown_submitter");
    let stale = Submission::of_body(host, now_ms() - 3_600_000, &body).sign(&e.world.hosts[0]);
    let (s, b) = send(&e.app, with(hex::encode(stale.encode()))).await;
    refused(s, &json(b), "stale_submission");
    // Signed for another body.
    let other = Submission::of_body(host, now_ms(), b"another body").sign(&e.world.hosts[0]);
    let (s, b) = send(&e.app, with(hex::encode(other.encode()))).await;
    assert_eq!(
        (s, json(b)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body_digest_mismatch"))
    );
    // The refusal does not wait for the body: a body that never ends is not read.
    let (_tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let endless = Body::from_stream(tokio_stream_from(rx));
    let req = Request::post("/v1/receipts")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(endless)
        .unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), send(&e.app, req))
        .await
        .expect("refused without reading the body");
    assert_eq!(answered.0, StatusCode::UNAUTHORIZED);
    assert_eq!(metric(&e.app, "tally_signature_checks_total").await, 0);
    assert_eq!(e.agg.tree_size(), 0);
    // The host's own signed submission is read and checked.
    let (s, v) = post(&e.app, "application/octet-stream", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(statuses(&v), strs(&["accepted"; 20]));
    assert_eq!(metric(&e.app, "tally_signature_checks_total").await, 20);
}

/// A body that yields what `rx` receives (never ends while its sender lives).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn a_host_submits_only_its_own_receipts<B: Backend>() {
    let mut e = env::<B>().await;
    let mine = e.world.call(0, 0, 0);
    let theirs = e.world.call(1, 1, 0);
    let (s, v) = post_as(
        &e.app,
        Some(&e.world.hosts[0]),
        "application/octet-stream",
        binary(&[mine, theirs]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(statuses(&v), strs(&["accepted", "rejected:not_submitter"]));
}

async fn a_submission_of_junk_is_cut_short<B: Backend>() {
    let mut e = env::<B>().await;
    let junk: Vec<_> = (0..100)
        .map(|_| {
            let mut r = e.world.call(0, 0, 0);
            r.checkpoint.signature.0[9] ^= 1;
            r
        })
        .collect();
    let out = submit(&e.app, &junk).await;
    assert_eq!(out.len(), 100);
    assert!(
        out[..32].iter().all(|s| s == "rejected:host_signature"),
        "{out:?}"
    );
    assert!(
        out[32..].iter().all(|s| s == "rejected:unchecked"),
        "{out:?}"
    );
    assert_eq!(metric(&e.app, "tally_signature_checks_total").await, 32);
}

async fn held_back_receipts_are_bounded_per_position_and_per_host<B: Backend>() {
    let mut e = env_with::<B>(|c| c.max_pending_per_host = 3).await;
    let rs: Vec<_> = (0..8).map(|_| e.world.call(0, 0, 0)).collect();
    assert_eq!(submit(&e.app, &rs[4..5]).await, strs(&["pending"]));
    // Another receipt signed for position 5: a fork, recorded, not a second held row.
    let mut twin = rs[4].receipt.clone();
    twin.facts.duration_ms += 1;
    let twin = e.world.host_sign(twin);
    assert_eq!(
        submit(&e.app, &[twin]).await,
        strs(&["rejected:host_equivocation"])
    );
    let (_, v) = get_json(&e.app, "/v1/evidence").await;
    assert_eq!(v["evidence"][0]["host_seq"], 5);
    assert_eq!(
        v["evidence"][0]["existing"].as_str(),
        Some(rs[4].id().to_string().as_str())
    );
    assert_eq!(submit(&e.app, &rs[4..5]).await, strs(&["pending"]));
    // At most three held back for the host.
    assert_eq!(
        submit(&e.app, &rs[5..8]).await,
        strs(&["pending", "pending", "rejected:pending_full"])
    );
    assert_eq!(e.agg.store().pending_count().await.unwrap(), 3);
    // Filling the gap releases the held ones; the refused one goes in when resent.
    assert_eq!(submit(&e.app, &rs[..4]).await, strs(&["accepted"; 4]));
    assert_eq!(e.agg.tree_size(), 7);
    assert_eq!(submit(&e.app, &rs[7..]).await, strs(&["accepted"]));
    assert_eq!(e.agg.root().await, root_of(&rs));
}

async fn fork_evidence_is_kept_once_per_position_and_paged<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..5).map(|_| e.world.call(0, 0, 0)).collect();
    assert_eq!(submit(&e.app, &rs).await, strs(&["accepted"; 5]));
    // Three different forks at every position: one record per position.
    for r in &rs {
        for k in 1..=3 {
            let mut twin = r.receipt.clone();
            twin.facts.duration_ms += k;
            let twin = e.world.host_sign(twin);
            assert_eq!(
                submit(&e.app, &[twin]).await,
                strs(&["rejected:host_equivocation"])
            );
        }
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/evidence?limit=2".to_owned();
    loop {
        let (s, v) = get_json(&e.app, &uri).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let page = v["evidence"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|ev| ev["host_seq"].as_u64().unwrap()));
        match v["next"].as_u64() {
            Some(next) => uri = format!("/v1/evidence?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    let (s, v) = get_json(&e.app, "/v1/evidence?after=18446744073709551615").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["evidence"].as_array().map(Vec::len), Some(0));
    for bad in ["limit=0", "limit=1001", "after=-1"] {
        let (s, _) = get_json(&e.app, &format!("/v1/evidence?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
}

async fn a_hosts_receipts_are_served_in_chain_order<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..6).map(|i| e.world.call(i % 2, 0, 0)).collect();
    let _ = submit(&e.app, &[e.world.call(0, 1, 0)]).await;
    assert_eq!(submit(&e.app, &rs).await, strs(&["accepted"; 6]));
    let host = e.world.hosts[0].public_key();
    let (s, v) = get_json(&e.app, &format!("/v1/hosts/{host}/receipts?from=3&limit=2")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<(u64, Vec<u8>)> = v["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["host_seq"].as_u64().unwrap(),
                STANDARD.decode(r["encoding"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![(3, rs[2].encode()), (4, rs[3].encode())]);
    let (_, v) = get_json(&e.app, &format!("/v1/hosts/{host}/receipts?from=6")).await;
    assert_eq!(v["receipts"].as_array().map(Vec::len), Some(1));
}

// ---------------------------------------------------------------------------------------
// Durability: kill -9 during ingest.

/// The variable that turns `crash_child_entry` into the child of
/// `acknowledged_receipts_survive_kill_9` (its value: where the store is).
const CRASH_AT: &str = "TALLY_AGGREGATOR_CRASH_AT";

/// The deterministic stream the crash child ingests, in rounds of ten.
fn crash_round(world: &mut World) -> Vec<SignedReceipt> {
    (0..10).map(|i| world.call(i % 2, i % 2, i % 2)).collect()
}

/// Child-process entry of the crash test (a no-op unless [`CRASH_AT`] is set): ingests
/// round after round, printing `ACK <id>` once a submission has returned, sealing now and
/// then, until it is killed.
async fn crash_child_entry<B: Backend>() {
    use std::io::Write;
    let Ok(at) = std::env::var(CRASH_AT) else {
        return;
    };
    let mut world = World::new();
    let agg = open_with::<B>(&at, &world, config(&world)).await;
    let mut out = std::io::stdout();
    for round in 0..10_000 {
        let rs = crash_round(&mut world);
        let res = agg
            .submit(rs.iter().cloned().map(Ok).collect())
            .await
            .unwrap();
        for (r, o) in rs.iter().zip(res) {
            assert!(
                matches!(o, tally_aggregator::Outcome::Accepted { .. }),
                "{o:?}"
            );
            writeln!(out, "ACK {}", r.id()).unwrap();
        }
        out.flush().unwrap();
        if round % 4 == 3 {
            agg.seal().await.unwrap();
        }
    }
}

async fn acknowledged_receipts_survive_kill_9<B: Backend>() {
    use std::io::BufRead;
    let place = B::place().await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &crate::test_name(module_path!(), &format!("{}::crash_child_entry", B::NAME)),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_AT, place.locator())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked: Vec<ReceiptId> = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(serde_json::from_value(Value::String(id.to_owned())).unwrap());
                if acked.len() >= 250 {
                    break;
                }
            }
        }
        acked
    })
    .await
    .unwrap();
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, mid-transaction.
    child.wait().unwrap();
    assert_eq!(acked.len(), 250, "the child stopped early");

    let mut world = World::new();
    let agg = open_with::<B>(&place.locator(), &world, config(&world)).await;
    let size = agg.tree_size();
    assert!(size >= 250, "{size}");
    for id in &acked {
        let stored = agg.receipt(id).await.unwrap();
        assert!(stored.leaf < size);
    }
    // The log is exactly a prefix of the child's stream: no loss, no duplicate leaf.
    let mut stream = Vec::new();
    while (stream.len() as u64) < size + 20 {
        stream.extend(crash_round(&mut world));
    }
    let prefix = &stream[..size as usize];
    assert_eq!(agg.root().await, root_of(prefix));
    if let Ok(cp) = agg.checkpoint(None).await {
        assert_eq!(cp.root, root_of(&stream[..cp.size as usize]));
    }
    // And it continues where the child stopped.
    let res = agg
        .submit(stream.iter().cloned().map(Ok).collect())
        .await
        .unwrap();
    assert!(
        res[..size as usize]
            .iter()
            .all(|o| matches!(o, tally_aggregator::Outcome::Duplicate { .. }))
    );
    assert!(
        res[size as usize..]
            .iter()
            .all(|o| matches!(o, tally_aggregator::Outcome::Accepted { .. }))
    );
    assert_eq!(agg.root().await, root_of(&stream));
    B::close(agg.store()).await;
}

// ---------------------------------------------------------------------------------------
// Host logs (receipts v2): one payer never stalls a host; equivocation is caught.

/// The poor payer's next receipts on `host` until one is beyond its escrow: the last one
/// is refused (`insufficient_escrow`), the others fit.
fn until_broke(world: &mut World, host: usize) -> Vec<SignedReceipt> {
    let mut out = Vec::new();
    loop {
        let r = world.call(POOR_PAYER, host, 1);
        let total = r.receipt.channel_total;
        out.push(r);
        if total > 10_000 {
            return out;
        }
    }
}

/// With version 1, a receipt refused mid-chain (a payer without escrow) broke the host's
/// `prev_receipt` chain and held back every later receipt of that host. The aggregator
/// now follows the host's log past any host-signed receipt it refuses for its payer.
async fn a_payer_refused_mid_log_never_stalls_its_host<B: Backend>() {
    let mut e = env::<B>().await;
    let first = e.world.call(0, 1, 0);
    let poor = until_broke(&mut e.world, 1);
    let broke = poor.last().unwrap().clone();
    // A receipt with a bad payer signature, signed into the host's log by the host.
    let mut forged = e.world.next(1, 1, 0);
    forged.authorization.signature.0[3] ^= 1;
    let forged = e.world.host_sign(forged);
    let after: Vec<_> = (0..3).map(|i| e.world.call(i % 2, 1, 0)).collect();
    let mut expected = vec!["accepted"; 1 + poor.len() - 1];
    expected.push("rejected:insufficient_escrow");
    assert_eq!(
        submit(&e.app, &[vec![first], poor.clone()].concat()).await,
        strs(&expected)
    );
    // The other payers' receipts after them are accepted, in another submission too.
    assert_eq!(
        submit(&e.app, std::slice::from_ref(&forged)).await,
        strs(&["rejected:payer_signature"])
    );
    assert_eq!(submit(&e.app, &after).await, strs(&["accepted"; 3]));
    let host = e.world.hosts[1].public_key();
    let placed = poor.len() as u64 + 5;
    let (_, v) = get_json(&e.app, &format!("/v1/hosts/{host}")).await;
    assert_eq!(
        v["last_seq"], placed,
        "the host's log moved past both refusals"
    );
    assert_eq!(e.agg.tree_size(), placed - 2);
    // A resubmission gets the same answer, whatever is sent with it.
    assert_eq!(
        submit(&e.app, &[broke.clone(), forged.clone(), after[0].clone()]).await,
        strs(&[
            "rejected:insufficient_escrow",
            "rejected:payer_signature",
            "duplicate"
        ])
    );
    // The refused ones are served with the host's log (a repair gets them back).
    let (_, v) = get_json(&e.app, &format!("/v1/hosts/{host}/receipts?from=1")).await;
    let listed = v["receipts"].as_array().unwrap();
    assert_eq!(listed.len() as u64, placed);
    let refused: Vec<_> = listed
        .iter()
        .filter_map(|r| r["refused"].as_str())
        .collect();
    assert_eq!(refused, ["insufficient_escrow", "payer_signature"]);
}

/// The bundles of `rs` (the next receipts of host `h` in the world after its first
/// `keep` leaves) as a second history of the host signed as one group commit.
fn second_history(
    world: &World,
    h: usize,
    keep: usize,
    rs: Vec<tally_protocol::Receipt>,
) -> Vec<SignedReceipt> {
    let log = &world.host_logs[&h];
    let mut frontier = tally_protocol::merkle::CompactRange::new();
    for leaf in &log.leaves[..keep] {
        frontier.append(*leaf, |_, _, _| {});
    }
    tally_protocol::sign_group(&world.hosts[h], &mut frontier, rs)
        .unwrap()
        .1
}

/// A receipt whose proof describes another history than the receipts the aggregator
/// placed before it (its left siblings are not the host log's frontier): equivocation,
/// proved by it and the receipt that completed the differing subtree.
async fn a_proof_of_another_history_is_equivocation<B: Backend>() {
    let mut e = env::<B>().await;
    let rs: Vec<_> = (0..3).map(|_| e.world.call(0, 0, 0)).collect();
    assert_eq!(submit(&e.app, &rs[..2]).await, strs(&["accepted"; 2]));
    // The host's other history: receipt 2 changed, then receipt 3.
    let mut twin = rs[1].receipt.clone();
    twin.facts.duration_ms += 5;
    let other = second_history(&e.world, 0, 1, vec![twin, rs[2].receipt.clone()]);
    assert_eq!(
        submit(&e.app, &other[1..]).await,
        strs(&["rejected:host_equivocation"])
    );
    let ev = e.agg.store().evidence(0, 10).await.unwrap();
    assert_eq!(ev.len(), 1);
    let (_, ev) = &ev[0];
    assert_eq!((ev.kind.as_str(), ev.host_seq), ("host_equivocation", 3));
    assert_eq!(
        ev.existing,
        Some(rs[1].id()),
        "the receipt that completed [0, 2)"
    );
    let a = SignedReceipt::decode(&ev.bytes).unwrap();
    let b = SignedReceipt::decode(ev.other.as_ref().unwrap()).unwrap();
    let c = a.contradiction(&b).unwrap();
    assert_eq!((c.lo, c.hi), (0, 2));
    // The honest receipt 3 still continues the log.
    assert_eq!(submit(&e.app, &rs[2..]).await, strs(&["accepted"]));
}

/// A checkpoint carried by an early receipt of a group is checked when the aggregator's
/// view of the host's log reaches its size: receipts of another history that continue the
/// log receipt by receipt are caught there.
async fn a_checkpoint_root_is_checked_at_its_size<B: Backend>() {
    let mut e = env::<B>().await;
    let group: Vec<_> = (0..4).map(|_| e.world.next_and_record(0, 0, 0)).collect();
    let a = e.world.commit_group(group.clone());
    assert!(a.iter().all(|b| b.checkpoint.size == 4));
    assert_eq!(submit(&e.app, &a[..2]).await, strs(&["accepted"; 2]));
    // Another history from receipt 3 on, each signed as a group of one.
    let mut three = group[2].clone();
    three.facts.duration_ms += 1;
    let b3 = second_history(&e.world, 0, 2, vec![three.clone()]);
    assert_eq!(submit(&e.app, &b3).await, strs(&["accepted"]));
    let mut f = tally_protocol::merkle::CompactRange::new();
    for leaf in &e.world.host_logs[&0].leaves[..2] {
        f.append(*leaf, |_, _, _| {});
    }
    f.append(three.leaf_hash(), |_, _, _| {});
    let b4 = tally_protocol::sign_group(&e.world.hosts[0], &mut f, vec![group[3].clone()])
        .unwrap()
        .1;
    assert_eq!(
        submit(&e.app, &b4).await,
        strs(&["rejected:host_equivocation"])
    );
    let ev = e.agg.store().evidence(0, 10).await.unwrap();
    let (_, ev) = &ev[0];
    assert_eq!(
        ev.existing,
        Some(a[0].id()),
        "the receipt that carried size 4"
    );
    let x = SignedReceipt::decode(&ev.bytes).unwrap();
    let y = SignedReceipt::decode(ev.other.as_ref().unwrap()).unwrap();
    assert!(x.contradiction(&y).is_ok());
    // Host checkpoints are stored beside the log, the group's once.
    let host = e.world.hosts[0].public_key();
    let (s, v) = get_json(&e.app, &format!("/v1/hosts/{host}/checkpoints")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let sizes: Vec<u64> = v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [3, 4]);
    assert_eq!(
        v["checkpoints"][1]["root"].as_str(),
        Some(a[0].checkpoint.root.to_string().as_str())
    );
}

// ---------------------------------------------------------------------------------------
// Every test above, once per store.

/// Instantiates each generic test for SQLite (module `sqlite`) and PostgreSQL (`pg`).
macro_rules! for_each_store {
    ($($(#[$attr:meta])* $name:ident;)*) => {
        mod sqlite {
            $( $(#[$attr])* async fn $name() { super::$name::<super::Sqlite>().await } )*
        }
        mod pg {
            $( $(#[$attr])* async fn $name() { super::$name::<super::Pg>().await } )*
        }
    };
}

for_each_store! {
    #[tokio::test] accepts_then_reports_duplicates_idempotently;
    #[tokio::test] bad_signatures_are_rejected_and_change_nothing;
    #[tokio::test] unknown_host_wrong_chain_and_unknown_guest_are_rejected;
    #[tokio::test] fork_is_rejected_and_recorded_as_evidence;
    #[tokio::test] out_of_order_is_held_back_then_released_when_the_gap_fills;
    #[tokio::test] held_back_receipts_expire_at_their_deadline;
    #[tokio::test] replayed_channel_seq_wrong_total_and_repricing_are_rejected;
    #[tokio::test] escrow_must_cover_the_payers_totals;
    #[tokio::test] oversize_and_malformed_bodies_are_refused;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_submissions_build_one_consistent_log;
    #[tokio::test] sealed_checkpoints_batches_and_proofs_verify;
    #[tokio::test] reopening_the_file_restores_the_log_and_continues;
    #[tokio::test] openapi_document_lists_every_route;
    #[tokio::test] serves_over_a_real_socket_and_shuts_down;
    #[tokio::test] crash_child_entry;
    #[tokio::test] channel_seqs_above_2_63_are_stored_and_served_exactly;
    #[tokio::test] a_receipt_the_store_refuses_is_rejected_alone;
    #[tokio::test] unauthenticated_submissions_are_refused_before_any_signature_check;
    #[tokio::test] a_host_submits_only_its_own_receipts;
    #[tokio::test] a_submission_of_junk_is_cut_short;
    #[tokio::test] held_back_receipts_are_bounded_per_position_and_per_host;
    #[tokio::test] fork_evidence_is_kept_once_per_position_and_paged;
    #[tokio::test] a_hosts_receipts_are_served_in_chain_order;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    acknowledged_receipts_survive_kill_9;
    #[tokio::test] a_payer_refused_mid_log_never_stalls_its_host;
    #[tokio::test] a_proof_of_another_history_is_equivocation;
    #[tokio::test] a_checkpoint_root_is_checked_at_its_size;
}
