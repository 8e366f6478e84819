//! The streaming verifier: per-receipt checks, then per-host log and per-channel state.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use tally_protocol::{
    ChannelId, ChannelState, Digest, MeterInput, PriceSchedule, PublicKey, ReceiptId,
    SignedReceipt, verify_receipts,
};
use tally_sandbox::{MeterError, Sandbox};

use crate::host_log::{HostLog, Placement};
use crate::{Failure, Finding, Report};

/// Which receipts get their fee re-computed by running the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reexecute {
    /// Every receipt: the full check, for audits.
    All,
    /// About `per_mille` receipts in 1000, chosen by SHA-256 over `salt` and the receipt
    /// id. Keep `salt` secret and fresh (see [`Reexecute::sample`]): a host that could
    /// predict the choice could grind receipt ids to dodge it. Fix it to reproduce a run.
    Sample {
        /// Receipts re-executed per 1000 (1000 or more means all).
        per_mille: u32,
        /// Mixed into the choice so hosts cannot predict it.
        salt: u64,
    },
    /// None: signatures, chains and totals only (fast triage; re-pricing goes unnoticed).
    None,
}

impl Reexecute {
    /// Samples `per_mille` receipts in 1000 with a fresh, unpredictable salt (from the
    /// standard library's randomly keyed hasher, seeded by the operating system).
    pub fn sample(per_mille: u32) -> Reexecute {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(per_mille);
        Reexecute::Sample {
            per_mille,
            salt: h.finish(),
        }
    }

    fn selects(&self, id: &ReceiptId) -> bool {
        match *self {
            Reexecute::All => true,
            Reexecute::None => false,
            Reexecute::Sample { per_mille, salt } => {
                tally_protocol::is_sampled(per_mille, salt, id)
            }
        }
    }
}

/// Where the stream is expected to begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainStart {
    /// The stream holds every host's whole history: each host's first receipt must have
    /// `host_seq` 1. For auditing a complete log.
    Genesis,
    /// The stream may start in the middle (a window of a log, one client's receipts): a
    /// host's first receipt in it is taken as the start of its chain. Channel totals are
    /// checked from the first receipt of each channel on, and against zero only for hosts
    /// seen from `host_seq` 1.
    Anywhere,
}

/// What a [`Verifier`] checks against.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The allowed metering guests, loaded for re-execution. A receipt whose guest hash is
    /// not one of theirs fails with [`Failure::GuestNotAllowed`].
    pub guests: Vec<Arc<Sandbox>>,
    /// The registered price schedules, found by their hash; a receipt naming another fails
    /// with [`Failure::UnknownSchedule`].
    pub schedules: Vec<PriceSchedule>,
    /// Which receipts to re-execute.
    pub reexecute: Reexecute,
    /// Whether host logs must start at `host_seq` 1.
    pub chain_start: ChainStart,
}

/// A channel as the verifier follows it: the protocol's state (what its next receipt must
/// continue) and the host log's epoch at its last receipt — a later epoch means a gap in
/// the host's log since, which may hide receipts of this channel.
#[derive(Debug)]
struct ChannelHead {
    state: ChannelState,
    epoch: u64,
}

/// A streaming verifier. Feed receipts in log order with [`push`](Verifier::push), in
/// batches of any size; it keeps each host's chain and each channel's sequence and total
/// between batches, so a stream split anywhere gives the same findings.
///
/// Memory grows with the stream: 32 bytes per receipt for fork detection, plus a little
/// per host and per channel.
pub struct Verifier {
    guests: HashMap<Digest, Arc<Sandbox>>,
    schedules: HashMap<Digest, PriceSchedule>,
    reexecute: Reexecute,
    genesis: bool,
    hosts: HashMap<PublicKey, HostLog>,
    channels: HashMap<ChannelId, ChannelHead>,
    report: Report,
}

impl Verifier {
    /// Receipts whose signatures are checked in one ZIP-215 batch. Batches reach their full
    /// speed around this size (the multiscalar multiplication gets cheaper per signature as
    /// it grows: `benches/verify.rs` measured 40k receipts/s at 1024, 44k at 2048, 47k at
    /// 4096 on one core), so push at least this many receipts at a time when you can.
    /// Larger pushes are split into chunks of this size, because one bad signature makes
    /// the protocol crate re-check its whole chunk one signature at a time.
    pub const BATCH: usize = 2048;

    /// A verifier with no receipts seen yet.
    pub fn new(config: VerifierConfig) -> Verifier {
        Verifier {
            guests: config
                .guests
                .into_iter()
                .map(|s| (s.guest_hash(), s))
                .collect(),
            schedules: config
                .schedules
                .into_iter()
                .map(|s| (s.hash(), s))
                .collect(),
            reexecute: config.reexecute,
            genesis: config.chain_start == ChainStart::Genesis,
            hosts: HashMap::new(),
            channels: HashMap::new(),
            report: Report::default(),
        }
    }

    /// Checks the next receipts of the stream and returns their findings, in stream order.
    /// Findings depend only on the stream, not on how it is split into pushes; pushes of
    /// [`Verifier::BATCH`] receipts or more are fastest.
    pub fn push(&mut self, receipts: &[SignedReceipt]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for chunk in receipts.chunks(Self::BATCH) {
            let checked = verify_receipts(chunk);
            for (receipt, valid) in chunk.iter().zip(checked) {
                let index = self.report.checked;
                self.report.checked += 1;
                // One encoding for the id and the host-log leaf.
                let body = receipt.receipt.encode();
                let id = Digest::sha256(&body);
                let leaf = tally_protocol::merkle::leaf_hash(&body);
                let before = findings.len();
                let mut fail = |failure: Failure| {
                    findings.push(Finding {
                        index,
                        receipt: id,
                        failure,
                    });
                };
                match valid {
                    Ok(()) => self.check_valid(receipt, id, leaf, &mut fail),
                    Err(e) => fail(Failure::Receipt(e)),
                }
                if findings.len() == before {
                    self.report.passed += 1;
                }
            }
        }
        for f in &findings {
            *self.report.failures.entry(f.failure.code()).or_insert(0) += 1;
        }
        findings
    }

    /// The totals so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Ends the stream and returns its totals.
    pub fn finish(self) -> Report {
        self.report
    }

    /// The checks of a receipt whose own fields, inclusion and signatures are valid: its
    /// place in its host's log, its guest and schedule, re-execution, and its channel.
    fn check_valid(
        &mut self,
        sr: &SignedReceipt,
        id: ReceiptId,
        leaf: Digest,
        fail: &mut impl FnMut(Failure),
    ) {
        let r = &sr.receipt;
        let host = match self.hosts.entry(*r.host()) {
            Entry::Occupied(e) => {
                let host = e.into_mut();
                let (placement, failure) = host.place(sr, id, leaf);
                if let Some(f) = failure {
                    fail(f);
                }
                match placement {
                    Placement::Extends => Some(&*host),
                    Placement::Late | Placement::Equivocation => None,
                    Placement::Duplicate => return,
                }
            }
            Entry::Vacant(e) => {
                let (chain, failure) = HostLog::start(sr, id, leaf, self.genesis);
                if let Some(f) = failure {
                    fail(f);
                }
                self.report.hosts += 1;
                Some(&*e.insert(chain))
            }
        };
        // The host log's state, if the receipt extends it: equivocation is another history
        // and a late receipt is the past, so neither moves its channel.
        let host = host.map(|h| (h.epoch, h.complete));

        let guest = self.guests.get(&r.guest);
        if guest.is_none() {
            fail(Failure::GuestNotAllowed { guest: r.guest });
        }
        let schedule = match self.schedules.get(&r.schedule) {
            None => {
                fail(Failure::UnknownSchedule {
                    schedule: r.schedule,
                });
                None
            }
            Some(s) if s.model != r.facts.model => {
                fail(Failure::ScheduleForOtherModel);
                None
            }
            Some(s) => Some(s),
        };
        if let (Some(guest), Some(schedule)) = (guest, schedule)
            && self.reexecute.selects(&id)
        {
            self.report.reexecuted += 1;
            let input = MeterInput {
                facts: r.facts.clone(),
                schedule: schedule.clone(),
                max_fee: r.authorization.authorization.max_fee,
            };
            match guest.meter(&input) {
                // `Metered` has one encoding, so equal values are equal bytes.
                Ok(expected) if expected == r.metered => {}
                Ok(expected) => fail(Failure::MeteredMismatch {
                    expected,
                    found: r.metered,
                }),
                Err(MeterError::Refused(refusal)) => fail(Failure::GuestRefused(refusal)),
                Err(e) => fail(Failure::GuestError(e.to_string())),
            }
        }

        let Some((epoch, complete)) = host else {
            return;
        };
        let seq = r.authorization.authorization.seq;
        let fee = r.metered.fee;
        match self.channels.entry(r.channel()) {
            Entry::Occupied(e) => {
                let ch = e.into_mut();
                if ch.state.accepts_seq(seq).is_err() {
                    fail(Failure::ChannelSeqNotIncreasing {
                        last: ch.state.last_seq,
                        found: seq,
                    });
                }
                // Across a gap in the host's log, receipts of this channel may be missing:
                // the gap is the finding, and the total starts afresh.
                if ch.epoch == epoch {
                    let expected = ch.state.total_after(fee);
                    if expected != Some(r.channel_total) {
                        fail(Failure::ChannelTotalMismatch {
                            expected: expected.unwrap_or(u128::MAX),
                            found: r.channel_total,
                        });
                    }
                }
                ch.state = ChannelState {
                    last_seq: ch.state.last_seq.max(seq),
                    total: r.channel_total,
                };
                ch.epoch = epoch;
            }
            Entry::Vacant(e) => {
                // Seen whole from host_seq 1, the host has no earlier receipt on this
                // channel: its total is its first fee.
                let first = ChannelState::default();
                if complete && first.total_after(fee) != Some(r.channel_total) {
                    fail(Failure::ChannelTotalMismatch {
                        expected: fee,
                        found: r.channel_total,
                    });
                }
                self.report.channels += 1;
                e.insert(ChannelHead {
                    state: ChannelState {
                        last_seq: seq,
                        total: r.channel_total,
                    },
                    epoch,
                });
            }
        }
    }
}
