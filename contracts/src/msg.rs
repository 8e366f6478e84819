//! The contract's messages (instantiate, execute, query) and query responses.
//!
//! Binary fields carry canonical encodings from `tally-protocol` (`docs/protocol.md`):
//! keys, model ids, guest hashes and Merkle hashes are exactly 32 bytes; receipts are
//! `SignedReceipt` encodings (the Merkle leaf data), headers `SignedBatchHeader` encodings.
//! Amounts are `Uint128` in the smallest unit of the contract's denomination.

use cosmwasm_std::{Addr, Binary, Uint128};
use serde::{Deserialize, Serialize};

/// Sets the deployment's parameters; see [`Config`](crate::state::Config) for each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct InstantiateMsg {
    /// The registry admin; the sender if absent.
    pub admin: Option<String>,
    /// The native denomination of escrows, bonds and payouts.
    pub denom: String,
    /// How long a submitted batch can be challenged, in seconds (at least 1).
    pub challenge_window_secs: u64,
    /// How long a withdrawal thaws, in seconds; must exceed the challenge window.
    pub thaw_secs: u64,
    /// The least bond a host registers with.
    pub min_host_bond: Uint128,
    /// Share of a host's bond slashed per proven fraud, in basis points.
    pub slash_bps: u16,
    /// Share of the slashed amount that goes to the challenger, in basis points (the rest
    /// goes to the protocol sink).
    pub challenger_bps: u16,
    /// Where protocol fees and the rest of slashed bonds go (credited, claimable).
    pub protocol_sink: String,
}

/// One contributor of a model and its weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ContributorMsg {
    /// The address credited.
    pub address: String,
    /// Weight in basis points; the weights of a model sum to 10,000.
    pub weight_bps: u16,
}

/// A leaf of the log with its inclusion proof against a batch's root.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct LeafProof {
    /// The leaf data: a `SignedReceipt` (receipt bundle) encoding.
    pub receipt: Binary,
    /// The leaf's index in the log.
    pub leaf_index: u64,
    /// The RFC 9162 inclusion path, leaf side first (32 bytes each); the tree size is the
    /// batch's.
    pub hashes: Vec<Binary>,
}

/// Evidence that a pending batch's log holds a fraudulent receipt. Every receipt named
/// comes with its inclusion proof against the batch's root, and at least one of them must
/// be new in the batch (index at or above the previous batch's tree size).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FraudProof {
    /// (a) A leaf that is not a valid receipt for this deployment: it does not decode,
    /// breaks a field rule (`Receipt::check`), is not host-signed (not included under its
    /// host checkpoint, or a bad checkpoint signature), carries a bad payer signature, is
    /// bound to another chain or contract, or names an unregistered host or one that does
    /// not serve the model. The host is slashed only if it is registered, the leaf is
    /// host-signed and bound to this deployment (a leaf it did not sign, or one it signed
    /// for another deployment, is the aggregator's doing).
    InvalidReceipt {
        /// The leaf.
        leaf: LeafProof,
    },
    /// (b) A receipt whose fee differs from the metering function run on its facts, the
    /// model's registered schedule and its `max_fee`, or that names another schedule.
    Repriced {
        /// The leaf.
        leaf: LeafProof,
    },
    /// (c) Two different receipts on one channel with the same authorisation `seq`.
    DuplicateSeq {
        /// One receipt.
        first: LeafProof,
        /// The other.
        second: LeafProof,
    },
    /// (d) Two receipts on one channel whose running totals cannot both be right: `first`
    /// has the lower `seq`, and `second.channel_total < first.channel_total + second.fee`.
    /// An honest host's totals only grow by each call's fee, so this never holds for it.
    InconsistentTotals {
        /// The receipt with the lower `seq`.
        first: LeafProof,
        /// The receipt with the higher `seq`.
        second: LeafProof,
    },
    /// (e) A receipt metered by a guest that was not allowed for its model when the batch
    /// was submitted.
    GuestNotAllowed {
        /// The leaf.
        leaf: LeafProof,
    },
    /// (f) Host equivocation: `leaf` (new in the batch) and `other` (any receipt bundle of
    /// the same host for this deployment, in the log or not, e.g. one a client holds), both
    /// host-signed, whose inclusion proofs give one range of the host's log two different
    /// hashes (`docs/protocol.md` §4.2): one `host_seq` with two receipts, one checkpoint
    /// size with two roots, or any subtree in between. The host signed two logs that
    /// cannot both be true; it is slashed.
    HostEquivocation {
        /// The leaf.
        leaf: LeafProof,
        /// The other bundle (`SignedReceipt` encoding).
        other: Binary,
    },
}

impl FraudProof {
    /// The kind's name, as the `Challenge` response's `kind` attribute and the challenge
    /// record carry it.
    pub fn kind(&self) -> &'static str {
        match self {
            FraudProof::InvalidReceipt { .. } => "invalid_receipt",
            FraudProof::Repriced { .. } => "repriced",
            FraudProof::DuplicateSeq { .. } => "duplicate_seq",
            FraudProof::InconsistentTotals { .. } => "inconsistent_totals",
            FraudProof::GuestNotAllowed { .. } => "guest_not_allowed",
            FraudProof::HostEquivocation { .. } => "host_equivocation",
        }
    }
}

/// State-changing messages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecuteMsg {
    /// Admin: hand the registries to another address.
    UpdateAdmin {
        /// The new admin.
        admin: String,
    },
    /// Admin: register a model (once; its terms are fixed).
    RegisterModel {
        /// The model id (32 bytes).
        model_id: Binary,
        /// Contributors and weights (1..=64, distinct, weights > 0 summing to 10,000); the
        /// first one also receives the rounding dust.
        contributors: Vec<ContributorMsg>,
        /// The canonical `PriceSchedule` encoding; it must price this model.
        schedule: Binary,
        /// The serving host's share of each debit, in basis points.
        host_share_bps: u16,
        /// The protocol's fee on each debit, in basis points (host share + fee ≤ 10,000).
        protocol_fee_bps: u16,
        /// Guest hashes allowed from the start.
        guests: Vec<Binary>,
    },
    /// Admin: allow a metering guest for a model.
    AllowGuest {
        /// The model id.
        model_id: Binary,
        /// SHA-256 of the guest's `.wasm`.
        guest: Binary,
    },
    /// Admin: retire a guest for a model, for good.
    RetireGuest {
        /// The model id.
        model_id: Binary,
        /// SHA-256 of the guest's `.wasm`.
        guest: Binary,
    },
    /// Admin: register an aggregator's key and the address allowed to submit its batches.
    RegisterAggregator {
        /// The aggregator's ed25519 key.
        key: Binary,
        /// The address that submits.
        address: String,
    },
    /// Admin: remove an aggregator (a pending batch it submitted stays pending).
    RemoveAggregator {
        /// The aggregator's ed25519 key.
        key: Binary,
    },
    /// Register a host, bonding the funds sent (at least the minimum bond). The sender
    /// becomes the host's operator (credited with its share); `signature` is the host
    /// key's signature over [`host_registration_message`](crate::host_registration_message),
    /// proving the sender holds the key.
    RegisterHost {
        /// The host's ed25519 key.
        key: Binary,
        /// The models it serves (registered, 1..=64, distinct).
        models: Vec<Binary>,
        /// Proof of possession of the key.
        signature: Binary,
    },
    /// Add the funds sent to a host's bond (anyone may).
    AddBond {
        /// The host's ed25519 key.
        key: Binary,
    },
    /// Add the funds sent to a payer's escrow (anyone may fund any payer key).
    Deposit {
        /// The payer's ed25519 key.
        payer_key: Binary,
    },
    /// Start thawing `amount` of an escrow for `recipient`; signed by the payer key over
    /// [`withdraw_message`](crate::withdraw_message) with the escrow's current nonce.
    RequestWithdraw {
        /// The payer's ed25519 key.
        payer_key: Binary,
        /// The amount to thaw (added to any amount already thawing; the thaw restarts).
        amount: Uint128,
        /// Who receives the tokens.
        recipient: String,
        /// The payer key's signature.
        signature: Binary,
    },
    /// Pay out a thawed withdrawal (anyone may trigger it; the signed recipient is paid).
    Withdraw {
        /// The payer's ed25519 key.
        payer_key: Binary,
    },
    /// Registered aggregator: submit the next batch (see the crate docs for the checks).
    SubmitBatch {
        /// The `SignedBatchHeader` encoding.
        header: Binary,
        /// Consistency proof from the last finalized root (empty for the first batch).
        consistency: Vec<Binary>,
        /// For each debit of the header, in its order: the channel's latest receipt and its
        /// inclusion proof against the new root.
        receipts: Vec<LeafProof>,
    },
    /// Anyone, during the window: prove a pending batch fraudulent.
    Challenge {
        /// The pending batch's number.
        batch: u64,
        /// The evidence.
        proof: FraudProof,
    },
    /// Anyone, after the window: settle the pending batch.
    Finalize {},
    /// Withdraw the sender's credited balance.
    Claim {},
}

/// Read-only queries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum QueryMsg {
    /// The deployment's parameters → [`Config`](crate::state::Config).
    Config {},
    /// The log head and the pending batch → [`HeadResponse`].
    Head {},
    /// A model's terms and revenue → [`ModelResponse`].
    Model {
        /// The model id.
        model_id: Binary,
    },
    /// Whether a guest is allowed for a model → [`GuestResponse`].
    Guest {
        /// The model id.
        model_id: Binary,
        /// The guest hash.
        guest: Binary,
    },
    /// A host → [`HostResponse`].
    Host {
        /// The host key.
        key: Binary,
    },
    /// An aggregator → [`AggregatorResponse`].
    Aggregator {
        /// The aggregator key.
        key: Binary,
    },
    /// A payer's escrow → [`EscrowResponse`].
    Escrow {
        /// The payer key.
        payer_key: Binary,
    },
    /// A channel's settled state → [`ChannelResponse`].
    Channel {
        /// The channel id.
        channel_id: Binary,
    },
    /// A batch by number (the latest submission under that number) → [`BatchResponse`].
    Batch {
        /// The batch number.
        number: u64,
    },
    /// An address's claimable balance → [`BalanceResponse`].
    Balance {
        /// The address.
        address: String,
    },
    /// Proven frauds, oldest first → [`ChallengesResponse`].
    Challenges {
        /// Start after this challenge id.
        start_after: Option<u64>,
        /// At most this many (default 10, at most 100).
        limit: Option<u32>,
    },
}

/// The last finalized batch and the pending one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct HeadResponse {
    /// Number of the last finalized batch (0 before the first).
    pub finalized_batch: u64,
    /// Its header hash (absent before the first).
    pub header_hash: Option<Binary>,
    /// Its tree size.
    pub tree_size: u64,
    /// Its root (absent before the first).
    pub root: Option<Binary>,
    /// The pending batch's number, if any.
    pub pending_batch: Option<u64>,
}

/// A registered model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ModelResponse {
    /// Contributors and weights, in registration order.
    pub contributors: Vec<(Addr, u16)>,
    /// The canonical schedule bytes.
    pub schedule: Binary,
    /// Their SHA-256.
    pub schedule_hash: Binary,
    /// Host share in basis points.
    pub host_share_bps: u16,
    /// Protocol fee in basis points.
    pub protocol_fee_bps: u16,
    /// Everything debited for this model to date (finalized batches).
    pub revenue: Uint128,
    /// Of which: credited to contributors.
    pub contributors_revenue: Uint128,
}

/// A guest's standing for a model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct GuestResponse {
    /// Allowed now.
    pub allowed: bool,
    /// Retired for good.
    pub retired: bool,
}

/// A registered host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct HostResponse {
    /// The address credited with the host's share.
    pub operator: Addr,
    /// Models it serves.
    pub models: Vec<Binary>,
    /// Its current bond.
    pub bond: Uint128,
    /// Slashed to date.
    pub slashed: Uint128,
    /// Host share credited to date.
    pub earned: Uint128,
}

/// A registered aggregator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct AggregatorResponse {
    /// The address allowed to submit its batches.
    pub address: Addr,
}

/// A payer's escrow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct EscrowResponse {
    /// Everything held for the payer (reserved and thawing included).
    pub balance: Uint128,
    /// Reserved by the pending batch.
    pub reserved: Uint128,
    /// Requested for withdrawal (still debitable until paid out).
    pub thawing: Uint128,
    /// When the thawing amount can be withdrawn (Unix seconds).
    pub thaw_until: Option<u64>,
    /// What a new withdrawal request may ask for: balance − reserved − thawing.
    pub available: Uint128,
    /// The nonce the next withdrawal request must sign.
    pub nonce: u64,
}

/// A channel's settled state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ChannelResponse {
    /// The running total collected by finalized batches.
    pub collected: Uint128,
    /// The authorisation `seq` of the last collected receipt.
    pub last_seq: u64,
}

/// Where a batch stands: the one status type every crate that reads a batch uses (the
/// contract's state, its `Batch` query, the settler, the auditor and the demo).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// In its challenge window.
    Pending,
    /// Settled.
    Finalized,
    /// Proven fraudulent; its reservations were released.
    Voided,
}

impl BatchStatus {
    /// The status's name in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Pending => "pending",
            BatchStatus::Finalized => "finalized",
            BatchStatus::Voided => "voided",
        }
    }
}

impl core::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct BatchResponse {
    /// Where it stands (`pending`, `finalized` or `voided` in JSON).
    pub status: BatchStatus,
    /// The header hash.
    pub header_hash: Binary,
    /// The log root.
    pub root: Binary,
    /// The log size.
    pub tree_size: u64,
    /// The log size before the batch (leaves from here on are new).
    pub prev_tree_size: u64,
    /// The total debited.
    pub total: Uint128,
    /// Channels debited.
    pub channels: u32,
    /// End of the challenge window (Unix seconds).
    pub challenge_deadline: u64,
}

/// A claimable balance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct BalanceResponse {
    /// The amount `Claim` would pay.
    pub amount: Uint128,
}

/// Proven frauds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ChallengesResponse {
    /// `(id, record)`, oldest first.
    pub challenges: Vec<(u64, crate::state::ChallengeRecord)>,
}
