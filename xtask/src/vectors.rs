//! Golden vectors for every canonical type: `cargo xtask vectors [--check]`.
//!
//! Keys come from fixed seeds and every timestamp is fixed, so the output is a pure
//! function of the protocol code. The protocol crate's `tests/vectors.rs` checks each
//! vector the way an outside implementation would (decode, re-encode, hash, verify);
//! `--check` regenerates in memory and fails if the committed file differs.
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    Authorization, BatchHeader, ChannelDebit, Digest, FinishStatus, MeterInput, MeterOutcome,
    Metered, PriceSchedule, PriceTier, Receipt, SignedAuthorization, SignedBatchHeader,
    SignedReceipt, SigningKey, Submission, UsageFacts, sign_group,
};

const FILE: &str = "testdata/vectors.json";

pub(crate) fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&generate(root)?)? + "\n";
    let path = root.join(FILE);
    if check {
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {FILE}"))?;
        if old != text {
            bail!("{FILE} is stale: run `cargo xtask vectors` and review the diff");
        }
        println!("{FILE} is up to date");
    } else {
        std::fs::write(&path, text).with_context(|| format!("writing {FILE}"))?;
        println!("wrote {FILE}");
    }
    Ok(())
}

/// The fixed keys: seeds are 32 repeated bytes, as `docs/protocol.md` states.
fn key(byte: u8) -> SigningKey {
    SigningKey::from_seed(&[byte; 32])
}

fn value<T: Serialize>(name: &str, ty: &str, v: &T, encoding: &[u8]) -> anyhow::Result<Value> {
    Ok(json!({
        "name": name,
        "type": ty,
        "json": serde_json::to_value(v)?,
        "canonical": hex(encoding),
        "sha256": Digest::sha256(encoding).to_string(),
    }))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bad(name: &str, ty: &str, bytes: &[u8], error: &str) -> Value {
    json!({ "name": name, "type": ty, "canonical": hex(bytes), "error": error })
}

/// The fixture every vector is built from: one channel, one call, one batch.
pub(crate) struct Fixture {
    pub(crate) payer: SigningKey,
    pub(crate) host: SigningKey,
    pub(crate) aggregator: SigningKey,
    pub(crate) schedule: PriceSchedule,
    pub(crate) authorization: Authorization,
    pub(crate) facts: UsageFacts,
}

pub(crate) fn fixture() -> Fixture {
    let payer = key(1);
    let host = key(2);
    let aggregator = key(3);
    let model = Digest::sha256(b"example model weights manifest");
    let request =
        Digest::sha256(br#"{"model":"example","messages":[{"role":"user","content":"hello"}]}"#);
    let schedule = PriceSchedule {
        model,
        min_fee: 10,
        tiers: vec![
            PriceTier {
                from_prompt_tokens: 0,
                prompt_per_mtok: 1_250_000,
                cached_per_mtok: 125_000,
                completion_per_mtok: 5_000_000,
            },
            PriceTier {
                from_prompt_tokens: 200_000,
                prompt_per_mtok: 2_500_000,
                cached_per_mtok: 250_000,
                completion_per_mtok: 10_000_000,
            },
        ],
    };
    let authorization = Authorization {
        chain_id: "tally-devnet-1".into(),
        contract: "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr".into(),
        payer: payer.public_key(),
        host: host.public_key(),
        model,
        seq: 1,
        request_digest: request,
        max_fee: 50_000,
        cumulative_cap: 1_000_000,
        expires_at_ms: 1_798_761_600_000,
    };
    let facts = UsageFacts {
        model,
        request_digest: request,
        response_digest: Digest::sha256(br#"{"choices":[{"message":{"content":"Hi!"}}]}"#),
        prompt_tokens: 1_200,
        cached_prompt_tokens: 1_000,
        completion_tokens: 350,
        reasoning_tokens: 0,
        started_at_ms: 1_798_675_200_000,
        first_token_ms: 180,
        duration_ms: 2_450,
        finish: FinishStatus::Stop,
    };
    Fixture {
        payer,
        host,
        aggregator,
        schedule,
        authorization,
        facts,
    }
}

/// `receipts` as one group commit of a log that starts empty (a group of one is what a host
/// at low load signs: one checkpoint per receipt).
pub(crate) fn alone(key: &SigningKey, receipt: Receipt) -> anyhow::Result<SignedReceipt> {
    let (_, mut bundles) = sign_group(key, &mut CompactRange::new(), vec![receipt])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bundles.pop().context("one bundle")
}

/// The committed guest's hash (`guest/dist/metering.wasm.sha256`): the vectors' receipts
/// name the guest that really produced their `metered` values.
fn pinned_guest(root: &Path) -> anyhow::Result<Digest> {
    let path = root.join("guest/dist/metering.wasm.sha256");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let hex = text.split_whitespace().next().unwrap_or_default();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .context("guest hash is not hex")?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("guest hash is not 32 bytes"))?;
    Ok(Digest(bytes))
}

fn generate(root: &Path) -> anyhow::Result<Value> {
    let f = fixture();
    let signed_auth: SignedAuthorization = f.authorization.clone().sign(&f.payer);
    let input = MeterInput {
        facts: f.facts.clone(),
        schedule: f.schedule.clone(),
        max_fee: f.authorization.max_fee,
    };
    let metered: Metered = tally_guest::meter(&input).map_err(|r| anyhow::anyhow!("{r}"))?;
    let outcome = MeterOutcome(Ok(metered));
    let refusal = MeterOutcome(tally_guest::meter(&MeterInput {
        max_fee: 1,
        ..input.clone()
    }));
    let receipt = Receipt {
        authorization: signed_auth.clone(),
        facts: f.facts.clone(),
        metered,
        guest: pinned_guest(root)?,
        schedule: f.schedule.hash(),
        host_seq: 1,
        channel_total: metered.fee,
        timestamp_ms: 1_798_675_202_500,
    };
    let signed = alone(&f.host, receipt.clone())?;
    let host_checkpoint = signed.checkpoint;
    let header = BatchHeader {
        chain_id: f.authorization.chain_id.clone(),
        contract: f.authorization.contract.clone(),
        aggregator: f.aggregator.public_key(),
        batch: 1,
        prev_header: Digest::ZERO,
        tree_size: 1,
        root: tally_protocol::merkle::leaf_hash(&signed.encode()),
        total: metered.fee,
        debits: vec![ChannelDebit {
            channel: f.authorization.channel(),
            amount: metered.fee,
        }],
    };
    let signed_header: SignedBatchHeader = header.clone().sign(&f.aggregator);
    // The host submits its receipt to the aggregator as one binary record
    // (`u32 BE length ‖ SignedReceipt`), signing the body's SHA-256 (docs/protocol.md §6.1).
    let sr_bytes = signed.encode();
    let mut body = u32::try_from(sr_bytes.len())?.to_be_bytes().to_vec();
    body.extend_from_slice(&sr_bytes);
    let submission = Submission::of_body(f.host.public_key(), 1_798_675_203_000, &body);
    let signed_submission = submission.sign(&f.host);

    let values = vec![
        value(
            "authorization",
            "Authorization",
            &f.authorization,
            &f.authorization.encode(),
        )?,
        value(
            "signed authorization",
            "SignedAuthorization",
            &signed_auth,
            &signed_auth.encode(),
        )?,
        value("usage facts", "UsageFacts", &f.facts, &f.facts.encode())?,
        value(
            "price schedule",
            "PriceSchedule",
            &f.schedule,
            &f.schedule.encode(),
        )?,
        value("metered", "Metered", &metered, &metered.encode())?,
        value("receipt", "Receipt", &receipt, &receipt.encode())?,
        value(
            "host checkpoint",
            "HostCheckpoint",
            &host_checkpoint,
            &host_checkpoint.encode(),
        )?,
        value("signed receipt", "SignedReceipt", &signed, &signed.encode())?,
        value("batch header", "BatchHeader", &header, &header.encode())?,
        value(
            "signed batch header",
            "SignedBatchHeader",
            &signed_header,
            &signed_header.encode(),
        )?,
        value(
            "submission",
            "Submission",
            &submission,
            &submission.encode(),
        )?,
        value(
            "signed submission",
            "SignedSubmission",
            &signed_submission,
            &signed_submission.encode(),
        )?,
    ];

    // Byte-level bad cases: each must fail to decode with the named error code.
    let sr = signed.encode();
    let mut bad_cases = vec![
        bad("empty input", "SignedReceipt", &[], "truncated"),
        bad(
            "truncated by one byte",
            "SignedReceipt",
            &sr[..sr.len() - 1],
            "truncated",
        ),
        bad(
            "one trailing byte",
            "SignedReceipt",
            &[sr.as_slice(), &[0]].concat(),
            "trailing_bytes",
        ),
        bad(
            "a receipt read as an authorization",
            "Authorization",
            &receipt.encode(),
            "wrong_tag",
        ),
        bad(
            "a signed receipt read as a receipt",
            "Receipt",
            &sr,
            "wrong_tag",
        ),
        bad(
            "an authorization read as a batch header",
            "BatchHeader",
            &f.authorization.encode(),
            "wrong_tag",
        ),
        bad(
            "longer than any valid value",
            "Metered",
            &[metered.encode(), vec![0; 64]].concat(),
            "too_long",
        ),
    ];
    let mut v1 = sr.clone();
    v1[16] = 1;
    bad_cases.push(bad(
        "a version 1 signed receipt (refused, §9)",
        "SignedReceipt",
        &v1,
        "unsupported_version",
    ));
    let mut v3 = sr.clone();
    v3[16] = 3;
    bad_cases.push(bad(
        "unknown version",
        "SignedReceipt",
        &v3,
        "unsupported_version",
    ));
    let mut facts_bad = f.facts.clone();
    facts_bad.cached_prompt_tokens = facts_bad.prompt_tokens + 1;
    bad_cases.push(bad(
        "cached tokens above prompt tokens",
        "UsageFacts",
        &facts_bad.encode(),
        "invalid_field",
    ));
    let mut fin = f.facts.encode();
    let last = fin.len() - 1;
    fin[last] = 5;
    bad_cases.push(bad(
        "unknown finish status",
        "UsageFacts",
        &fin,
        "invalid_field",
    ));
    let mut a0 = f.authorization.clone();
    a0.seq = 0;
    bad_cases.push(bad(
        "authorization seq 0",
        "Authorization",
        &a0.encode(),
        "invalid_field",
    ));
    let mut sp = f.authorization.clone();
    sp.chain_id = "tally devnet".into();
    bad_cases.push(bad(
        "space in chain id",
        "Authorization",
        &sp.encode(),
        "invalid_field",
    ));
    let mut s_unsorted = f.schedule.clone();
    s_unsorted.tiers.swap(0, 1);
    bad_cases.push(bad(
        "tiers out of order",
        "PriceSchedule",
        &s_unsorted.encode(),
        "invalid_field",
    ));
    let mut s_empty = f.schedule.clone();
    s_empty.tiers.clear();
    bad_cases.push(bad(
        "no tiers",
        "PriceSchedule",
        &s_empty.encode(),
        "invalid_field",
    ));
    bad_cases.push(bad(
        "a submission read as a signed submission",
        "SignedSubmission",
        &submission.encode(),
        "wrong_tag",
    ));
    bad_cases.push(bad(
        "signed submission without its last signature byte",
        "SignedSubmission",
        &signed_submission.encode()[..signed_submission.encode().len() - 1],
        "truncated",
    ));
    let mut h_total = header.clone();
    h_total.total += 1;
    bad_cases.push(bad(
        "batch total is not the sum of debits",
        "BatchHeader",
        &h_total.encode(),
        "invalid_field",
    ));

    let host_log = crate::vectors_more::host_log(&f, pinned_guest(root)?)?;
    bad_cases.extend(crate::vectors_more::more_bad_encodings(
        &f,
        &receipt,
        &header,
        &input,
        &outcome,
        &host_log.bundles,
    ));

    // Receipts that decode but must not verify.
    let mut bad_receipts = Vec::new();
    let mut flipped = signed.clone();
    flipped.checkpoint.signature.0[0] ^= 1;
    bad_receipts.push(json!({"name": "host checkpoint signature bit flipped", "canonical": hex(&flipped.encode()), "error": "host_signature"}));
    let mut payer_flip = receipt.clone();
    payer_flip.authorization.signature.0[63] ^= 0x40;
    let payer_flip = alone(&f.host, payer_flip)?;
    bad_receipts.push(json!({"name": "payer signature altered, host signed the log", "canonical": hex(&payer_flip.encode()), "error": "payer_signature"}));
    let mut over = receipt.clone();
    over.metered.fee = f.authorization.max_fee + 1;
    over.channel_total = over.metered.fee;
    bad_receipts.push(json!({"name": "fee above max_fee", "canonical": hex(&alone(&f.host, over)?.encode()), "error": "fee_above_max"}));
    let mut cap = receipt.clone();
    cap.channel_total = f.authorization.cumulative_cap + 1;
    bad_receipts.push(json!({"name": "channel total above cap", "canonical": hex(&alone(&f.host, cap)?.encode()), "error": "total_above_cap"}));
    let mut late = receipt.clone();
    late.timestamp_ms = f.authorization.expires_at_ms + 1;
    bad_receipts.push(json!({"name": "made after expiry", "canonical": hex(&alone(&f.host, late)?.encode()), "error": "expired"}));
    let mut other_host = signed.clone();
    other_host.checkpoint = tally_protocol::HostCheckpoint::sign(
        &f.authorization.chain_id,
        &f.authorization.contract,
        &f.aggregator,
        signed.checkpoint.size,
        signed.checkpoint.root,
    );
    bad_receipts.push(json!({"name": "checkpoint signed by a key that is not the host", "canonical": hex(&other_host.encode()), "error": "host_signature"}));

    bad_receipts.extend(crate::vectors_more::more_bad_receipts(&f, &receipt)?);

    Ok(json!({
        "about": "Golden vectors for Tally's canonical encoding (docs/protocol.md). Regenerate only with `cargo xtask vectors`.",
        "keys": {
            "payer": {"seed": hex(&[1; 32]), "public": f.payer.public_key().to_string()},
            "host": {"seed": hex(&[2; 32]), "public": f.host.public_key().to_string()},
            "aggregator": {"seed": hex(&[3; 32]), "public": f.aggregator.public_key().to_string()},
        },
        "values": values,
        "receipt_id": signed.id().to_string(),
        "channel_id": f.authorization.channel().to_string(),
        "schedule_hash": f.schedule.hash().to_string(),
        "meter": {
            "input": hex(&input.encode()),
            "outcome": hex(&outcome.encode()),
            "refused_input": hex(&MeterInput { max_fee: 1, ..input.clone() }.encode()),
            "refused_outcome": hex(&refusal.encode()),
        },
        "merkle_leaf": tally_protocol::merkle::leaf_hash(&sr).to_string(),
        "host_leaf": receipt.leaf_hash().to_string(),
        "submission_body": hex(&body),
        "submission_body_sha256": Digest::sha256(&body).to_string(),
        "bad_encodings": bad_cases,
        "bad_receipts": bad_receipts,
        "bad_json": crate::vectors_more::bad_json(&f, &signed)?,
        "small_order": crate::vectors_more::small_order(&f, &receipt)?,
        "host_log": crate::vectors_more::host_log_vectors(&f, &host_log)?,
        "equivocation": crate::vectors_more::equivocation(&f, &host_log)?,
        "log": crate::vectors_more::log(&f, &host_log.bundles)?,
        "journal": crate::vectors_more::journal(&host_log)?,
        "contract_messages": crate::vectors_more::contract_messages(&f),
    }))
}
