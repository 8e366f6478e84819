//! `Challenge`: a fraud proof against the pending batch voids it and slashes the host
//! answerable for it.

use super::{credit, host_signed, is_host_signed, open_leaf};

use cosmwasm_std::{Binary, DepsMut, Env, MessageInfo, Response, Uint128};
use tally_protocol::{MeterInput, PriceSchedule, SignedReceipt, totals_consistent};

use crate::ContractError;
use crate::msg::{FraudProof, LeafProof};
use crate::signing::verify;
use crate::split::bps_floor;
use crate::state::{
    BATCHES, Batch, BatchStatus, CHALLENGE_COUNT, CHALLENGES, CONFIG, ChallengeRecord, GUESTS,
    HEAD, HOSTS, MODELS, VOIDED, VOIDED_SUBMISSIONS,
};

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
    let kind = proof.kind();
    let host: Option<[u8; 32]> = match &proof {
        FraudProof::InvalidReceipt { leaf } => {
            open_single(&batch, leaf)?;
            judge_invalid(&deps, &env, leaf)?
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
            Some(a.host.0)
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
            Some(rx.host().0)
        }
        FraudProof::InconsistentTotals { first, second } => {
            let (x, y) = open_pair(deps.api, &env, &batch, first, second)?;
            let (rx, ry) = (&x.receipt, &y.receipt);
            if rx.authorization.authorization.seq >= ry.authorization.authorization.seq {
                return Err(ContractError::NoFraud {
                    reason: "first must have the lower seq",
                });
            }
            if totals_consistent(rx.channel_total, ry.metered.fee, ry.channel_total) {
                return Err(ContractError::NoFraud {
                    reason: "the totals are consistent",
                });
            }
            Some(rx.host().0)
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
            Some(r.host().0)
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
            Some(a.receipt.host().0)
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
