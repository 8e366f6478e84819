//! Golden vectors beyond single values: a host's log of receipts over three channels with
//! its Merkle roots, proofs, batch headers and checkpoints; a journal with a torn tail; bad
//! JSON; precedence between decode errors; and a receipt under a small-order key that
//! ZIP-215 accepts. `docs/protocol.md` states the rule each one pins.
use anyhow::Context;
use serde_json::{Value, json};
use tally_protocol::merkle::{
    CompactRange, MemoryTree, consistency_proof, inclusion_proof, leaf_hash,
};
use tally_protocol::{
    Authorization, BatchHeader, ChannelDebit, ChannelId, Checkpoint, Digest, HostCheckpoint,
    MeterInput, MeterOutcome, PublicKey, Receipt, Signature, SignedReceipt, SigningKey, UsageFacts,
    host_origin, log_origin, sign_group,
};

use crate::vectors::{Fixture, alone};

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
    bundles: &[SignedReceipt],
) -> Vec<Value> {
    let mut out = Vec::new();
    // Receipts v2: the receipt's own rule and the bundle's rules (§2.9, §2.10).
    let mut v1 = receipt.encode();
    v1[16] = 1;
    out.push(bad(
        "a version 1 receipt (refused, §9)",
        "Receipt",
        &v1,
        "unsupported_version",
    ));
    let mut zero = receipt.clone();
    zero.host_seq = 0;
    out.push(bad(
        "host_seq 0",
        "Receipt",
        &zero.encode(),
        "invalid_field",
    ));
    if let Some(b) = bundles.get(1) {
        let mut beyond = b.clone();
        beyond.receipt.host_seq = beyond.checkpoint.size + 1;
        out.push(bad(
            "host_seq beyond the checkpoint's size",
            "SignedReceipt",
            &beyond.encode(),
            "invalid_field",
        ));
        let mut short = b.clone();
        short.proof.pop();
        out.push(bad(
            "an inclusion proof one hash short",
            "SignedReceipt",
            &short.encode(),
            "invalid_field",
        ));
        let mut long = b.clone();
        long.proof.push(Digest([7; 32]));
        out.push(bad(
            "an inclusion proof one hash long",
            "SignedReceipt",
            &long.encode(),
            "invalid_field",
        ));
        let mut many = b.encode();
        let count_at = many.len() - 1 - 32 * b.proof.len();
        many[count_at] = 65;
        out.push(bad(
            "proof count above 64 (checked before the hashes are read)",
            "SignedReceipt",
            &many,
            "invalid_field",
        ));
        let cut = b.encode();
        let mut both = b.clone();
        both.receipt.host_seq = both.checkpoint.size + 1;
        let both = both.encode();
        out.push(bad(
            "host_seq beyond the size and cut short: the truncation is reported",
            "SignedReceipt",
            &both[..both.len() - 1],
            "truncated",
        ));
        out.push(bad(
            "a bundle without its last proof hash byte",
            "SignedReceipt",
            &cut[..cut.len() - 1],
            "truncated",
        ));
        let mut cp0 = b.checkpoint;
        cp0.size = 0;
        out.push(bad(
            "host checkpoint of size 0",
            "HostCheckpoint",
            &cp0.encode(),
            "invalid_field",
        ));
        out.push(bad(
            "a host checkpoint read as a signed receipt",
            "SignedReceipt",
            &b.checkpoint.encode(),
            "wrong_tag",
        ));
    }
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

/// Receipts that fail more than one rule, or fail only a host-log check: the first rule in
/// the order of §2.9 is reported.
pub(crate) fn more_bad_receipts(f: &Fixture, receipt: &Receipt) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut both = receipt.clone();
    both.facts.model = Digest([9; 32]);
    both.metered.fee = f.authorization.max_fee + 1;
    both.channel_total = both.metered.fee;
    out.push(json!({
        "name": "model mismatch and fee above max: the model is reported",
        "canonical": hex(&alone(&f.host, both)?.encode()),
        "error": "model_mismatch",
    }));
    let mut over = receipt.clone();
    over.metered.fee = f.authorization.max_fee + 1;
    over.channel_total = over.metered.fee;
    let mut unsigned = alone(&f.host, over)?;
    unsigned.checkpoint.signature.0[5] ^= 1;
    out.push(json!({
        "name": "fee above max and a bad host signature: field rules come before signatures",
        "canonical": hex(&unsigned.encode()),
        "error": "fee_above_max",
    }));
    let mut below = receipt.clone();
    below.channel_total = receipt.metered.fee - 1;
    out.push(json!({
        "name": "channel total below the fee",
        "canonical": hex(&alone(&f.host, below)?.encode()),
        "error": "total_below_fee",
    }));
    // A receipt changed after the host signed its log: the leaf no longer leads to the root.
    let good = alone(&f.host, receipt.clone())?;
    let mut edited = good.clone();
    edited.receipt.facts.completion_tokens += 1;
    out.push(json!({
        "name": "a token count changed after the checkpoint was signed",
        "canonical": hex(&edited.encode()),
        "error": "host_inclusion",
    }));
    let mut second = receipt.clone();
    second.host_seq = 2;
    let mut fr = CompactRange::new();
    let (_, pair) = sign_group(&f.host, &mut fr, vec![receipt.clone(), second])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut moved = pair[1].clone();
    moved.proof[0].0[0] ^= 1;
    moved.checkpoint.signature.0[1] ^= 1;
    out.push(json!({
        "name": "a proof hash altered and a bad checkpoint signature: inclusion is reported",
        "canonical": hex(&moved.encode()),
        "error": "host_inclusion",
    }));
    let mut payer_too = pair[1].clone();
    payer_too.checkpoint.signature.0[1] ^= 1;
    payer_too.receipt.authorization.signature.0[2] ^= 1;
    let payer_too = {
        // Re-sign the log over the altered payer signature, then break the host's.
        let mut fr = CompactRange::new();
        let mut rs = vec![pair[0].receipt.clone(), payer_too.receipt.clone()];
        let (_, mut b) = sign_group(&f.host, &mut fr, std::mem::take(&mut rs))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut last = b.pop().context("two bundles")?;
        last.checkpoint.signature.0[1] ^= 1;
        last
    };
    out.push(json!({
        "name": "bad host and payer signatures: the host's is reported",
        "canonical": hex(&payer_too.encode()),
        "error": "host_signature",
    }));
    let mut elsewhere = good.clone();
    elsewhere.checkpoint = HostCheckpoint::sign(
        &f.authorization.chain_id,
        "cosmwasm1another",
        &f.host,
        good.checkpoint.size,
        good.checkpoint.root,
    );
    out.push(json!({
        "name": "a checkpoint the host signed for another contract's log",
        "canonical": hex(&elsewhere.encode()),
        "error": "host_signature",
    }));
    Ok(out)
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
    sr["host_checkpoint"] = sr["checkpoint"].take();
    let mut long = serde_json::to_value(signed)?;
    long["proof"] = json!([Digest([7; 32]).to_string()]);
    let mut cp0 = serde_json::to_value(signed)?;
    cp0["checkpoint"]["size"] = json!(0);
    cp0["receipt"]["host_seq"] = json!(0);
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
        (
            "a proof longer than host_seq and size imply",
            "SignedReceipt",
            long,
        ),
        (
            "host_seq 0 under a checkpoint of size 0",
            "SignedReceipt",
            cp0,
        ),
    ];
    Ok(cases
        .into_iter()
        .map(|(name, ty, v)| json!({"name": name, "type": ty, "json": v}))
        .collect())
}

/// A receipt whose host key is a small-order, non-canonical point, with a checkpoint
/// signature `(R = that point, s = 0)`: ZIP-215 accepts it for every message (the cofactored
/// equation is `0 = 0`), strict verifiers reject it. The native verifier and the contract
/// must both accept it, because they must never disagree.
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
    // A log of one receipt: its root is the leaf, its proof is empty.
    let signed = SignedReceipt {
        checkpoint: HostCheckpoint {
            size: 1,
            root: r.leaf_hash(),
            signature,
        },
        receipt: r,
        proof: Vec::new(),
    };
    signed
        .verify()
        .map_err(|e| anyhow::anyhow!("ZIP-215 must accept the small-order receipt: {e}"))?;
    Ok(json!({
        "about": "host key = the identity point encoded with y = p + 1 (non-canonical, small order); host checkpoint signature R = that point, s = 0. ZIP-215 accepts; strict RFC 8032 verifiers reject.",
        "host_key": key.to_string(),
        "signature": hex(&signature.0),
        "signed_receipt": hex(&signed.encode()),
        "receipt_id": signed.id().to_string(),
    }))
}

/// The vectors' host log: its receipts, the group commits that signed them and each
/// receipt's bundle.
pub(crate) struct HostLog {
    /// The receipts, `host_seq` 1..6.
    pub(crate) receipts: Vec<Receipt>,
    /// Each group commit: its first `host_seq`, its last, and its checkpoint.
    pub(crate) groups: Vec<(u64, u64, HostCheckpoint)>,
    /// Each receipt's bundle under its group's checkpoint.
    pub(crate) bundles: Vec<SignedReceipt>,
}

/// The group commits of the vectors' host log: a group of one, of three, of two.
const GROUPS: [(usize, usize); 3] = [(0, 1), (1, 4), (4, 6)];

/// The log's receipts: one host, three payers, six calls, signed in three group commits.
pub(crate) fn host_log(f: &Fixture, guest: Digest) -> anyhow::Result<HostLog> {
    let payers = log_payers();
    // (payer index, seq): channel a gets 1, 2, 3; channel b gets 1 then 3 (2 is skipped);
    // channel c gets 1.
    let calls = [(0usize, 1u64), (1, 1), (0, 2), (2, 1), (1, 3), (0, 3)];
    let mut receipts: Vec<Receipt> = Vec::new();
    let mut totals = std::collections::BTreeMap::<ChannelId, u128>::new();
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
            channel_total: total,
            timestamp_ms: f.facts.started_at_ms + 60_000 * n + 2_000,
        };
        receipts.push(r);
    }
    let mut frontier = CompactRange::new();
    let mut groups = Vec::new();
    let mut bundles = Vec::new();
    for (from, to) in GROUPS {
        let (cp, b) = sign_group(&f.host, &mut frontier, receipts[from..to].to_vec())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        groups.push((from as u64 + 1, to as u64, cp));
        bundles.extend(b);
    }
    Ok(HostLog {
        receipts,
        groups,
        bundles,
    })
}

/// The host log itself (§4.2): receipt encodings, leaf hashes, the roots at every size,
/// each group's checkpoint (binary and the signed body text) and each bundle.
pub(crate) fn host_log_vectors(f: &Fixture, log: &HostLog) -> anyhow::Result<Value> {
    let mut tree = MemoryTree::new();
    for r in &log.receipts {
        tree.append(r.leaf_hash());
    }
    let roots: Vec<String> = (1..=tree.size())
        .map(|s| tree.root_at(s).map(|r| r.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let origin = host_origin(
        &f.authorization.chain_id,
        &f.authorization.contract,
        &f.host.public_key(),
    );
    let groups: Vec<Value> = log
        .groups
        .iter()
        .map(|(first, last, cp)| {
            json!({
                "first_host_seq": first,
                "last_host_seq": last,
                "checkpoint": hex(&cp.encode()),
                "body": String::from_utf8_lossy(&cp.body(
                    &f.authorization.chain_id,
                    &f.authorization.contract,
                    &f.host.public_key(),
                )),
                "signature": hex(&cp.signature.0),
            })
        })
        .collect();
    Ok(json!({
        "about": "The host (seed 02) log of the `log` section's six receipts, signed in three group commits (host_seq 1; 2..4; 5..6), one checkpoint each. Leaf i is the Receipt with host_seq i + 1; leaf hash = SHA-256(0x00 ‖ Receipt encoding). `bundles` are the SignedReceipt encodings (receipt, its group's checkpoint, inclusion proof).",
        "origin": origin,
        "receipts": log.receipts.iter().map(|r| hex(&r.encode())).collect::<Vec<_>>(),
        "leaf_hashes": log.receipts.iter().map(|r| r.leaf_hash().to_string()).collect::<Vec<_>>(),
        "roots": roots,
        "groups": groups,
        "bundles": log.bundles.iter().map(|b| hex(&b.encode())).collect::<Vec<_>>(),
    }))
}

/// Equivocation (§4.2): a second history of the host whose receipt 5 differs, and pairs of
/// bundles with the leaf range on which they contradict each other, or why they do not.
pub(crate) fn equivocation(f: &Fixture, log: &HostLog) -> anyhow::Result<Value> {
    let mut forked = log.receipts.clone();
    forked[4].facts.completion_tokens += 1;
    let mut frontier = CompactRange::new();
    let mut fork = Vec::new();
    for (from, to) in [(0, 4), (4, 6)] {
        let (_, b) = sign_group(&f.host, &mut frontier, forked[from..to].to_vec())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        fork.extend(b);
    }
    let stranger = SigningKey::from_seed(&[6; 32]);
    let mut a = log.receipts[0].authorization.authorization.clone();
    a.host = stranger.public_key();
    let theirs = alone(
        &stranger,
        Receipt {
            authorization: a.sign(&f.payer),
            ..log.receipts[0].clone()
        },
    )?;
    let pairs = [
        ("host_seq 5 with two receipts", &log.bundles[4], &fork[4]),
        (
            "size 6 with two roots, proved by receipt 6 (the same in both): their proofs carry two leaves 5",
            &log.bundles[5],
            &fork[5],
        ),
        (
            "receipt 5 of the honest log against receipt 6 of the fork, whose proof carries another leaf 5",
            &log.bundles[4],
            &fork[5],
        ),
        (
            "receipt 2 under the size-4 checkpoint against the fork's receipt 6: consistent (the fork changes only leaf 5)",
            &log.bundles[1],
            &fork[5],
        ),
        (
            "receipt 1 under the size-1 checkpoint against the fork's receipt 6: consistent",
            &log.bundles[0],
            &fork[5],
        ),
        (
            "two receipts of the honest log: consistent",
            &log.bundles[2],
            &log.bundles[5],
        ),
        ("another host's receipt", &log.bundles[0], &theirs),
    ];
    let cases: Vec<Value> = pairs
        .into_iter()
        .map(|(name, x, y)| match x.contradiction(y) {
            Ok(c) => json!({"name": name, "a": hex(&x.encode()), "b": hex(&y.encode()),
                "contradiction": {"lo": c.lo, "hi": c.hi}, "error": null}),
            Err(e) => json!({"name": name, "a": hex(&x.encode()), "b": hex(&y.encode()),
                "contradiction": null, "error": e.code()}),
        })
        .collect();
    Ok(json!({
        "about": "Pairs of host-signed bundles; `contradiction` is the first leaf range [lo, hi) (of §4.2's search order) to which their proofs give two hashes, or `error` says why the pair proves nothing. Every bundle here verifies.",
        "cases": cases,
    }))
}

fn log_payers() -> [SigningKey; 3] {
    [
        SigningKey::from_seed(&[1; 32]),
        SigningKey::from_seed(&[4; 32]),
        SigningKey::from_seed(&[5; 32]),
    ]
}

/// The aggregator's log of the host's six bundles, its Merkle roots and proofs, and two
/// batches with their checkpoints.
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
        "about": "One host (seed 02), payers seeds 01, 04, 05 on one model: receipts host_seq 1..6 (the host_log section's bundles); channel of payer 04 skips seq 2. Leaves are the SignedReceipt (bundle) encodings.",
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

/// A journal (§6) of the host log's first two group commits (receipt 1; receipts 2..4),
/// then the third group cut short: receipt 5's bundle complete, receipt 6's torn. Recovery
/// keeps four receipts, drops the fifth (its group never completed) and cuts the tail.
pub(crate) fn journal(log: &HostLog) -> anyhow::Result<Value> {
    let record = |p: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut r = u32::try_from(p.len())?.to_be_bytes().to_vec();
        r.extend_from_slice(&crc32(p).to_be_bytes());
        r.extend_from_slice(p);
        Ok(r)
    };
    let mut bytes = b"TALLYJ02".to_vec();
    let mut ends = Vec::new();
    let mut crcs = Vec::new();
    let mut durable = 0;
    let last = log.bundles.len() - 1;
    for (i, b) in log.bundles.iter().enumerate() {
        let payload = b.encode();
        let rec = record(&payload)?;
        if i == last {
            bytes.extend_from_slice(&rec[..rec.len() / 2]);
            break;
        }
        bytes.extend_from_slice(&rec);
        ends.push(bytes.len());
        crcs.push(format!("{:08x}", crc32(&payload)));
        if b.receipt.host_seq == b.checkpoint.size && i < 4 {
            durable = bytes.len();
        }
    }
    let complete = ends.last().copied().context("records")?;
    Ok(json!({
        "about": "magic TALLYJ02, then records len:u32 BE | crc32:u32 BE | payload, each payload a SignedReceipt (bundle) encoding; group commits host_seq 1 and 2..4 are complete (each ends with the record whose host_seq is its checkpoint's size); of the third group (5..6, checkpoint size 6) the bundle of 5 is complete and that of 6 is torn (half written). Recovery keeps the durable prefix (4 receipts), drops receipt 5 (its group never completed: never returned) and the torn bytes.",
        "bytes": hex(&bytes),
        "record_ends": ends,
        "record_crc32": crcs,
        "durable_len": durable,
        "durable_receipts": 4,
        "dropped_receipts": 1,
        "complete_records_len": complete,
        "torn_tail_len": bytes.len() - complete,
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
