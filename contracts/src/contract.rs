//! The contract's three entry functions (instantiate, execute, query) and shared helpers.
//! The `entry` module exports them to the wasm host; tests call them directly.

use cosmwasm_std::{
    Binary, Deps, DepsMut, Env, MessageInfo, Response, StdResult, Uint128, to_json_binary,
};

use crate::msg::{ExecuteMsg, InstantiateMsg, QueryMsg};
use crate::split::BPS;
use crate::state::{CHALLENGE_COUNT, CONFIG, Config, HEAD, Head};
use crate::{ContractError, escrow, query, registry, settle};

/// Sets the parameters; checks that the thaw outlasts the challenge window.
pub fn instantiate(
    deps: DepsMut<'_>,
    _env: Env,
    info: MessageInfo,
    msg: InstantiateMsg,
) -> Result<Response, ContractError> {
    let admin = match msg.admin {
        Some(a) => deps.api.addr_validate(&a)?,
        None => info.sender,
    };
    if msg.denom.is_empty() {
        return Err(invalid("denom", "empty"));
    }
    if msg.challenge_window_secs == 0 {
        return Err(invalid("challenge_window_secs", "must be at least 1"));
    }
    if msg.thaw_secs <= msg.challenge_window_secs {
        return Err(invalid("thaw_secs", "must exceed the challenge window"));
    }
    if msg.slash_bps > BPS || msg.challenger_bps > BPS {
        return Err(invalid("bps", "at most 10000"));
    }
    let config = Config {
        admin,
        denom: msg.denom,
        challenge_window_secs: msg.challenge_window_secs,
        thaw_secs: msg.thaw_secs,
        min_host_bond: msg.min_host_bond,
        slash_bps: msg.slash_bps,
        challenger_bps: msg.challenger_bps,
        protocol_sink: deps.api.addr_validate(&msg.protocol_sink)?,
    };
    CONFIG.save(deps.storage, &config)?;
    HEAD.save(deps.storage, &Head::default())?;
    CHALLENGE_COUNT.save(deps.storage, &0)?;
    Ok(Response::new()
        .add_attribute("action", "instantiate")
        .add_attribute("admin", config.admin.as_str())
        .add_attribute("denom", config.denom))
}

/// Dispatches a state-changing message.
pub fn execute(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    msg: ExecuteMsg,
) -> Result<Response, ContractError> {
    match msg {
        ExecuteMsg::UpdateAdmin { admin } => registry::update_admin(deps, info, admin),
        ExecuteMsg::RegisterModel {
            model_id,
            contributors,
            schedule,
            host_share_bps,
            protocol_fee_bps,
            guests,
        } => registry::register_model(
            deps,
            env,
            info,
            registry::ModelTerms {
                model_id,
                contributors,
                schedule,
                host_share_bps,
                protocol_fee_bps,
                guests,
            },
        ),
        ExecuteMsg::AllowGuest { model_id, guest } => {
            registry::allow_guest(deps, env, info, model_id, guest)
        }
        ExecuteMsg::RetireGuest { model_id, guest } => {
            registry::retire_guest(deps, env, info, model_id, guest)
        }
        ExecuteMsg::RegisterAggregator { key, address } => {
            registry::register_aggregator(deps, info, key, address)
        }
        ExecuteMsg::RemoveAggregator { key } => registry::remove_aggregator(deps, info, key),
        ExecuteMsg::RegisterHost {
            key,
            models,
            signature,
        } => registry::register_host(deps, env, info, key, models, signature),
        ExecuteMsg::AddBond { key } => registry::add_bond(deps, info, key),
        ExecuteMsg::Deposit { payer_key } => escrow::deposit(deps, info, payer_key),
        ExecuteMsg::RequestWithdraw {
            payer_key,
            amount,
            recipient,
            signature,
        } => escrow::request_withdraw(deps, env, payer_key, amount, recipient, signature),
        ExecuteMsg::Withdraw { payer_key } => escrow::withdraw(deps, env, payer_key),
        ExecuteMsg::SubmitBatch {
            header,
            consistency,
            receipts,
        } => settle::submit_batch(deps, env, info, header, consistency, receipts),
        ExecuteMsg::Challenge { batch, proof } => settle::challenge(deps, env, info, batch, proof),
        ExecuteMsg::Finalize {} => settle::finalize(deps, env),
        ExecuteMsg::Claim {} => settle::claim(deps, info),
    }
}

/// Answers a query.
pub fn query(deps: Deps<'_>, _env: Env, msg: QueryMsg) -> StdResult<Binary> {
    match msg {
        QueryMsg::Config {} => to_json_binary(&CONFIG.load(deps.storage)?),
        QueryMsg::Head {} => to_json_binary(&query::head(deps)?),
        QueryMsg::Model { model_id } => to_json_binary(&query::model(deps, &model_id)?),
        QueryMsg::Guest { model_id, guest } => {
            to_json_binary(&query::guest(deps, &model_id, &guest)?)
        }
        QueryMsg::Host { key } => to_json_binary(&query::host(deps, &key)?),
        QueryMsg::Aggregator { key } => to_json_binary(&query::aggregator(deps, &key)?),
        QueryMsg::Escrow { payer_key } => to_json_binary(&query::escrow(deps, &payer_key)?),
        QueryMsg::Channel { channel_id } => to_json_binary(&query::channel(deps, &channel_id)?),
        QueryMsg::Batch { number } => to_json_binary(&query::batch(deps, number)?),
        QueryMsg::Balance { address } => to_json_binary(&query::balance(deps, address)?),
        QueryMsg::Challenges { start_after, limit } => {
            to_json_binary(&query::challenges(deps, start_after, limit)?)
        }
    }
}

/// A field-rule error.
pub(crate) fn invalid(field: &'static str, reason: &'static str) -> ContractError {
    ContractError::Invalid { field, reason }
}

/// A 32-byte field (key, model id, guest hash, digest).
pub(crate) fn bytes32(field: &'static str, b: &Binary) -> Result<[u8; 32], ContractError> {
    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| invalid(field, "must be 32 bytes"))
}

/// The single coin of the contract's denomination sent with the message.
pub(crate) fn paid(info: &MessageInfo, denom: &str) -> Result<Uint128, ContractError> {
    let funds_error = || ContractError::Funds {
        denom: denom.to_owned(),
    };
    match info.funds.as_slice() {
        [coin] if coin.denom == denom && !coin.amount.is_zero() => {
            Uint128::try_from(coin.amount).map_err(|_| funds_error())
        }
        _ => Err(funds_error()),
    }
}

/// The admin check of every registry message.
pub(crate) fn only_admin(deps: Deps<'_>, info: &MessageInfo) -> Result<Config, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    if info.sender != config.admin {
        return Err(ContractError::Unauthorized);
    }
    Ok(config)
}
