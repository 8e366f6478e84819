//! One host's hash chain as seen in a stream: where it stands, and every id it has used at
//! every sequence number, so a second receipt at a used number is told apart as a
//! duplicate (same id) or a fork (another id).

use std::collections::BTreeMap;

use tally_protocol::{Digest, ReceiptId};

use crate::Failure;

/// Where a receipt falls in its host's chain.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The receipt extends the chain (possibly after a reported gap or broken link). Its
    /// channel may be checked and updated.
    Extends,
    /// The receipt fills a hole behind the chain's head: it arrived out of order. It is
    /// remembered, but belongs to the past, so it must not move its channel.
    Late,
    /// The receipt is the same as one already seen: nothing more to check.
    Duplicate,
    /// Another receipt already holds this sequence number: an alternative history, so it
    /// must not move the channel.
    Fork,
}

/// One host's chain.
#[derive(Debug)]
pub(crate) struct HostChain {
    /// Ids by sequence number, as runs of consecutive numbers keyed by their first number.
    /// An in-order chain is one run: 32 bytes a receipt, and gaps or reordering cost a run
    /// each, never memory proportional to the size of a gap.
    runs: BTreeMap<u64, Vec<ReceiptId>>,
    /// The highest sequence number seen, and its id: what the next receipt links to.
    last_seq: u64,
    last_id: ReceiptId,
    /// Bumped at every discontinuity. A channel last updated in an earlier epoch may have
    /// receipts in the gap, so its running total cannot be checked across it.
    pub(crate) epoch: u64,
    /// True while the chain has been seen whole from `host_seq` 1: then a channel first
    /// seen now is new, and its total must be its first fee.
    pub(crate) complete: bool,
}

impl HostChain {
    /// The chain of a host first seen with this receipt. `genesis` asks that every chain
    /// start at `host_seq` 1; `Some` is the failure if it does not.
    pub(crate) fn start(seq: u64, id: ReceiptId, genesis: bool) -> (HostChain, Option<Failure>) {
        let mut chain = HostChain {
            runs: BTreeMap::new(),
            last_seq: seq,
            last_id: id,
            epoch: 0,
            complete: seq == 1,
        };
        chain.record(seq, id);
        let failure = (genesis && seq != 1).then_some(Failure::HostChainGap {
            expected_seq: 1,
            found_seq: seq,
        });
        (chain, failure)
    }

    /// Places the receipt `id` with `seq` and `prev` in the chain, recording it; `Some`
    /// is the failure the placement is, if any.
    pub(crate) fn place(
        &mut self,
        seq: u64,
        id: ReceiptId,
        prev: &ReceiptId,
    ) -> (Placement, Option<Failure>) {
        if let Some(seen) = self.get(seq) {
            return if *seen == id {
                (Placement::Duplicate, Some(Failure::Duplicate))
            } else {
                (Placement::Fork, Some(Failure::Fork { host_seq: seq }))
            };
        }
        self.record(seq, id);
        let expected_seq = self.last_seq.saturating_add(1);
        let failure = if seq == expected_seq {
            (*prev != self.last_id).then_some(Failure::HostChainBroken {
                expected: self.last_id,
                found: *prev,
            })
        } else {
            self.epoch += 1;
            self.complete = false;
            Some(Failure::HostChainGap {
                expected_seq,
                found_seq: seq,
            })
        };
        if seq < self.last_seq {
            return (Placement::Late, failure);
        }
        self.last_seq = seq;
        self.last_id = id;
        (Placement::Extends, failure)
    }

    /// The id seen at `seq`, if any.
    fn get(&self, seq: u64) -> Option<&ReceiptId> {
        let (start, ids) = self.runs.range(..=seq).next_back()?;
        ids.get(usize::try_from(seq - start).ok()?)
    }

    /// Records `id` at `seq`, which must not have been seen: appended to the run that ends
    /// just before it, or a new run.
    fn record(&mut self, seq: u64, id: Digest) {
        if let Some((start, ids)) = self.runs.range_mut(..seq).next_back()
            && usize::try_from(seq - start).is_ok_and(|offset| offset == ids.len())
        {
            ids.push(id);
            return;
        }
        self.runs.insert(seq, vec![id]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ReceiptId {
        Digest([n; 32])
    }

    #[test]
    fn in_order_chain_is_one_run() {
        let (mut c, f) = HostChain::start(1, id(1), true);
        assert_eq!(f, None);
        for n in 2..=50u8 {
            assert_eq!(
                c.place(u64::from(n), id(n), &id(n - 1)),
                (Placement::Extends, None)
            );
        }
        assert_eq!(c.runs.len(), 1);
        assert!(c.complete);
        assert_eq!(c.epoch, 0);
    }

    #[test]
    fn gaps_and_late_receipts_are_remembered() {
        let (mut c, _) = HostChain::start(1, id(1), true);
        let gap = Failure::HostChainGap {
            expected_seq: 2,
            found_seq: 4,
        };
        assert_eq!(c.place(4, id(4), &id(3)), (Placement::Extends, Some(gap)));
        assert!(!c.complete);
        // Seq 2 arrives late: out of order, then remembered for fork detection.
        let late = Failure::HostChainGap {
            expected_seq: 5,
            found_seq: 2,
        };
        assert_eq!(c.place(2, id(2), &id(1)), (Placement::Late, Some(late)));
        assert_eq!(c.place(2, id(2), &id(1)).0, Placement::Duplicate);
        assert_eq!(
            c.place(2, id(9), &id(1)).1,
            Some(Failure::Fork { host_seq: 2 })
        );
        assert_eq!(c.place(1, id(1), &Digest::ZERO).0, Placement::Duplicate);
        assert_eq!(c.place(4, id(8), &id(3)).0, Placement::Fork);
        // The chain continues from its highest receipt.
        assert_eq!(c.place(5, id(5), &id(4)), (Placement::Extends, None));
        assert_eq!(c.epoch, 2);
    }

    #[test]
    fn huge_gap_costs_no_memory() {
        let (mut c, f) = HostChain::start(3, id(3), false);
        assert_eq!(f, None);
        assert!(!c.complete);
        assert_eq!(c.place(u64::MAX - 1, id(1), &id(9)).0, Placement::Extends);
        assert_eq!(c.place(u64::MAX, id(4), &id(1)), (Placement::Extends, None));
        assert_eq!(c.place(u64::MAX, id(5), &id(1)).0, Placement::Fork);
        assert_eq!(c.place(4, id(4), &id(3)).0, Placement::Late);
        assert_eq!(c.runs.len(), 2);
    }
}
