//! A channel's sequence and running total (`docs/protocol.md` §2.3.1): the one transition
//! rule that the attestor applies when it signs, the aggregator when it admits, the
//! verifier and the auditor when they replay a log, and the contract when it judges an
//! `InconsistentTotals` proof or a debit. Written once here so that no two of them can
//! disagree on whether a receipt follows its channel's last one.

/// What a channel has consumed after its last receipt: the authorisation `seq` of that
/// receipt and the running total. A channel with no receipt yet is the default (seq 0,
/// total 0): every first receipt (`seq ≥ 1`, total = its fee) follows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelState {
    /// The `seq` of the channel's last receipt (0: none yet).
    pub last_seq: u64,
    /// The running total after the channel's last receipt.
    pub total: u128,
}

/// Why a receipt does not follow its channel's state; the first failing rule of §2.3.1,
/// `seq` before the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The receipt's `seq` is not above the channel's last one: a replay
    /// (`channel_seq_not_increasing`).
    #[error("channel seq {found} is not above the last receipted {last}")]
    SeqNotIncreasing {
        /// The channel's last receipted `seq`.
        last: u64,
        /// The receipt's `seq`.
        found: u64,
    },
    /// The receipt's running total is not the channel's total plus its fee
    /// (`channel_total_mismatch`). `expected` is `None` when that sum overflows `u128`.
    #[error("channel total {found} is not the previous total plus the fee ({expected:?})")]
    TotalMismatch {
        /// The previous total plus the fee, if it fits in a `u128`.
        expected: Option<u128>,
        /// The receipt's `channel_total`.
        found: u128,
    },
    /// The running total would overflow a `u128`: no receipt can claim it.
    #[error("the channel's running total would overflow")]
    TotalOverflow,
}

impl ChannelState {
    /// Whether `seq` may come next: strictly above the last receipted `seq` (numbers may
    /// be skipped).
    pub fn accepts_seq(&self, seq: u64) -> Result<(), ChannelError> {
        if seq > self.last_seq {
            Ok(())
        } else {
            Err(ChannelError::SeqNotIncreasing {
                last: self.last_seq,
                found: seq,
            })
        }
    }

    /// The running total after a next receipt charging `fee` (`None` on overflow, which
    /// no receipt can claim).
    pub fn total_after(&self, fee: u128) -> Option<u128> {
        self.total.checked_add(fee)
    }

    /// The state after the next receipt, `seq` charging `fee`: what a signer computes.
    /// Fails only on a replayed `seq` or an overflowing total.
    pub fn next(&self, seq: u64, fee: u128) -> Result<Self, ChannelError> {
        self.accepts_seq(seq)?;
        let total = self.total_after(fee).ok_or(ChannelError::TotalOverflow)?;
        Ok(Self {
            last_seq: seq,
            total,
        })
    }

    /// The state after a receipt `seq` charging `fee` that claims the running total
    /// `channel_total`: what a checker computes. The rules in order: `seq` rises, then the
    /// total is the previous one plus the fee.
    pub fn follow(&self, seq: u64, fee: u128, channel_total: u128) -> Result<Self, ChannelError> {
        self.accepts_seq(seq)?;
        let expected = self.total_after(fee);
        if expected != Some(channel_total) {
            return Err(ChannelError::TotalMismatch {
                expected,
                found: channel_total,
            });
        }
        Ok(Self {
            last_seq: seq,
            total: channel_total,
        })
    }
}

/// Whether two receipts of one channel, `earlier` with the lower `seq`, can both be true:
/// by the transition rule every receipt between them only adds, so the later total is at
/// least the earlier total plus the later fee. `InconsistentTotals` (§13) proves the
/// negation. Totals are `(channel_total, fee)` pairs.
pub fn totals_consistent(earlier_total: u128, later_fee: u128, later_total: u128) -> bool {
    earlier_total
        .checked_add(later_fee)
        .is_some_and(|least| later_total >= least)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_receipt_follows_the_empty_channel_and_seqs_may_skip() {
        let s = ChannelState::default().follow(5, 7, 7).unwrap();
        assert_eq!(
            s,
            ChannelState {
                last_seq: 5,
                total: 7
            }
        );
        assert_eq!(s.follow(9, 3, 10).unwrap().total, 10);
        assert_eq!(s.next(9, 3).unwrap(), s.follow(9, 3, 10).unwrap());
    }

    #[test]
    fn seq_is_judged_before_the_total() {
        let s = ChannelState {
            last_seq: 5,
            total: 7,
        };
        assert_eq!(
            s.follow(5, 1, 99),
            Err(ChannelError::SeqNotIncreasing { last: 5, found: 5 })
        );
        assert_eq!(
            s.follow(6, 1, 9),
            Err(ChannelError::TotalMismatch {
                expected: Some(8),
                found: 9
            })
        );
        let full = ChannelState {
            last_seq: 1,
            total: u128::MAX,
        };
        assert!(matches!(
            full.follow(2, 1, 0),
            Err(ChannelError::TotalMismatch { expected: None, .. })
        ));
        assert_eq!(full.next(2, 1), Err(ChannelError::TotalOverflow));
        assert!(full.next(2, 0).is_ok());
    }

    #[test]
    fn totals_are_consistent_when_the_later_covers_the_earlier_plus_its_fee() {
        assert!(totals_consistent(10, 5, 15));
        assert!(totals_consistent(10, 5, 40));
        assert!(!totals_consistent(10, 5, 14));
        assert!(!totals_consistent(u128::MAX, 1, u128::MAX));
    }
}
