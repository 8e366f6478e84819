//! Storage layout. Every map is keyed by raw bytes (32-byte keys and ids) or numbers, and
//! every value is bounded: no value grows with the number of receipts or of users.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `config` | [`Config`] | instantiate, `UpdateAdmin` |
//! | `head` | [`Head`]: last finalized batch, pending batch number | submit, finalize, void |
//! | `models/{model}` | [`Model`] (≤ 64 contributors, schedule bytes, revenue) | registry, finalize |
//! | `guests/{model}{guest}` | [`GuestState`] | registry |
//! | `hosts/{key}` | [`Host`] (≤ 64 models, bond) | registration, bond, slash, finalize |
//! | `aggregators/{key}` | address | registry |
//! | `escrows/{payer}` | [`Escrow`] | deposit, withdrawal, submit, finalize |
//! | `channels/{channel}` | [`Channel`] (collected total, last seq) | finalize |
//! | `batches/{number}` | [`Batch`] (summary, no debits) | submit, finalize, void |
//! | `debits/{number}` | `Vec<`[`PendingDebit`]`>` (≤ 4,096) | submit; read by finalize |
//! | `voided/{header hash}` | `()`: headers that may never be submitted again | void |
//! | `balances/{address}` | claimable amount | finalize, slash, claim |
//! | `challenges/{id}` | [`ChallengeRecord`] | challenge |

use cosmwasm_std::{Addr, Binary, Uint128};
use cw_storage_plus::{Item, Map};
use serde::{Deserialize, Serialize};

/// The deployment's parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Config {
    /// Who may change the registries.
    pub admin: Addr,
    /// The native denomination of escrows, bonds and payouts.
    pub denom: String,
    /// Seconds a batch stays challengeable.
    pub challenge_window_secs: u64,
    /// Seconds a withdrawal thaws (longer than the window, so a payer cannot leave before
    /// usage it authorised is submitted and settled).
    pub thaw_secs: u64,
    /// Least bond of a host.
    pub min_host_bond: Uint128,
    /// Share of a bond slashed per proven fraud (basis points).
    pub slash_bps: u16,
    /// Share of a slash paid to the challenger (basis points); the rest to the sink.
    pub challenger_bps: u16,
    /// Receives protocol fees and the rest of slashes.
    pub protocol_sink: Addr,
}

/// The log as settled: the last finalized batch, and the one pending batch if any.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Head {
    /// Number of the last finalized batch (0 before any).
    pub batch: u64,
    /// Its header hash (empty before any; batch 1's `prev_header` is zero by the header rules).
    pub header_hash: Binary,
    /// Its tree size (0 before any).
    pub tree_size: u64,
    /// Its root (empty before any: the first batch needs no consistency proof).
    pub root: Binary,
    /// The number of the batch in its challenge window, if any.
    pub pending: Option<u64>,
    /// Submissions so far (voided ones included); the pending batch, if any, is submission
    /// number `submissions`. Reservations are tagged with it (see [`Escrow::reserved`]).
    pub submissions: u64,
}

/// A registered model: who is paid, how, and at what price.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Model {
    /// Contributors with weights in basis points (sum 10,000); the first receives dust.
    pub contributors: Vec<(Addr, u16)>,
    /// The canonical price schedule bytes (kept so fraud proofs can re-meter).
    pub schedule: Binary,
    /// SHA-256 of `schedule`: what receipts must carry.
    pub schedule_hash: Binary,
    /// The serving host's share (basis points).
    pub host_share_bps: u16,
    /// The protocol fee (basis points).
    pub protocol_fee_bps: u16,
    /// Debited to date.
    pub revenue: Uint128,
    /// Credited to contributors to date.
    pub contributors_revenue: Uint128,
}

/// A guest hash's standing for one model. Allowed from `allowed_at`; once `retired_at` is
/// set it stays set, and the guest counts as not allowed for batches submitted from then.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct GuestState {
    /// When it was allowed (Unix seconds).
    pub allowed_at: u64,
    /// When it was retired (Unix seconds), for good.
    pub retired_at: Option<u64>,
}

impl GuestState {
    /// Whether the guest was allowed at time `t` (Unix seconds).
    pub fn allowed_at_time(&self, t: u64) -> bool {
        self.allowed_at <= t && self.retired_at.is_none_or(|r| t < r)
    }
}

/// A registered host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Host {
    /// Receives the host's share; proved to hold the key at registration.
    pub operator: Addr,
    /// Models served (≤ 64).
    pub models: Vec<Binary>,
    /// The slashable bond.
    pub bond: Uint128,
    /// Slashed to date.
    pub slashed: Uint128,
    /// Host share credited to date.
    pub earned: Uint128,
}

/// A payer's escrow. Invariants: `reserved ≤ balance`, `thawing ≤ balance`.
///
/// A reservation counts only while the submission that made it is pending
/// ([`Escrow::reserved`]): voiding a batch then releases every reservation at once, without
/// touching the escrows, so a challenge costs `O(log n)` whatever the batch's size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Escrow {
    /// Everything held (reserved and thawing included).
    pub balance: Uint128,
    /// Reserved by the debits of submission `reserved_for` (counts only while it is pending).
    pub reserved: Uint128,
    /// The submission that made the reservation.
    pub reserved_for: u64,
    /// Requested for withdrawal; still debitable until paid out.
    pub thawing: Uint128,
    /// When `thawing` can be paid out (Unix seconds).
    pub thaw_until: Option<u64>,
    /// Who receives it (as signed by the payer).
    pub recipient: Option<Addr>,
    /// The nonce the next withdrawal request signs (one per request: no replay).
    pub nonce: u64,
}

impl Escrow {
    /// What is reserved now: the stored reservation if its submission is the pending one,
    /// else nothing (it was voided or finalized).
    pub fn reserved(&self, head: &Head) -> Uint128 {
        if head.pending.is_some() && self.reserved_for == head.submissions {
            self.reserved
        } else {
            Uint128::zero()
        }
    }
}

/// A channel's settled state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Channel {
    /// The receipt running total collected by finalized batches.
    pub collected: Uint128,
    /// The `seq` of the last collected receipt (0 before any).
    pub last_seq: u64,
}

/// Where a batch stands.
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

/// A submitted batch (its debits are stored apart, read only to settle or void it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Batch {
    /// Where it stands.
    pub status: BatchStatus,
    /// SHA-256 of its header.
    pub header_hash: Binary,
    /// The log root it commits to.
    pub root: Binary,
    /// The log size it commits to.
    pub tree_size: u64,
    /// The previous finalized size: leaves at or above it are this batch's.
    pub prev_tree_size: u64,
    /// Sum of its debits.
    pub total: Uint128,
    /// Number of channels debited.
    pub channels: u32,
    /// When it was submitted (Unix seconds): guest standing is judged at this time.
    pub submitted_at: u64,
    /// End of the challenge window (Unix seconds): challenges before, finalize from then.
    pub challenge_deadline: u64,
}

/// One channel's debit in a pending batch, with what settling it needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct PendingDebit {
    /// The channel id.
    pub channel: Binary,
    /// The payer key (whose escrow pays).
    pub payer: Binary,
    /// The host key (credited its share).
    pub host: Binary,
    /// The model id (whose contributors are paid).
    pub model: Binary,
    /// The amount.
    pub amount: Uint128,
    /// The receipt's running total (the channel's new collected total).
    pub channel_total: Uint128,
    /// The receipt's `seq`.
    pub seq: u64,
}

/// A proven fraud.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ChallengeRecord {
    /// The voided batch's number.
    pub batch: u64,
    /// Its header hash.
    pub header_hash: Binary,
    /// `invalid_receipt`, `repriced`, `duplicate_seq`, `inconsistent_totals` or
    /// `guest_not_allowed`.
    pub kind: String,
    /// Who proved it.
    pub challenger: Addr,
    /// The host slashed, if one was.
    pub host: Option<Binary>,
    /// Amount slashed from its bond.
    pub slashed: Uint128,
    /// Of which credited to the challenger.
    pub reward: Uint128,
    /// When (Unix seconds).
    pub at: u64,
}

pub(crate) const CONFIG: Item<Config> = Item::new("config");
pub(crate) const HEAD: Item<Head> = Item::new("head");
pub(crate) const MODELS: Map<&[u8], Model> = Map::new("models");
pub(crate) const GUESTS: Map<(&[u8], &[u8]), GuestState> = Map::new("guests");
pub(crate) const HOSTS: Map<&[u8], Host> = Map::new("hosts");
pub(crate) const AGGREGATORS: Map<&[u8], Addr> = Map::new("aggregators");
pub(crate) const ESCROWS: Map<&[u8], Escrow> = Map::new("escrows");
pub(crate) const CHANNELS: Map<&[u8], Channel> = Map::new("channels");
pub(crate) const BATCHES: Map<u64, Batch> = Map::new("batches");
pub(crate) const DEBITS: Map<u64, Vec<PendingDebit>> = Map::new("debits");
pub(crate) const VOIDED: Map<&[u8], ()> = Map::new("voided");
pub(crate) const BALANCES: Map<&Addr, Uint128> = Map::new("balances");
pub(crate) const CHALLENGES: Map<u64, ChallengeRecord> = Map::new("challenges");
pub(crate) const CHALLENGE_COUNT: Item<u64> = Item::new("challenge_count");
