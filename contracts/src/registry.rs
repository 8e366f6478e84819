//! Registries: models (contributors, schedule, shares, guests), aggregators and hosts.
//! Every change emits a `wasm` event with `action` and the ids it touched.

use cosmwasm_std::{Binary, DepsMut, Env, MessageInfo, Response, Uint128};
use tally_protocol::PriceSchedule;

use crate::ContractError;
use crate::contract::{bytes32, invalid, only_admin, paid};
use crate::msg::ContributorMsg;
use crate::signing::{host_registration_message, verify};
use crate::split::BPS;
use crate::state::{AGGREGATORS, CONFIG, GUESTS, GuestState, HOSTS, Host, MODELS, Model};

/// Most contributors of one model (bounds finalize's per-model loop).
pub const MAX_CONTRIBUTORS: usize = 64;
/// Most models one host serves (bounds its record).
pub const MAX_HOST_MODELS: usize = 64;

/// A model's registration terms, as sent.
pub(crate) struct ModelTerms {
    pub(crate) model_id: Binary,
    pub(crate) contributors: Vec<ContributorMsg>,
    pub(crate) schedule: Binary,
    pub(crate) host_share_bps: u16,
    pub(crate) protocol_fee_bps: u16,
    pub(crate) guests: Vec<Binary>,
}

pub(crate) fn update_admin(
    deps: DepsMut<'_>,
    info: MessageInfo,
    admin: String,
) -> Result<Response, ContractError> {
    let mut config = only_admin(deps.as_ref(), &info)?;
    config.admin = deps.api.addr_validate(&admin)?;
    CONFIG.save(deps.storage, &config)?;
    Ok(Response::new()
        .add_attribute("action", "update_admin")
        .add_attribute("admin", config.admin.as_str()))
}

pub(crate) fn register_model(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    terms: ModelTerms,
) -> Result<Response, ContractError> {
    only_admin(deps.as_ref(), &info)?;
    let id = bytes32("model_id", &terms.model_id)?;
    if MODELS.has(deps.storage, &id) {
        return Err(ContractError::AlreadyRegistered { what: "model" });
    }
    let schedule = PriceSchedule::decode(&terms.schedule).map_err(|e| ContractError::Decode {
        what: "schedule",
        reason: e.code(),
    })?;
    if schedule.model.0 != id {
        return Err(invalid("schedule", "prices another model"));
    }
    if u32::from(terms.host_share_bps) + u32::from(terms.protocol_fee_bps) > u32::from(BPS) {
        return Err(invalid("bps", "host share + protocol fee above 10000"));
    }
    let n = terms.contributors.len();
    if n == 0 || n > MAX_CONTRIBUTORS {
        return Err(invalid("contributors", "between 1 and 64"));
    }
    let mut contributors = Vec::with_capacity(n);
    let mut total = 0u32;
    for c in &terms.contributors {
        let addr = deps.api.addr_validate(&c.address)?;
        if c.weight_bps == 0 {
            return Err(invalid("contributors", "zero weight"));
        }
        if contributors.iter().any(|(a, _)| *a == addr) {
            return Err(invalid("contributors", "listed twice"));
        }
        total += u32::from(c.weight_bps);
        contributors.push((addr, c.weight_bps));
    }
    if total != u32::from(BPS) {
        return Err(invalid("contributors", "weights must sum to 10000"));
    }
    let model = Model {
        contributors,
        schedule_hash: Binary::from(schedule.hash().0),
        schedule: terms.schedule,
        host_share_bps: terms.host_share_bps,
        protocol_fee_bps: terms.protocol_fee_bps,
    };
    MODELS.save(deps.storage, &id, &model)?;
    let mut res = Response::new()
        .add_attribute("action", "register_model")
        .add_attribute("model", terms.model_id.to_hex())
        .add_attribute("schedule_hash", model.schedule_hash.to_hex());
    for g in terms.guests {
        let guest = bytes32("guest", &g)?;
        allow(deps.storage, &id, &guest, env.block.time.seconds())?;
        res = res.add_attribute("guest_allowed", g.to_hex());
    }
    Ok(res)
}

fn allow(
    storage: &mut dyn cosmwasm_std::Storage,
    model: &[u8; 32],
    guest: &[u8; 32],
    now: u64,
) -> Result<(), ContractError> {
    match GUESTS.may_load(storage, (model, guest))? {
        Some(GuestState {
            retired_at: Some(_),
            ..
        }) => Err(ContractError::GuestRetired),
        Some(_) => Err(ContractError::AlreadyRegistered { what: "guest" }),
        None => Ok(GUESTS.save(
            storage,
            (model, guest),
            &GuestState {
                allowed_at: now,
                retired_at: None,
            },
        )?),
    }
}

pub(crate) fn allow_guest(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    model_id: Binary,
    guest: Binary,
) -> Result<Response, ContractError> {
    only_admin(deps.as_ref(), &info)?;
    let id = bytes32("model_id", &model_id)?;
    let g = bytes32("guest", &guest)?;
    if !MODELS.has(deps.storage, &id) {
        return Err(ContractError::NotRegistered { what: "model" });
    }
    allow(deps.storage, &id, &g, env.block.time.seconds())?;
    Ok(Response::new()
        .add_attribute("action", "allow_guest")
        .add_attribute("model", model_id.to_hex())
        .add_attribute("guest", guest.to_hex()))
}

pub(crate) fn retire_guest(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    model_id: Binary,
    guest: Binary,
) -> Result<Response, ContractError> {
    only_admin(deps.as_ref(), &info)?;
    let id = bytes32("model_id", &model_id)?;
    let g = bytes32("guest", &guest)?;
    let mut state = GUESTS
        .may_load(deps.storage, (&id, &g))?
        .ok_or(ContractError::NotRegistered { what: "guest" })?;
    if state.retired_at.is_some() {
        return Err(ContractError::GuestRetired);
    }
    state.retired_at = Some(env.block.time.seconds());
    GUESTS.save(deps.storage, (&id, &g), &state)?;
    Ok(Response::new()
        .add_attribute("action", "retire_guest")
        .add_attribute("model", model_id.to_hex())
        .add_attribute("guest", guest.to_hex()))
}

pub(crate) fn register_aggregator(
    deps: DepsMut<'_>,
    info: MessageInfo,
    key: Binary,
    address: String,
) -> Result<Response, ContractError> {
    only_admin(deps.as_ref(), &info)?;
    let k = bytes32("key", &key)?;
    let addr = deps.api.addr_validate(&address)?;
    if AGGREGATORS.has(deps.storage, &k) {
        return Err(ContractError::AlreadyRegistered { what: "aggregator" });
    }
    AGGREGATORS.save(deps.storage, &k, &addr)?;
    Ok(Response::new()
        .add_attribute("action", "register_aggregator")
        .add_attribute("key", key.to_hex())
        .add_attribute("address", addr.as_str()))
}

pub(crate) fn remove_aggregator(
    deps: DepsMut<'_>,
    info: MessageInfo,
    key: Binary,
) -> Result<Response, ContractError> {
    only_admin(deps.as_ref(), &info)?;
    let k = bytes32("key", &key)?;
    if !AGGREGATORS.has(deps.storage, &k) {
        return Err(ContractError::NotRegistered { what: "aggregator" });
    }
    AGGREGATORS.remove(deps.storage, &k);
    Ok(Response::new()
        .add_attribute("action", "remove_aggregator")
        .add_attribute("key", key.to_hex()))
}

pub(crate) fn register_host(
    deps: DepsMut<'_>,
    env: Env,
    info: MessageInfo,
    key: Binary,
    models: Vec<Binary>,
    signature: Binary,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let bond = paid(&info, &config.denom)?;
    if bond < config.min_host_bond {
        return Err(invalid("bond", "below the minimum host bond"));
    }
    let k = bytes32("key", &key)?;
    if HOSTS.has(deps.storage, &k) {
        return Err(ContractError::AlreadyRegistered { what: "host" });
    }
    if models.is_empty() || models.len() > MAX_HOST_MODELS {
        return Err(invalid("models", "between 1 and 64"));
    }
    for (i, m) in models.iter().enumerate() {
        let id = bytes32("models", m)?;
        if !MODELS.has(deps.storage, &id) {
            return Err(ContractError::NotRegistered { what: "model" });
        }
        if models[..i].contains(m) {
            return Err(invalid("models", "listed twice"));
        }
    }
    let msg = host_registration_message(
        &env.block.chain_id,
        env.contract.address.as_str(),
        &k,
        info.sender.as_str(),
    );
    if !verify(deps.api, &k, &msg, &signature) {
        return Err(ContractError::Signature {
            what: "host registration",
        });
    }
    let host = Host {
        operator: info.sender,
        models,
        bond,
        slashed: Uint128::zero(),
    };
    HOSTS.save(deps.storage, &k, &host)?;
    Ok(Response::new()
        .add_attribute("action", "register_host")
        .add_attribute("key", key.to_hex())
        .add_attribute("operator", host.operator.as_str())
        .add_attribute("bond", bond.to_string()))
}

pub(crate) fn add_bond(
    deps: DepsMut<'_>,
    info: MessageInfo,
    key: Binary,
) -> Result<Response, ContractError> {
    let config = CONFIG.load(deps.storage)?;
    let amount = paid(&info, &config.denom)?;
    let k = bytes32("key", &key)?;
    let mut host = HOSTS
        .may_load(deps.storage, &k)?
        .ok_or(ContractError::NotRegistered { what: "host" })?;
    host.bond = host.bond.checked_add(amount)?;
    HOSTS.save(deps.storage, &k, &host)?;
    Ok(Response::new()
        .add_attribute("action", "add_bond")
        .add_attribute("key", key.to_hex())
        .add_attribute("bond", host.bond.to_string()))
}
