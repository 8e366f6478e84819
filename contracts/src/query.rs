//! Query handlers: everything a UI or an auditor reads.

use cosmwasm_std::{Binary, Deps, Order, StdError, StdResult, Uint128};
use cw_storage_plus::Bound;

use crate::ledger::Fates;
use crate::msg::{
    AggregatorResponse, BalanceResponse, BatchResponse, ChallengesResponse, ChannelResponse,
    EscrowResponse, GuestResponse, HeadResponse, HostResponse, ModelResponse,
};
use crate::state::{
    AGGREGATORS, BALANCES, BATCHES, CHALLENGES, GUESTS, HEAD, HOST_EARNED, HOSTS, MODEL_REVENUE,
    MODELS, THAWS,
};

fn key32(b: &Binary) -> StdResult<[u8; 32]> {
    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| StdError::msg("ids and keys are 32 bytes"))
}

pub(crate) fn head(deps: Deps<'_>) -> StdResult<HeadResponse> {
    let h = HEAD.load(deps.storage)?;
    let some = |b: Binary| (h.batch > 0).then_some(b);
    Ok(HeadResponse {
        finalized_batch: h.batch,
        header_hash: some(h.header_hash),
        tree_size: h.tree_size,
        root: some(h.root),
        pending_batch: h.pending,
    })
}

pub(crate) fn model(deps: Deps<'_>, id: &Binary) -> StdResult<ModelResponse> {
    let id = key32(id)?;
    let m = MODELS.load(deps.storage, &id)?;
    let (revenue, contributors_revenue) = MODEL_REVENUE
        .may_load(deps.storage, &id)?
        .unwrap_or_default();
    Ok(ModelResponse {
        contributors: m.contributors,
        schedule: m.schedule,
        schedule_hash: m.schedule_hash,
        host_share_bps: m.host_share_bps,
        protocol_fee_bps: m.protocol_fee_bps,
        revenue,
        contributors_revenue,
    })
}

pub(crate) fn guest(deps: Deps<'_>, model: &Binary, guest: &Binary) -> StdResult<GuestResponse> {
    let g = GUESTS.may_load(deps.storage, (&key32(model)?, &key32(guest)?))?;
    Ok(GuestResponse {
        allowed: g.as_ref().is_some_and(|g| g.retired_at.is_none()),
        retired: g.is_some_and(|g| g.retired_at.is_some()),
    })
}

pub(crate) fn host(deps: Deps<'_>, key: &Binary) -> StdResult<HostResponse> {
    let key = key32(key)?;
    let h = HOSTS.load(deps.storage, &key)?;
    let earned = HOST_EARNED
        .may_load(deps.storage, &key)?
        .unwrap_or_default();
    Ok(HostResponse {
        operator: h.operator,
        models: h.models,
        bond: h.bond,
        slashed: h.slashed,
        earned,
    })
}

pub(crate) fn aggregator(deps: Deps<'_>, key: &Binary) -> StdResult<AggregatorResponse> {
    Ok(AggregatorResponse {
        address: AGGREGATORS.load(deps.storage, &key32(key)?)?,
    })
}

pub(crate) fn escrow(deps: Deps<'_>, payer: &Binary) -> StdResult<EscrowResponse> {
    let payer = key32(payer)?;
    let head = HEAD.load(deps.storage)?;
    let e = Fates::new(&head).escrow(deps.storage, &payer)?;
    let thaw = THAWS.may_load(deps.storage, &payer)?.unwrap_or_default();
    let thawing = thaw.thawing.u128().min(e.balance);
    Ok(EscrowResponse {
        available: Uint128::new(e.balance.saturating_sub(e.reserved).saturating_sub(thawing)),
        balance: Uint128::new(e.balance),
        reserved: Uint128::new(e.reserved),
        thawing: Uint128::new(thawing),
        thaw_until: thaw.thaw_until,
        nonce: thaw.nonce,
    })
}

pub(crate) fn channel(deps: Deps<'_>, id: &Binary) -> StdResult<ChannelResponse> {
    let head = HEAD.load(deps.storage)?;
    let c = Fates::new(&head).channel(deps.storage, &key32(id)?)?;
    Ok(ChannelResponse {
        collected: Uint128::new(c.collected),
        last_seq: c.last_seq,
    })
}

pub(crate) fn batch(deps: Deps<'_>, number: u64) -> StdResult<BatchResponse> {
    let b = BATCHES.load(deps.storage, number)?;
    Ok(BatchResponse {
        status: b.status,
        header_hash: b.header_hash,
        root: b.root,
        tree_size: b.tree_size,
        prev_tree_size: b.prev_tree_size,
        total: b.total,
        channels: b.channels,
        challenge_deadline: b.challenge_deadline,
    })
}

pub(crate) fn balance(deps: Deps<'_>, address: String) -> StdResult<BalanceResponse> {
    let addr = deps.api.addr_validate(&address)?;
    Ok(BalanceResponse {
        amount: BALANCES
            .may_load(deps.storage, &addr)?
            .unwrap_or(Uint128::zero()),
    })
}

pub(crate) fn challenges(
    deps: Deps<'_>,
    start_after: Option<u64>,
    limit: Option<u32>,
) -> StdResult<ChallengesResponse> {
    let limit = limit.unwrap_or(10).min(100) as usize;
    let challenges = CHALLENGES
        .range(
            deps.storage,
            start_after.map(Bound::exclusive),
            None,
            Order::Ascending,
        )
        .take(limit)
        .collect::<StdResult<Vec<_>>>()?;
    Ok(ChallengesResponse { challenges })
}
