//! Attesting one call: check the payer's authorisation, meter the usage in the sandbox,
//! place the receipt in the host's log, make it durable under one signed host checkpoint
//! per group commit, and only then return its bundle.
//!
//! # One call
//!
//! 1. Stateless checks, outside any lock: the authorisation is for this chain, contract and
//!    host, for a model this attestor serves, for the facts' model and request; the facts
//!    are well formed; the authorisation has not expired; the payer's signature verifies
//!    (ZIP-215), checked in one batch with the other calls in flight (`payer_check.rs`).
//!    A call the proxy admitted before serving it ([`Attestor::admit`] returns an
//!    [`Admitted`]) skips only the signature, verified once there on the same bytes;
//!    [`Attestor::attest_admitted`] takes nothing else, so an unchecked authorisation
//!    cannot reach that path.
//! 2. Metering in the wasmtime sandbox, outside any lock (the signing key never enters it).
//! 3. One short critical section (a `std::sync::Mutex`) assigns the order: the channel's
//!    `seq` must exceed the last one receipted, the new running total must stay within the
//!    payer's cumulative cap, the receipt gets `host_seq = last + 1` (its place in the host
//!    log) and a timestamp that never goes back along the log; it is encoded and the state
//!    updated. This is the only place where log order is decided.
//! 4. The journal append. The journal's writer takes every receipt queued, appends their
//!    leaves to the host log, signs **one** host checkpoint for the group (at low load, a
//!    group of one: one signature per receipt, as in version 1), writes the group's bundles
//!    and syncs once; the call waits for that.
//! 5. The durable bundle (receipt, checkpoint, inclusion proof) is returned.
//!
//! A refused call (steps 1 to 3) changes nothing: no state, no journal byte.
//!
//! # Reservations (calls served before they are attested)
//!
//! The proxy serves a call before it can attest it, so [`Attestor::admit`] **reserves** the
//! authorisation's `seq` on its channel, and a fee headroom (its `budget`: the least of
//! `max_fee` and the room left under the cap after the other reservations), in memory and
//! under the chain lock, before anything is forwarded: no fsync, nothing journalled. While
//! reserved, the same `seq` is refused as `Replayed` and the headroom is not available to
//! other calls, so every reserved call can still be receipted when it ends. A reservation
//! ends exactly once: with the receipt (whose fee must fit the budget), with
//! [`Admitted::release`] (the upstream failed: the authorisation may be used again), or by
//! dropping the [`Admitted`], which **burns** the `seq` (the call may have been served;
//! that `seq` is never admitted again by this process). Receipts on a channel must come in
//! `seq` order, so a call waits, before taking its place in the chain, until every lower
//! `seq` reserved on its channel has ended.
//!
//! # No holes
//!
//! Once step 3 has handed out a `host_seq`, the receipt must reach the journal or the log
//! would have a hole. Step 4 cannot be interrupted: there is no `.await` between step 3
//! and queueing the receipt, so even a caller that drops the future is too late to
//! withdraw it (the receipt is journalled and shipped, the client just does not see it;
//! the call was served, so it is billable). The only failure left is
//! the journal's own (a failed write or sync): it **poisons** the attestor. That call and
//! every later one fail (`Journal`, then `Poisoned`) and no receipt is returned after it,
//! so the authorisation `seq` and total that step 3 accepted can never be observed as
//! inconsistent. Reopening runs recovery, which restores exactly what is durable.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    ChannelId, DecodeError, Digest, MAX_CHAIN_ID_LEN, MAX_CONTRACT_LEN, MeterInput, PriceSchedule,
    PublicKey, Receipt, Refusal, SignatureError, SignedAuthorization, SignedReceipt, SigningKey,
    UsageFacts,
};

use crate::journal::{
    ChannelState, GroupCommit, Journal, JournalError, JournalSigner, JournalStats, Receipts,
};
use crate::payer_check::PayerCheck;
use tally_sandbox::{MeterError, Sandbox};

/// What an attestor needs besides its key and sandbox.
#[derive(Debug, Clone)]
pub struct AttestorConfig {
    /// The settlement chain id; authorisations for any other chain are refused.
    pub chain_id: String,
    /// The settlement contract's address; authorisations for any other are refused.
    pub contract: String,
    /// The journal file (created if missing, recovered if present).
    pub journal_path: PathBuf,
    /// How the journal groups receipts into one fsync.
    pub group_commit: GroupCommit,
    /// One price schedule per model served; calls for other models are refused.
    pub schedules: Vec<PriceSchedule>,
}

/// Why a call was not attested (or the attestor not opened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The authorisation is for another chain.
    #[error("authorisation is for another chain")]
    WrongChain,
    /// The authorisation is for another contract.
    #[error("authorisation is for another contract")]
    WrongContract,
    /// The authorisation names another host.
    #[error("authorisation is for another host")]
    WrongHost,
    /// This attestor has no price schedule for the authorised model.
    #[error("model is not served by this attestor")]
    ModelNotServed,
    /// The facts are for another model than the authorisation.
    #[error("facts are for another model than the authorisation")]
    ModelMismatch,
    /// The facts' request digest is not the one the payer signed.
    #[error("request digest differs from the authorised one")]
    RequestDigestMismatch,
    /// An authorisation field breaks an encoding rule (only possible for a value built in
    /// memory; decoded ones are checked when decoded).
    #[error("malformed authorisation: {0}")]
    Authorization(DecodeError),
    /// The usage facts break a field rule.
    #[error("malformed usage facts: {0}")]
    Facts(DecodeError),
    /// The payer's signature does not verify.
    #[error("payer signature: {0}")]
    PayerSignature(SignatureError),
    /// The authorisation expired before the receipt's timestamp.
    #[error("authorisation expired at {expires_at_ms} ms, now is {now_ms} ms")]
    Expired {
        /// The authorisation's expiry.
        expires_at_ms: u64,
        /// The time it was checked against (the receipt's timestamp once ordered).
        now_ms: u64,
    },
    /// The channel already has a receipt with this or a higher `seq`.
    #[error("authorisation replayed: the channel is already at seq {last_seq}")]
    Replayed {
        /// The channel's highest receipted `seq`.
        last_seq: u64,
    },
    /// The call would take the channel's total beyond the payer's cumulative cap.
    #[error("channel total {total} plus fee {fee} exceeds the cumulative cap {cap}")]
    OverCap {
        /// The channel's total before this call (with the fees reserved for calls in
        /// flight, when admitting).
        total: u128,
        /// This call's fee.
        fee: u128,
        /// The authorised cumulative cap.
        cap: u128,
    },
    /// An admitted call's fee is above the budget reserved for it at admission.
    #[error("fee {fee} exceeds the budget {budget} reserved when the call was admitted")]
    OverBudget {
        /// This call's fee.
        fee: u128,
        /// The budget reserved ([`Admitted::budget`]).
        budget: u128,
    },
    /// The sandbox did not meter the call (the guest refused it, or failed).
    #[error("metering: {0}")]
    Metering(MeterError),
    /// The journal failed; the attestor is poisoned from now on.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// An earlier journal failure poisoned the attestor; reopen it.
    #[error("attestor poisoned by an earlier journal failure; reopen it")]
    Poisoned,
    /// The journal holds another host's log.
    #[error("journal belongs to host {host}")]
    ForeignJournal {
        /// The host whose receipts the journal holds.
        host: PublicKey,
    },
    /// The journal holds receipts for another chain or contract than the configuration's.
    #[error("journal belongs to chain {chain_id}, contract {contract}")]
    OtherDeployment {
        /// The journal's chain id.
        chain_id: String,
        /// The journal's contract.
        contract: String,
    },
    /// The configuration cannot work.
    #[error("invalid attestor configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
}

/// A payer's authorisation whose signature [`Attestor::admit`] has verified, and the
/// reservation of its `seq` and fee budget (see the module docs, "Reservations").
///
/// Only `admit` builds one and nothing can change the authorisation inside it, so the
/// verdict stays true of these exact bytes: [`Attestor::attest_admitted`] relies on it
/// instead of verifying the signature a second time. (Signature validity does not depend
/// on which attestor checked it; every other check is repeated at attest time.)
///
/// The reservation ends with the receipt, with [`Admitted::release`], or when this is
/// dropped (which burns the `seq`).
pub struct Admitted {
    auth: SignedAuthorization,
    channel: ChannelId,
    budget: u128,
    shared: Arc<Shared>,
    /// Set (under the chain lock) once the reservation has ended.
    settled: AtomicBool,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("auth", &self.auth)
            .field("budget", &self.budget)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

impl Admitted {
    /// The admitted authorisation.
    pub fn authorization(&self) -> &SignedAuthorization {
        &self.auth
    }

    /// The most this call may cost: the least of `max_fee` and the room under the
    /// cumulative cap that was left, when it was admitted, by the channel's total and the
    /// budgets of the other calls in flight. Reserved until the reservation ends.
    pub fn budget(&self) -> u128 {
        self.budget
    }

    /// Ends the reservation without a receipt and without burning the `seq`: for a call
    /// the upstream failed (nothing metered was delivered), so the payer may send the
    /// same authorisation again.
    pub fn release(self) {
        self.settle(false);
    }

    /// Ends the reservation (once), burning the `seq` if `burn`.
    fn settle(&self, burn: bool) {
        let mut chain = self
            .shared
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let seq = self.auth.authorization.seq;
        let notify = chain.end_reservation(self.channel, seq, burn);
        drop(chain);
        if notify {
            self.shared.settled.notify_waiters();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.settled.load(Ordering::Acquire) {
            self.settle(true);
        }
    }
}

/// A model this attestor serves: its schedule and the schedule's hash (in every receipt).
#[derive(Debug)]
struct Served {
    schedule: PriceSchedule,
    hash: Digest,
}

/// The chain state and the signal that a reservation ended, shared with every
/// [`Admitted`] (which ends its reservation when dropped).
#[derive(Debug)]
struct Shared {
    chain: Mutex<ChainState>,
    /// Notified when a reservation ends on a channel where a call waits for it.
    settled: tokio::sync::Notify,
}

/// The calls admitted on one channel and not yet receipted.
///
/// Invariant: for every call in flight, the channel's total plus every budget reserved is
/// at most that call's cumulative cap, so each can be receipted for up to its budget
/// whatever the others cost (within theirs).
#[derive(Debug, Default)]
struct Reserved {
    /// `seq` → the fee budget reserved for that call, and its authorisation's cap.
    calls: BTreeMap<u64, (u128, u128)>,
    /// The highest `seq` burned: admitted, ended without a receipt, never admitted again.
    burned: u64,
    /// A call waits for a lower `seq` to end.
    waiters: bool,
}

impl Reserved {
    /// The budgets reserved for the calls in flight other than `seq` (saturating), and
    /// the least of their caps and `cap`.
    fn held_except(&self, seq: u64, cap: u128) -> (u128, u128) {
        self.calls
            .iter()
            .filter(|(s, _)| **s != seq)
            .fold((0u128, cap), |(sum, least), (_, (budget, cap))| {
                (sum.saturating_add(*budget), least.min(*cap))
            })
    }
}

/// Where the host log stands. Guarded by one mutex: the only place order is assigned.
#[derive(Debug)]
struct ChainState {
    last_host_seq: u64,
    last_timestamp_ms: u64,
    channels: HashMap<ChannelId, ChannelState>,
    /// Reservations, per channel (entries removed once they hold nothing).
    reserved: HashMap<ChannelId, Reserved>,
}

impl ChainState {
    /// Reserves `seq` on `channel` with the budget the authorisation leaves, or refuses:
    /// `Replayed` for a `seq` receipted, burned or in flight, `OverCap` when the room
    /// under the cap does not cover `min_fee`.
    fn reserve(
        &mut self,
        channel: ChannelId,
        a: &tally_protocol::Authorization,
        min_fee: u128,
    ) -> Result<u128, AttestError> {
        let ch = self.channels.get(&channel).copied().unwrap_or_default();
        let r = self.reserved.entry(channel).or_default();
        let floor = ch.last_seq.max(r.burned);
        if a.seq <= floor || r.calls.contains_key(&a.seq) {
            let last_seq = if a.seq <= floor { floor } else { a.seq };
            self.forget_if_empty(channel);
            return Err(AttestError::Replayed { last_seq });
        }
        let (held, cap) = r.held_except(a.seq, a.cumulative_cap);
        let held = ch.total.saturating_add(held);
        let budget = a.max_fee.min(cap.saturating_sub(held));
        if budget < min_fee {
            self.forget_if_empty(channel);
            return Err(AttestError::OverCap {
                total: held,
                fee: min_fee,
                cap,
            });
        }
        r.calls.insert(a.seq, (budget, a.cumulative_cap));
        Ok(budget)
    }

    /// Ends the reservation of `seq`, burning it if `burn`; whether waiters must be woken.
    fn end_reservation(&mut self, channel: ChannelId, seq: u64, burn: bool) -> bool {
        let Some(r) = self.reserved.get_mut(&channel) else {
            return false;
        };
        r.calls.remove(&seq);
        if burn {
            r.burned = r.burned.max(seq);
        }
        let notify = std::mem::take(&mut r.waiters);
        self.forget_if_empty(channel);
        notify
    }

    /// Drops a channel's reservation entry once it holds no call and no burned `seq`
    /// beyond the receipted ones.
    fn forget_if_empty(&mut self, channel: ChannelId) {
        let last = self.channels.get(&channel).map_or(0, |c| c.last_seq);
        if self
            .reserved
            .get(&channel)
            .is_some_and(|r| r.calls.is_empty() && r.burned <= last)
        {
            self.reserved.remove(&channel);
        }
    }

    /// Whether a call with `seq` must wait for a lower `seq` reserved on `channel` (noted,
    /// so that the end of that reservation wakes it).
    fn must_wait(&mut self, channel: ChannelId, seq: u64) -> bool {
        let Some(r) = self.reserved.get_mut(&channel) else {
            return false;
        };
        let wait = r.calls.range(..seq).next().is_some();
        r.waiters |= wait;
        wait
    }

    /// Checks the call against the channel's state and, if it passes, gives `receipt` its
    /// place in the log (`host_seq`, `channel_total`, `timestamp_ms`), records it and
    /// returns its canonical body. `admitted` is the call's reservation, if it has one
    /// still open; it ends here when the call is ordered.
    fn order(
        &mut self,
        receipt: &mut Receipt,
        channel: ChannelId,
        now_ms: u64,
        admitted: Option<&Admitted>,
    ) -> Result<Vec<u8>, AttestError> {
        let a = &receipt.authorization.authorization;
        let (seq, cap, expires_at_ms) = (a.seq, a.cumulative_cap, a.expires_at_ms);
        let fee = receipt.metered.fee;
        let ch = self.channels.get(&channel).copied().unwrap_or_default();
        let r = self.reserved.get(&channel);
        let (burned, in_flight) = r.map_or((0, false), |r| (r.burned, r.calls.contains_key(&seq)));
        // A reserved call is checked against the receipted seqs only (its own reservation
        // kept every other call off its seq); any other call also against the burned and
        // reserved ones.
        let floor = if admitted.is_some() {
            ch.last_seq
        } else {
            ch.last_seq.max(burned)
        };
        if seq <= floor || (admitted.is_none() && in_flight) {
            return Err(AttestError::Replayed {
                last_seq: floor.max(seq),
            });
        }
        if let Some(admitted) = admitted
            && fee > admitted.budget
        {
            return Err(AttestError::OverBudget {
                fee,
                budget: admitted.budget,
            });
        }
        // The invariant of `Reserved` keeps room for a reserved call's budget; any other
        // call must leave the reserved budgets room under every reserved call's cap.
        let (held, cap) = match (admitted, r) {
            (None, Some(r)) => r.held_except(seq, cap),
            _ => (0, cap),
        };
        let total = ch
            .total_after(fee)
            .filter(|t| t.saturating_add(held) <= cap)
            .ok_or(AttestError::OverCap {
                total: ch.total.saturating_add(held),
                fee,
                cap,
            })?;
        let timestamp_ms = now_ms.max(self.last_timestamp_ms);
        if timestamp_ms > expires_at_ms {
            return Err(AttestError::Expired {
                expires_at_ms,
                now_ms: timestamp_ms,
            });
        }
        receipt.host_seq = self.last_host_seq + 1;
        receipt.channel_total = total;
        receipt.timestamp_ms = timestamp_ms;
        let body = receipt.encode();
        self.last_host_seq = receipt.host_seq;
        self.last_timestamp_ms = timestamp_ms;
        self.channels.insert(
            channel,
            ChannelState {
                last_seq: seq,
                total,
            },
        );
        Ok(body)
    }
}

/// A host's attestor: turns authorised, served calls into durable receipt bundles.
///
/// Safe to share (`Arc<Attestor>`) and call from many tasks at once. Dropping it closes
/// the journal, waiting (blocking) for its writer to finish what is queued.
pub struct Attestor {
    chain_id: String,
    contract: String,
    host: PublicKey,
    sandbox: Arc<Sandbox>,
    guest: Digest,
    schedules: HashMap<Digest, Served>,
    shared: Arc<Shared>,
    poisoned: AtomicBool,
    journal: Journal,
    payer_check: PayerCheck,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestor")
            .field("host", &self.host)
            .field("guest", &self.guest)
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Attestor {
    /// Opens the journal (recovering it on a blocking thread) and returns an attestor
    /// that continues its host log. The journal's writer signs each group's checkpoint
    /// with `host_key`.
    ///
    /// Refuses a configuration without schedules, with two schedules for one model or a
    /// malformed one, or with a chain id or contract no authorisation could carry; and a
    /// journal that holds another host's receipts or another deployment's.
    pub async fn open(
        config: AttestorConfig,
        host_key: SigningKey,
        sandbox: Arc<Sandbox>,
    ) -> Result<Attestor, AttestError> {
        let invalid = |reason| Err(AttestError::InvalidConfig { reason });
        if !is_text(&config.chain_id, MAX_CHAIN_ID_LEN) {
            return invalid("chain_id must be 1..=64 printable ASCII characters");
        }
        if !is_text(&config.contract, MAX_CONTRACT_LEN) {
            return invalid("contract must be 1..=128 printable ASCII characters");
        }
        if config.schedules.is_empty() {
            return invalid("no price schedule: the attestor would serve no model");
        }
        let mut schedules = HashMap::new();
        for schedule in config.schedules {
            if schedule.check().is_err() {
                return invalid("a price schedule breaks the tier rules");
            }
            let served = Served {
                hash: schedule.hash(),
                schedule,
            };
            if schedules.insert(served.schedule.model, served).is_some() {
                return invalid("two price schedules for one model");
            }
        }

        let path = config.journal_path;
        let group_commit = config.group_commit;
        let host = host_key.public_key();
        let signer = JournalSigner {
            key: host_key,
            chain_id: config.chain_id.clone(),
            contract: config.contract.clone(),
        };
        let (journal, recovered) =
            match tokio::task::spawn_blocking(move || Journal::open(path, group_commit, signer))
                .await
            {
                Ok(opened) => opened.map_err(AttestError::Journal)?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(AttestError::Journal(JournalError::Closed)),
            };
        if let Some(journal_host) = recovered.host.filter(|h| *h != host) {
            return Err(AttestError::ForeignJournal { host: journal_host });
        }
        if let Some((chain_id, contract)) = recovered
            .deployment
            .clone()
            .filter(|(c, k)| *c != config.chain_id || *k != config.contract)
        {
            return Err(AttestError::OtherDeployment { chain_id, contract });
        }
        Ok(Attestor {
            chain_id: config.chain_id,
            contract: config.contract,
            host,
            guest: sandbox.guest_hash(),
            sandbox,
            schedules,
            shared: Arc::new(Shared {
                chain: Mutex::new(ChainState {
                    last_host_seq: recovered.last_host_seq,
                    last_timestamp_ms: recovered.last_timestamp_ms,
                    channels: recovered.channels,
                    reserved: HashMap::new(),
                }),
                settled: tokio::sync::Notify::new(),
            }),
            poisoned: AtomicBool::new(false),
            journal,
            payer_check: PayerCheck::default(),
        })
    }

    /// Attests one call at the current time (see [`Attestor::attest_at`]).
    pub async fn attest(
        &self,
        auth: &SignedAuthorization,
        facts: &UsageFacts,
    ) -> Result<SignedReceipt, AttestError> {
        self.attest_at(auth, facts, unix_time_ms()).await
    }

    /// Attests one call as if the time were `now_ms` (Unix milliseconds): checks the
    /// authorisation, meters `facts`, places the receipt in the host log and journals it,
    /// and returns its bundle once its group commit is durable. The receipt's timestamp is
    /// `now_ms`, or the previous receipt's if that is later (timestamps never go back along
    /// the log).
    ///
    /// Cancel-safe in the sense of the module docs: once the call has been given its place
    /// in the log, dropping the future does not withdraw the receipt.
    pub async fn attest_at(
        &self,
        auth: &SignedAuthorization,
        facts: &UsageFacts,
        now_ms: u64,
    ) -> Result<SignedReceipt, AttestError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(AttestError::Poisoned);
        }
        // (1) Stateless checks.
        let served = self.check_call(auth, facts, now_ms)?;
        // The payer's signature (ZIP-215), batched with the other calls in flight.
        self.payer_check
            .verify(auth)
            .await
            .map_err(AttestError::PayerSignature)?;
        self.attest_checked(auth, served, facts, now_ms, None).await
    }

    /// Attests a call whose authorisation [`Attestor::admit`] accepted, at the current
    /// time (see [`Attestor::attest_admitted_at`]).
    pub async fn attest_admitted(
        &self,
        admitted: &Admitted,
        facts: &UsageFacts,
    ) -> Result<SignedReceipt, AttestError> {
        self.attest_admitted_at(admitted, facts, unix_time_ms())
            .await
    }

    /// [`Attestor::attest_at`] for an admitted call: everything is checked again except
    /// the payer's signature, which [`Attestor::admit`] verified on these very bytes (an
    /// [`Admitted`] cannot be built or altered outside this module), and the fee must fit
    /// the budget reserved at admission. The receipt ends the reservation; once it has
    /// ended, attesting the same `Admitted` again is `Replayed`. Same cancel safety.
    pub async fn attest_admitted_at(
        &self,
        admitted: &Admitted,
        facts: &UsageFacts,
        now_ms: u64,
    ) -> Result<SignedReceipt, AttestError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(AttestError::Poisoned);
        }
        let served = self.check_call(&admitted.auth, facts, now_ms)?;
        self.attest_checked(&admitted.auth, served, facts, now_ms, Some(admitted))
            .await
    }

    /// Steps 2 to 6 for a call whose stateless checks passed and whose payer signature
    /// verified (`admitted`: its reservation, for an admitted call).
    async fn attest_checked(
        &self,
        auth: &SignedAuthorization,
        served: &Served,
        facts: &UsageFacts,
        now_ms: u64,
        admitted: Option<&Admitted>,
    ) -> Result<SignedReceipt, AttestError> {
        let a = &auth.authorization;

        // (2) Metering; the guest sees the facts, the schedule and the limit, nothing else.
        let metered = self
            .sandbox
            .meter(&MeterInput {
                facts: facts.clone(),
                schedule: served.schedule.clone(),
                max_fee: a.max_fee,
            })
            .map_err(AttestError::Metering)?;
        if metered.fee > a.max_fee {
            // The guest refuses such fees itself; this guards a faulty guest.
            return Err(AttestError::Metering(MeterError::Refused(
                Refusal::FeeAboveMax { fee: metered.fee },
            )));
        }
        let mut receipt = Receipt {
            authorization: auth.clone(),
            facts: facts.clone(),
            metered,
            guest: self.guest,
            schedule: served.hash,
            host_seq: 0,
            channel_total: 0,
            timestamp_ms: 0,
        };

        // (3) The one critical section: channel checks and log order. Receipts on a
        // channel come in `seq` order: first wait until no lower `seq` is reserved there.
        let channel = a.channel();
        let body = loop {
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let (ordered, notify) = {
                let mut chain = self
                    .shared
                    .chain
                    .lock()
                    .map_err(|_| AttestError::Poisoned)?;
                if self.poisoned.load(Ordering::Acquire) {
                    return Err(AttestError::Poisoned);
                }
                if chain.must_wait(channel, a.seq) {
                    (None, false)
                } else {
                    // A reservation already ended (this `Admitted` was receipted) no longer
                    // counts: the call is checked like any other, and is a replay.
                    let open = admitted.filter(|r| !r.settled.load(Ordering::Acquire));
                    let ordered = chain.order(&mut receipt, channel, now_ms, open)?;
                    let notify = match open {
                        Some(r) => {
                            r.settled.store(true, Ordering::Release);
                            chain.end_reservation(channel, a.seq, false)
                        }
                        None => false,
                    };
                    (Some(ordered), notify)
                }
            };
            if notify {
                self.shared.settled.notify_waiters();
            }
            match ordered {
                Some(ordered) => break ordered,
                None => settled.await,
            }
        };

        // (4) Durable append: the group commit signs one checkpoint for its receipts. From
        // (3) to here there is no `.await`: the receipt cannot be abandoned after it got
        // its `host_seq`. Then (5) return the bundle.
        match self.journal.append_encoded(receipt, body).await {
            Ok(bundle) => Ok(bundle),
            Err(e) => {
                self.poisoned.store(true, Ordering::Release);
                Err(AttestError::Journal(e))
            }
        }
    }

    /// Checks, before a call is served, what [`Attestor::attest`] will check about `auth`
    /// except the metering: binding, served model, `request_digest` (the SHA-256 of the
    /// body about to be served), expiry at `now_ms`, the payer's signature, a `seq` above
    /// the channel's last and not in flight, and room under `max_fee` and the cap for the
    /// schedule's minimum fee; then **reserves** the `seq` and the call's budget (see the
    /// module docs, "Reservations"): in memory, no journal write. A refusal reserves
    /// nothing. [`Attestor::attest_admitted`] later checks everything again under the lock
    /// except the signature, which the returned [`Admitted`] vouches for.
    pub async fn admit(
        &self,
        auth: SignedAuthorization,
        request_digest: Digest,
        now_ms: u64,
    ) -> Result<Admitted, AttestError> {
        let a = &auth.authorization;
        let probe = UsageFacts {
            model: a.model,
            request_digest,
            response_digest: Digest::ZERO,
            prompt_tokens: 0,
            cached_prompt_tokens: 0,
            completion_tokens: 0,
            reasoning_tokens: 0,
            started_at_ms: now_ms,
            first_token_ms: 0,
            duration_ms: 0,
            finish: tally_protocol::FinishStatus::Stop,
        };
        let min_fee = self.check_call(&auth, &probe, now_ms)?.schedule.min_fee;
        if min_fee > a.max_fee {
            return Err(AttestError::Metering(MeterError::Refused(
                Refusal::FeeAboveMax { fee: min_fee },
            )));
        }
        // Cheap refusals first, without reserving: a replay costs no signature check.
        let channel = a.channel();
        let ch = self.channel(&channel).unwrap_or_default();
        ch.accepts_seq(a.seq).map_err(|_| AttestError::Replayed {
            last_seq: ch.last_seq,
        })?;
        if ch.total_after(min_fee).is_none_or(|t| t > a.cumulative_cap) {
            return Err(AttestError::OverCap {
                total: ch.total,
                fee: min_fee,
                cap: a.cumulative_cap,
            });
        }
        self.payer_check
            .verify(&auth)
            .await
            .map_err(AttestError::PayerSignature)?;
        let budget = {
            let mut chain = self
                .shared
                .chain
                .lock()
                .map_err(|_| AttestError::Poisoned)?;
            chain.reserve(channel, &auth.authorization, min_fee)?
        };
        Ok(Admitted {
            auth,
            channel,
            budget,
            shared: Arc::clone(&self.shared),
            settled: AtomicBool::new(false),
        })
    }

    /// The price schedule of `model`, if this attestor serves it: what the proxy bounds a
    /// call's cost with before forwarding it.
    pub fn schedule(&self, model: &Digest) -> Option<&PriceSchedule> {
        self.schedules.get(model).map(|s| &s.schedule)
    }

    /// The checks that need no state: binding, served model, facts, expiry.
    fn check_call(
        &self,
        auth: &SignedAuthorization,
        facts: &UsageFacts,
        now_ms: u64,
    ) -> Result<&Served, AttestError> {
        let a = &auth.authorization;
        a.check().map_err(AttestError::Authorization)?;
        if a.chain_id != self.chain_id {
            return Err(AttestError::WrongChain);
        }
        if a.contract != self.contract {
            return Err(AttestError::WrongContract);
        }
        if a.host != self.host {
            return Err(AttestError::WrongHost);
        }
        let served = self
            .schedules
            .get(&a.model)
            .ok_or(AttestError::ModelNotServed)?;
        if facts.model != a.model {
            return Err(AttestError::ModelMismatch);
        }
        if facts.request_digest != a.request_digest {
            return Err(AttestError::RequestDigestMismatch);
        }
        facts.check().map_err(AttestError::Facts)?;
        if now_ms > a.expires_at_ms {
            return Err(AttestError::Expired {
                expires_at_ms: a.expires_at_ms,
                now_ms,
            });
        }
        Ok(served)
    }

    /// The host key's public half: the key every host checkpoint is signed with.
    pub fn public_key(&self) -> PublicKey {
        self.host
    }

    /// The SHA-256 of the metering guest in use.
    pub fn guest_hash(&self) -> Digest {
        self.guest
    }

    /// The last `host_seq` handed out (durable once its call returned).
    pub fn head(&self) -> u64 {
        let chain = self
            .shared
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        chain.last_host_seq
    }

    /// The host log's frontier over the durable receipts (its size is the last durable
    /// `host_seq`): what a group commit of the next receipts starts from.
    pub fn log_frontier(&self) -> CompactRange {
        self.journal.frontier()
    }

    /// A channel's last receipted authorisation `seq` and running total (`None` if this
    /// host has no receipt on it).
    pub fn channel(&self, channel: &ChannelId) -> Option<ChannelState> {
        let chain = self
            .shared
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        chain.channels.get(channel).copied()
    }

    /// The durable bundles, in log order (see [`Journal::receipts`]): what a shipper may
    /// send to the aggregator.
    pub fn receipts(&self) -> Result<Receipts, JournalError> {
        self.journal.receipts()
    }

    /// The journal's counters (records, fsyncs, durable position).
    pub fn journal_stats(&self) -> JournalStats {
        self.journal.stats()
    }

    /// The journal file's path.
    pub fn journal_path(&self) -> &Path {
        self.journal.path()
    }
}

/// The encoding's text rule: 1..=`max` bytes of printable ASCII without spaces.
fn is_text(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|c| (0x21..=0x7e).contains(&c))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
