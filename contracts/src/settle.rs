//! Batches: submission, challenges (fraud proofs), finalization, claims.
//!
//! One batch is pending at a time. Batch `n` must continue the last *finalized* batch
//! (`n = last + 1`, `prev_header` = its header hash, a consistency proof from its root), so a
//! voided batch's number is reused by the next submission and its header can never be
//! submitted again. Voiding never has to unwind later batches, and finalized history is
//! only ever extended.
//!
//! A batch may keep the log's size (an empty consistency proof between equal roots): an
//! aggregator splits a period with more channels than one transaction can carry into
//! consecutive batches of the same tree, each debiting a disjoint part of the channels.
//! Such a batch vouches for the same leaves as the batch before it (`prev_tree_size` is
//! inherited, see [`Head::leaves_from`](crate::state::Head::leaves_from)), so a fraud
//! among those leaves voids it too.
//!
//! What one debited channel costs in storage: `SubmitBatch` reads and writes its channel
//! record and its payer's escrow (once per payer), and writes one payout entry per host
//! and per model of the batch; `Finalize` credits those entries and touches no channel or
//! escrow (see [`crate::ledger`]); a challenge writes a constant number of records.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use cosmwasm_std::{
    Addr, BankMsg, Binary, DepsMut, Env, MessageInfo, Order, Response, Storage, Uint128, coins,
};
use tally_protocol::merkle::{ConsistencyProof, InclusionProof, leaf_hash};
use tally_protocol::{Digest, MeterInput, PriceSchedule, SignedBatchHeader, SignedReceipt};

use crate::ContractError;
use crate::contract::{bytes32, invalid};
use crate::ledger::{Fates, save_channel, save_escrow};
use crate::msg::{FraudProof, LeafProof};
use crate::signing::{verify, verify_all};
use crate::split::{bps_floor, split_debit, split_pool};
use crate::state::{
    AGGREGATORS, BALANCES, BATCHES, Batch, BatchStatus, CHALLENGE_COUNT, CHALLENGES, CONFIG,
    ChallengeRecord, Escrow, GUESTS, HEAD, HOST_EARNED, HOST_PAYOUTS, HOSTS, Host, MODEL_PAYOUTS,
    MODEL_REVENUE, MODELS, Model, PendingCollect, VOIDED, VOIDED_SUBMISSIONS,
};

/// Most credits one `Finalize` makes (a host's share is one, a model's pool one per
/// contributor): a batch whose hosts and models need more is finalized over several
/// transactions, each bounded (see `Finalize`).
pub const FINALIZE_CREDITS: usize = 1_024;

fn digests(field: &'static str, hashes: &[Binary]) -> Result<Vec<Digest>, ContractError> {
    hashes
        .iter()
        .map(|h| bytes32(field, h).map(Digest))
        .collect()
}

fn debit_error(index: usize, reason: &'static str) -> ContractError {
    ContractError::Debit { index, reason }
}

/// Checks `leaf`'s inclusion proof against the batch's root and size; returns whether the
/// leaf is new in the batch (index at or above the previous size).
fn open_leaf(leaf: &LeafProof, batch: &Batch) -> Result<bool, ContractError> {
    let proof = InclusionProof {
        leaf_index: leaf.leaf_index,
        tree_size: batch.tree_size,
        hashes: digests("hashes", &leaf.hashes)?,
    };
    let root = Digest(bytes32("root", &batch.root)?);
    proof
        .verify(&leaf_hash(&leaf.receipt), &root)
        .map_err(|e| match ContractError::from(e) {
            ContractError::Proof { reason, .. } => ContractError::Proof {
                what: "inclusion",
                reason,
            },
            other => other,
        })?;
    Ok(leaf.leaf_index >= batch.prev_tree_size)
}

/// Submits the next batch; see the crate docs for every check. Work grows with the number
/// of debited channels (one receipt and one `O(log n)` inclusion proof each) and the
/// consistency proof's `O(log n)`, never with the number of receipts in the batch.
pub(crate) fn submit_batch(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    header: Binary,
    consistency: Vec<Binary>,
    receipts: Vec<LeafProof>,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let mut head = HEAD.load(deps.storage)?;
    if let Some(batch) = head.pending {
        return Err(ContractError::BatchPending { batch });
    }
    let signed = SignedBatchHeader::decode(&header).map_err(|e| ContractError::Decode {
        what: "batch header",
        reason: e.code(),
    })?;
    let h = &signed.header;
    let submitter = AGGREGATORS
        .may_load(deps.storage, &h.aggregator.0)?
        .ok_or(ContractError::NotRegistered { what: "aggregator" })?;
    if submitter != info.sender {
        return Err(ContractError::Unauthorized);
    }
    let chain_id = env.block.chain_id.as_str();
    let contract = env.contract.address.as_str();
    let sequence = |reason| Err(ContractError::BatchSequence { reason });
    if h.chain_id != chain_id || h.contract != contract {
        return sequence("header is bound to another chain or contract");
    }
    let header_bytes = h.encode();
    let header_hash = Digest::sha256(&header_bytes);
    if VOIDED.has(deps.storage, &header_hash.0) {
        return sequence("header was voided");
    }
    if Some(h.batch) != head.batch.checked_add(1) {
        return sequence("batch number is not the next");
    }
    if head.batch > 0 && h.prev_header.0.as_slice() != head.header_hash.as_slice() {
        return sequence("prev_header is not the last finalized header");
    }
    if h.tree_size < head.tree_size {
        return sequence("log shrank");
    }
    if !verify(
        deps.api,
        &h.aggregator.0,
        &header_bytes,
        &signed.signature.0,
    ) {
        return Err(ContractError::Signature { what: "aggregator" });
    }
    let consistency = digests("consistency", &consistency)?;
    if head.tree_size == 0 {
        if !consistency.is_empty() {
            return Err(invalid("consistency", "must be empty for the first log"));
        }
    } else {
        let old_root = Digest(bytes32("root", &head.root)?);
        ConsistencyProof {
            size1: head.tree_size,
            size2: h.tree_size,
            hashes: consistency,
        }
        .verify(&old_root, &h.root)
        .map_err(|e| match ContractError::from(e) {
            ContractError::Proof { reason, .. } => ContractError::Proof {
                what: "consistency",
                reason,
            },
            other => other,
        })?;
    }
    if receipts.len() != h.debits.len() {
        return Err(invalid("receipts", "one per debit, in the header's order"));
    }

    let now = env.block.time.seconds();
    let submission = head
        .submissions
        .checked_add(1)
        .ok_or(ContractError::Overflow)?;
    // A batch that keeps the log's size adds no leaves: it vouches for those of the batch
    // before it (a period split over several batches).
    let leaves_from = if head.batch > 0 && h.tree_size == head.tree_size {
        head.leaves_from
    } else {
        head.tree_size
    };
    let mut pending_batch = Batch {
        status: BatchStatus::Pending,
        header_hash: Binary::from(header_hash.0),
        root: Binary::from(h.root.0),
        tree_size: h.tree_size,
        prev_tree_size: leaves_from,
        total: Uint128::new(h.total),
        channels: u32::try_from(h.debits.len()).unwrap_or(u32::MAX),
        submitted_at: now,
        challenge_deadline: now.saturating_add(config.challenge_window_secs),
        submission,
        protocol: Uint128::zero(),
        hosts: Uint128::zero(),
        contributors: Uint128::zero(),
    };
    let mut fates = Fates::new(&head);
    let mut signed_parts: Vec<Vec<u8>> = Vec::with_capacity(h.debits.len());
    let mut decoded = Vec::with_capacity(h.debits.len());
    // Everything read once per transaction however many debits share it.
    let mut models: BTreeMap<[u8; 32], Model> = BTreeMap::new();
    let mut hosts: BTreeMap<[u8; 32], Host> = BTreeMap::new();
    let mut guests: BTreeMap<([u8; 32], [u8; 32]), bool> = BTreeMap::new();
    let mut escrows: BTreeMap<[u8; 32], Escrow> = BTreeMap::new();
    // What finalizing will credit: per host, per model (revenue, pool), and the sink.
    let mut host_payouts: BTreeMap<[u8; 32], u128> = BTreeMap::new();
    let mut model_payouts: BTreeMap<[u8; 32], (u128, u128)> = BTreeMap::new();
    let (mut to_sink, mut to_hosts, mut to_contributors) = (0u128, 0u128, 0u128);
    for (i, (leaf, d)) in receipts.iter().zip(&h.debits).enumerate() {
        let sr = SignedReceipt::decode(&leaf.receipt)
            .map_err(|_| debit_error(i, "receipt does not decode"))?;
        let r = &sr.receipt;
        let a = &r.authorization.authorization;
        r.check()
            .map_err(|_| debit_error(i, "receipt breaks a field rule"))?;
        if !included_in_checkpoint(&sr) {
            return Err(debit_error(
                i,
                "receipt is not included under its host checkpoint",
            ));
        }
        if r.channel() != d.channel {
            return Err(debit_error(i, "receipt is for another channel"));
        }
        if a.chain_id != chain_id || a.contract != contract {
            return Err(debit_error(i, "authorisation is bound elsewhere"));
        }
        let included = open_leaf(leaf, &pending_batch);
        if included.is_err() {
            return Err(debit_error(i, "inclusion proof rejected"));
        }
        let host = match hosts.entry(a.host.0) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(slot) => slot.insert(
                HOSTS
                    .may_load(deps.storage, &a.host.0)?
                    .ok_or(debit_error(i, "host not registered"))?,
            ),
        };
        if !host.models.iter().any(|m| m.as_slice() == a.model.0) {
            return Err(debit_error(i, "host does not serve the model"));
        }
        let model = match models.entry(a.model.0) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(slot) => slot.insert(
                MODELS
                    .may_load(deps.storage, &a.model.0)?
                    .ok_or(debit_error(i, "model not registered"))?,
            ),
        };
        let guest_ok = match guests.get(&(a.model.0, r.guest.0)) {
            Some(&ok) => ok,
            None => {
                let ok = GUESTS
                    .may_load(deps.storage, (&a.model.0, &r.guest.0))?
                    .is_some_and(|g| g.allowed_at_time(now));
                guests.insert((a.model.0, r.guest.0), ok);
                ok
            }
        };
        if !guest_ok {
            return Err(debit_error(i, "guest not allowed for the model"));
        }
        if r.schedule.0.as_slice() != model.schedule_hash.as_slice() {
            return Err(debit_error(i, "schedule is not the model's"));
        }
        let mut channel = fates.channel(deps.storage, &d.channel.0.0)?;
        if a.seq <= channel.last_seq {
            return Err(debit_error(i, "seq not above the last collected"));
        }
        let amount = r
            .channel_total
            .checked_sub(channel.collected)
            .ok_or(debit_error(i, "total below what was collected"))?;
        if amount != d.amount {
            return Err(debit_error(
                i,
                "debit is not the total minus what was collected",
            ));
        }
        let escrow = match escrows.entry(a.payer.0) {
            Entry::Occupied(e) => e.into_mut(),
            // No batch is pending: whatever the escrow holds in reservation was left by a
            // finalized or voided submission, and settles before this one reserves.
            Entry::Vacant(slot) => {
                let e = fates.escrow(deps.storage, &a.payer.0)?;
                slot.insert(Escrow {
                    reserved: 0,
                    reserved_for: submission,
                    ..e
                })
            }
        };
        let free = escrow.balance.saturating_sub(escrow.reserved);
        if free < amount {
            return Err(ContractError::InsufficientEscrow {
                available: free,
                needed: amount,
            });
        }
        escrow.reserved += amount;
        channel.pending = Some(PendingCollect {
            submission,
            total: r.channel_total,
            seq: a.seq,
        });
        save_channel(deps.storage, &d.channel.0.0, &channel);

        let (fee, host_share, pool) =
            split_debit(amount, model.protocol_fee_bps, model.host_share_bps);
        let h = host_payouts.entry(a.host.0).or_default();
        *h = h.checked_add(host_share).ok_or(ContractError::Overflow)?;
        let m = model_payouts.entry(a.model.0).or_default();
        m.0 = m.0.checked_add(amount).ok_or(ContractError::Overflow)?;
        m.1 = m.1.checked_add(pool).ok_or(ContractError::Overflow)?;
        to_sink = to_sink.checked_add(fee).ok_or(ContractError::Overflow)?;
        to_hosts = to_hosts
            .checked_add(host_share)
            .ok_or(ContractError::Overflow)?;
        to_contributors = to_contributors
            .checked_add(pool)
            .ok_or(ContractError::Overflow)?;
        signed_parts.push(r.authorization.authorization.encode());
        decoded.push(sr);
    }
    // Every payer signature and every distinct host checkpoint (one per group commit,
    // shared by its receipts) in ZIP-215 batches of at most 256.
    let checkpoints = distinct_checkpoints(&decoded);
    let mut items: Vec<(&[u8], &[u8], &[u8])> =
        Vec::with_capacity(decoded.len() + checkpoints.len());
    for (sr, auth) in decoded.iter().zip(&signed_parts) {
        let sa = &sr.receipt.authorization;
        items.push((&sa.authorization.payer.0, auth, &sa.signature.0));
    }
    for (host, body, sig) in &checkpoints {
        items.push((host, body, sig));
    }
    if !items.is_empty() {
        verify_all(deps.api, &items, "payer or host")?;
    }

    for (payer, escrow) in &escrows {
        save_escrow(deps.storage, payer, escrow);
    }
    for (host, amount) in host_payouts {
        HOST_PAYOUTS.save(deps.storage, (submission, &host), &Uint128::new(amount))?;
    }
    for (model, (revenue, pool)) in model_payouts {
        MODEL_PAYOUTS.save(
            deps.storage,
            (submission, &model),
            &(Uint128::new(revenue), Uint128::new(pool)),
        )?;
    }
    pending_batch.protocol = Uint128::new(to_sink);
    pending_batch.hosts = Uint128::new(to_hosts);
    pending_batch.contributors = Uint128::new(to_contributors);
    BATCHES.save(deps.storage, h.batch, &pending_batch)?;
    head.pending = Some(h.batch);
    head.submissions = submission;
    HEAD.save(deps.storage, &head)?;
    Ok(Response::new()
        .add_attribute("action", "submit_batch")
        .add_attribute("batch", h.batch.to_string())
        .add_attribute("header_hash", header_hash.to_string())
        .add_attribute("tree_size", h.tree_size.to_string())
        .add_attribute("total", h.total.to_string())
        .add_attribute("channels", h.debits.len().to_string())
        .add_attribute(
            "challenge_deadline",
            pending_batch.challenge_deadline.to_string(),
        ))
}

/// Whether `sr`'s receipt is included at `host_seq − 1` under its host checkpoint (hashing
/// only; the checkpoint's signature is checked with the others).
fn included_in_checkpoint(sr: &SignedReceipt) -> bool {
    sr.inclusion()
        .verify(&sr.receipt.leaf_hash(), &sr.checkpoint.root)
        .is_ok()
}

/// The distinct host checkpoints of `receipts`, each once: (host key, the signed body,
/// signature).
fn distinct_checkpoints(receipts: &[SignedReceipt]) -> Vec<([u8; 32], Vec<u8>, [u8; 64])> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for sr in receipts {
        let host = sr.receipt.host().0;
        let cp = &sr.checkpoint;
        if seen.insert((host, cp.size, cp.root.0, cp.signature.0)) {
            out.push((host, sr.checkpoint_body(), cp.signature.0));
        }
    }
    out
}

/// Whether `sr` is host-signed: its receipt is included under its host checkpoint and the
/// checkpoint's signature verifies under the receipt's host key.
fn is_host_signed(api: &dyn cosmwasm_std::Api, sr: &SignedReceipt) -> bool {
    included_in_checkpoint(sr)
        && verify(
            api,
            &sr.receipt.host().0,
            &sr.checkpoint_body(),
            &sr.checkpoint.signature.0,
        )
}

/// Decodes bundles that must all be host-signed and bound to this deployment (the host is
/// answerable for each): one signature check per distinct checkpoint, in one batch. A
/// bundle that is not is judged only as an `invalid_receipt` (void, no slash).
fn host_signed(
    api: &dyn cosmwasm_std::Api,
    env: &Env,
    bundles: &[&Binary],
) -> Result<Vec<SignedReceipt>, ContractError> {
    let mut out = Vec::with_capacity(bundles.len());
    for bytes in bundles {
        let sr = SignedReceipt::decode(bytes).map_err(|_| ContractError::NoFraud {
            reason: "receipt does not decode (prove it with invalid_receipt)",
        })?;
        let a = &sr.receipt.authorization.authorization;
        if a.chain_id != env.block.chain_id || a.contract != env.contract.address.as_str() {
            return Err(ContractError::NoFraud {
                reason: "receipt is bound elsewhere (prove it with invalid_receipt)",
            });
        }
        if !included_in_checkpoint(&sr) {
            return Err(ContractError::NoFraud {
                reason: "receipt is not included under its host checkpoint (prove it with invalid_receipt)",
            });
        }
        out.push(sr);
    }
    let checkpoints = distinct_checkpoints(&out);
    let items: Vec<(&[u8], &[u8], &[u8])> = checkpoints
        .iter()
        .map(|(k, body, sig)| (k.as_slice(), body.as_slice(), sig.as_slice()))
        .collect();
    verify_all(api, &items, "host").map_err(|_| ContractError::NoFraud {
        reason: "host checkpoint signature invalid (prove it with invalid_receipt)",
    })?;
    Ok(out)
}

/// Opens both leaves of a two-receipt proof: both included, one of them new, both signed by
/// their host, both on one channel.
fn open_pair(
    api: &dyn cosmwasm_std::Api,
    env: &Env,
    batch: &Batch,
    first: &LeafProof,
    second: &LeafProof,
) -> Result<(SignedReceipt, SignedReceipt), ContractError> {
    let new1 = open_leaf(first, batch)?;
    let new2 = open_leaf(second, batch)?;
    if !new1 && !new2 {
        return Err(ContractError::NoFraud {
            reason: "neither receipt is new in this batch",
        });
    }
    let mut both = host_signed(api, env, &[&first.receipt, &second.receipt])?;
    let (Some(b), Some(a)) = (both.pop(), both.pop()) else {
        return Err(ContractError::NoFraud {
            reason: "two receipts are needed",
        });
    };
    if a.receipt.channel() != b.receipt.channel() {
        return Err(ContractError::NoFraud {
            reason: "receipts are on different channels",
        });
    }
    Ok((a, b))
}

/// The one host-signed bundle of a single-leaf proof.
fn one_host_signed(
    api: &dyn cosmwasm_std::Api,
    env: &Env,
    leaf: &LeafProof,
) -> Result<SignedReceipt, ContractError> {
    host_signed(api, env, &[&leaf.receipt])?
        .pop()
        .ok_or(ContractError::NoFraud {
            reason: "a receipt is needed",
        })
}

fn open_single(batch: &Batch, leaf: &LeafProof) -> Result<(), ContractError> {
    if !open_leaf(leaf, batch)? {
        return Err(ContractError::NoFraud {
            reason: "the receipt is not new in this batch",
        });
    }
    Ok(())
}

/// Judges an `invalid_receipt` proof: the fraud kind's host to slash (if the leaf is
/// host-signed for this deployment and its host is registered), or why there is no fraud.
/// The host's and the payer's signatures are checked singly: the verdict depends on which
/// one fails.
fn judge_invalid(
    deps: &DepsMut<'_>,
    env: &Env,
    leaf: &LeafProof,
) -> Result<Option<[u8; 32]>, ContractError> {
    let Ok(sr) = SignedReceipt::decode(&leaf.receipt) else {
        return Ok(None);
    };
    let r = &sr.receipt;
    let a = &r.authorization.authorization;
    // Not host-signed: the aggregator's doing.
    if !is_host_signed(deps.api, &sr) {
        return Ok(None);
    }
    // A receipt bound to another deployment may be honest there: the aggregator logged it
    // here, so the batch is void but the host is not slashed.
    if a.chain_id != env.block.chain_id || a.contract != env.contract.address.as_str() {
        return Ok(None);
    }
    let registered = HOSTS.may_load(deps.storage, &a.host.0)?;
    let slash = registered.as_ref().map(|_| a.host.0);
    if r.check().is_err()
        || !verify(
            deps.api,
            &a.payer.0,
            &a.encode(),
            &r.authorization.signature.0,
        )
    {
        return Ok(slash);
    }
    let serves = registered.is_some_and(|h| h.models.iter().any(|m| m.as_slice() == a.model.0));
    if !serves || !MODELS.has(deps.storage, &a.model.0) {
        return Ok(slash);
    }
    Err(ContractError::NoFraud {
        reason: "the receipt is valid",
    })
}

/// Proves a pending batch fraudulent. On success the batch is voided (its reservations
/// released, its header barred) and the answerable host's bond slashed: `slash_bps` of it,
/// `challenger_bps` of that credited to the challenger and the rest to the sink. A failed
/// challenge is an error and changes nothing.
pub(crate) fn challenge(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    number: u64,
    proof: FraudProof,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let mut head = HEAD.load(deps.storage)?;
    if head.pending != Some(number) {
        return Err(ContractError::NoPendingBatch);
    }
    let mut batch = BATCHES.load(deps.storage, number)?;
    let now = env.block.time.seconds();
    if now >= batch.challenge_deadline {
        return Err(ContractError::WindowClosed { batch: number });
    }
    let (kind, host): (&str, Option<[u8; 32]>) = match &proof {
        FraudProof::InvalidReceipt { leaf } => {
            open_single(&batch, leaf)?;
            ("invalid_receipt", judge_invalid(&deps, &env, leaf)?)
        }
        FraudProof::Repriced { leaf } => {
            open_single(&batch, leaf)?;
            let s = one_host_signed(deps.api, &env, leaf)?;
            let r = &s.receipt;
            let a = &r.authorization.authorization;
            let model =
                MODELS
                    .may_load(deps.storage, &a.model.0)?
                    .ok_or(ContractError::NoFraud {
                        reason: "model not registered (prove it with invalid_receipt)",
                    })?;
            if r.schedule.0.as_slice() == model.schedule_hash.as_slice() {
                let schedule =
                    PriceSchedule::decode(&model.schedule).map_err(|e| ContractError::Decode {
                        what: "schedule",
                        reason: e.code(),
                    })?;
                let metered = tally_guest::meter(&MeterInput {
                    facts: r.facts.clone(),
                    schedule,
                    max_fee: a.max_fee,
                });
                if metered == Ok(r.metered) {
                    return Err(ContractError::NoFraud {
                        reason: "the fee is what the metering function gives",
                    });
                }
            }
            ("repriced", Some(a.host.0))
        }
        FraudProof::DuplicateSeq { first, second } => {
            let (x, y) = open_pair(deps.api, &env, &batch, first, second)?;
            let (rx, ry) = (&x.receipt, &y.receipt);
            if rx.authorization.authorization.seq != ry.authorization.authorization.seq
                || rx.id() == ry.id()
            {
                return Err(ContractError::NoFraud {
                    reason: "not two different receipts with one seq",
                });
            }
            ("duplicate_seq", Some(rx.host().0))
        }
        FraudProof::InconsistentTotals { first, second } => {
            let (x, y) = open_pair(deps.api, &env, &batch, first, second)?;
            let (rx, ry) = (&x.receipt, &y.receipt);
            if rx.authorization.authorization.seq >= ry.authorization.authorization.seq {
                return Err(ContractError::NoFraud {
                    reason: "first must have the lower seq",
                });
            }
            let consistent = rx
                .channel_total
                .checked_add(ry.metered.fee)
                .is_some_and(|least| ry.channel_total >= least);
            if consistent {
                return Err(ContractError::NoFraud {
                    reason: "the totals are consistent",
                });
            }
            ("inconsistent_totals", Some(rx.host().0))
        }
        FraudProof::GuestNotAllowed { leaf } => {
            open_single(&batch, leaf)?;
            let s = one_host_signed(deps.api, &env, leaf)?;
            let r = &s.receipt;
            let model = r.authorization.authorization.model.0;
            let allowed = GUESTS
                .may_load(deps.storage, (&model, &r.guest.0))?
                .is_some_and(|g| g.allowed_at_time(batch.submitted_at));
            if allowed {
                return Err(ContractError::NoFraud {
                    reason: "the guest was allowed when the batch was submitted",
                });
            }
            ("guest_not_allowed", Some(r.host().0))
        }
        FraudProof::HostEquivocation { leaf, other } => {
            open_single(&batch, leaf)?;
            let mut both = host_signed(deps.api, &env, &[&leaf.receipt, other])?;
            let (Some(b), Some(a)) = (both.pop(), both.pop()) else {
                return Err(ContractError::NoFraud {
                    reason: "two receipts are needed",
                });
            };
            a.contradiction(&b)
                .map_err(|e| ContractError::NoFraud { reason: e.code() })?;
            ("host_equivocation", Some(a.receipt.host().0))
        }
    };

    // Void: bar the header and reopen the batch number. Marking the submission voided
    // releases every reservation and pending collection it made at once (they settle
    // lazily, see `crate::ledger`): no loop. Its payout entries are never read again.
    VOIDED.save(deps.storage, &batch.header_hash, &())?;
    VOIDED_SUBMISSIONS.save(deps.storage, batch.submission, &())?;
    batch.status = BatchStatus::Voided;
    BATCHES.save(deps.storage, number, &batch)?;
    head.pending = None;
    HEAD.save(deps.storage, &head)?;

    // Slash the answerable host, if it is registered.
    let (mut slashed, mut reward) = (0u128, 0u128);
    let host_key = host.filter(|k| HOSTS.has(deps.storage, k));
    if let Some(k) = host_key {
        let mut h = HOSTS.load(deps.storage, &k)?;
        slashed = bps_floor(h.bond.u128(), config.slash_bps);
        reward = bps_floor(slashed, config.challenger_bps);
        h.bond = h.bond.checked_sub(Uint128::new(slashed))?;
        h.slashed = h.slashed.checked_add(Uint128::new(slashed))?;
        HOSTS.save(deps.storage, &k, &h)?;
        credit(deps.storage, &info.sender, reward)?;
        credit(deps.storage, &config.protocol_sink, slashed - reward)?;
    }
    let id = CHALLENGE_COUNT.load(deps.storage)?.saturating_add(1);
    CHALLENGE_COUNT.save(deps.storage, &id)?;
    CHALLENGES.save(
        deps.storage,
        id,
        &ChallengeRecord {
            batch: number,
            header_hash: batch.header_hash.clone(),
            kind: kind.to_owned(),
            challenger: info.sender.clone(),
            host: host_key.map(Binary::from),
            slashed: Uint128::new(slashed),
            reward: Uint128::new(reward),
            at: now,
        },
    )?;
    Ok(Response::new()
        .add_attribute("action", "challenge")
        .add_attribute("batch", number.to_string())
        .add_attribute("kind", kind)
        .add_attribute("challenger", info.sender.as_str())
        .add_attribute("slashed", slashed.to_string())
        .add_attribute("reward", reward.to_string()))
}

fn credit(storage: &mut dyn Storage, who: &Addr, amount: u128) -> Result<(), ContractError> {
    if amount == 0 {
        return Ok(());
    }
    let old = BALANCES.may_load(storage, who)?.unwrap_or_default();
    BALANCES.save(storage, who, &old.checked_add(Uint128::new(amount))?)?;
    Ok(())
}

/// Settles the pending batch once its window has closed: credits the sink, the hosts and
/// the contributors (see [`crate::split`]) from the payout entries `SubmitBatch` wrote, and
/// makes the batch the last finalized one, which debits its escrows and advances its
/// channels (lazily, see [`crate::ledger`]).
///
/// Work is bounded per transaction, never by the batch's channels: one credit per host and
/// per contributor of each model of the batch, at most [`FINALIZE_CREDITS`] per call. A
/// batch that needs more (thousands of hosts, or models) is finalized by repeated calls,
/// each removing the entries it credited; the last one (attribute `complete = true`)
/// credits the sink and flips the head. Until then the batch stays pending (its
/// reservations hold, it cannot be challenged: the window has closed).
pub(crate) fn finalize(deps: DepsMut<'_>, env: Env) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let mut head = HEAD.load(deps.storage)?;
    let number = head.pending.ok_or(ContractError::NoPendingBatch)?;
    let mut batch = BATCHES.load(deps.storage, number)?;
    if env.block.time.seconds() < batch.challenge_deadline {
        return Err(ContractError::WindowOpen {
            batch: number,
            deadline: batch.challenge_deadline,
        });
    }
    let sub = batch.submission;
    let mut credits = 0usize;
    let models: Vec<(Vec<u8>, (Uint128, Uint128))> = MODEL_PAYOUTS
        .prefix(sub)
        .range(deps.storage, None, None, Order::Ascending)
        .take(FINALIZE_CREDITS)
        .collect::<Result<_, _>>()?;
    for (id, (revenue, pool)) in models {
        let model = MODELS.load(deps.storage, &id)?;
        if credits > 0 && credits + model.contributors.len() > FINALIZE_CREDITS {
            return Ok(partial(number, credits));
        }
        let weights: Vec<u16> = model.contributors.iter().map(|c| c.1).collect();
        for ((addr, _), share) in model
            .contributors
            .iter()
            .zip(split_pool(pool.u128(), &weights))
        {
            credit(deps.storage, addr, share)?;
        }
        credits += model.contributors.len();
        let (r, c) = MODEL_REVENUE
            .may_load(deps.storage, &id)?
            .unwrap_or_default();
        MODEL_REVENUE.save(
            deps.storage,
            &id,
            &(r.checked_add(revenue)?, c.checked_add(pool)?),
        )?;
        MODEL_PAYOUTS.remove(deps.storage, (sub, &id));
    }
    let hosts: Vec<(Vec<u8>, Uint128)> = HOST_PAYOUTS
        .prefix(sub)
        .range(deps.storage, None, None, Order::Ascending)
        .take(FINALIZE_CREDITS)
        .collect::<Result<_, _>>()?;
    for (key, amount) in hosts {
        if credits >= FINALIZE_CREDITS {
            return Ok(partial(number, credits));
        }
        let host = HOSTS.load(deps.storage, &key)?;
        credit(deps.storage, &host.operator, amount.u128())?;
        let earned = HOST_EARNED
            .may_load(deps.storage, &key)?
            .unwrap_or_default();
        HOST_EARNED.save(deps.storage, &key, &earned.checked_add(amount)?)?;
        HOST_PAYOUTS.remove(deps.storage, (sub, &key));
        credits += 1;
    }
    credit(deps.storage, &config.protocol_sink, batch.protocol.u128())?;

    batch.status = BatchStatus::Finalized;
    BATCHES.save(deps.storage, number, &batch)?;
    head.batch = number;
    head.header_hash = batch.header_hash.clone();
    head.tree_size = batch.tree_size;
    head.leaves_from = batch.prev_tree_size;
    head.root = batch.root.clone();
    head.pending = None;
    HEAD.save(deps.storage, &head)?;
    Ok(Response::new()
        .add_attribute("action", "finalize")
        .add_attribute("batch", number.to_string())
        .add_attribute("complete", "true")
        .add_attribute("credits", credits.to_string())
        .add_attribute("total", batch.total.to_string())
        .add_attribute("protocol", batch.protocol.to_string())
        .add_attribute("hosts", batch.hosts.to_string())
        .add_attribute("contributors", batch.contributors.to_string()))
}

/// The answer of a `Finalize` that used its credits before the batch's last payout entry.
fn partial(number: u64, credits: usize) -> Response {
    Response::new()
        .add_attribute("action", "finalize")
        .add_attribute("batch", number.to_string())
        .add_attribute("complete", "false")
        .add_attribute("credits", credits.to_string())
}

/// Pays the sender its whole credited balance.
pub(crate) fn claim(deps: DepsMut<'_>, info: MessageInfo) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let amount = BALANCES
        .may_load(deps.storage, &info.sender)?
        .unwrap_or_default();
    if amount.is_zero() {
        return Err(ContractError::NothingToClaim);
    }
    BALANCES.remove(deps.storage, &info.sender);
    Ok(Response::new()
        .add_attribute("action", "claim")
        .add_attribute("address", info.sender.as_str())
        .add_attribute("amount", amount.to_string())
        .add_message(BankMsg::Send {
            to_address: info.sender.into_string(),
            amount: coins(amount.u128(), config.denom),
        }))
}
