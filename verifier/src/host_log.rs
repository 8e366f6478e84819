//! One host's log as seen in a stream: where it stands, every id it has used at every
//! sequence number (so a second receipt at a used number is told apart as a duplicate or
//! equivocation), and the log's frontier, so each next receipt's proof is checked against
//! the receipts before it and each host checkpoint's root against the log when it reaches
//! the checkpoint's size (docs/protocol.md §4.2, §6.1).

use std::collections::BTreeMap;

use tally_protocol::merkle::CompactRange;
use tally_protocol::{Digest, ReceiptId, SignedReceipt};

use crate::Failure;

/// Where a receipt falls in its host's log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The receipt extends the log (possibly after a reported gap). Its channel may be
    /// checked and updated.
    Extends,
    /// The receipt fills a hole behind the log's head: it arrived out of order. It is
    /// remembered, but belongs to the past, so it must not move its channel.
    Late,
    /// The receipt is the same as one already seen: nothing more to check.
    Duplicate,
    /// The receipt contradicts the host's log as seen so far (another receipt at its
    /// sequence number, or a proof that describes another history): it must not move its
    /// channel.
    Equivocation,
}

/// One host's log.
#[derive(Debug)]
pub(crate) struct HostLog {
    /// Ids by sequence number, as runs of consecutive numbers keyed by their first number.
    /// An in-order log is one run: 32 bytes a receipt, and gaps or reordering cost a run
    /// each, never memory proportional to the size of a gap.
    runs: BTreeMap<u64, Vec<ReceiptId>>,
    /// The highest sequence number seen.
    last_seq: u64,
    /// The log's frontier at `last_seq`: from the start of the log when it was seen whole,
    /// else as the first receipt after the last gap stated it (its left siblings).
    frontier: CompactRange,
    /// Roots of host checkpoints seen with receipts, for sizes the log has not reached.
    future: BTreeMap<u64, Digest>,
    /// Bumped at every discontinuity. A channel last updated in an earlier epoch may have
    /// receipts in the gap, so its running total cannot be checked across it.
    pub(crate) epoch: u64,
    /// True while the log has been seen whole from `host_seq` 1: then a channel first
    /// seen now is new, and its total must be its first fee.
    pub(crate) complete: bool,
}

/// The frontier of the leaves before `r` as its proof states them (its left siblings).
fn stated_frontier(r: &SignedReceipt) -> CompactRange {
    let peaks = r.left_siblings().into_iter().map(|n| n.hash).collect();
    CompactRange::from_peaks(r.leaf_index(), peaks).unwrap_or_default()
}

impl HostLog {
    /// The log of a host first seen with this (host-signed) receipt. `genesis` asks that
    /// every log start at `host_seq` 1; `Some` is the failure if it does not.
    pub(crate) fn start(
        r: &SignedReceipt,
        id: ReceiptId,
        leaf: Digest,
        genesis: bool,
    ) -> (HostLog, Option<Failure>) {
        let seq = r.receipt.host_seq;
        let mut chain = HostLog {
            runs: BTreeMap::new(),
            last_seq: seq - 1,
            frontier: stated_frontier(r),
            future: BTreeMap::new(),
            epoch: 0,
            complete: seq == 1,
        };
        chain.record(seq, id);
        chain.advance(r, leaf);
        let failure = (genesis && seq != 1).then_some(Failure::HostChainGap {
            expected_seq: 1,
            found_seq: seq,
        });
        (chain, failure)
    }

    /// Places the host-signed receipt `r` (id `id`, host-log leaf hash `leaf`) in the log,
    /// recording it; `Some` is the failure the placement is, if any.
    pub(crate) fn place(
        &mut self,
        r: &SignedReceipt,
        id: ReceiptId,
        leaf: Digest,
    ) -> (Placement, Option<Failure>) {
        let seq = r.receipt.host_seq;
        if let Some(seen) = self.get(seq) {
            return if *seen == id {
                (Placement::Duplicate, Some(Failure::Duplicate))
            } else {
                (
                    Placement::Equivocation,
                    Some(Failure::HostEquivocation { host_seq: seq }),
                )
            };
        }
        let expected_seq = self.last_seq.saturating_add(1);
        if seq == expected_seq {
            // Its proof must describe the log seen so far ...
            let equivocation = (
                Placement::Equivocation,
                Some(Failure::HostEquivocation { host_seq: seq }),
            );
            let siblings = r.left_siblings();
            if siblings.len() != self.frontier.peaks().len()
                || siblings
                    .iter()
                    .zip(self.frontier.peaks())
                    .any(|(s, p)| s.hash != *p)
            {
                return equivocation;
            }
            // ... and a checkpoint seen for the size it brings the log to must have its root.
            if let Some(root) = self.future.get(&seq) {
                let mut next = self.frontier.clone();
                next.append(leaf, |_, _, _| {});
                if *root != next.root() {
                    return equivocation;
                }
            }
            self.record(seq, id);
            self.advance(r, leaf);
            return (Placement::Extends, None);
        }
        self.record(seq, id);
        self.epoch += 1;
        self.complete = false;
        let failure = Some(Failure::HostChainGap {
            expected_seq,
            found_seq: seq,
        });
        if seq < self.last_seq {
            return (Placement::Late, failure);
        }
        // After a gap the log is followed from what this receipt states.
        self.last_seq = seq - 1;
        self.frontier = stated_frontier(r);
        self.advance(r, leaf);
        (Placement::Extends, failure)
    }

    /// Moves the head to `r` (the next receipt), and remembers its checkpoint's root if
    /// the log has not reached its size.
    fn advance(&mut self, r: &SignedReceipt, leaf: Digest) {
        self.frontier.append(leaf, |_, _, _| {});
        self.last_seq = r.receipt.host_seq;
        self.future.remove(&self.last_seq);
        let cp = &r.checkpoint;
        if cp.size > self.last_seq {
            self.future.entry(cp.size).or_insert(cp.root);
        }
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
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use tally_protocol::{
        Authorization, FinishStatus, Metered, Receipt, SigningKey, UsageFacts, sign_group,
    };

    fn receipt(host_seq: u64, salt: u64) -> Receipt {
        let payer = SigningKey::from_seed(&[1; 32]);
        let host = SigningKey::from_seed(&[2; 32]);
        let d = Digest::sha256(&salt.to_be_bytes());
        Receipt {
            authorization: Authorization {
                chain_id: "c".into(),
                contract: "k".into(),
                payer: payer.public_key(),
                host: host.public_key(),
                model: d,
                seq: host_seq,
                request_digest: d,
                max_fee: 10,
                cumulative_cap: 1_000,
                expires_at_ms: 10,
            }
            .sign(&payer),
            facts: UsageFacts {
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
            },
            metered: Metered { units: 2, fee: 1 },
            guest: d,
            schedule: d,
            host_seq,
            channel_total: host_seq.into(),
            timestamp_ms: 0,
        }
    }

    /// Receipts 1..=n of one log, in groups of `group`; `salt` changes the receipts.
    fn log(n: u64, group: u64, salt: u64) -> Vec<SignedReceipt> {
        let host = SigningKey::from_seed(&[2; 32]);
        let mut frontier = CompactRange::new();
        let mut out = Vec::new();
        let mut next = 1;
        while next <= n {
            let end = (next + group).min(n + 1);
            let rs = (next..end)
                .map(|s| receipt(s, salt.max(s) * 1000 + s))
                .collect();
            out.extend(sign_group(&host, &mut frontier, rs).unwrap().1);
            next = end;
        }
        out
    }

    #[test]
    fn in_order_log_is_one_run() {
        let l = log(50, 7, 0);
        let (mut c, f) = HostLog::start(&l[0], l[0].id(), l[0].receipt.leaf_hash(), true);
        assert_eq!(f, None);
        for r in &l[1..] {
            assert_eq!(
                c.place(r, r.id(), r.receipt.leaf_hash()),
                (Placement::Extends, None)
            );
        }
        assert_eq!(c.runs.len(), 1);
        assert!(c.complete);
        assert_eq!(c.epoch, 0);
    }

    #[test]
    fn gaps_late_receipts_and_two_receipts_at_one_place() {
        let l = log(8, 1, 0);
        let (mut c, _) = HostLog::start(&l[0], l[0].id(), l[0].receipt.leaf_hash(), true);
        let gap = Failure::HostChainGap {
            expected_seq: 2,
            found_seq: 4,
        };
        assert_eq!(
            c.place(&l[3], l[3].id(), l[3].receipt.leaf_hash()),
            (Placement::Extends, Some(gap))
        );
        assert!(!c.complete);
        // Seq 2 arrives late: out of order, then remembered.
        assert_eq!(
            c.place(&l[1], l[1].id(), l[1].receipt.leaf_hash()).0,
            Placement::Late
        );
        assert_eq!(
            c.place(&l[1], l[1].id(), l[1].receipt.leaf_hash()).0,
            Placement::Duplicate
        );
        let other = log(8, 1, 99);
        assert_eq!(
            c.place(&other[1], other[1].id(), other[1].receipt.leaf_hash())
                .1,
            Some(Failure::HostEquivocation { host_seq: 2 })
        );
        // The log continues from its highest receipt, checked against what it stated.
        assert_eq!(
            c.place(&l[4], l[4].id(), l[4].receipt.leaf_hash()),
            (Placement::Extends, None)
        );
        assert_eq!(c.epoch, 2);
    }

    #[test]
    fn a_proof_of_another_history_is_equivocation() {
        // The honest log and one in which receipt 3 differs: receipt 5 of the second
        // carries left siblings that are not the honest frontier.
        let honest = log(6, 2, 0);
        let mut forked_receipts: Vec<Receipt> = honest.iter().map(|b| b.receipt.clone()).collect();
        forked_receipts[2].timestamp_ms = 77;
        let host = SigningKey::from_seed(&[2; 32]);
        let mut f = CompactRange::new();
        let forked = sign_group(&host, &mut f, forked_receipts).unwrap().1;
        let (mut c, _) = HostLog::start(
            &honest[0],
            honest[0].id(),
            honest[0].receipt.leaf_hash(),
            true,
        );
        for r in &honest[1..4] {
            assert_eq!(
                c.place(r, r.id(), r.receipt.leaf_hash()).0,
                Placement::Extends
            );
        }
        assert_eq!(
            c.place(&forked[4], forked[4].id(), forked[4].receipt.leaf_hash()),
            (
                Placement::Equivocation,
                Some(Failure::HostEquivocation { host_seq: 5 })
            )
        );
        // The honest fifth still extends the log.
        assert_eq!(
            c.place(&honest[4], honest[4].id(), honest[4].receipt.leaf_hash())
                .0,
            Placement::Extends
        );
    }

    #[test]
    fn a_checkpoint_root_is_checked_when_the_log_reaches_its_size() {
        // Receipt 2 under a checkpoint of size 4 of one history; receipts 3 and 4 of
        // another history that shares receipts 1 and 2.
        let a = log(4, 4, 0);
        let mut b_receipts: Vec<Receipt> = a.iter().map(|b| b.receipt.clone()).collect();
        b_receipts[3].timestamp_ms = 5;
        let host = SigningKey::from_seed(&[2; 32]);
        let mut f = CompactRange::new();
        let b = sign_group(&host, &mut f, b_receipts).unwrap().1;
        let (mut c, _) = HostLog::start(&a[0], a[0].id(), a[0].receipt.leaf_hash(), true);
        assert_eq!(
            c.place(&a[1], a[1].id(), a[1].receipt.leaf_hash()).0,
            Placement::Extends
        );
        assert_eq!(
            c.place(&b[2], b[2].id(), b[2].receipt.leaf_hash()).0,
            Placement::Extends
        );
        assert_eq!(
            c.place(&b[3], b[3].id(), b[3].receipt.leaf_hash()),
            (
                Placement::Equivocation,
                Some(Failure::HostEquivocation { host_seq: 4 })
            )
        );
    }

    #[test]
    fn a_log_seen_from_the_middle_is_followed_from_its_first_receipt() {
        let l = log(40, 5, 0);
        let (mut c, f) = HostLog::start(&l[17], l[17].id(), l[17].receipt.leaf_hash(), false);
        assert_eq!(f, None);
        assert!(!c.complete);
        for r in &l[18..] {
            assert_eq!(
                c.place(r, r.id(), r.receipt.leaf_hash()),
                (Placement::Extends, None)
            );
        }
        assert_eq!(
            c.place(&l[3], l[3].id(), l[3].receipt.leaf_hash()).0,
            Placement::Late
        );
    }
}
