//! `SubmitBatch`: the next batch, its consistency with the last finalized one, and each
//! debited channel's latest receipt.

use super::{debit_error, digests, distinct_checkpoints, included_in_checkpoint, open_leaf};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use cosmwasm_std::{Binary, DepsMut, Env, MessageInfo, Response, Uint128};
use tally_protocol::merkle::ConsistencyProof;
use tally_protocol::{ChannelState, Digest, SignedBatchHeader, SignedReceipt};

use crate::ContractError;
use crate::contract::{bytes32, invalid};
use crate::ledger::{Fates, save_channel, save_escrow};
use crate::msg::LeafProof;
use crate::signing::{verify, verify_all};
use crate::split::split_debit;
use crate::state::{
    AGGREGATORS, BATCHES, Batch, BatchStatus, CONFIG, Escrow, GUESTS, HEAD, HOST_PAYOUTS, HOSTS,
    Host, MODEL_PAYOUTS, MODELS, Model, PendingCollect, VOIDED,
};

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
        let collected = ChannelState {
            last_seq: channel.last_seq,
            total: channel.collected,
        };
        if collected.accepts_seq(a.seq).is_err() {
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
