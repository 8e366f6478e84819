//! The ingest checks as pure functions: what a receipt must satisfy on its own and against
//! the configuration ([`check_static`]), and against the stored state of its host chain,
//! its channel and its payer's escrow ([`judge`]). No I/O here, so every rule is tested
//! without a database or HTTP.
//!
//! The order, cheapest and most certain first (the first failure is the reason):
//!
//! 1. the record decodes (`malformed_receipt`);
//! 2. binding and registries, [`check_static`]: `wrong_chain`, `wrong_contract`,
//!    `unknown_host`, `unknown_model`, `guest_not_allowed`, `unknown_schedule`;
//! 3. the receipt's own rules and both signatures, batched over the whole submission
//!    (`tally_protocol::verify_receipts`): `invalid_field`, `model_mismatch`,
//!    `request_digest_mismatch`, `fee_above_max`, `total_above_cap`, `total_below_fee`,
//!    `host_chain_link`, `expired`, `payer_signature`, `host_signature`;
//! 4. re-execution of the guest (all, or a secret-salted per-mille sample):
//!    `fee_mismatch`, `meter_failed`;
//! 5. under the writer lock, in one transaction: already in the log → `duplicate`; then
//!    [`judge`]: `fork` (recorded as evidence), a gap → `pending` (or `gap_too_large`
//!    beyond the configured window), `channel_replay`,
//!    `channel_total_mismatch`, `insufficient_escrow`; a receipt to hold back at a
//!    position where a different one is already held → `fork`; beyond the per-host bound
//!    on held-back receipts → `pending_full`;
//! 6. a held-back receipt whose gap is not filled by its deadline is dropped
//!    (`gap_timeout`, counted in metrics; the attestor resubmits).
//!
//! Over HTTP a submission is authenticated first (`api.rs`): only a registered host's
//! signed submission is read at all, and each of its receipts must be that host's own
//! (`not_submitter`). A submission whose receipts keep failing step 3 is cut short
//! (`unchecked` for the rest). If the store refuses a write the checks did not foresee
//! (a constraint), the receipt responsible is found and rejected alone (`store_refused`).
//!
//! Held-back receipts are bounded three ways: at most `max_gap` positions ahead of the
//! host's chain head, one per position, and at most `max_pending_per_host` per host.

use std::collections::HashMap;

use tally_protocol::{Digest, PriceSchedule, PublicKey, ReceiptError, SignedReceipt};

use crate::store::{ChannelHead, HostHead};

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
    /// Re-running the guest gave another `metered` than the receipt carries.
    FeeMismatch,
    /// The guest refused the receipt's facts (unbillable) or could not run.
    MeterFailed,
    /// The host already has a different receipt at this `host_seq`, or this receipt does
    /// not link to the host's accepted previous receipt.
    Fork,
    /// The channel `seq` is not above the channel's last accepted one.
    ChannelReplay,
    /// `channel_total` is not the previous total plus this fee.
    ChannelTotalMismatch,
    /// The payer's escrow does not cover its channels' totals with this receipt.
    InsufficientEscrow,
    /// The held-back receipt's gap was not filled before its deadline.
    GapTimeout,
    /// The receipt is further ahead of its host's chain than the aggregator holds back.
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
    /// `host_chain_link`.
    HostChainLink,
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
            ReceiptError::ModelMismatch => ReceiptErrorCode::ModelMismatch,
            ReceiptError::RequestDigestMismatch => ReceiptErrorCode::RequestDigestMismatch,
            ReceiptError::FeeAboveMax => ReceiptErrorCode::FeeAboveMax,
            ReceiptError::TotalAboveCap => ReceiptErrorCode::TotalAboveCap,
            ReceiptError::TotalBelowFee => ReceiptErrorCode::TotalBelowFee,
            ReceiptError::HostChainLink => ReceiptErrorCode::HostChainLink,
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
        Reason::Receipt(ReceiptErrorCode::ModelMismatch),
        Reason::Receipt(ReceiptErrorCode::RequestDigestMismatch),
        Reason::Receipt(ReceiptErrorCode::FeeAboveMax),
        Reason::Receipt(ReceiptErrorCode::TotalAboveCap),
        Reason::Receipt(ReceiptErrorCode::TotalBelowFee),
        Reason::Receipt(ReceiptErrorCode::HostChainLink),
        Reason::Receipt(ReceiptErrorCode::Expired),
        Reason::Receipt(ReceiptErrorCode::InvalidField),
        Reason::FeeMismatch,
        Reason::MeterFailed,
        Reason::Fork,
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
                ReceiptErrorCode::ModelMismatch => "model_mismatch",
                ReceiptErrorCode::RequestDigestMismatch => "request_digest_mismatch",
                ReceiptErrorCode::FeeAboveMax => "fee_above_max",
                ReceiptErrorCode::TotalAboveCap => "total_above_cap",
                ReceiptErrorCode::TotalBelowFee => "total_below_fee",
                ReceiptErrorCode::HostChainLink => "host_chain_link",
                ReceiptErrorCode::Expired => "expired",
                ReceiptErrorCode::InvalidField => "invalid_field",
            },
            Reason::FeeMismatch => "fee_mismatch",
            Reason::MeterFailed => "meter_failed",
            Reason::Fork => "fork",
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

/// What to do with a receipt given the state it would extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it: it extends its host chain and channel and the escrow covers it.
    Append,
    /// Hold it back: its host chain has a gap before it.
    Hold,
    /// Reject it.
    Reject(Reason),
}

/// The state checks, in order: host chain (fork, gap, at most `max_gap` ahead), channel
/// seq, channel total, escrow.
///
/// `channel` is `None` for a channel with no receipt yet (seq 0, total 0). `payer_debited`
/// is the sum of the payer's channel totals before this receipt. A receipt already in the
/// log is caught before this (by id) and is a duplicate, not a fork.
pub fn judge(
    r: &SignedReceipt,
    host: &HostHead,
    channel: Option<&ChannelHead>,
    payer_debited: u128,
    escrow_balance: u128,
    max_gap: u64,
) -> Verdict {
    let rc = &r.receipt;
    if rc.host_seq <= host.last_seq {
        return Verdict::Reject(Reason::Fork);
    }
    if rc.host_seq > host.last_seq.saturating_add(1) {
        // Bounded, so a registered host cannot fill the pending table without limit: at
        // most `max_gap` positions ahead here, one receipt per position and a count per
        // host where the receipt is held (`Aggregator`).
        if rc.host_seq - host.last_seq > max_gap {
            return Verdict::Reject(Reason::GapTooLarge);
        }
        return Verdict::Hold;
    }
    if rc.prev_receipt != host.last_id {
        return Verdict::Reject(Reason::Fork);
    }
    let (last_seq, total) = channel.map_or((0, 0), |c| (c.last_seq, c.total));
    if rc.authorization.authorization.seq <= last_seq {
        return Verdict::Reject(Reason::ChannelReplay);
    }
    if total.checked_add(rc.metered.fee) != Some(rc.channel_total) {
        return Verdict::Reject(Reason::ChannelTotalMismatch);
    }
    match payer_debited.checked_add(rc.metered.fee) {
        Some(need) if need <= escrow_balance => Verdict::Append,
        _ => Verdict::Reject(Reason::InsufficientEscrow),
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

    use tally_protocol::{
        Authorization, ChannelId, FinishStatus, Metered, Receipt, Signature, SignedAuthorization,
        UsageFacts,
    };

    /// A receipt with the fields `judge` reads; signatures are not its concern.
    fn receipt(host_seq: u64, prev: u8, seq: u64, fee: u128, total: u128) -> SignedReceipt {
        let d = Digest::sha256(b"d");
        let authorization = SignedAuthorization {
            authorization: Authorization {
                chain_id: "c".into(),
                contract: "k".into(),
                payer: PublicKey([1; 32]),
                host: PublicKey([2; 32]),
                model: d,
                seq,
                request_digest: d,
                max_fee: 1_000,
                cumulative_cap: 1_000_000,
                expires_at_ms: 10,
            },
            signature: Signature([0; 64]),
        };
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
        SignedReceipt {
            receipt: Receipt {
                authorization,
                facts,
                metered: Metered { units: 2, fee },
                guest: d,
                schedule: d,
                host_seq,
                prev_receipt: Digest([prev; 32]),
                channel_total: total,
                timestamp_ms: 0,
            },
            signature: Signature([0; 64]),
        }
    }

    /// One judgement: a host at (last_seq 3, last id 0x33..), a channel at (seq 5,
    /// total 100), a payer who owes 500 of a 600 deposit.
    fn check(r: SignedReceipt, expected: Verdict) {
        let host = HostHead {
            key: PublicKey([2; 32]),
            last_seq: 3,
            last_id: Digest([0x33; 32]),
        };
        let channel = ChannelHead {
            id: ChannelId(Digest::ZERO),
            payer: PublicKey([1; 32]),
            host: host.key,
            model: Digest::ZERO,
            last_seq: 5,
            total: 100,
            sealed_total: 0,
        };
        assert_eq!(judge(&r, &host, Some(&channel), 500, 600, 10), expected);
    }

    #[test]
    fn judge_applies_the_state_rules_in_order() {
        check(receipt(4, 0x33, 6, 10, 110), Verdict::Append);
        check(receipt(4, 0x33, 9, 100, 200), Verdict::Append);
        check(receipt(3, 0x33, 6, 10, 110), Verdict::Reject(Reason::Fork));
        check(receipt(1, 0x00, 6, 10, 110), Verdict::Reject(Reason::Fork));
        check(receipt(4, 0x34, 6, 10, 110), Verdict::Reject(Reason::Fork));
        check(receipt(6, 0x99, 1, 10, 1), Verdict::Hold);
        check(receipt(13, 0x99, 1, 10, 1), Verdict::Hold);
        check(
            receipt(14, 0x99, 1, 10, 1),
            Verdict::Reject(Reason::GapTooLarge),
        );
        check(
            receipt(4, 0x33, 5, 10, 110),
            Verdict::Reject(Reason::ChannelReplay),
        );
        check(
            receipt(4, 0x33, 6, 10, 111),
            Verdict::Reject(Reason::ChannelTotalMismatch),
        );
        check(
            receipt(4, 0x33, 6, 10, 10),
            Verdict::Reject(Reason::ChannelTotalMismatch),
        );
        check(
            receipt(4, 0x33, 6, 101, 201),
            Verdict::Reject(Reason::InsufficientEscrow),
        );
    }

    #[test]
    fn a_new_channel_starts_at_zero() {
        let host = HostHead {
            key: PublicKey([2; 32]),
            last_seq: 0,
            last_id: Digest::ZERO,
        };
        let first = receipt(1, 0, 1, 7, 7);
        assert_eq!(judge(&first, &host, None, 0, 7, 1), Verdict::Append);
        let wrong = receipt(1, 0, 1, 7, 8);
        assert_eq!(
            judge(&wrong, &host, None, 0, 100, 1),
            Verdict::Reject(Reason::ChannelTotalMismatch)
        );
        assert_eq!(
            judge(&first, &host, None, 0, 6, 1),
            Verdict::Reject(Reason::InsufficientEscrow)
        );
    }
}
