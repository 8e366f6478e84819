//! The ingest checks as pure functions: what a receipt must satisfy on its own and against
//! the configuration ([`check_static`]), where it goes in its host's log ([`place`],
//! [`frontier_mismatch`]), and what its channel and its payer's escrow say
//! ([`judge_channel`]). No I/O here, so every rule is tested without a database or HTTP.
//!
//! The order, cheapest and most certain first (the first failure is the reason):
//!
//! 1. the record decodes (`malformed_receipt`);
//! 2. binding and registries, [`check_static`]: `wrong_chain`, `wrong_contract`,
//!    `unknown_host`, `unknown_model`, `guest_not_allowed`, `unknown_schedule`;
//! 3. the bundle alone, batched over the whole submission
//!    (`tally_protocol::verify_bundles`: each distinct host checkpoint's signature once,
//!    every payer signature in large batches): `invalid_field`, `model_mismatch`,
//!    `request_digest_mismatch`, `fee_above_max`, `total_above_cap`, `total_below_fee`,
//!    `expired`, `host_inclusion`, `host_signature`, `payer_signature`;
//! 4. re-execution of the guest (all, or a secret-salted per-mille sample):
//!    `fee_mismatch`, `meter_failed`;
//! 5. under the writer lock, in one transaction: already in the log → `duplicate`; then its
//!    place in the host's log ([`place`], docs/protocol.md §6.1): a position already held →
//!    `duplicate` (or the refusal it had), or `host_equivocation` for another receipt
//!    (recorded as evidence); a gap → `pending` (or `gap_too_large` beyond the configured
//!    window; a second receipt held at one position is `host_equivocation`; beyond the
//!    per-host bound `pending_full`); the next position → its left siblings must be the
//!    host log's frontier ([`frontier_mismatch`]) and the new root every stored checkpoint
//!    of the new size's (`host_equivocation` otherwise); then [`judge_channel`]:
//!    `channel_replay`, `channel_total_mismatch`, `insufficient_escrow`;
//! 6. a held-back receipt whose gap is not filled by its deadline is dropped
//!    (`gap_timeout`, counted in metrics; the attestor resubmits).
//!
//! A host-signed receipt (step 3's inclusion and checkpoint signature hold) that is refused
//! at step 3, 4 or 5 for a reason of its own or its payer's still takes its place in its
//! host's log: the aggregator follows the log past it, so one payer can never stall a
//! host. Refusals that may heal without the payer (registries, `meter_failed`, store
//! errors) leave the host's log where it was.
//!
//! Over HTTP a submission is authenticated first (`api.rs`): only a registered host's
//! signed submission is read at all, and each of its receipts must be that host's own
//! (`not_submitter`). A submission whose receipts keep failing step 3 is cut short
//! (`unchecked` for the rest). If the store refuses a write the checks did not foresee
//! (a constraint), the receipt responsible is found and rejected alone (`store_refused`).
//!
//! Held-back receipts are bounded three ways: at most `max_gap` positions ahead of the
//! host log's size, one per position, and at most `max_pending_per_host` per host.

use std::collections::HashMap;

use tally_protocol::{
    ChannelError, ChannelState, Digest, PriceSchedule, PublicKey, ReceiptError, SignedReceipt,
};

use crate::store::ChannelHead;

/// Why a receipt was rejected. Codes are stable API ([`Reason::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// The record is not a canonical SignedReceipt (binary) or not its JSON form.
    MalformedReceipt,
    /// The authorisation names another settlement chain.
    WrongChain,
    /// The authorisation names another settlement contract.
    WrongContract,
    /// The signing host is not registered with this aggregator.
    UnknownHost,
    /// The model is not registered.
    UnknownModel,
    /// The guest hash is not allowed for the model.
    GuestNotAllowed,
    /// The schedule hash is not the model's registered price schedule.
    UnknownSchedule,
    /// A field rule or a signature failed ([`ReceiptError::code`] gives the detail).
    Receipt(ReceiptErrorCode),
    /// Re-running the guest gave another `metered` than the receipt carries (or the
    /// guest refused the receipt's facts: unbillable).
    FeeMismatch,
    /// The guest could not run (none loaded for the receipt's guest hash, or it failed).
    MeterFailed,
    /// The host signed two logs that cannot both be true: another receipt holds this
    /// `host_seq`, or this receipt's proof contradicts the host's log as followed so far
    /// (its left siblings, or a stored checkpoint's root). Recorded as evidence.
    HostEquivocation,
    /// The channel `seq` is not above the channel's last accepted one.
    ChannelReplay,
    /// `channel_total` is not the previous total plus this fee.
    ChannelTotalMismatch,
    /// The payer's escrow does not cover its channels' totals with this receipt.
    InsufficientEscrow,
    /// The held-back receipt's gap was not filled before its deadline.
    GapTimeout,
    /// The receipt is further ahead of its host's log than the aggregator holds back.
    GapTooLarge,
    /// The receipt was signed by another host than the one that submitted it (a host
    /// submits only its own receipts).
    NotSubmitter,
    /// Not checked: the submission was cut short after too many of its receipts in a row
    /// failed their checks. Nothing is wrong with it that is known; resend it.
    Unchecked,
    /// Its host already has as many receipts held back as the aggregator keeps per host;
    /// resend it once the gap before it is filled.
    PendingFull,
    /// The store refused to write it (a constraint the checks above did not foresee): it
    /// would fail the same way every time, so it is rejected alone and the rest of its
    /// submission is stored.
    StoreRefused,
}

/// The receipt-level failures, by [`ReceiptError::code`]: kept as a small copyable enum so
/// [`Reason`] stays `Copy` and hashable for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ReceiptErrorCode {
    /// `payer_signature`.
    PayerSignature,
    /// `host_signature`.
    HostSignature,
    /// `host_inclusion`.
    HostInclusion,
    /// `model_mismatch`.
    ModelMismatch,
    /// `request_digest_mismatch`.
    RequestDigestMismatch,
    /// `fee_above_max`.
    FeeAboveMax,
    /// `total_above_cap`.
    TotalAboveCap,
    /// `total_below_fee`.
    TotalBelowFee,
    /// `expired`.
    Expired,
    /// `invalid_field`.
    InvalidField,
}

impl From<ReceiptError> for ReceiptErrorCode {
    fn from(e: ReceiptError) -> Self {
        match e {
            ReceiptError::PayerSignature(_) => ReceiptErrorCode::PayerSignature,
            ReceiptError::HostSignature(_) => ReceiptErrorCode::HostSignature,
            ReceiptError::HostInclusion => ReceiptErrorCode::HostInclusion,
            ReceiptError::ModelMismatch => ReceiptErrorCode::ModelMismatch,
            ReceiptError::RequestDigestMismatch => ReceiptErrorCode::RequestDigestMismatch,
            ReceiptError::FeeAboveMax => ReceiptErrorCode::FeeAboveMax,
            ReceiptError::TotalAboveCap => ReceiptErrorCode::TotalAboveCap,
            ReceiptError::TotalBelowFee => ReceiptErrorCode::TotalBelowFee,
            ReceiptError::Expired => ReceiptErrorCode::Expired,
            _ => ReceiptErrorCode::InvalidField,
        }
    }
}

impl Reason {
    /// Every reason, for metrics and the API description.
    pub const ALL: &'static [Reason] = &[
        Reason::MalformedReceipt,
        Reason::WrongChain,
        Reason::WrongContract,
        Reason::UnknownHost,
        Reason::UnknownModel,
        Reason::GuestNotAllowed,
        Reason::UnknownSchedule,
        Reason::Receipt(ReceiptErrorCode::PayerSignature),
        Reason::Receipt(ReceiptErrorCode::HostSignature),
        Reason::Receipt(ReceiptErrorCode::HostInclusion),
        Reason::Receipt(ReceiptErrorCode::ModelMismatch),
        Reason::Receipt(ReceiptErrorCode::RequestDigestMismatch),
        Reason::Receipt(ReceiptErrorCode::FeeAboveMax),
        Reason::Receipt(ReceiptErrorCode::TotalAboveCap),
        Reason::Receipt(ReceiptErrorCode::TotalBelowFee),
        Reason::Receipt(ReceiptErrorCode::Expired),
        Reason::Receipt(ReceiptErrorCode::InvalidField),
        Reason::FeeMismatch,
        Reason::MeterFailed,
        Reason::HostEquivocation,
        Reason::ChannelReplay,
        Reason::ChannelTotalMismatch,
        Reason::InsufficientEscrow,
        Reason::GapTimeout,
        Reason::GapTooLarge,
        Reason::NotSubmitter,
        Reason::Unchecked,
        Reason::PendingFull,
        Reason::StoreRefused,
    ];

    /// The stable snake_case code returned by the API and used as the metric label.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedReceipt => "malformed_receipt",
            Reason::WrongChain => "wrong_chain",
            Reason::WrongContract => "wrong_contract",
            Reason::UnknownHost => "unknown_host",
            Reason::UnknownModel => "unknown_model",
            Reason::GuestNotAllowed => "guest_not_allowed",
            Reason::UnknownSchedule => "unknown_schedule",
            Reason::Receipt(c) => match c {
                ReceiptErrorCode::PayerSignature => "payer_signature",
                ReceiptErrorCode::HostSignature => "host_signature",
                ReceiptErrorCode::HostInclusion => "host_inclusion",
                ReceiptErrorCode::ModelMismatch => "model_mismatch",
                ReceiptErrorCode::RequestDigestMismatch => "request_digest_mismatch",
                ReceiptErrorCode::FeeAboveMax => "fee_above_max",
                ReceiptErrorCode::TotalAboveCap => "total_above_cap",
                ReceiptErrorCode::TotalBelowFee => "total_below_fee",
                ReceiptErrorCode::Expired => "expired",
                ReceiptErrorCode::InvalidField => "invalid_field",
            },
            Reason::FeeMismatch => "fee_mismatch",
            Reason::MeterFailed => "meter_failed",
            Reason::HostEquivocation => "host_equivocation",
            Reason::ChannelReplay => "channel_replay",
            Reason::ChannelTotalMismatch => "channel_total_mismatch",
            Reason::InsufficientEscrow => "insufficient_escrow",
            Reason::GapTimeout => "gap_timeout",
            Reason::GapTooLarge => "gap_too_large",
            Reason::NotSubmitter => "not_submitter",
            Reason::Unchecked => "unchecked",
            Reason::PendingFull => "pending_full",
            Reason::StoreRefused => "store_refused",
        }
    }

    /// The reason whose [`Reason::code`] is `code` (stored refusals are kept by code).
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.code() == code)
    }
}

/// One registered model: the guests allowed to meter it and its price schedule.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    /// SHA-256 of each allowed metering guest.
    pub guests: Vec<Digest>,
    /// The registered price schedule (its hash must be the receipt's `schedule`).
    pub schedule: PriceSchedule,
}

/// What receipts are checked against before any state: the settlement binding and the
/// registries (from configuration now, from the chain later).
#[derive(Debug, Clone)]
pub struct Policy {
    /// The settlement chain every authorisation must name.
    pub chain_id: String,
    /// The settlement contract every authorisation must name.
    pub contract: String,
    /// Registered hosts.
    pub hosts: Vec<PublicKey>,
    /// Registered models by id.
    pub models: HashMap<Digest, ModelPolicy>,
}

/// Checks what needs neither state nor cryptography, cheapest first: binding, host,
/// model, guest, schedule. Returns the model's schedule for re-execution.
pub fn check_static<'p>(
    policy: &'p Policy,
    r: &SignedReceipt,
) -> Result<&'p PriceSchedule, Reason> {
    let a = &r.receipt.authorization.authorization;
    if a.chain_id != policy.chain_id {
        return Err(Reason::WrongChain);
    }
    if a.contract != policy.contract {
        return Err(Reason::WrongContract);
    }
    if !policy.hosts.contains(&a.host) {
        return Err(Reason::UnknownHost);
    }
    let model = policy.models.get(&a.model).ok_or(Reason::UnknownModel)?;
    if !model.guests.contains(&r.receipt.guest) {
        return Err(Reason::GuestNotAllowed);
    }
    if model.schedule.hash() != r.receipt.schedule {
        return Err(Reason::UnknownSchedule);
    }
    Ok(&model.schedule)
}

/// The payer balances escrow holds, as the aggregator sees them (configuration now, the
/// chain later).
pub trait EscrowView: Send + Sync {
    /// The payer's deposit, in the token's smallest unit (0 if none).
    fn balance(&self, payer: &PublicKey) -> u128;
}

/// An [`EscrowView`] from a fixed table.
#[derive(Debug, Clone, Default)]
pub struct MemoryEscrow {
    balances: HashMap<PublicKey, u128>,
}

impl MemoryEscrow {
    /// An escrow holding `balances`.
    pub fn new(balances: impl IntoIterator<Item = (PublicKey, u128)>) -> MemoryEscrow {
        MemoryEscrow {
            balances: balances.into_iter().collect(),
        }
    }
}

impl EscrowView for MemoryEscrow {
    fn balance(&self, payer: &PublicKey) -> u128 {
        self.balances.get(payer).copied().unwrap_or(0)
    }
}

/// Where a receipt goes in its host's log, given the log's size (`last_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// It is the next position: check it against the frontier and place it.
    Next,
    /// Its position is already held (by it, or by another receipt: equivocation).
    Taken,
    /// There is a gap before it: hold it back.
    Hold,
    /// It is further ahead than the aggregator holds back.
    TooFar,
}

/// Where a receipt at `host_seq` goes in a host log of `last_seq` receipts; at most
/// `max_gap` positions ahead are held back (bounded, so a registered host cannot fill the
/// pending table without limit: one receipt per position and a count per host where the
/// receipt is held).
pub fn place(host_seq: u64, last_seq: u64, max_gap: u64) -> Placement {
    if host_seq <= last_seq {
        Placement::Taken
    } else if host_seq == last_seq.saturating_add(1) {
        Placement::Next
    } else if host_seq - last_seq > max_gap {
        Placement::TooFar
    } else {
        Placement::Hold
    }
}

/// The leaf range `[lo, hi)` of the first left sibling of `r`'s proof that is not the
/// host log's frontier peak `peaks` (leftmost first) covering the same leaves, if any: the
/// host's proof for this receipt describes another history than the receipts placed so
/// far (the one at `host_seq = hi` completed that peak). `r` must be at the next position.
pub fn frontier_mismatch(r: &SignedReceipt, peaks: &[Digest]) -> Option<(u64, u64)> {
    let siblings = r.left_siblings();
    if siblings.len() != peaks.len() {
        // Only for a proof of the wrong length, which decoding refuses.
        return Some((0, r.leaf_index()));
    }
    siblings
        .iter()
        .zip(peaks)
        .find(|(s, p)| s.hash != **p)
        .map(|(s, _)| (s.lo, s.hi))
}

/// The channel and escrow checks of a receipt placed in its host's log, in order: channel
/// seq, channel total, escrow.
///
/// `channel` is `None` for a channel with no receipt yet (seq 0, total 0). `payer_debited`
/// is the sum of the payer's channel totals before this receipt.
pub fn judge_channel(
    r: &SignedReceipt,
    channel: Option<&ChannelHead>,
    payer_debited: u128,
    escrow_balance: u128,
) -> Result<(), Reason> {
    let rc = &r.receipt;
    let state = channel.map_or_else(ChannelState::default, |c| ChannelState {
        last_seq: c.last_seq,
        total: c.total,
    });
    state
        .follow(
            rc.authorization.authorization.seq,
            rc.metered.fee,
            rc.channel_total,
        )
        .map_err(|e| match e {
            ChannelError::SeqNotIncreasing { .. } => Reason::ChannelReplay,
            _ => Reason::ChannelTotalMismatch,
        })?;
    match payer_debited.checked_add(rc.metered.fee) {
        Some(need) if need <= escrow_balance => Ok(()),
        _ => Err(Reason::InsufficientEscrow),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let c = r.code();
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
            assert!(seen.insert(c), "duplicate code {c}");
        }
    }

    use tally_protocol::merkle::CompactRange;
    use tally_protocol::{
        Authorization, ChannelId, FinishStatus, Metered, Receipt, SigningKey, UsageFacts,
        sign_group,
    };

    fn host() -> SigningKey {
        SigningKey::from_seed(&[2; 32])
    }

    /// A receipt with the fields the judges read; signatures are not their concern.
    fn receipt(host_seq: u64, seq: u64, fee: u128, total: u128) -> Receipt {
        let d = Digest::sha256(b"d");
        let payer = SigningKey::from_seed(&[1; 32]);
        let authorization = Authorization {
            chain_id: "c".into(),
            contract: "k".into(),
            payer: payer.public_key(),
            host: host().public_key(),
            model: d,
            seq,
            request_digest: d,
            max_fee: 1_000,
            cumulative_cap: 1_000_000,
            expires_at_ms: 10,
        }
        .sign(&payer);
        let facts = UsageFacts {
            model: d,
            request_digest: d,
            response_digest: d,
            prompt_tokens: 1,
            cached_prompt_tokens: 0,
            completion_tokens: 1,
            reasoning_tokens: 0,
            started_at_ms: 0,
            first_token_ms: 0,
            duration_ms: 0,
            finish: FinishStatus::Stop,
        };
        Receipt {
            authorization,
            facts,
            metered: Metered { units: 2, fee },
            guest: d,
            schedule: d,
            host_seq,
            channel_total: total,
            timestamp_ms: 0,
        }
    }

    /// `r` alone, after `host_seq - 1` stand-in leaves.
    fn bundle(r: Receipt) -> SignedReceipt {
        let mut frontier = CompactRange::new();
        for i in 1..r.host_seq {
            frontier.append(
                tally_protocol::merkle::leaf_hash(&i.to_be_bytes()),
                |_, _, _| {},
            );
        }
        sign_group(&host(), &mut frontier, vec![r])
            .unwrap()
            .1
            .remove(0)
    }

    /// One judgement: a channel at (seq 5, total 100), a payer who owes 500 of a 600
    /// deposit.
    fn check(r: Receipt, expected: Result<(), Reason>) {
        let channel = ChannelHead {
            id: ChannelId(Digest::ZERO),
            payer: PublicKey([1; 32]),
            host: host().public_key(),
            model: Digest::ZERO,
            last_seq: 5,
            total: 100,
            sealed_total: 0,
        };
        assert_eq!(
            judge_channel(&bundle(r), Some(&channel), 500, 600),
            expected
        );
    }

    #[test]
    fn judge_channel_applies_the_rules_in_order() {
        check(receipt(4, 6, 10, 110), Ok(()));
        check(receipt(4, 9, 100, 200), Ok(()));
        check(receipt(4, 5, 10, 110), Err(Reason::ChannelReplay));
        check(receipt(4, 6, 10, 111), Err(Reason::ChannelTotalMismatch));
        check(receipt(4, 6, 10, 10), Err(Reason::ChannelTotalMismatch));
        check(receipt(4, 6, 101, 201), Err(Reason::InsufficientEscrow));
    }

    #[test]
    fn a_new_channel_starts_at_zero() {
        let first = bundle(receipt(1, 1, 7, 7));
        assert_eq!(judge_channel(&first, None, 0, 7), Ok(()));
        let wrong = bundle(receipt(1, 1, 7, 8));
        assert_eq!(
            judge_channel(&wrong, None, 0, 100),
            Err(Reason::ChannelTotalMismatch)
        );
        assert_eq!(
            judge_channel(&first, None, 0, 6),
            Err(Reason::InsufficientEscrow)
        );
    }

    #[test]
    fn placement_in_the_host_log() {
        assert_eq!(place(4, 3, 10), Placement::Next);
        assert_eq!(place(3, 3, 10), Placement::Taken);
        assert_eq!(place(1, 3, 10), Placement::Taken);
        assert_eq!(place(6, 3, 10), Placement::Hold);
        assert_eq!(place(13, 3, 10), Placement::Hold);
        assert_eq!(place(14, 3, 10), Placement::TooFar);
        assert_eq!(place(1, 0, 1), Placement::Next);
    }

    #[test]
    fn the_frontier_check_names_the_peak_that_differs() {
        // Receipts 1..=6 of one log, in groups; receipt 7 against the frontier of 6.
        let mut frontier = CompactRange::new();
        let rs: Vec<Receipt> = (1..=7).map(|s| receipt(s, s, 1, s.into())).collect();
        sign_group(&host(), &mut frontier, rs[..6].to_vec()).unwrap();
        let peaks = frontier.peaks().to_vec();
        let (_, next) = sign_group(&host(), &mut frontier, vec![rs[6].clone()]).unwrap();
        assert_eq!(frontier_mismatch(&next[0], &peaks), None);
        // Another history in which receipt 5 differs: the peak [4, 6) differs.
        let mut other = rs.clone();
        other[4].timestamp_ms = 99;
        let mut f2 = CompactRange::new();
        let (_, forked) = sign_group(&host(), &mut f2, other).unwrap();
        assert_eq!(frontier_mismatch(&forked[6], &peaks), Some((4, 6)));
        // And in which receipt 2 differs: the peak [0, 4).
        let mut other = rs;
        other[1].timestamp_ms = 99;
        let mut f3 = CompactRange::new();
        let (_, forked) = sign_group(&host(), &mut f3, other).unwrap();
        assert_eq!(frontier_mismatch(&forked[6], &peaks), Some((0, 4)));
    }

    #[test]
    fn codes_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(*r));
        }
        assert_eq!(Reason::from_code("fork"), None);
    }
}
