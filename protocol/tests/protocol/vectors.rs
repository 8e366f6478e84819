//! Checks the committed golden vectors (`testdata/vectors.json`) the way an outside
//! implementation would: decode each canonical hex, re-encode it, hash it, compare the
//! JSON form, verify signatures, and expect each bad case's exact error code.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use serde_json::Value;
use tally_protocol::merkle::{
    ConsistencyProof, InclusionProof, MemoryTree, inclusion_proof, leaf_hash,
};
use tally_protocol::{
    Authorization, BatchHeader, ChannelId, Checkpoint, DecodeError, Digest, HostCheckpoint,
    MeterInput, MeterOutcome, Metered, PriceSchedule, PublicKey, Receipt, SignedAuthorization,
    SignedBatchHeader, SignedReceipt, SignedSubmission, SigningKey, Submission, UsageFacts,
    checkpoint_body, host_origin,
};

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/vectors.json");
    let text = std::fs::read_to_string(path).expect("testdata/vectors.json is committed");
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// Decodes `bytes` as the named type, re-encodes, and returns the JSON form; or the
/// decoder's error.
fn check_type(ty: &str, bytes: &[u8]) -> Result<(Vec<u8>, Value), DecodeError> {
    fn go<T: serde::Serialize>(
        v: Result<T, DecodeError>,
        enc: impl Fn(&T) -> Vec<u8>,
    ) -> Result<(Vec<u8>, Value), DecodeError> {
        let v = v?;
        Ok((enc(&v), serde_json::to_value(&v).expect("serializes")))
    }
    match ty {
        "Authorization" => go(Authorization::decode(bytes), Authorization::encode),
        "SignedAuthorization" => go(
            SignedAuthorization::decode(bytes),
            SignedAuthorization::encode,
        ),
        "UsageFacts" => go(UsageFacts::decode(bytes), UsageFacts::encode),
        "PriceSchedule" => go(PriceSchedule::decode(bytes), PriceSchedule::encode),
        "Metered" => go(Metered::decode(bytes), Metered::encode),
        "Receipt" => go(Receipt::decode(bytes), Receipt::encode),
        "HostCheckpoint" => go(HostCheckpoint::decode(bytes), HostCheckpoint::encode),
        "SignedReceipt" => go(SignedReceipt::decode(bytes), SignedReceipt::encode),
        "BatchHeader" => go(BatchHeader::decode(bytes), BatchHeader::encode),
        "SignedBatchHeader" => go(SignedBatchHeader::decode(bytes), SignedBatchHeader::encode),
        // The guest ABI's types have no JSON form: their "JSON" is their debug text.
        "MeterInput" => {
            MeterInput::decode(bytes).map(|v| (v.encode(), Value::String(format!("{v:?}"))))
        }
        "MeterOutcome" => {
            MeterOutcome::decode(bytes).map(|v| (v.encode(), Value::String(format!("{v:?}"))))
        }
        "Submission" => go(Submission::decode(bytes), Submission::encode),
        "SignedSubmission" => go(SignedSubmission::decode(bytes), SignedSubmission::encode),
        other => panic!("vector names unknown type {other}"),
    }
}

/// JSON → value → JSON must be the identity, and JSON → value must equal the decoded bytes.
fn check_json_round_trip(ty: &str, json: &Value, canonical: &[u8]) {
    fn go<T: serde::Serialize + serde::de::DeserializeOwned>(
        json: &Value,
        enc: impl Fn(&T) -> Vec<u8>,
        canonical: &[u8],
    ) {
        let v: T = serde_json::from_value(json.clone()).expect("vector JSON parses");
        assert_eq!(enc(&v), canonical, "JSON and canonical forms disagree");
        assert_eq!(
            &serde_json::to_value(&v).unwrap(),
            json,
            "JSON does not round-trip"
        );
    }
    match ty {
        "Authorization" => go(json, Authorization::encode, canonical),
        "SignedAuthorization" => go(json, SignedAuthorization::encode, canonical),
        "UsageFacts" => go(json, UsageFacts::encode, canonical),
        "PriceSchedule" => go(json, PriceSchedule::encode, canonical),
        "Metered" => go(json, Metered::encode, canonical),
        "Receipt" => go(json, Receipt::encode, canonical),
        "HostCheckpoint" => go(json, HostCheckpoint::encode, canonical),
        "SignedReceipt" => go(json, SignedReceipt::encode, canonical),
        "BatchHeader" => go(json, BatchHeader::encode, canonical),
        "SignedBatchHeader" => go(json, SignedBatchHeader::encode, canonical),
        "Submission" => go(json, Submission::encode, canonical),
        "SignedSubmission" => go(json, SignedSubmission::encode, canonical),
        other => panic!("vector names unknown type {other}"),
    }
}

#[test]
fn keys_derive_from_their_seeds() {
    let v = vectors();
    for name in ["payer", "host", "aggregator"] {
        let k = &v["keys"][name];
        let seed: [u8; 32] = unhex(&k["seed"]).try_into().unwrap();
        let public = SigningKey::from_seed(&seed).public_key().to_string();
        assert_eq!(public, k["public"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn every_value_decodes_reencodes_hashes_and_round_trips_json() {
    let v = vectors();
    let values = v["values"].as_array().unwrap();
    assert_eq!(values.len(), 12, "one vector per signed or hashed type");
    for case in values {
        let ty = case["type"].as_str().unwrap();
        let canonical = unhex(&case["canonical"]);
        let (re, json) = check_type(ty, &canonical).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(re, canonical, "{ty}: decode → encode is not the identity");
        assert_eq!(json, case["json"], "{ty}: JSON form differs");
        assert_eq!(
            Digest::sha256(&canonical).to_string(),
            case["sha256"].as_str().unwrap(),
            "{ty}: hash differs"
        );
        check_json_round_trip(ty, &case["json"], &canonical);
    }
}

#[test]
fn signed_values_verify_and_ids_match() {
    let v = vectors();
    let find = |ty: &str| {
        let case = v["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == ty)
            .unwrap();
        unhex(&case["canonical"])
    };
    let receipt = SignedReceipt::decode(&find("SignedReceipt")).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.id().to_string(), v["receipt_id"].as_str().unwrap());
    assert_eq!(
        Digest::sha256(&receipt.receipt.encode()).to_string(),
        v["receipt_id"].as_str().unwrap(),
        "the id is the hash of the receipt body, not of the bundle"
    );
    assert_eq!(
        leaf_hash(&receipt.receipt.encode()).to_string(),
        v["host_leaf"].as_str().unwrap(),
        "the host log's leaf is the receipt body"
    );
    // A group of one: the checkpoint covers exactly this receipt, its root is the leaf.
    assert_eq!(receipt.checkpoint.size, 1);
    assert!(receipt.proof.is_empty());
    assert_eq!(receipt.checkpoint.root, receipt.receipt.leaf_hash());
    let cp = HostCheckpoint::decode(&find("HostCheckpoint")).unwrap();
    assert_eq!(cp, receipt.checkpoint);
    let encoding = receipt.encode();
    assert_eq!(SignedReceipt::id_of_encoding(&encoding), Some(receipt.id()));
    assert_eq!(
        SignedReceipt::id_of_encoding(&receipt.receipt.encode()),
        None,
        "wrong tag"
    );
    assert_eq!(
        SignedReceipt::id_of_encoding(&encoding[..80]),
        None,
        "too short"
    );
    assert_eq!(
        tally_protocol::merkle::leaf_hash(&receipt.encode()).to_string(),
        v["merkle_leaf"].as_str().unwrap()
    );
    assert_eq!(
        receipt.receipt.channel().to_string(),
        v["channel_id"].as_str().unwrap()
    );
    SignedAuthorization::decode(&find("SignedAuthorization"))
        .unwrap()
        .verify()
        .unwrap();
    let header = SignedBatchHeader::decode(&find("SignedBatchHeader")).unwrap();
    header.verify().unwrap();
    let submission = SignedSubmission::decode(&find("SignedSubmission")).unwrap();
    submission.verify().unwrap();
    assert_eq!(
        submission.submission.host, receipt.receipt.authorization.authorization.host,
        "the host signs its own submission"
    );
    assert_eq!(
        submission.submission.body_digest.to_string(),
        v["submission_body_sha256"].as_str().unwrap(),
        "the body digest is SHA-256 of the submitted bytes"
    );
    let schedule = PriceSchedule::decode(&find("PriceSchedule")).unwrap();
    assert_eq!(
        schedule.hash().to_string(),
        v["schedule_hash"].as_str().unwrap()
    );
    assert_eq!(receipt.receipt.schedule, schedule.hash());
}

#[test]
fn meter_vectors_decode() {
    let v = vectors();
    let m = &v["meter"];
    for (i, o) in [("input", "outcome"), ("refused_input", "refused_outcome")] {
        let input = unhex(&m[i]);
        assert_eq!(MeterInput::decode(&input).unwrap().encode(), input);
        let out = unhex(&m[o]);
        assert_eq!(MeterOutcome::decode(&out).unwrap().encode(), out);
    }
    assert!(
        MeterOutcome::decode(&unhex(&m["outcome"]))
            .unwrap()
            .0
            .is_ok()
    );
    assert!(
        MeterOutcome::decode(&unhex(&m["refused_outcome"]))
            .unwrap()
            .0
            .is_err()
    );
}

#[test]
fn bad_encodings_fail_with_their_error_code() {
    let v = vectors();
    let cases = v["bad_encodings"].as_array().unwrap();
    assert!(cases.len() >= 32);
    for case in cases {
        let ty = case["type"].as_str().unwrap();
        let name = case["name"].as_str().unwrap();
        match check_type(ty, &unhex(&case["canonical"])) {
            Ok(_) => panic!("{name}: decoded, but must fail"),
            Err(e) => assert_eq!(e.code(), case["error"].as_str().unwrap(), "{name}: {e}"),
        }
    }
}

#[test]
fn bad_receipts_decode_but_fail_verification_with_their_error_code() {
    let v = vectors();
    let cases = v["bad_receipts"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let r = SignedReceipt::decode(&unhex(&case["canonical"])).unwrap();
        let err = r.verify().expect_err(name);
        assert_eq!(err.code(), case["error"].as_str().unwrap(), "{name}: {err}");
        // The batch path must reach the same verdict.
        let batch = tally_protocol::verify_receipts(std::slice::from_ref(&r));
        assert_eq!(
            batch[0],
            Err(err),
            "{name}: batch and single verification disagree"
        );
    }
}

fn digest(v: &Value) -> Digest {
    Digest(unhex(v).try_into().expect("32 bytes"))
}

fn digests(v: &Value) -> Vec<Digest> {
    v.as_array().unwrap().iter().map(digest).collect()
}

#[test]
fn bad_json_is_refused() {
    let v = vectors();
    let cases = v["bad_json"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let json = case["json"].clone();
        let parsed = match case["type"].as_str().unwrap() {
            "Authorization" => serde_json::from_value::<Authorization>(json).map(|_| ()),
            "UsageFacts" => serde_json::from_value::<UsageFacts>(json).map(|_| ()),
            "SignedReceipt" => serde_json::from_value::<SignedReceipt>(json).map(|_| ()),
            other => panic!("unknown type {other}"),
        };
        assert!(parsed.is_err(), "{name}: parsed, but must be refused");
    }
}

#[test]
fn a_small_order_host_key_verifies_by_zip215_singly_and_in_batches() {
    let v = vectors();
    let case = &v["small_order"];
    let r = SignedReceipt::decode(&unhex(&case["signed_receipt"])).unwrap();
    assert_eq!(
        r.receipt.host().to_string(),
        case["host_key"].as_str().unwrap()
    );
    r.verify()
        .expect("ZIP-215 accepts a small-order key with s = 0");
    assert_eq!(r.id().to_string(), case["receipt_id"].as_str().unwrap());
    // Batches agree with single verification, also mixed with ordinary receipts.
    let ordinary = SignedReceipt::decode(&unhex(&v["log"]["receipts"][2])).unwrap();
    let mixed = vec![
        ordinary.clone(),
        r.clone(),
        ordinary.clone(),
        r.clone(),
        ordinary,
        r.clone(),
    ];
    assert!(
        tally_protocol::verify_receipts(&mixed)
            .iter()
            .all(Result::is_ok)
    );
    // The same key with s = 1 is refused: acceptance is the equation, not the key.
    let mut off = r.clone();
    off.checkpoint.signature.0[32] = 1;
    assert_eq!(off.verify().unwrap_err().code(), "host_signature");
}

/// The log's receipts, decoded and verified.
fn log_receipts(v: &Value) -> Vec<SignedReceipt> {
    v["log"]["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let r = SignedReceipt::decode(&unhex(h)).unwrap();
            r.verify().unwrap();
            r
        })
        .collect()
}

#[test]
fn the_log_is_one_host_log_with_channel_totals() {
    let v = vectors();
    let receipts = log_receipts(&v);
    assert!(receipts.len() >= 3);
    let mut channels: std::collections::BTreeMap<ChannelId, (u64, u128)> = Default::default();
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(
            r.id().to_string(),
            v["log"]["receipt_ids"][i].as_str().unwrap()
        );
        assert_eq!(
            r.receipt.host_seq,
            i as u64 + 1,
            "one leaf per host_seq, in order"
        );
        let a = &r.receipt.authorization.authorization;
        let (last_seq, last_total) = channels
            .get(&r.receipt.channel())
            .copied()
            .unwrap_or((0, 0));
        assert!(
            a.seq > last_seq,
            "seq rises within a channel (gaps allowed)"
        );
        assert_eq!(r.receipt.channel_total, last_total + r.receipt.metered.fee);
        channels.insert(r.receipt.channel(), (a.seq, r.receipt.channel_total));
    }
    assert!(channels.len() >= 2);
    // Every pair of one honest host log is consistent.
    for a in &receipts {
        for b in &receipts {
            assert_eq!(a.contradiction(b).unwrap_err().code(), "no_contradiction");
        }
    }
}

#[test]
fn the_host_log_is_signed_once_per_group_commit() {
    let v = vectors();
    let h = &v["host_log"];
    let host = PublicKey(unhex(&v["keys"]["host"]["public"]).try_into().unwrap());
    let receipts: Vec<Receipt> = h["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Receipt::decode(&unhex(r)).unwrap())
        .collect();
    let mut tree = MemoryTree::new();
    for (i, r) in receipts.iter().enumerate() {
        let leaf = leaf_hash(&r.encode());
        assert_eq!(leaf, digest(&h["leaf_hashes"][i]));
        assert_eq!(r.leaf_hash(), leaf);
        tree.append(leaf);
        assert_eq!(
            tree.root(),
            digest(&h["roots"][i]),
            "host log root at {}",
            i + 1
        );
    }
    let a = &receipts[0].authorization.authorization;
    let origin = host_origin(&a.chain_id, &a.contract, &host);
    assert_eq!(origin, h["origin"].as_str().unwrap());
    let bundles: Vec<SignedReceipt> = h["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| SignedReceipt::decode(&unhex(b)).unwrap())
        .collect();
    assert_eq!(
        h["bundles"], v["log"]["receipts"],
        "the aggregator logs the bundles"
    );
    let groups = h["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    for g in groups {
        let cp = HostCheckpoint::decode(&unhex(&g["checkpoint"])).unwrap();
        let (first, last) = (
            g["first_host_seq"].as_u64().unwrap(),
            g["last_host_seq"].as_u64().unwrap(),
        );
        assert_eq!(
            cp.size, last,
            "a group's checkpoint covers the log up to its last receipt"
        );
        assert_eq!(cp.root, tree.root_at(last).unwrap());
        let body = checkpoint_body(&origin, cp.size, &cp.root);
        assert_eq!(body, g["body"].as_str().unwrap().as_bytes());
        assert_eq!(
            hex::encode(cp.signature.0),
            g["signature"].as_str().unwrap()
        );
        host.verify(&body, &cp.signature).unwrap();
        for seq in first..=last {
            let b = &bundles[(seq - 1) as usize];
            assert_eq!(
                b.checkpoint, cp,
                "host_seq {seq} is proved under its group's checkpoint"
            );
            assert_eq!(b.receipt, receipts[(seq - 1) as usize]);
            assert_eq!(
                b.inclusion(),
                inclusion_proof(&tree, seq - 1, last).unwrap()
            );
            b.verify().unwrap();
        }
    }
}

#[test]
fn equivocation_vectors_find_their_contradictions() {
    let v = vectors();
    let cases = v["equivocation"]["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut found = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let a = SignedReceipt::decode(&unhex(&case["a"])).unwrap();
        let b = SignedReceipt::decode(&unhex(&case["b"])).unwrap();
        a.verify().unwrap();
        b.verify().unwrap();
        match (a.contradiction(&b), case["error"].as_str()) {
            (Ok(c), None) => {
                assert_eq!(
                    c.lo,
                    case["contradiction"]["lo"].as_u64().unwrap(),
                    "{name}"
                );
                assert_eq!(
                    c.hi,
                    case["contradiction"]["hi"].as_u64().unwrap(),
                    "{name}"
                );
                // Symmetric: the other order also contradicts.
                assert!(b.contradiction(&a).is_ok(), "{name}");
                found += 1;
            }
            (Err(e), Some(code)) => assert_eq!(e.code(), code, "{name}"),
            (got, want) => panic!("{name}: got {got:?}, want error {want:?}"),
        }
    }
    assert!(found >= 3, "at least three contradicting pairs");
}

#[test]
fn log_roots_and_proofs_verify_and_corruptions_fail() {
    let v = vectors();
    let log = &v["log"];
    let receipts = log_receipts(&v);
    let mut tree = MemoryTree::new();
    for (i, r) in receipts.iter().enumerate() {
        let h = leaf_hash(&r.encode());
        assert_eq!(h, digest(&log["leaf_hashes"][i]));
        tree.append(h);
    }
    let roots = digests(&log["roots"]);
    assert_eq!(roots[0], tally_protocol::merkle::EMPTY_ROOT);
    for (size, root) in roots.iter().enumerate() {
        assert_eq!(tree.root_at(size as u64).unwrap(), *root, "root at {size}");
    }
    for p in log["inclusion"].as_array().unwrap() {
        let proof = InclusionProof {
            leaf_index: p["leaf_index"].as_u64().unwrap(),
            tree_size: p["tree_size"].as_u64().unwrap(),
            hashes: digests(&p["hashes"]),
        };
        let leaf = digest(&log["leaf_hashes"][proof.leaf_index as usize]);
        let root = roots[proof.tree_size as usize];
        proof.verify(&leaf, &root).unwrap();
        for k in 0..proof.hashes.len() {
            let mut bad = proof.clone();
            bad.hashes[k].0[0] ^= 1;
            assert!(bad.verify(&leaf, &root).is_err());
        }
        let mut longer = proof.clone();
        longer.hashes.push(root);
        assert_eq!(
            longer.verify(&leaf, &root).unwrap_err().code(),
            "wrong_proof_size"
        );
    }
    for p in log["consistency"].as_array().unwrap() {
        let proof = ConsistencyProof {
            size1: p["size1"].as_u64().unwrap(),
            size2: p["size2"].as_u64().unwrap(),
            hashes: digests(&p["hashes"]),
        };
        let (r1, r2) = (roots[proof.size1 as usize], roots[proof.size2 as usize]);
        proof.verify(&r1, &r2).unwrap();
        if proof.size1 == proof.size2 {
            assert!(proof.hashes.is_empty(), "equal sizes have an empty proof");
        }
        for k in 0..proof.hashes.len() {
            let mut bad = proof.clone();
            bad.hashes[k].0[31] ^= 0x80;
            assert!(bad.verify(&r1, &r2).is_err());
        }
    }
    for e in log["consistency_errors"].as_array().unwrap() {
        let proof = ConsistencyProof {
            size1: e["size1"].as_u64().unwrap(),
            size2: e["size2"].as_u64().unwrap(),
            hashes: digests(&e["hashes"]),
        };
        let err = proof
            .verify(&digest(&e["root1"]), &digest(&e["root2"]))
            .unwrap_err();
        assert_eq!(err.code(), e["error"].as_str().unwrap(), "{}", e["name"]);
    }
}

#[test]
fn batches_debit_channel_totals_since_the_previous_batch_and_carry_checkpoints() {
    let v = vectors();
    let log = &v["log"];
    let receipts = log_receipts(&v);
    let aggregator = PublicKey(
        unhex(&v["keys"]["aggregator"]["public"])
            .try_into()
            .unwrap(),
    );
    let origin = log["origin"].as_str().unwrap();
    let first = SignedBatchHeader::decode(&unhex(&log["batches"][0]["signed_header"])).unwrap();
    assert_eq!(
        origin,
        tally_protocol::log_origin(&first.header.chain_id, &first.header.contract).unwrap()
    );
    assert_eq!(
        hex::encode(tally_protocol::key_id(origin, &aggregator)),
        log["key_id"].as_str().unwrap()
    );
    let totals_at = |size: u64| {
        let mut m = std::collections::BTreeMap::<ChannelId, u128>::new();
        for r in &receipts[..size as usize] {
            m.insert(r.receipt.channel(), r.receipt.channel_total);
        }
        m
    };
    let mut prev: Option<BatchHeader> = None;
    for b in log["batches"].as_array().unwrap() {
        let signed = SignedBatchHeader::decode(&unhex(&b["signed_header"])).unwrap();
        signed.verify().unwrap();
        let h = &signed.header;
        assert_eq!(h.aggregator, aggregator);
        assert_eq!(h.hash().to_string(), b["header_hash"].as_str().unwrap());
        let (prev_hash, prev_size, prev_root) = match &prev {
            None => (Digest::ZERO, 0, None),
            Some(p) => (p.hash(), p.tree_size, Some(p.root)),
        };
        assert_eq!(h.prev_header, prev_hash);
        assert_eq!(h.batch, prev.as_ref().map_or(1, |p| p.batch + 1));
        let before = totals_at(prev_size);
        let want: Vec<(ChannelId, u128)> = totals_at(h.tree_size)
            .into_iter()
            .map(|(c, t)| (c, t - before.get(&c).copied().unwrap_or(0)))
            .filter(|&(_, a)| a > 0)
            .collect();
        let got: Vec<(ChannelId, u128)> = h.debits.iter().map(|d| (d.channel, d.amount)).collect();
        assert_eq!(got, want, "debits of batch {}", h.batch);
        let consistency = digests(&b["consistency_from_previous"]);
        match prev_root {
            None => assert!(
                consistency.is_empty(),
                "the first batch has no consistency proof"
            ),
            Some(root) => ConsistencyProof {
                size1: prev_size,
                size2: h.tree_size,
                hashes: consistency,
            }
            .verify(&root, &h.root)
            .unwrap(),
        }
        let cp = Checkpoint::verify_note(b["checkpoint"].as_str().unwrap(), origin, &aggregator)
            .unwrap();
        assert_eq!((cp.size, cp.root), (h.tree_size, h.root));
        prev = Some(h.clone());
    }
    assert!(log["batches"][0]["signed_header"].as_str().is_some());
    let first_debits = first.header.debits.len();
    assert!(
        first_debits >= 3,
        "a batch header with at least three debits"
    );
    for case in log["bad_checkpoints"].as_array().unwrap() {
        let got = Checkpoint::verify_note(case["note"].as_str().unwrap(), origin, &aggregator);
        match case["error"].as_str() {
            None => assert!(got.is_ok(), "{}", case["name"]),
            Some(code) => assert_eq!(got.unwrap_err().code(), code, "{}", case["name"]),
        }
    }
}

#[test]
fn journal_vector_frames_group_commits_of_bundles_with_crc32() {
    let v = vectors();
    let j = &v["journal"];
    let bytes = unhex(&j["bytes"]);
    assert_eq!(&bytes[..8], b"TALLYJ02");
    let mut pos = 8;
    let mut n = 0;
    let mut tree = MemoryTree::new();
    let mut durable = (0u64, 8usize);
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > bytes.len() {
            break;
        }
        let payload = &bytes[pos + 8..pos + 8 + len];
        assert_eq!(
            format!("{:08x}", crc32(payload)),
            j["record_crc32"][n].as_str().unwrap()
        );
        pos += 8 + len;
        let b = SignedReceipt::decode(payload).unwrap();
        b.verify().unwrap();
        assert_eq!(b.receipt.host_seq, tree.size() + 1);
        tree.append(b.receipt.leaf_hash());
        if b.receipt.host_seq == b.checkpoint.size {
            // The group's last record: the log so far is the checkpoint's.
            assert_eq!(tree.root(), b.checkpoint.root);
            durable = (b.checkpoint.size, pos);
        }
        n += 1;
        assert_eq!(pos as u64, j["record_ends"][n - 1].as_u64().unwrap());
    }
    assert_eq!(n, j["record_ends"].as_array().unwrap().len());
    assert_eq!(pos as u64, j["complete_records_len"].as_u64().unwrap());
    assert_eq!(durable.1 as u64, j["durable_len"].as_u64().unwrap());
    assert_eq!(durable.0, j["durable_receipts"].as_u64().unwrap());
    assert_eq!(
        tree.size() - durable.0,
        j["dropped_receipts"].as_u64().unwrap()
    );
    assert_eq!(
        (bytes.len() - pos) as u64,
        j["torn_tail_len"].as_u64().unwrap()
    );
}

/// CRC-32 (IEEE 802.3 / zlib), as §6 defines the journal checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The contract's two signed messages: rebuilt from their fields byte for byte, and their
/// signatures verify (ZIP-215) under the named key.
#[test]
fn contract_message_vectors_rebuild_and_verify() {
    let v = vectors();
    let cases = v["contract_messages"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let f = &case["fields"];
        let s = |k: &str| f[k].as_str().unwrap();
        let key32 = |k: &str| -> [u8; 32] { hex::decode(s(k)).unwrap().try_into().unwrap() };
        let built = match case["name"].as_str().unwrap() {
            "withdrawal request" => tally_protocol::withdraw_message(
                s("chain_id"),
                s("contract"),
                &key32("payer"),
                f["nonce"].as_u64().unwrap(),
                s("amount").parse().unwrap(),
                s("recipient"),
            ),
            "host registration" => tally_protocol::host_registration_message(
                s("chain_id"),
                s("contract"),
                &key32("host"),
                s("operator"),
            ),
            other => panic!("unknown contract message {other}"),
        };
        assert_eq!(built, unhex(&case["message"]), "{}", case["name"]);
        let key = PublicKey(unhex(&case["key"]).try_into().unwrap());
        let sig = tally_protocol::Signature(unhex(&case["signature"]).try_into().unwrap());
        assert_eq!(key.verify(&built, &sig), Ok(()), "{}", case["name"]);
        let mut other = built.clone();
        other[20] ^= 1;
        assert!(key.verify(&other, &sig).is_err());
    }
}
