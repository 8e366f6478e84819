//! Checks the committed golden vectors (`testdata/vectors.json`) the way an outside
//! implementation would: decode each canonical hex, re-encode it, hash it, compare the
//! JSON form, verify signatures, and expect each bad case's exact error code.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use serde_json::Value;
use tally_protocol::{
    Authorization, BatchHeader, DecodeError, Digest, MeterInput, MeterOutcome, Metered,
    PriceSchedule, Receipt, SignedAuthorization, SignedBatchHeader, SignedReceipt,
    SignedSubmission, SigningKey, Submission, UsageFacts,
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
        "SignedReceipt" => go(SignedReceipt::decode(bytes), SignedReceipt::encode),
        "BatchHeader" => go(BatchHeader::decode(bytes), BatchHeader::encode),
        "SignedBatchHeader" => go(SignedBatchHeader::decode(bytes), SignedBatchHeader::encode),
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
    assert_eq!(values.len(), 11, "one vector per signed or hashed type");
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
        "the id is the hash of the receipt body, not of the signed envelope"
    );
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
    assert!(cases.len() >= 15);
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
    assert!(cases.len() >= 6);
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
