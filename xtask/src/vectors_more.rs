//! Golden vectors beyond single values: a host's log of receipts over three channels with
//! its Merkle roots, proofs, batch headers and checkpoints; a journal with a torn tail; bad
//! JSON; precedence between decode errors; and a receipt under a small-order key that
//! ZIP-215 accepts. `docs/protocol.md` states the rule each one pins.
use anyhow::Context;
use serde_json::{Value, json};
use tally_protocol::merkle::{MemoryTree, consistency_proof, inclusion_proof, leaf_hash};
use tally_protocol::{
    Authorization, BatchHeader, ChannelDebit, ChannelId, Checkpoint, Digest, MeterInput,
    MeterOutcome, PublicKey, Receipt, Signature, SignedReceipt, SigningKey, UsageFacts, log_origin,
};

use crate::vectors::Fixture;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bad(name: &str, ty: &str, bytes: &[u8], error: &str) -> Value {
    json!({ "name": name, "type": ty, "canonical": hex(bytes), "error": error })
}

/// Decode failures that pin the order of the checks (§1.2) and the field rules of batch
/// headers and guest outcomes.
pub(crate) fn more_bad_encodings(
    f: &Fixture,
    receipt: &Receipt,
    header: &BatchHeader,
    input: &MeterInput,
    outcome: &MeterOutcome,
) -> Vec<Value> {
    let mut out = Vec::new();
    // Precedence: the tag beats the length, the length beats everything after it.
    let long_receipt = [receipt.encode(), vec![0; 400]].concat();
    out.push(bad(
        "too long and another type's tag: the tag is reported",
        "Authorization",
        &long_receipt,
        "wrong_tag",
    ));
    let mut long_v2 = [f.authorization.encode(), vec![0; 400]].concat();
    long_v2[16] = 2;
    out.push(bad(
        "too long and an unknown version: the length is reported",
        "Authorization",
        &long_v2,
        "too_long",
    ));
    let a = f.authorization.encode();
    out.push(bad(
        "shorter than the tag",
        "Authorization",
        &a[..10],
        "truncated",
    ));
    out.push(bad(
        "tag only, no version byte",
        "Authorization",
        &a[..16],
        "truncated",
    ));
    // Text: the length byte, then the bytes (truncated first), then the rule.
    let mut empty_chain = a[..17].to_vec();
    empty_chain.push(0);
    empty_chain.extend_from_slice(&a[17 + 1 + f.authorization.chain_id.len()..]);
    out.push(bad(
        "empty chain id",
        "Authorization",
        &empty_chain,
        "invalid_field",
    ));
    let mut cut_text = a[..17].to_vec();
    cut_text.push(200);
    cut_text.extend_from_slice(b"tally");
    out.push(bad(
        "text length beyond the input: truncated before the length rule",
        "Authorization",
        &cut_text,
        "truncated",
    ));
    // A cross-field rule is checked only after the type's last field: a cut-short
    // authorisation with seq 0 is truncated, not invalid.
    let mut a0 = f.authorization.clone();
    a0.seq = 0;
    let a0 = a0.encode();
    out.push(bad(
        "seq 0 and cut short: the truncation is reported",
        "Authorization",
        &a0[..a0.len() - 1],
        "truncated",
    ));
    // Nested values keep their own tags.
    let mut nested = receipt.encode();
    nested[17] ^= 0x01;
    out.push(bad(
        "a receipt whose nested signed authorisation has a damaged tag",
        "Receipt",
        &nested,
        "wrong_tag",
    ));
    // Batch header rules (all decode errors).
    let mut h = header.clone();
    h.batch = 0;
    out.push(bad(
        "batch number 0",
        "BatchHeader",
        &h.encode(),
        "invalid_field",
    ));
    let mut h = header.clone();
    h.prev_header = Digest([7; 32]);
    out.push(bad(
        "batch 1 with a previous header",
        "BatchHeader",
        &h.encode(),
        "invalid_field",
    ));
    let mut h = header.clone();
    h.batch = 2;
    out.push(bad(
        "batch 2 without a previous header",
        "BatchHeader",
        &h.encode(),
        "invalid_field",
    ));
    let mut h = header.clone();
    let d = h.debits[0];
    h.debits = vec![d, d];
    h.total = d.amount * 2;
    out.push(bad(
        "one channel debited twice",
        "BatchHeader",
        &h.encode(),
        "invalid_field",
    ));
    let mut h = header.clone();
    h.debits[0].amount = 0;
    h.total = 0;
    out.push(bad(
        "zero debit",
        "BatchHeader",
        &h.encode(),
        "invalid_field",
    ));
    let mut many = header.encode();
    let count_at = many.len() - 2 - 48 * header.debits.len();
    many[count_at..count_at + 2].copy_from_slice(&4097u16.to_be_bytes());
    out.push(bad(
        "debit count above 4096 (checked before the debits are read)",
        "BatchHeader",
        &many,
        "invalid_field",
    ));
    // Guest ABI bytes.
    let mut code = outcome.encode();
    code[17] = 5;
    out.push(bad(
        "unknown outcome code",
        "MeterOutcome",
        &code[..18],
        "invalid_field",
    ));
    out.push(bad(
        "meter input with a trailing byte",
        "MeterInput",
        &[input.encode(), vec![0]].concat(),
        "trailing_bytes",
    ));
    out.push(bad(
        "meter input longer than its maximum",
        "MeterInput",
        &[input.encode(), vec![0; MeterInput::MAX_ENCODED_LEN]].concat(),
        "too_long",
    ));
    out
}

/// Receipts that fail more than one rule: the first rule in the order of §2.9 is reported.
pub(crate) fn more_bad_receipts(f: &Fixture, receipt: &Receipt) -> Vec<Value> {
    let mut out = Vec::new();
    let mut both = receipt.clone();
    both.facts.model = Digest([9; 32]);
    both.metered.fee = f.authorization.max_fee + 1;
    both.channel_total = both.metered.fee;
    out.push(json!({
        "name": "model mismatch and fee above max: the model is reported",
        "canonical": hex(&both.sign(&f.host).encode()),
        "error": "model_mismatch",
    }));
    let mut over = receipt.clone();
    over.metered.fee = f.authorization.max_fee + 1;
    over.channel_total = over.metered.fee;
    let mut unsigned = over.sign(&f.host);
    unsigned.signature.0[5] ^= 1;
    out.push(json!({
        "name": "fee above max and a bad host signature: field rules come before signatures",
        "canonical": hex(&unsigned.encode()),
        "error": "fee_above_max",
    }));
    let mut second = receipt.clone();
    second.host_seq = 2;
    out.push(json!({
        "name": "host_seq 2 with a zero previous receipt",
        "canonical": hex(&second.sign(&f.host).encode()),
        "error": "host_chain_link",
    }));
    let mut below = receipt.clone();
    below.channel_total = receipt.metered.fee - 1;
    out.push(json!({
        "name": "channel total below the fee",
        "canonical": hex(&below.sign(&f.host).encode()),
        "error": "total_below_fee",
    }));
    out
}

/// JSON that must be refused (§8): each `json` must fail to parse as `type`.
pub(crate) fn bad_json(f: &Fixture, signed: &SignedReceipt) -> anyhow::Result<Vec<Value>> {
    let auth = serde_json::to_value(&f.authorization)?;
    let mut unknown = auth.clone();
    unknown["note"] = json!("hello");
    let mut upper = auth.clone();
    upper["payer"] = json!(f.authorization.payer.to_string().to_uppercase());
    let mut number = auth.clone();
    number["max_fee"] = json!(50_000);
    let mut leading = auth.clone();
    leading["cumulative_cap"] = json!("01000000");
    let mut plus = auth.clone();
    plus["max_fee"] = json!("+50000");
    let mut short = auth.clone();
    short["model"] = json!(&f.authorization.model.to_string()[..62]);
    let mut seq0 = auth.clone();
    seq0["seq"] = json!(0);
    let mut finish = serde_json::to_value(&f.facts)?;
    finish["finish"] = json!("Stop");
    let mut sr = serde_json::to_value(signed)?;
    sr["host_signature"] = sr["signature"].take();
    let cases = vec![
        ("an unknown field", "Authorization", unknown),
        ("upper-case hex", "Authorization", upper),
        (
            "a JSON number where a u128 string belongs",
            "Authorization",
            number,
        ),
        ("an amount with a leading zero", "Authorization", leading),
        ("an amount with a sign", "Authorization", plus),
        ("a digest of 31 bytes", "Authorization", short),
        (
            "seq 0 (field rules apply to JSON too)",
            "Authorization",
            seq0,
        ),
        ("a finish status not in snake_case", "UsageFacts", finish),
        ("a signed wrapper with a renamed field", "SignedReceipt", sr),
    ];
    Ok(cases
        .into_iter()
        .map(|(name, ty, v)| json!({"name": name, "type": ty, "json": v}))
        .collect())
}

/// A receipt whose host key is a small-order, non-canonical point, with a signature
/// `(R = that point, s = 0)`: ZIP-215 accepts it for every message (the cofactored equation
/// is `0 = 0`), strict verifiers reject it. The native verifier and the contract must both
/// accept it, because they must never disagree.
pub(crate) fn small_order(f: &Fixture, receipt: &Receipt) -> anyhow::Result<Value> {
    // The identity point (y = 1) written with y + p: non-canonical and of order 1.
    let mut point = [0xffu8; 32];
    point[0] = 0xee;
    point[31] = 0x7f;
    let key = PublicKey(point);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&point);
    let signature = Signature(sig);
    let mut a = f.authorization.clone();
    a.host = key;
    let authorization = a.sign(&f.payer);
    let r = Receipt {
        authorization,
        ..receipt.clone()
    };
    let signed = SignedReceipt {
        receipt: r,
        signature,
    };
    signed
        .verify()
        .map_err(|e| anyhow::anyhow!("ZIP-215 must accept the small-order receipt: {e}"))?;
    Ok(json!({
        "about": "host key = the identity point encoded with y = p + 1 (non-canonical, small order); host signature R = that point, s = 0. ZIP-215 accepts; strict RFC 8032 verifiers reject.",
        "host_key": key.to_string(),
        "signature": hex(&signature.0),
        "signed_receipt": hex(&signed.encode()),
        "receipt_id": signed.id().to_string(),
    }))
}

/// One host's log over three channels (six receipts, one skipped `seq`), its Merkle roots
/// and proofs, and two batches with their checkpoints.
/// The log's receipts: one host, three payers, six calls.
pub(crate) fn host_log(f: &Fixture, guest: Digest) -> anyhow::Result<Vec<SignedReceipt>> {
    let payers = log_payers();
    // (payer index, seq): channel a gets 1, 2, 3; channel b gets 1 then 3 (2 is skipped);
    // channel c gets 1.
    let calls = [(0usize, 1u64), (1, 1), (0, 2), (2, 1), (1, 3), (0, 3)];
    let mut receipts: Vec<SignedReceipt> = Vec::new();
    let mut totals = std::collections::BTreeMap::<ChannelId, u128>::new();
    let mut prev = Digest::ZERO;
    for (i, &(p, seq)) in calls.iter().enumerate() {
        let n = i as u64 + 1;
        let body =
            format!(r#"{{"model":"example","messages":[{{"role":"user","content":"call {n}"}}]}}"#);
        let request = Digest::sha256(body.as_bytes());
        let a = Authorization {
            payer: payers[p].public_key(),
            seq,
            request_digest: request,
            ..f.authorization.clone()
        };
        let facts = UsageFacts {
            request_digest: request,
            response_digest: Digest::sha256(format!("answer {n}").as_bytes()),
            prompt_tokens: 1_000 + 100 * n,
            cached_prompt_tokens: 200 * (n % 2),
            completion_tokens: 50 * n,
            started_at_ms: f.facts.started_at_ms + 60_000 * n,
            ..f.facts.clone()
        };
        let input = MeterInput {
            facts: facts.clone(),
            schedule: f.schedule.clone(),
            max_fee: a.max_fee,
        };
        let metered = tally_guest::meter(&input).map_err(|r| anyhow::anyhow!("{r}"))?;
        let channel = a.channel();
        let total = totals.get(&channel).copied().unwrap_or(0) + metered.fee;
        totals.insert(channel, total);
        let r = Receipt {
            authorization: a.sign(&payers[p]),
            facts,
            metered,
            guest,
            schedule: f.schedule.hash(),
            host_seq: n,
            prev_receipt: prev,
            channel_total: total,
            timestamp_ms: f.facts.started_at_ms + 60_000 * n + 2_000,
        };
        let signed = r.sign(&f.host);
        prev = signed.id();
        receipts.push(signed);
    }
    Ok(receipts)
}

fn log_payers() -> [SigningKey; 3] {
    [
        SigningKey::from_seed(&[1; 32]),
        SigningKey::from_seed(&[4; 32]),
        SigningKey::from_seed(&[5; 32]),
    ]
}

pub(crate) fn log(f: &Fixture, receipts: &[SignedReceipt]) -> anyhow::Result<Value> {
    let payers = log_payers();
    let mut tree = MemoryTree::new();
    let leaves: Vec<Vec<u8>> = receipts.iter().map(SignedReceipt::encode).collect();
    for l in &leaves {
        tree.append(leaf_hash(l));
    }
    let size = tree.size();
    let roots: Vec<String> = (0..=size)
        .map(|s| tree.root_at(s).map(|r| r.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut inclusion = Vec::new();
    for s in 1..=size {
        for i in 0..s {
            let p = inclusion_proof(&tree, i, s).map_err(|e| anyhow::anyhow!("{e}"))?;
            inclusion.push(json!({
                "leaf_index": i,
                "tree_size": s,
                "hashes": p.hashes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }));
        }
    }
    let mut consistency = Vec::new();
    for s2 in 1..=size {
        for s1 in 1..=s2 {
            let p = consistency_proof(&tree, s1, s2).map_err(|e| anyhow::anyhow!("{e}"))?;
            consistency.push(json!({
                "size1": s1,
                "size2": s2,
                "hashes": p.hashes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }));
        }
    }
    let consistency_errors = vec![
        json!({"name": "from the empty tree, with an empty proof", "size1": 0, "size2": 4, "root1": roots[0], "root2": roots[4], "hashes": [], "error": "empty_old_tree"}),
        json!({"name": "from the empty tree to itself", "size1": 0, "size2": 0, "root1": roots[0], "root2": roots[0], "hashes": [], "error": "empty_old_tree"}),
        json!({"name": "sizes in the wrong order", "size1": 4, "size2": 3, "root1": roots[4], "root2": roots[3], "hashes": [], "error": "size_order"}),
        json!({"name": "equal sizes with a non-empty proof", "size1": 3, "size2": 3, "root1": roots[3], "root2": roots[3], "hashes": [roots[1]], "error": "wrong_proof_size"}),
    ];

    // Two batches: debits are channel totals at the batch's size minus those at the
    // previous batch's size.
    let total_at = |size: u64| {
        let mut m = std::collections::BTreeMap::<ChannelId, u128>::new();
        for r in &receipts[..usize::try_from(size).unwrap_or(0)] {
            m.insert(r.receipt.channel(), r.receipt.channel_total);
        }
        m
    };
    let origin = log_origin(&f.authorization.chain_id, &f.authorization.contract)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut batches = Vec::new();
    let mut prev_header = Digest::ZERO;
    let mut prev_size = 0;
    for (n, tree_size) in [(1u64, 4u64), (2, 6)] {
        let before = total_at(prev_size);
        let debits: Vec<ChannelDebit> = total_at(tree_size)
            .into_iter()
            .filter_map(|(channel, t)| {
                let amount = t - before.get(&channel).copied().unwrap_or(0);
                (amount > 0).then_some(ChannelDebit { channel, amount })
            })
            .collect();
        let header = BatchHeader {
            chain_id: f.authorization.chain_id.clone(),
            contract: f.authorization.contract.clone(),
            aggregator: f.aggregator.public_key(),
            batch: n,
            prev_header,
            tree_size,
            root: tree
                .root_at(tree_size)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            total: debits.iter().map(|d| d.amount).sum(),
            debits,
        };
        header.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        let note = Checkpoint {
            origin: origin.clone(),
            size: tree_size,
            root: header.root,
        }
        .sign(&f.aggregator)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        batches.push(json!({
            "signed_header": hex(&header.clone().sign(&f.aggregator).encode()),
            "header_hash": header.hash().to_string(),
            "checkpoint": note,
            "consistency_from_previous": if prev_size == 0 {
                Vec::new()
            } else {
                consistency_proof(&tree, prev_size, tree_size)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .hashes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            },
        }));
        prev_header = header.hash();
        prev_size = tree_size;
    }
    let note = batches[0]["checkpoint"]
        .as_str()
        .context("note")?
        .to_owned();
    let bad_checkpoints = bad_checkpoints(f, &origin, &note)?;
    Ok(json!({
        "about": "One host (seed 02), payers seeds 01, 04, 05 on one model: receipts host_seq 1..6; channel of payer 04 skips seq 2. Leaves are the SignedReceipt encodings.",
        "payers": payers.iter().map(|k| k.public_key().to_string()).collect::<Vec<_>>(),
        "receipts": leaves.iter().map(|l| hex(l)).collect::<Vec<_>>(),
        "receipt_ids": receipts.iter().map(|r| r.id().to_string()).collect::<Vec<_>>(),
        "leaf_hashes": leaves.iter().map(|l| leaf_hash(l).to_string()).collect::<Vec<_>>(),
        "roots": roots,
        "inclusion": inclusion,
        "consistency": consistency,
        "consistency_errors": consistency_errors,
        "origin": origin,
        "key_id": hex(&tally_protocol::key_id(&origin, &f.aggregator.public_key())),
        "batches": batches,
        "bad_checkpoints": bad_checkpoints,
    }))
}

/// Checkpoint notes that must be rejected, each with its error code, and one cosigned note
/// that must be accepted.
fn bad_checkpoints(f: &Fixture, origin: &str, note: &str) -> anyhow::Result<Vec<Value>> {
    let size_line = note.lines().nth(1).context("size line")?.to_owned();
    let other = SigningKey::from_seed(&[6; 32]);
    let by_other = Checkpoint::parse_unverified(note)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .sign(&other)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let forged_origin = Checkpoint {
        origin: format!("{origin}-other"),
        ..Checkpoint::parse_unverified(note).map_err(|e| anyhow::anyhow!("{e}"))?
    }
    .sign(&f.aggregator)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let witness = "\u{2014} witness.example/w1 BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n";
    Ok(vec![
        json!({"name": "size changed", "note": note.replacen(&format!("\n{size_line}\n"), "\n5\n", 1), "error": "bad_signature"}),
        json!({"name": "size with a leading zero", "note": note.replacen(&format!("\n{size_line}\n"), &format!("\n0{size_line}\n"), 1), "error": "checkpoint_malformed"}),
        json!({"name": "an extension line", "note": note.replacen("\n\n", "\nextension\n\n", 1), "error": "checkpoint_malformed"}),
        json!({"name": "no final newline", "note": note.trim_end(), "error": "note_malformed"}),
        json!({"name": "signed by another key", "note": by_other, "error": "no_signature"}),
        json!({"name": "another log's origin", "note": forged_origin, "error": "wrong_origin"}),
        json!({"name": "cosigned by a witness (accepted)", "note": format!("{note}{witness}"), "error": null}),
    ])
}

/// A journal (§6) of the log's first three receipts followed by a torn fourth: recovery
/// keeps the three and cuts the tail.
pub(crate) fn journal(receipts: &[SignedReceipt]) -> anyhow::Result<Value> {
    let record = |p: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut r = u32::try_from(p.len())?.to_be_bytes().to_vec();
        r.extend_from_slice(&crc32(p).to_be_bytes());
        r.extend_from_slice(p);
        Ok(r)
    };
    let mut bytes = b"TALLYJ01".to_vec();
    let mut ends = Vec::new();
    let mut crcs = Vec::new();
    for r in receipts.iter().take(3) {
        let payload = r.encode();
        bytes.extend_from_slice(&record(&payload)?);
        ends.push(bytes.len());
        crcs.push(format!("{:08x}", crc32(&payload)));
    }
    let full = bytes.len();
    let torn = record(&receipts.get(3).context("a fourth receipt")?.encode())?;
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    Ok(json!({
        "about": "magic TALLYJ01, then records len:u32 BE | crc32:u32 BE | payload (the log's receipts 1..3); the fourth record is torn (half written).",
        "bytes": hex(&bytes),
        "record_ends": ends,
        "intact_len": full,
        "torn_tail_len": bytes.len() - full,
        "record_crc32": crcs,
    }))
}

/// CRC-32 (IEEE 802.3, as zlib), bit by bit: the journal's record checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// The contract's two signed messages (`docs/protocol.md` §12.3): each with its fields, its
/// exact bytes, the signing key and the signature a verifier must accept.
pub(crate) fn contract_messages(f: &Fixture) -> Value {
    let (chain, contract) = ("tally-devnet-1", "tally1contract");
    let payer = f.payer.public_key();
    let withdraw =
        tally_protocol::withdraw_message(chain, contract, &payer.0, 3, 250_000, "tally1recipient");
    let host = f.host.public_key();
    let registration =
        tally_protocol::host_registration_message(chain, contract, &host.0, "tally1operator");
    json!([
        {
            "name": "withdrawal request",
            "fields": {"chain_id": chain, "contract": contract, "payer": hex(&payer.0),
                       "nonce": 3, "amount": "250000", "recipient": "tally1recipient"},
            "message": hex(&withdraw),
            "key": hex(&payer.0),
            "signature": hex(&f.payer.sign(&withdraw).0),
        },
        {
            "name": "host registration",
            "fields": {"chain_id": chain, "contract": contract, "host": hex(&host.0),
                       "operator": "tally1operator"},
            "message": hex(&registration),
            "key": hex(&host.0),
            "signature": hex(&f.host.sign(&registration).0),
        },
    ])
}
