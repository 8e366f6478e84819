//! What the verifier reports: typed failures with stable codes, findings and run totals.

use std::collections::BTreeMap;
use std::fmt;

use tally_protocol::{Digest, Metered, ReceiptError, ReceiptId, Refusal};

/// Why a receipt did not verify. Each variant has a stable [`code`](Failure::code), so
/// tools and dashboards can count and filter failures without parsing messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The receipt is invalid on its own: a field rule, its inclusion under its host
    /// checkpoint, or the host's or payer's signature. Such a receipt does not count: it
    /// moves neither its host's log nor its channel.
    #[error("{0}")]
    Receipt(ReceiptError),
    /// The receipt was metered by a guest that is not on the allow-list.
    #[error("guest {guest} is not allowed")]
    GuestNotAllowed {
        /// The receipt's guest hash.
        guest: Digest,
    },
    /// The receipt names a price schedule the verifier was not given, so its fee cannot be
    /// re-computed.
    #[error("price schedule {schedule} is unknown")]
    UnknownSchedule {
        /// The receipt's schedule hash.
        schedule: Digest,
    },
    /// The receipt's price schedule prices another model than the call's.
    #[error("price schedule is for another model")]
    ScheduleForOtherModel,
    /// Re-running the guest on the receipt's facts gave other units or another fee than the
    /// receipt carries: the call was re-priced.
    #[error("metered {found:?}, but the guest gives {expected:?}")]
    MeteredMismatch {
        /// What the pinned guest computes.
        expected: Metered,
        /// What the receipt carries.
        found: Metered,
    },
    /// Re-running the guest refused the call as unbillable, yet the host billed it.
    #[error("the guest refuses the call: {0}")]
    GuestRefused(Refusal),
    /// The guest could not be run on the receipt's input (trap, fuel, bad output); the fee
    /// cannot be confirmed.
    #[error("the guest failed: {0}")]
    GuestError(String),
    /// The receipt does not continue its host's log: receipts are missing before it, or
    /// the stream is out of order (`found_seq` below `expected_seq`).
    #[error("host log gap: expected host_seq {expected_seq}, found {found_seq}")]
    HostChainGap {
        /// The host sequence number that should have come next.
        expected_seq: u64,
        /// The receipt's host sequence number.
        found_seq: u64,
    },
    /// The host signed two logs that cannot both be true (docs/protocol.md §4.2): another
    /// receipt already holds this sequence number, or the receipt's proof describes another
    /// history than the receipts before it (its left siblings), or the log reached a
    /// checkpoint's size with another root than the host signed for it.
    #[error("host equivocation at host_seq {host_seq}")]
    HostEquivocation {
        /// The receipt's sequence number.
        host_seq: u64,
    },
    /// The same receipt (same id) appears again: it must count once.
    #[error("duplicate receipt")]
    Duplicate,
    /// The channel's authorisation sequence did not strictly rise: a replayed or reordered
    /// authorisation.
    #[error("channel seq {found} is not above the last one, {last}")]
    ChannelSeqNotIncreasing {
        /// The highest sequence number seen before on the channel.
        last: u64,
        /// The receipt's sequence number.
        found: u64,
    },
    /// The channel's running total is not the previous total plus this fee.
    #[error("channel total {found}, expected {expected}")]
    ChannelTotalMismatch {
        /// The previous total plus this receipt's fee (`u128::MAX` if that overflows).
        expected: u128,
        /// The receipt's `channel_total`.
        found: u128,
    },
}

impl Failure {
    /// A stable snake_case code for the failure's kind. Receipt-level failures use the
    /// protocol's own codes ([`ReceiptError::code`], e.g. `host_signature`).
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Receipt(e) => e.code(),
            Failure::GuestNotAllowed { .. } => "guest_not_allowed",
            Failure::UnknownSchedule { .. } => "unknown_schedule",
            Failure::ScheduleForOtherModel => "schedule_for_other_model",
            Failure::MeteredMismatch { .. } => "metered_mismatch",
            Failure::GuestRefused(_) => "guest_refused",
            Failure::GuestError(_) => "guest_error",
            Failure::HostChainGap { .. } => "host_chain_gap",
            Failure::HostEquivocation { .. } => "host_equivocation",
            Failure::Duplicate => "duplicate",
            Failure::ChannelSeqNotIncreasing { .. } => "channel_seq_not_increasing",
            Failure::ChannelTotalMismatch { .. } => "channel_total_mismatch",
        }
    }
}

/// One failure of one receipt. A receipt may have several findings (say, a re-priced fee
/// and a channel total that does not add up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The receipt's position in the stream, counting from 0 over every receipt given to
    /// the verifier, so a tool can point at the record.
    pub index: u64,
    /// The receipt's id: how the receipt is named everywhere else (logs, proofs).
    pub receipt: ReceiptId,
    /// What is wrong.
    pub failure: Failure,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "receipt {} (#{}): {}: {}",
            self.receipt,
            self.index,
            self.failure.code(),
            self.failure
        )
    }
}

/// Totals of a verification run: enough for a summary line and an exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Receipts checked.
    pub checked: u64,
    /// Receipts with no finding.
    pub passed: u64,
    /// Receipts whose fee was re-computed by running the guest.
    pub reexecuted: u64,
    /// Distinct hosts seen (with at least one receipt valid on its own).
    pub hosts: u64,
    /// Distinct channels seen.
    pub channels: u64,
    /// Findings by [`Failure::code`].
    pub failures: BTreeMap<&'static str, u64>,
}

impl Report {
    /// True if no receipt failed any check.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Receipts with at least one finding.
    pub fn failed(&self) -> u64 {
        self.checked - self.passed
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} receipts checked: {} passed, {} failed; {} re-executed; {} hosts, {} channels",
            self.checked,
            self.passed,
            self.failed(),
            self.reexecuted,
            self.hosts,
            self.channels
        )?;
        for (code, n) in &self.failures {
            write!(f, "; {code}: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_from_receipt_error_codes() {
        let ours = [
            Failure::GuestNotAllowed {
                guest: Digest::ZERO,
            },
            Failure::UnknownSchedule {
                schedule: Digest::ZERO,
            },
            Failure::ScheduleForOtherModel,
            Failure::MeteredMismatch {
                expected: Metered { units: 0, fee: 0 },
                found: Metered { units: 0, fee: 0 },
            },
            Failure::GuestRefused(Refusal::Overflow),
            Failure::GuestError(String::new()),
            Failure::HostChainGap {
                expected_seq: 1,
                found_seq: 2,
            },
            Failure::HostEquivocation { host_seq: 1 },
            Failure::Duplicate,
            Failure::ChannelSeqNotIncreasing { last: 1, found: 1 },
            Failure::ChannelTotalMismatch {
                expected: 1,
                found: 2,
            },
        ];
        let receipt = [
            ReceiptError::ModelMismatch,
            ReceiptError::RequestDigestMismatch,
            ReceiptError::FeeAboveMax,
            ReceiptError::TotalAboveCap,
            ReceiptError::TotalBelowFee,
            ReceiptError::HostInclusion,
            ReceiptError::Expired,
        ]
        .map(Failure::Receipt);
        let mut codes: Vec<&str> = ours.iter().chain(&receipt).map(Failure::code).collect();
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
        assert!(
            codes
                .iter()
                .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    #[test]
    fn report_display_lists_failures_by_code() {
        let mut r = Report {
            checked: 3,
            passed: 2,
            ..Report::default()
        };
        r.failures.insert("host_equivocation", 1);
        assert!(!r.is_ok());
        assert_eq!(r.failed(), 1);
        assert!(r.to_string().ends_with("; host_equivocation: 1"));
    }
}
