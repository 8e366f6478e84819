//! `Finalize` and `Claim`: a batch past its window pays out, in bounded steps; a party
//! withdraws what it was credited.

use super::credit;

use cosmwasm_std::{BankMsg, DepsMut, Env, MessageInfo, Order, Response, Uint128, coins};

use crate::ContractError;
use crate::split::split_pool;
use crate::state::{
    BALANCES, BATCHES, BatchStatus, CONFIG, HEAD, HOST_EARNED, HOST_PAYOUTS, HOSTS, MODEL_PAYOUTS,
    MODEL_REVENUE, MODELS,
};

/// Most credits one `Finalize` makes (a host's share is one, a model's pool one per
/// contributor): a batch whose hosts and models need more is finalized over several
/// transactions, each bounded (see `Finalize`).
pub const FINALIZE_CREDITS: usize = 1_024;

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
