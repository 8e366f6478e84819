//! The settlement contract (CosmWasm): escrow, registries, batches with a challenge window,
//! fraud proofs with slashing, and pull-based release of revenue to a model's contributors.
//!
//! The contract trusts nothing it cannot check. Encodings, hashes and Merkle proofs come
//! from `tally-protocol` (never re-implemented here); signatures are checked by the chain's
//! `ed25519_verify` / `ed25519_batch_verify`, which follow ZIP-215 like every other Tally
//! component; re-pricing is judged by `tally_guest::meter`, the metering guest's own source
//! built natively into the contract.
//!
//! # Messages and their checks
//!
//! - **Registries** (admin; each change emits attributes): [`RegisterModel`] (32-byte id,
//!   1–64 distinct contributors with weights > 0 summing to 10,000 bps, the canonical
//!   `PriceSchedule` bytes, which must price this model, its hash becoming the model's
//!   schedule hash, host share + protocol fee ≤ 10,000 bps, initial guests), [`AllowGuest`],
//!   [`RetireGuest`] (for good: a retired hash is never allowed again),
//!   [`RegisterAggregator`] (ed25519 key + the address allowed to submit its batches),
//!   [`RemoveAggregator`], [`UpdateAdmin`]. Hosts register themselves:
//!   [`RegisterHost`] bonds the funds sent (≥ the minimum) and needs the host key's
//!   signature over [`host_registration_message`] (proof of possession); [`AddBond`].
//! - **Escrow**: [`Deposit`] against a payer key; [`RequestWithdraw`] signed by the payer
//!   key over [`withdraw_message`] starts a thaw longer than the challenge window;
//!   [`Withdraw`] pays out after the thaw. See [`escrow`] for the rule
//!   between reservations and thawing funds.
//! - **[`SubmitBatch`]** (the registered aggregator's address): decodes the
//!   `SignedBatchHeader` (which enforces sorted distinct channels, non-zero amounts, total =
//!   Σ debits), checks the aggregator key is registered to the sender and its signature,
//!   `chain_id` = `env.block.chain_id`, `contract` = this address, the header was never
//!   voided, no batch is pending, `batch` = last finalized + 1, `prev_header` = the last
//!   finalized header's hash, and the consistency proof from the last finalized root (none
//!   for the first log; empty for a batch of the same tree size, which vouches for the same
//!   leaves as the batch before it: a period split over several batches). Then for each debit, in order, the channel's latest receipt:
//!   decodes, `Receipt::check` (cap, max fee, expiry, links), is on the debit's channel and
//!   bound to this chain and contract, is included in the new root, its host is registered
//!   and serves the model, its guest is allowed, its schedule hash is the model's, its `seq`
//!   is above the last collected one, `debit = channel_total − collected` equals the
//!   header's amount, and the payer's escrow (`balance − reserved`) covers it, which
//!   reserves it. All payer and host signatures are checked in one `ed25519_batch_verify`.
//!   The batch is pending until `now + challenge_window_secs`.
//! - **[`Challenge`]** (anyone, while `now < deadline`): one [`FraudProof`] against the
//!   pending batch; every receipt named is proven included in its root, and at least one
//!   is new in the batch. Proven fraud voids the batch (reservations released, header
//!   barred) and slashes the answerable host; a failed challenge is an error.
//! - **[`Finalize`]** (anyone, once `now ≥ deadline`): credits sink, hosts and contributors
//!   by the rule in [`split`] and makes the batch the last finalized one, which debits its
//!   escrows and advances its channels. A batch with more hosts and contributors to credit
//!   than [`FINALIZE_CREDITS`] is finalized by repeated calls (attribute `complete`).
//! - **[`Claim`]**: pays the sender's credited balance.
//!
//! # Costs
//!
//! `SubmitBatch` grows with the number of debited channels (one receipt, one `O(log n)`
//! inclusion proof and two signatures each, all signatures in one batch check) plus one
//! `O(log n)` consistency proof, never with the number of receipts behind them. Per
//! channel it reads and writes two small records (the channel's and, once per payer, the
//! escrow; see [`state`]); no stored value grows with the batch. A challenge costs
//! `O(log n)`: voiding writes a constant number of records, because reservations and
//! collections are tagged with their submission and settle lazily (see [`state::Escrow`]).
//! `Finalize` touches no channel or escrow: it credits the batch's hosts and its models'
//! contributors, at most [`FINALIZE_CREDITS`] per call.
//!
//! [`RegisterModel`]: msg::ExecuteMsg::RegisterModel
//! [`AllowGuest`]: msg::ExecuteMsg::AllowGuest
//! [`RetireGuest`]: msg::ExecuteMsg::RetireGuest
//! [`RegisterAggregator`]: msg::ExecuteMsg::RegisterAggregator
//! [`RemoveAggregator`]: msg::ExecuteMsg::RemoveAggregator
//! [`UpdateAdmin`]: msg::ExecuteMsg::UpdateAdmin
//! [`RegisterHost`]: msg::ExecuteMsg::RegisterHost
//! [`AddBond`]: msg::ExecuteMsg::AddBond
//! [`Deposit`]: msg::ExecuteMsg::Deposit
//! [`RequestWithdraw`]: msg::ExecuteMsg::RequestWithdraw
//! [`Withdraw`]: msg::ExecuteMsg::Withdraw
//! [`SubmitBatch`]: msg::ExecuteMsg::SubmitBatch
//! [`Challenge`]: msg::ExecuteMsg::Challenge
//! [`FraudProof`]: msg::FraudProof
//! [`Finalize`]: msg::ExecuteMsg::Finalize
//! [`Claim`]: msg::ExecuteMsg::Claim

pub mod contract;
mod error;
pub mod escrow;
mod ledger;
pub mod msg;
mod query;
mod registry;
mod settle;
mod signing;
pub mod split;
pub mod state;

pub use error::ContractError;
pub use registry::{MAX_CONTRIBUTORS, MAX_HOST_MODELS};
pub use settle::FINALIZE_CREDITS;
pub use tally_protocol::{host_registration_message, withdraw_message};

/// The wasm exports. CosmWasm's `entry_point` macro emits `#[no_mangle] extern "C"`
/// wrappers on wasm32, which the `unsafe_code` lint flags; that is the only unsafe-adjacent
/// code in the crate, so the lint is allowed in this module alone.
#[cfg(not(feature = "library"))]
pub mod entry {
    #![allow(
        unsafe_code,
        reason = "cosmwasm's entry_point exports #[no_mangle] functions"
    )]

    use cosmwasm_std::{Binary, Deps, DepsMut, Env, MessageInfo, Response, StdResult, entry_point};

    use crate::ContractError;
    use crate::msg::{ExecuteMsg, InstantiateMsg, QueryMsg};

    /// See [`crate::contract::instantiate`].
    #[entry_point]
    pub fn instantiate(
        deps: DepsMut<'_>,
        env: Env,
        info: MessageInfo,
        msg: InstantiateMsg,
    ) -> Result<Response, ContractError> {
        crate::contract::instantiate(deps, env, info, msg)
    }

    /// See [`crate::contract::execute`].
    #[entry_point]
    pub fn execute(
        deps: DepsMut<'_>,
        env: Env,
        info: MessageInfo,
        msg: ExecuteMsg,
    ) -> Result<Response, ContractError> {
        crate::contract::execute(deps, env, info, msg)
    }

    /// See [`crate::contract::query`].
    #[entry_point]
    pub fn query(deps: Deps<'_>, env: Env, msg: QueryMsg) -> StdResult<Binary> {
        crate::contract::query(deps, env, msg)
    }
}
