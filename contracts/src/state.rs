//! Storage layout. Every map is keyed by raw bytes (32-byte keys and ids) or numbers, and
//! every value is bounded: no value grows with the number of receipts, of users or of the
//! channels in a batch.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `config` | [`Config`] | instantiate, `UpdateAdmin` |
//! | `head` | [`Head`]: last finalized batch, pending batch number | submit, finalize, void |
//! | `models/{model}` | [`Model`] (≤ 64 contributors, schedule bytes): its terms | registry |
//! | `mrev/{model}` | revenue and contributors' revenue to date | finalize |
//! | `guests/{model}{guest}` | [`GuestState`] | registry |
//! | `hosts/{key}` | [`Host`] (≤ 64 models, bond) | registration, bond, slash |
//! | `hearn/{key}` | host share credited to date | finalize |
//! | `aggregators/{key}` | address | registry |
//! | `0x01 'e' {payer}` | [`Escrow`], compact (see `ledger.rs`) | deposit, withdrawal, submit |
//! | `thaws/{payer}` | [`Thaw`]: a withdrawal in progress | withdrawal requests |
//! | `0x01 'c' {channel}` | [`Channel`], compact (see `ledger.rs`) | submit |
//! | `batches/{number}` | [`Batch`] (summary and payout totals, no debits) | submit, finalize, void |
//! | `hpay/{submission}{host}` | a pending batch's host share for one host | submit; finalize removes |
//! | `mpay/{submission}{model}` | a pending batch's revenue and pool for one model | submit; finalize removes |
//! | `voided/{header hash}` | `()`: headers that may never be submitted again | void |
//! | `vsub/{submission}` | `()`: submissions that were voided | void |
//! | `balances/{address}` | claimable amount | finalize, slash, claim |
//! | `challenges/{id}` | [`ChallengeRecord`] | challenge |
//!
//! A batch's debits are not stored as a list: `SubmitBatch` writes each debited channel's
//! record (its pending collection, tagged with the submission) and each payer's escrow (its
//! reservation, tagged likewise), plus one payout entry per host and per model of the
//! batch. Finalize credits those payout entries and flips the head; the channel and escrow
//! records settle lazily, the next time anything reads them, by whether their submission
//! was finalized or voided (`ledger::Fates`). So one channel costs `SubmitBatch`
//! two reads and two writes (its channel record and its payer's escrow; a payer with several
//! channels in the batch is read and written once) and costs `Finalize` nothing.

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
    /// number `submissions`. Reservations and pending collections are tagged with it (see
    /// `ledger::Fates`).
    pub submissions: u64,
    /// The first leaf the last finalized batch vouched for (its `prev_tree_size`). A batch
    /// that does not grow the log (a period's channels split over several batches) vouches
    /// for the same leaves as the one before it, so a fraud among them can still void it.
    #[serde(default)]
    pub leaves_from: u64,
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
}

/// A payer's escrow, as stored (compactly, see `ledger.rs`): what `SubmitBatch` and
/// `Finalize` touch. Invariant: `reserved ≤ balance`.
///
/// A reservation is tagged with the submission that made it and is settled lazily: while
/// that submission is pending it is held; once it is finalized it is debited from `balance`;
/// if it was voided it lapses. Voiding a batch and finalizing one therefore touch no escrow:
/// both cost the same whatever the batch's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Escrow {
    /// Everything held (reserved and thawing included), before the reservation settles.
    pub balance: u128,
    /// Reserved by the debits of submission `reserved_for`.
    pub reserved: u128,
    /// The submission that made the reservation (meaningless while `reserved` is zero).
    pub reserved_for: u64,
}

/// A withdrawal in progress: the cold part of an escrow, apart so that batches never
/// rewrite it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Thaw {
    /// Requested for withdrawal; still debitable until paid out. May exceed the balance
    /// once debits settled: what counts is `min(thawing, balance)`.
    pub thawing: Uint128,
    /// When `thawing` can be paid out (Unix seconds).
    pub thaw_until: Option<u64>,
    /// Who receives it (as signed by the payer).
    pub recipient: Option<Addr>,
    /// The nonce the next withdrawal request signs (one per request: no replay).
    pub nonce: u64,
}

/// A channel's state, as stored (compactly, see `ledger.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Channel {
    /// The receipt running total collected by finalized batches (before `pending` settles).
    pub collected: u128,
    /// The `seq` of the last collected receipt (0 before any).
    pub last_seq: u64,
    /// What a submitted batch collects once it is finalized.
    pub pending: Option<PendingCollect>,
}

/// A channel's collection by a submitted batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingCollect {
    /// The submission that debits the channel.
    pub submission: u64,
    /// The debited receipt's running total: the channel's collected total once finalized.
    pub total: u128,
    /// The debited receipt's `seq`.
    pub seq: u64,
}

pub use crate::msg::BatchStatus;

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
    /// The submission number (see [`Head::submissions`]): the tag of its reservations,
    /// pending collections and payout entries.
    pub submission: u64,
    /// What finalizing credits the protocol sink (Σ of the debits' fee floors).
    pub protocol: Uint128,
    /// What it credits hosts (Σ of the debits' host-share floors).
    pub hosts: Uint128,
    /// What it credits contributors (the rest: `total − protocol − hosts`).
    pub contributors: Uint128,
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
/// Per model: (revenue, contributors' revenue) to date.
pub(crate) const MODEL_REVENUE: Map<&[u8], (Uint128, Uint128)> = Map::new("mrev");
pub(crate) const GUESTS: Map<(&[u8], &[u8]), GuestState> = Map::new("guests");
pub(crate) const HOSTS: Map<&[u8], Host> = Map::new("hosts");
/// Per host: its share credited to date.
pub(crate) const HOST_EARNED: Map<&[u8], Uint128> = Map::new("hearn");
pub(crate) const AGGREGATORS: Map<&[u8], Addr> = Map::new("aggregators");
pub(crate) const THAWS: Map<&[u8], Thaw> = Map::new("thaws");
pub(crate) const BATCHES: Map<u64, Batch> = Map::new("batches");
/// A pending batch's host shares, by (submission, host key).
pub(crate) const HOST_PAYOUTS: Map<(u64, &[u8]), Uint128> = Map::new("hpay");
/// A pending batch's (revenue, contributor pool), by (submission, model id).
pub(crate) const MODEL_PAYOUTS: Map<(u64, &[u8]), (Uint128, Uint128)> = Map::new("mpay");
pub(crate) const VOIDED: Map<&[u8], ()> = Map::new("voided");
/// Voided submissions (their reservations and pending collections lapse).
pub(crate) const VOIDED_SUBMISSIONS: Map<u64, ()> = Map::new("vsub");
pub(crate) const BALANCES: Map<&Addr, Uint128> = Map::new("balances");
pub(crate) const CHALLENGES: Map<u64, ChallengeRecord> = Map::new("challenges");
pub(crate) const CHALLENGE_COUNT: Item<u64> = Item::new("challenge_count");
