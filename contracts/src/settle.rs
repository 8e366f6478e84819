//! Batches: submission, challenges (fraud proofs), finalization, claims.
//!
//! One batch is pending at a time. Batch `n` must continue the last *finalized* batch
//! (`n = last + 1`, `prev_header` = its header hash, a consistency proof from its root), so a
//! voided batch's number is reused by the next submission and its header can never be
//! submitted again. Voiding never has to unwind later batches, and finalized history is
//! only ever extended.

use std::collections::BTreeMap;

use cosmwasm_std::{
    Addr, BankMsg, Binary, DepsMut, Env, MessageInfo, Response, Storage, Uint128, coins,
};
use tally_protocol::merkle::{ConsistencyProof, InclusionProof, leaf_hash};
use tally_protocol::{Digest, MeterInput, PriceSchedule, SignedBatchHeader, SignedReceipt};

use crate::ContractError;
use crate::contract::{bytes32, invalid};
use crate::msg::{FraudProof, LeafProof};
use crate::signing::{verify, verify_all};
use crate::split::{bps_floor, split_debit, split_pool};
use crate::state::{
    AGGREGATORS, BALANCES, BATCHES, Batch, BatchStatus, CHALLENGE_COUNT, CHALLENGES, CHANNELS,
    CONFIG, ChallengeRecord, DEBITS, ESCROWS, GUESTS, HEAD, HOSTS, MODELS, Model, PendingDebit,
    VOIDED,
};

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
    let pending_batch = Batch {
        status: BatchStatus::Pending,
        header_hash: Binary::from(header_hash.0),
        root: Binary::from(h.root.0),
        tree_size: h.tree_size,
        prev_tree_size: head.tree_size,
        total: Uint128::new(h.total),
        channels: u32::try_from(h.debits.len()).unwrap_or(u32::MAX),
        submitted_at: now,
        challenge_deadline: now.saturating_add(config.challenge_window_secs),
    };
    let mut pending = Vec::with_capacity(h.debits.len());
    let mut signed_parts: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(h.debits.len());
    let mut decoded = Vec::with_capacity(h.debits.len());
    let mut models: BTreeMap<[u8; 32], Model> = BTreeMap::new();
    for (i, (leaf, d)) in receipts.iter().zip(&h.debits).enumerate() {
        let sr = SignedReceipt::decode(&leaf.receipt)
            .map_err(|_| debit_error(i, "receipt does not decode"))?;
        let r = &sr.receipt;
        let a = &r.authorization.authorization;
        r.check()
            .map_err(|_| debit_error(i, "receipt breaks a field rule"))?;
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
        let host = HOSTS
            .may_load(deps.storage, &a.host.0)?
            .ok_or(debit_error(i, "host not registered"))?;
        if !host.models.iter().any(|m| m.as_slice() == a.model.0) {
            return Err(debit_error(i, "host does not serve the model"));
        }
        let model = match models.get(&a.model.0) {
            Some(m) => m.clone(),
            None => {
                let m = MODELS
                    .may_load(deps.storage, &a.model.0)?
                    .ok_or(debit_error(i, "model not registered"))?;
                models.insert(a.model.0, m.clone());
                m
            }
        };
        let guest_ok = GUESTS
            .may_load(deps.storage, (&a.model.0, &r.guest.0))?
            .is_some_and(|g| g.allowed_at_time(now));
        if !guest_ok {
            return Err(debit_error(i, "guest not allowed for the model"));
        }
        if r.schedule.0.as_slice() != model.schedule_hash.as_slice() {
            return Err(debit_error(i, "schedule is not the model's"));
        }
        let channel = CHANNELS
            .may_load(deps.storage, &d.channel.0.0)?
            .unwrap_or_default();
        if a.seq <= channel.last_seq {
            return Err(debit_error(i, "seq not above the last collected"));
        }
        let amount = r
            .channel_total
            .checked_sub(channel.collected.u128())
            .ok_or(debit_error(i, "total below what was collected"))?;
        if amount != d.amount {
            return Err(debit_error(
                i,
                "debit is not the total minus what was collected",
            ));
        }
        let mut escrow = ESCROWS
            .may_load(deps.storage, &a.payer.0)?
            .unwrap_or_default();
        if escrow.reserved_for != submission {
            // Left by a voided or finalized submission: no longer reserved.
            escrow.reserved = Uint128::zero();
            escrow.reserved_for = submission;
        }
        let free = escrow.balance.saturating_sub(escrow.reserved);
        if free.u128() < amount {
            return Err(ContractError::InsufficientEscrow {
                available: free.u128(),
                needed: amount,
            });
        }
        escrow.reserved = escrow.reserved.checked_add(Uint128::new(amount))?;
        ESCROWS.save(deps.storage, &a.payer.0, &escrow)?;
        pending.push(PendingDebit {
            channel: Binary::from(d.channel.0.0),
            payer: Binary::from(a.payer.0),
            host: Binary::from(a.host.0),
            model: Binary::from(a.model.0),
            amount: Uint128::new(amount),
            channel_total: Uint128::new(r.channel_total),
            seq: a.seq,
        });
        signed_parts.push((r.authorization.authorization.encode(), r.encode()));
        decoded.push(sr);
    }
    // Every payer and host signature in one ZIP-215 batch.
    let mut items: Vec<(&[u8], &[u8], &[u8])> = Vec::with_capacity(2 * decoded.len());
    for (sr, (auth, body)) in decoded.iter().zip(&signed_parts) {
        let sa = &sr.receipt.authorization;
        items.push((&sa.authorization.payer.0, auth, &sa.signature.0));
        items.push((&sa.authorization.host.0, body, &sr.signature.0));
    }
    if !items.is_empty() {
        verify_all(deps.api, &items, "payer or host")?;
    }

    BATCHES.save(deps.storage, h.batch, &pending_batch)?;
    DEBITS.save(deps.storage, h.batch, &pending)?;
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

/// A decoded leaf whose host signature is valid (the host is answerable for it).
struct Signed {
    sr: SignedReceipt,
}

/// Also requires the receipt to be bound to this deployment: one signed for another is
/// judged only as an `invalid_receipt` (void, no slash).
fn host_signed(
    api: &dyn cosmwasm_std::Api,
    env: &Env,
    leaf: &LeafProof,
) -> Result<Signed, ContractError> {
    let sr = SignedReceipt::decode(&leaf.receipt).map_err(|_| ContractError::NoFraud {
        reason: "leaf does not decode (prove it with invalid_receipt)",
    })?;
    let a = &sr.receipt.authorization.authorization;
    if a.chain_id != env.block.chain_id || a.contract != env.contract.address.as_str() {
        return Err(ContractError::NoFraud {
            reason: "receipt is bound elsewhere (prove it with invalid_receipt)",
        });
    }
    if !verify(
        api,
        &sr.receipt.host().0,
        &sr.receipt.encode(),
        &sr.signature.0,
    ) {
        return Err(ContractError::NoFraud {
            reason: "host signature invalid (prove it with invalid_receipt)",
        });
    }
    Ok(Signed { sr })
}

/// Opens both leaves of a two-receipt proof: both included, one of them new, both signed by
/// their host, both on one channel.
fn open_pair(
    api: &dyn cosmwasm_std::Api,
    env: &Env,
    batch: &Batch,
    first: &LeafProof,
    second: &LeafProof,
) -> Result<(Signed, Signed), ContractError> {
    let new1 = open_leaf(first, batch)?;
    let new2 = open_leaf(second, batch)?;
    if !new1 && !new2 {
        return Err(ContractError::NoFraud {
            reason: "neither receipt is new in this batch",
        });
    }
    let a = host_signed(api, env, first)?;
    let b = host_signed(api, env, second)?;
    if a.sr.receipt.channel() != b.sr.receipt.channel() {
        return Err(ContractError::NoFraud {
            reason: "receipts are on different channels",
        });
    }
    Ok((a, b))
}

fn open_single(batch: &Batch, leaf: &LeafProof) -> Result<(), ContractError> {
    if !open_leaf(leaf, batch)? {
        return Err(ContractError::NoFraud {
            reason: "the receipt is not new in this batch",
        });
    }
    Ok(())
}

/// Judges an `invalid_receipt` proof: the fraud kind's host to slash (if its own signature
/// is valid and it is registered), or why there is no fraud.
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
    let body = r.encode();
    if !verify(deps.api, &a.host.0, &body, &sr.signature.0) {
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
            let s = host_signed(deps.api, &env, leaf)?;
            let r = &s.sr.receipt;
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
            let (rx, ry) = (&x.sr.receipt, &y.sr.receipt);
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
            let (rx, ry) = (&x.sr.receipt, &y.sr.receipt);
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
            let s = host_signed(deps.api, &env, leaf)?;
            let r = &s.sr.receipt;
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
    };

    // Void: bar the header and reopen the batch number. Clearing `pending` releases every
    // reservation of this submission at once (see `Escrow::reserved`): no loop.
    DEBITS.remove(deps.storage, number);
    VOIDED.save(deps.storage, &batch.header_hash, &())?;
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

/// Settles the pending batch once its window has closed: debits the escrows, advances the
/// channels, and credits the sink, the hosts and the contributors (see [`crate::split`]).
/// Loops over the batch's channels (≤ 4,096), then over its models' contributors (≤ 64
/// each), then over its hosts.
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
    let debits = DEBITS.load(deps.storage, number)?;
    let mut models: BTreeMap<Vec<u8>, (Model, u128, u128)> = BTreeMap::new();
    let mut hosts: BTreeMap<Vec<u8>, u128> = BTreeMap::new();
    let (mut to_sink, mut to_hosts, mut to_contributors) = (0u128, 0u128, 0u128);
    for d in &debits {
        let amount = d.amount.u128();
        let mut escrow = ESCROWS.load(deps.storage, &d.payer)?;
        escrow.balance = escrow.balance.checked_sub(d.amount)?;
        escrow.reserved = escrow.reserved.checked_sub(d.amount)?;
        escrow.thawing = escrow.thawing.min(escrow.balance);
        ESCROWS.save(deps.storage, &d.payer, &escrow)?;
        let mut channel = CHANNELS
            .may_load(deps.storage, &d.channel)?
            .unwrap_or_default();
        channel.collected = d.channel_total;
        channel.last_seq = d.seq;
        CHANNELS.save(deps.storage, &d.channel, &channel)?;

        let entry = match models.entry(d.model.to_vec()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((MODELS.load(deps.storage, &d.model)?, 0, 0))
            }
        };
        let (fee, host, pool) =
            split_debit(amount, entry.0.protocol_fee_bps, entry.0.host_share_bps);
        entry.1 = entry.1.checked_add(amount).ok_or(ContractError::Overflow)?;
        entry.2 = entry.2.checked_add(pool).ok_or(ContractError::Overflow)?;
        let h = hosts.entry(d.host.to_vec()).or_default();
        *h = h.checked_add(host).ok_or(ContractError::Overflow)?;
        to_sink = to_sink.checked_add(fee).ok_or(ContractError::Overflow)?;
        to_hosts = to_hosts.checked_add(host).ok_or(ContractError::Overflow)?;
    }
    for (id, (mut model, revenue, pool)) in models {
        let weights: Vec<u16> = model.contributors.iter().map(|c| c.1).collect();
        for ((addr, _), share) in model.contributors.iter().zip(split_pool(pool, &weights)) {
            credit(deps.storage, addr, share)?;
        }
        to_contributors = to_contributors
            .checked_add(pool)
            .ok_or(ContractError::Overflow)?;
        model.revenue = model.revenue.checked_add(Uint128::new(revenue))?;
        model.contributors_revenue = model.contributors_revenue.checked_add(Uint128::new(pool))?;
        MODELS.save(deps.storage, &id, &model)?;
    }
    for (key, amount) in hosts {
        let mut host = HOSTS.load(deps.storage, &key)?;
        host.earned = host.earned.checked_add(Uint128::new(amount))?;
        credit(deps.storage, &host.operator, amount)?;
        HOSTS.save(deps.storage, &key, &host)?;
    }
    credit(deps.storage, &config.protocol_sink, to_sink)?;

    DEBITS.remove(deps.storage, number);
    batch.status = BatchStatus::Finalized;
    BATCHES.save(deps.storage, number, &batch)?;
    head.batch = number;
    head.header_hash = batch.header_hash.clone();
    head.tree_size = batch.tree_size;
    head.root = batch.root.clone();
    head.pending = None;
    HEAD.save(deps.storage, &head)?;
    Ok(Response::new()
        .add_attribute("action", "finalize")
        .add_attribute("batch", number.to_string())
        .add_attribute("total", batch.total.to_string())
        .add_attribute("protocol", to_sink.to_string())
        .add_attribute("hosts", to_hosts.to_string())
        .add_attribute("contributors", to_contributors.to_string()))
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
