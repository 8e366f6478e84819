//! Payer escrows: deposits, and two-step withdrawals with a thaw longer than the window.
//!
//! The rule: `SubmitBatch` reserves each debit from `balance − reserved` (thawing funds
//! included: a payer cannot run from usage it authorised by asking to withdraw). A
//! withdrawal request may ask only for `balance − reserved − thawing`, signed by the payer
//! key (see [`withdraw_message`](crate::withdraw_message())); after `thaw_secs` anyone may
//! trigger the payout of `min(thawing, balance − reserved)` to the signed recipient. So a
//! withdrawal never takes funds a pending batch reserved, and usage signed before the
//! request can still be settled during the thaw: one batch is pending at a time and the
//! thaw outlasts a window, so whatever batch is pending when the request is made finalizes
//! before the thaw ends, and the aggregator can submit (and so reserve) the next one in the
//! time left.

use cosmwasm_std::{BankMsg, Binary, DepsMut, Env, MessageInfo, Response, Uint128, coins};

use crate::ContractError;
use crate::contract::{bytes32, invalid, paid};
use crate::ledger::{Fates, has_escrow, save_escrow};
use crate::signing::{verify, withdraw_message};
use crate::state::{CONFIG, HEAD, THAWS};

pub(crate) fn deposit(
    deps: DepsMut<'_>,
    info: MessageInfo,
    payer_key: Binary,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let amount = paid(&info, &config.denom)?;
    let k = bytes32("payer_key", &payer_key)?;
    let head = HEAD.load(deps.storage)?;
    let mut escrow = Fates::new(&head).escrow(deps.storage, &k)?;
    escrow.balance = escrow
        .balance
        .checked_add(amount.u128())
        .ok_or(ContractError::Overflow)?;
    save_escrow(deps.storage, &k, &escrow);
    Ok(Response::new()
        .add_attribute("action", "deposit")
        .add_attribute("payer", payer_key.to_hex())
        .add_attribute("amount", amount.to_string())
        .add_attribute("balance", escrow.balance.to_string()))
}

pub(crate) fn request_withdraw(
    deps: DepsMut<'_>,
    env: Env,
    payer_key: Binary,
    amount: Uint128,
    recipient: String,
    signature: Binary,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let k = bytes32("payer_key", &payer_key)?;
    let recipient = deps.api.addr_validate(&recipient)?;
    if !has_escrow(deps.storage, &k) {
        return Err(ContractError::NotRegistered { what: "escrow" });
    }
    let head = HEAD.load(deps.storage)?;
    let escrow = Fates::new(&head).escrow(deps.storage, &k)?;
    let mut thaw = THAWS.may_load(deps.storage, &k)?.unwrap_or_default();
    if amount.is_zero() {
        return Err(invalid("amount", "zero"));
    }
    let msg = withdraw_message(
        &env.block.chain_id,
        env.contract.address.as_str(),
        &k,
        thaw.nonce,
        amount.u128(),
        recipient.as_str(),
    );
    if !verify(deps.api, &k, &msg, &signature) {
        return Err(ContractError::Signature { what: "payer" });
    }
    // Debits settled since the last request may have left less than was thawing.
    let thawing = thaw.thawing.u128().min(escrow.balance);
    let available = escrow
        .balance
        .saturating_sub(escrow.reserved)
        .saturating_sub(thawing);
    if amount.u128() > available {
        return Err(ContractError::InsufficientEscrow {
            available,
            needed: amount.u128(),
        });
    }
    let until = env.block.time.seconds().saturating_add(config.thaw_secs);
    thaw.thawing = Uint128::new(thawing).checked_add(amount)?;
    thaw.thaw_until = Some(until);
    thaw.recipient = Some(recipient.clone());
    thaw.nonce = thaw.nonce.saturating_add(1);
    THAWS.save(deps.storage, &k, &thaw)?;
    save_escrow(deps.storage, &k, &escrow);
    Ok(Response::new()
        .add_attribute("action", "request_withdraw")
        .add_attribute("payer", payer_key.to_hex())
        .add_attribute("amount", amount.to_string())
        .add_attribute("thawing", thaw.thawing.to_string())
        .add_attribute("thaw_until", until.to_string())
        .add_attribute("recipient", recipient.as_str()))
}

pub(crate) fn withdraw(
    deps: DepsMut<'_>,
    env: Env,
    payer_key: Binary,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let k = bytes32("payer_key", &payer_key)?;
    if !has_escrow(deps.storage, &k) {
        return Err(ContractError::NotRegistered { what: "escrow" });
    }
    let mut thaw = THAWS.may_load(deps.storage, &k)?.unwrap_or_default();
    let (Some(until), Some(recipient)) = (thaw.thaw_until, thaw.recipient.clone()) else {
        return Err(ContractError::NotThawed {
            reason: "no withdrawal requested",
        });
    };
    if env.block.time.seconds() < until {
        return Err(ContractError::NotThawed {
            reason: "still thawing",
        });
    }
    let head = HEAD.load(deps.storage)?;
    let mut escrow = Fates::new(&head).escrow(deps.storage, &k)?;
    let amount = thaw
        .thawing
        .u128()
        .min(escrow.balance.saturating_sub(escrow.reserved));
    escrow.balance -= amount;
    thaw.thawing = Uint128::zero();
    thaw.thaw_until = None;
    thaw.recipient = None;
    save_escrow(deps.storage, &k, &escrow);
    THAWS.save(deps.storage, &k, &thaw)?;
    let mut res = Response::new()
        .add_attribute("action", "withdraw")
        .add_attribute("payer", payer_key.to_hex())
        .add_attribute("amount", amount.to_string())
        .add_attribute("recipient", recipient.as_str());
    if amount > 0 {
        res = res.add_message(BankMsg::Send {
            to_address: recipient.into_string(),
            amount: coins(amount, config.denom),
        });
    }
    Ok(res)
}
